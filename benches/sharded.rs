//! Sharded-cluster benchmarks (issue 16), mongo-sim and Tributary in this one process, Postgres
//! as `make bench` gives it:
//!
//! - `split`: a full sync's split points on `SHARDED_BENCH_DOCS` documents (default 1,000,000)
//!   found by each method (`source::split_points`): a range-key collection's chunks through a
//!   2-shard `mongos`, a `$sample`, and `skip` walks; then the ranges are read with 4 readers as
//!   the full sync reads them. Reported: planning time, reading time, the largest range's share
//!   (25 % is perfect). Writing to Postgres is the same for every method and left out.
//! - `stream`: `sync` streaming `SHARDED_BENCH_CHANGES` changes (default 100,000: half inserts,
//!   half updates) through a 2-shard `mongos` (hashed key) and through the lone replica set,
//!   same workload, same run: changes/s from the first write until the last change is in
//!   Postgres; then `SHARDED_BENCH_RATE` changes/s (default 2,000) for `SHARDED_BENCH_SECS`
//!   (default 20) with a marker document every 100 ms whose arrival a trigger stamps: lag
//!   p50/p99/max.
//!
//! `cargo bench --bench sharded -- split stream` (both by default) refreshes the "Sharded
//! clusters" section of BENCHMARKS.md at the default sizes, or always with
//! `SHARDED_BENCH_WRITE=1`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::{doc, Document};
use mongo_sim::SimOptions;
use tokio::sync::oneshot;
use tributary::config::Config;
use tributary::event::Namespace;
use tributary::pipeline::sync::{sync, SyncOptions};
use tributary::source::snapshot::SnapshotReader;
use tributary::source::split_points::{self, SplitMethod};

#[path = "support/report.rs"]
mod report;
use report::{env_set, env_usize, load_average, machine, write_section};

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod pg;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEADING: &str = "## Sharded clusters (e): through mongos vs a replica set, split points";

fn id(i: usize) -> String {
    format!("o{i:08}")
}

async fn start(shards: usize) -> (mongo_sim::SimHandle, mongodb::Client) {
    let sim = mongo_sim::start(SimOptions {
        shards,
        oplog_max_entries: 4_000_000,
        ..SimOptions::default()
    })
    .await
    .expect("mongo-sim starts");
    let client = mongodb::Client::with_uri_str(sim.uri())
        .await
        .expect("driver connects");
    (sim, client)
}

async fn admin(client: &mongodb::Client, cmd: Document) {
    client
        .database("admin")
        .run_command(cmd.clone())
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
}

async fn insert_orders(client: &mongodb::Client, from: usize, to: usize) {
    let orders = client.database("shop").collection::<Document>("orders");
    let mut i = from;
    while i < to {
        let end = (i + 5000).min(to);
        orders
            .insert_many((i..end).map(|n| doc! {"_id": id(n), "qty": n as i32, "name": "x"}))
            .await
            .expect("insert");
        i = end;
    }
}

// ---------------------------------------------------------------------------------------------
// split
// ---------------------------------------------------------------------------------------------

struct SplitRow {
    topology: &'static str,
    method: SplitMethod,
    plan: Duration,
    read: Duration,
    largest: f64,
}

async fn measure_split(
    topology: &'static str,
    client: &mongodb::Client,
    docs: usize,
    method: SplitMethod,
) -> Option<SplitRow> {
    let ns = Namespace::new("shop", "orders");
    let t = Instant::now();
    let bounds = split_points::find_with(client, &ns, docs as u64, 4, method)
        .await
        .expect("split points")?;
    let plan = t.elapsed();
    let t = Instant::now();
    let mut reader = SnapshotReader::new(client.clone(), ns, 1000).with_plan(bounds, Vec::new());
    let mut per_range: Vec<usize> = Vec::new();
    while let Some(piece) = reader.next_piece().await.expect("read") {
        if per_range.len() <= piece.range {
            per_range.resize(piece.range + 1, 0);
        }
        per_range[piece.range] += piece.docs.len();
    }
    let read = t.elapsed();
    let total: usize = per_range.iter().sum();
    assert_eq!(total, docs, "{topology} {method}: every document read once");
    let largest = *per_range.iter().max().unwrap_or(&0) as f64 * 100.0 / total as f64;
    eprintln!("(e) split {topology} {method}: plan {plan:?}, read {read:?}, ranges {per_range:?}");
    Some(SplitRow {
        topology,
        method,
        plan,
        read,
        largest,
    })
}

async fn split(docs: usize) -> Vec<SplitRow> {
    let mut rows = Vec::new();
    {
        let (sim, client) = start(2).await;
        admin(&client, doc! {"enableSharding": "shop"}).await;
        admin(
            &client,
            doc! {"shardCollection": "shop.orders", "key": {"_id": 1}},
        )
        .await;
        // 32 chunks, every other one moved to shard1, as a balanced cluster would hold them.
        for c in 1..32 {
            admin(
                &client,
                doc! {"split": "shop.orders", "middle": {"_id": id(c * docs / 32)}},
            )
            .await;
            if c % 2 == 1 {
                admin(
                    &client,
                    doc! {"moveChunk": "shop.orders", "find": {"_id": id(c * docs / 32)}, "to": "shard1"},
                )
                .await;
            }
        }
        let t = Instant::now();
        insert_orders(&client, 0, docs).await;
        eprintln!(
            "(e) split: {docs} documents through mongos in {:?}",
            t.elapsed()
        );
        for method in [SplitMethod::Chunks, SplitMethod::Sample, SplitMethod::Skip] {
            rows.extend(measure_split("2 shards (mongos)", &client, docs, method).await);
        }
        client.shutdown().await;
        sim.shutdown().await;
    }
    let (sim, client) = start(0).await;
    insert_orders(&client, 0, docs).await;
    for method in [SplitMethod::Sample, SplitMethod::Skip] {
        rows.extend(measure_split("replica set", &client, docs, method).await);
    }
    client.shutdown().await;
    sim.shutdown().await;
    rows
}

// ---------------------------------------------------------------------------------------------
// stream
// ---------------------------------------------------------------------------------------------

struct StreamRow {
    topology: &'static str,
    throughput: f64,
    lag: (f64, f64, f64),
    markers: usize,
}

const MAPPING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
      - { name: sent, source: sent, type: bigint }
"#;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

async fn has_row(pg: &tokio_postgres::Client, id: &str) -> bool {
    pg.query_opt("SELECT 1 FROM public.orders WHERE id = $1", &[&id])
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn wait_row(pg: &tokio_postgres::Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !has_row(pg, id).await {
        assert!(Instant::now() < deadline, "{id} never reached Postgres");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stream_one(topology: &'static str, shards: usize, changes: usize) -> StreamRow {
    let (sim, client) = start(shards).await;
    if shards > 0 {
        admin(&client, doc! {"enableSharding": "shop"}).await;
        admin(
            &client,
            doc! {"shardCollection": "shop.orders", "key": {"_id": "hashed"}},
        )
        .await;
    }
    let orders = client.database("shop").collection::<Document>("orders");
    orders
        .insert_one(doc! {"_id": "start", "qty": 0})
        .await
        .expect("insert");
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mappings.yml"), MAPPING).expect("mapping");
    let text = format!(
        "[mongo]\nuri = \"{}\"\n[postgres]\nuri = \"{}\"\npool_size = 4\n[sync]\nname = \"bench\"\nmappings = \"mappings.yml\"\n[metrics]\nlisten = \"\"\n",
        sim.uri(),
        db.url
    );
    let path = dir.path().join("tributary.toml");
    std::fs::write(&path, &text).expect("config");
    let config = Config::from_str_at(&text, &path).expect("config parses");
    let mappings = Arc::new(
        tributary::mapping::load(Path::new(&config.sync.mappings)).expect("mapping loads"),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let opts = SyncOptions {
            initial_sync: true,
            metrics: None,
        };
        sync(&config, mappings, opts, async {
            let _ = stopped.await;
        })
        .await
    });
    let pg = db.connect().await;
    wait_row(&pg, "start").await;

    // Throughput: inserts, then updates of ranges of them; the last change is a marker.
    let t = Instant::now();
    let inserts = changes / 2;
    insert_orders(&client, 0, inserts).await;
    let mut updated = 0;
    while updated < changes - inserts {
        let end = (updated + 1000).min(changes - inserts);
        orders
            .update_many(
                doc! {"_id": {"$gte": id(updated), "$lt": id(end)}},
                doc! {"$inc": {"qty": 1}},
            )
            .await
            .expect("update");
        updated = end;
    }
    orders
        .insert_one(doc! {"_id": "end", "qty": 0})
        .await
        .expect("insert");
    wait_row(&pg, "end").await;
    let throughput = changes as f64 / t.elapsed().as_secs_f64();

    // Lag at a steady rate: batches every 10 ms, a marker every 100 ms stamped on arrival.
    pg.batch_execute(
        "CREATE TABLE public.arrivals (id text, sent bigint, at bigint); \
         CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.id LIKE 'm%' THEN INSERT INTO public.arrivals VALUES \
           (NEW.id, NEW.sent, (extract(epoch from clock_timestamp()) * 1000000)::bigint); END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER stamp AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.stamp();",
    )
    .await
    .expect("arrival trigger");
    let rate = env_usize("SHARDED_BENCH_RATE", 2000).max(100);
    let secs = env_usize("SHARDED_BENCH_SECS", 20).max(1);
    let per_tick = (rate / 100).max(1);
    let mut next = inserts;
    let mut markers = 0;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(secs as u64) {
        tick.tick().await;
        n += 1;
        orders
            .insert_many((next..next + per_tick).map(|i| doc! {"_id": id(i), "qty": 1}))
            .await
            .expect("insert");
        next += per_tick;
        if n.is_multiple_of(10) {
            orders
                .insert_one(doc! {"_id": format!("m{markers:06}"), "qty": 0, "sent": now_micros()})
                .await
                .expect("marker");
            markers += 1;
        }
    }
    wait_row(&pg, &format!("m{:06}", markers - 1)).await;
    let mut lags: Vec<f64> = pg
        .query(
            "SELECT (at - sent)::float8 / 1000.0 FROM public.arrivals",
            &[],
        )
        .await
        .expect("arrivals")
        .iter()
        .map(|r| r.get::<_, f64>(0))
        .collect();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p).round() as usize];
    let lag = (pct(0.5), pct(0.99), *lags.last().unwrap_or(&0.0));
    let _ = stop.send(());
    let _ = task.await;
    client.shutdown().await;
    sim.shutdown().await;
    eprintln!(
        "(e) stream {topology}: {throughput:.0} changes/s; lag ms p50 {:.0} p99 {:.0} max {:.0} over {} markers",
        lag.0,
        lag.1,
        lag.2,
        lags.len()
    );
    StreamRow {
        topology,
        throughput,
        lag,
        markers: lags.len(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let docs = env_usize("SHARDED_BENCH_DOCS", 1_000_000);
    let changes = env_usize("SHARDED_BENCH_CHANGES", 100_000).max(2);
    let load_before = load_average();
    let mut body = format!(
        "Machine: {}. Load before: {load_before}. Date: {}. Command: `make bench` \
         (`cargo bench --bench sharded`).\n",
        machine(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    if wants("split") {
        let rows = split(docs).await;
        body.push_str(&format!(
            "\nSplit points of a full sync of {docs} documents, 4 readers (planning, then \
             reading every range as the copy does; Postgres writes are the same for all and \
             left out). Largest range: 25 % is an even split.\n\n\
             | topology | method | planning | reading | largest range |\n|---|---|---|---|---|\n"
        ));
        for r in &rows {
            body.push_str(&format!(
                "| {} | {} | {:.0} ms | {:.1} s | {:.1} % |\n",
                r.topology,
                r.method,
                r.plan.as_secs_f64() * 1000.0,
                r.read.as_secs_f64(),
                r.largest
            ));
        }
    }
    if wants("split") {
        body.push_str(
            "\nReading: chunks cost one small query of `config.chunks` and split exactly where \
             the balancer keeps the data even. `skip` walks are exact but pay an index walk per \
             boundary (on MongoDB, `k` keys for `skip(k)`); through mongo-sim's mongos every \
             broadcast read gathers the documents at the router, which is what the 2-shard \
             `sample` and `skip` planning times and the slower reads measure (MongoDB's mongos \
             passes `$sample` and the `_id` walk to the shards). On a replica set mongo-sim \
             answers `skip` from its ordered `_id` index, so there `$sample` (32 per reader) \
             buys nothing here and splits less evenly; against MongoDB it spares walking \
             750,000 index keys for the last boundary of a 1,000,000-document collection.\n",
        );
    }
    if wants("stream") {
        let mut rows = Vec::new();
        rows.push(stream_one("replica set", 0, changes).await);
        rows.push(stream_one("2 shards (mongos, hashed key)", 2, changes).await);
        body.push_str(&format!(
            "\nStreaming the same workload in the same run: {changes} changes (half inserts, \
             half updates) as fast as they are written, then {} changes/s for {} s with a \
             marker every 100 ms (lag: marker written → row inserted in Postgres).\n\n\
             | topology | changes/s | lag p50 | lag p99 | lag max | markers |\n|---|---|---|---|---|---|\n",
            env_usize("SHARDED_BENCH_RATE", 2000),
            env_usize("SHARDED_BENCH_SECS", 20)
        ));
        for r in &rows {
            body.push_str(&format!(
                "| {} | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {} |\n",
                r.topology, r.throughput, r.lag.0, r.lag.1, r.lag.2, r.markers
            ));
        }
    }
    let full = docs == 1_000_000 && changes == 100_000 && args.is_empty();
    if full || env_set("SHARDED_BENCH_WRITE").is_some_and(|v| v == "1") {
        write_section(HEADING, &body);
    }
    println!("{body}");
}
