//! Numeric `_id`s of one value are one key, as in MongoDB: 1, 1i64, 1.0 and
//! Decimal128("1") name the same document; "1" is another one.

use bson::{doc, Bson, Decimal128, Document};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};

use crate::support::sim;

fn dec(s: &str) -> Bson {
    Bson::Decimal128(s.parse::<Decimal128>().expect("decimal literal"))
}

fn write_code(err: &mongodb::error::Error) -> Option<i32> {
    match *err.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test]
async fn numeric_ids_of_one_value_are_one_key() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("ids");
    coll.insert_one(doc! {"_id": 1, "v": "int"}).await.unwrap();
    for id in [Bson::Int64(1), Bson::Double(1.0), dec("1"), dec("1.000")] {
        let err = coll
            .insert_one(doc! {"_id": id.clone(), "v": "again"})
            .await
            .unwrap_err();
        assert_eq!(write_code(&err), Some(11000), "{id:?}: {err}");
    }
    // The string "1" is another document.
    coll.insert_one(doc! {"_id": "1", "v": "string"})
        .await
        .unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);

    // Lookups by any numeric type find the stored Int64 / Int32.
    coll.insert_one(doc! {"_id": 2i64, "v": "long"})
        .await
        .unwrap();
    for id in [Bson::Double(2.0), Bson::Int32(2), dec("2")] {
        let found = coll.find_one(doc! {"_id": id.clone()}).await.unwrap();
        let found = found.unwrap_or_else(|| panic!("{id:?} finds nothing"));
        assert_eq!(found.get("_id"), Some(&Bson::Int64(2)), "stored type kept");
    }
    let found: Vec<Document> = coll
        .find(doc! {"_id": {"$in": [1.0, 2.0]}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 2);

    // Replace and update by another numeric type hit the same document and
    // the oplog names it by its stored `_id`.
    let r = coll
        .replace_one(doc! {"_id": dec("2")}, doc! {"v": "replaced"})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let r = coll
        .update_one(doc! {"_id": 1.0}, doc! {"$set": {"w": 1}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let got = coll.find_one(doc! {"_id": 2}).await.unwrap().unwrap();
    assert_eq!(got, doc! {"_id": 2i64, "v": "replaced"});

    // Delete by 2.0 removes the Int64(2) document, and nothing else.
    let d = coll.delete_one(doc! {"_id": 2.0}).await.unwrap();
    assert_eq!(d.deleted_count, 1);
    let d = coll.delete_many(doc! {"_id": 1i64}).await.unwrap();
    assert_eq!(d.deleted_count, 1);
    let left: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(left, vec![doc! {"_id": "1", "v": "string"}]);

    // Every oplog entry names the document by the `_id` it was stored under.
    let oplog = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let entries: Vec<Document> = oplog
        .find(doc! {"ns": "d.ids", "op": {"$in": ["u", "d"]}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<(String, Bson)> = entries
        .iter()
        .map(|e| {
            let op = e.get_str("op").unwrap().to_string();
            let key = if op == "d" { "o" } else { "o2" };
            (op, e.get_document(key).unwrap().get("_id").unwrap().clone())
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            ("u".to_string(), Bson::Int64(2)),
            ("u".to_string(), Bson::Int32(1)),
            ("d".to_string(), Bson::Int64(2)),
            ("d".to_string(), Bson::Int32(1)),
        ]
    );
    s.stop().await;
}

/// A replacement may carry an equal `_id` of another numeric type (mongod
/// compares the values); an operator may not touch `_id` at all.
#[tokio::test]
async fn replacement_may_store_an_equal_id_of_another_type() {
    let s = sim().await;
    let coll = s.client.database("d").collection::<Document>("ids2");
    coll.insert_one(doc! {"_id": 7, "v": 1}).await.unwrap();
    let r = coll
        .replace_one(doc! {"_id": 7}, doc! {"_id": 7.0, "v": 2})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    let got = coll.find_one(doc! {"_id": 7i64}).await.unwrap().unwrap();
    assert_eq!(got, doc! {"_id": 7.0, "v": 2});
    let err = coll
        .update_one(doc! {"_id": 7}, doc! {"$set": {"_id": 7i64}})
        .await
        .unwrap_err();
    assert_eq!(write_code(&err), Some(66), "{err}");
    let err = coll
        .replace_one(doc! {"_id": 7}, doc! {"_id": 8, "v": 3})
        .await
        .unwrap_err();
    assert_eq!(write_code(&err), Some(66), "{err}");
    // The delete's oplog entry names the `_id` as now stored.
    coll.delete_one(doc! {"_id": 7}).await.unwrap();
    let entry = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {"ns": "d.ids2", "op": "d"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.get_document("o").unwrap(), &doc! {"_id": 7.0});
    s.stop().await;
}
