//! CRUD, cursors and write errors through the driver.

use bson::{doc, Document, RawDocumentBuf};
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

/// insertMany sends its documents as an OP_MSG sequence, which the server
/// keeps as bytes; a `documents` array in the command body is decoded. Both
/// must store, log and refuse exactly alike.
#[tokio::test]
async fn sequence_inserts_match_inserts_of_a_documents_array() {
    let s = sim().await;
    let db = s.client.database("d");
    for coll in ["seq", "body"] {
        db.run_command(doc! {
            "createIndexes": coll,
            "indexes": [{"key": {"email": 1}, "name": "email_1", "unique": true}],
        })
        .await
        .unwrap();
    }
    db.run_command(doc! {"create": "plain"}).await.unwrap();
    let docs = vec![
        doc! {"_id": 1, "email": "a", "nested": {"x": [1, 2.5, "s"]}},
        doc! {"email": "b", "_id": 2},
        doc! {"_id": 1, "email": "c"},
        doc! {"_id": 3, "email": "a"},
        doc! {"_id": {"k": 4}, "dup": 1, "d": bson::Decimal128::from_bytes([1; 16])},
    ];
    let seq_err = db
        .collection::<Document>("seq")
        .insert_many(docs.clone())
        .ordered(false)
        .await
        .unwrap_err();
    let ErrorKind::InsertMany(seq_err) = *seq_err.kind else {
        panic!("unexpected error {seq_err:?}");
    };
    let body = db
        .run_command(doc! {"insert": "body", "documents": docs.clone(), "ordered": false})
        .await
        .unwrap();
    let seq_errors: Vec<Document> = seq_err
        .write_errors
        .unwrap()
        .into_iter()
        .map(|e| {
            let errmsg = e.message.replace("d.seq", "d.body");
            doc! {"index": e.index as i32, "code": e.code, "errmsg": errmsg}
        })
        .collect();
    // (The full reply bytes are compared in wire.rs.)
    let body_errors: Vec<Document> = body
        .get_array("writeErrors")
        .unwrap()
        .iter()
        .map(|e| {
            let e = e.as_document().unwrap();
            let (index, code) = (e.get_i32("index").unwrap(), e.get_i32("code").unwrap());
            doc! {"index": index, "code": code, "errmsg": e.get_str("errmsg").unwrap()}
        })
        .collect();
    assert_eq!(seq_errors, body_errors);
    assert_eq!(body.get_i32("n"), Ok(3));
    // Without secondary indexes (the path that never decodes).
    let plain = db.collection::<Document>("plain");
    plain.insert_many(docs[..2].to_vec()).await.unwrap();
    let again = plain.insert_many(docs[..1].to_vec()).await.unwrap_err();
    let ErrorKind::InsertMany(again) = *again.kind else {
        panic!("unexpected error {again:?}");
    };
    let e = &again.write_errors.unwrap()[0];
    assert_eq!((e.index, e.code), (0, 11000));
    assert_eq!(
        e.message,
        "E11000 duplicate key error collection: d.plain index: _id_ dup key: { \"_id\": 1 }"
    );
    // The oplog and the stored documents are the same, byte for byte.
    let oplog = s
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let mut logged = std::collections::HashMap::new();
    for ns in ["d.seq", "d.body"] {
        let entries: Vec<RawDocumentBuf> = oplog
            .find(doc! {"ns": ns, "op": "i"})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let o: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| e.get_document("o").unwrap().as_bytes().to_vec())
            .collect();
        let stored: Vec<Vec<u8>> = db
            .collection::<RawDocumentBuf>(&ns[2..])
            .find(doc! {})
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect();
        let mut sorted = o.clone();
        sorted.sort();
        let mut stored_sorted = stored;
        stored_sorted.sort();
        assert_eq!(sorted, stored_sorted);
        logged.insert(ns, o);
    }
    assert_eq!(logged["d.seq"].len(), 3);
    assert_eq!(logged["d.seq"], logged["d.body"]);
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

#[tokio::test]
async fn list_databases_names_admin_config_and_local_like_a_replica_set_member() {
    let s = sim().await;
    assert_eq!(
        s.client.list_database_names().await.unwrap(),
        ["admin", "config", "local"]
    );
    s.client
        .database("shop")
        .collection::<Document>("orders")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(
        s.client.list_database_names().await.unwrap(),
        ["admin", "config", "local", "shop"]
    );
    s.stop().await;
}

#[tokio::test]
async fn regex_with_pcre_look_around_filters_list_collections_and_finds() {
    let s = sim().await;
    let db = s.client.database("d");
    for name in ["orders", "system.js", "people"] {
        db.create_collection(name).await.unwrap();
    }
    let mut names = db
        .list_collection_names()
        .filter(doc! {"name": {"$regex": r"^(?!system\.)"}})
        .await
        .unwrap();
    names.sort();
    assert_eq!(names, ["orders", "people"]);
    let coll = db.collection::<Document>("people");
    coll.insert_many([doc! {"_id": 1, "n": "anna"}, doc! {"_id": 2, "n": "carl"}])
        .await
        .unwrap();
    // A back-reference: names whose first letter comes back at the end.
    let found: Vec<Document> = coll
        .find(doc! {"n": {"$regex": r"^(\w).*\1$"}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found, [doc! {"_id": 1, "n": "anna"}]);
    let e = coll
        .find_one(doc! {"n": {"$regex": "a("}})
        .await
        .expect_err("a pattern PCRE refuses");
    match *e.kind {
        ErrorKind::Command(c) => assert_eq!(c.code, 51091),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

fn command_code<T: std::fmt::Debug>(r: mongodb::error::Result<T>) -> i32 {
    match *r.expect_err("refused").kind {
        ErrorKind::Command(c) => c.code,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn find_min_max_need_a_hint_and_bound_its_key() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    coll.insert_many((0..10).map(|j| doc! {"_id": j, "j": j, "k": 9 - j}))
        .await
        .unwrap();
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"j": 1}).build())
        .await
        .unwrap();
    let js = |docs: Vec<Document>| -> Vec<i32> {
        docs.iter().map(|d| d.get_i32("j").unwrap()).collect()
    };
    let found: Vec<Document> = coll
        .find(doc! {})
        .min(doc! {"j": 3})
        .max(doc! {"j": 6})
        .hint(mongodb::options::Hint::Keys(doc! {"j": 1}))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(js(found), [3, 4, 5]);
    let no_hint = coll.find(doc! {}).min(doc! {"j": 3}).await;
    assert_eq!(command_code(no_hint), 51173);
    let wrong_fields = coll
        .find(doc! {})
        .max(doc! {"k": 3})
        .hint(mongodb::options::Hint::Keys(doc! {"j": 1}))
        .await;
    assert_eq!(command_code(wrong_fields), 51174);
    s.stop().await;
}

#[tokio::test]
async fn find_return_key_and_show_record_id() {
    let s = sim().await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("c");
    coll.insert_many([doc! {"_id": 2, "x": 22}, doc! {"_id": 1, "x": 11}])
        .await
        .unwrap();
    let first_batch = |reply: Document| -> Vec<Document> {
        let cursor = reply.get_document("cursor").unwrap();
        cursor
            .get_array("firstBatch")
            .unwrap()
            .iter()
            .map(|d| d.as_document().unwrap().clone())
            .collect()
    };
    // Sorted by `_id`: the `_id` index serves, its keys come back.
    let reply = db
        .run_command(
            doc! {"find": "c", "sort": {"_id": 1}, "returnKey": true, "showRecordId": true},
        )
        .await
        .unwrap();
    assert_eq!(first_batch(reply), [doc! {"_id": 1}, doc! {"_id": 2}]);
    // No index can serve: a collection scan has no keys.
    let reply = db
        .run_command(doc! {"find": "c", "filter": {"x": 11}, "returnKey": true})
        .await
        .unwrap();
    assert_eq!(first_batch(reply), [doc! {}]);
    // `$recordId`: insertion order.
    let reply = db
        .run_command(doc! {"find": "c", "sort": {"_id": 1}, "showRecordId": true})
        .await
        .unwrap();
    assert_eq!(
        first_batch(reply),
        [
            doc! {"_id": 1, "x": 11, "$recordId": 2i64},
            doc! {"_id": 2, "x": 22, "$recordId": 1i64}
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn dollar_prefixed_fields_inside_id_are_refused_with_52() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("c");
    let refused = coll.insert_one(doc! {"_id": {"$a": 1}}).await;
    assert_eq!(command_code(refused), 52);
    coll.insert_one(doc! {"_id": {"a.b": 1}}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    s.stop().await;
}

#[tokio::test]
async fn documents_stage_feeds_a_collectionless_aggregate() {
    let s = sim().await;
    let db = s.client.database("d");
    let out: Vec<Document> = db
        .aggregate([
            doc! {"$documents": [{"_id": 1, "x": 1}, {"_id": 2, "x": 2}]},
            doc! {"$match": {"x": {"$gt": 1}}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, [doc! {"_id": 2, "x": 2}]);
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let merged = db
        .aggregate([
            doc! {"$documents": [{"_id": 2, "x": 1}]},
            doc! {"$merge": {"into": "c", "whenMatched": "fail"}},
        ])
        .await;
    match *merged.expect_err("duplicate _id").kind {
        ErrorKind::Command(c) => assert_eq!(c.code, 11000),
        other => panic!("{other:?}"),
    }
    let on_collection = coll.aggregate([doc! {"$documents": [{"a": 1}]}]).await;
    assert_eq!(command_code(on_collection), 73);
    let misplaced = db
        .aggregate([doc! {"$match": {}}, doc! {"$documents": [{"a": 1}]}])
        .await;
    assert_eq!(command_code(misplaced), 40602);
    let not_objects = db.aggregate([doc! {"$documents": [1, 2]}]).await;
    assert_eq!(command_code(not_objects), 40228);
    s.stop().await;
}

#[tokio::test]
async fn validators_refuse_non_matching_writes_unless_bypassed() {
    let s = sim().await;
    let db = s.client.database("d");
    db.run_command(doc! {"create": "v", "validator": {"a": {"$gte": 1}}})
        .await
        .unwrap();
    let coll = db.collection::<Document>("v");
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    assert_eq!(
        command_code(coll.insert_one(doc! {"_id": 2, "a": 0}).await),
        121
    );
    coll.insert_one(doc! {"_id": 2, "a": 0})
        .bypass_document_validation(true)
        .await
        .unwrap();
    let update = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"a": -1}})
        .await;
    assert_eq!(command_code(update), 121);
    let replace = coll
        .find_one_and_replace(doc! {"_id": 1}, doc! {"a": -5})
        .await;
    assert_eq!(command_code(replace), 121);
    // A warning only: the write lands.
    db.run_command(doc! {"collMod": "v", "validationAction": "warn"})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 3, "a": -3}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);
    s.stop().await;
}

/// A unique partial index holds only the documents its `partialFilterExpression` matches: the
/// others may repeat its key. A filter that is not an object, does not parse, or uses an
/// expression a partial index does not allow is refused as mongod refuses it.
#[tokio::test]
async fn unique_partial_indexes_hold_only_matching_documents() {
    let s = sim().await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("p");
    let create = |partial: bson::Bson| {
        let db = db.clone();
        async move {
            db.run_command(doc! {"createIndexes": "p", "indexes": [
            {"key": {"email": 1}, "name": "email_1", "unique": true,
             "partialFilterExpression": partial}]})
                .await
        }
    };
    assert_eq!(command_code(create(bson::Bson::Int32(5)).await), 14);
    assert_eq!(
        command_code(create(bson::Bson::Document(doc! {"x": {"$asdasd": 3}})).await),
        2
    );
    assert_eq!(
        command_code(create(bson::Bson::Document(doc! {"$and": 5})).await),
        2
    );
    assert_eq!(
        command_code(create(bson::Bson::Document(doc! {"x": {"$ne": 1}})).await),
        67
    );
    coll.insert_many(vec![
        doc! {"_id": 1, "email": "a", "active": false},
        doc! {"_id": 2, "email": "a", "active": false},
    ])
    .await
    .unwrap();
    create(bson::Bson::Document(doc! {"active": true}))
        .await
        .expect("inactive duplicates are outside the index");
    coll.insert_one(doc! {"_id": 3, "email": "a", "active": true})
        .await
        .expect("the first active 'a'");
    let e = coll
        .insert_one(doc! {"_id": 4, "email": "a", "active": true})
        .await
        .unwrap_err();
    assert!(
        matches!(*e.kind, ErrorKind::Write(WriteFailure::WriteError(ref w)) if w.code == 11000),
        "{e}"
    );
    coll.insert_one(doc! {"_id": 5, "email": "a", "active": false})
        .await
        .expect("another inactive 'a'");
    s.stop().await;
}

/// `validate` answers with mongod 7.0's fields (every record and `_id` key counted, valid) and
/// refuses a missing collection (26) and what the inMemory engine refuses (`background`).
#[tokio::test]
async fn validate_counts_records_and_keys() {
    let s = sim().await;
    let db = s.client.database("d");
    db.collection::<Document>("v")
        .insert_many((0..7).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let r = db.run_command(doc! {"validate": "v"}).await.unwrap();
    assert!(r.get_bool("valid").unwrap(), "{r}");
    assert_eq!(r.get_str("ns").unwrap(), "d.v");
    assert_eq!(r.get_i64("nrecords").unwrap(), 7);
    assert_eq!(
        r.get_document("keysPerIndex").unwrap(),
        &doc! {"_id_": 7i64}
    );
    assert_eq!(
        command_code(db.run_command(doc! {"validate": "nothing"}).await),
        26
    );
    assert_eq!(
        command_code(
            db.run_command(doc! {"validate": "v", "background": true})
                .await
        ),
        115
    );
    s.stop().await;
}

/// `usersInfo` without `--auth`: no users, as on a mongod without any.
#[tokio::test]
async fn users_info_without_auth_lists_no_one() {
    let s = sim().await;
    let r = s
        .client
        .database("admin")
        .run_command(doc! {"usersInfo": 1})
        .await
        .unwrap();
    assert_eq!(r.get_array("users").unwrap().len(), 0, "{r}");
    s.stop().await;
}

/// `maxTimeAlwaysTimeOut`: a command with `maxTimeMS` fails with 50, and so does a getMore of
/// a cursor its find opened with `maxTimeMS` (the limit stays with the cursor, which dies).
#[tokio::test]
async fn max_time_always_time_out_reaches_the_cursors_getmore() {
    let s = sim().await;
    let db = s.client.database("d");
    db.collection::<Document>("t")
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let first = db
        .run_command(doc! {"find": "t", "batchSize": 2, "maxTimeMS": 10_000})
        .await
        .unwrap();
    let id = first.get_document("cursor").unwrap().get_i64("id").unwrap();
    let plain = db
        .run_command(doc! {"find": "t", "batchSize": 2})
        .await
        .unwrap();
    let plain_id = plain.get_document("cursor").unwrap().get_i64("id").unwrap();
    let admin = s.client.database("admin");
    admin
        .run_command(doc! {"configureFailPoint": "maxTimeAlwaysTimeOut", "mode": "alwaysOn"})
        .await
        .unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "t", "batchSize": 2})
        .await;
    assert_eq!(command_code(more), 50);
    let again = db
        .run_command(doc! {"getMore": id, "collection": "t"})
        .await;
    assert_eq!(command_code(again), 43, "the cursor died with its getMore");
    db.run_command(doc! {"getMore": plain_id, "collection": "t", "batchSize": 2})
        .await
        .expect("a cursor opened without maxTimeMS has no limit");
    assert_eq!(
        command_code(db.run_command(doc! {"count": "t", "maxTimeMS": 5}).await),
        50
    );
    admin
        .run_command(doc! {"configureFailPoint": "maxTimeAlwaysTimeOut", "mode": "off"})
        .await
        .unwrap();
    s.stop().await;
}
