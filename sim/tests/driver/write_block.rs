//! `setUserWriteBlockMode` through the driver: while blocked every user
//! write fails with 371 on every connection, writes that would change
//! nothing and writes to admin/config/local pass, reads and change streams
//! go on, transactions are refused, and unblocking lets writes through.

use std::time::Duration;

use bson::{doc, Document};
use futures::{StreamExt, TryStreamExt};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::{Client, Collection};

use crate::support::sim;

const BLOCKED: i32 = 371;

async fn set_blocked(client: &Client, on: bool) {
    let reply = client
        .database("admin")
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": on})
        .await
        .unwrap();
    assert_eq!(reply.get_f64("ok"), Ok(1.0));
}

async fn block_mode(client: &Client) -> i32 {
    let status = client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    status
        .get_document("repl")
        .unwrap()
        .get_i32("userWriteBlockMode")
        .unwrap()
}

/// The server's code for a failed write: a write error or a command error.
fn code(err: &Error) -> i32 {
    match *err.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref e)) => e.code,
        ErrorKind::Command(ref e) => e.code,
        ErrorKind::InsertMany(ref e) => e
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code)
            .unwrap_or(-1),
        ErrorKind::BulkWrite(ref e) => e.write_errors.values().next().map_or(-1, |w| w.code),
        _ => -1,
    }
}

fn assert_blocked<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Ok(v) => panic!("{what} was not blocked: {v:?}"),
        Err(e) => {
            assert_eq!(code(&e), BLOCKED, "{what}: {e}");
            assert!(e.to_string().contains("User writes blocked"), "{what}: {e}");
        }
    }
}

#[tokio::test]
async fn blocked_user_writes_fail_with_371_on_every_connection() {
    let s = sim().await;
    let db = s.client.database("shop");
    let coll: Collection<Document> = db.collection("orders");
    coll.insert_many([doc! {"_id": 1, "v": 1}, doc! {"_id": 2, "v": 2}])
        .await
        .unwrap();
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"v": 1}).build())
        .await
        .unwrap();
    assert_eq!(block_mode(&s.client).await, 1);

    // Blocked through one client, seen by another.
    let other = Client::with_uri_str(s.handle.uri()).await.unwrap();
    set_blocked(&other, true).await;
    set_blocked(&other, true).await; // twice is fine
    assert_eq!(block_mode(&s.client).await, 2);
    let mut stream = coll.watch().await.unwrap();

    assert_blocked("insert", coll.insert_one(doc! {"_id": 3}).await);
    let many = coll
        .insert_many([doc! {"_id": 4}, doc! {"_id": 5}])
        .ordered(false)
        .await;
    match many.as_ref().map_err(|e| &*e.kind) {
        Err(ErrorKind::InsertMany(e)) => {
            let errors = e.write_errors.as_ref().unwrap();
            assert_eq!(errors.len(), 2, "unordered: every document fails");
            assert!(errors.iter().all(|w| w.code == BLOCKED));
        }
        other => panic!("insert_many: {other:?}"),
    }
    assert_blocked(
        "update",
        coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 9}})
            .await,
    );
    assert_blocked(
        "upsert",
        coll.update_one(doc! {"_id": 7}, doc! {"$set": {"v": 7}})
            .upsert(true)
            .await,
    );
    assert_blocked("replace", coll.replace_one(doc! {"_id": 1}, doc! {}).await);
    assert_blocked("delete", coll.delete_many(doc! {}).await);
    assert_blocked(
        "findAndModify",
        coll.find_one_and_update(doc! {"_id": 1}, doc! {"$inc": {"v": 1}})
            .await,
    );
    assert_blocked(
        "findAndModify remove",
        coll.find_one_and_delete(doc! {"_id": 1}).await,
    );
    assert_blocked("create", db.create_collection("fresh").await);
    assert_blocked(
        "insert into a new collection",
        db.collection::<Document>("fresh").insert_one(doc! {}).await,
    );
    assert_blocked("drop", coll.drop().await);
    assert_blocked("dropDatabase", db.drop().await);
    assert_blocked(
        "createIndexes",
        coll.create_index(mongodb::IndexModel::builder().keys(doc! {"w": 1}).build())
            .await,
    );
    assert_blocked("dropIndexes", coll.drop_index("v_1").await);
    assert_blocked(
        "collMod",
        db.run_command(doc! {"collMod": "orders", "validationLevel": "off"})
            .await,
    );
    assert_blocked(
        "renameCollection",
        s.client
            .database("admin")
            .run_command(doc! {"renameCollection": "shop.orders", "to": "shop.renamed"})
            .await,
    );

    // What would change nothing is no write, so it is not refused (as on
    // mongod, whose check runs where a write happens).
    let r = coll
        .update_one(doc! {"_id": 99}, doc! {"$set": {"v": 1}})
        .await
        .unwrap();
    assert_eq!(r.matched_count, 0);
    let r = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"v": 1}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 0));
    assert_eq!(
        coll.delete_many(doc! {"_id": 99})
            .await
            .unwrap()
            .deleted_count,
        0
    );
    db.collection::<Document>("missing").drop().await.unwrap();
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"v": 1}).build())
        .await
        .unwrap();

    // Internal databases stay writable.
    for name in ["admin", "config", "local"] {
        let internal = s
            .client
            .database(name)
            .collection::<Document>("cutover_probe");
        internal.insert_one(doc! {"_id": 1}).await.unwrap();
        internal
            .update_one(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
            .await
            .unwrap();
        internal.delete_one(doc! {"_id": 1}).await.unwrap();
    }

    // Reads go on.
    let all: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    let sampled: Vec<Document> = coll
        .aggregate(vec![doc! {"$sample": {"size": 1}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(sampled.len(), 1);

    // Unblocked: writes pass again and the open change stream sees them
    // (and none of the refused ones).
    set_blocked(&s.client, false).await;
    set_blocked(&s.client, false).await; // twice is fine
    assert_eq!(block_mode(&other).await, 1);
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert_eq!(event.document_key, Some(doc! {"_id": 3}));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);

    // The block lives where mongod keeps it, with mongod's oplog entries.
    let oplog = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let entries: Vec<Document> = oplog
        .find(doc! {"ns": "config.user_writes_critical_sections"})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ops: Vec<&str> = entries.iter().map(|e| e.get_str("op").unwrap()).collect();
    assert_eq!(ops, vec!["i", "d"]);
    assert_eq!(
        entries[0].get_document("o").unwrap(),
        &doc! {"_id": "", "blockNewUserShardedDDL": false, "blockUserWrites": true}
    );
    other.shutdown().await;
    s.stop().await;
}

#[tokio::test]
async fn transactions_are_refused_while_writes_are_blocked() {
    let s = sim().await;
    let coll: Collection<Document> = s.client.database("shop").collection("orders");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();

    // A transaction that wrote before the block cannot commit after it.
    let mut early = s.client.start_session().await.unwrap();
    early.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut early)
        .await
        .unwrap();
    set_blocked(&s.client, true).await;
    assert_blocked("commit", early.commit_transaction().await);
    assert!(coll.find_one(doc! {"_id": 1}).await.unwrap().is_none());

    // A write inside a transaction started while blocked fails; so does
    // its commit, and nothing lands.
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    let read = coll
        .find_one(doc! {"_id": 0})
        .session(&mut session)
        .await
        .unwrap();
    assert!(read.is_some(), "reads inside a transaction still work");
    assert_blocked(
        "insert in a transaction",
        coll.insert_one(doc! {"_id": 2}).session(&mut session).await,
    );
    assert!(session.commit_transaction().await.is_err());

    // A read-only transaction commits.
    session.start_transaction().await.unwrap();
    coll.find_one(doc! {}).session(&mut session).await.unwrap();
    session.commit_transaction().await.unwrap();

    set_blocked(&s.client, false).await;
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 3})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    let ids: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, vec![doc! {"_id": 0}, doc! {"_id": 3}]);
    s.stop().await;
}

#[tokio::test]
async fn set_user_write_block_mode_refuses_bad_arguments() {
    let s = sim().await;
    let admin = s.client.database("admin");
    let cases = [
        (doc! {"setUserWriteBlockMode": 1}, 40414),
        (doc! {"setUserWriteBlockMode": 1, "global": 1}, 14),
        (
            doc! {"setUserWriteBlockMode": 1, "global": true, "reason": "x"},
            40415,
        ),
    ];
    for (cmd, want) in cases {
        let err = admin.run_command(cmd.clone()).await.unwrap_err();
        assert_eq!(code(&err), want, "{cmd}: {err}");
    }
    assert_eq!(block_mode(&s.client).await, 1, "nothing was blocked");
    // mongod 7.0 runs it against any database (adminOnly is false).
    s.client
        .database("shop")
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": true})
        .await
        .unwrap();
    assert_eq!(block_mode(&s.client).await, 2);
    s.stop().await;
}
