//! The rustls client configuration for libpq's `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey`, and the two certificate verifiers libpq's weaker modes need: one that checks the
//! chain but not the host name (`verify-ca`), one that checks nothing but the handshake
//! signature (`require`/`prefer`/`allow` without a root certificate, as libpq does).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::PgError;

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// No check (libpq `allow`/`prefer`/`require` without a root certificate): encrypted, but
    /// not authenticated.
    Nothing,
    /// The chain must lead to `roots`; the host name is not checked (`verify-ca`, or
    /// `require` with a root certificate, as in libpq).
    Chain(Roots),
    /// The chain and the host name (`verify-full`).
    Full(Roots),
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// A PEM file (`sslrootcert=FILE`, or libpq's default `~/.postgresql/root.crt`).
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`).
    System,
}

/// The client certificate and key (`sslcert`, `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The rustls configuration for `verify` and `client`.
pub fn client_config(
    verify: &Verify,
    client: Option<&ClientCert>,
) -> Result<ClientConfig, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup(format!("no TLS protocol version available: {e}")))?;
    let builder = match verify {
        Verify::Full(roots) => builder.with_root_certificates(load_roots(roots)?),
        Verify::Chain(roots) => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(roots)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| tls_setup(format!("cannot use the root certificates: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SignatureOnly(provider))),
    };
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => {
            let certs = read_certs(&c.cert, "sslcert")?;
            let key = read_key(&c.key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_setup(format!("sslcert and sslkey cannot be used together: {e}")))
        }
    }
}

fn load_roots(roots: &Roots) -> Result<RootCertStore, PgError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let (added, _) = store.add_parsable_certificates(read_certs(path, "sslrootcert")?);
            if added == 0 {
                return Err(tls_setup(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(tls_setup(
                    "sslrootcert=system: the operating system's certificate store is empty or \
                     unreadable (install ca-certificates, or name a CA file in sslrootcert)"
                        .into(),
                ));
            }
        }
    }
    Ok(store)
}

fn read_certs(path: &Path, param: &str) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        tls_setup(format!("cannot read {param} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(tls_setup(format!(
            "{param} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PgError> {
    let text = std::fs::read(path)
        .map_err(|e| tls_setup(format!("cannot read sslkey {}: {e}", path.display())))?;
    if text.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        return Err(encrypted_key(path));
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        tls_setup(format!(
            "sslkey {} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        ))
    })
}

/// The error for an encrypted key or `sslpassword`: rustls reads only unencrypted keys.
pub fn encrypted_key(path: &Path) -> PgError {
    tls_setup(format!(
        "sslkey {} is encrypted, and tributary's TLS library (rustls) cannot decrypt keys, so \
         sslpassword is not supported: store the key unencrypted with access limited to \
         tributary's user (`openssl pkey -in KEY -out KEY.plain`, mode 0600)",
        path.display()
    ))
}

fn tls_setup(reason: String) -> PgError {
    PgError::Tls { reason }
}

/// `verify-ca`: the chain is checked, a name mismatch is not an error.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name last, after the chain: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// No certificate check (libpq's `require` without a root certificate); the handshake's
/// signatures are still verified, so the session is encrypted to whoever holds the key.
#[derive(Debug)]
struct SignatureOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
