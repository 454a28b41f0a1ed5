//! The per-namespace count of `updateLookup` reads (`SimHandle::update_lookups`): one per
//! update event with `fullDocument: updateLookup`, none with post-images.

use std::time::Duration;

use bson::{doc, Document};
use futures::StreamExt;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;

use crate::support::sim;

type Events = ChangeStream<ChangeStreamEvent<Document>>;

async fn next(stream: &mut Events) -> ChangeStreamEvent<Document> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event arrives")
        .expect("stream still open")
        .expect("no error")
}

#[tokio::test]
async fn update_lookup_counts_one_read_per_update_event_and_post_images_none() {
    let s = sim().await;
    let db = s.client.database("d");
    db.run_command(doc! {"create": "imaged", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let plain = db.collection::<Document>("plain");
    let imaged = db.collection::<Document>("imaged");
    let mut lookups = plain
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();
    let mut images = imaged
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .await
        .unwrap();
    for (coll, stream, ns) in [
        (&plain, &mut lookups, "d.plain"),
        (&imaged, &mut images, "d.imaged"),
    ] {
        coll.insert_one(doc! {"_id": 1, "a": 0}).await.unwrap();
        assert_eq!(next(stream).await.operation_type, OperationType::Insert);
        assert_eq!(
            s.handle.update_lookups(ns),
            0,
            "{ns}: inserts need no lookup"
        );
        for a in 1..=3 {
            coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": a}})
                .await
                .unwrap();
            let e = next(stream).await;
            assert_eq!(e.operation_type, OperationType::Update);
            assert_eq!(e.full_document, Some(doc! {"_id": 1, "a": a}), "{ns}");
            let expected = if ns == "d.plain" { a as u64 } else { 0 };
            assert_eq!(
                s.handle.update_lookups(ns),
                expected,
                "{ns} after update {a}"
            );
        }
    }
    // Two updates before the stream reads: the lookup sees the document as it is now (both
    // events carry the latest version), the post-image the version of each update.
    for coll in [&plain, &imaged] {
        for a in [10, 11] {
            coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": a}})
                .await
                .unwrap();
        }
    }
    for a in [10, 11] {
        let e = next(&mut lookups).await;
        assert_eq!(e.full_document, Some(doc! {"_id": 1, "a": 11}));
        let e = next(&mut images).await;
        assert_eq!(e.full_document, Some(doc! {"_id": 1, "a": a}));
    }
    assert_eq!(s.handle.update_lookups("d.plain"), 5);
    assert_eq!(s.handle.update_lookups("d.imaged"), 0);
    s.stop().await;
}
