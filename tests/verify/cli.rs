//! `tributary verify` as a user runs it: SPEC's JSON object, the human report, and the exit
//! codes (0 equal, 1 not equal, 2 usage or config, 3 runtime).

use std::process::Output;

use serde_json::Value;

use super::World;

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

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_json_has_the_spec_fields_and_exit_codes_follow_the_verdict() {
    let w = World::new().await;
    w.seed(50, 5).await;
    w.full_sync().await;
    let cfg = w.config_path();

    let out = tributary(&["verify", "--config", &cfg, "--mode", "full", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(
        keys(&v),
        [
            "collections",
            "equal",
            "finished_at",
            "mode",
            "started_at",
            "stream"
        ]
    );
    assert_eq!(v["mode"], "full");
    assert_eq!(v["equal"], true);
    assert_eq!(v["stream"], "test");
    let started = v["started_at"].as_str().unwrap();
    assert!(
        started.ends_with('Z') && started.len() == "2026-12-03T10:00:00.000Z".len(),
        "{started}"
    );
    let orders = &v["collections"][0];
    assert_eq!(
        keys(orders),
        [
            "checked",
            "children",
            "dead_letter",
            "differences",
            "different",
            "documents",
            "extra",
            "missing",
            "namespace",
            "rechecked",
            "rows",
            "table"
        ]
    );
    assert_eq!(orders["namespace"], "shop.orders");
    assert_eq!(orders["table"], "orders");
    assert_eq!(orders["documents"], 50);
    assert_eq!(
        keys(&orders["children"][0]),
        ["different", "elements", "extra", "missing", "rows", "table"]
    );
    assert_eq!(orders["children"][0]["elements"], 150);

    w.sql("UPDATE order_items SET n = 7 WHERE order_id = 'o0003' AND idx = 2")
        .await;
    let out = tributary(&["verify", "--config", &cfg, "--mode", "full", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v["equal"], false);
    assert_eq!(
        v["collections"][0]["differences"][0],
        serde_json::json!({"kind": "different", "table": "order_items", "_id": "o0003",
                           "idx": 2, "column": "n", "mongo": 2, "postgres": 7})
    );

    // The human report names the verdict and the difference; counts cannot see a value.
    let out = tributary(&["verify", "--config", &cfg, "--mode", "full"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("NOT EQUAL"), "{report}");
    assert!(
        report.contains("order_items _id \"o0003\" idx 2 column n: mongo 2, postgres 7"),
        "{report}"
    );
    let out = tributary(&["verify", "--config", &cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verify --mode counts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_2_for_usage_and_config_errors_and_3_when_postgres_is_down() {
    let w = World::new().await;
    let cfg = w.config_path();
    let out = tributary(&[
        "verify",
        "--config",
        &cfg,
        "--mode",
        "sample",
        "--sample-size",
        "0",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--sample-size"), "{}", text(&out));

    let out = tributary(&["verify", "--config", &cfg, "--mode", "everything"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[mongo]\nuri = \"mongodb://127.0.0.1:1\"\n[postgres]\nuri = \"postgres://x@127.0.0.1:1/x\"\n\
         [sync]\nmappings = \"missing.yml\"\n",
    )
    .unwrap();
    let out = tributary(&["verify", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A closed port: the mappings load, Postgres does not answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = dir.path().join("down.toml");
    std::fs::write(
        &down,
        format!(
            "[mongo]\nuri = \"{}\"\n[postgres]\nuri = \"postgres://x@127.0.0.1:{port}/x\"\n\
             [sync]\nmappings = \"{}\"\n",
            w.sim.uri(),
            w.dir.path().join("mappings.yml").display()
        ),
    )
    .unwrap();
    let out = tributary(&["verify", "--config", down.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}
