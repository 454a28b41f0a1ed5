//! `readConcern: {level: "snapshot"}` outside a transaction, as MongoDB 5.0+ answers it: the
//! cursor reply says the cluster time read at (`atClusterTime`); an explicit earlier time is
//! served only while the collection is unchanged since, else 239 SnapshotTooOld.

use bson::{doc, Bson, Document, Timestamp};

use crate::support::sim;

fn at(reply: &Document) -> Option<Timestamp> {
    reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_timestamp("atClusterTime").ok())
}

#[tokio::test]
async fn snapshot_reads_report_their_cluster_time() {
    let s = sim().await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();

    let find = doc! {"find": "c", "sort": {"_id": 1}, "limit": 3, "singleBatch": true,
    "readConcern": {"level": "snapshot"}};
    let reply = db.run_command(find.clone()).await.unwrap();
    let t = at(&reply).expect("a snapshot find says its atClusterTime");
    let batch = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert_eq!(batch.len(), 3);
    // The time is that of the last write the read saw.
    let plain = db.run_command(doc! {"find": "c"}).await.unwrap();
    assert_eq!(at(&plain), None, "a plain find has no atClusterTime");

    let agg = doc! {"aggregate": "c", "pipeline": [], "cursor": {},
    "readConcern": {"level": "snapshot"}};
    assert_eq!(at(&db.run_command(agg).await.unwrap()), Some(t));

    // At an explicit time: fine while unchanged, refused once the collection changed.
    let mut at_t = find.clone();
    at_t.insert(
        "readConcern",
        doc! {"level": "snapshot", "atClusterTime": Bson::Timestamp(t)},
    );
    assert_eq!(at(&db.run_command(at_t.clone()).await.unwrap()), Some(t));
    db.collection::<Document>("other")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    assert_eq!(
        at(&db.run_command(at_t.clone()).await.unwrap()),
        Some(t),
        "another collection's write leaves this one's version"
    );
    coll.insert_one(doc! {"_id": 9}).await.unwrap();
    let err = db.run_command(at_t).await.unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 239, "{err}"),
        _ => panic!("expected SnapshotTooOld, got {err}"),
    }
    let later = at(&db.run_command(find).await.unwrap()).unwrap();
    assert!(later > t, "a new read is at a later time");
    s.stop().await;
}
