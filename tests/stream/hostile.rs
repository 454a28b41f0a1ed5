//! Documents MongoDB accepts and Postgres cannot hold as they are: strings with NUL, `_id`s
//! that differ only in type, values a live table is narrower for. Each becomes a dead letter
//! holding the original document; the documents after it arrive; the stream keeps running.

use base64::Engine as _;
use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use mongo_sim::SimOptions;
use tributary::config::SourceKind;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};

use super::{stop_sync, World};
use crate::support::wait_until;

const MAPPING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: name, source: name, type: text }
      - { name: doc,  source: doc,  type: jsonb }
    extra_props: extra
  keys:
    columns:
      - { name: id, source: _id, type: text }
      - { name: v,  source: v,   type: integer }
  numkeys:
    id_type: number
    columns:
      - { name: id, source: _id, type: text }
      - { name: v,  source: v,   type: integer }
"#;

async fn world(source: SourceKind) -> World {
    World::with_mapping(source, 100, SimOptions::default(), "", MAPPING).await
}

/// Three documents with NUL where Postgres cannot take it (a mapped text column, an unmapped
/// field bound for `extra_props`, a jsonb column) and one good one, with ids `{prefix}-…`.
fn nul_documents(prefix: &str) -> Vec<Document> {
    vec![
        doc! {"_id": format!("{prefix}-text"), "name": "a\0b"},
        doc! {"_id": format!("{prefix}-extra"), "name": "ok", "note": "x\0y"},
        doc! {"_id": format!("{prefix}-jsonb"), "name": "ok", "doc": {"k": ["v\0"]}},
        doc! {"_id": format!("{prefix}-good"), "name": "fine", "doc": {"k": 1}},
    ]
}

/// The dead letters of `shop.orders` by `_id`, each with its document decoded back from BSON.
async fn letters(w: &World, namespace: &str) -> Vec<(serde_json::Value, String, Option<Document>)> {
    let rows =
        w.db.client
            .query(
                "SELECT document_key, error, document FROM tributary.dead_letters \
             WHERE namespace = $1 ORDER BY id",
                &[&namespace],
            )
            .await
            .unwrap();
    rows.iter()
        .map(|r| {
            let doc: serde_json::Value = r.get(2);
            let original = doc["bson_base64"].as_str().map(|b| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                Document::from_reader(&bytes[..]).unwrap()
            });
            (r.get(0), r.get(1), original)
        })
        .collect()
}

async fn ids(w: &World, table: &str) -> Vec<String> {
    let sql = format!("SELECT id FROM public.{table} ORDER BY id");
    w.db.client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .filter(|id: &String| !id.starts_with("~marker"))
        .collect()
}

fn assert_nul_letters(
    letters: &[(serde_json::Value, String, Option<Document>)],
    docs: &[Document],
) {
    for d in &docs[..3] {
        let id = d.get_str("_id").unwrap();
        let found = letters
            .iter()
            .find(|(key, _, _)| key == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:?}"));
        assert!(found.1.contains("NUL"), "reason of {id}: {}", found.1);
        assert_eq!(
            found.2.as_ref(),
            Some(d),
            "the letter of {id} keeps the document"
        );
    }
}

async fn nul_characters_are_dead_lettered_and_the_stream_goes_on(source: SourceKind) {
    let w = world(source).await;
    let before = nul_documents("copied");
    w.orders().insert_many(before.clone()).await.unwrap();

    // The one-off full sync meets them first.
    let report = full_sync(
        &w.config,
        w.mappings.clone(),
        Some(vec!["shop.orders".into()]),
        FullSyncMode::Upsert,
        None,
        std::future::pending(),
    )
    .await
    .expect("a full sync never fails for a document's content");
    assert_eq!(report.collections[0].dead_letters, 3);
    assert_eq!(ids(&w, "orders").await, vec!["copied-good".to_owned()]);
    assert_nul_letters(&letters(&w, "shop.orders").await, &before);

    // Then the daemon streams more of them.
    let (stop, task) = w.start_sync();
    w.sync_point("copied").await;
    let streamed = nul_documents("streamed");
    for d in &streamed {
        w.orders().insert_one(d.clone()).await.unwrap();
    }
    // An update that brings a NUL into a good document is refused too; its row stays.
    w.orders()
        .update_one(
            doc! {"_id": "copied-good"},
            doc! {"$set": {"name": "bad\0"}},
        )
        .await
        .unwrap();
    w.sync_point("streamed").await;
    assert!(!task.is_finished(), "sync stopped on a document's content");
    assert_eq!(
        ids(&w, "orders").await,
        vec!["copied-good".to_owned(), "streamed-good".to_owned()]
    );
    let name: String =
        w.db.client
            .query_one(
                "SELECT name FROM public.orders WHERE id = 'copied-good'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(
        name, "fine",
        "the refused update left the last good version"
    );
    let all = letters(&w, "shop.orders").await;
    assert_nul_letters(&all, &streamed);
    assert_eq!(all.len(), 7, "{all:?}");
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test]
async fn nul_characters_are_dead_lettered_change_stream() {
    nul_characters_are_dead_lettered_and_the_stream_goes_on(SourceKind::ChangeStream).await;
}

#[tokio::test]
async fn nul_characters_are_dead_lettered_oplog() {
    nul_characters_are_dead_lettered_and_the_stream_goes_on(SourceKind::Oplog).await;
}

async fn keys(w: &World, table: &str) -> Vec<(String, Option<i32>)> {
    let sql = format!("SELECT id, v FROM public.{table} ORDER BY id");
    w.db.client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn ids_differing_only_in_type_never_share_a_row(source: SourceKind) {
    let w = world(source).await;
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    let oid = ObjectId::parse_str("5f1d7c0e9b3a4b6c8d2e0f11").unwrap();
    let all_ids = [
        Bson::Int32(1),
        Bson::String("1".into()),
        Bson::Double(1.5),
        Bson::ObjectId(oid),
        Bson::String(oid.to_hex()),
        Bson::Int64(2),
    ];
    for (n, db) in ["keys", "numkeys"].iter().enumerate() {
        let coll = w.mongo.database("shop").collection::<Document>(db);
        for (i, id) in all_ids.iter().enumerate() {
            coll.insert_one(doc! {"_id": id.clone(), "v": (n * 100 + i) as i32})
                .await
                .unwrap();
        }
        // MongoDB's numeric key space: 2.0 is the document inserted as Int64(2).
        coll.update_one(doc! {"_id": 2.0}, doc! {"$set": {"v": 77}})
            .await
            .unwrap();
    }
    w.sync_point("written").await;
    // Text keys under `id_type: auto`: ObjectId and String; the String of an ObjectId's hex
    // digits and every number are refused.
    assert_eq!(
        keys(&w, "keys").await,
        vec![("1".to_owned(), Some(1)), (oid.to_hex(), Some(3))]
    );
    // `id_type: number`: one row per numeric value; every String is refused.
    assert_eq!(
        keys(&w, "numkeys").await,
        vec![
            ("1".to_owned(), Some(100)),
            ("1.5".to_owned(), Some(102)),
            ("2".to_owned(), Some(77)),
        ]
    );
    let refused = letters(&w, "shop.keys").await;
    let refused_keys: Vec<&serde_json::Value> = refused.iter().map(|(k, _, _)| k).collect();
    for k in [
        serde_json::json!(1),
        serde_json::json!(1.5),
        serde_json::json!(oid.to_hex()),
        serde_json::json!(2),
    ] {
        assert!(refused_keys.contains(&&k), "no letter for {k}: {refused:?}");
    }
    let hex_reason = &refused
        .iter()
        .find(|(k, _, _)| k == &serde_json::json!(oid.to_hex()))
        .unwrap()
        .1;
    assert!(
        hex_reason.contains(&format!("ObjectId(\"{}\")", oid.to_hex())),
        "the reason names the other _id: {hex_reason}"
    );
    let num_letters = letters(&w, "shop.numkeys").await;
    assert!(num_letters
        .iter()
        .any(|(k, _, _)| k == &serde_json::json!("1")));

    // Deletes remove only their own document's row.
    let keys_coll = w.mongo.database("shop").collection::<Document>("keys");
    keys_coll.delete_one(doc! {"_id": 1}).await.unwrap();
    keys_coll
        .delete_one(doc! {"_id": oid.to_hex()})
        .await
        .unwrap();
    let num_coll = w.mongo.database("shop").collection::<Document>("numkeys");
    num_coll.delete_one(doc! {"_id": "1"}).await.unwrap();
    num_coll.delete_one(doc! {"_id": 1.5}).await.unwrap();
    w.sync_point("deleted").await;
    assert_eq!(
        keys(&w, "keys").await,
        vec![("1".to_owned(), Some(1)), (oid.to_hex(), Some(3))]
    );
    assert_eq!(
        keys(&w, "numkeys").await,
        vec![("1".to_owned(), Some(100)), ("2".to_owned(), Some(77))]
    );
    assert!(!task.is_finished());
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test]
async fn ids_differing_only_in_type_never_share_a_row_change_stream() {
    ids_differing_only_in_type_never_share_a_row(SourceKind::ChangeStream).await;
}

#[tokio::test]
async fn ids_differing_only_in_type_never_share_a_row_oplog() {
    ids_differing_only_in_type_never_share_a_row(SourceKind::Oplog).await;
}

/// A live table narrower than its mapping (a column altered by hand): Postgres refuses the
/// one document's rows with a data error (22001), in the copy and in the stream alike. That
/// document is dead-lettered; everything else in its chunk or batch commits.
#[tokio::test]
async fn a_postgres_data_error_is_narrowed_to_its_document() {
    let w = world(SourceKind::ChangeStream).await;
    w.db.client
        .batch_execute(
            "CREATE TABLE public.orders (id text PRIMARY KEY, name varchar(8), doc jsonb, extra jsonb)",
        )
        .await
        .unwrap();
    let copied: Vec<Document> = (0..50)
        .map(|i| {
            let name = if i == 17 {
                "far too long a name"
            } else {
                "short"
            };
            doc! {"_id": format!("c{i:02}"), "name": name}
        })
        .collect();
    w.orders().insert_many(copied).await.unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("copied").await;
    let streamed: Vec<Document> = (0..20)
        .map(|i| {
            let name = if i == 5 {
                "also much too long"
            } else {
                "short"
            };
            doc! {"_id": format!("s{i:02}"), "name": name}
        })
        .collect();
    w.orders().insert_many(streamed).await.unwrap();
    w.sync_point("streamed").await;
    let present = ids(&w, "orders").await;
    assert_eq!(present.len(), 49 + 19, "{present:?}");
    assert!(!present.contains(&"c17".to_owned()) && !present.contains(&"s05".to_owned()));
    let refused = letters(&w, "shop.orders").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (key, why, _) in &refused {
        assert!(key == "c17" || key == "s05", "{key}");
        assert!(why.contains("too long"), "{why}");
    }
    wait_until(5, "sync still running", || async { !task.is_finished() }).await;
    stop_sync(stop, task).await;
    w.stop().await;
}
