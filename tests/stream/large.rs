//! Events over 16 MB: a 15 MiB document inserted and then updated streams into Postgres
//! through `$changeStreamSplitLargeEvent` (the update's `updateLookup` event, about 17 MiB,
//! comes in two fragments that the source joins before normalising).

use bson::doc;
use tributary::config::SourceKind;

use super::World;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_mib_document_inserted_and_updated_streams_through_split_events() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    // 13 MiB nobody maps plus a 2 MiB mapped column: the update replaces the column, so its
    // event holds the 15 MiB document and the 2 MiB `updateDescription`.
    w.orders()
        .insert_one(doc! {"_id": "big", "qty": 1, "name": "a".repeat(2 * MIB), "blob": "b".repeat(13 * MIB)})
        .await
        .unwrap();
    w.orders()
        .update_one(
            doc! {"_id": "big"},
            doc! {"$set": {"qty": 2, "name": "c".repeat(2 * MIB)}},
        )
        .await
        .unwrap();
    w.sync_point("end").await;
    let row =
        w.db.client
            .query_one(
                "SELECT qty, length(name), left(name, 1) FROM public.orders WHERE id = 'big'",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(2));
    assert_eq!(row.get::<_, Option<i32>>(1), Some(2 * MIB as i32));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("c"));
    w.assert_equal().await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
