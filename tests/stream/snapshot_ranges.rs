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

/// On a replica set (no `config.chunks` for the collection) the split points come from a
/// `$sample`; `skip` walks, the fallback, give the same kind of boundaries. Either way the
/// ranges they make hold every document once, and no range holds more than half of them.
#[tokio::test]
async fn sampled_and_skipped_split_points_divide_the_collection_evenly() {
    use tributary::source::split_points::{self, SplitMethod};
    let (sim, mongo, ids) = seeded().await;
    let ns = Namespace::new("shop", "mixed");
    let count = ids.len() as u64;
    assert_eq!(
        split_points::find(&mongo, &ns, count, 4).await.map(|f| f.1),
        Some(SplitMethod::Sample)
    );
    assert_eq!(
        split_points::find_with(&mongo, &ns, count, 4, SplitMethod::Chunks)
            .await
            .unwrap(),
        None,
        "an unsharded collection has no chunks"
    );
    for method in [SplitMethod::Sample, SplitMethod::Skip] {
        let bounds = split_points::find_with(&mongo, &ns, count, 4, method)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bounds.len(), 3, "{method}: {bounds:?}");
        let mut reader = SnapshotReader::new(mongo.clone(), ns.clone(), 100)
            .with_plan(bounds.clone(), Vec::new());
        let mut per_range = [0usize; 4];
        let mut seen = 0;
        while let Some(piece) = reader.next_piece().await.unwrap() {
            per_range[piece.range] += piece.docs.len();
            seen += piece.docs.len();
        }
        assert_eq!(seen, ids.len(), "{method}");
        assert!(
            per_range.iter().all(|&n| n < ids.len() / 2),
            "{method}: uneven ranges {per_range:?} from {bounds:?}"
        );
    }
    sim.shutdown().await;
}
