//! DDL: drop and dropDatabase truncate the mapped tables; a rename away truncates, a rename
//! onto a mapped name copies the renamed collection.

use bson::doc;
use tributary::config::SourceKind;

use super::{order, stop_sync, World};

async fn drop_truncates(kind: SourceKind) {
    let w = World::new(kind, 100).await;
    let (stop, task) = w.start_sync();
    w.orders()
        .insert_many(vec![order("a", 1, &["x"]), order("b", 2, &["y"])])
        .await
        .unwrap();
    w.sync_point("first").await;
    w.orders().drop().await.unwrap();
    w.orders().insert_one(order("c", 3, &["z"])).await.unwrap();
    w.sync_point("after-drop").await;
    w.assert_equal().await;
    w.mongo.database("shop").drop().await.unwrap();
    w.orders().insert_one(order("d", 4, &[])).await.unwrap();
    w.sync_point("after-drop-database").await;
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_drop_truncates_the_tables() {
    drop_truncates(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_drop_truncates_the_tables() {
    drop_truncates(SourceKind::Oplog).await;
}

async fn rename(kind: SourceKind) {
    let w = World::new(kind, 100).await;
    let (stop, task) = w.start_sync();
    w.orders()
        .insert_many(vec![order("a", 1, &["x"])])
        .await
        .unwrap();
    w.sync_point("first").await;
    // Rename away: the mapped name is now empty.
    w.mongo
        .database("admin")
        .run_command(doc! {"renameCollection": "shop.orders", "to": "shop.archive"})
        .await
        .unwrap();
    w.sync_point("after-rename-away").await;
    w.assert_equal().await;
    // Rename onto the mapped name: its documents arrive without insert events.
    let staging = w
        .mongo
        .database("shop")
        .collection::<bson::Document>("staging");
    staging
        .insert_many(vec![order("s1", 1, &["p"]), order("s2", 2, &[])])
        .await
        .unwrap();
    w.orders().drop().await.unwrap();
    let since = w.pg_now().await;
    w.mongo
        .database("admin")
        .run_command(doc! {"renameCollection": "shop.staging", "to": "shop.orders"})
        .await
        .unwrap();
    w.sync_point("after-rename-onto").await;
    w.wait_for_copy_since("shop.orders", since).await;
    // The re-copy runs online after the batch holding the rename committed.
    w.sync_point("after-copy").await;
    w.assert_equal().await;
    stop_sync(stop, task).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_rename_truncates_and_copies() {
    rename(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_rename_truncates_and_copies() {
    rename(SourceKind::Oplog).await;
}
