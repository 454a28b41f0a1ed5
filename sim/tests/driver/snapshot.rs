//! `readConcern: {level: "snapshot"}` outside a transaction, as MongoDB 5.0+ answers it: the
//! reply says the cluster time read at (`atClusterTime`), and a read at an earlier time sees
//! the collection as it was then (inserts, updates, deletes and committed transactions after
//! it undone), through every batch of its cursor. DDL on the collection since that time is
//! refused with 239 SnapshotTooOld.

use bson::{doc, Bson, Document, Timestamp};
use futures::TryStreamExt;

use crate::support::sim;

fn at(reply: &Document) -> Option<Timestamp> {
    reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_timestamp("atClusterTime").ok())
}

fn code(err: &mongodb::error::Error) -> i32 {
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => c.code,
        _ => panic!("expected a command error, got {err}"),
    }
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
    let plain = db.run_command(doc! {"find": "c"}).await.unwrap();
    assert_eq!(at(&plain), None, "a plain find has no atClusterTime");

    let agg = doc! {"aggregate": "c", "pipeline": [], "cursor": {},
    "readConcern": {"level": "snapshot"}};
    assert_eq!(at(&db.run_command(agg).await.unwrap()), Some(t));
    let distinct = doc! {"distinct": "c", "key": "_id", "readConcern": {"level": "snapshot"}};
    let reply = db.run_command(distinct).await.unwrap();
    assert_eq!(
        reply.get_timestamp("atClusterTime").ok(),
        Some(t),
        "distinct says its time at the top level: {reply}"
    );

    // At an explicit earlier time, after writes to this and another collection: the old version.
    let mut at_t = doc! {"find": "c", "sort": {"_id": 1}};
    at_t.insert(
        "readConcern",
        doc! {"level": "snapshot", "atClusterTime": Bson::Timestamp(t)},
    );
    db.collection::<Document>("other")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 9}).await.unwrap();
    let reply = db.run_command(at_t).await.unwrap();
    assert_eq!(at(&reply), Some(t));
    let ids: Vec<i32> = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().get_i32("_id").unwrap())
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4], "the insert after t is not seen");
    let later = at(&db.run_command(find).await.unwrap()).unwrap();
    assert!(later > t, "a new read is at a later time");
    s.stop().await;
}

/// A snapshot session (the driver's own: its first read fixes the time, later reads send it)
/// sees every kind of write made after that time undone, in find, aggregate and distinct.
#[tokio::test]
async fn a_snapshot_session_reads_the_collection_as_it_was() {
    let s = sim().await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("c");
    coll.insert_many((1..=300).map(|i| doc! {"_id": i, "x": i, "tag": "old"}))
        .await
        .unwrap();
    let mut session = s
        .client
        .start_session()
        .snapshot(true)
        .await
        .expect("snapshot session");
    let first = coll
        .find_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    assert_eq!(first.unwrap().get_i32("x").unwrap(), 1);

    // After the session's time: an update, a delete, an insert, a replacement, a transaction.
    coll.update_many(doc! {"_id": {"$lte": 100}}, doc! {"$set": {"tag": "new"}})
        .await
        .unwrap();
    coll.delete_many(doc! {"_id": {"$gt": 250}}).await.unwrap();
    coll.insert_one(doc! {"_id": 1000, "x": 1000, "tag": "new"})
        .await
        .unwrap();
    coll.replace_one(doc! {"_id": 2}, doc! {"x": -2, "tag": "new"})
        .await
        .unwrap();
    let mut txn = s.client.start_session().await.unwrap();
    txn.start_transaction().await.unwrap();
    coll.delete_one(doc! {"_id": 3})
        .session(&mut txn)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1001, "x": 1001, "tag": "new"})
        .session(&mut txn)
        .await
        .unwrap();
    txn.commit_transaction().await.unwrap();

    // Live: the writes are there.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 250 - 1 + 2);
    assert_eq!(
        coll.count_documents(doc! {"tag": "new"}).await.unwrap(),
        99 + 2
    );

    // In the session: the collection as it was, across several batches of one cursor.
    let mut cursor = coll
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(7)
        .session(&mut session)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(d) = cursor.next(&mut session).await {
        seen.push(d.unwrap());
    }
    assert_eq!(seen.len(), 300);
    for (i, d) in seen.iter().enumerate() {
        let id = i as i32 + 1;
        assert_eq!(d, &doc! {"_id": id, "x": id, "tag": "old"});
    }
    let olds: Vec<Document> = coll
        .aggregate(vec![doc! {"$match": {"tag": "old"}}, doc! {"$count": "n"}])
        .session(&mut session)
        .await
        .unwrap()
        .stream(&mut session)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(olds, vec![doc! {"n": 300}]);
    let tags = coll
        .distinct("tag", doc! {})
        .session(&mut session)
        .await
        .unwrap();
    assert_eq!(tags, vec![Bson::String("old".into())]);
    drop(cursor);
    s.stop().await;
}

/// Creating, dropping or renaming the collection after the time asked for makes that time
/// unreadable (239), as do times the oplog no longer reaches.
#[tokio::test]
async fn ddl_after_the_time_is_snapshot_too_old() {
    let s = sim().await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let reply = db
        .run_command(doc! {"find": "c", "readConcern": {"level": "snapshot"}})
        .await
        .unwrap();
    let t = at(&reply).unwrap();
    let at_t = doc! {"find": "c", "readConcern": {"level": "snapshot", "atClusterTime": t}};
    coll.drop().await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let err = db.run_command(at_t).await.unwrap_err();
    assert_eq!(code(&err), 239, "{err}");
    assert!(err.to_string().contains("d.c"), "{err}");
    s.stop().await;
}
