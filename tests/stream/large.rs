//! Events over 16 MB: a 15 MiB document inserted and then updated streams into Postgres
//! through `$changeStreamSplitLargeEvent` (the update's `updateLookup` event, about 17 MiB,
//! comes in two fragments that the source joins before normalising).

use bson::doc;
use mongo_sim::SimOptions;
use tributary::config::SourceKind;

use super::World;
use crate::support::wait_until;

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

/// MongoDB 6.0 (wire version 17) has no split stage for Tributary to use: the ~17 MiB event
/// fails the read with 10334, is dead-lettered in its place, and the stream goes on; the next
/// start's retry of open letters then reads the current document and repairs the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_split_stage_a_too_large_event_is_dead_lettered_and_the_stream_goes_on() {
    let older = SimOptions {
        max_wire_version: 17,
        ..SimOptions::default()
    };
    let w = World::with(SourceKind::ChangeStream, 100, older, "").await;
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
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
    w.orders()
        .insert_one(doc! {"_id": "after", "qty": 5})
        .await
        .unwrap();
    w.sync_point("end").await;
    // The insert before it and the insert after it are applied; the update is not.
    assert_eq!(big_qty(&w).await, Some(1));
    let after =
        w.db.client
            .query("SELECT 1 FROM public.orders WHERE id = 'after'", &[])
            .await
            .unwrap();
    assert_eq!(after.len(), 1);
    let letter = w
        .db
        .client
        .query_one(
            "SELECT namespace, document_key::text, error, coalesce(document, 'null') = 'null' FROM tributary.dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(letter.get::<_, String>(0), "shop.orders");
    assert_eq!(letter.get::<_, String>(1), "\"big\"");
    assert!(letter.get::<_, String>(2).contains("over 16 MB"));
    assert!(letter.get::<_, bool>(3));
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // The retry at start reads the document (15 MiB, within the limit) and repairs the row.
    let (stop, task) = w.start_sync();
    wait_until(60, "the retried letter repairs the row", || async {
        big_qty(&w).await == Some(2)
    })
    .await;
    let open =
        w.db.client
            .query_one(
                "SELECT count(*) FROM tributary.dead_letters WHERE resolved_at IS NULL",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(open.get::<_, i64>(0), 0);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

async fn big_qty(w: &World) -> Option<i32> {
    w.db.client
        .query_one("SELECT qty FROM public.orders WHERE id = 'big'", &[])
        .await
        .unwrap()
        .get::<_, Option<i32>>(0)
}
