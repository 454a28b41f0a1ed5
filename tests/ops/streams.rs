//! Two streams (different `sync.name`, different target schemas) on one Postgres database: each
//! holds its own lock, keeps its own checkpoint, and writes its own tables.

use bson::doc;
use tributary::config::SourceKind;

use super::{holder_pid, rows_in, ConfigFile, Running};
use crate::stream::{order, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_on_one_database_do_not_interfere() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    for i in 0..30 {
        w.orders()
            .insert_one(order(&format!("a{i:02}"), i, &["x", "y"]))
            .await
            .unwrap();
    }
    let one = ConfigFile::new(&w, "one", "s1", "change_stream", 100);
    let two = ConfigFile::new(&w, "two", "s2", "oplog", 50);
    // Started at the same instant: both run `ensure_schema` on the shared state tables at
    // once (serialized by the DDL advisory lock; before it, one of them failed on a catalog
    // unique violation).
    let (c1, c2) = (one.parse(), two.parse());
    let (run_one, run_two) = tokio::join!(
        Running::start(&c1, w.mappings.clone(), 30),
        Running::start(&c2, w.mappings.clone(), 30)
    );
    for i in 0..30 {
        w.orders()
            .update_one(
                doc! {"_id": format!("a{i:02}")},
                doc! {"$set": {"qty": 100 + i}},
            )
            .await
            .unwrap();
    }
    w.orders().delete_one(doc! {"_id": "a03"}).await.unwrap();
    // One marker, seen by both streams: after it, both tables hold the same documents.
    w.sync_point_in("s1", "both").await;
    w.wait_for_marker_in("s2", "both").await;
    let expected = w.expected().await;
    assert_eq!(rows_in(&w.db.client, "s1").await, expected, "stream one");
    assert_eq!(rows_in(&w.db.client, "s2").await, expected, "stream two");

    let one_pid = holder_pid(&w.db.client, "one").await;
    let two_pid = holder_pid(&w.db.client, "two").await;
    assert!(
        one_pid.is_some() && two_pid.is_some() && one_pid != two_pid,
        "{one_pid:?} {two_pid:?}"
    );
    let sources: Vec<(String, String)> =
        w.db.client
            .query(
                "SELECT stream, source FROM tributary.checkpoints ORDER BY stream",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(
        sources,
        vec![
            ("one".into(), "change_stream".into()),
            ("two".into(), "oplog".into())
        ]
    );
    // Stopping one leaves the other streaming.
    run_one.stop().await;
    w.orders()
        .insert_one(order("late", 1, &["z"]))
        .await
        .unwrap();
    w.sync_point_in("s2", "after-one-stopped").await;
    assert!(rows_in(&w.db.client, "s1")
        .await
        .0
        .iter()
        .all(|r| r.0 != "late"));
    run_two.stop().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_refuses_while_a_writer_holds_the_stream() {
    use tributary::pipeline::full_sync::{full_sync, FullSyncMode};
    let w = World::new(SourceKind::ChangeStream, 100).await;
    w.orders().insert_one(order("a", 1, &["x"])).await.unwrap();
    let holder = w.db.connect().await;
    let key = format!("SELECT pg_advisory_lock({})", tributary::lease::KEY_SQL);
    holder.execute(&key, &[&"test"]).await.unwrap();
    let r = full_sync(
        &w.config,
        w.mappings.clone(),
        None,
        FullSyncMode::Replace,
        None,
        std::future::pending(),
    )
    .await;
    let e = r.expect_err("full-sync must not race the stream's writer");
    assert!(e.to_string().contains("holds the lock"), "{e}");
    let table: Option<String> =
        w.db.client
            .query_one("SELECT to_regclass('public.orders')::text", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(table, None, "nothing was written, not even the tables");
    // Once the writer is gone, the copy runs. Unlocked explicitly: a dropped client's backend
    // ends (and lets go of the lock) some time after the drop returns.
    let unlock = format!("SELECT pg_advisory_unlock({})", tributary::lease::KEY_SQL);
    holder.execute(&unlock, &[&"test"]).await.unwrap();
    drop(holder);
    let report = full_sync(
        &w.config,
        w.mappings.clone(),
        None,
        FullSyncMode::Replace,
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!report.interrupted);
    w.assert_equal().await;
    w.stop().await;
}
