//! Mapping reload without a restart: SIGHUP to the real `tributary sync` binary, and the
//! `tributary reload` command, against mongo-sim and a fresh Postgres database. The same
//! process (pid) keeps streaming throughout; invalid sets are refused with every error's
//! file:line and change nothing.

use std::path::PathBuf;
use std::time::Duration;

use bson::doc;
use mongo_sim::SimOptions;
use tributary::config::SourceKind;

use super::{wait_until, Daemon};
use crate::stream::World;

const ORDERS: &str = r#"database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
"#;

/// `ORDERS` plus a `note` column (line 8 of the file).
const ORDERS_NOTE: &str = r#"database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
      - { name: note, source: note, type: text }
"#;

/// Two mistakes: an unknown type (line 6) and a column without `source` (line 8).
const INVALID: &str = r#"database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: intger }
      - { name: name, source: name, type: text }
      - { name: note, type: text }
"#;

/// `qty` changed from integer to bigint (line 6).
const RETYPED: &str = r#"database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: bigint }
      - { name: name, source: name, type: text }
"#;

async fn world(mapping: &str) -> World {
    world_of(SourceKind::ChangeStream, mapping).await
}

async fn world_of(source: SourceKind, mapping: &str) -> World {
    World::with_mapping(source, 100, SimOptions::default(), "", mapping).await
}

fn mapping_file(w: &World) -> PathBuf {
    w.config_path().parent().unwrap().join("mappings.yml")
}

fn log_path(w: &World, name: &str) -> PathBuf {
    w.config_path().parent().unwrap().join(name)
}

fn hangup(d: &Daemon) {
    let pid = d.child.id().expect("the daemon is running");
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Still the same process: it has not exited.
fn assert_running(d: &mut Daemon) {
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        d.log_text()
    );
}

async fn count(w: &World, sql: &str) -> i64 {
    w.db.client.query_one(sql, &[]).await.unwrap().get(0)
}

/// `count` inside a wait: a query racing the swap of a re-copied table may fail once
/// ("could not open relation"); that is "not yet", not a failure.
async fn count_now(w: &World, sql: &str) -> Option<i64> {
    w.db.client.query_one(sql, &[]).await.ok().map(|r| r.get(0))
}

/// `tributary reload --config …`: exit code, stdout, stderr.
async fn reload_command(w: &World) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["reload", "--timeout", "120", "--config"])
            .arg(w.config_path())
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("tributary reload did not return")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn column_type(w: &World, table: &str, column: &str) -> Option<String> {
    w.db.client
        .query_opt(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = $1 AND a.attname = $2 \
               AND NOT a.attisdropped",
            &[&table, &column],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_column_fills_it_for_every_existing_row_without_a_restart() {
    new_column_on_sighup(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_column_fills_it_for_every_existing_row_reading_the_oplog() {
    new_column_on_sighup(SourceKind::Oplog).await;
}

async fn new_column_on_sighup(source: SourceKind) {
    let w = world_of(source, ORDERS).await;
    for i in 0..300 {
        w.orders()
            .insert_one(doc! {"_id": format!("o{i:03}"), "qty": i, "note": format!("n{i}")})
            .await
            .unwrap();
    }
    let mut d = Daemon::spawn(&w.config_path(), log_path(&w, "sync.log"));
    let pid = d.child.id();
    w.sync_point("copied").await;
    assert_eq!(column_type(&w, "orders", "note").await, None);

    std::fs::write(mapping_file(&w), ORDERS_NOTE).unwrap();
    hangup(&d);
    wait_until(120, "every existing row's note", || async {
        column_type(&w, "orders", "note").await.is_some()
            && count_now(
                &w,
                "SELECT count(*) FROM public.orders WHERE id LIKE 'o%' AND note = 'n' || qty",
            )
            .await
                == Some(300)
    })
    .await;
    assert_running(&mut d);
    assert_eq!(d.child.id(), pid, "the same process");

    // Streaming goes on under the new mappings: a change after the reload arrives with it.
    w.orders()
        .update_one(doc! {"_id": "o007"}, doc! {"$set": {"note": "changed"}})
        .await
        .unwrap();
    w.orders()
        .insert_one(doc! {"_id": "late", "qty": 1, "note": "after"})
        .await
        .unwrap();
    w.sync_point("after-reload").await;
    let rows =
        w.db.client
            .query(
                "SELECT id, note FROM public.orders WHERE id IN ('o007', 'late') ORDER BY id",
                &[],
            )
            .await
            .unwrap();
    let got: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("late".to_owned(), Some("after".to_owned())),
            ("o007".to_owned(), Some("changed".to_owned())),
        ]
    );
    let log = d.log_text();
    assert!(
        log.contains("Mappings reloaded") && log.contains("column \"note\""),
        "{log}"
    );
    assert_eq!(d.terminate().await, Some(0));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_mapping_on_sighup_is_logged_with_every_error_and_the_stream_goes_on() {
    let w = world(ORDERS).await;
    w.orders()
        .insert_one(doc! {"_id": "a", "qty": 1, "note": "x"})
        .await
        .unwrap();
    let mut d = Daemon::spawn(&w.config_path(), log_path(&w, "sync.log"));
    w.sync_point("started").await;

    std::fs::write(mapping_file(&w), INVALID).unwrap();
    hangup(&d);
    let file = mapping_file(&w).display().to_string();
    wait_until(60, "both errors in the log", || async {
        let log = d.log_text();
        log.contains(&format!("{file}:6:")) && log.contains(&format!("{file}:8:"))
    })
    .await;
    let log = d.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Reload refused"))
        .collect();
    assert_eq!(refused.len(), 2, "one ERROR line per error:\n{log}");
    assert!(refused.iter().all(|l| l.contains("ERROR")), "{log}");

    // Nothing changed, and the stream still runs the old mappings.
    w.orders()
        .insert_one(doc! {"_id": "b", "qty": 2, "note": "y"})
        .await
        .unwrap();
    w.sync_point("still-streaming").await;
    assert_running(&mut d);
    assert_eq!(column_type(&w, "orders", "note").await, None);
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM public.orders WHERE id IN ('a', 'b')"
        )
        .await,
        2
    );

    // A later valid reload applies.
    std::fs::write(mapping_file(&w), ORDERS_NOTE).unwrap();
    hangup(&d);
    wait_until(120, "the valid reload's backfill", || async {
        column_type(&w, "orders", "note").await.is_some()
            && count_now(
                &w,
                "SELECT count(*) FROM public.orders WHERE (id, note) IN (('a', 'x'), ('b', 'y'))",
            )
            .await
                == Some(2)
    })
    .await;
    assert_running(&mut d);
    assert_eq!(d.terminate().await, Some(0));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_applies_and_refuses_a_changed_type_with_the_alter_to_run() {
    let w = world(ORDERS).await;
    w.orders()
        .insert_one(doc! {"_id": "a", "qty": 1, "note": "x"})
        .await
        .unwrap();

    // No daemon: exit 3, and say when the mappings apply.
    let (code, _, err) = reload_command(&w).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("no running sync for stream test; the new mappings apply at its next start"),
        "{err}"
    );

    let mut d = Daemon::spawn(&w.config_path(), log_path(&w, "sync.log"));
    w.sync_point("started").await;

    // A changed column type: refused against the live table, with the ALTER, nothing changed.
    std::fs::write(mapping_file(&w), RETYPED).unwrap();
    let (code, out, err) = reload_command(&w).await;
    assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");
    let file = mapping_file(&w).display().to_string();
    assert!(err.contains(&format!("{file}:6:")), "{err}");
    assert!(
        err.contains(
            "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"qty\" TYPE bigint USING \"qty\"::bigint"
        ),
        "{err}"
    );
    assert_eq!(
        column_type(&w, "orders", "qty").await.as_deref(),
        Some("integer")
    );
    assert!(d.log_text().contains("ALTER COLUMN"), "{}", d.log_text());

    // A valid set: applied, the outcome printed, exit 0.
    std::fs::write(mapping_file(&w), ORDERS_NOTE).unwrap();
    let (code, out, err) = reload_command(&w).await;
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("mappings reloaded"), "{out}");
    assert!(out.contains("copied again: shop.orders"), "{out}");
    wait_until(120, "the backfilled note", || async {
        count_now(
            &w,
            "SELECT count(*) FROM public.orders WHERE id = 'a' AND note = 'x'",
        )
        .await
            == Some(1)
    })
    .await;
    assert_running(&mut d);
    let answered = count(
        &w,
        "SELECT count(*) FROM tributary.requests WHERE kind = 'reload' AND taken_at IS NOT NULL AND done_at IS NOT NULL",
    )
    .await;
    assert_eq!(answered, 2);
    assert_eq!(d.terminate().await, Some(0));
    w.stop().await;
}

const TWO: &str = r#"database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
  customers:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: city, source: city, type: text }
"#;

/// `customers` removed, `invoices` added.
const SWAPPED: &str = r#"database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
  invoices:
    columns:
      - { name: id,    source: _id,   type: text }
      - { name: total, source: total, type: integer }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_collection_stops_streaming_and_keeps_its_table_a_new_one_is_copied() {
    let w = world(TWO).await;
    let shop = w.mongo.database("shop");
    let customers = shop.collection::<bson::Document>("customers");
    let invoices = shop.collection::<bson::Document>("invoices");
    customers
        .insert_one(doc! {"_id": "c1", "city": "Oslo"})
        .await
        .unwrap();
    for i in 0..50 {
        invoices
            .insert_one(doc! {"_id": format!("i{i}"), "total": i})
            .await
            .unwrap();
    }
    let mut d = Daemon::spawn(&w.config_path(), log_path(&w, "sync.log"));
    w.sync_point("started").await;
    assert_eq!(count(&w, "SELECT count(*) FROM public.customers").await, 1);

    std::fs::write(mapping_file(&w), SWAPPED).unwrap();
    hangup(&d);
    wait_until(120, "the copy of shop.invoices", || async {
        w.db.client
            .query_one("SELECT count(*) FROM public.invoices", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 50)
    })
    .await;

    // After the reload: customers' changes no longer arrive; invoices' do.
    customers
        .insert_one(doc! {"_id": "c2", "city": "Bergen"})
        .await
        .unwrap();
    invoices
        .insert_one(doc! {"_id": "i-late", "total": 7})
        .await
        .unwrap();
    wait_until(60, "the invoice written after the reload", || async {
        count_now(
            &w,
            "SELECT count(*) FROM public.invoices WHERE id = 'i-late'",
        )
        .await
            == Some(1)
    })
    .await;
    // The marker is written after c2: had customers still streamed, c2 would be in by then.
    w.sync_point("after-reload").await;
    assert_eq!(
        count(&w, "SELECT count(*) FROM public.customers").await,
        1,
        "the removed collection's table stays, with its rows, and gets no new ones"
    );
    assert_running(&mut d);
    let log = d.log_text();
    assert!(
        log.contains("collections added: shop.invoices")
            && log.contains("collections removed (their tables stay): shop.customers"),
        "{log}"
    );
    assert_eq!(d.terminate().await, Some(0));
    w.stop().await;
}

/// The reload's type check compares a mapping with `format_type` of the live column: every
/// type a mapping may name must compare equal to the column created from it, or every
/// reload would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_reads_back_from_the_catalog_as_the_reload_expects() {
    use tributary::mapping::model::PgType;
    use tributary::sink::postgres::catalog::{catalog_type, column_types};
    let db = crate::support::fresh_database().await;
    let scalars = vec![
        PgType::Text,
        PgType::Varchar(None),
        PgType::Varchar(Some(12)),
        PgType::SmallInt,
        PgType::Integer,
        PgType::BigInt,
        PgType::Real,
        PgType::DoublePrecision,
        PgType::Numeric(None),
        PgType::Numeric(Some((10, None))),
        PgType::Numeric(Some((12, Some(2)))),
        PgType::Boolean,
        PgType::Timestamptz,
        PgType::Timestamp,
        PgType::Date,
        PgType::Uuid,
        PgType::Bytea,
        PgType::Json,
        PgType::Jsonb,
    ];
    let mut types = scalars.clone();
    types.extend(
        scalars
            .into_iter()
            .filter(|t| !matches!(t, PgType::Json | PgType::Jsonb))
            .map(|t| PgType::Array(Box::new(t))),
    );
    let columns: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("c{i} {t}"))
        .collect();
    db.client
        .batch_execute(&format!("CREATE TABLE public.t ({})", columns.join(", ")))
        .await
        .unwrap();
    let live = column_types(&db.client, "public", &["t".to_owned()])
        .await
        .unwrap();
    for (i, t) in types.iter().enumerate() {
        assert_eq!(
            live.get(&("t".to_owned(), format!("c{i}"))),
            Some(&catalog_type(t)),
            "{t}"
        );
    }
}

/// The request path in-process: a `reload` row answered by the daemon's watcher, and
/// `tributary_reloads_total{outcome}` counting both outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_and_reloads_are_counted_by_outcome() {
    let w = world(ORDERS).await;
    let run = super::Running::start(&w.config, w.mappings.clone(), 30).await;
    w.sync_point("started").await;
    assert_eq!(run.counter("tributary_reloads_total", "refused"), 0.0);

    let ask = || async {
        let id: i64 = w
            .db
            .client
            .query_one(
                "INSERT INTO tributary.requests (stream, kind) VALUES ('test', 'reload') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let sql = "SELECT outcome FROM tributary.requests WHERE id = $1 AND done_at IS NOT NULL";
        wait_until(120, "the daemon's answer", || async {
            w.db.client.query_opt(sql, &[&id]).await.unwrap().is_some()
        })
        .await;
        w.db.client
            .query_one(sql, &[&id])
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .unwrap_or_default()
    };

    std::fs::write(mapping_file(&w), INVALID).unwrap();
    let outcome = ask().await;
    assert!(outcome.starts_with("invalid mappings:"), "{outcome}");
    assert_eq!(
        outcome.lines().count(),
        3,
        "two errors, one a line: {outcome}"
    );
    assert_eq!(run.counter("tributary_reloads_total", "refused"), 1.0);
    assert_eq!(run.counter("tributary_reloads_total", "applied"), 0.0);

    std::fs::write(mapping_file(&w), ORDERS_NOTE).unwrap();
    let outcome = ask().await;
    assert!(outcome.starts_with("ok: "), "{outcome}");
    assert!(outcome.contains("column \"note\""), "{outcome}");
    assert_eq!(run.counter("tributary_reloads_total", "applied"), 1.0);
    w.sync_point("after").await;
    run.stop().await;
    w.stop().await;
}
