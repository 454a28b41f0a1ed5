//! `full-sync --mode replace`: the collection is loaded into shadow tables and swapped in by
//! one transaction, so a concurrent reader sees the old rows or the new ones, nothing between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bson::doc;
use tributary::config::SourceKind;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};

use super::{order, World};

async fn insert(w: &World, from: usize, to: usize) {
    let ids: Vec<usize> = (from..to).collect();
    for chunk in ids.chunks(1000) {
        let docs: Vec<_> = chunk
            .iter()
            .map(|i| order(&format!("o{i:06}"), *i as i32, &["a", "b"]))
            .collect();
        w.orders().insert_many(docs).await.unwrap();
    }
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

async fn counts(client: &tokio_postgres::Client) -> (i64, i64) {
    let parents = client
        .query_one("SELECT count(*) FROM public.orders", &[])
        .await
        .unwrap()
        .get(0);
    let children = client
        .query_one("SELECT count(*) FROM public.order_items", &[])
        .await
        .unwrap()
        .get(0);
    (parents, children)
}

async fn shadow_tables(w: &World) -> Vec<String> {
    w.db.client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE strpos(tablename, '__tributary_new') > 0",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_an_empty_or_partial_table() {
    let w = World::new(SourceKind::ChangeStream, 300).await;
    insert(&w, 0, 2000).await;
    run(&w, FullSyncMode::Upsert).await;
    let before = counts(&w.db.client).await;
    assert_eq!(before, (2000, 4000));

    // Deleted before the load: their rows must disappear. Added: the table grows.
    w.orders()
        .delete_many(doc! {"_id": {"$lt": "o000050"}})
        .await
        .unwrap();
    insert(&w, 2000, 3500).await;
    let after = (3450, 6900);

    let stop = Arc::new(AtomicBool::new(false));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let stop = Arc::clone(&stop);
        let client = w.db.connect().await;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut first = Some(first_tx);
            while !stop.load(Ordering::SeqCst) {
                let (p, c) = counts(&client).await;
                seen.push((p, c));
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            seen.push(counts(&client).await);
            seen
        })
    };
    first_rx.await.unwrap();
    run(&w, FullSyncMode::Replace).await;
    stop.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    for &(p, c) in &seen {
        assert!(
            p == before.0 || p == after.0,
            "a reader saw {p} parent rows during the load (before {}, after {})",
            before.0,
            after.0
        );
        assert!(
            c == before.1 || c == after.1,
            "a reader saw {c} child rows during the load (before {}, after {})",
            before.1,
            after.1
        );
        assert!(
            p >= before.0,
            "a reader saw fewer rows than before the load"
        );
    }
    assert_eq!(seen.first().map(|s| s.0), Some(before.0));
    assert_eq!(seen.last().copied(), Some(after));

    w.assert_equal().await;
    let gone: i64 =
        w.db.client
            .query_one(
                "SELECT count(*) FROM public.orders WHERE id < 'o000050'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(gone, 0, "rows of deleted documents survived the replace");
    assert!(shadow_tables(&w).await.is_empty());
    // The swapped-in table keeps the primary key name `schema` gives it.
    let pk: String =
        w.db.client
            .query_one(
                "SELECT conname::text FROM pg_constraint WHERE conrelid = 'public.orders'::regclass AND contype = 'p'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(pk, "orders_pkey");
    w.wait_for_phase("streaming").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_shadow_tables_are_dropped_before_the_load() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    insert(&w, 0, 250).await;
    run(&w, FullSyncMode::Upsert).await;
    // What an interrupted replace could leave behind, with a stale definition and rows.
    w.db.client
        .batch_execute(
            "CREATE TABLE public.orders__tributary_new (id text PRIMARY KEY, junk integer); \
             INSERT INTO public.orders__tributary_new VALUES ('stale', 1); \
             CREATE TABLE public.order_items__tributary_new (order_id text, idx integer, sku text, PRIMARY KEY (order_id, idx)); \
             INSERT INTO public.order_items__tributary_new VALUES ('stale', 0, 'x');",
        )
        .await
        .unwrap();
    w.orders()
        .delete_one(doc! {"_id": "o000007"})
        .await
        .unwrap();

    run(&w, FullSyncMode::Replace).await;

    w.assert_equal().await;
    assert!(shadow_tables(&w).await.is_empty());
    let junk: i64 =
        w.db.client
            .query_one(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = 'orders' AND column_name = 'junk'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(
        junk, 0,
        "the leftover shadow table was reused instead of dropped"
    );
    w.stop().await;
}
