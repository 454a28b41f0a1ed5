//! CRUD, cursors and write errors through the driver.

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};

use crate::support::sim;

#[tokio::test]
async fn hello_handshake_and_ping_work_with_replica_set_uri() {
    let s = sim().await;
    let reply = s
        .client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    assert_eq!(reply.get_f64("ok"), Ok(1.0));
    let info = s
        .client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .unwrap();
    assert!(info.get_str("version").unwrap().starts_with("7.0."));
    s.stop().await;
}

#[tokio::test]
async fn insert_find_update_delete_round_trip() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "n": i * 10}))
        .await
        .unwrap();
    let found: Vec<Document> = coll
        .find(doc! {"n": {"$gte": 50}})
        .sort(doc! {"n": -1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 5);
    assert_eq!(found[0].get_i32("n"), Ok(90));

    let r = coll
        .update_many(doc! {"n": {"$lt": 30}}, doc! {"$set": {"small": true}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (3, 3));
    let r = coll
        .update_one(doc! {"_id": 100}, doc! {"$set": {"n": 1}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(r.upserted_id, Some(bson::Bson::Int32(100)));
    let d = coll.delete_many(doc! {"small": true}).await.unwrap();
    assert_eq!(d.deleted_count, 3);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 8);
    let one = coll.find_one(doc! {"_id": 5}).await.unwrap().unwrap();
    assert_eq!(one.get_i32("n"), Ok(50));
    s.stop().await;
}

#[tokio::test]
async fn small_batches_are_fetched_with_get_more() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_many((0..250).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let all: Vec<Document> = coll
        .find(doc! {})
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(all[249].get_i32("_id"), Ok(249));
    s.stop().await;
}

#[tokio::test]
async fn duplicate_key_is_a_write_error_11000() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let err = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    match *err.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref e)) => {
            assert_eq!(e.code, 11000);
            assert!(e
                .message
                .contains("E11000 duplicate key error collection: d.c index: _id_"));
        }
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn find_one_and_update_returns_the_new_document() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    let after = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$inc": {"v": 1}})
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.get_i32("v"), Ok(2));
    s.stop().await;
}
