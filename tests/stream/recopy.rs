//! Online re-copies (docs/online-copies.md): `tributary resync` while `sync` streams another
//! collection, a collection newly mapped at a restart, and `resync` with no daemon running.
//! The re-copied table is never empty or partial to a reader, the other collection's changes
//! keep arriving, and the end state equals MongoDB with no stale row, while documents are
//! updated and deleted inside the chunks being copied.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::doc;
use mongo_sim::SimOptions;
use tokio::task::JoinHandle;
use tributary::config::SourceKind;
use tributary::pipeline::resync::{resync, ResyncOutcome};
use tributary::pipeline::sync::{sync, SyncOptions};

use super::{order, stop_sync, World};
use crate::support::wait_until;

/// Orders with their items, and customers (also the sharded tests' mapping).
pub const MAPPING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
  customers:
    columns:
      - { name: id,  source: _id, type: text }
      - { name: seq, source: seq, type: bigint }
"#;

/// Small chunks with a pause between reads: the writes below land between and inside them.
const SLOW_COPY: &str = "recopy_chunk_rows = 7\nrecopy_pause_ms = 25";

/// A task counting rows with `sql` again and again; `stop` returns the least count seen and
/// how many reads it made.
pub struct CountReader {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(i64, u64)>,
}

pub fn count_reader(w: &World, sql: &'static str) -> CountReader {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let url = w.db.url.clone();
    let task = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut least = i64::MAX;
        let mut reads = 0;
        while !flag.load(Ordering::Relaxed) {
            if let Ok(r) = client.query_one(sql, &[]).await {
                least = least.min(r.get::<_, i64>(0));
                reads += 1;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (least, reads)
    });
    CountReader { stop, task }
}

impl CountReader {
    pub async fn stop(self) -> (i64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

fn customers(w: &World) -> mongodb::Collection<bson::Document> {
    w.mongo.database("shop").collection("customers")
}

/// Updates customer `c0`'s `seq` in a loop and measures how long each value takes to reach
/// Postgres; returns the latencies once `stop` is set.
fn customer_workload(w: &World, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Duration>> {
    let coll = customers(w);
    let url = w.db.url.clone();
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut latencies = Vec::new();
        let mut seq = 1000i64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            coll.update_one(doc! {"_id": "c0"}, doc! {"$set": {"seq": seq}})
                .await
                .unwrap();
            let written = Instant::now();
            loop {
                let r = client
                    .query_opt(
                        "SELECT 1 FROM public.customers WHERE id = 'c0' AND seq >= $1",
                        &[&seq],
                    )
                    .await
                    .unwrap();
                if r.is_some() {
                    break;
                }
                assert!(
                    written.elapsed() < Duration::from_secs(20),
                    "customer change {seq} did not arrive within 20 s during a re-copy of orders"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies.push(written.elapsed());
        }
        latencies
    })
}

/// Updates and deletes orders (and inserts new ones) while they are being copied; returns
/// how many it deleted.
fn order_mutations(w: &World, stop: Arc<AtomicBool>, deleted: Arc<AtomicI64>) -> JoinHandle<()> {
    let orders = w.orders();
    tokio::spawn(async move {
        let mut round = 0;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            for i in (round % 3..200).step_by(9) {
                let id = format!("o{i:03}");
                if i % 17 == round % 17 {
                    let r = orders.delete_one(doc! {"_id": &id}).await.unwrap();
                    deleted.fetch_add(r.deleted_count as i64, Ordering::Relaxed);
                } else {
                    orders
                        .update_one(doc! {"_id": &id}, doc! {"$inc": {"qty": 1}, "$set": {"items": [{"sku": format!("r{round}")}]}})
                        .await
                        .unwrap();
                }
            }
            orders
                .insert_one(order(&format!("n{round:04}"), round, &["n"]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len().saturating_sub(1).min(v.len() * 99 / 100))
        .copied()
        .unwrap_or_default()
}

/// `shop.customers` as the mapping makes it (`(id, seq)` sorted), then as Postgres holds it.
pub async fn customers_rows(w: &World) -> (Vec<(String, Option<i64>)>, Vec<(String, Option<i64>)>) {
    let mut cursor = customers(w).find(doc! {}).await.unwrap();
    let mut expected = Vec::new();
    while let Some(d) = futures::StreamExt::next(&mut cursor).await {
        let d = d.unwrap();
        expected.push((d.get_str("_id").unwrap().to_owned(), d.get_i64("seq").ok()));
    }
    expected.sort();
    let actual: Vec<(String, Option<i64>)> =
        w.db.client
            .query("SELECT id, seq FROM public.customers ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    (expected, actual)
}

async fn customers_equal(w: &World) {
    let (expected, actual) = customers_rows(w).await;
    assert_eq!(actual, expected, "customers differ from MongoDB");
}

async fn seed(w: &World) {
    w.orders()
        .insert_many((0..200).map(|i| order(&format!("o{i:03}"), i, &["a", "b"])))
        .await
        .unwrap();
    customers(w)
        .insert_many((0..5).map(|i| doc! {"_id": format!("c{i}"), "seq": 0i64}))
        .await
        .unwrap();
}

async fn resync_while_streaming(kind: SourceKind) {
    let w = World::with_mapping(kind, 100, SimOptions::default(), SLOW_COPY, MAPPING).await;
    seed(&w).await;
    let (stop, task) = w.start_sync();
    w.sync_point("first").await;
    w.assert_equal().await;
    let live_before = w.orders().count_documents(doc! {}).await.unwrap() as i64;

    let stop_load = Arc::new(AtomicBool::new(false));
    let deleted = Arc::new(AtomicI64::new(0));
    let reader = count_reader(&w, "SELECT count(*) FROM public.orders");
    let load = customer_workload(&w, stop_load.clone());
    let mutations = order_mutations(&w, stop_load.clone(), deleted.clone());

    let started = Instant::now();
    let outcome = resync(
        &w.config,
        w.mappings.clone(),
        vec!["shop.orders".into()],
        std::future::pending(),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    match outcome {
        ResyncOutcome::Answered { outcome, .. } => assert_eq!(outcome, "done"),
        other => panic!("expected the daemon's answer, got {other:?}"),
    }
    stop_load.store(true, Ordering::Relaxed);
    mutations.await.unwrap();
    let latencies = load.await.unwrap();
    let (least, reads) = reader.stop().await;
    let deleted = deleted.load(Ordering::Relaxed);
    assert!(reads > 10, "the reader read {reads} times");
    assert!(
        least >= live_before - deleted,
        "a reader counted {least} orders during the re-copy; {live_before} lived before and {deleted} were deleted meanwhile"
    );
    assert!(!latencies.is_empty(), "no customer change was measured");
    eprintln!(
        "re-copy of orders took {took:?}; customers' lag over {} changes: p99 {:?}, max {:?}",
        latencies.len(),
        p99(latencies.clone()),
        latencies.iter().max().copied().unwrap_or_default()
    );
    w.sync_point("after").await;
    w.assert_equal().await;
    customers_equal(&w).await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_resync_is_online() {
    resync_while_streaming(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_resync_is_online() {
    resync_while_streaming(SourceKind::Oplog).await;
}

async fn newly_mapped_collection(kind: SourceKind) {
    // First only orders is mapped.
    let only_orders = MAPPING.split("  customers:").next().unwrap().to_owned();
    // A copy slow enough (9 chunks, 400 ms apart) that an order streams in during it.
    let slower = "recopy_chunk_rows = 7\nrecopy_pause_ms = 400";
    let w = World::with_mapping(kind, 100, SimOptions::default(), slower, &only_orders).await;
    seed(&w).await;
    let (stop, task) = w.start_sync();
    w.sync_point("first").await;
    stop_sync(stop, task).await;

    // At the restart customers is mapped too: copied online while orders streams.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mappings.yml");
    std::fs::write(&file, MAPPING).unwrap();
    let mappings = Arc::new(tributary::mapping::load(Path::new(&file)).unwrap());
    customers(&w)
        .insert_many((5..60).map(|i| doc! {"_id": format!("c{i}"), "seq": i64::from(i)}))
        .await
        .unwrap();
    let since = w.pg_now().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = w.config.clone();
    let task = tokio::spawn(async move {
        let opts = SyncOptions {
            initial_sync: true,
            metrics: None,
        };
        sync(&config, mappings, opts, async {
            let _ = rx.await;
        })
        .await
    });
    // An order written now arrives while customers is still being copied.
    let sql = "SELECT 1 FROM tributary.collections WHERE stream = 'test' AND namespace = 'shop.customers' AND phase = 'streaming'";
    wait_until(60, "the re-copy of customers to start", || async {
        matches!(w.db.client.query_one("SELECT count(*) FROM tributary.collections WHERE namespace = 'shop.customers'", &[]).await, Ok(r) if r.get::<_, i64>(0) > 0)
    })
    .await;
    w.orders()
        .insert_one(order("during", 1, &[]))
        .await
        .unwrap();
    wait_until(60, "the order written during the copy", || async {
        matches!(w.db.client.query("SELECT 1 FROM public.orders WHERE id = 'during'", &[]).await, Ok(r) if !r.is_empty())
    })
    .await;
    let copy_running = w.db.client.query(sql, &[]).await.unwrap().is_empty();
    w.wait_for_copy_since("shop.customers", since).await;
    assert!(
        copy_running,
        "customers' copy had ended before the order written during it arrived (the copy is too fast for this test to prove anything)"
    );
    w.sync_point("after").await;
    w.assert_equal().await;
    customers_equal(&w).await;
    stop_sync(tx, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_newly_mapped_collection_is_copied_while_streaming() {
    newly_mapped_collection(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_newly_mapped_collection_is_copied_while_streaming() {
    newly_mapped_collection(SourceKind::Oplog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_without_a_daemon_copies_itself() {
    let w = World::with_mapping(
        SourceKind::ChangeStream,
        100,
        SimOptions::default(),
        "",
        MAPPING,
    )
    .await;
    seed(&w).await;
    let (stop, task) = w.start_sync();
    w.sync_point("first").await;
    stop_sync(stop, task).await;
    // While no daemon runs: a row goes stale (its document is deleted and the stream is not
    // told), then the re-copy replaces the table.
    w.db.client
        .execute(
            "INSERT INTO public.orders (id, qty) VALUES ('stale', 1)",
            &[],
        )
        .await
        .unwrap();
    let outcome = resync(
        &w.config,
        w.mappings.clone(),
        vec!["shop.orders".into()],
        std::future::pending(),
    )
    .await
    .unwrap();
    match outcome {
        ResyncOutcome::CopiedHere(report) => {
            assert_eq!(report.collections.len(), 1);
            assert!(!report.interrupted);
        }
        other => panic!("expected a copy by the command itself, got {other:?}"),
    }
    w.assert_equal().await;
    w.stop().await;
}
