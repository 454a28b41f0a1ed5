//! Multi-document transactions: isolation, commit as one applyOps entry,
//! abort, and the change events a committed transaction produces.

use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;

use crate::support::sim;

async fn apply_ops_entries(client: &mongodb::Client) -> Vec<Document> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let mut cursor = oplog
        .find(doc! {"op": "c", "ns": "admin.$cmd"})
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(e) = cursor.next().await {
        out.push(e.unwrap());
    }
    out
}

#[tokio::test]
async fn committed_transaction_is_invisible_until_commit_and_logged_once() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0, "v": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 0}, doc! {"$set": {"v": 1}})
        .session(&mut session)
        .await
        .unwrap();
    let inside = coll
        .find_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    assert!(inside.is_some(), "a transaction reads its own writes");
    assert!(
        coll.find_one(doc! {"_id": 1}).await.unwrap().is_none(),
        "others do not"
    );
    session.commit_transaction().await.unwrap();

    assert!(coll.find_one(doc! {"_id": 1}).await.unwrap().is_some());
    let entries = apply_ops_entries(&s.client).await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    let ops = e.get_document("o").unwrap().get_array("applyOps").unwrap();
    assert_eq!(ops.len(), 2);
    assert!(e.get_document("lsid").unwrap().contains_key("uid"));
    assert!(matches!(e.get("txnNumber"), Some(Bson::Int64(_))));
    assert!(e.get_document("prevOpTime").is_ok());

    let a = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        a.cluster_time, b.cluster_time,
        "events of one transaction share clusterTime"
    );
    assert_ne!(a.id, b.id);
    assert!(a.lsid.is_some() && a.txn_number.is_some());
    s.stop().await;
}

#[tokio::test]
async fn aborted_transaction_leaves_no_trace() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 0})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    assert!(apply_ops_entries(&s.client).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn duplicate_key_inside_a_transaction_aborts_it() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    assert!(coll
        .insert_one(doc! {"_id": 0})
        .session(&mut session)
        .await
        .is_err());
    let err = coll
        .insert_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap_err();
    assert!(err.contains_label("TransientTransactionError"), "{err}");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    s.stop().await;
}
