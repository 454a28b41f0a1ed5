//! MongoDB secured like a real deployment (mongo-sim with `--tls-cert/--tls-key` and
//! `--auth`): the copy-then-stream equivalence over TLS with SCRAM-SHA-256, a wrong password
//! (exit 3, "authentication failed", no secret in any output), and a user that cannot read a
//! mapped namespace (refused, the namespace named). With client certificates checked
//! (`--tls-ca-file`) and an X.509 user (`--x509-user`): the same equivalence logged in with
//! MONGODB-X509, and a certificate whose subject is no user (exit 3, "authentication failed").
//! And the equivalence through a 2-shard `mongos` with TLS and SCRAM.

use std::path::{Path, PathBuf};

use mongo_sim::{SimHandle, SimOptions};

use super::{copy_then_stream, text, Setup};
use crate::support::pki::TestCa;
use crate::support::postgres::fresh_database;

const ROOT_PASSWORD: &str = "R00t-s3cret-6e1d02";
const READER_PASSWORD: &str = "Read3r-s3cret-0c9a44";
const WRONG_PASSWORD: &str = "Wr0ng-s3cret-77b1c3";

/// `tributary` is root; `reader` reads `shop` (and the oplog) but not `crm`.
fn users() -> String {
    format!("tributary:{ROOT_PASSWORD},reader:{READER_PASSWORD}:read@shop+read@local")
}

/// A simulator with TLS and `users()`, the test CA, and the directory holding them.
async fn secured_sim() -> (SimHandle, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "mongo-ca");
    let sim = mongo_sim::start(SimOptions {
        tls: Some(ca.server()),
        auth: Some(users()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    (sim, ca.cert, dir)
}

/// `mongodb://user:password@HOST:PORT/?replicaSet=rs0&tls=true&tlsCAFile=CA&...`.
fn uri(sim: &SimHandle, user: &str, password: &str, ca: &Path, extra: &str) -> String {
    format!(
        "mongodb://{user}:{password}@{}/?replicaSet=rs0&tls=true&tlsCAFile={}\
         &serverSelectionTimeoutMS=5000{extra}",
        sim.addr(),
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_then_stream_is_equal_over_tls_with_scram_sha_256() {
    let (sim, ca, _dir) = secured_sim().await;
    let db = fresh_database().await;
    let mongo = uri(
        &sim,
        "tributary",
        ROOT_PASSWORD,
        &ca,
        "&authMechanism=SCRAM-SHA-256",
    );
    let setup = Setup::new(&mongo, &db.url);
    copy_then_stream(&setup, &db.client, 40).await;

    // The pre-flight agrees, over the same secured connection.
    let out = setup.tributary(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(ROOT_PASSWORD), "{}", text(&out));
    sim.shutdown().await;
}

/// A sharded cluster secured the same way: Tributary logs in to mongos (SCRAM over TLS, no
/// replica set name), copies and streams through it with `orders` sharded on a hashed `_id`,
/// and its pre-flight agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_then_stream_through_a_secured_mongos() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "mongo-ca");
    let sim = mongo_sim::start(SimOptions {
        tls: Some(ca.server()),
        auth: Some(users()),
        shards: 2,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mongo = format!(
        "mongodb://tributary:{ROOT_PASSWORD}@{}/?tls=true&tlsCAFile={}&serverSelectionTimeoutMS=5000",
        sim.addr(),
        ca.cert.display()
    );
    let client = mongodb::Client::with_uri_str(&mongo).await.unwrap();
    client
        .database("admin")
        .run_command(bson::doc! {"shardCollection": "shop.orders", "key": {"_id": "hashed"}})
        .await
        .expect("shardCollection through the secured mongos");
    let db = fresh_database().await;
    let setup = Setup::new(&mongo, &db.url);
    copy_then_stream(&setup, &db.client, 40).await;
    let out = setup.tributary(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    client.shutdown().immediate(true).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_exits_3_saying_authentication_failed_and_prints_no_secret() {
    let (sim, ca, _dir) = secured_sim().await;
    let db = fresh_database().await;
    for mechanism in ["", "&authMechanism=SCRAM-SHA-1"] {
        let setup = Setup::new(
            &uri(&sim, "tributary", WRONG_PASSWORD, &ca, mechanism),
            &db.url,
        );
        let env = [("RUST_LOG", "trace")];
        for command in [&["sync"][..], &["full-sync"], &["check"]] {
            let mut args = vec!["--log-format", "json"];
            args.extend_from_slice(command);
            let out = setup.tributary(&args, &env).await;
            let all = text(&out);
            assert_eq!(out.status.code(), Some(3), "{command:?}{mechanism}: {all}");
            let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
            assert!(
                stderr.contains("authentication failed"),
                "{command:?}{mechanism} should say authentication failed: {all}"
            );
            assert!(
                !all.contains(WRONG_PASSWORD),
                "{command:?}{mechanism} printed the password:\n{all}"
            );
        }
    }
    sim.shutdown().await;
}

/// `shop.orders`, which `reader` may read, and `crm.people`, which it may not.
const SHOP: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,  source: _id, type: text }
"#;
const CRM: &str = r#"
database: crm
collections:
  people:
    columns:
      - { name: id,  source: _id, type: text }
"#;

/// Runs `full-sync` and `sync` with `setup` and checks each exits 3 saying `says`.
async fn refused(setup: &Setup, says: &[&str]) {
    for command in [&["full-sync"][..], &["sync"]] {
        let out = setup.tributary(command, &[]).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{command:?}: {all}");
        for what in says {
            assert!(all.contains(what), "{command:?} should say {what:?}: {all}");
        }
        assert!(!all.contains(READER_PASSWORD), "{command:?}: {all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_read_access_to_a_mapped_namespace_is_refused_naming_it() {
    let (sim, ca, _dir) = secured_sim().await;
    let db = fresh_database().await;
    // Both collections exist (created as root), so only the privilege is missing.
    let root = mongodb::Client::with_uri_str(uri(&sim, "tributary", ROOT_PASSWORD, &ca, ""))
        .await
        .unwrap();
    for (d, c) in [("shop", "orders"), ("crm", "people")] {
        root.database(d)
            .collection::<bson::Document>(c)
            .insert_one(bson::doc! {"_id": "x"})
            .await
            .unwrap();
    }
    let reader = uri(&sim, "reader", READER_PASSWORD, &ca, "");
    // Oplog mode: `read@local` tails the oplog, the copy of crm.people is refused.
    let oplog = Setup::with_mappings(&reader, "oplog", &db.url, &[SHOP, CRM]);
    refused(&oplog, &["crm.people", "not authorized on crm"]).await;
    // Change streams: a deployment-wide stream needs read access to every database, which
    // `read@shop` is not; the error names the namespaces the stream was for.
    // (A database of its own: the oplog runs above left an oplog checkpoint.)
    let db2 = fresh_database().await;
    let streams = Setup::with_mappings(&reader, "change_stream", &db2.url, &[SHOP, CRM]);
    refused(
        &streams,
        &["crm.people", "change stream", "readAnyDatabase"],
    )
    .await;
    root.shutdown().immediate(true).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_driver_is_built_with_aws_iam_authentication() {
    // MONGODB-AWS (Atlas IAM users and roles) exists only with the driver's `aws-auth`
    // feature; without it, parsing the URI fails. Parsing alone: no credentials are fetched.
    let options = mongodb::options::ClientOptions::parse(
        "mongodb://127.0.0.1:1/?authMechanism=MONGODB-AWS&authSource=%24external",
    )
    .await
    .expect("MONGODB-AWS is accepted");
    let credential = options.credential.expect("a credential");
    assert_eq!(
        credential.mechanism,
        Some(mongodb::options::AuthMechanism::MongoDbAws)
    );
}

/// The X.509 user Tributary logs in as (root): the subject of the certificate made with
/// `-subj /O=Example/OU=sync/CN=tributary`, in RFC 2253 form.
const X509_SUBJECT: &str = "CN=tributary,OU=sync,O=Example";

/// A simulator with TLS that verifies client certificates against a CA made in `dir` and
/// knows one X.509 user, `X509_SUBJECT`.
async fn x509_sim(dir: &Path) -> (SimHandle, TestCa) {
    let ca = TestCa::new(dir, "x509-ca");
    let sim = mongo_sim::start(SimOptions {
        tls: Some(ca.server()),
        tls_ca_file: Some(ca.cert.clone()),
        x509_users: vec![X509_SUBJECT.to_string()],
        ..SimOptions::default()
    })
    .await
    .unwrap();
    (sim, ca)
}

/// The connection string docs/privileges.md shows for X.509: no user name (the server takes
/// it from the certificate), `authSource` defaults to `$external`.
fn x509_uri(sim: &SimHandle, ca: &Path, certificate: &Path) -> String {
    format!(
        "mongodb://{}/?replicaSet=rs0&tls=true&tlsCAFile={}&tlsCertificateKeyFile={}\
         &authMechanism=MONGODB-X509&serverSelectionTimeoutMS=5000",
        sim.addr(),
        ca.display(),
        certificate.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_then_stream_is_equal_over_tls_with_an_x509_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = x509_sim(dir.path()).await;
    let certificate = ca.client("tributary", "/O=Example/OU=sync/CN=tributary");
    let db = fresh_database().await;
    let setup = Setup::new(&x509_uri(&sim, &ca.cert, &certificate), &db.url);
    copy_then_stream(&setup, &db.client, 40).await;

    // The binary too: the pre-flight over the same connection.
    let out = setup.tributary(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_subject_is_no_user_exits_3_saying_authentication_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = x509_sim(dir.path()).await;
    // Signed by the CA the server trusts, so the handshake succeeds; only the login fails.
    let stranger = ca.client("stranger", "/O=Example/OU=sync/CN=stranger");
    let db = fresh_database().await;
    let setup = Setup::new(&x509_uri(&sim, &ca.cert, &stranger), &db.url);
    for command in [&["sync"][..], &["full-sync"], &["check"]] {
        let out = setup.tributary(command, &[]).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{command:?}: {all}");
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            stderr.contains("authentication failed"),
            "{command:?} should say authentication failed: {all}"
        );
        assert!(
            stderr.contains("certificate"),
            "{command:?} should point at the client certificate: {all}"
        );
    }
    sim.shutdown().await;
}
