//! The lease itself: a lost lock connection stops commits at once and sends `sync` back to
//! standby, from which it takes the lock again and continues.

use bson::doc;
use tributary::config::SourceKind;
use tributary::lease::Lease;
use tributary::sink::postgres::PostgresSink;
use tributary::sink::{Batch, Sink, SinkError};

use super::{holder_pid, wait_until, Running};
use crate::stream::{order, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_without_its_lease_commits_nothing() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let lease = Lease::acquire(&w.db.url, "test", false, std::future::pending())
        .await
        .unwrap()
        .expect("the lock is free");
    assert_eq!(
        holder_pid(&w.db.client, "test").await,
        Some(lease.backend_pid())
    );
    // A second taker gets nothing while it is held.
    assert!(Lease::try_take(&w.db.url, "test").await.unwrap().is_none());
    let mut sink = PostgresSink::connect(
        &w.db.url,
        2,
        "public",
        "tributary",
        "test",
        w.mappings.clone(),
    )
    .await
    .unwrap();
    sink.ensure_schema().await.unwrap();
    sink.set_lease(lease.flag());
    sink.apply(&Batch::default()).await.unwrap();

    w.db.client
        .execute("SELECT pg_terminate_backend($1)", &[&lease.backend_pid()])
        .await
        .unwrap();
    let flag = lease.flag();
    wait_until(10, "the keep-alive to notice the lost lock", || async {
        !flag.is_held()
    })
    .await;
    let checkpoint = tributary::sink::Checkpoint {
        stream: "test".into(),
        source: "change_stream".into(),
        resume_token: serde_json::json!({"_data": "00"}),
        cluster_time: None,
    };
    let r = sink
        .apply(&Batch {
            checkpoint: Some(checkpoint),
            ..Batch::default()
        })
        .await;
    assert!(matches!(r, Err(SinkError::LeaseLost { .. })), "{r:?}");
    let rows: i64 =
        w.db.client
            .query_one("SELECT count(*) FROM tributary.checkpoints", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(rows, 0, "nothing was committed without the lock");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_stands_by_after_losing_its_lock_and_takes_it_again() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let run = Running::start(&w.config, w.mappings.clone(), 30).await;
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    w.sync_point_in("public", "first").await;
    let first = holder_pid(&w.db.client, "test").await.expect("a holder");
    w.db.client
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap();
    for i in 0..20 {
        w.orders()
            .insert_one(order(&format!("b{i:02}"), i, &["y", "z"]))
            .await
            .unwrap();
    }
    w.orders()
        .update_one(doc! {"_id": "a"}, doc! {"$set": {"qty": 7}})
        .await
        .unwrap();
    wait_until(30, "the lock to be taken again", || async {
        holder_pid(&w.db.client, "test")
            .await
            .is_some_and(|p| p != first)
    })
    .await;
    w.sync_point_in("public", "after").await;
    w.assert_equal().await;
    run.stop().await;
    w.stop().await;
}
