//! The full-sync reader over concurrent `_id` ranges: every document of a collection with
//! mixed `_id` types is yielded exactly once, also when a connection drops mid-read.

use std::collections::HashMap;

use bson::{doc, oid::ObjectId, Bson, Document};
use mongo_sim::SimOptions;
use tributary::event::Namespace;
use tributary::source::snapshot::SnapshotReader;

const PER_TYPE: usize = 1400;

/// A simulator with `shop.mixed`: 1400 string, 1400 integer and 1400 ObjectId `_id`s.
async fn seeded() -> (mongo_sim::SimHandle, mongodb::Client, Vec<Bson>) {
    let sim = mongo_sim::start(SimOptions::default()).await.unwrap();
    let mongo = mongodb::Client::with_uri_str(sim.uri()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..PER_TYPE {
        ids.push(Bson::String(format!("s{i:04}")));
        ids.push(Bson::Int32(i as i32 * 7 - 4000));
        ids.push(Bson::ObjectId(ObjectId::new()));
    }
    let docs: Vec<Document> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| doc! {"_id": id.clone(), "n": n as i64})
        .collect();
    mongo
        .database("shop")
        .collection::<Document>("mixed")
        .insert_many(docs)
        .await
        .unwrap();
    (sim, mongo, ids)
}

/// Reads everything and asserts each of `ids` came exactly once.
async fn assert_exactly_once(reader: &mut SnapshotReader, ids: &[Bson], chunk: usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(docs) = reader.next_chunk().await.unwrap() {
        assert!(!docs.is_empty() && docs.len() <= chunk);
        for d in docs {
            let id = Bson::try_from(d.get("_id").unwrap().unwrap()).unwrap();
            *seen.entry(format!("{:?}", Some(&id))).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "documents read more than once: {twice:?}");
    let missing: Vec<_> = ids
        .iter()
        .map(|id| format!("{:?}", Some(id)))
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "{} documents never read", missing.len());
    assert_eq!(seen.len(), ids.len());
}

#[tokio::test]
async fn four_readers_yield_every_mixed_type_document_once() {
    let (sim, mongo, ids) = seeded().await;
    let mut reader = SnapshotReader::new(mongo, Namespace::new("shop", "mixed"), 100);
    assert_exactly_once(&mut reader, &ids, 100).await;
    assert_eq!(reader.ranges(), Some(4));
    sim.shutdown().await;
}

#[tokio::test]
async fn small_collections_use_one_reader() {
    let (sim, mongo, ids) = seeded().await;
    let mut reader = SnapshotReader::new(mongo, Namespace::new("shop", "mixed"), 5000);
    assert_exactly_once(&mut reader, &ids, 5000).await;
    assert_eq!(reader.ranges(), Some(1));
    sim.shutdown().await;
}

async fn drop_one_get_more(mongo: &mongodb::Client) {
    mongo
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "closeConnection": true},
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_connection_mid_read_still_yields_each_once() {
    let (sim, mongo, ids) = seeded().await;
    drop_one_get_more(&mongo).await;
    let mut reader = SnapshotReader::new(mongo, Namespace::new("shop", "mixed"), 100);
    assert_exactly_once(&mut reader, &ids, 100).await;
    assert_eq!(reader.ranges(), Some(4));
    sim.shutdown().await;
}

/// One reader over the whole collection resumes after an integer `_id`: the strings and
/// ObjectIds after it (other type brackets) must still be read.
#[tokio::test]
async fn resuming_one_reader_after_an_integer_keeps_later_types() {
    let (sim, mongo, ids) = seeded().await;
    drop_one_get_more(&mongo).await;
    let mut reader =
        SnapshotReader::new(mongo, Namespace::new("shop", "mixed"), 100).with_readers(1);
    assert_exactly_once(&mut reader, &ids, 100).await;
    assert_eq!(reader.ranges(), Some(1));
    sim.shutdown().await;
}
