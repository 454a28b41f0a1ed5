//! Splitting `postgres.uri` into the part `tokio_postgres::Config` parses and the libpq TLS
//! parameters it does not know (`sslrootcert`, `sslcert`, `sslkey`, `sslpassword`, and the
//! `sslmode` values `allow`, `verify-ca`, `verify-full`), in both libpq forms: a
//! `postgres://`/`postgresql://` URI and a `key=value` conninfo string.
//!
//! Nothing here echoes a value: errors name the parameter only, so a password can never reach
//! a message through them.

use std::collections::BTreeMap;

use super::PgError;

/// The parameters this module takes out of the URI (the rest goes to `tokio_postgres`).
const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
];

/// Parameters `tokio_postgres` parses but whose absence we fill with our own defaults.
const DEFAULTED: &[&str] = &[
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "connect_timeout",
];

/// A URI taken apart: what `tokio_postgres` gets, and what we handle.
#[derive(Debug)]
pub(super) struct Split {
    /// The URI without our parameters, for `tokio_postgres::Config::from_str`. Carries the
    /// password: never print it.
    pub rest: String,
    /// Our parameters, decoded.
    pub ours: BTreeMap<String, String>,
    /// Which of `DEFAULTED` the URI sets itself.
    pub given: Vec<String>,
}

/// Takes `uri` apart (see the module doc).
pub(super) fn split(uri: &str) -> Result<Split, PgError> {
    let trimmed = uri.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_conninfo(trimmed)
    }
}

fn split_url(uri: &str) -> Result<Split, PgError> {
    // The query starts at the first `?` after the userinfo (a password may hold a `?` only
    // percent-encoded, but look past the last `@` anyway).
    let after_scheme = uri.find("://").map_or(0, |i| i + 3);
    let search_from = uri[after_scheme..]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i);
    let Some(q) = uri[search_from..].find('?').map(|i| search_from + i) else {
        return Ok(Split {
            rest: uri.to_owned(),
            ours: BTreeMap::new(),
            given: Vec::new(),
        });
    };
    let (base, query) = (&uri[..q], &uri[q + 1..]);
    let mut ours = BTreeMap::new();
    let mut given = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k).ok_or_else(|| invalid("a query parameter name"))?;
        if OURS.contains(&key.as_str()) {
            let value = percent_decode(v).ok_or_else(|| invalid(&key))?;
            ours.insert(key, value);
        } else {
            if DEFAULTED.contains(&key.as_str()) {
                given.push(key);
            }
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Split { rest, ours, given })
}

fn split_conninfo(text: &str) -> Result<Split, PgError> {
    let mut ours = BTreeMap::new();
    let mut given = Vec::new();
    let mut kept = Vec::new();
    for (key, value) in conninfo_pairs(text)? {
        if OURS.contains(&key.as_str()) {
            ours.insert(key, value);
        } else {
            if DEFAULTED.contains(&key.as_str()) {
                given.push(key.clone());
            }
            kept.push(format!("{key}={}", quote_conninfo(&value)));
        }
    }
    Ok(Split {
        rest: kept.join(" "),
        ours,
        given,
    })
}

/// The `key = value` pairs of a libpq conninfo string (values bare or `'quoted'` with `\`
/// escapes), as libpq reads them.
fn conninfo_pairs(text: &str) -> Result<Vec<(String, String)>, PgError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(PgError::InvalidUri {
                reason: format!("missing `=` after {key:?} in the key=value connection string"),
            });
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    // The value is not echoed: it may be the password.
                    None => return Err(invalid(&key)),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// A conninfo value, quoted so any character survives.
fn quote_conninfo(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `%XX`-decodes a URI component; `None` when the result is not UTF-8 or an escape is broken.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn invalid(what: &str) -> PgError {
    PgError::InvalidUri {
        reason: format!("the value of {what} is malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_params_are_split_and_decoded() {
        let s = split(
            "postgres://u:p%3Fw@h:5/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x&keepalives_idle=3",
        )
        .unwrap();
        assert_eq!(
            s.rest,
            "postgres://u:p%3Fw@h:5/db?application_name=x&keepalives_idle=3"
        );
        assert_eq!(s.ours["sslmode"], "verify-full");
        assert_eq!(s.ours["sslrootcert"], "/tmp/ca.pem");
        assert_eq!(s.given, vec!["keepalives_idle".to_owned()]);
    }

    #[test]
    fn url_without_our_params_is_unchanged() {
        let s = split("postgresql://u@h/db").unwrap();
        assert_eq!(s.rest, "postgresql://u@h/db");
        assert!(s.ours.is_empty());
        let s = split("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!(s.rest, "postgresql://u@h/db");
    }

    #[test]
    fn conninfo_params_are_split_and_requoted() {
        let s =
            split("host=h user=u password='a b\\'c' sslmode=verify-ca sslrootcert = '/x y/ca.pem'")
                .unwrap();
        assert_eq!(s.rest, "host='h' user='u' password='a b\\'c'");
        assert_eq!(s.ours["sslmode"], "verify-ca");
        assert_eq!(s.ours["sslrootcert"], "/x y/ca.pem");
        let parsed: tokio_postgres::Config = s.rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn malformed_values_are_not_echoed() {
        let e = split("host=h password='secret").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        let e = split("postgres://h/db?sslrootcert=%zzsecret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
