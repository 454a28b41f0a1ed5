//! Full sync → streaming hand-off: writes made while the snapshot copies must all be in
//! Postgres afterwards, and no snapshot row may overwrite a newer streamed change.

use bson::doc;
use tributary::config::SourceKind;

use super::{order, stop_sync, World};

async fn writes_during_the_copy(kind: SourceKind) {
    // Small chunks: the copy takes many round trips, so the writer below overlaps it.
    let w = World::new(kind, 50).await;
    let orders = w.orders();
    let docs: Vec<_> = (0..2000)
        .map(|i| order(&format!("o{i:05}"), i, &["s"]))
        .collect();
    orders.insert_many(docs).await.unwrap();

    let (stop, task) = w.start_sync();
    // Start writing once the copy has begun, so the writes land before and after the copy's
    // read position.
    w.wait_for_phase("snapshot").await;
    for i in (0..2000).step_by(7) {
        let id = format!("o{i:05}");
        match i % 3 {
            0 => {
                orders
                    .update_one(
                        doc! {"_id": &id},
                        doc! {"$set": {"qty": -i, "name": "changed"}},
                    )
                    .await
                    .unwrap();
            }
            1 => {
                orders.delete_one(doc! {"_id": &id}).await.unwrap();
            }
            _ => {
                orders
                    .insert_one(order(&format!("n{i:05}"), i, &["new", "new2"]))
                    .await
                    .unwrap();
            }
        }
    }
    w.sync_point("end").await;
    w.assert_equal().await;
    let phase: String = w
        .db
        .client
        .query_one("SELECT phase FROM tributary.collections WHERE stream = 'test' AND namespace = 'shop.orders'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phase, "streaming");
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_snapshot_hands_off_without_losing_concurrent_writes() {
    writes_during_the_copy(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_snapshot_hands_off_without_losing_concurrent_writes() {
    writes_during_the_copy(SourceKind::Oplog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_mapped_later_is_copied_then_streamed() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    // First run with the collection's phase already streaming and a checkpoint: simulate
    // "mapped later" by stopping, clearing its phase row and its rows, then restarting.
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("first").await;
    stop_sync(stop, task).await;
    w.db.client
        .batch_execute(
            "DELETE FROM tributary.collections; TRUNCATE public.orders, public.order_items",
        )
        .await
        .unwrap();
    w.orders().insert_one(order("b", 2, &["y"])).await.unwrap();
    let (stop, task) = w.start_sync();
    w.orders()
        .update_one(doc! {"_id": "a"}, doc! {"$set": {"qty": 5}})
        .await
        .unwrap();
    w.sync_point("second").await;
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}
