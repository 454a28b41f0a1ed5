//! DDL: idempotent, additive, hostile identifiers quoted.

use tributary::mapping::model::PgType;
use tributary::sink::postgres::ddl::{apply_ddl, schema_ddl};
use tributary::sink::postgres::PostgresSink;

use super::{column, orders_mapping};
use crate::support::fresh_database;

async fn columns_of(
    db: &crate::support::TestDb,
    schema: &str,
    table: &str,
) -> Vec<(String, String)> {
    db.client
        .query(
            "SELECT column_name::text, format_type(a.atttypid, a.atttypmod) \
             FROM information_schema.columns c \
             JOIN pg_attribute a ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass \
              AND a.attname = c.column_name \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn ddl_creates_tables_and_is_idempotent() {
    let db = fresh_database().await;
    let ddl = schema_ddl(&orders_mapping(), "public", "tributary");
    apply_ddl(&db.client, &ddl).await.unwrap();
    db.client
        .execute("INSERT INTO orders (id, total) VALUES ('a', 1.5)", &[])
        .await
        .unwrap();
    apply_ddl(&db.client, &ddl).await.unwrap();

    let n: i64 = db
        .client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "a second run must not drop data");
    assert_eq!(
        columns_of(&db, "public", "orders").await,
        vec![
            ("id".into(), "text".into()),
            ("total".into(), "numeric(12,2)".into()),
            ("note".into(), "text".into()),
            ("extra".into(), "jsonb".into()),
        ]
    );
    assert_eq!(
        columns_of(&db, "public", "order_items").await,
        vec![
            ("order_id".into(), "text".into()),
            ("idx".into(), "integer".into()),
            ("sku".into(), "text".into()),
            ("qty".into(), "integer".into()),
        ]
    );
    let pk: String = db
        .client
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'public.order_items'::regclass AND contype = 'p'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, "PRIMARY KEY (order_id, idx)");
    for t in ["checkpoints", "collections", "dead_letters"] {
        assert!(
            !columns_of(&db, "tributary", t).await.is_empty(),
            "state table {t} missing"
        );
    }
    let bad_phase = db
        .client
        .execute(
            "INSERT INTO tributary.collections (stream, namespace, phase) VALUES ('s', 'n', 'done')",
            &[],
        )
        .await;
    assert!(bad_phase.is_err(), "phase must be checked");
}

#[tokio::test]
async fn ddl_adds_new_columns_to_existing_tables() {
    let db = fresh_database().await;
    let mut mapping = orders_mapping();
    apply_ddl(&db.client, &schema_ddl(&mapping, "public", "tributary"))
        .await
        .unwrap();
    mapping.collections[0]
        .columns
        .push(column("placed_at", "placedAt", PgType::Timestamptz));
    apply_ddl(&db.client, &schema_ddl(&mapping, "public", "tributary"))
        .await
        .unwrap();
    let cols = columns_of(&db, "public", "orders").await;
    assert!(
        cols.contains(&("placed_at".into(), "timestamp with time zone".into())),
        "{cols:?}"
    );
}

#[tokio::test]
async fn hostile_identifiers_are_quoted() {
    let db = fresh_database().await;
    let mut mapping = orders_mapping();
    let c = &mut mapping.collections[0];
    c.table = "weird \"name".into();
    c.columns[2] = column("select", "note", PgType::Text);
    c.extra_props = Some("x\"; DROP TABLE y; --".into());
    c.children[0].table = "select".into();
    c.children[0].parent_key = "Order Id".into();
    let schema = "my \"schema";
    let sink = PostgresSink::connect(
        &db.url,
        2,
        schema,
        "state \"s",
        "default",
        std::sync::Arc::new(mapping),
    )
    .await
    .unwrap();
    sink.ensure_schema().await.unwrap();
    sink.ensure_schema().await.unwrap();

    let mut sink = sink;
    use tributary::sink::Sink;
    let batch = tributary::sink::Batch {
        changes: vec![
            super::order("a", "1.00", "n", 2),
            super::order("b", "2.00", "m", 1),
            super::delete("b"),
        ],
        dead_letters: vec![],
        checkpoint: Some(tributary::sink::Checkpoint {
            stream: "default".into(),
            ..super::checkpoint(1)
        }),
    };
    sink.apply(&batch).await.unwrap();
    sink.apply(&batch).await.unwrap();

    let row = db
        .client
        .query_one(
            "SELECT \"select\", \"x\"\"; DROP TABLE y; --\"::text FROM \"my \"\"schema\".\"weird \"\"name\"",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "n");
    assert_eq!(row.get::<_, String>(1), "{}");
    let items: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM \"my \"\"schema\".\"select\" WHERE \"Order Id\" = 'a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(items, 2);
    let cp: i64 = db
        .client
        .query_one("SELECT count(*) FROM \"state \"\"s\".checkpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cp, 1);
}
