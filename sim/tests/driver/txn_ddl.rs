//! `create` and `createIndexes` inside transactions as MongoDB 7 runs them: part of the
//! transaction (in the commit's applyOps, invisible before, gone on abort), and 263 where the
//! server refuses (new indexes on a collection that existed before, or is not empty).

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, Result as DriverResult};
use mongodb::{ClientSession, Database};

use crate::support::sim;

async fn collection_names(db: &Database) -> Vec<String> {
    db.list_collection_names().await.unwrap()
}

async fn index_names(db: &Database, coll: &str) -> Vec<String> {
    db.collection::<Document>(coll)
        .list_index_names()
        .await
        .unwrap_or_default()
}

fn code_and_message<T: std::fmt::Debug>(r: DriverResult<T>) -> (i32, String) {
    match *r.expect_err("refused").kind {
        ErrorKind::Command(c) => (c.code, c.message),
        other => panic!("not a command error: {other:?}"),
    }
}

async fn run_in(db: &Database, s: &mut ClientSession, cmd: Document) -> DriverResult<Document> {
    db.run_command(cmd).session(s).await
}

#[tokio::test]
async fn create_and_create_indexes_commit_as_part_of_the_transaction() {
    let s = sim().await;
    let db = s.client.database("d");
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    run_in(&db, &mut session, doc! {"create": "made"})
        .await
        .unwrap();
    let reply = run_in(
        &db,
        &mut session,
        doc! {"createIndexes": "made", "indexes": [{"key": {"x": 1}, "name": "x_1"}]},
    )
    .await
    .unwrap();
    assert_eq!(reply.get_bool("createdCollectionAutomatically"), Ok(false));
    assert_eq!(reply.get_i32("numIndexesAfter"), Ok(2));
    // An index on a collection this transaction does not have yet creates it too.
    let reply = run_in(
        &db,
        &mut session,
        doc! {"createIndexes": "indexed", "indexes": [{"key": {"y": 1}, "name": "y_1"}]},
    )
    .await
    .unwrap();
    assert_eq!(reply.get_bool("createdCollectionAutomatically"), Ok(true));
    db.collection::<Document>("made")
        .insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    let inside = db
        .collection::<Document>("made")
        .find_one(doc! {})
        .session(&mut session)
        .await
        .unwrap();
    assert_eq!(
        inside,
        Some(doc! {"_id": 1}),
        "the transaction sees its collection"
    );

    assert!(collection_names(&db).await.is_empty(), "nobody else does");
    assert!(index_names(&db, "made").await.is_empty());
    session.commit_transaction().await.unwrap();

    let mut names = collection_names(&db).await;
    names.sort();
    assert_eq!(names, ["indexed", "made"]);
    assert_eq!(index_names(&db, "made").await, ["_id_", "x_1"]);
    assert_eq!(index_names(&db, "indexed").await, ["_id_", "y_1"]);
    let made = db.collection::<Document>("made");
    assert_eq!(made.find_one(doc! {}).await.unwrap(), Some(doc! {"_id": 1}));

    // One applyOps with the DDL first, under the transaction's lsid and txnNumber.
    let oplog = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let entries: Vec<Document> = oplog
        .find(doc! {"ns": {"$in": ["admin.$cmd", "d.$cmd"]}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        entries.len(),
        1,
        "no DDL entry outside the transaction: {entries:?}"
    );
    let e = &entries[0];
    assert!(e.get_document("lsid").is_ok() && e.get_i64("txnNumber").is_ok());
    let ops = e.get_document("o").unwrap().get_array("applyOps").unwrap();
    let shapes: Vec<(String, String)> = ops
        .iter()
        .map(|op| {
            let op = op.as_document().unwrap();
            let o = op.get_document("o").unwrap();
            let what = o.keys().next().cloned().unwrap_or_default();
            (op.get_str("op").unwrap().to_string(), what)
        })
        .collect();
    let expected = [
        ("c", "create"),
        ("c", "createIndexes"),
        ("c", "create"),
        ("c", "createIndexes"),
        ("i", "_id"),
    ];
    assert_eq!(
        shapes,
        expected.map(|(a, b)| (a.to_string(), b.to_string())),
    );
    s.stop().await;
}

#[tokio::test]
async fn an_aborted_transaction_leaves_no_collection_behind() {
    let s = sim().await;
    let db = s.client.database("d");
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    run_in(&db, &mut session, doc! {"create": "explicit"})
        .await
        .unwrap();
    db.collection::<Document>("implicit")
        .insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert!(collection_names(&db).await.is_empty());
    // The names are free again.
    db.create_collection("explicit").await.unwrap();
    assert_eq!(collection_names(&db).await, ["explicit"]);
    s.stop().await;
}

#[tokio::test]
async fn new_indexes_on_existing_or_non_empty_collections_are_refused_with_263() {
    let s = sim().await;
    let db = s.client.database("d");
    db.collection::<Document>("old")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let mut session = s.client.start_session().await.unwrap();

    session.start_transaction().await.unwrap();
    // An index that exists already builds nothing and is allowed.
    let reply = run_in(
        &db,
        &mut session,
        doc! {"createIndexes": "old", "indexes": [{"key": {"_id": 1}, "name": "_id_"}]},
    )
    .await
    .unwrap();
    assert_eq!(reply.get_i32("numIndexesAfter"), Ok(1));
    let refused = run_in(
        &db,
        &mut session,
        doc! {"createIndexes": "old", "indexes": [{"key": {"x": 1}, "name": "x_1"}]},
    )
    .await;
    assert_eq!(
        code_and_message(refused),
        (
            263,
            "Cannot create new indexes on existing collection d.old in a multi-document \
             transaction."
                .to_string()
        )
    );
    let _ = session.abort_transaction().await;

    session.start_transaction().await.unwrap();
    run_in(&db, &mut session, doc! {"create": "fresh"})
        .await
        .unwrap();
    db.collection::<Document>("fresh")
        .insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    let refused = run_in(
        &db,
        &mut session,
        doc! {"createIndexes": "fresh", "indexes": [{"key": {"x": 1}, "name": "x_1"}]},
    )
    .await;
    assert_eq!(
        code_and_message(refused),
        (
            263,
            "Cannot create new indexes on non-empty collection d.fresh in a multi-document \
             transaction."
                .to_string()
        )
    );
    let _ = session.abort_transaction().await;

    session.start_transaction().await.unwrap();
    let exists = run_in(&db, &mut session, doc! {"create": "old"}).await;
    assert_eq!(code_and_message(exists).0, 48);
    let _ = session.abort_transaction().await;
    assert_eq!(index_names(&db, "old").await, ["_id_"]);
    assert_eq!(collection_names(&db).await, ["old"]);
    s.stop().await;
}
