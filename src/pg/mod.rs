//! The one way Tributary connects to Postgres: the sink's pool, the stream's lock connection,
//! `check`, `status`, `verify` and `cutover` all build their connections from a [`Connector`].
//!
//! - **libpq's TLS parameters.** `postgres.uri` may carry `sslmode` (`disable`, `allow`,
//!   `prefer` (the default, as in libpq), `require`, `verify-ca`, `verify-full`),
//!   `sslrootcert` (a PEM file, or `system` for the operating system's store), `sslcert` and
//!   `sslkey`. `tokio_postgres` refuses most of these, so `uri` takes them out and `tls` turns
//!   them into a rustls configuration, with libpq's rules: `verify-*` without `sslrootcert`
//!   read `~/.postgresql/root.crt`; `allow`/`prefer`/`require` verify the chain (not the name)
//!   when a root certificate is given or that file exists; `sslrootcert=system` means
//!   `verify-full` and refuses a weaker `sslmode`. `allow` behaves as `prefer` (TLS first, then
//!   plain), the closest `tokio_postgres` offers. `sslpassword` is refused: rustls cannot read
//!   encrypted keys. `sslcrl`/`sslcrldir` are refused rather than ignored.
//! - **Dead peers are noticed in seconds.** Unless the URI says otherwise, every connection
//!   has TCP keep-alives (idle 5 s, then every 2 s, 3 probes), `tcp_user_timeout` 10 s (unacked
//!   writes) and a 10 s connect timeout: the lease's keep-alive and a standby's take-over
//!   depend on a dead host being noticed, and the kernel defaults take hours.
//! - **Secrets.** Nothing here prints the URI; [`Connector`]'s `Debug` shows the target and
//!   TLS mode only.
//!
//! A lower layer than `sink` and `lease`: it knows nothing of either.

mod tls;
mod uri;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use tls::{ClientCert, Roots, Verify};

/// The TLS connector every connection uses (also with `sslmode=disable`, where it is unused).
pub type Tls = MakeRustlsConnect;
/// The stream type of a connection opened through [`Tls`].
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// A connection's I/O half, to be spawned (see [`Connector::connect_raw`]).
pub type Connection = tokio_postgres::Connection<Socket, TlsStream>;

/// Default TCP keep-alive idle time: the first probe after this much silence.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
/// Default interval between keep-alive probes.
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
/// Default number of unanswered probes before the connection is dead.
const KEEPALIVES_RETRIES: u32 = 3;
/// Default `tcp_user_timeout`: how long sent data may stay unacknowledged.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect timeout (per host).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `postgres.uri` could not be turned into a connection. Messages name the parameter or file,
/// never a value from the URI.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{reason}")]
    InvalidUri { reason: String },
    #[error("{reason}")]
    Tls { reason: String },
}

/// libpq's `sslmode`, as given (or defaulted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Allow => "allow",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Result<Mode, PgError> {
        Ok(match s {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(PgError::InvalidUri {
                    reason: format!(
                        "sslmode {other:?} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    ),
                })
            }
        })
    }
}

/// How to reach one Postgres database: the parsed URI plus its TLS connector. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: Tls,
    mode: Mode,
    target: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately not the config: only what is safe to log.
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("sslmode", &self.mode.as_str())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Parses `uri` (URI or conninfo form), reads the certificate files it names and applies
    /// the keep-alive defaults. `application_name` is `tributary` unless the URI sets one.
    pub fn from_uri(uri: &str) -> Result<Connector, PgError> {
        let split = uri::split(uri)?;
        let mut config =
            tokio_postgres::Config::from_str(&split.rest).map_err(|e| PgError::InvalidUri {
                // The driver's parse errors name the option, never the value.
                reason: e.to_string(),
            })?;
        let ours = &split.ours;
        for refused in ["sslcrl", "sslcrldir"] {
            if ours.contains_key(refused) {
                return Err(PgError::Tls {
                    reason: format!(
                        "{refused} is not supported (certificate revocation lists are not \
                         checked); remove it from postgres.uri"
                    ),
                });
            }
        }
        let system = ours.get("sslrootcert").is_some_and(|r| r == "system");
        let mode = match ours.get("sslmode") {
            Some(m) => Mode::parse(m)?,
            None if system => Mode::VerifyFull,
            None => Mode::Prefer,
        };
        if system && mode != Mode::VerifyFull {
            return Err(PgError::Tls {
                reason: format!(
                    "sslrootcert=system requires sslmode=verify-full (as in libpq), not {}",
                    mode.as_str()
                ),
            });
        }
        let roots = match ours.get("sslrootcert") {
            Some(r) if r == "system" => Some(Roots::System),
            Some(r) => Some(Roots::File(PathBuf::from(r))),
            None => default_root_file().map(Roots::File),
        };
        let verify = match (mode, roots) {
            (Mode::VerifyFull, Some(r)) => Verify::Full(r),
            (Mode::VerifyCa, Some(r)) => Verify::Chain(r),
            (Mode::VerifyFull | Mode::VerifyCa, None) => {
                return Err(PgError::Tls {
                    reason: format!(
                        "sslmode={} needs the CA certificate: set sslrootcert=FILE (or \
                         sslrootcert=system for the operating system's store) in postgres.uri, \
                         or put it at ~/.postgresql/root.crt",
                        mode.as_str()
                    ),
                })
            }
            (Mode::Disable, _) => Verify::Nothing,
            // libpq: with a root certificate, the weaker modes check the chain too.
            (_, Some(r)) => Verify::Chain(r),
            (_, None) => Verify::Nothing,
        };
        if ours.contains_key("sslpassword") {
            let key = ours.get("sslkey").map_or("(sslkey)", String::as_str);
            return Err(tls::encrypted_key(std::path::Path::new(key)));
        }
        let client = match (ours.get("sslcert"), ours.get("sslkey")) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            _ => {
                return Err(PgError::Tls {
                    reason: "sslcert and sslkey go together: set both in postgres.uri".into(),
                })
            }
        };
        let tls = MakeRustlsConnect::new(tls::client_config(&verify, client.as_ref())?);
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Allow | Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        let given = |k: &str| split.given.iter().any(|g| g == k);
        if !given("keepalives") {
            config.keepalives(true);
        }
        if !given("keepalives_idle") {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if !given("keepalives_interval") {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if !given("keepalives_retries") {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        if !given("tcp_user_timeout") {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if !given("connect_timeout") {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tributary");
        }
        let target = describe_target(&config);
        Ok(Connector {
            config,
            tls,
            mode,
            target,
        })
    }

    /// Names the connections in `pg_stat_activity` (the lease names its lock connection).
    pub fn set_application_name(&mut self, name: &str) {
        self.config.application_name(name);
    }

    /// `host:port/dbname`, for messages (never credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The `sslmode` in force (given or defaulted).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The parsed settings (the password is redacted from its `Debug`).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Opens a connection; the caller must spawn (or await) the returned [`Connection`].
    pub async fn connect_raw(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }

    /// Opens a connection driven by a spawned task.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a Postgres connection ended with an error");
            }
        });
        Ok(client)
    }

    /// A deadpool manager that opens its connections exactly as [`Connector::connect`] does.
    pub fn manager(&self, config: deadpool_postgres::ManagerConfig) -> deadpool_postgres::Manager {
        deadpool_postgres::Manager::from_config(self.config.clone(), self.tls.clone(), config)
    }
}

/// libpq's default root certificate file, when it exists.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

fn describe_target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(s) => s.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}:{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default database)")
    )
}

/// The TLS failure behind a connection error, as a sentence that says what to change, or
/// `None` when TLS is not the cause. Certificate problems name which check failed (an unknown
/// CA, a host name the certificate does not cover, an expired certificate).
pub fn tls_problem(e: &tokio_postgres::Error) -> Option<String> {
    if let Some(db) = e.as_db_error() {
        // pg_hba.conf has only `hostssl` lines for this client and the session is plain.
        if db.code().code() == "28000" && db.message().contains("no encryption") {
            return Some(format!(
                "{} (SQLSTATE 28000): the server accepts this login only over TLS, and \
                 postgres.uri has sslmode=disable: set sslmode=verify-full (with sslrootcert) \
                 or sslmode=require",
                db.message()
            ));
        }
        return None;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(describe_rustls(r));
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(describe_rustls(r));
            }
        }
        cause = c.source();
    }
    let text = e.to_string();
    if text.contains("server does not support TLS") {
        return Some(
            "the server does not accept TLS connections (ssl = off), but postgres.uri's sslmode \
             requires TLS: enable ssl on the server, or use sslmode=prefer or disable"
                .into(),
        );
    }
    None
}

/// True when a connection failed on the server's certificate or a TLS requirement: the same
/// attempt will fail again, so it is not worth retrying.
pub fn is_tls_rejection(e: &tokio_postgres::Error) -> bool {
    tls_problem(e).is_some()
}

fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "TLS: the server's certificate is not signed by a CA in sslrootcert ({e}); \
                 check that sslrootcert names the CA that signed the server's certificate"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "TLS: the server's certificate is not valid for the host name in postgres.uri \
                 ({e}); connect with a host name the certificate names, or use \
                 sslmode=verify-ca to check the CA only"
            ),
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => {
                format!("TLS: the server's certificate is outside its validity period ({e})")
            }
            _ => format!("TLS: the server's certificate was refused ({e})"),
        },
        other => format!("TLS handshake with the server failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keepalives_and_prefer() {
        let c = Connector::from_uri("postgres://u:secret@db.example:5433/app").unwrap();
        assert_eq!(c.mode(), Mode::Prefer);
        assert!(c.config().get_keepalives());
        assert_eq!(c.config().get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(c.config().get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(c.target(), "db.example:5433/app");
        assert_eq!(c.config().get_application_name(), Some("tributary"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn uri_settings_win_over_defaults() {
        let c = Connector::from_uri(
            "host=h user=u keepalives_idle=30 tcp_user_timeout=3 sslmode=disable",
        )
        .unwrap();
        assert_eq!(c.config().get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            c.config().get_tcp_user_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(c.config().get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let e = Connector::from_uri(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn system_roots_refuse_weaker_modes() {
        let e = Connector::from_uri("postgres://h/db?sslmode=require&sslrootcert=system")
            .unwrap_err()
            .to_string();
        assert!(e.contains("verify-full"), "{e}");
    }

    #[test]
    fn sslpassword_is_refused_without_echoing_it() {
        let e = Connector::from_uri(
            "postgres://h/db?sslmode=require&sslcert=/c&sslkey=/k&sslpassword=hunter2",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslpassword is not supported"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn unknown_sslmode_is_named() {
        let e = Connector::from_uri("postgres://h/db?sslmode=always")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode \"always\""), "{e}");
    }
}
