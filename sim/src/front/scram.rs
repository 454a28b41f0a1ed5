//! The server side of SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) as mongod runs it:
//! stored credentials (salt, iteration count, StoredKey, ServerKey — never the password), the
//! two-message exchange, and MongoDB's quirk that SCRAM-SHA-1 hashes the password as
//! `hex(MD5("user:mongo:password"))` first. Pure: no I/O, so the exchange is unit-tested
//! against a client written from the RFC.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// mongod's defaults (`scramIterationCount`, `scramSHA256IterationCount`).
const SHA1_ITERATIONS: u32 = 10_000;
const SHA256_ITERATIONS: u32 = 15_000;

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Sha1,
    Sha256,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-1" => Some(Mechanism::Sha1),
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha1 => "SCRAM-SHA-1",
            Mechanism::Sha256 => "SCRAM-SHA-256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha1 => mac::<Hmac<Sha1>>(key, data),
            Mechanism::Sha256 => mac::<Hmac<Sha256>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha1 => Sha1::digest(data).to_vec(),
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// PBKDF2-HMAC (RFC 5802's `Hi`). HMAC takes keys of any length, so PBKDF2 cannot fail;
    /// were it to, the empty result would make every proof wrong (a refused login, not a
    /// crash).
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let (mut out, result) = match self {
            Mechanism::Sha1 => {
                let mut out = vec![0u8; 20];
                let r = pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt, iterations, &mut out);
                (out, r)
            }
            Mechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                let r = pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, iterations, &mut out);
                (out, r)
            }
        };
        if result.is_err() {
            out.clear();
        }
        out
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail; the fallback only
    // satisfies the type.
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// What a SCRAM server keeps for one user and mechanism (mongod's `credentials` field).
#[derive(Debug, Clone)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential for `user`/`password` with a fresh random salt (mongod's sizes: 16
    /// bytes for SHA-1, 28 for SHA-256) and mongod's default iteration counts.
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Credential {
        let (salt_len, iterations) = match mechanism {
            Mechanism::Sha1 => (16, SHA1_ITERATIONS),
            Mechanism::Sha256 => (28, SHA256_ITERATIONS),
        };
        let salt: Vec<u8> = (0..salt_len).map(|_| rand::random::<u8>()).collect();
        Credential::with_salt(mechanism, user, password, salt, iterations)
    }

    pub fn with_salt(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Credential {
        let password = match mechanism {
            // MongoDB's SCRAM-SHA-1 "password" is the legacy MONGODB-CR digest (auth spec).
            Mechanism::Sha1 => mongo_cr_digest(user, password),
            // SCRAM-SHA-256 uses the SASLprep'd password; ASCII passwords are unchanged by it.
            Mechanism::Sha256 => password.to_string(),
        };
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        Credential {
            mechanism,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }
}

/// `hex(MD5("user:mongo:password"))`.
pub fn mongo_cr_digest(user: &str, password: &str) -> String {
    let digest = Md5::digest(format!("{user}:mongo:{password}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an exchange failed. Every variant is reported to the client as mongod reports it
/// (18 AuthenticationFailed, "Authentication failed."), except malformed messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("nonce mismatch")]
    Nonce,
    #[error("invalid client proof")]
    Proof,
}

/// The client-first message, parsed: `gs2-header client-first-bare`.
#[derive(Debug, Clone)]
pub struct ClientFirst {
    pub user: String,
    gs2_header: String,
    bare: String,
    nonce: String,
}

/// Parses `n,,n=USER,r=NONCE` (RFC 5802 §7; `=2C`/`=3D` decoded in the user name).
pub fn parse_client_first(payload: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| ScramError::Malformed("client-first is not UTF-8".into()))?;
    let mut parts = text.splitn(3, ',');
    let cbind = parts.next().unwrap_or_default();
    let authzid = parts
        .next()
        .ok_or_else(|| ScramError::Malformed("no GS2 header".into()))?;
    let bare = parts
        .next()
        .ok_or_else(|| ScramError::Malformed("no client-first-bare".into()))?;
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
        other => {
            return Err(ScramError::Malformed(format!(
                "bad GS2 channel-binding flag {other:?}"
            )))
        }
    }
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        if let Some(v) = attr.strip_prefix("n=") {
            user = Some(v.replace("=2C", ",").replace("=3D", "="));
        } else if let Some(v) = attr.strip_prefix("r=") {
            nonce = Some(v.to_string());
        } else if attr.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported".into(),
            ));
        }
    }
    let user = user.ok_or_else(|| ScramError::Malformed("no user name".into()))?;
    let nonce = nonce
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ScramError::Malformed("no client nonce".into()))?;
    Ok(ClientFirst {
        user,
        gs2_header: format!("{cbind},{authzid},"),
        bare: bare.to_string(),
        nonce,
    })
}

/// A conversation between its first and its final message.
#[derive(Debug, Clone)]
pub struct Conversation {
    credential: Credential,
    client_first: ClientFirst,
    server_first: String,
    nonce: String,
}

impl Conversation {
    /// Answers `client_first` with `server_nonce` appended to the client's nonce: returns the
    /// conversation and the server-first message `r=NONCE,s=SALT,i=ITERATIONS`.
    pub fn start(
        credential: Credential,
        client_first: ClientFirst,
        server_nonce: &str,
    ) -> (Conversation, String) {
        let nonce = format!("{}{server_nonce}", client_first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        (
            Conversation {
                credential,
                client_first,
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        )
    }

    /// Checks the client-final message `c=...,r=...,p=PROOF` and returns the server-final
    /// message `v=SIGNATURE`.
    pub fn finish(&self, payload: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| ScramError::Malformed("client-final is not UTF-8".into()))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| ScramError::Malformed("no client proof".into()))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        if channel != Some(B64.encode(&self.client_first.gs2_header).as_str()) {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("client proof is not base64".into()))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first.bare, self.server_first
        );
        let mech = self.credential.mechanism;
        let signature = mech.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::Proof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if mech.hash(&client_key) != self.credential.stored_key {
            return Err(ScramError::Proof);
        }
        let server_signature = mech.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// A fresh server nonce: 24 random bytes, base64 (what mongod appends).
pub fn server_nonce() -> String {
    let bytes: [u8; 24] = rand::random();
    B64.encode(bytes)
}

/// The client-side derivations, for tests elsewhere in the crate that play the client.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
        Mechanism::Sha1.hmac(key, data)
    }

    pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        Mechanism::Sha256.hmac(key, data)
    }

    /// ClientKey for `password` under `cred`'s salt and iterations.
    pub fn client_key(mech: Mechanism, password: &str, cred: &Credential) -> Vec<u8> {
        let password = match mech {
            Mechanism::Sha1 => mongo_cr_digest("u", password),
            Mechanism::Sha256 => password.to_string(),
        };
        let salted = mech.salted_password(password.as_bytes(), &cred.salt, cred.iterations);
        mech.hmac(&salted, b"Client Key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM client written from RFC 5802, for the server to talk to.
    fn client_final(
        mech: Mechanism,
        user: &str,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, String) {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let password = match mech {
            Mechanism::Sha1 => mongo_cr_digest(user, password),
            Mechanism::Sha256 => password.to_string(),
        };
        let salted = mech.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mech.hmac(&salted, b"Client Key");
        let stored_key = mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mech.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mech.hmac(&salted, b"Server Key");
        let expected_v = format!(
            "v={}",
            B64.encode(mech.hmac(&server_key, auth_message.as_bytes()))
        );
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            expected_v,
        )
    }

    fn exchange(
        mech: Mechanism,
        stored_password: &str,
        client_password: &str,
    ) -> Result<(), ScramError> {
        // Few iterations: the test checks the exchange, not PBKDF2's cost.
        let cred = Credential::with_salt(
            mech,
            "alice",
            stored_password,
            b"0123456789abcdef".to_vec(),
            4096,
        );
        let first = parse_client_first(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(first.user, "alice");
        let (conv, server_first) = Conversation::start(cred, first, &server_nonce());
        assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        assert!(server_first.ends_with(",i=4096"));
        let (msg, expected) = client_final(
            mech,
            "alice",
            client_password,
            "n=alice,r=fyko+d2lbbFgONRv9qkxdawL",
            &server_first,
        );
        let v = conv.finish(msg.as_bytes())?;
        assert_eq!(v, expected, "server signature");
        Ok(())
    }

    #[test]
    fn sha256_exchange_accepts_the_right_password_and_signs() {
        exchange(Mechanism::Sha256, "s3cret", "s3cret").unwrap();
    }

    #[test]
    fn sha1_exchange_uses_the_mongo_cr_digest() {
        exchange(Mechanism::Sha1, "s3cret", "s3cret").unwrap();
    }

    #[test]
    fn a_wrong_password_is_an_invalid_proof() {
        assert_eq!(
            exchange(Mechanism::Sha256, "s3cret", "wrong"),
            Err(ScramError::Proof)
        );
        assert_eq!(
            exchange(Mechanism::Sha1, "s3cret", "wrong"),
            Err(ScramError::Proof)
        );
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 §3: user "user", password "pencil".
        let cred = Credential::with_salt(
            Mechanism::Sha256,
            "user",
            "pencil",
            B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (conv, server_first) =
            Conversation::start(cred, first, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let v = conv
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(v, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn mongo_cr_digest_matches_the_auth_spec() {
        // The auth spec's SCRAM-SHA-1 example: user "user", password "pencil".
        assert_eq!(
            mongo_cr_digest("user", "pencil"),
            "1c33006ec1ffd90f9cadcbcc0e118200"
        );
    }

    #[test]
    fn a_tampered_nonce_or_channel_binding_is_refused() {
        let cred = Credential::with_salt(Mechanism::Sha256, "u", "p", vec![1; 28], 4096);
        let first = parse_client_first(b"n,,n=u,r=abc").unwrap();
        let (conv, server_first) = Conversation::start(cred, first, "xyz");
        let (good, _) = client_final(Mechanism::Sha256, "u", "p", "n=u,r=abc", &server_first);
        assert_eq!(
            conv.finish(good.replace("r=abcxyz", "r=abcxyq").as_bytes()),
            Err(ScramError::Nonce)
        );
        assert_eq!(
            conv.finish(good.replace("c=biws", "c=eSws").as_bytes()),
            Err(ScramError::ChannelBinding)
        );
        assert!(matches!(
            parse_client_first(b"p=tls-unique,,n=u,r=abc"),
            Err(ScramError::ChannelBinding)
        ));
        assert!(matches!(
            parse_client_first(b"n,,r=abc"),
            Err(ScramError::Malformed(_))
        ));
    }
}
