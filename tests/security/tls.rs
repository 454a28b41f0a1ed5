//! Postgres over TLS with libpq's `sslmode`s, against a server whose `pg_hba.conf` accepts TCP
//! logins only over TLS.

use super::{copy_then_stream, server, sim, text, Setup, ADMIN_PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_test_ca_copies_streams_checks_and_reports_status() {
    let s = server();
    let db = s.fresh_database().await;
    let sim = sim().await;
    let url = s.url(
        "localhost",
        "postgres",
        ADMIN_PASSWORD,
        &db,
        &s.verify_full(),
    );
    let setup = Setup::new(&sim.uri(), &url);
    let admin = s.admin(&db).await;
    copy_then_stream(&setup, &admin, 50).await;

    let out = setup.tributary(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("sslmode=verify-full"), "{}", text(&out));
    let out = setup.tributary(&["status", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(status["initialized"], true, "{status}");

    // Every connection of the pool and the lock went over TLS: the server says so.
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_addr IS NOT NULL AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_ca_and_a_wrong_host_name_each_fail_with_exit_3_saying_which() {
    let s = server();
    let db = s.fresh_database().await;
    let wrong_ca = format!("sslmode=verify-full&sslrootcert={}", s.other_ca.display());
    let cases = [
        (
            s.url("localhost", "postgres", ADMIN_PASSWORD, &db, &wrong_ca),
            "not signed by a CA in sslrootcert",
        ),
        // The certificate names `localhost` only.
        (
            s.url(
                "127.0.0.1",
                "postgres",
                ADMIN_PASSWORD,
                &db,
                &s.verify_full(),
            ),
            "not valid for the host name",
        ),
    ];
    for (url, says) in cases {
        let setup = Setup::new("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500", &url);
        for command in [&["check"][..], &["status"], &["full-sync"], &["sync"]] {
            let out = setup.tributary(command, &[]).await;
            assert_eq!(out.status.code(), Some(3), "{command:?}: {}", text(&out));
            assert!(
                text(&out).contains(says),
                "{command:?} should say {says:?}: {}",
                text(&out)
            );
        }
    }
    // verify-ca checks the chain only: the IP address is fine there.
    let url = s.url(
        "127.0.0.1",
        "postgres",
        ADMIN_PASSWORD,
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", s.ca.display()),
    );
    let setup = Setup::new("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500", &url);
    let out = setup.tributary(&["schema", "--apply"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test]
async fn require_works_and_disable_is_refused_clearly() {
    let s = server();
    let db = s.fresh_database().await;
    let sim = sim().await;
    let require = Setup::new(
        &sim.uri(),
        &s.url(
            "localhost",
            "postgres",
            ADMIN_PASSWORD,
            &db,
            "sslmode=require",
        ),
    );
    let out = require.tributary(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = require.tributary(&["schema", "--apply"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let disable = Setup::new(
        &sim.uri(),
        &s.url(
            "localhost",
            "postgres",
            ADMIN_PASSWORD,
            &db,
            "sslmode=disable",
        ),
    );
    for command in [&["check"][..], &["status"], &["sync"]] {
        let out = disable.tributary(command, &[]).await;
        assert_eq!(out.status.code(), Some(3), "{command:?}: {}", text(&out));
        assert!(
            text(&out).contains("accepts this login only over TLS"),
            "{command:?}: {}",
            text(&out)
        );
    }
    sim.shutdown().await;
}
