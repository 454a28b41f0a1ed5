//! Sink throughput: `PostgresSink::apply` in batches (SPEC default 5000 rows) into an empty
//! table and again over the same keys (every row an update), against a plain binary
//! `COPY … FROM STDIN` of the same rows into an empty table, all in one run on one server.
//!
//! `cargo bench --bench sink`. Environment:
//! - `SINK_BENCH_ROWS` (default 1000000) and `SINK_BENCH_BATCH` (default 5000);
//! - `TEST_DATABASE_URL`: use that server instead of a throwaway cluster;
//! - `SINK_BENCH_WRITE=1`: refresh the "Sink" section of BENCHMARKS.md even for a reduced row
//!   count (a full-size run always refreshes it).
//!
//! Rows are generated batch by batch outside the timed sections, so peak RSS reflects the sink
//! holding one batch, not a million prepared rows.

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod pg;

#[path = "support/report.rs"]
mod report;
use report::{env_usize, load_average, machine};

#[path = "support/copy_data.rs"]
mod copy_data;
use copy_data::CopyData;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary::config::SynchronousCommit;
use tributary::mapping::model::{
    CollectionMapping, ColumnMapping, FieldPath, MappingSet, OnError, PgType,
};
use tributary::mapping::value::{PgValue, Row};
use tributary::sink::postgres::ddl::{self, qualified};
use tributary::sink::postgres::PostgresSink;
use tributary::sink::{Batch, Change, Checkpoint, DocumentRows, Sink};

fn columns() -> Vec<(&'static str, PgType)> {
    vec![
        ("id", PgType::Text),
        ("name", PgType::Text),
        ("qty", PgType::Integer),
        ("seq", PgType::BigInt),
        ("price", PgType::Numeric(Some((12, Some(2))))),
        ("placed_at", PgType::Timestamptz),
        ("active", PgType::Boolean),
        ("doc", PgType::Jsonb),
        ("tags", PgType::Array(Box::new(PgType::Text))),
        ("score", PgType::DoublePrecision),
        ("ref", PgType::Uuid),
    ]
}

fn mapping(table: &str) -> MappingSet {
    MappingSet {
        collections: vec![CollectionMapping {
            database: "bench".into(),
            collection: table.into(),
            table: table.into(),
            columns: columns()
                .into_iter()
                .map(|(n, t)| ColumnMapping {
                    name: n.into(),
                    source: FieldPath::parse(if n == "id" { "_id" } else { n }),
                    pg_type: t,
                })
                .collect(),
            extra_props: None,
            on_error: OnError::DeadLetter,
            on_nul: tributary::mapping::model::OnNul::default(),
            id_type: tributary::mapping::model::IdType::default(),
            children: vec![],
        }],
    }
}

/// Row `i` in its `version` (versions differ in every non-key column).
fn row(i: usize, version: u32) -> Row {
    let v = version as usize;
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&(i as u64).to_be_bytes());
    uuid[8..12].copy_from_slice(&version.to_be_bytes());
    vec![
        PgValue::Text(format!("{i:024x}")),
        PgValue::Text(format!("customer {} v{v}", i % 9973)),
        PgValue::Int4((i % 1000 + v) as i32),
        PgValue::Int8((i * 7 + v) as i64),
        PgValue::Numeric(format!("{}.{:02}", (i + v) % 100_000, i % 100)),
        PgValue::Timestamptz(1_700_000_000_000_000 + (i as i64) * 1_000 + v as i64),
        PgValue::Bool((i + v).is_multiple_of(2)),
        PgValue::Json(serde_json::json!({
            "sku": format!("SKU-{}", i % 5000),
            "qty": i % 17,
            "v": v,
            "dims": {"w": 10, "h": 20},
        })),
        PgValue::Array(vec![
            PgValue::Text(format!("tag{}", i % 10)),
            PgValue::Text(format!("v{v}")),
        ]),
        PgValue::Float8(i as f64 * 0.5 + f64::from(version)),
        PgValue::Uuid(uuid),
    ]
}

fn batch(from: usize, to: usize, version: u32) -> Batch {
    Batch {
        changes: (from..to)
            .map(|i| {
                let r = row(i, version);
                Change::Upsert {
                    collection: 0,
                    key: r[0].clone(),
                    rows: DocumentRows {
                        parent: r,
                        children: vec![],
                        ..DocumentRows::default()
                    },
                }
            })
            .collect(),
        dead_letters: vec![],
        checkpoint: Some(Checkpoint {
            stream: "bench".into(),
            source: "change_stream".into(),
            resume_token: serde_json::json!({ "_data": format!("{version}:{to:012}") }),
            cluster_time: chrono::DateTime::from_timestamp(1_700_000_000 + to as i64, 0),
        }),
    }
}

/// Applies every row into an empty `table`, then every row again as an update; returns both
/// times. `mode` is the sink's `postgres.synchronous_commit`.
async fn measure_sink(
    db: &pg::TestDb,
    table: &str,
    mode: SynchronousCommit,
    rows: usize,
    batch_rows: usize,
) -> (Duration, Duration) {
    let mut sink = PostgresSink::connect(
        &db.url,
        2,
        "public",
        "tributary",
        "bench",
        Arc::new(mapping(table)),
    )
    .await
    .expect("connect");
    sink.set_synchronous_commit(mode);
    sink.ensure_schema().await.expect("ensure_schema");
    checkpoint_server(&db.client).await;
    let insert_time = apply_all(&mut sink, rows, batch_rows, 1).await;
    eprintln!(
        "{table} ({}): apply into empty table: {insert_time:?}",
        mode.as_str()
    );
    checkpoint_server(&db.client).await;
    let update_time = apply_all(&mut sink, rows, batch_rows, 2).await;
    eprintln!(
        "{table} ({}): apply over existing rows: {update_time:?}",
        mode.as_str()
    );
    let count: i64 = db
        .client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE name LIKE '% v2'"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        count as usize, rows,
        "every row must hold its second version"
    );
    (insert_time, update_time)
}

async fn apply_all(
    sink: &mut PostgresSink,
    rows: usize,
    batch_rows: usize,
    version: u32,
) -> Duration {
    let mut spent = Duration::ZERO;
    let mut from = 0;
    while from < rows {
        let to = (from + batch_rows).min(rows);
        let b = batch(from, to, version);
        let started = Instant::now();
        sink.apply(&b).await.expect("apply");
        spent += started.elapsed();
        from = to;
    }
    spent
}

/// One binary COPY of all rows in one transaction. The rows are encoded into COPY chunks
/// before the clock starts (building them while copying would hide server work behind
/// untimed client work), and the chunks are freed before the sink phases run.
async fn plain_copy(url: &str, table: &str, rows: usize) -> Duration {
    let client = pg::connect(url).await;
    let types: Vec<_> = columns().iter().map(|(_, t)| ddl::wire_type(t)).collect();
    let cols: Vec<String> = columns().iter().map(|(n, _)| ddl::quote_ident(n)).collect();
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        qualified("public", table),
        cols.join(", ")
    );
    let mut data = CopyData::new(types);
    for i in 0..rows {
        data.push(&row(i, 1));
    }
    let started = Instant::now();
    data.copy(&client, &sql).await;
    started.elapsed()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (`clear_refs` 5, Linux 4.0+).
fn reset_vm_hwm() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("cannot reset the peak RSS ({e}); it includes the baseline's rows");
    }
}

async fn checkpoint_server(client: &tokio_postgres::Client) {
    // Every phase starts with clean shared buffers, so none pays for another's dirty pages.
    client
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
}

#[tokio::main]
async fn main() {
    let rows = env_usize("SINK_BENCH_ROWS", 1_000_000);
    let batch_rows = env_usize("SINK_BENCH_BATCH", 5000);
    let external = std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty());

    let load_before = load_average();
    let db = pg::fresh_database().await;
    let version: String = db
        .client
        .query_one("SHOW server_version", &[])
        .await
        .expect("version")
        .get(0);
    let server = if external {
        format!("PostgreSQL {version} from TEST_DATABASE_URL")
    } else {
        format!(
            "PostgreSQL {version}, the test harness's throwaway cluster \
             (fsync=off, synchronous_commit=off, full_page_writes=off, shared_buffers=256MB)"
        )
    };
    eprintln!("sink bench: {rows} rows, batches of {batch_rows}, {server}");

    // Baseline first: plain binary COPY into an empty table with the same definition, on a
    // server no earlier phase has left with dead rows to vacuum or WAL to checkpoint.
    for stmt in ddl::schema_ddl(&mapping("bench_copy"), "public", "tributary") {
        db.client.batch_execute(&stmt).await.expect("ddl");
    }
    checkpoint_server(&db.client).await;
    let copy_time = plain_copy(&db.url, "bench_copy", rows).await;
    eprintln!("plain COPY: {copy_time:?}");
    // Peak RSS below is the sink phases': forget the baseline's prepared rows.
    reset_vm_hwm();

    let (insert_time, update_time) = measure_sink(
        &db,
        "bench_sink",
        SynchronousCommit::default(),
        rows,
        batch_rows,
    )
    .await;
    let (durable_insert, durable_update) = measure_sink(
        &db,
        "bench_durable",
        SynchronousCommit::On,
        rows,
        batch_rows,
    )
    .await;

    let hwm_mib = vm_hwm_kib() as f64 / 1024.0;
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let copy_rate = rate(copy_time);
    let lines = [
        (
            "plain binary `COPY` into an empty table (baseline)",
            copy_time,
            None,
        ),
        (
            "`PostgresSink::apply` into an empty table",
            insert_time,
            Some(0.6),
        ),
        (
            "`PostgresSink::apply` over the same keys (all updates)",
            update_time,
            Some(0.4),
        ),
        (
            "the same into an empty table with `synchronous_commit = \"on\"`",
            durable_insert,
            None,
        ),
        (
            "the same, all updates, with `synchronous_commit = \"on\"`",
            durable_update,
            None,
        ),
    ];
    let mut table =
        String::from("| path | seconds | rows/s | vs COPY | target |\n|---|---:|---:|---:|---:|\n");
    for (name, d, target) in lines {
        let ratio = rate(d) / copy_rate;
        table.push_str(&format!(
            "| {name} | {:.2} | {:.0} | {:.2} | {} |\n",
            d.as_secs_f64(),
            rate(d),
            ratio,
            target.map_or("—".to_owned(), |t| format!("≥ {t:.1}"))
        ));
    }
    let summary =
        format!("{table}\nPeak RSS of the benchmark process (VmHWM): {hwm_mib:.0} MiB.\n");
    println!("{summary}");

    let full = rows >= 1_000_000;
    if full || std::env::var("SINK_BENCH_WRITE").is_ok_and(|v| v == "1") {
        let section = format!(
            "## Sink\n\n\
             `SINK_BENCH_ROWS={rows} cargo bench --bench sink` — {rows} rows of 11 mapped columns \
             (text key, text, integer, bigint, numeric(12,2), timestamptz, boolean, jsonb, text[], \
             double precision, uuid), applied in batches of {batch_rows} (one transaction and one \
             checkpoint per batch), measured in one run against a plain binary COPY of the same rows \
             (encoded into 256 KiB chunks before its clock starts, and run first). The sink runs \
             with its default `postgres.synchronous_commit = \"off\"` (docs/operations.md, \
             \"Durability\"), then with `\"on\"` into a second table.\n\n\
             - Date: {}\n- Machine: {} (shared with other work while measured; load average \
             {load_before} at the start, {} at the end, so absolute rows/s move by up to 2x between \
             runs while the ratios, taken within one run, move much less)\n- Server: {server}\n\n\
             {summary}\n\
             How the sink writes a batch: one `DELETE … WHERE key = ANY($1)` per table for every key \
             the batch touches, then one binary `COPY` per table of the new rows, then the \
             checkpoint, in one transaction. An earlier version staged the rows in a TEMP table and \
             merged them with `INSERT … SELECT … ON CONFLICT DO UPDATE`; measured the same way \
             (100,000 rows) it reached only 0.44 (empty table) and 0.35 (updates) of COPY, because \
             every row was written twice and speculative insertion costs more than a plain insert. \
             Delete-then-insert is safe because one writer per stream holds the advisory lock.\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            machine(),
            load_average(),
        );
        write_section(&section);
        eprintln!("BENCHMARKS.md: Sink section refreshed");
    }
}

/// Replaces the `## Sink` section of BENCHMARKS.md (up to the next `## ` heading), or appends it;
/// other sections are left as they are.
fn write_section(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let new = match old.find("## Sink\n") {
        Some(start) => {
            let rest = &old[start + 1..];
            let end = rest.find("\n## ").map_or(old.len(), |i| start + 1 + i + 1);
            let sep = if end < old.len() { "\n" } else { "" };
            format!("{}{section}{sep}{}", &old[..start], &old[end..])
        }
        None => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(&path, new).expect("write BENCHMARKS.md");
}
