//! Throughput measurements (ignored by default; they print numbers and only assert
//! correctness). Run: `cargo test --release --test main stream::measure -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use bson::doc;
use tributary::config::SourceKind;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};

use super::{order, stop_sync, World};

async fn seed(w: &World, n: usize, prefix: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<_> = chunk
            .iter()
            .map(|i| order(&format!("{prefix}{i:07}"), *i as i32, &["a", "b"]))
            .collect();
        w.orders().insert_many(docs).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_full_sync() {
    let n = 50_000;
    let w = World::new(SourceKind::ChangeStream, 5000).await;
    seed(&w, n, "s").await;
    let started = Instant::now();
    let report = full_sync(
        &w.config,
        Arc::clone(&w.mappings),
        None,
        FullSyncMode::Replace,
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.collections[0].documents, n as u64);
    println!(
        "full sync: {n} documents (+{} child rows) in {secs:.2}s = {:.0} docs/s",
        2 * n,
        n as f64 / secs
    );
    w.stop().await;
}

/// Catch-up throughput: changes are written while `sync` is stopped, then the time from its
/// restart to the marker row is measured (so the writer's speed does not cap the number).
async fn measure_streaming(kind: SourceKind) {
    let n = 10_000;
    let w = World::new(kind, 5000).await;
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    stop_sync(stop, task).await;

    seed(&w, n, "i").await;
    let started = Instant::now();
    let (stop, task) = w.start_sync();
    w.sync_point("inserted").await;
    let inserts = started.elapsed().as_secs_f64();
    stop_sync(stop, task).await;

    let updates = n / 5;
    for i in (0..n).step_by(5) {
        w.orders()
            .update_one(doc! {"_id": format!("i{i:07}")}, doc! {"$set": {"qty": -1}})
            .await
            .unwrap();
    }
    let started = Instant::now();
    let (stop, task) = w.start_sync();
    w.sync_point("updated").await;
    let update_secs = started.elapsed().as_secs_f64();
    w.assert_equal().await;
    println!(
        "{}: catch-up of {n} inserts in {inserts:.2}s = {:.0}/s; of {updates} $set updates in {update_secs:.2}s = {:.0}/s",
        kind.as_str(),
        n as f64 / inserts,
        updates as f64 / update_secs,
    );
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_change_stream() {
    measure_streaming(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_oplog() {
    measure_streaming(SourceKind::Oplog).await;
}
