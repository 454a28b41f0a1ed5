//! A throwaway PKI for the TLS and X.509 tests, made with the `openssl` CLI (EC P-256 keys:
//! fast to make): CAs, server certificates (for `localhost` and 127.0.0.1, what the simulator
//! advertises in `hello`), and client certificates with a chosen subject for MONGODB-X509.
//! The main crate's tests include this file too (`tests/support/mod.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use mongo_sim::TlsFiles;

/// A CA whose files live in `dir`, named after it (`NAME.crt`, `NAME.key`), so several CAs
/// can share one directory.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    /// The CA certificate (PEM): a client's `tlsCAFile`, the server's `--tls-ca-file`.
    pub cert: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl TestCa {
    /// A self-signed CA called `name` (its subject: `CN=<name>`).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let (crt, key, subj) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("/CN={name}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(EC);
        args.extend([
            "-days",
            "2",
            "-subj",
            &subj,
            "-keyout",
            &key,
            "-out",
            &crt,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cert: dir.join(crt),
        }
    }

    /// Signs a new key's certificate for `subject` (OpenSSL's `/O=x/OU=y/CN=z`, most
    /// significant RDN first) with `extensions`; returns the certificate and key paths.
    fn sign(&self, stem: &str, subject: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let stem = format!("{}-{stem}", self.name);
        let (crt, key, csr, ext) = (
            format!("{stem}.crt"),
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.ext"),
        );
        let mut args = vec!["req"];
        args.extend(EC);
        args.extend(["-subj", subject, "-keyout", &key, "-out", &csr]);
        openssl(&self.dir, &args);
        std::fs::write(self.dir.join(&ext), extensions).expect("write the extensions file");
        let (ca_crt, ca_key, serial) = (
            format!("{}.crt", self.name),
            format!("{}.key", self.name),
            format!("{}.srl", self.name),
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAserial",
                &serial,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
        (self.dir.join(crt), self.dir.join(key))
    }

    /// A server certificate for `localhost` and 127.0.0.1 signed by this CA.
    pub fn server(&self) -> TlsFiles {
        let (cert, key) = self.server_for("server", "DNS:localhost,IP:127.0.0.1");
        TlsFiles { cert, key }
    }

    /// A server certificate (`CN=localhost`) for the names in `san` (`subjectAltName` syntax)
    /// signed by this CA: its certificate and key paths.
    pub fn server_for(&self, stem: &str, san: &str) -> (PathBuf, PathBuf) {
        self.sign(
            stem,
            "/CN=localhost",
            &format!(
                "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
    }

    /// A client certificate for `subject` (OpenSSL's `/O=x/OU=y/CN=z`; its RFC 2253 form,
    /// the X.509 user name, reads `CN=z,OU=y,O=x`) signed by this CA, as one PEM file
    /// holding the certificate and its key (what `tlsCertificateKeyFile` takes).
    pub fn client(&self, stem: &str, subject: &str) -> PathBuf {
        let (cert, key) = self.sign(
            stem,
            subject,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        let mut pem = std::fs::read(&cert).expect("read the client certificate");
        pem.extend(std::fs::read(&key).expect("read the client key"));
        let path = self.dir.join(format!("{}-{stem}.pem", self.name));
        std::fs::write(&path, pem).expect("write the client PEM");
        path
    }
}
