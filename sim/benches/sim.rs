//! Throughput of the simulator as the real driver sees it, over TCP against
//! an in-process server: insertMany of 1 KB documents, one change-stream
//! consumer, one oplog tailer. Prints a markdown table.
//!
//! The client side does as little as it can so the numbers measure the
//! server: documents are serialised before the clock starts, and the
//! consumers only count, reading raw BSON (`RawDocumentBuf`) instead of
//! decoding every event into a `Document`.
//!
//! A second table times lookups by `_id` (`find_one`, `aggregate` with a
//! leading `$match`, `countDocuments`) in collections of 10,000 and
//! 1,000,000 small documents: served from the ordered `_id` index, they cost
//! the same order of time at both sizes, as on MongoDB.
//!
//! Run: `cargo bench -p mongo-sim --bench sim` (set `SIM_BENCH_DOCS` to
//! change the document count, default 200000; `SIM_BENCH_LOOKUP_SIZES` to
//! change the lookup collections' sizes, default `10000,1000000`).

use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf, Timestamp};
use futures::StreamExt;
use mongo_sim::{SimHandle, SimOptions};
use mongodb::options::CursorType;
use mongodb::Client;

/// The allocator the `mongo-sim` binary uses (see its main.rs), so the bench
/// measures what a test or demo run of the binary gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn one_kb_doc(i: i64) -> Document {
    doc! {
        "_id": i,
        "customer": format!("customer-{}", i % 1000),
        "amount": (i % 10_000) as f64 / 100.0,
        "status": if i % 3 == 0 { "paid" } else { "open" },
        "note": "x".repeat(900),
    }
}

struct Row {
    what: &'static str,
    count: usize,
    elapsed: Duration,
    target: &'static str,
}

async fn operation_time(client: &Client) -> Timestamp {
    let reply = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .expect("ping");
    reply.get_timestamp("operationTime").expect("operationTime")
}

async fn bench_insert(client: &Client, n: usize) -> Row {
    let coll = client
        .database("bench")
        .collection::<RawDocumentBuf>("orders");
    let docs: Vec<RawDocumentBuf> = (0..n as i64)
        .map(|i| RawDocumentBuf::from_document(&one_kb_doc(i)).expect("encode"))
        .collect();
    let start = Instant::now();
    for chunk in docs.chunks(10_000) {
        coll.insert_many(chunk).await.expect("insert_many");
    }
    Row {
        what: "insertMany, 1 KB documents",
        count: n,
        elapsed: start.elapsed(),
        target: ">= 100,000 docs/s",
    }
}

async fn bench_change_stream(client: &Client, from: Timestamp, n: usize) -> Row {
    let coll = client.database("bench").collection::<Document>("orders");
    let mut stream = coll
        .watch()
        .start_at_operation_time(from)
        .await
        .expect("watch")
        .with_type::<RawDocumentBuf>();
    let start = Instant::now();
    let mut seen = 0;
    while seen < n {
        match stream.next().await {
            Some(Ok(_)) => seen += 1,
            other => panic!("change stream ended early: {other:?}"),
        }
    }
    Row {
        what: "change stream, one consumer",
        count: seen,
        elapsed: start.elapsed(),
        target: ">= 100,000 events/s",
    }
}

async fn bench_oplog_tail(client: &Client, from: Timestamp, n: usize) -> Row {
    let oplog = client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let mut tail = oplog
        .find(doc! {"ts": {"$gte": from}, "ns": "bench.orders"})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_millis(200))
        .await
        .expect("tail");
    let start = Instant::now();
    let mut seen = 0;
    while seen < n {
        match tail.next().await {
            Some(Ok(_)) => seen += 1,
            other => panic!("oplog tail ended early: {other:?}"),
        }
    }
    Row {
        what: "oplog tail (TailableAwait)",
        count: seen,
        elapsed: start.elapsed(),
        target: "-",
    }
}

/// Microseconds per lookup of a random existing `_id`, for each way of asking.
struct Lookup {
    docs: usize,
    find_us: f64,
    aggregate_us: f64,
    count_us: f64,
}

async fn bench_id_lookups(client: &Client, docs: usize) -> Lookup {
    const LOOKUPS: usize = 2_000;
    let coll = client
        .database("bench")
        .collection::<Document>(&format!("lookup_{docs}"));
    let all: Vec<Document> = (0..docs as i64)
        .map(|i| doc! {"_id": i, "x": i, "s": "payload"})
        .collect();
    for chunk in all.chunks(10_000) {
        coll.insert_many(chunk).await.expect("insert_many");
    }
    // A fixed stride over the key space: the same keys at every size, spread across it.
    let keys: Vec<i64> = (0..LOOKUPS)
        .map(|i| (i as i64 * 7_919) % docs as i64)
        .collect();
    let per = |start: Instant| start.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64;
    let start = Instant::now();
    for &k in &keys {
        let found = coll.find_one(doc! {"_id": k}).await.expect("find_one");
        assert!(found.is_some());
    }
    let find_us = per(start);
    let start = Instant::now();
    for &k in &keys {
        let mut cursor = coll
            .aggregate(vec![doc! {"$match": {"_id": k}}])
            .await
            .expect("aggregate");
        assert!(cursor.next().await.is_some());
    }
    let aggregate_us = per(start);
    let start = Instant::now();
    for &k in &keys {
        let n = coll.count_documents(doc! {"_id": k}).await.expect("count");
        assert_eq!(n, 1);
    }
    let count_us = per(start);
    coll.drop().await.expect("drop");
    Lookup {
        docs,
        find_us,
        aggregate_us,
        count_us,
    }
}

async fn run_lookups(sizes: &[usize]) -> Vec<Lookup> {
    let sim: SimHandle = mongo_sim::start(SimOptions::default())
        .await
        .expect("start simulator");
    let client = Client::with_uri_str(sim.uri()).await.expect("client");
    let mut out = Vec::new();
    for &docs in sizes {
        out.push(bench_id_lookups(&client, docs).await);
    }
    client.shutdown().immediate(true).await;
    sim.shutdown().await;
    out
}

async fn run(n: usize) -> Vec<Row> {
    let sim: SimHandle = mongo_sim::start(SimOptions {
        oplog_max_entries: n * 2 + 1000,
        ..SimOptions::default()
    })
    .await
    .expect("start simulator");
    let client = Client::with_uri_str(sim.uri()).await.expect("client");
    client
        .database("bench")
        .create_collection("orders")
        .await
        .expect("create");
    let from = operation_time(&client).await;
    let rows = vec![
        bench_insert(&client, n).await,
        bench_change_stream(&client, from, n).await,
        bench_oplog_tail(&client, from, n).await,
    ];
    client.shutdown().immediate(true).await;
    sim.shutdown().await;
    rows
}

fn main() {
    let n: usize = std::env::var("SIM_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(run(n));
    println!("| benchmark | items | seconds | items/s | target |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        let secs = r.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {:.2} | {:.0} | {} |",
            r.what,
            r.count,
            secs,
            r.count as f64 / secs,
            r.target
        );
    }
    let sizes: Vec<usize> = std::env::var("SIM_BENCH_LOOKUP_SIZES")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let lookups = runtime.block_on(run_lookups(&sizes));
    println!();
    println!(
        "| lookup by _id | documents | find_one µs | aggregate $match µs | countDocuments µs |"
    );
    println!("|---|---:|---:|---:|---:|");
    for l in lookups {
        println!(
            "| one key, 2,000 lookups | {} | {:.0} | {:.0} | {:.0} |",
            l.docs, l.find_us, l.aggregate_us, l.count_us
        );
    }
}
