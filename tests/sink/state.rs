//! State tables: checkpoints, collection phases, dead-letter counts, `read_status`; retry
//! classification of real server errors; the bulk `copy_rows` path.

use tributary::sink::postgres::state::{
    self, read_status, set_collection_state, CollectionState, Phase,
};
use tributary::sink::postgres::PostgresSink;
use tributary::sink::{Batch, DeadLetter, Sink, SinkError};

use super::{checkpoint, items, order, orders, orders_mapping, sink_for};
use crate::support::fresh_database;

#[tokio::test]
async fn status_reports_checkpoints_phases_and_dead_letters() {
    let db = fresh_database().await;
    let before = read_status(&db.client, "tributary", None).await.unwrap();
    assert!(!before.initialized);
    assert!(before.streams.is_empty());

    let mut sink = sink_for(&db, orders_mapping()).await;
    let letter = DeadLetter {
        namespace: "shop.orders".into(),
        document_key: serde_json::json!("k"),
        document: serde_json::json!({"_id": "k"}),
        error: "bad".into(),
        cluster_time: None,
        row_key: None,
        id_bson: None,
    };
    let other_version = DeadLetter {
        document: serde_json::json!({"_id": "k", "v": 2}),
        ..letter.clone()
    };
    let mut cp = checkpoint(5);
    cp.cluster_time = chrono::DateTime::from_timestamp(1_700_000_000, 0);
    let batch = Batch {
        changes: vec![order("a", "1", "x", 0)],
        dead_letters: vec![letter, other_version],
        checkpoint: Some(cp),
    };
    sink.apply(&batch).await.unwrap();
    // A replayed batch records no version twice.
    sink.apply(&batch).await.unwrap();
    let started = chrono::DateTime::from_timestamp(1_600_000_000, 0);
    set_collection_state(
        &db.client,
        "tributary",
        "default",
        &CollectionState {
            namespace: "shop.orders".into(),
            phase: Phase::Snapshot,
            snapshot_started_at: started,
            snapshot_done_at: None,
            documents: None,
        },
    )
    .await
    .unwrap();
    set_collection_state(
        &db.client,
        "tributary",
        "default",
        &CollectionState {
            namespace: "shop.orders".into(),
            phase: Phase::Streaming,
            snapshot_started_at: started,
            snapshot_done_at: started,
            documents: Some(42),
        },
    )
    .await
    .unwrap();

    let status = read_status(&db.client, "tributary", None).await.unwrap();
    assert!(status.initialized);
    assert_eq!(status.streams.len(), 1);
    let s = &status.streams[0];
    assert_eq!(s.stream, "default");
    let c = s.checkpoint.as_ref().unwrap();
    assert_eq!(c.resume_token, Some(serde_json::json!({"n": 5})));
    assert_eq!(c.source.as_deref(), Some("change_stream"));
    assert_eq!(c.cluster_time.unwrap().timestamp(), 1_700_000_000);
    assert!(c.updated_at.is_some());
    assert_eq!(s.collections.len(), 1);
    assert_eq!(s.collections[0].phase, Phase::Streaming);
    assert_eq!(s.collections[0].documents, Some(42));
    assert_eq!(s.dead_letters.len(), 1);
    assert_eq!(s.dead_letters[0].count, 2);

    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["streams"][0]["collections"][0]["phase"], "streaming");
    assert_eq!(
        json["streams"][0]["dead_letters"][0]["namespace"],
        "shop.orders"
    );

    let other = read_status(&db.client, "tributary", Some("nope"))
        .await
        .unwrap();
    assert!(other.streams[0].checkpoint.is_none());

    let read = state::read_checkpoint(&db.client, "tributary", "default")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.resume_token, serde_json::json!({"n": 5}));
    assert!(state::read_checkpoint(&db.client, "tributary", "nope")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn server_errors_are_classified_for_retry() {
    let db = fresh_database().await;
    for (code, retryable) in [
        ("40001", true),
        ("40P01", true),
        ("57P01", true),
        ("08006", true),
        ("23505", false),
        ("22003", false),
        ("42P01", false),
    ] {
        let e = db
            .client
            .batch_execute(&format!(
                "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '{code}'; END $$"
            ))
            .await
            .unwrap_err();
        let e = SinkError::postgres("testing", e);
        assert_eq!(e.is_retryable(), retryable, "{code}: {e}");
        assert_eq!(e.code(), Some(code));
    }
}

#[tokio::test]
async fn unreachable_server_is_retryable_and_bad_uri_is_not() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Err(e) = PostgresSink::connect(
        &format!("postgres://u:secret@127.0.0.1:{port}/db"),
        1,
        "public",
        "tributary",
        "s",
        Default::default(),
    )
    .await
    else {
        panic!("connected to a closed port");
    };
    assert!(e.is_retryable(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}/db")), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");

    let Err(e) =
        PostgresSink::connect("postgres://[::1", 1, "p", "t", "s", Default::default()).await
    else {
        panic!("accepted a broken uri");
    };
    assert!(!e.is_retryable(), "{e}");
}

#[tokio::test]
async fn copy_rows_upserts_documents_with_children() {
    let db = fresh_database().await;
    let sink = sink_for(&db, orders_mapping()).await;
    let docs = |note: &str, n_items| {
        ["a", "b", "c"]
            .iter()
            .map(|id| match order(id, "1", note, n_items) {
                tributary::sink::Change::Upsert { rows, .. } => rows,
                _ => unreachable!(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sink.copy_rows(0, &mut docs("first", 2)).await.unwrap(), 3);
    assert_eq!(items(&db).await.len(), 6);
    assert_eq!(sink.copy_rows(0, &mut docs("second", 1)).await.unwrap(), 3);
    assert!(orders(&db).await.iter().all(|o| o.2 == "second"));
    assert_eq!(
        items(&db).await.len(),
        3,
        "children are replaced, not appended"
    );
    assert!(sink.copy_rows(3, &mut vec![]).await.is_err());
}
