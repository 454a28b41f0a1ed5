//! `tributary check`'s pre-flight against mongo-sim and Postgres: topology, collections, the
//! oplog window, and a stale checkpoint whose history is about to go, then gone.

use mongo_sim::SimOptions;
use serde_json::Value;
use tributary::config::SourceKind;

use super::{order, stop_sync, World};

async fn check(w: &World) -> (Option<i32>, Value, String) {
    let path = w.config_path();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["check", "--json", "--config"])
            .arg(path)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tributary check")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --json is not JSON ({e}):\n{all}"));
    (out.status.code(), json, all)
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
}

async fn stale_checkpoint(kind: SourceKind) {
    let w = World::with(
        kind,
        100,
        SimOptions {
            oplog_max_entries: 60,
            ..SimOptions::default()
        },
        "",
    )
    .await;
    // Before any sync: no checkpoint; a replica set; the collection missing (warning only).
    w.mongo
        .database("shop")
        .create_collection("orders")
        .await
        .unwrap();
    let (code, report, all) = check(&w).await;
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(report["ok"], true, "{all}");
    assert_eq!(finding(&report, "topology")["level"], "ok", "{all}");
    assert_eq!(finding(&report, "checkpoint")["level"], "ok", "{all}");
    assert_eq!(finding(&report, "objects")["level"], "ok", "{all}");
    let window = finding(&report, "oplog_window");
    assert_eq!(
        window["level"], "warning",
        "a window of seconds is under 24 h: {all}"
    );

    // A checkpoint, then the stream stops while writes go on: still inside the oplog, but
    // the oldest entries are just ahead of it.
    let (stop, task) = w.start_sync();
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    w.sync_point("first").await;
    stop_sync(stop, task).await;
    for i in 0..10 {
        w.orders()
            .insert_one(order(&format!("b{i}"), i, &[]))
            .await
            .unwrap();
    }
    let (code, report, all) = check(&w).await;
    assert_eq!(code, Some(0), "warnings do not fail: {all}");
    let cp = finding(&report, "checkpoint");
    assert_eq!(cp["level"], "warning", "{all}");
    assert!(
        cp["message"].as_str().unwrap().contains("about to be lost"),
        "{all}"
    );
    assert!(report["warnings"].as_u64().unwrap() >= 2, "{all}");

    // Enough writes that the checkpoint's entry leaves the capped oplog: an error, exit 3.
    for i in 0..100 {
        w.orders()
            .insert_one(order(&format!("c{i:03}"), i, &[]))
            .await
            .unwrap();
    }
    let (code, report, all) = check(&w).await;
    assert_eq!(code, Some(3), "{all}");
    assert_eq!(report["ok"], false, "{all}");
    let cp = finding(&report, "checkpoint");
    assert_eq!(cp["level"], "error", "{all}");
    assert!(
        cp["message"].as_str().unwrap().contains("history is lost"),
        "{all}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_a_stale_checkpoint_then_reports_lost_history_change_stream() {
    stale_checkpoint(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_a_stale_checkpoint_then_reports_lost_history_oplog() {
    stale_checkpoint(SourceKind::Oplog).await;
}

/// A checkpoint row that cannot be used is an error naming the table and what to do, not
/// "no checkpoint yet".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_an_unusable_checkpoint() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let (stop, task) = w.start_sync();
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    w.sync_point("first").await;
    stop_sync(stop, task).await;
    w.db.client
        .execute(
            "UPDATE tributary.checkpoints SET source = 'carrier-pigeon'",
            &[],
        )
        .await
        .unwrap();
    let (code, report, all) = check(&w).await;
    assert_eq!(code, Some(3), "{all}");
    let checkpoints: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "checkpoint")
        .collect();
    assert_eq!(checkpoints.len(), 1, "{all}");
    assert_eq!(checkpoints[0]["level"], "error", "{all}");
    let message = checkpoints[0]["message"].as_str().unwrap();
    assert!(message.contains("cannot be used"), "{all}");
    assert!(message.contains("tributary full-sync"), "{all}");
    w.stop().await;
}
