//! The 16 MB limits through the driver: documents refused on insert and on
//! growth, an event too large failing the stream with 10334, and
//! `$changeStreamSplitLargeEvent` fragments and resuming from them.

use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::error::ErrorKind;
use mongodb::options::FullDocumentType;

use crate::support::sim;

const MIB: usize = 1024 * 1024;

type Raw = ChangeStream<Document>;

async fn next(stream: &mut Raw) -> Document {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event arrives")
        .expect("stream still open")
        .expect("no error")
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

#[tokio::test]
async fn documents_over_16_mib_are_refused_on_insert_and_growth() {
    let s = sim().await;
    let db = s.client.database("d");
    // Just over the limit: the driver lets it through (it allows the 16 KiB
    // of command overhead), mongod refuses it with 2 BadValue.
    let big = doc! {"_id": 1, "s": "x".repeat(16 * MIB)};
    let reply = db
        .run_command(doc! {"insert": "c", "documents": [big]})
        .await
        .unwrap();
    let errors = reply.get_array("writeErrors").unwrap();
    let first = errors[0].as_document().unwrap();
    assert_eq!(first.get_i32("code").unwrap(), 2);
    let msg = first.get_str("errmsg").unwrap();
    assert!(
        msg.starts_with("object to insert too large. size in bytes: 167772"),
        "{msg}"
    );
    assert!(msg.ends_with(", max size: 16777216"), "{msg}");
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 2, "a": "x".repeat(9 * MIB)})
        .await
        .unwrap();
    let e = coll
        .update_one(doc! {"_id": 2}, doc! {"$set": {"b": "y".repeat(8 * MIB)}})
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(17419), "{e}");
    let e = coll
        .update_one(
            doc! {"_id": 3},
            doc! {"$set": {"b": "y".repeat(16 * MIB - 100)}, "$setOnInsert": {"c": "z".repeat(1000)}},
        )
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(17420), "{e}");
    // Nothing of the refused writes is stored.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    s.stop().await;
}

/// A 15 MiB document whose 2 MiB `note` is replaced: with `updateLookup`
/// the update's event holds both, about 17 MiB.
async fn large_update(coll: &mongodb::Collection<Document>) {
    coll.insert_one(doc! {"_id": 1, "blob": "b".repeat(13 * MIB), "note": "n".repeat(2 * MIB)})
        .await
        .unwrap();
    coll.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"note": "m".repeat(2 * MIB)}},
    )
    .await
    .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
}

#[tokio::test]
async fn an_event_over_the_limit_fails_the_stream_with_10334() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();
    large_update(&coll).await;
    // The insert (15 MiB) and the update share the getMore that fails: the
    // server fails the whole command when it reaches the update.
    let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), Some(10334), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("Executor error during getMore :: caused by :: BSONObj size: "),
        "{msg}"
    );
    assert!(msg.contains("is invalid. Size must be between 0 and 16793600(16MB) First element: _id: { _data: \"82"), "{msg}");
    // No `ResumableChangeStreamError` label: the driver does not resume.
    assert!(!e.contains_label("ResumableChangeStreamError"));
    s.stop().await;
}

#[tokio::test]
async fn split_large_event_returns_fragments_and_resumes_from_one() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let split = vec![doc! {"$changeStreamSplitLargeEvent": {}}];
    let watch = || {
        coll.watch()
            .pipeline(split.clone())
            .full_document(FullDocumentType::UpdateLookup)
    };
    let mut stream = watch().await.unwrap().with_type::<Document>();
    large_update(&coll).await;
    let insert = next(&mut stream).await;
    // 15 MiB: under the limit, returned whole.
    assert_eq!(insert.get_str("operationType").unwrap(), "insert");
    assert!(!insert.contains_key("splitEvent"));
    let first = next(&mut stream).await;
    let second = next(&mut stream).await;
    assert_eq!(
        first.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 1, "of": 2}
    );
    assert_eq!(
        second.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 2, "of": 2}
    );
    // Small fields and the 2 MiB updateDescription, then the 15 MiB document.
    let keys = |d: &Document| d.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&first),
        vec![
            "_id",
            "splitEvent",
            "wallTime",
            "clusterTime",
            "operationType",
            "documentKey",
            "ns",
            "updateDescription"
        ]
    );
    assert_eq!(keys(&second), vec!["_id", "splitEvent", "fullDocument"]);
    assert_eq!(first.get_str("operationType").unwrap(), "update");
    assert_eq!(
        second
            .get_document("fullDocument")
            .unwrap()
            .get_str("note")
            .unwrap()
            .len(),
        2 * MIB
    );
    let token = |d: &Document| d.get_document("_id").unwrap().clone();
    assert_ne!(token(&first), token(&second));
    let after = next(&mut stream).await;
    assert_eq!(after.get_str("operationType").unwrap(), "insert");
    assert_eq!(after.get_document("documentKey").unwrap(), &doc! {"_id": 2});

    // Resuming after the first fragment returns the second, then the rest.
    let t1: ResumeToken = bson::from_document(token(&first)).unwrap();
    let mut resumed = watch()
        .resume_after(t1)
        .await
        .unwrap()
        .with_type::<Document>();
    let again = next(&mut resumed).await;
    assert_eq!(again, second);
    assert_eq!(
        next(&mut resumed)
            .await
            .get_document("documentKey")
            .unwrap(),
        &doc! {"_id": 2}
    );
    // After the last fragment comes the next event.
    let t2: ResumeToken = bson::from_document(token(&second)).unwrap();
    let mut resumed = watch()
        .resume_after(t2)
        .await
        .unwrap()
        .with_type::<Document>();
    assert_eq!(
        next(&mut resumed)
            .await
            .get_document("documentKey")
            .unwrap(),
        &doc! {"_id": 2}
    );
    // A fragment's token needs the same pipeline.
    let t1: ResumeToken = bson::from_document(token(&first)).unwrap();
    let e = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .resume_after(t1)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(280), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn the_split_stage_must_be_last() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let e = coll
        .watch()
        .pipeline(vec![
            doc! {"$changeStreamSplitLargeEvent": {}},
            doc! {"$match": {"operationType": "insert"}},
        ])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(7182802), "{e}");
    let e = coll
        .watch()
        .pipeline(vec![
            doc! {"$changeStreamSplitLargeEvent": {"x": Bson::Int32(1)}},
        ])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(7182800), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn an_older_wire_version_has_no_split_stage() {
    let s = crate::support::sim_with(mongo_sim::SimOptions {
        max_wire_version: 17,
        ..mongo_sim::SimOptions::default()
    })
    .await;
    let hello = s
        .client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert_eq!(hello.get_i32("maxWireVersion").unwrap(), 17);
    let coll = s.client.database("d").collection::<Document>("c");
    let e = coll
        .watch()
        .pipeline(vec![doc! {"$changeStreamSplitLargeEvent": {}}])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(40324), "{e}");
    s.stop().await;
}
