//! A least-privilege role (docs/privileges.md): with every table created beforehand it copies
//! and streams with no DDL; with a table missing it is told exactly what to run.

use tokio_postgres::Client;

use super::{copy_then_stream, server, sim, text, Setup, ADMIN_PASSWORD};

/// Creates everything as the superuser (`schema --apply`), then a login role with exactly the
/// grants docs/privileges.md lists, and no right to create anything.
async fn least_privilege_role(admin: &Client, setup_admin: &Setup, role: &str) {
    let out = setup_admin.tributary(&["schema", "--apply"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD 'lp-pw'; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             GRANT USAGE ON SCHEMA public, tributary TO \"{role}\"; \
             GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE \
               ON ALL TABLES IN SCHEMA public, tributary TO \"{role}\"; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA tributary TO \"{role}\";"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_role_copies_and_streams_into_pre_created_tables() {
    let s = server();
    let db = s.fresh_database().await;
    let sim = sim().await;
    let admin = s.admin(&db).await;
    let as_admin = Setup::new(
        &sim.uri(),
        &s.url(
            "localhost",
            "postgres",
            ADMIN_PASSWORD,
            &db,
            &s.verify_full(),
        ),
    );
    let role = format!("lp_{:08x}", rand::random::<u32>());
    least_privilege_role(&admin, &as_admin, &role).await;
    let setup = Setup::new(
        &sim.uri(),
        &s.url("localhost", &role, "lp-pw", &db, &s.verify_full()),
    );
    copy_then_stream(&setup, &admin, 40).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_missing_table_names_the_grant_and_schema_apply() {
    let s = server();
    let db = s.fresh_database().await;
    let sim = sim().await;
    let admin = s.admin(&db).await;
    let as_admin = Setup::new(
        &sim.uri(),
        &s.url(
            "localhost",
            "postgres",
            ADMIN_PASSWORD,
            &db,
            &s.verify_full(),
        ),
    );
    let role = format!("lp_{:08x}", rand::random::<u32>());
    least_privilege_role(&admin, &as_admin, &role).await;
    let setup = Setup::new(
        &sim.uri(),
        &s.url("localhost", &role, "lp-pw", &db, &s.verify_full()),
    );
    // `check`'s pre-flight agrees: nothing to create, every privilege there, TLS in use.
    let out = setup.tributary(&["check"], &[]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("sync runs no DDL"), "{all}");
    assert!(all.contains("TLS on"), "{all}");
    admin
        .batch_execute("DROP TABLE public.order_items; ALTER TABLE public.orders DROP COLUMN qty")
        .await
        .unwrap();
    for command in [&["check"][..], &["sync"], &["full-sync"]] {
        let out = setup.tributary(command, &[]).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{command:?}: {all}");
        for needle in [
            "table \"public\".\"order_items\"".to_owned(),
            "column \"qty\" of table \"public\".\"orders\"".to_owned(),
            format!("GRANT CREATE ON SCHEMA \"public\" TO \"{role}\";"),
            format!("GRANT \"postgres\" TO \"{role}\";"),
            "tributary schema --apply".to_owned(),
        ] {
            assert!(
                all.contains(&needle),
                "{command:?} should say {needle}: {all}"
            );
        }
    }
    // The fix it names works: `schema --apply` by the owner, then the role streams.
    let out = as_admin.tributary(&["schema", "--apply"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    admin
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.order_items TO \"{role}\""
        ))
        .await
        .unwrap();
    let out = setup.tributary(&["full-sync"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A privilege taken away is named by `check` with the GRANT that gives it back.
    admin
        .batch_execute(&format!(
            "REVOKE INSERT, TRUNCATE ON public.orders FROM \"{role}\""
        ))
        .await
        .unwrap();
    let out = setup.tributary(&["check"], &[]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    let grant = format!("GRANT INSERT, TRUNCATE ON \"public\".\"orders\" TO \"{role}\";");
    assert!(all.contains(&grant), "check should say {grant}: {all}");
    sim.shutdown().await;
}
