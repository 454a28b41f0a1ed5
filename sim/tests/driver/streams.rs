//! Change streams through the driver: the three levels, resume options,
//! invalidation, lost history, and the driver's automatic resume.

use std::time::Duration;

use bson::{doc, Document};
use futures::StreamExt;
use mongo_sim::SimOptions;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;

use crate::support::{sim, sim_with};

type Events = ChangeStream<ChangeStreamEvent<Document>>;

async fn next(stream: &mut Events) -> ChangeStreamEvent<Document> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event arrives")
        .expect("stream still open")
        .expect("no error")
}

fn inserted_id(e: &ChangeStreamEvent<Document>) -> i32 {
    e.document_key.as_ref().unwrap().get_i32("_id").unwrap()
}

#[tokio::test]
async fn collection_stream_sees_inserts_updates_deletes_in_order() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    let e = next(&mut stream).await;
    assert_eq!(e.operation_type, OperationType::Insert);
    assert_eq!(e.full_document, Some(doc! {"_id": 1, "a": 1}));
    let ns = e.ns.as_ref().unwrap();
    assert_eq!((ns.db.as_str(), ns.coll.as_deref()), ("d", Some("c")));
    assert_eq!(
        next(&mut stream).await.operation_type,
        OperationType::Update
    );
    assert_eq!(
        next(&mut stream).await.operation_type,
        OperationType::Delete
    );
    s.stop().await;
}

#[tokio::test]
async fn database_and_cluster_streams_see_every_collection() {
    let s = sim().await;
    let mut db_stream = s.client.database("d").watch().await.unwrap();
    let mut cluster_stream = s.client.watch().await.unwrap();
    s.client
        .database("d")
        .collection::<Document>("a")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    s.client
        .database("d")
        .collection::<Document>("b")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    s.client
        .database("other")
        .collection::<Document>("x")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    assert_eq!(inserted_id(&next(&mut db_stream).await), 1);
    assert_eq!(inserted_id(&next(&mut db_stream).await), 2);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(inserted_id(&next(&mut cluster_stream).await));
    }
    assert_eq!(seen, [1, 2, 3]);
    s.stop().await;
}

#[tokio::test]
async fn resume_after_token_continues_after_that_event() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let second = {
        next(&mut stream).await;
        next(&mut stream).await
    };
    drop(stream);
    let mut resumed = coll.watch().resume_after(second.id.clone()).await.unwrap();
    assert_eq!(inserted_id(&next(&mut resumed).await), 2);
    let mut started = coll.watch().start_after(second.id).await.unwrap();
    assert_eq!(inserted_id(&next(&mut started).await), 2);
    s.stop().await;
}

#[tokio::test]
async fn database_and_cluster_streams_resume_after_a_token() {
    let s = sim().await;
    let db = s.client.database("d");
    let mut db_stream = db.watch().await.unwrap();
    let mut cluster_stream = s.client.watch().await.unwrap();
    for (i, c) in ["a", "b", "c"].iter().enumerate() {
        db.collection::<Document>(c)
            .insert_one(doc! {"_id": i as i32})
            .await
            .unwrap();
    }
    let first_db = next(&mut db_stream).await.id;
    let first_cluster = next(&mut cluster_stream).await.id;
    drop((db_stream, cluster_stream));
    let mut db_resumed = db.watch().resume_after(first_db).await.unwrap();
    assert_eq!(inserted_id(&next(&mut db_resumed).await), 1);
    assert_eq!(inserted_id(&next(&mut db_resumed).await), 2);
    let mut cluster_resumed = s.client.watch().resume_after(first_cluster).await.unwrap();
    assert_eq!(inserted_id(&next(&mut cluster_resumed).await), 1);
    s.stop().await;
}

#[tokio::test]
async fn start_at_operation_time_replays_from_that_time() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let reply = s
        .client
        .database("d")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    let t0 = reply.get_timestamp("operationTime").unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut stream = coll.watch().start_at_operation_time(t0).await.unwrap();
    // t0 is the time of the insert of _id 0, so it is included.
    assert_eq!(inserted_id(&next(&mut stream).await), 0);
    assert_eq!(inserted_id(&next(&mut stream).await), 1);
    s.stop().await;
}

#[tokio::test]
async fn drop_invalidates_a_collection_stream() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.drop().await.unwrap();
    assert_eq!(next(&mut stream).await.operation_type, OperationType::Drop);
    assert_eq!(
        next(&mut stream).await.operation_type,
        OperationType::Invalidate
    );
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after invalidate");
    s.stop().await;
}

#[tokio::test]
async fn resuming_before_the_oldest_oplog_entry_is_history_lost() {
    let s = sim_with(SimOptions {
        oplog_max_entries: 10,
        ..SimOptions::default()
    })
    .await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let token = next(&mut stream).await.id;
    drop(stream);
    coll.insert_many((1..50).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let err = coll.watch().resume_after(token).await.unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 286),
        ref other => panic!("unexpected error {other:?}"),
    }
    assert!(err.contains_label("NonResumableChangeStreamError"));
    s.stop().await;
}

async fn fail_next_get_more(client: &mongodb::Client, data: Document) {
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": data,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn driver_resumes_after_a_closed_connection_on_get_more() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(inserted_id(&next(&mut stream).await), 1);
    fail_next_get_more(
        &s.client,
        doc! {"failCommands": ["getMore"], "closeConnection": true},
    )
    .await;
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(inserted_id(&next(&mut stream).await), 2);
    s.stop().await;
}

#[tokio::test]
async fn driver_resumes_after_an_error_labelled_resumable() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(inserted_id(&next(&mut stream).await), 1);
    fail_next_get_more(
        &s.client,
        doc! {"failCommands": ["getMore"], "errorCode": 50, "errorLabels": ["ResumableChangeStreamError"]},
    )
    .await;
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(inserted_id(&next(&mut stream).await), 2);
    // The server labels this code itself (failGetMoreAfterCursorCheckout).
    s.client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failGetMoreAfterCursorCheckout",
            "mode": {"times": 1},
            "data": {"errorCode": 10107},
        })
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    assert_eq!(inserted_id(&next(&mut stream).await), 3);
    s.stop().await;
}

#[tokio::test]
async fn driver_does_not_resume_without_the_label() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    fail_next_get_more(
        &s.client,
        doc! {"failCommands": ["getMore"], "errorCode": 6},
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 6),
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn idle_get_more_advances_the_post_batch_resume_token() {
    let s = sim().await;
    let db = s.client.database("d");
    let open = db
        .run_command(doc! {"aggregate": "c", "pipeline": [{"$changeStream": {}}], "cursor": {}})
        .await
        .unwrap();
    let cursor = open.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    assert_eq!(cursor.get_str("ns"), Ok("d.c"));
    let t0 = cursor
        .get_document("postBatchResumeToken")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    db.collection::<Document>("other")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 50})
        .await
        .unwrap();
    let cursor = more.get_document("cursor").unwrap();
    assert!(cursor.get_array("nextBatch").unwrap().is_empty());
    assert_eq!(cursor.get_i64("id"), Ok(id));
    let t1 = cursor
        .get_document("postBatchResumeToken")
        .unwrap()
        .get_str("_data")
        .unwrap();
    assert!(t1 > t0.as_str(), "{t1} should be after {t0}");
    s.stop().await;
}

#[tokio::test]
async fn projecting_out_the_id_fails_with_280() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll
        .watch()
        .pipeline([doc! {"$project": {"_id": 0}}])
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 280),
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}
