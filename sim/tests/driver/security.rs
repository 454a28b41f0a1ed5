//! `--auth` and `--tls-cert/--tls-key` with the official driver: SCRAM-SHA-256 and SCRAM-SHA-1
//! logins, a wrong password (18), commands before login (13), a read-only user refused a
//! write and allowed a change stream, and TLS with a CA made here (`pki`). With
//! `--tls-ca-file` and `--x509-user`: MONGODB-X509 logins with the certificate's roles, a
//! certificate from another CA refused in the handshake, an unknown subject refused with
//! mongod's replies, clients without a certificate, and user names written exactly as
//! `openssl x509 -nameopt RFC2253` prints the subject (escapes, multi-valued RDNs).

use std::path::Path;
use std::time::Duration;

use bson::{doc, Document};
use futures::StreamExt;
use mongo_sim::{SimHandle, SimOptions, TlsFiles};
use mongodb::error::ErrorKind;
use mongodb::Client;

use crate::pki::TestCa;

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

#[tokio::test]
async fn tls_with_a_test_ca_and_scram_and_plaintext_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "test-ca");
    let sim = secured(Some(ca.server())).await;
    let tls = format!("&tls=true&tlsCAFile={}", ca.cert.display());
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
    let other_ca = TestCa::new(dir.path(), "other-ca");
    let wrong = client(
        &sim,
        "admin",
        "Adm1n-s3cret",
        &format!(
            "&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=2000",
            other_ca.cert.display()
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

/// X.509 users: `CN=ops` is root, `CN=tributary` reads.
const X509_ADMIN: &str = "CN=ops,OU=sync,O=Example";
const X509_READER: &str = "CN=tributary,OU=sync,O=Example";

/// A simulator with TLS, client certificates checked against a CA made in `dir`, the X.509
/// users above and `USERS` (SCRAM).
async fn x509_sim(dir: &Path, allow_without_certificates: bool) -> (SimHandle, TestCa) {
    let ca = TestCa::new(dir, "x509-ca");
    let sim = mongo_sim::start(SimOptions {
        auth: Some(USERS.into()),
        tls: Some(ca.server()),
        tls_ca_file: Some(ca.cert.clone()),
        tls_allow_connections_without_certificates: allow_without_certificates,
        x509_users: vec![
            X509_ADMIN.to_string(),
            format!("{X509_READER}:readAnyDatabase"),
        ],
        ..SimOptions::default()
    })
    .await
    .expect("start simulator");
    (sim, ca)
}

/// A client presenting `cert` (certificate + key PEM), trusting `ca`, with `extra` options.
async fn cert_client(sim: &SimHandle, ca: &Path, cert: &Path, extra: &str) -> Client {
    let uri = format!(
        "mongodb://{}/?replicaSet=rs0&tls=true&tlsCAFile={}&tlsCertificateKeyFile={}{extra}",
        sim.addr(),
        ca.display(),
        cert.display()
    );
    Client::with_uri_str(uri).await.expect("client")
}

const X509: &str = "&authMechanism=MONGODB-X509&serverSelectionTimeoutMS=10000";

#[tokio::test]
async fn mongodb_x509_logs_in_as_the_certificate_subject_with_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = x509_sim(dir.path(), false).await;
    let admin_pem = ca.client("ops", "/O=Example/OU=sync/CN=ops");
    let reader_pem = ca.client("tributary", "/O=Example/OU=sync/CN=tributary");
    let admin = cert_client(&sim, &ca.cert, &admin_pem, X509).await;
    admin
        .database("shop")
        .collection::<Document>("orders")
        .insert_one(doc! {"_id": 1, "qty": 1})
        .await
        .expect("root writes");

    let reader = cert_client(&sim, &ca.cert, &reader_pem, X509).await;
    let orders = reader.database("shop").collection::<Document>("orders");
    let found = orders
        .find_one(doc! {})
        .await
        .expect("readAnyDatabase reads");
    assert_eq!(found, Some(doc! {"_id": 1, "qty": 1}));
    let status = whoami(&reader).await;
    let auth = status.get_document("authInfo").unwrap();
    assert_eq!(
        auth.get_array("authenticatedUsers").unwrap(),
        &vec![bson::Bson::Document(
            doc! {"user": X509_READER, "db": "$external"}
        )],
        "{status}"
    );
    assert_eq!(
        auth.get_array("authenticatedUserRoles").unwrap(),
        &vec![bson::Bson::Document(
            doc! {"role": "readAnyDatabase", "db": "admin"}
        )],
        "{status}"
    );
    // The roles apply as a SCRAM user's do.
    let e = orders
        .insert_one(doc! {"_id": 2})
        .await
        .expect_err("a read-only X.509 user must not insert");
    assert_eq!(code(&e), Some(13), "{e:?}");
    for c in [admin, reader] {
        c.shutdown().immediate(true).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = x509_sim(dir.path(), false).await;
    // Same subject as a declared user, but signed by a CA the server does not trust.
    let other = TestCa::new(dir.path(), "other-ca");
    let forged = other.client("tributary", "/O=Example/OU=sync/CN=tributary");
    let c = cert_client(
        &sim,
        &ca.cert,
        &forged,
        "&authMechanism=MONGODB-X509&serverSelectionTimeoutMS=2000",
    )
    .await;
    let e = c
        .database("shop")
        .collection::<Document>("orders")
        .find_one(doc! {})
        .await
        .expect_err("a certificate from another CA must be refused");
    assert!(
        matches!(e.kind.as_ref(), ErrorKind::ServerSelection { .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("UnknownCA") || text.contains("BadCertificate"),
        "the TLS alert: {text}"
    );
    c.shutdown().immediate(true).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_certificate_whose_subject_is_no_user_is_refused_as_mongod_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = x509_sim(dir.path(), false).await;
    let stranger = ca.client("stranger", "/O=Example/OU=sync/CN=stranger");
    // The driver turns any refusal of MONGODB-X509 into one authentication error.
    let c = cert_client(&sim, &ca.cert, &stranger, X509).await;
    let e = c
        .database("shop")
        .collection::<Document>("orders")
        .find_one(doc! {})
        .await
        .expect_err("an unknown subject must not log in");
    assert!(
        matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("Authentication failed"), "{e}");
    c.shutdown().immediate(true).await;

    // The server's replies, through the `authenticate` command itself.
    let anon = cert_client(&sim, &ca.cert, &stranger, "&serverSelectionTimeoutMS=10000").await;
    let run = |db: &'static str, cmd: Document| {
        let anon = anon.clone();
        async move {
            let e = anon
                .database(db)
                .run_command(cmd)
                .await
                .expect_err("authenticate must fail");
            let ErrorKind::Command(c) = e.kind.as_ref() else {
                panic!("{e:?}")
            };
            (c.code, c.code_name.clone(), c.message.clone())
        }
    };
    let x509 = doc! {"authenticate": 1, "mechanism": "MONGODB-X509"};
    assert_eq!(
        run("$external", x509.clone()).await,
        (
            11,
            "UserNotFound".into(),
            "Could not find user \"CN=stranger,OU=sync,O=Example\" for db \"$external\"".into()
        )
    );
    let mut claimed = x509.clone();
    claimed.insert("user", X509_READER);
    assert_eq!(
        run("$external", claimed).await,
        (
            18,
            "AuthenticationFailed".into(),
            "Authentication failed.".into()
        )
    );
    assert_eq!(
        run("admin", x509.clone()).await,
        (
            17,
            "ProtocolError".into(),
            "X.509 authentication must always use the $external database.".into()
        )
    );
    anon.shutdown().immediate(true).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_unless_the_server_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    // mongod's default with a CA file: no certificate, no connection.
    let (sim, ca) = x509_sim(dir.path(), false).await;
    let tls = format!(
        "&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=2000",
        ca.cert.display()
    );
    let c = client(&sim, "admin", "Adm1n-s3cret", &tls).await;
    let e = c
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .expect_err("a client without a certificate must be refused");
    assert!(
        matches!(e.kind.as_ref(), ErrorKind::ServerSelection { .. }),
        "{e:?}"
    );
    c.shutdown().immediate(true).await;
    sim.shutdown().await;

    // allowConnectionsWithoutCertificates: SCRAM users get in; X.509 has no subject to use.
    let other = tempfile::tempdir().unwrap();
    let (sim, ca) = x509_sim(other.path(), true).await;
    let tls = format!("&tls=true&tlsCAFile={}", ca.cert.display());
    let c = client(&sim, "admin", "Adm1n-s3cret", &tls).await;
    c.database("shop")
        .collection::<Document>("orders")
        .insert_one(doc! {"by": "scram"})
        .await
        .expect("a SCRAM user without a certificate");
    let e = c
        .database("$external")
        .run_command(doc! {"authenticate": 1, "mechanism": "MONGODB-X509"})
        .await
        .expect_err("MONGODB-X509 without a certificate");
    let ErrorKind::Command(reply) = e.kind.as_ref() else {
        panic!("{e:?}")
    };
    assert_eq!(
        (reply.code, reply.message.as_str()),
        (18, "Authentication failed.")
    );
    c.shutdown().immediate(true).await;
    sim.shutdown().await;
}

/// The subject of the certificate in `pem` as `openssl x509 -nameopt RFC2253` prints it (what
/// MongoDB's documentation tells operators to create the user from).
fn openssl_subject(pem: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(pem)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 subject");
    text.trim()
        .strip_prefix("subject=")
        .expect("subject= prefix")
        .trim()
        .to_string()
}

#[tokio::test]
async fn x509_user_names_are_the_subject_as_openssl_prints_it_in_rfc_2253() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "names-ca");
    // Escaped separators, a multi-valued RDN, and attribute types beyond CN/OU/O.
    let pem = ca.client(
        "tricky",
        "/C=US/ST=New York/O=Example, Inc./OU=sync+UID=42/CN=x\\+y;z/emailAddress=ops@example.com",
    );
    let subject = openssl_subject(&pem);
    let sim = mongo_sim::start(SimOptions {
        tls: Some(ca.server()),
        tls_ca_file: Some(ca.cert.clone()),
        x509_users: vec![format!("{subject}:read@shop")],
        ..SimOptions::default()
    })
    .await
    .expect("start simulator");
    let c = cert_client(&sim, &ca.cert, &pem, X509).await;
    let status = whoami(&c).await;
    let users = status
        .get_document("authInfo")
        .unwrap()
        .get_array("authenticatedUsers")
        .unwrap();
    assert_eq!(
        users,
        &vec![bson::Bson::Document(
            doc! {"user": &subject, "db": "$external"}
        )],
        "{status}"
    );
    c.shutdown().immediate(true).await;
    sim.shutdown().await;
}

/// `--auth` with `--shards`: mongos asks for the same logins as a replica set (SCRAM in the
/// handshake), checks roles on the commands it answers itself (a read of a sharded collection,
/// `shardCollection`) as on those it passes to a shard, and the shards' own ports ask too.
#[tokio::test]
async fn a_sharded_cluster_with_auth_checks_logins_and_roles_at_mongos() {
    let sim = mongo_sim::start(SimOptions {
        auth: Some(USERS.into()),
        shards: 2,
        ..SimOptions::default()
    })
    .await
    .expect("start a sharded simulator with --auth");
    let login = |user: &str, password: &str| {
        format!(
            "mongodb://{user}:{password}@{}/?serverSelectionTimeoutMS=10000",
            sim.addr()
        )
    };
    let admin = Client::with_uri_str(login("admin", "Adm1n-s3cret"))
        .await
        .unwrap();
    let shopper = Client::with_uri_str(login("shopper", "Sh0p"))
        .await
        .unwrap();
    admin
        .database("admin")
        .run_command(doc! {"shardCollection": "shop.orders", "key": {"_id": "hashed"}})
        .await
        .expect("root shards a collection");
    let orders = admin.database("shop").collection::<Document>("orders");
    orders
        .insert_many((0..20).map(|i| doc! {"_id": i}))
        .await
        .unwrap();

    // read@shop: reads the sharded collection through mongos, may not write or shard.
    let theirs = shopper.database("shop").collection::<Document>("orders");
    assert_eq!(theirs.count_documents(doc! {}).await.unwrap(), 20);
    let e = theirs.insert_one(doc! {"_id": 100}).await.unwrap_err();
    assert_eq!(code(&e), Some(13), "{e:?}");
    let e = shopper
        .database("admin")
        .run_command(doc! {"shardCollection": "shop.items", "key": {"_id": 1}})
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(13), "{e:?}");

    // No login: refused at mongos (13); a wrong password fails the handshake (18).
    let without_login = |uri: String| async move {
        let c = Client::with_uri_str(uri).await.unwrap();
        let e = c
            .database("shop")
            .collection::<Document>("orders")
            .find_one(doc! {})
            .await
            .unwrap_err();
        c.shutdown().immediate(true).await;
        code(&e)
    };
    let anon = format!("mongodb://{}/?serverSelectionTimeoutMS=10000", sim.addr());
    assert_eq!(without_login(anon).await, Some(13));
    let wrong = Client::with_uri_str(login("admin", "nope")).await.unwrap();
    let e = wrong
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }),
        "{e:?}"
    );

    // A shard's own port asks for a login too.
    let shard = sim.shard_addrs()[0];
    let direct = format!("mongodb://{shard}/?directConnection=true&serverSelectionTimeoutMS=10000");
    assert_eq!(without_login(direct).await, Some(13));
    for c in [admin, shopper, wrong] {
        c.shutdown().immediate(true).await;
    }
    sim.shutdown().await;
}

/// `usersInfo` lists the `--auth` users of `admin` with their roles and mechanisms.
#[tokio::test]
async fn users_info_lists_the_users_and_their_roles() {
    let sim = secured(None).await;
    let admin = client(&sim, "admin", "Adm1n-s3cret", "").await;
    let r = admin
        .database("admin")
        .run_command(doc! {"usersInfo": 1})
        .await
        .unwrap();
    let users: Vec<&str> = r
        .get_array("users")
        .unwrap()
        .iter()
        .map(|u| u.as_document().unwrap().get_str("user").unwrap())
        .collect();
    assert_eq!(users, ["admin", "reader", "shopper"]);
    let one = admin
        .database("admin")
        .run_command(doc! {"usersInfo": {"user": "shopper", "db": "admin"}})
        .await
        .unwrap();
    let shopper = one.get_array("users").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        shopper.get_array("roles").unwrap(),
        &vec![bson::Bson::Document(doc! {"role": "read", "db": "shop"})]
    );
    admin.shutdown().immediate(true).await;
    sim.shutdown().await;
}
