//! The `tributary` binary as a user runs it: `check`, `schema`, `status` and the exit codes of
//! SPEC "Command line".

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::fresh_database;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a config into a temp dir and returns (dir guard, config path).
fn write_config(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tributary.toml");
    std::fs::write(&path, body).expect("write config");
    (dir, path)
}

fn config_text(mongo_uri: &str, pg_uri: &str, mappings: &Path) -> String {
    format!(
        "[mongo]\nuri = \"{mongo_uri}\"\n\n[postgres]\nuri = \"{pg_uri}\"\n\n[sync]\nname = \"t\"\nmappings = \"{}\"\n",
        mappings.display()
    )
}

async fn tributary(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tributary")
    })
    .await
    .expect("join")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn check_reports_all_five_mapping_mistakes_with_positions_and_exit_2() {
    let bad = repo().join("tests/fixtures/mappings/bad/five_mistakes");
    let (_dir, cfg) = write_config(&config_text(
        "mongodb://127.0.0.1:1/",
        "postgres://postgres@127.0.0.1:1/x",
        &bad,
    ));
    let out = tributary(&["check", "--config", cfg.to_str().unwrap()]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let located: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("five_mistakes/") && l.contains(".yml:"))
        .collect();
    assert_eq!(located.len(), 5, "expected 5 located errors, got:\n{all}");
    for needle in ["numerc", "status", "extra_props", "_id", "orders"] {
        assert!(all.contains(needle), "no error mentions {needle}:\n{all}");
    }
    // Nothing was contacted: the unreachable URIs above would otherwise give exit 3.
}

#[tokio::test]
async fn check_names_an_unknown_config_key_with_its_position() {
    let (_dir, cfg) = write_config(
        "[mongo]\nuri = \"mongodb://x\"\n\n[postgres]\nuri = \"postgres://x\"\nshema = \"public\"\n\n[sync]\nmappings = \"m\"\n",
    );
    let out = tributary(&["check", "--config", cfg.to_str().unwrap()]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("shema"), "{all}");
    assert!(
        all.contains("tributary.toml:6:"),
        "no file:line:column in:\n{all}"
    );
}

#[tokio::test]
async fn check_exits_3_when_mongodb_is_unreachable_and_never_prints_the_password() {
    let db = fresh_database().await;
    let port = closed_port();
    let mongo = format!("mongodb://app:hunter2secret@127.0.0.1:{port}/?serverSelectionTimeoutMS=500&connectTimeoutMS=500");
    let (_dir, cfg) = write_config(&config_text(&mongo, &db.url, &repo().join("mappings/shop")));
    let out = tributary(&["check", "--config", cfg.to_str().unwrap()]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains("postgres") && all.contains("ok"),
        "postgres ping should pass:\n{all}"
    );
    assert!(
        all.contains("mongo"),
        "the failure should name MongoDB:\n{all}"
    );
    assert!(!all.contains("hunter2secret"), "password leaked:\n{all}");
}

#[tokio::test]
async fn schema_prints_quoted_ddl_without_connecting() {
    let (_dir, cfg) = write_config(&config_text(
        "mongodb://127.0.0.1:1/",
        "postgres://postgres@127.0.0.1:1/x",
        &repo().join("mappings/shop"),
    ));
    let out = tributary(&["schema", "--config", cfg.to_str().unwrap()]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("\"orders\""), "{all}");
    assert!(all.contains("\"order_items\""), "{all}");
    assert!(all.contains("\"checkpoints\""), "{all}");
}

#[tokio::test]
async fn schema_apply_is_idempotent_and_status_reads_the_state_tables() {
    let db = fresh_database().await;
    let (_dir, cfg) = write_config(&config_text(
        "mongodb://127.0.0.1:1/",
        &db.url,
        &repo().join("mappings/shop"),
    ));
    let cfg = cfg.to_str().unwrap();

    let before = tributary(&["status", "--config", cfg, "--json"]).await;
    assert_eq!(before.status.code(), Some(0), "{}", text(&before));
    let json: serde_json::Value = serde_json::from_slice(&before.stdout).expect("status --json");
    assert_eq!(json["initialized"], false);

    for _ in 0..2 {
        let out = tributary(&["schema", "--config", cfg, "--apply"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let tables: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('orders','order_items','checkpoints','collections','dead_letters')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 5);

    let after = tributary(&["status", "--config", cfg, "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&after.stdout).expect("status --json");
    assert_eq!(json["initialized"], true, "{}", text(&after));
    let human = tributary(&["status", "--config", cfg]).await;
    assert_eq!(human.status.code(), Some(0));
    assert!(
        text(&human).contains("no stream has written"),
        "{}",
        text(&human)
    );
}

#[tokio::test]
async fn cutover_refuses_unblocking_together_with_blocking_before_connecting() {
    let (_dir, cfg) = write_config(&config_text(
        "mongodb://127.0.0.1:1/",
        "postgres://postgres@127.0.0.1:1/x",
        &repo().join("mappings/shop"),
    ));
    let out = tributary(&[
        "cutover",
        "--config",
        cfg.to_str().unwrap(),
        "--unblock-writes",
        "--block-writes",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--block-writes"), "{}", text(&out));
}

#[tokio::test]
async fn resync_refuses_an_unmapped_collection_before_connecting_with_exit_2() {
    // Both ends unreachable: the refusal must come from the mappings alone.
    let (_dir, cfg) = write_config(&config_text(
        "mongodb://127.0.0.1:1/",
        "postgres://postgres@127.0.0.1:1/x",
        &repo().join("mappings/shop"),
    ));
    let out = tributary(&[
        "resync",
        "--config",
        cfg.to_str().unwrap(),
        "--collections",
        "shop.nope",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("\"shop.nope\", which no mapping maps"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn resync_and_reload_exit_3_when_postgres_is_unreachable() {
    let port = closed_port();
    let (_dir, cfg) = write_config(&config_text(
        "mongodb://127.0.0.1:1/",
        &format!("postgres://postgres@127.0.0.1:{port}/x?connect_timeout=2"),
        &repo().join("mappings/shop"),
    ));
    let cfg = cfg.to_str().unwrap();
    for args in [
        vec!["resync", "--config", cfg, "--collections", "shop.orders"],
        vec!["reload", "--config", cfg, "--timeout", "5"],
    ] {
        let out = tributary(&args).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
    }
}
