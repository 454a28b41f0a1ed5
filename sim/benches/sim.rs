//! Throughput of the simulator as the real driver sees it, over TCP against
//! an in-process server: insertMany of 1 KB documents, one change-stream
//! consumer, one oplog tailer. Prints a markdown table.
//!
//! The client side does as little as it can so the numbers measure the
//! server: documents are serialised before the clock starts, and the
//! consumers only count, reading raw BSON (`RawDocumentBuf`) instead of
//! decoding every event into a `Document`.
//!
//! Run: `cargo bench -p mongo-sim --bench sim` (set `SIM_BENCH_DOCS` to
//! change the document count, default 200000).

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
}
