//! Streaming: CRUD, transactions, child rows kept by updates that leave them alone, resume
//! after restart, and transaction atomicity, for both sources.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bson::doc;
use tributary::config::SourceKind;

use super::{order, stop_sync, World};

async fn crud_and_transactions(kind: SourceKind) {
    let w = World::new(kind, 100).await;
    let orders = w.orders();
    orders
        .insert_many(vec![
            order("a", 1, &["x"]),
            order("b", 2, &[]),
            order("c", 3, &["y", "z"]),
        ])
        .await
        .unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    w.assert_equal().await;

    orders
        .insert_one(order("d", 4, &["p", "q", "r"]))
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "a"}, doc! {"$set": {"qty": 10}})
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "b"}, doc! {"$unset": {"name": ""}})
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "c"}, doc! {"$push": {"items": {"sku": "w"}}})
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "d"}, doc! {"$pop": {"items": 1}})
        .await
        .unwrap();
    orders
        .replace_one(doc! {"_id": "a"}, order("a", 11, &["replaced"]))
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": "b"}).await.unwrap();
    orders
        .update_many(doc! {}, doc! {"$inc": {"qty": 1}})
        .await
        .unwrap();
    // Inserted, updated and deleted before the stream gets to it.
    orders.insert_one(order("e", 5, &["gone"])).await.unwrap();
    orders
        .update_one(doc! {"_id": "e"}, doc! {"$set": {"qty": 6}})
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": "e"}).await.unwrap();

    let mut session = w.mongo.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    orders
        .insert_one(order("t1", 7, &["t"]))
        .session(&mut session)
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "c"}, doc! {"$set": {"qty": 70, "items": []}})
        .session(&mut session)
        .await
        .unwrap();
    orders
        .delete_one(doc! {"_id": "d"})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();

    w.sync_point("end").await;
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_applies_crud_and_transactions() {
    crud_and_transactions(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_applies_crud_and_transactions() {
    crud_and_transactions(SourceKind::Oplog).await;
}

/// `xmin` of each item row of `id`: a rewritten row has a new one.
async fn item_versions(w: &World, id: &str) -> Vec<String> {
    w.db.client
        .query(
            "SELECT xmin::text FROM public.order_items WHERE order_id = $1 ORDER BY idx",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Through the real driver and the source's own reading of the update: a `$set` of another
/// field leaves the item rows as they were, a `$push` onto `items` rewrites them.
async fn updates_rewrite_item_rows_only_when_items_changed(kind: SourceKind) {
    let w = World::new(kind, 100).await;
    let orders = w.orders();
    orders
        .insert_many(vec![order("a", 1, &["x", "y"]), order("b", 2, &["z"])])
        .await
        .unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    let (a, b) = (item_versions(&w, "a").await, item_versions(&w, "b").await);
    assert_eq!((a.len(), b.len()), (2, 1));

    orders
        .update_one(
            doc! {"_id": "a"},
            doc! {"$set": {"qty": 5, "name": "renamed"}},
        )
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "b"}, doc! {"$push": {"items": {"sku": "w"}}})
        .await
        .unwrap();
    w.sync_point("updated").await;
    w.assert_equal().await;
    assert_eq!(item_versions(&w, "a").await, a, "a's items were rewritten");
    let b_after = item_versions(&w, "b").await;
    assert_eq!(b_after.len(), 2);
    assert_ne!(b_after[0], b[0], "b's items were kept");
    stop_sync(stop, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_rewrites_item_rows_only_when_items_changed() {
    updates_rewrite_item_rows_only_when_items_changed(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_rewrites_item_rows_only_when_items_changed() {
    updates_rewrite_item_rows_only_when_items_changed(SourceKind::Oplog).await;
}

async fn resume_after_restart(kind: SourceKind) {
    let w = World::new(kind, 100).await;
    let orders = w.orders();
    let (stop, task) = w.start_sync();
    orders
        .insert_many(vec![order("a", 1, &["x"]), order("b", 2, &["y"])])
        .await
        .unwrap();
    w.sync_point("first").await;
    stop_sync(stop, task).await;
    let before = w
        .checkpoint()
        .await
        .expect("a checkpoint after the first run");

    // Written while nothing streams: the restart must pick these up from the checkpoint.
    orders
        .insert_one(order("c", 3, &["z", "zz"]))
        .await
        .unwrap();
    orders
        .update_one(
            doc! {"_id": "a"},
            doc! {"$set": {"qty": 100}, "$push": {"items": {"sku": "x2"}}},
        )
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": "b"}).await.unwrap();

    let (stop, task) = w.start_sync();
    w.sync_point("second").await;
    w.assert_equal().await;
    let after = w.checkpoint().await.unwrap();
    assert_ne!(before, after, "the checkpoint advanced");
    // Nothing doubled: one row per document, one child row per element.
    let items: i64 =
        w.db.client
            .query_one(
                "SELECT count(*) FROM public.order_items WHERE order_id = 'a'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(items, 2);
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_resumes_after_restart_without_loss_or_doubling() {
    resume_after_restart(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_resumes_after_restart_without_loss_or_doubling() {
    resume_after_restart(SourceKind::Oplog).await;
}

async fn transactions_are_atomic(kind: SourceKind) {
    // One row per batch: a split transaction would be visible between two batches.
    let w = World::new(kind, 1).await;
    let orders = w.orders();
    orders
        .insert_many(vec![order("a", 100, &[]), order("b", 0, &[])])
        .await
        .unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;

    let done = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicUsize::new(0));
    let observations = Arc::new(AtomicUsize::new(0));
    let observer = {
        let client = w.db.connect().await;
        let (done, violations, observations) =
            (done.clone(), violations.clone(), observations.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let row = client
                    .query_one("SELECT coalesce(sum(qty), 0)::int8 FROM public.orders WHERE id IN ('a', 'b')", &[])
                    .await
                    .unwrap();
                if row.get::<_, i64>(0) != 100 {
                    violations.fetch_add(1, Ordering::SeqCst);
                }
                observations.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    for _ in 0..30 {
        let mut session = w.mongo.start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        orders
            .update_one(doc! {"_id": "a"}, doc! {"$inc": {"qty": -1}})
            .session(&mut session)
            .await
            .unwrap();
        orders
            .update_one(doc! {"_id": "b"}, doc! {"$inc": {"qty": 1}})
            .session(&mut session)
            .await
            .unwrap();
        session.commit_transaction().await.unwrap();
    }
    w.sync_point("end").await;
    done.store(true, Ordering::SeqCst);
    observer.await.unwrap();
    assert!(observations.load(Ordering::SeqCst) > 0);
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a transaction was visible half-applied"
    );
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_never_shows_a_transaction_half_applied() {
    transactions_are_atomic(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_never_shows_a_transaction_half_applied() {
    transactions_are_atomic(SourceKind::Oplog).await;
}
