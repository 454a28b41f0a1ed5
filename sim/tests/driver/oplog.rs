//! Oplog tailing through the driver: entry shapes, TailableAwait, dead
//! cursors and CappedPositionLost.

use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::StreamExt;
use mongo_sim::SimOptions;
use mongodb::options::CursorType;

use crate::support::{sim, sim_with};

async fn latest_ts(client: &mongodb::Client) -> Timestamp {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .unwrap();
    last.get_timestamp("ts").unwrap()
}

#[tokio::test]
async fn oplog_entries_have_real_shapes() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    let oplog = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let mut entries: Vec<Document> = Vec::new();
    let mut cursor = oplog.find(doc! {"ns": "d.c"}).await.unwrap();
    while let Some(e) = cursor.next().await {
        entries.push(e.unwrap());
    }
    let ops: Vec<&str> = entries.iter().map(|e| e.get_str("op").unwrap()).collect();
    assert_eq!(ops, ["i", "u", "d"]);
    for e in &entries {
        assert_eq!(e.get_i64("v"), Ok(2));
        assert_eq!(e.get_i64("t"), Ok(1));
        assert!(
            matches!(e.get("ui"), Some(Bson::Binary(b)) if b.subtype == bson::spec::BinarySubtype::Uuid)
        );
        assert!(e.get_datetime("wall").is_ok());
    }
    let u = &entries[1];
    assert_eq!(u.get_document("o").unwrap().get_i32("$v"), Ok(2));
    assert_eq!(u.get_document("o2").unwrap(), &doc! {"_id": 1});
    let create: Document = oplog
        .find_one(doc! {"op": "c", "o.create": "c"})
        .await
        .unwrap()
        .expect("implicit create is logged");
    assert_eq!(create.get_str("ns"), Ok("d.$cmd"));
    s.stop().await;
}

#[tokio::test]
async fn tailable_await_cursor_follows_new_writes() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = latest_ts(&s.client).await;
    let oplog = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let mut tail = oplog
        .find(doc! {"ts": {"$gte": start}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let first = tail.next().await.unwrap().unwrap();
    assert_eq!(first.get_timestamp("ts"), Ok(start));
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for i in 1..=3 {
                coll.insert_one(doc! {"_id": i}).await.unwrap();
            }
        })
    };
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("tail delivers new entries")
            .unwrap()
            .unwrap();
        ids.push(e.get_document("o").unwrap().get_i32("_id").unwrap());
    }
    writer.await.unwrap();
    assert_eq!(ids, [1, 2, 3]);
    s.stop().await;
}

/// mongod keeps a tailable cursor whose first batch is empty unless the collection it tails
/// has no records (`shouldSaveCursor`, SERVER-13955): an oplog tailer that starts after the
/// last entry gets a live cursor, and its getMore delivers what comes next.
#[tokio::test]
async fn tailable_query_matching_nothing_yet_keeps_a_live_cursor() {
    let s = sim().await;
    let db = s.client.database("local");
    let reply = db
        .run_command(doc! {
            "find": "oplog.rs", "filter": {"ns": "nope.nothing"},
            "tailable": true, "awaitData": true,
        })
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert!(cursor.get_array("firstBatch").unwrap().is_empty());
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    s.client
        .database("nope")
        .collection::<Document>("nothing")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "oplog.rs", "maxTimeMS": 2000})
        .await
        .unwrap();
    let next = more
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert!(!next.is_empty(), "{more}");
    // `batchSize: 0`: an empty first batch and a live cursor for a plain find as well.
    let reply = s
        .client
        .database("nope")
        .run_command(doc! {"find": "nothing", "batchSize": 0})
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert!(cursor.get_array("firstBatch").unwrap().is_empty());
    assert_ne!(cursor.get_i64("id").unwrap(), 0);
    s.stop().await;
}

#[tokio::test]
async fn rolled_over_tail_fails_with_capped_position_lost() {
    let s = sim_with(SimOptions {
        oplog_max_entries: 5,
        ..SimOptions::default()
    })
    .await;
    let db = s.client.database("local");
    let reply = db
        .run_command(doc! {
            "find": "oplog.rs", "filter": {}, "tailable": true, "awaitData": true, "batchSize": 1,
        })
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_many((0..20).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let err = db
        .run_command(doc! {"getMore": id, "collection": "oplog.rs", "maxTimeMS": 100})
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 136),
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}
