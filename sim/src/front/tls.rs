//! `--tls-cert FILE --tls-key FILE`: TLS on the listening port, as `mongod --tlsMode
//! requireTLS --tlsCertificateKeyFile` runs it. The server presents the certificate chain of
//! `--tls-cert` (PEM, leaf first). A client that opens the port without TLS is disconnected
//! before any reply, as mongod disconnects it ("The server is configured to only allow SSL
//! connections"): its driver reports a network error.
//!
//! `--tls-ca-file FILE` (mongod's `net.tls.CAFile`): the server asks every client for a
//! certificate and verifies it against that CA. As mongod without
//! `allowConnectionsWithoutCertificates`, a client that presents none is refused ("no SSL
//! certificate provided by peer; connection rejected"); with
//! `--tls-allow-connections-without-certificates` it gets through (and can log in with SCRAM,
//! not X.509). A certificate the CA did not sign fails the handshake either way. Without
//! `--tls-ca-file` no certificate is asked for, and a client's `tlsCertificateKeyFile` is
//! accepted unchecked. The verified certificate's subject, in RFC 2253 form, is what
//! MONGODB-X509 authentication (`auth`) logs in as.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the certificate chain {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("cannot read the private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("cannot use the CA file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("the certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
}

/// The first byte of a TLS record carrying a handshake (a ClientHello).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// How client certificates are checked (`--tls-ca-file`).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificates<'a> {
    /// The CA (PEM, one or more certificates) client certificates must chain to.
    pub ca: &'a Path,
    /// Whether a client without a certificate may connect (mongod's
    /// `allowConnectionsWithoutCertificates`).
    pub optional: bool,
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(chain)
}

/// A TLS acceptor for the certificate chain in `cert` and the private key in `key` (PEM),
/// asking clients for a certificate when `clients` says so.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    clients: Option<ClientCertificates<'_>>,
) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let chain = read_chain(cert).map_err(|message| TlsSetupError::Certificate {
        path: cert.display().to_string(),
        message,
    })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    // The ring provider, explicitly: the process may link other rustls providers, and then
    // no process-wide default exists.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => {
            let ca_error = |message: String| TlsSetupError::Ca {
                path: clients.ca.display().to_string(),
                message,
            };
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_chain(clients.ca).map_err(ca_error)? {
                roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if clients.optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Why a certificate's subject cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the client certificate's subject: {0}")]
pub struct SubjectError(String);

/// The subject of a DER certificate as mongod names an X.509 user, which is what `openssl x509
/// -noout -subject -nameopt RFC2253` prints: RFC 2253 (the last RDN first, `,` between RDNs,
/// `+` inside a multi-valued one), with mongod's short names for the usual attribute types and
/// `OID=#HEX` (the DER value) for others.
pub fn subject(cert: &[u8]) -> Result<String, SubjectError> {
    use x509_cert::der::{Decode, Encode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| SubjectError(e.to_string()))?;
    let mut rdns = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter().rev() {
        let mut parts = Vec::new();
        // Reversed inside a multi-valued RDN too: OpenSSL (whose RFC 2253 printing mongod's
        // names follow, and which MongoDB's docs tell operators to use) reverses the flat
        // list of attributes, not the list of RDNs.
        for atv in rdn.0.iter().rev() {
            let text = match atv.value.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
                    std::str::from_utf8(atv.value.value()).ok()
                }
                _ => None,
            };
            let oid = atv.oid.to_string();
            let part = match (short_name(&oid), text) {
                (Some(name), Some(text)) => format!("{name}={}", escape(text)),
                _ => {
                    let der = atv
                        .value
                        .to_der()
                        .map_err(|e| SubjectError(e.to_string()))?;
                    let hex: String = der.iter().map(|b| format!("{b:02X}")).collect();
                    format!("{oid}=#{hex}")
                }
            };
            parts.push(part);
        }
        rdns.push(parts.join("+"));
    }
    Ok(rdns.join(","))
}

/// mongod's names for the attribute types client certificates carry (its `kOIDs` table holds
/// more; anything else is printed as a dotted OID).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,` `+` `"` `\` `<` `>` `;` are escaped, as are a leading `#` or
/// space and a trailing space.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn rfc_2253_escapes_separators_and_edge_spaces() {
        assert_eq!(escape("Example, Inc."), "Example\\, Inc.");
        assert_eq!(escape("#1 a+b "), "\\#1 a\\+b\\ ");
        assert_eq!(escape("plain"), "plain");
    }
}
