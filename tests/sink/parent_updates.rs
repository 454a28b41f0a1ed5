//! `Change::UpsertParent`: an update that left the child arrays alone keeps the child rows,
//! unless they may be out of date (no parent row, or a version was refused since).

use tributary::mapping::value::PgValue;
use tributary::sink::{Change, Sink};

use super::{batch, checkpoint, delete, items, order, orders, orders_mapping, sink_for};
use crate::support::{fresh_database, TestDb};

/// `order(..)` as an update that changed no child array. `items` is what the document's child
/// rows would be, which the sink writes only when it must.
fn parent_update(id: &str, total: &str, note: &str, items: usize) -> Change {
    match order(id, total, note, items) {
        Change::Upsert {
            collection,
            key,
            rows,
        } => Change::UpsertParent {
            collection,
            key,
            rows,
        },
        other => other,
    }
}

fn refused(id: &str) -> Change {
    Change::Refused {
        collection: 0,
        key: PgValue::Text(id.into()),
    }
}

/// Each item row's `(order_id, idx, xmin)`: a rewritten row has a new `xmin`.
async fn item_versions(db: &TestDb) -> Vec<(String, i32, String)> {
    db.client
        .query(
            "SELECT order_id, idx, xmin::text FROM order_items ORDER BY order_id, idx",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn stale(db: &TestDb) -> Vec<String> {
    db.client
        .query(
            "SELECT document_key FROM tributary.stale_children ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn an_update_that_left_the_items_alone_keeps_their_rows() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(vec![order("a", "1", "first", 3)], 1))
        .await
        .unwrap();
    let before = item_versions(&db).await;

    // Five items offered: had the sink rewritten them, there would be five.
    sink.apply(&batch(vec![parent_update("a", "2", "second", 5)], 2))
        .await
        .unwrap();
    assert_eq!(
        orders(&db).await,
        vec![("a".into(), "2.00".into(), "second".into())]
    );
    assert_eq!(item_versions(&db).await, before);
}

#[tokio::test]
async fn an_update_of_a_document_without_rows_writes_its_items() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(
        vec![order("a", "1", "x", 1), parent_update("b", "2", "y", 2)],
        1,
    ))
    .await
    .unwrap();
    assert_eq!(orders(&db).await.len(), 2);
    assert_eq!(
        items(&db).await,
        vec![
            ("a".into(), 0, "sku-0".into()),
            ("b".into(), 0, "sku-0".into()),
            ("b".into(), 1, "sku-1".into()),
        ]
    );
}

#[tokio::test]
async fn after_a_refused_version_the_next_update_rewrites_the_items() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(vec![order("a", "1", "first", 3)], 1))
        .await
        .unwrap();
    sink.apply(&batch(vec![refused("a")], 2)).await.unwrap();
    assert_eq!(stale(&db).await, vec!["a".to_owned()]);
    assert_eq!(
        items(&db).await.len(),
        3,
        "a refusal leaves the rows as they were"
    );

    // A restart in between: the record is in Postgres, not in the sink.
    drop(sink);
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.expect_checkpoint(Some(&checkpoint(2)));
    sink.apply(&batch(vec![parent_update("a", "2", "fixed", 1)], 3))
        .await
        .unwrap();
    assert_eq!(items(&db).await, vec![("a".into(), 0, "sku-0".into())]);
    assert!(stale(&db).await.is_empty());

    // Current again: the next such update keeps them.
    sink.apply(&batch(vec![parent_update("a", "3", "later", 4)], 4))
        .await
        .unwrap();
    assert_eq!(items(&db).await.len(), 1);
}

#[tokio::test]
async fn within_a_batch_the_order_of_refusal_and_update_decides() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(
        vec![order("a", "1", "x", 3), order("b", "1", "x", 3)],
        1,
    ))
    .await
    .unwrap();
    let before = item_versions(&db).await;

    sink.apply(&batch(
        vec![
            // Refused, then a good version: its items are rewritten, nothing stays recorded.
            refused("a"),
            parent_update("a", "2", "y", 1),
            // A good version, then a refused one: the good one keeps the items, and the
            // refusal is recorded for the next update.
            parent_update("b", "2", "y", 1),
            refused("b"),
        ],
        2,
    ))
    .await
    .unwrap();
    let after = item_versions(&db).await;
    assert_eq!(
        after.iter().filter(|i| i.0 == "a").count(),
        1,
        "a's items rewritten"
    );
    let b =
        |v: &[(String, i32, String)]| v.iter().filter(|i| i.0 == "b").cloned().collect::<Vec<_>>();
    assert_eq!(b(&after), b(&before), "b's items kept");
    assert_eq!(stale(&db).await, vec!["b".to_owned()]);
}

#[tokio::test]
async fn deletes_and_truncates_forget_refusals() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(
        vec![
            order("a", "1", "x", 1),
            order("b", "1", "x", 1),
            refused("a"),
            refused("b"),
        ],
        1,
    ))
    .await
    .unwrap();
    assert_eq!(stale(&db).await, vec!["a".to_owned(), "b".to_owned()]);
    sink.apply(&batch(vec![delete("a")], 2)).await.unwrap();
    assert_eq!(stale(&db).await, vec!["b".to_owned()]);
    sink.apply(&batch(vec![Change::Truncate { collection: 0 }], 3))
        .await
        .unwrap();
    assert!(stale(&db).await.is_empty());
    assert!(orders(&db).await.is_empty());
}
