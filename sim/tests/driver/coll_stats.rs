//! `$collStats` as mongod 7.0 answers it: `count` and `storageStats` (sizes in BSON bytes,
//! `scale`), mongod's errors for a bad spec, a later position (40602) and a missing collection
//! (26), the counters mongo-sim does not keep refused, and one document per shard through
//! mongos.

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongo_sim::SimOptions;

use crate::support::{sim, sim_with};

async fn stats(
    db: &mongodb::Database,
    coll: &str,
    spec: Document,
) -> mongodb::error::Result<Vec<Document>> {
    db.collection::<Document>(coll)
        .aggregate(vec![doc! {"$collStats": spec}])
        .await?
        .try_collect()
        .await
}

fn code(e: &mongodb::error::Error) -> i32 {
    match *e.kind {
        mongodb::error::ErrorKind::Command(ref c) => c.code,
        _ => panic!("expected a command error, got {e}"),
    }
}

#[tokio::test]
async fn count_and_storage_stats_of_a_collection() {
    let s = sim().await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "pad": "x".repeat(100)}))
        .await
        .unwrap();
    let out = stats(&db, "c", doc! {"count": {}, "storageStats": {}})
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(d.get_str("ns").unwrap(), "d.c");
    assert!(d.get_str("host").unwrap().contains(':'), "{d}");
    assert!(d.get_datetime("localTime").is_ok());
    assert_eq!(d.get_i64("count").unwrap(), 100);
    let st = d.get_document("storageStats").unwrap();
    assert_eq!(st.get_i64("count").unwrap(), 100);
    let size = st.get_i64("size").unwrap();
    // 100 documents of `_id` (int) and a 100-character string: 124 BSON bytes each.
    assert_eq!(size, 100 * 124, "{st}");
    assert_eq!(st.get_i64("avgObjSize").unwrap(), 124);
    assert!(!st.get_bool("capped").unwrap());
    assert_eq!(st.get_i32("nindexes").unwrap(), 1);
    assert!(st.get_document("indexSizes").unwrap().contains_key("_id_"));
    assert_eq!(st.get_i32("scaleFactor").unwrap(), 1);

    let scaled = stats(&db, "c", doc! {"storageStats": {"scale": 1024}})
        .await
        .unwrap();
    let st = scaled[0].get_document("storageStats").unwrap();
    assert_eq!(st.get_i64("size").unwrap(), size / 1024);
    assert_eq!(st.get_i32("scaleFactor").unwrap(), 1024);
    assert!(!scaled[0].contains_key("count"), "only what was asked");

    // A later stage sees the one document.
    let n: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$collStats": {"count": {}}},
            doc! {"$project": {"_id": 0, "n": "$count"}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(n, vec![doc! {"n": 100i64}]);
    s.stop().await;
}

#[tokio::test]
async fn bad_specs_positions_and_missing_collections_fail_as_on_mongod() {
    let s = sim().await;
    let db = s.client.database("d");
    db.collection::<Document>("c")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let run = |pipeline: Vec<Document>| {
        let db = db.clone();
        async move {
            db.run_command(doc! {"aggregate": "c", "pipeline": pipeline, "cursor": {}})
                .await
                .unwrap_err()
        }
    };
    assert_eq!(
        code(&run(vec![doc! {"$collStats": Bson::Null}]).await),
        5447000
    );
    assert_eq!(
        code(&run(vec![doc! {"$collStats": {"count": 1}}]).await),
        14
    );
    assert_eq!(
        code(&run(vec![doc! {"$collStats": {"storageStats": {"scale": -5}}}]).await),
        51024
    );
    assert_eq!(
        code(&run(vec![doc! {"$collStats": {"storageStats": {"scale": "x"}}}]).await),
        14
    );
    assert_eq!(
        code(&run(vec![doc! {"$collStats": {"nope": {}}}]).await),
        40415
    );
    let late = run(vec![doc! {"$match": {}}, doc! {"$collStats": {}}]).await;
    assert_eq!(code(&late), 40602);
    // Counters mongo-sim does not keep: refused, not answered with zeros.
    assert_eq!(
        code(&run(vec![doc! {"$collStats": {"latencyStats": {}}}]).await),
        2
    );

    let missing = stats(&db, "nothing", doc! {"storageStats": {}})
        .await
        .unwrap_err();
    assert_eq!(code(&missing), 26);
    assert!(
        missing
            .to_string()
            .contains("Collection [d.nothing] not found."),
        "{missing}"
    );
    let bare = stats(&db, "nothing", doc! {}).await.unwrap();
    assert_eq!(bare.len(), 1, "no statistic asked: no collection needed");
    s.stop().await;
}

#[tokio::test]
async fn through_mongos_one_document_per_shard() {
    let s = sim_with(SimOptions {
        shards: 2,
        ..SimOptions::default()
    })
    .await;
    s.client
        .database("admin")
        .run_command(doc! {"shardCollection": "d.h", "key": {"_id": "hashed"}})
        .await
        .unwrap();
    let db = s.client.database("d");
    db.collection::<Document>("h")
        .insert_many((0..200).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let mut out = stats(&db, "h", doc! {"count": {}}).await.unwrap();
    out.sort_by_key(|d| d.get_str("shard").unwrap_or_default().to_owned());
    let shards: Vec<&str> = out.iter().map(|d| d.get_str("shard").unwrap()).collect();
    assert_eq!(shards, ["shard0", "shard1"]);
    let total: i64 = out.iter().map(|d| d.get_i64("count").unwrap()).sum();
    assert_eq!(total, 200, "{out:?}");
    s.stop().await;
}
