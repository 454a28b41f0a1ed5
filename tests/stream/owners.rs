//! Several streams sharing one Postgres (SPEC "Sharded clusters"): each owns the tables of its
//! mappings (`<state_schema>.table_owners`); a stream whose mappings touch another's table
//! refuses to start, names the table and its owner, and writes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::config::{Config, SourceKind};
use tributary::mapping::model::MappingSet;
use tributary::pipeline::sync::{sync, SyncError, SyncOptions};
use tributary::sink::postgres::owners;

use super::{order, stop_sync, World};
use crate::support::wait_until;

const CUSTOMERS: &str = r#"
database: shop
collections:
  customers:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: name, source: name, type: text }
"#;

/// Maps `shop.customers` onto the table the "crm" stream owns, and a table of its own that
/// must never be created.
const OVERLAPPING: &str = r#"
database: shop
collections:
  invoices:
    columns:
      - { name: id, source: _id, type: text }
  customers:
    columns:
      - { name: id, source: _id, type: text }
"#;

/// A second stream on `w`'s simulator and database: its own `sync.name` and mapping.
struct Stream {
    config: Config,
    mappings: Arc<MappingSet>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn stream(w: &World, name: &str, mapping: &str) -> Stream {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mappings.yml"), mapping).unwrap();
    let text = format!(
        r#"
[mongo]
uri = "{}"
[postgres]
uri = "{}"
pool_size = 4
[sync]
name = "{name}"
mappings = "mappings.yml"
batch_max_rows = 100
batch_max_wait_ms = 20
[metrics]
listen = ""
"#,
        w.sim.uri(),
        w.db.url
    );
    let path = dir.path().join("tributary.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_str_at(&text, &path).unwrap();
    let mappings = Arc::new(tributary::mapping::load(Path::new(&config.sync.mappings)).unwrap());
    Stream {
        config,
        mappings,
        path,
        _dir: dir,
    }
}

fn start(s: &Stream) -> (oneshot::Sender<()>, JoinHandle<Result<(), SyncError>>) {
    let (tx, rx) = oneshot::channel::<()>();
    let config = s.config.clone();
    let mappings = s.mappings.clone();
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
    (tx, task)
}

async fn count(w: &World, sql: &str) -> i64 {
    w.db.client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn owners_of(w: &World) -> Vec<(String, String)> {
    w.db.client
        .query(
            "SELECT table_name, stream FROM tributary.table_owners ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disjoint_streams_share_postgres_and_an_overlapping_one_is_refused() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let customers = w
        .mongo
        .database("shop")
        .collection::<bson::Document>("customers");
    for i in 0..20 {
        w.orders()
            .insert_one(order(&format!("o{i:03}"), i, &["a"]))
            .await
            .unwrap();
        customers
            .insert_one(doc! {"_id": format!("c{i:03}"), "name": format!("customer {i}")})
            .await
            .unwrap();
    }
    let crm = stream(&w, "crm", CUSTOMERS);
    let (stop_shop, shop) = w.start_sync();
    let (stop_crm, crm_task) = start(&crm);
    w.wait_for_phase("streaming").await;

    // Both stream: changes after their copies reach their own tables.
    for i in 20..40 {
        w.orders()
            .insert_one(order(&format!("o{i:03}"), i, &["a", "b"]))
            .await
            .unwrap();
        customers
            .insert_one(doc! {"_id": format!("c{i:03}"), "name": format!("customer {i}")})
            .await
            .unwrap();
    }
    customers
        .update_one(doc! {"_id": "c001"}, doc! {"$set": {"name": "renamed"}})
        .await
        .unwrap();
    customers.delete_one(doc! {"_id": "c002"}).await.unwrap();
    w.sync_point("owners").await;
    wait_until(
        60,
        "the crm stream to apply every customer change",
        || async {
            count(&w, "SELECT count(*) FROM public.customers").await == 39
                && count(
                    &w,
                    "SELECT count(*) FROM public.customers WHERE name = 'renamed'",
                )
                .await
                    == 1
        },
    )
    .await;
    w.assert_equal().await;
    assert_eq!(
        owners_of(&w).await,
        vec![
            ("public.customers".to_owned(), "crm".to_owned()),
            ("public.order_items".to_owned(), "test".to_owned()),
            ("public.orders".to_owned(), "test".to_owned()),
        ]
    );

    // A third stream mapping crm's table: exit 2, the table and owner named, nothing written.
    let rogue = stream(&w, "rogue", OVERLAPPING);
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("sync")
            .arg("--config")
            .arg(&rogue.path)
            .output(),
    )
    .await
    .expect("the refused sync did not exit")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("table public.customers belongs to stream \"crm\""),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("DELETE FROM"), "stderr: {stderr}");
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'invoices'"
        )
        .await,
        0,
        "the refused stream created a table"
    );
    for table in ["checkpoints", "collections", "table_owners"] {
        let n = count(
            &w,
            &format!("SELECT count(*) FROM tributary.{table} WHERE stream = 'rogue'"),
        )
        .await;
        assert_eq!(n, 0, "the refused stream wrote to tributary.{table}");
    }
    // `check` reports the same conflict.
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("check")
        .arg("--json")
        .arg("--config")
        .arg(&rogue.path)
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "table_owners")
        .cloned()
        .unwrap_or_default();
    assert_eq!(finding["level"], "error", "{report}");
    assert!(
        finding["message"]
            .as_str()
            .unwrap_or_default()
            .contains("table public.customers belongs to stream \"crm\""),
        "{report}"
    );
    // The refused full-sync too.
    let full = tributary::pipeline::full_sync::full_sync(
        &rogue.config,
        rogue.mappings.clone(),
        None,
        tributary::pipeline::full_sync::FullSyncMode::Replace,
        None,
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(&full, Err(SyncError::TableOwned(e)) if e.tables[0].owner == "crm"),
        "{full:?}"
    );

    stop_sync(stop_crm, crm_task).await;
    stop_sync(stop_shop, shop).await;
    // Released as docs/scaling.md says, the table can be claimed by another stream.
    w.db.client
        .execute(
            "DELETE FROM tributary.table_owners WHERE table_name IN ('public.customers')",
            &[],
        )
        .await
        .unwrap();
    let pg = w.db.connect().await;
    let taken = owners::conflicts(
        &pg,
        "tributary",
        "public",
        "rogue",
        &owners::mapped_tables(&rogue.mappings),
    )
    .await
    .unwrap();
    assert!(taken.is_empty(), "{taken:?}");
    w.stop().await;
}

/// Two streams claiming overlapping tables at the same instant: exactly one wins each time,
/// and the loser claims nothing (not even the tables nobody else wanted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_have_exactly_one_winner() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let pg = w.db.connect().await;
    pg.batch_execute("CREATE SCHEMA tributary").await.unwrap();
    for s in tributary::sink::postgres::ddl::state_ddl("tributary") {
        pg.batch_execute(&s).await.unwrap();
    }
    for round in 0..25 {
        let shared = format!("shared_{round}");
        let a_tables = vec![format!("a_{round}"), shared.clone()];
        let b_tables = vec![shared.clone(), format!("b_{round}")];
        let mut a = w.db.connect().await;
        let mut b = w.db.connect().await;
        let (ra, rb) = tokio::join!(
            owners::claim(&mut a, "tributary", "public", "a", &a_tables),
            owners::claim(&mut b, "tributary", "public", "b", &b_tables),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra.is_empty() != rb.is_empty(),
            "round {round}: exactly one must win ({ra:?} / {rb:?})"
        );
        let (winner, loser_only) = if ra.is_empty() {
            ("a", format!("public.b_{round}"))
        } else {
            ("b", format!("public.a_{round}"))
        };
        let loser_claims = ra.iter().chain(&rb).next().unwrap();
        assert_eq!(loser_claims.owner, winner);
        assert_eq!(loser_claims.table, format!("public.{shared}"));
        let owner: String = pg
            .query_one(
                "SELECT stream FROM tributary.table_owners WHERE table_name = $1",
                &[&format!("public.{shared}")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, winner);
        let kept: i64 = pg
            .query_one(
                "SELECT count(*) FROM tributary.table_owners WHERE table_name = $1",
                &[&loser_only],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 0, "round {round}: the loser claimed {loser_only}");
    }

    // The same race between two whole `sync` processes of one mapping: one streams, the other
    // stops with the table named.
    let first = stream(&w, "first", CUSTOMERS);
    let second = stream(&w, "second", CUSTOMERS);
    let (stop_1, task_1) = start(&first);
    let (stop_2, task_2) = start(&second);
    let mut tasks = vec![(stop_1, task_1, "first"), (stop_2, task_2, "second")];
    let refused = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(i) = tasks.iter().position(|(_, t, _)| t.is_finished()) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("neither sync was refused");
    let (_, loser, loser_name) = tasks.remove(refused);
    let (stop_w, winner, winner_name) = tasks.remove(0);
    match loser.await.unwrap() {
        Err(SyncError::TableOwned(e)) => {
            assert_eq!(e.stream, loser_name);
            assert_eq!(e.tables[0].table, "public.customers");
            assert_eq!(e.tables[0].owner, winner_name);
        }
        other => panic!("the loser stopped otherwise: {other:?}"),
    }
    w.mongo
        .database("shop")
        .collection::<bson::Document>("customers")
        .insert_one(doc! {"_id": "late", "name": "late"})
        .await
        .unwrap();
    wait_until(60, "the winner to stream a change", || async {
        count(
            &w,
            "SELECT count(*) FROM public.customers WHERE id = 'late'",
        )
        .await
            == 1
    })
    .await;
    stop_sync(stop_w, winner).await;
    w.stop().await;
}
