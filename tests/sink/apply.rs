//! `PostgresSink::apply`: upsert, delete, truncate, coalescing, children, dead letters,
//! checkpoint, idempotent replay.

use tributary::sink::{Change, DeadLetter, Sink};

use super::{
    batch, checkpoint, delete, items, order, orders, orders_mapping, sink_for, stored_token,
};
use crate::support::fresh_database;

#[tokio::test]
async fn upsert_update_delete_and_children() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;

    sink.apply(&batch(
        vec![order("a", "1.50", "first", 3), order("b", "2", "x", 1)],
        1,
    ))
    .await
    .unwrap();
    assert_eq!(
        orders(&db).await,
        vec![
            ("a".into(), "1.50".into(), "first".into()),
            ("b".into(), "2.00".into(), "x".into())
        ]
    );
    assert_eq!(items(&db).await.len(), 4);

    // Update a (fewer children: the old ones must go), delete b (its children too).
    sink.apply(&batch(
        vec![order("a", "9.99", "second", 1), delete("b")],
        2,
    ))
    .await
    .unwrap();
    assert_eq!(
        orders(&db).await,
        vec![("a".into(), "9.99".into(), "second".into())]
    );
    assert_eq!(items(&db).await, vec![("a".into(), 0, "sku-0".into())]);
    assert_eq!(stored_token(&db).await, Some(serde_json::json!({"n": 2})));
}

#[tokio::test]
async fn coalescing_keeps_the_last_change_per_key() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(vec![order("kept", "1", "old", 1)], 1))
        .await
        .unwrap();

    sink.apply(&batch(
        vec![
            order("gone", "1", "v1", 2),
            delete("gone"),
            delete("kept"),
            order("kept", "2", "new", 2),
            order("twice", "1", "v1", 1),
            order("twice", "3", "v2", 3),
        ],
        2,
    ))
    .await
    .unwrap();
    assert_eq!(
        orders(&db).await,
        vec![
            ("kept".into(), "2.00".into(), "new".into()),
            ("twice".into(), "3.00".into(), "v2".into())
        ]
    );
    let its = items(&db).await;
    assert_eq!(its.iter().filter(|i| i.0 == "kept").count(), 2);
    assert_eq!(its.iter().filter(|i| i.0 == "twice").count(), 3);
    assert_eq!(its.iter().filter(|i| i.0 == "gone").count(), 0);
}

#[tokio::test]
async fn truncate_applies_at_its_position() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(
        vec![order("a", "1", "x", 2), order("b", "1", "x", 2)],
        1,
    ))
    .await
    .unwrap();
    sink.apply(&batch(
        vec![
            order("c", "1", "before", 1),
            Change::Truncate { collection: 0 },
            order("d", "4", "after", 1),
        ],
        2,
    ))
    .await
    .unwrap();
    assert_eq!(
        orders(&db).await,
        vec![("d".into(), "4.00".into(), "after".into())]
    );
    assert_eq!(items(&db).await, vec![("d".into(), 0, "sku-0".into())]);
}

#[tokio::test]
async fn replaying_a_batch_is_idempotent() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    let b = batch(
        vec![
            order("a", "1", "x", 3),
            order("b", "2", "y", 0),
            delete("c"),
        ],
        7,
    );
    sink.apply(&b).await.unwrap();
    let (o1, i1) = (orders(&db).await, items(&db).await);
    sink.apply(&b).await.unwrap();
    sink.apply(&b).await.unwrap();
    assert_eq!(orders(&db).await, o1);
    assert_eq!(items(&db).await, i1);
    assert_eq!(stored_token(&db).await, Some(serde_json::json!({"n": 7})));
}

#[tokio::test]
async fn dead_letters_are_written_with_the_batch() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    let mut b = batch(vec![order("a", "1", "x", 0)], 1);
    b.dead_letters.push(DeadLetter {
        namespace: "shop.orders".into(),
        document_key: serde_json::json!({"_id": "bad"}),
        document: serde_json::json!({"_id": "bad", "total": "abc"}),
        error: "total: string cannot become numeric(12,2)".into(),
        cluster_time: None,
        row_key: None,
        id_bson: None,
    });
    sink.apply(&b).await.unwrap();
    let row = db
        .client
        .query_one(
            "SELECT stream, namespace, document_key, document, error, at IS NOT NULL \
             FROM tributary.dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "default");
    assert_eq!(row.get::<_, String>(1), "shop.orders");
    assert_eq!(
        row.get::<_, serde_json::Value>(2),
        serde_json::json!({"_id": "bad"})
    );
    assert_eq!(row.get::<_, serde_json::Value>(3)["total"], "abc");
    assert!(row.get::<_, String>(4).contains("numeric"));
    assert!(row.get::<_, bool>(5));
    assert_eq!(orders(&db).await.len(), 1);
}

#[tokio::test]
async fn a_failing_batch_leaves_rows_and_checkpoint_untouched() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(vec![order("a", "1", "x", 1)], 1))
        .await
        .unwrap();
    // numeric(12,2) overflows: the whole batch, checkpoint included, must roll back.
    let err = sink
        .apply(&batch(
            vec![
                order("b", "2", "y", 1),
                order("c", "10000000000000", "z", 0),
            ],
            2,
        ))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("orders"), "{err}");
    assert_eq!(orders(&db).await.len(), 1);
    assert_eq!(items(&db).await.len(), 1);
    assert_eq!(stored_token(&db).await, Some(serde_json::json!({"n": 1})));
    // The sink recovers for the next batch.
    sink.apply(&batch(vec![order("b", "2", "y", 1)], 3))
        .await
        .unwrap();
    assert_eq!(orders(&db).await.len(), 2);
}

/// Batches commit with `synchronous_commit` as configured (default `off`): a statement trigger
/// on the mapped table records the setting inside the sink's own transaction.
#[tokio::test]
async fn batches_commit_with_the_configured_synchronous_commit() {
    let db = fresh_database().await;
    // The test cluster may run with synchronous_commit=off; make `on` this database's default
    // so that `off` can only come from the sink.
    db.client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET synchronous_commit = on",
            db.name
        ))
        .await
        .unwrap();
    let mut sink = sink_for(&db, orders_mapping()).await;
    db.client
        .batch_execute(
            "CREATE TABLE commit_modes (n bigserial, mode text);
             CREATE FUNCTION log_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO commit_modes (mode) VALUES (current_setting('synchronous_commit'));
                 RETURN NULL;
             END $$;
             CREATE TRIGGER log_commit_mode AFTER INSERT ON orders
                 FOR EACH STATEMENT EXECUTE FUNCTION log_commit_mode();",
        )
        .await
        .unwrap();
    sink.apply(&batch(vec![order("a", "1", "x", 0)], 1))
        .await
        .unwrap();
    sink.set_synchronous_commit(tributary::config::SynchronousCommit::On);
    sink.apply(&batch(vec![order("b", "2", "y", 0)], 2))
        .await
        .unwrap();
    let modes: Vec<String> = db
        .client
        .query("SELECT mode FROM commit_modes ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(modes, ["off", "on"]);
}

/// A checkpoint only replaces the one this sink committed last: when Postgres has taken that
/// one back (here: rewritten behind the sink's back), the batch is refused whole.
#[tokio::test]
async fn a_checkpoint_older_than_the_last_commit_refuses_the_batch() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;
    sink.apply(&batch(vec![order("a", "1", "x", 0)], 1))
        .await
        .unwrap();
    sink.apply(&batch(vec![order("b", "2", "y", 0)], 2))
        .await
        .unwrap();
    // What a crash leaves behind: batch 2 and its checkpoint gone, batch 1 kept.
    db.client
        .batch_execute(
            "DELETE FROM orders WHERE id = 'b';
             UPDATE tributary.checkpoints SET resume_token = '{\"n\": 1}'",
        )
        .await
        .unwrap();
    let err = sink
        .apply(&batch(vec![order("c", "3", "z", 0)], 3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, tributary::sink::SinkError::CheckpointRewound { .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(err.kind(), "checkpoint_rewound");
    assert_eq!(orders(&db).await.len(), 1, "the refused batch left rows");
    assert_eq!(stored_token(&db).await, Some(serde_json::json!({"n": 1})));
    // Told where the stream really stands, the sink carries on from there.
    sink.expect_checkpoint(Some(&checkpoint(1)));
    sink.apply(&batch(
        vec![order("b", "2", "y", 0), order("c", "3", "z", 0)],
        3,
    ))
    .await
    .unwrap();
    assert_eq!(orders(&db).await.len(), 3);
    assert_eq!(stored_token(&db).await, Some(serde_json::json!({"n": 3})));
}
