//! Mapped tables the user pre-created as declaratively partitioned tables: streaming, upsert
//! full syncs and `full-sync --mode replace` keep them partitioned, with every row in the
//! partition its key says; a partitioned table whose keys cannot take the writes is refused
//! before anything is written.

use std::sync::Arc;

use bson::{doc, Document};
use tributary::config::SourceKind;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};
use tributary::pipeline::sync::SyncError;

use super::{stop_sync, World};

/// `orders` by range of `qty`, its middle range sub-partitioned by hash of `id`, NULLs and
/// the rest in a default partition; `order_items` by hash of `order_id`.
const PARTITIONED: &str = "
CREATE TABLE public.orders (id text, qty integer, name text, PRIMARY KEY (id, qty))
  PARTITION BY RANGE (qty);
CREATE TABLE public.orders_small PARTITION OF public.orders FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE public.orders_big PARTITION OF public.orders FOR VALUES FROM (100) TO (1000)
  PARTITION BY HASH (id);
CREATE TABLE public.orders_big_0 PARTITION OF public.orders_big
  FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.orders_big_1 PARTITION OF public.orders_big
  FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE public.orders_rest PARTITION OF public.orders DEFAULT;
CREATE TABLE public.order_items (order_id text, idx integer, sku text,
  PRIMARY KEY (order_id, idx)) PARTITION BY HASH (order_id);
CREATE TABLE public.order_items_0 PARTITION OF public.order_items
  FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.order_items_1 PARTITION OF public.order_items
  FOR VALUES WITH (MODULUS 2, REMAINDER 1);
";

fn doc_of(i: usize) -> Document {
    // qty: small, big, or beyond every range (default partition). Never missing: the
    // primary key holds the partition key, so it is NOT NULL.
    let qty = match i % 3 {
        0 => (i % 100) as i32,
        1 => 100 + (i % 900) as i32,
        _ => 5000 + i as i32,
    };
    doc! {"_id": format!("p{i:04}"), "qty": qty, "name": format!("order {i}"),
    "items": [{"sku": "a"}, {"sku": "b"}]}
}

async fn insert(w: &World, from: usize, to: usize) {
    let docs: Vec<Document> = (from..to).map(doc_of).collect();
    w.orders().insert_many(docs).await.unwrap();
}

/// Every partition of `table`'s tree: `(name, parent, bound, primary-key name)`.
async fn tree(w: &World, table: &str) -> Vec<(String, String, String, Option<String>)> {
    w.db.client
        .query(
            "WITH RECURSIVE t AS (SELECT inhrelid, inhparent FROM pg_inherits \
               WHERE inhparent = $1::text::regclass \
             UNION ALL SELECT i.inhrelid, i.inhparent FROM pg_inherits i \
               JOIN t ON i.inhparent = t.inhrelid) \
             SELECT c.relname::text, p.relname::text, pg_get_expr(c.relpartbound, c.oid), \
               (SELECT conname::text FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p') \
             FROM t JOIN pg_class c ON c.oid = t.inhrelid JOIN pg_class p ON p.oid = t.inhparent \
             ORDER BY 1",
            &[&format!("public.{table}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn partition_key(w: &World, table: &str) -> Option<String> {
    w.db.client
        .query_one(
            "SELECT CASE WHEN relkind = 'p' THEN pg_get_partkeydef(oid) END FROM pg_class \
             WHERE oid = $1::text::regclass",
            &[&format!("public.{table}")],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every row sits in the partition its key says (checked against the bounds by hand, and
/// through Postgres's own routing: a row moved to the wrong leaf would not be found by a query
/// that names the leaf's bound).
async fn assert_rows_in_their_partitions(w: &World) {
    let leaf_counts = |sql: &'static str| async move {
        w.db.client
            .query_one(sql, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let misplaced = [
        "SELECT count(*) FROM public.orders_small WHERE NOT (qty < 100)",
        "SELECT count(*) FROM public.orders_big WHERE NOT (qty >= 100 AND qty < 1000)",
        "SELECT count(*) FROM public.orders_rest WHERE qty >= -2147483648 AND qty < 1000",
    ];
    for sql in misplaced {
        assert_eq!(leaf_counts(sql).await, 0, "{sql}");
    }
    let total = leaf_counts("SELECT count(*) FROM public.orders").await;
    let leaves = leaf_counts(
        "SELECT (SELECT count(*) FROM public.orders_small) + \
         (SELECT count(*) FROM public.orders_big_0) + (SELECT count(*) FROM public.orders_big_1) + \
         (SELECT count(*) FROM public.orders_rest)",
    )
    .await;
    assert_eq!(total, leaves);
    // Both hash leaves are used (a flattened or mis-recreated tree would leave one empty).
    assert!(leaf_counts("SELECT count(*) FROM public.orders_big_0").await > 0);
    assert!(leaf_counts("SELECT count(*) FROM public.orders_big_1").await > 0);
    assert!(leaf_counts("SELECT count(*) FROM public.order_items_0").await > 0);
    assert!(leaf_counts("SELECT count(*) FROM public.order_items_1").await > 0);
}

async fn run(w: &World, mode: FullSyncMode) {
    let report = full_sync(
        &w.config,
        Arc::clone(&w.mappings),
        None,
        mode,
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!report.interrupted);
}

/// Changes that move rows between partitions (and between hash leaves), delete and insert.
async fn churn(w: &World) {
    for i in (0..200).step_by(7) {
        w.orders()
            .update_one(
                doc! {"_id": format!("p{i:04}")},
                doc! {"$set": {"qty": 100 + i}},
            )
            .await
            .unwrap();
    }
    for i in (1..200).step_by(11) {
        w.orders()
            .update_one(
                doc! {"_id": format!("p{i:04}")},
                doc! {"$set": {"qty": 9000 + i}},
            )
            .await
            .unwrap();
    }
    w.orders()
        .delete_many(doc! {"_id": {"$lt": "p0020"}})
        .await
        .unwrap();
    insert(w, 400, 450).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_table_survives_replace_and_streaming() {
    let w = World::new(SourceKind::ChangeStream, 200).await;
    w.db.client.batch_execute(PARTITIONED).await.unwrap();
    let (orders_tree, items_tree) = (tree(&w, "orders").await, tree(&w, "order_items").await);
    assert_eq!(orders_tree.len(), 5);
    insert(&w, 0, 300).await;

    // Twice: the second replace meets the partitions (and their primary keys) the first one
    // renamed into place.
    for round in 0..2 {
        run(&w, FullSyncMode::Replace).await;
        assert_eq!(
            partition_key(&w, "orders").await.as_deref(),
            Some("RANGE (qty)"),
            "round {round}: orders was rebuilt without its partitioning"
        );
        assert_eq!(
            partition_key(&w, "order_items").await.as_deref(),
            Some("HASH (order_id)")
        );
        assert_eq!(tree(&w, "orders").await, orders_tree, "round {round}");
        assert_eq!(tree(&w, "order_items").await, items_tree, "round {round}");
        w.assert_equal().await;
        assert_rows_in_their_partitions(&w).await;
        let shadows: i64 =
            w.db.client
                .query_one(
                    "SELECT count(*) FROM pg_class WHERE strpos(relname, '__tributary_new') > 0",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
        assert_eq!(
            shadows, 0,
            "round {round}: shadow tables or indexes left behind"
        );
        w.orders()
            .delete_many(doc! {"_id": {"$gte": "p0290"}})
            .await
            .unwrap();
    }

    let (stop, task) = w.start_sync();
    churn(&w).await;
    w.sync_point("partitions").await;
    w.assert_equal().await;
    assert_rows_in_their_partitions(&w).await;
    assert_eq!(tree(&w, "orders").await, orders_tree);
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upsert_full_sync_and_streaming_into_a_partitioned_table() {
    let w = World::new(SourceKind::ChangeStream, 200).await;
    w.db.client.batch_execute(PARTITIONED).await.unwrap();
    insert(&w, 0, 300).await;
    run(&w, FullSyncMode::Upsert).await;
    w.assert_equal().await;
    assert_rows_in_their_partitions(&w).await;

    let (stop, task) = w.start_sync();
    churn(&w).await;
    // No qty: NULL in a primary-key column. Refused alone, as a dead letter; the rest streams.
    w.orders()
        .insert_one(doc! {"_id": "no-qty", "name": "no qty"})
        .await
        .unwrap();
    w.sync_point("upsert").await;
    let letters: i64 =
        w.db.client
            .query_one(
                "SELECT count(*) FROM tributary.dead_letters WHERE document_key = '\"no-qty\"' \
                 AND resolved_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(
        letters, 1,
        "the document without a partition key was not dead-lettered"
    );
    w.orders().delete_one(doc! {"_id": "no-qty"}).await.unwrap();
    w.sync_point("upsert-2").await;
    w.assert_equal().await;
    assert_rows_in_their_partitions(&w).await;
    stop_sync(stop, task).await;

    // An upsert full sync over rows the stream wrote changes nothing.
    run(&w, FullSyncMode::Upsert).await;
    w.assert_equal().await;
    assert_eq!(
        partition_key(&w, "orders").await.as_deref(),
        Some("RANGE (qty)")
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_table_without_a_usable_key_is_refused_before_any_write() {
    let w = World::new(SourceKind::ChangeStream, 200).await;
    w.db.client
        .batch_execute(
            "CREATE TABLE public.orders (id text, qty integer, name text) PARTITION BY RANGE (qty);
             CREATE TABLE public.orders_all PARTITION OF public.orders DEFAULT;",
        )
        .await
        .unwrap();
    insert(&w, 0, 10).await;
    let (_stop, task) = w.start_sync();
    let result = tokio::time::timeout(std::time::Duration::from_secs(120), task)
        .await
        .expect("sync did not stop")
        .unwrap();
    match result {
        Err(SyncError::Partitioned(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("\"public\".\"orders\""), "{msg}");
            assert!(msg.contains("ADD PRIMARY KEY (\"id\", \"qty\")"), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let written: i64 =
        w.db.client
            .query_one(
                "SELECT (SELECT count(*) FROM public.orders) + \
                 (SELECT count(*) FROM pg_tables WHERE tablename = 'order_items')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(written, 0, "rows or tables were written before the refusal");
    w.stop().await;
}

/// Citus cannot run here; its catalog table is enough for the refusal: a replace would swap a
/// plain table in for a distributed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_refuses_a_citus_distributed_table() {
    let w = World::new(SourceKind::ChangeStream, 200).await;
    w.db.client
        .batch_execute(
            "SET allow_system_table_mods = on;
             CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass);
             RESET allow_system_table_mods;
             CREATE TABLE public.orders (id text PRIMARY KEY, qty integer, name text);
             INSERT INTO pg_catalog.pg_dist_partition VALUES ('public.orders');",
        )
        .await
        .unwrap();
    insert(&w, 0, 10).await;
    let result = full_sync(
        &w.config,
        Arc::clone(&w.mappings),
        None,
        FullSyncMode::Replace,
        None,
        std::future::pending(),
    )
    .await;
    match result {
        Err(SyncError::Config(msg)) => {
            assert!(msg.contains("Citus-distributed"), "{msg}");
            assert!(msg.contains("--mode upsert"), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let rows: i64 =
        w.db.client
            .query_one("SELECT count(*) FROM public.orders", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(rows, 0);
    // The upsert mode writes into the (here: plain) table as Citus would take it.
    run(&w, FullSyncMode::Upsert).await;
    w.assert_equal().await;
    w.stop().await;
}
