//! `$sample` through the driver: sizes, no document twice on either of
//! mongod's two paths, randomness across runs, other stages around it, and
//! the server's errors.

use std::collections::{BTreeSet, HashSet};

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::Collection;

use crate::support::sim;

async fn fill(coll: &Collection<Document>, n: i32) {
    coll.insert_many((0..n).map(|i| doc! {"_id": i, "n": i, "even": i % 2 == 0}))
        .await
        .unwrap();
}

async fn run(coll: &Collection<Document>, pipeline: Vec<Document>) -> Vec<Document> {
    coll.aggregate(pipeline)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn ids(docs: &[Document]) -> Vec<i32> {
    docs.iter().map(|d| d.get_i32("_id").unwrap()).collect()
}

/// Asserts `docs` holds no `_id` twice and returns them as a set.
fn distinct(docs: &[Document]) -> BTreeSet<i32> {
    let set: BTreeSet<i32> = ids(docs).into_iter().collect();
    assert_eq!(
        set.len(),
        docs.len(),
        "a document came back twice: {docs:?}"
    );
    set
}

async fn command_code(coll: &Collection<Document>, pipeline: Vec<Document>) -> i32 {
    let err = coll.aggregate(pipeline).await.unwrap_err();
    match *err.kind {
        ErrorKind::Command(ref e) => e.code,
        ref other => panic!("not a command error: {other:?}"),
    }
}

/// A small collection (at most 100 documents) is always sampled by a random
/// sort: exactly `size` distinct documents, or all of them.
#[tokio::test]
async fn sample_of_a_small_collection_is_distinct_and_random() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("small");
    fill(&coll, 10).await;
    let mut seen_sets = HashSet::new();
    let mut seen_docs = BTreeSet::new();
    let mut first_positions = BTreeSet::new();
    for _ in 0..200 {
        let got = run(&coll, vec![doc! {"$sample": {"size": 3}}]).await;
        assert_eq!(got.len(), 3);
        let set = distinct(&got);
        assert!(set.iter().all(|id| (0..10).contains(id)));
        first_positions.insert(ids(&got)[0]);
        seen_docs.extend(set.iter().copied());
        seen_sets.insert(set);
    }
    // 200 draws of 3 out of 10: every document shows up, and in first place,
    // and far more than one combination (each of the 120 has p = 1/120).
    assert_eq!(seen_docs.len(), 10);
    assert_eq!(first_positions.len(), 10);
    assert!(
        seen_sets.len() > 30,
        "only {} combinations",
        seen_sets.len()
    );
    // Asking for more than there is returns everything once, shuffled.
    let orders: HashSet<Vec<i32>> =
        futures::future::join_all((0..5).map(|_| run(&coll, vec![doc! {"$sample": {"size": 50}}])))
            .await
            .iter()
            .map(|got| {
                assert_eq!(distinct(got), (0..10).collect());
                ids(got)
            })
            .collect();
    assert!(orders.len() > 1, "five shuffles of 10 all came out alike");
    s.stop().await;
}

/// A big collection with a small size takes mongod's random-cursor path,
/// which de-duplicates: still `size` distinct documents.
#[tokio::test]
async fn sample_of_a_big_collection_uses_distinct_random_picks() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("big");
    fill(&coll, 2000).await;
    let mut union = BTreeSet::new();
    let mut runs = HashSet::new();
    for size in [1, 20, 100] {
        // 100 is exactly 5%: still the random cursor, as in mongod.
        for _ in 0..5 {
            let got = run(&coll, vec![doc! {"$sample": {"size": size}}]).await;
            assert_eq!(got.len(), size as usize);
            let set = distinct(&got);
            union.extend(set.iter().copied());
            if size > 1 {
                runs.insert(set);
            }
        }
    }
    assert_eq!(runs.len(), 10, "two samples picked the same documents");
    assert!(
        union.len() > 400,
        "picks cover only {} documents",
        union.len()
    );
    // Above 5% the random sort takes over; results are alike in shape.
    let got = run(&coll, vec![doc! {"$sample": {"size": 500}}]).await;
    assert_eq!(distinct(&got).len(), 500);
    // A batch size smaller than the sample: the rest comes with getMore.
    let got: Vec<Document> = coll
        .aggregate(vec![doc! {"$sample": {"size": 90}}])
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(distinct(&got).len(), 90);
    s.stop().await;
}

#[tokio::test]
async fn sample_works_with_stages_before_and_after_it() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("mixed");
    fill(&coll, 300).await;
    // Following stages see only the sampled documents.
    let got = run(
        &coll,
        vec![
            doc! {"$sample": {"size": 10}},
            doc! {"$match": {"even": true}},
            doc! {"$project": {"n": 1, "_id": 1}},
        ],
    )
    .await;
    assert!(got.len() <= 10);
    distinct(&got);
    for d in &got {
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["_id", "n"]);
        assert_eq!(d.get_i32("n").unwrap() % 2, 0);
    }
    let counted = run(
        &coll,
        vec![doc! {"$sample": {"size": 12}}, doc! {"$count": "k"}],
    )
    .await;
    assert_eq!(counted, vec![doc! {"k": 12}]);
    // A preceding stage: the sample is drawn from its output only.
    for _ in 0..20 {
        let got = run(
            &coll,
            vec![
                doc! {"$match": {"n": {"$lt": 6}}},
                doc! {"$sample": {"size": 4}},
            ],
        )
        .await;
        assert_eq!(got.len(), 4);
        assert!(distinct(&got).iter().all(|id| *id < 6));
    }
    let got = run(
        &coll,
        vec![
            doc! {"$match": {"n": {"$lt": 2}}},
            doc! {"$sample": {"size": 5}},
        ],
    )
    .await;
    assert_eq!(distinct(&got), BTreeSet::from([0, 1]));
    // Two samples in a row, and a sample of nothing.
    let got = run(
        &coll,
        vec![
            doc! {"$sample": {"size": 50}},
            doc! {"$sample": {"size": 5}},
        ],
    )
    .await;
    assert_eq!(distinct(&got).len(), 5);
    let none = s.client.database("d").collection::<Document>("missing");
    assert!(run(&none, vec![doc! {"$sample": {"size": 5}}])
        .await
        .is_empty());
    s.stop().await;
}

#[tokio::test]
async fn sample_refuses_what_mongod_refuses() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("errors");
    fill(&coll, 3).await;
    let cases = [
        (doc! {"$sample": 5}, 28745),
        (doc! {"$sample": {"size": "5"}}, 28746),
        (doc! {"$sample": {"size": 0}}, 28747),
        (doc! {"$sample": {"size": -1}}, 28747),
        (doc! {"$sample": {"size": 0.5}}, 28747),
        (doc! {"$sample": {"size": 2, "seed": 1}}, 28748),
        (doc! {"$sample": {}}, 28749),
    ];
    for (stage, code) in cases {
        assert_eq!(
            command_code(&coll, vec![stage.clone()]).await,
            code,
            "{stage}"
        );
        // Also when it is not the first stage.
        assert_eq!(
            command_code(&coll, vec![doc! {"$match": {}}, stage.clone()]).await,
            code,
            "{stage} second"
        );
    }
    // Fractional sizes are truncated, as mongod's safeNumberLong does.
    assert_eq!(
        run(&coll, vec![doc! {"$sample": {"size": 2.9}}])
            .await
            .len(),
        2
    );
    // Not allowed after $changeStream.
    let err = coll
        .watch()
        .pipeline(vec![doc! {"$sample": {"size": 1}}])
        .await
        .unwrap_err();
    match *err.kind {
        ErrorKind::Command(ref e) => assert_eq!(e.code, 20, "{e:?}"),
        ref other => panic!("not a command error: {other:?}"),
    }
    s.stop().await;
}
