//! Sink tests against a real Postgres (a fresh database per test, see `support::postgres`).

mod apply;
mod crash;
mod ddl;
mod parent_updates;
mod roundtrip;
mod state;
mod types;

use std::sync::Arc;

use tributary::mapping::model::{
    ChildMapping, CollectionMapping, ColumnMapping, FieldPath, MappingSet, OnError, PgType,
};
use tributary::mapping::value::PgValue;
use tributary::sink::postgres::PostgresSink;
use tributary::sink::{Batch, Change, Checkpoint, DocumentRows};

use crate::support::TestDb;

pub fn column(name: &str, source: &str, pg_type: PgType) -> ColumnMapping {
    ColumnMapping {
        name: name.to_owned(),
        source: FieldPath::parse(source),
        pg_type,
    }
}

/// `shop.orders` → `orders(id text, total numeric(12,2), note text, extra jsonb)` with child
/// `order_items(order_id, idx, sku text, qty integer)`.
pub fn orders_mapping() -> MappingSet {
    MappingSet {
        collections: vec![CollectionMapping {
            database: "shop".into(),
            collection: "orders".into(),
            table: "orders".into(),
            columns: vec![
                column("id", "_id", PgType::Text),
                column("total", "total", PgType::Numeric(Some((12, Some(2))))),
                column("note", "note", PgType::Text),
            ],
            extra_props: Some("extra".into()),
            on_error: OnError::DeadLetter,
            on_nul: tributary::mapping::model::OnNul::default(),
            id_type: tributary::mapping::model::IdType::default(),
            children: vec![ChildMapping {
                table: "order_items".into(),
                source: FieldPath::parse("items"),
                parent_key: "order_id".into(),
                columns: vec![
                    column("sku", "sku", PgType::Text),
                    column("qty", "qty", PgType::Integer),
                ],
            }],
        }],
    }
}

/// An order with `items` child rows `(sku-i, i)`.
pub fn order(id: &str, total: &str, note: &str, items: usize) -> Change {
    let key = PgValue::Text(id.into());
    let children = (0..items)
        .map(|i| {
            vec![
                key.clone(),
                PgValue::Int4(i as i32),
                PgValue::Text(format!("sku-{i}")),
                PgValue::Int4(i as i32),
            ]
        })
        .collect();
    Change::Upsert {
        collection: 0,
        key: key.clone(),
        rows: DocumentRows {
            parent: vec![
                key,
                PgValue::Numeric(total.into()),
                PgValue::Text(note.into()),
                PgValue::Json(serde_json::json!({})),
            ],
            children: vec![children],
            ..DocumentRows::default()
        },
    }
}

pub fn delete(id: &str) -> Change {
    Change::Delete {
        collection: 0,
        key: PgValue::Text(id.into()),
    }
}

/// A batch of `changes` with checkpoint `token`.
pub fn batch(changes: Vec<Change>, token: i64) -> Batch {
    Batch {
        changes,
        dead_letters: vec![],
        checkpoint: Some(checkpoint(token)),
    }
}

pub fn checkpoint(token: i64) -> Checkpoint {
    Checkpoint {
        stream: "default".into(),
        source: "change_stream".into(),
        resume_token: serde_json::json!({ "n": token }),
        cluster_time: None,
    }
}

pub async fn sink_for(db: &TestDb, mappings: MappingSet) -> PostgresSink {
    let sink = PostgresSink::connect(
        &db.url,
        4,
        "public",
        "tributary",
        "default",
        Arc::new(mappings),
    )
    .await
    .expect("connect");
    sink.ensure_schema().await.expect("ensure_schema");
    sink
}

/// `(id, total::text, note)` of every order, ordered by id.
pub async fn orders(db: &TestDb) -> Vec<(String, String, String)> {
    db.client
        .query("SELECT id, total::text, note FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// `(order_id, idx, sku)` of every item, ordered.
pub async fn items(db: &TestDb) -> Vec<(String, i32, String)> {
    db.client
        .query(
            "SELECT order_id, idx, sku FROM order_items ORDER BY order_id, idx",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

pub async fn stored_token(db: &TestDb) -> Option<serde_json::Value> {
    db.client
        .query_opt(
            "SELECT resume_token FROM tributary.checkpoints WHERE stream = 'default'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}
