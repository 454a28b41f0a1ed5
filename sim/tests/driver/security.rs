//! `--auth` and `--tls-cert/--tls-key` with the official driver: SCRAM-SHA-256 and SCRAM-SHA-1
//! logins, a wrong password (18), commands before login (13), a read-only user refused a
//! write and allowed a change stream, and TLS with a CA made here (the `openssl` CLI, as the
//! main crate's Postgres TLS tests make theirs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bson::{doc, Document};
use futures::StreamExt;
use mongo_sim::{SimHandle, SimOptions, TlsFiles};
use mongodb::error::ErrorKind;
use mongodb::Client;

const USERS: &str = "admin:Adm1n-s3cret,reader:R3ad-only:readAnyDatabase,shopper:Sh0p:read@shop";

async fn secured(tls: Option<TlsFiles>) -> SimHandle {
    mongo_sim::start(SimOptions {
        auth: Some(USERS.into()),
        tls,
        ..SimOptions::default()
    })
    .await
    .expect("start simulator")
}

/// A client for `user:password` with `extra` URI options (short timeouts: a failure should
/// fail the test quickly, not after 30 s of server selection).
async fn client(sim: &SimHandle, user: &str, password: &str, extra: &str) -> Client {
    let timeout = if extra.contains("serverSelectionTimeoutMS") {
        ""
    } else {
        "&serverSelectionTimeoutMS=10000"
    };
    let uri = format!(
        "mongodb://{user}:{password}@{}/?replicaSet=rs0{timeout}{extra}",
        sim.addr()
    );
    Client::with_uri_str(uri).await.expect("client")
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

async fn whoami(client: &Client) -> Document {
    client
        .database("admin")
        .run_command(doc! {"connectionStatus": 1})
        .await
        .expect("connectionStatus")
}

#[tokio::test]
async fn scram_sha_256_and_sha_1_log_in() {
    let sim = secured(None).await;
    for mechanism in [
        "",
        "&authMechanism=SCRAM-SHA-256",
        "&authMechanism=SCRAM-SHA-1",
    ] {
        let c = client(&sim, "admin", "Adm1n-s3cret", mechanism).await;
        let coll = c.database("shop").collection::<Document>("orders");
        coll.insert_one(doc! {"_id": mechanism, "qty": 1})
            .await
            .unwrap_or_else(|e| panic!("insert with {mechanism:?}: {e}"));
        let status = whoami(&c).await;
        let users = status
            .get_document("authInfo")
            .unwrap()
            .get_array("authenticatedUsers")
            .unwrap();
        assert_eq!(
            users[0].as_document().unwrap().get_str("user"),
            Ok("admin"),
            "{status}"
        );
        c.shutdown().immediate(true).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn hello_advertises_both_mechanisms_for_a_known_user_only() {
    let sim = secured(None).await;
    // No credentials: the handshake and hello are allowed before login.
    let anon = Client::with_uri_str(format!("{}&serverSelectionTimeoutMS=10000", sim.uri()))
        .await
        .unwrap();
    let hello = anon
        .database("admin")
        .run_command(doc! {"hello": 1, "saslSupportedMechs": "admin.reader"})
        .await
        .unwrap();
    let mechs: Vec<&str> = hello
        .get_array("saslSupportedMechs")
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert_eq!(mechs, ["SCRAM-SHA-1", "SCRAM-SHA-256"]);
    let hello = anon
        .database("admin")
        .run_command(doc! {"hello": 1, "saslSupportedMechs": "admin.nobody"})
        .await
        .unwrap();
    assert!(!hello.contains_key("saslSupportedMechs"), "{hello}");
    anon.shutdown().immediate(true).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_authentication_failed_18() {
    let sim = secured(None).await;
    for (user, mechanism) in [
        ("admin", ""),
        ("admin", "&authMechanism=SCRAM-SHA-1"),
        ("nobody", ""),
    ] {
        let c = client(&sim, user, "not-the-password", mechanism).await;
        let e = c
            .database("shop")
            .collection::<Document>("orders")
            .find_one(doc! {})
            .await
            .expect_err("a wrong password must not log in");
        let text = e.to_string();
        assert!(
            matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }),
            "{user}{mechanism}: {e:?}"
        );
        assert!(text.contains("Authentication failed."), "{text}");
        // The server's reply travels as the error's source (a private field: read its Debug).
        let debug = format!("{e:?}");
        assert!(
            debug.contains("code: 18, code_name: \"AuthenticationFailed\""),
            "{debug}"
        );
        c.shutdown().immediate(true).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn commands_before_login_are_unauthorized_13() {
    let sim = secured(None).await;
    let anon = Client::with_uri_str(format!("{}&serverSelectionTimeoutMS=10000", sim.uri()))
        .await
        .unwrap();
    anon.database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .expect("ping needs no login");
    let e = anon
        .database("shop")
        .collection::<Document>("orders")
        .find_one(doc! {})
        .await
        .expect_err("find needs a login");
    let ErrorKind::Command(c) = e.kind.as_ref() else {
        panic!("{e:?}")
    };
    assert_eq!(
        (c.code, c.code_name.as_str(), c.message.as_str()),
        (13, "Unauthorized", "Command find requires authentication")
    );
    anon.shutdown().immediate(true).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_read_only_user_is_refused_writes_and_may_read_and_watch() {
    let sim = secured(None).await;
    let admin = client(&sim, "admin", "Adm1n-s3cret", "").await;
    let reader = client(&sim, "reader", "R3ad-only", "").await;
    let by_admin = admin.database("shop").collection::<Document>("orders");
    by_admin
        .insert_one(doc! {"_id": 1, "qty": 1})
        .await
        .unwrap();

    let orders = reader.database("shop").collection::<Document>("orders");
    let e = orders
        .insert_one(doc! {"_id": 2})
        .await
        .expect_err("a read-only user must not insert");
    let ErrorKind::Command(c) = e.kind.as_ref() else {
        panic!("{e:?}")
    };
    assert_eq!(c.code, 13, "{c:?}");
    assert!(
        c.message
            .starts_with("not authorized on shop to execute command { insert: \"orders\""),
        "{}",
        c.message
    );
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 1);
    let names = reader
        .database("shop")
        .list_collection_names()
        .await
        .unwrap();
    assert_eq!(names, ["orders"]);

    // A deployment-wide change stream, as Tributary opens it.
    let mut stream = reader.watch().await.expect("readAnyDatabase may watch");
    by_admin
        .insert_one(doc! {"_id": 3, "qty": 3})
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event within 30 s")
        .expect("stream open")
        .expect("event");
    assert_eq!(
        event.document_key,
        Some(doc! {"_id": 3}),
        "{:?}",
        event.operation_type
    );

    // `local` is outside readAnyDatabase: the oplog needs read@local.
    let e = reader
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .expect_err("readAnyDatabase does not cover local");
    assert_eq!(code(&e), Some(13), "{e:?}");
    admin
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .expect("root reads the oplog");
    for c in [admin, reader] {
        c.shutdown().immediate(true).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_database_role_cannot_watch_the_deployment_or_read_elsewhere() {
    let sim = secured(None).await;
    let shopper = client(&sim, "shopper", "Sh0p", "").await;
    shopper
        .database("shop")
        .collection::<Document>("orders")
        .find_one(doc! {})
        .await
        .expect("read@shop reads shop");
    let e = shopper
        .database("crm")
        .collection::<Document>("people")
        .find_one(doc! {})
        .await
        .expect_err("read@shop does not read crm");
    assert_eq!(code(&e), Some(13), "{e:?}");
    assert!(
        e.to_string()
            .contains("not authorized on crm to execute command { find: \"people\""),
        "{e}"
    );
    let e = shopper
        .watch()
        .await
        .expect_err("a cluster-wide stream needs every database");
    assert_eq!(code(&e), Some(13), "{e:?}");
    shopper
        .database("shop")
        .watch()
        .await
        .expect("read@shop may watch shop");
    let dbs = shopper.list_database_names().await.unwrap();
    assert!(dbs.iter().all(|d| d == "shop"), "{dbs:?}");
    shopper.shutdown().immediate(true).await;
    sim.shutdown().await;
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it, in `dir`
/// (EC P-256 keys: fast to make).
pub fn make_certificates(dir: &Path) -> (PathBuf, TlsFiles) {
    let openssl = |args: &[&str]| {
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
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=mongo-sim test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    (
        dir.join("ca.crt"),
        TlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        },
    )
}

#[tokio::test]
async fn tls_with_a_test_ca_and_scram_and_plaintext_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, files) = make_certificates(dir.path());
    let sim = secured(Some(files)).await;
    let tls = format!("&tls=true&tlsCAFile={}", ca.display());
    for mechanism in ["&authMechanism=SCRAM-SHA-256", "&authMechanism=SCRAM-SHA-1"] {
        let c = client(&sim, "admin", "Adm1n-s3cret", &format!("{tls}{mechanism}")).await;
        c.database("shop")
            .collection::<Document>("orders")
            .insert_one(doc! {"over": "tls"})
            .await
            .unwrap_or_else(|e| panic!("insert over TLS with {mechanism}: {e}"));
        c.shutdown().immediate(true).await;
    }

    // Without TLS: the server closes the connection, the driver sees a network error.
    let plain = client(
        &sim,
        "admin",
        "Adm1n-s3cret",
        "&serverSelectionTimeoutMS=2000",
    )
    .await;
    let e = plain
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .expect_err("a plaintext client must not get through");
    assert!(
        matches!(e.kind.as_ref(), ErrorKind::ServerSelection { .. }),
        "{e:?}"
    );
    assert!(
        ["closed", "end of file", "reset"]
            .iter()
            .any(|w| e.to_string().contains(w)),
        "the network error: {e}"
    );
    plain.shutdown().immediate(true).await;

    // A CA that did not sign the server's certificate: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = make_certificates(other.path());
    let wrong = client(
        &sim,
        "admin",
        "Adm1n-s3cret",
        &format!(
            "&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=2000",
            other_ca.display()
        ),
    )
    .await;
    let e = wrong
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .expect_err("an unknown issuer must be refused");
    assert!(e.to_string().contains("certificate"), "{e}");
    wrong.shutdown().immediate(true).await;
    sim.shutdown().await;
}
