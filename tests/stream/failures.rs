//! Failures: lost history (stop, or start over with `resync_on_history_lost`) and transient
//! MongoDB errors that must be retried without losing or doubling anything.

use std::time::Duration;

use bson::doc;
use mongo_sim::SimOptions;
use tributary::config::SourceKind;
use tributary::pipeline::sync::SyncError;

use super::{order, stop_sync, World};

fn small_oplog() -> SimOptions {
    SimOptions {
        oplog_max_entries: 40,
        ..SimOptions::default()
    }
}

/// Streams a little, stops, and writes enough while stopped that the checkpoint's entry
/// rolls off the capped oplog.
async fn lose_history(w: &World) {
    let (stop, task) = w.start_sync();
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    w.sync_point("first").await;
    stop_sync(stop, task).await;
    for i in 0..100 {
        w.orders()
            .insert_one(order(&format!("late{i:03}"), i, &[]))
            .await
            .unwrap();
    }
}

async fn history_lost_stops(kind: SourceKind) {
    let w = World::with(kind, 100, small_oplog(), "").await;
    lose_history(&w).await;
    let (_stop, task) = w.start_sync();
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("sync must stop on lost history")
        .unwrap();
    match r {
        Err(e @ SyncError::HistoryLost(_)) => {
            assert!(
                e.to_string().contains("full-sync"),
                "the message says what to do: {e}"
            );
        }
        other => panic!("expected HistoryLost, got {other:?}"),
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_stops_when_history_is_lost() {
    history_lost_stops(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_stops_when_history_is_lost() {
    history_lost_stops(SourceKind::Oplog).await;
}

async fn history_lost_resyncs(kind: SourceKind) {
    let w = World::with(
        kind,
        100,
        small_oplog(),
        "resync_on_history_lost = true\nrecopy_chunk_rows = 5\nrecopy_pause_ms = 20",
    )
    .await;
    lose_history(&w).await;
    w.orders().delete_one(doc! {"_id": "a"}).await.unwrap();
    let since = w.pg_now().await;
    // The re-copy never truncates: a reader sees the old rows until the new ones replace them.
    let reader = super::recopy::count_reader(&w, "SELECT count(*) FROM public.orders");
    let (stop, task) = w.start_sync();
    // The re-copy runs online: wait for it, not only for the stream.
    w.wait_for_copy_since("shop.orders", since).await;
    let (least, reads) = reader.stop().await;
    assert!(reads > 0, "the reader never read");
    assert!(least > 0, "a reader saw orders empty during the re-copy");
    w.sync_point("after-resync").await;
    // The online re-copy's sweep removed the row of the document deleted while the history
    // was lost.
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_resyncs_when_history_is_lost_and_allowed() {
    history_lost_resyncs(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_resyncs_when_history_is_lost_and_allowed() {
    history_lost_resyncs(SourceKind::Oplog).await;
}

async fn survives_dropped_connections(kind: SourceKind) {
    let w = World::new(kind, 100).await;
    let (stop, task) = w.start_sync();
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    w.sync_point("first").await;
    w.mongo
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 3},
            "data": {"failCommands": ["getMore"], "closeConnection": true},
        })
        .await
        .unwrap();
    for i in 0..20 {
        w.orders()
            .insert_one(order(&format!("b{i:02}"), i, &["y"]))
            .await
            .unwrap();
        w.orders()
            .update_one(doc! {"_id": "a"}, doc! {"$inc": {"qty": 1}})
            .await
            .unwrap();
    }
    w.sync_point("second").await;
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_survives_dropped_connections() {
    survives_dropped_connections(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_survives_dropped_connections() {
    survives_dropped_connections(SourceKind::Oplog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_continues_after_dropped_connections() {
    let w = World::new(SourceKind::ChangeStream, 50).await;
    let docs: Vec<_> = (0..500)
        .map(|i| order(&format!("f{i:04}"), i, &["s"]))
        .collect();
    w.orders().insert_many(docs).await.unwrap();
    w.mongo
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["getMore"], "closeConnection": true},
        })
        .await
        .unwrap();
    let report = tributary::pipeline::full_sync::full_sync(
        &w.config,
        w.mappings.clone(),
        Some(vec!["shop.orders".into()]),
        tributary::pipeline::full_sync::FullSyncMode::Upsert,
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!report.interrupted);
    assert_eq!(
        report.collections[0].documents, 500,
        "each document copied once"
    );
    w.assert_equal().await;
    w.stop().await;
}
