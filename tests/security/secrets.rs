//! Secrets never leak: every command, failing on a wrong password, a host nobody listens on,
//! a certificate from the wrong CA or a refused `sslpassword`, at `RUST_LOG=trace` with JSON
//! logs, prints none of the passwords or tokens of its URIs.

use super::{server, sim, text, Setup, ADMIN_PASSWORD};

const PG_SECRET: &str = "Pg-s3cret-41d0a7";
const MONGO_SECRET: &str = "Mongo-s3cret-9be2f1";
const SSL_SECRET: &str = "Ssl-s3cret-c07e55";
const TOKEN_SECRET: &str = "Tok3n-s3cret-5a9b21";

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_prints_a_password_whatever_fails() {
    let s = server();
    let db = s.fresh_database().await;
    let sim = sim().await;
    let sim_addr = sim.uri().trim_start_matches("mongodb://").to_owned();
    let sim_addr = sim_addr.split(['/', '?']).next().unwrap().to_owned();
    let dead = closed_port();
    let fast = "serverSelectionTimeoutMS=1000&connectTimeoutMS=1000";
    let cases: Vec<(&str, String, String)> = vec![
        (
            "wrong password",
            format!("mongodb://tributary:{MONGO_SECRET}@{sim_addr}/?{fast}"),
            s.url("localhost", "postgres", PG_SECRET, &db, &s.verify_full()),
        ),
        (
            "wrong host",
            format!("mongodb://tributary:{MONGO_SECRET}@127.0.0.1:{dead}/?{fast}"),
            format!("postgres://postgres:{PG_SECRET}@127.0.0.1:{dead}/{db}?sslmode=require"),
        ),
        (
            "bad certificate",
            format!("mongodb://tributary:{MONGO_SECRET}@{sim_addr}/?{fast}"),
            s.url(
                "localhost",
                "postgres",
                PG_SECRET,
                &db,
                &format!("sslmode=verify-full&sslrootcert={}", s.other_ca.display()),
            ),
        ),
        (
            "sslpassword and authMechanismProperties",
            format!(
                "mongodb://tributary:{MONGO_SECRET}@{sim_addr}/?{fast}\
                 &authMechanismProperties=AWS_SESSION_TOKEN:{TOKEN_SECRET}"
            ),
            s.url(
                "localhost",
                "postgres",
                PG_SECRET,
                &db,
                &format!(
                    "sslmode=verify-full&sslrootcert={}&sslcert=/c.pem&sslkey=/k.pem\
                     &sslpassword={SSL_SECRET}",
                    s.ca.display()
                ),
            ),
        ),
    ];
    let commands: [&[&str]; 6] = [
        &["check"],
        &["check", "--json"],
        &["status", "--json"],
        &["sync"],
        &["full-sync"],
        &["verify", "--json"],
    ];
    let env = [("RUST_LOG", "trace")];
    for (case, mongo, pg) in &cases {
        let setup = Setup::new(mongo, pg);
        for command in commands {
            let mut args = vec!["--log-format", "json"];
            args.extend_from_slice(command);
            let out = setup.tributary(&args, &env).await;
            let all = text(&out);
            assert_ne!(
                out.status.code(),
                Some(0),
                "{case}: {command:?} succeeded: {all}"
            );
            for secret in [
                PG_SECRET,
                MONGO_SECRET,
                SSL_SECRET,
                TOKEN_SECRET,
                ADMIN_PASSWORD,
            ] {
                assert!(
                    !all.contains(secret),
                    "{case}: {command:?} printed a secret ({secret}):\n{all}"
                );
            }
        }
    }
    sim.shutdown().await;
}
