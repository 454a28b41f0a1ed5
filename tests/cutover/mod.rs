//! `tributary cutover` as a user runs it (the binary), against mongo-sim and a fresh
//! Postgres: the verdict while a writer writes and after it stopped, with a running `sync` and
//! without one, `--block-writes` / `--unblock-writes`, and the stored reports.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bson::doc;
use tributary::config::SourceKind;

use crate::stream::{order, stop_sync, World};

async fn cutover(w: &World, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all: Vec<String> = vec![
        "cutover".into(),
        "--config".into(),
        w.config_path().to_string_lossy().into_owned(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out: Output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(&all)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tributary")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, text)
}

/// Inserts one document with pymongo (the repository's venv, made by
/// scripts/ensure-venv.sh, which `make test` runs first); returns the error code (0 when the
/// insert went through) and what Python printed.
async fn pymongo_insert(w: &World) -> (i64, String) {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/ensure-venv.sh (make test does)",
        python.display()
    );
    let script = r#"
import sys, uuid
from pymongo import MongoClient
from pymongo.errors import OperationFailure
c = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)
try:
    c.shop.orders.insert_one({"_id": "py-" + uuid.uuid4().hex, "qty": 1})
    print(0)
except OperationFailure as e:
    print(e.code)
"#;
    let uri = w.sim.uri().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &uri])
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(-1);
    (code, text)
}

async fn stored_verdicts(w: &World) -> Vec<bool> {
    w.db.client
        .query("SELECT ready FROM tributary.cutovers ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn not_ready_while_a_writer_writes_and_ready_once_it_stopped() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let (stop, task) = w.start_sync();
    for i in 0..20 {
        w.orders()
            .insert_one(order(&format!("o{i}"), i, &["a", "b"]))
            .await
            .unwrap();
    }
    w.sync_point("start").await;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let orders = w.orders();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                orders
                    .update_one(doc! {"_id": "o1"}, doc! {"$inc": {"qty": 1}})
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            n
        })
    };
    let (code, report, text) = cutover(&w, &["--quiet-period", "2", "--json"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(report["ready"], false, "{text}");
    assert_eq!(report["quiet"], false);
    assert_eq!(report["applied_by"], "daemon");
    assert!(
        report["writes"]["shop.orders"].as_u64().unwrap() > 0,
        "{text}"
    );
    let reasons = report["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("shop.orders")),
        "{text}"
    );
    writing.store(false, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);

    let (code, report, text) =
        cutover(&w, &["--quiet-period", "1", "--verify", "full", "--json"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["ready"], true);
    assert_eq!(report["caught_up"], true);
    assert_eq!(report["quiet"], true);
    assert_eq!(report["writes_blocked"], false);
    assert_eq!(report["verify"]["mode"], "full");
    assert_eq!(report["verify"]["equal"], true, "{text}");
    assert!(report["reasons"].as_array().unwrap().is_empty());
    assert_eq!(stored_verdicts(&w).await, vec![false, true]);
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test]
async fn without_a_daemon_cutover_applies_the_changes_itself() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let (stop, task) = w.start_sync();
    for i in 0..30 {
        w.orders()
            .insert_one(order(&format!("o{i}"), i, &["a"]))
            .await
            .unwrap();
    }
    w.sync_point("start").await;
    stop_sync(stop, task).await;
    // Written while no daemon runs.
    for i in 30..40 {
        w.orders()
            .insert_one(order(&format!("o{i}"), i, &["x", "y"]))
            .await
            .unwrap();
    }
    w.orders()
        .update_one(doc! {"_id": "o3"}, doc! {"$set": {"name": "renamed"}})
        .await
        .unwrap();
    w.orders().delete_one(doc! {"_id": "o4"}).await.unwrap();

    let (code, report, text) =
        cutover(&w, &["--quiet-period", "1", "--verify", "full", "--json"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["applied_by"], "cutover");
    assert_eq!(report["caught_up"], true);
    assert_eq!(report["verify"]["equal"], true, "{text}");
    w.assert_equal().await;
    assert_eq!(stored_verdicts(&w).await, vec![true]);

    // Human output too; the verdict is the same.
    let (code, _, text) = cutover(&w, &["--quiet-period", "0"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("READY"), "{text}");
    w.stop().await;
}

#[tokio::test]
async fn block_writes_refuses_the_next_insert_until_unblocked() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let (stop, task) = w.start_sync();
    w.orders().insert_one(order("a", 1, &[])).await.unwrap();
    w.sync_point("start").await;

    let (code, report, text) =
        cutover(&w, &["--quiet-period", "1", "--block-writes", "--json"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["writes_blocked"], true);
    // A client we did not write sees what MongoDB gives it: pymongo's insert fails with 371.
    let (code, pymongo) = pymongo_insert(&w).await;
    assert_eq!(code, 371, "pymongo: {pymongo}");
    let err = w
        .orders()
        .insert_one(order("late", 1, &[]))
        .await
        .expect_err("user writes are blocked");
    match *err.kind {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref e)) => {
            assert_eq!(e.code, 371, "{err}")
        }
        mongodb::error::ErrorKind::Command(ref e) => assert_eq!(e.code, 371, "{err}"),
        _ => panic!("unexpected error {err}"),
    }

    let (code, _, text) = cutover(&w, &["--unblock-writes"]).await;
    assert_eq!(code, Some(0), "{text}");
    let (code, pymongo) = pymongo_insert(&w).await;
    assert_eq!(code, 0, "pymongo: {pymongo}");
    w.orders().insert_one(order("late", 1, &[])).await.unwrap();
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test]
async fn a_collection_never_copied_is_refused_with_exit_2() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let (code, _, text) = cutover(&w, &["--quiet-period", "0"]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("shop.orders never finished a copy"), "{text}");
    w.stop().await;
}
