//! `verify --mode full` while `sync` streams a writer's changes: no false alarm, and a real
//! drift injected meanwhile is still reported.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use rand::Rng;
use serde_json::json;
use tributary::verify::{Kind, Mode, Recheck, VerifyOptions};

use super::{collection, listed, order, World};
use crate::support::wait_until;

/// Changes `o0000`..`o0999` (`$set`, `$push` of an item, `$pop`), inserts new orders and
/// deletes some of them again, until `stop`. Paced so that `sync` keeps up.
fn spawn_writer(
    orders: mongodb::Collection<bson::Document>,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next_new = 5000usize;
        while !stop.load(Ordering::Relaxed) {
            let (pick, kind, qty) = {
                let mut rng = rand::thread_rng();
                (
                    rng.gen_range(0..1000usize),
                    rng.gen_range(0..10u8),
                    rng.gen_range(0..1000i32),
                )
            };
            let id = format!("o{pick:04}");
            match kind {
                0..=5 => {
                    orders
                        .update_one(
                            doc! {"_id": &id},
                            doc! {"$set": {"qty": qty, "note": format!("w{qty}")}},
                        )
                        .await
                        .unwrap();
                }
                6 => {
                    orders
                        .update_one(
                            doc! {"_id": &id},
                            doc! {"$push": {"items": {"sku": "pushed", "n": qty}}},
                        )
                        .await
                        .unwrap();
                }
                7 => {
                    orders
                        .update_one(doc! {"_id": &id}, doc! {"$pop": {"items": 1}})
                        .await
                        .unwrap();
                }
                8 => {
                    orders.insert_one(order(next_new)).await.unwrap();
                    next_new += 1;
                }
                _ => {
                    if next_new > 5000 {
                        let gone = format!("o{:04}", next_new - 1);
                        orders.delete_one(doc! {"_id": gone}).await.unwrap();
                        next_new -= 1;
                    }
                }
            }
            writes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_verify_during_a_live_sync_reports_equal_and_still_finds_real_drift() {
    let w = World::new().await;
    w.seed(1500, 20).await;
    let (stop_sync, sync_task) = w.start_sync();
    let copied = "SELECT count(*) FILTER (WHERE phase = 'streaming') FROM tributary.collections WHERE stream = 'test'";
    wait_until(60, "the initial copy of both collections", || async {
        matches!(w.db.client.query_one(copied, &[]).await, Ok(r) if r.get::<_, i64>(0) == 2)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(w.orders(), stop.clone(), writes.clone());
    wait_until(30, "the writer's first 100 writes", || async {
        writes.load(Ordering::Relaxed) >= 100
    })
    .await;

    // Auto: `sync` holds the stream's lock, so differences wait for its checkpoint.
    let opts = || VerifyOptions {
        mode: Mode::Full,
        recheck: Recheck::Auto,
        ..VerifyOptions::default()
    };
    let before = writes.load(Ordering::Relaxed);
    let r = w.verify_with(opts()).await;
    let during = writes.load(Ordering::Relaxed) - before;
    let orders = collection(&r, "shop.orders");
    eprintln!(
        "live verify: {during} writes during it, {} documents, {} rechecked",
        orders.documents, orders.rechecked
    );
    assert!(during > 0, "the writer must write while verify runs");
    assert!(r.equal, "false alarm under a live stream: {r:#?}");

    // Real drift on documents nobody writes, while the writer goes on: a changed row, and a
    // row without a document (which must survive the rounds of the extra-row recheck).
    w.sql("UPDATE customers SET name = 'Eve' WHERE id = 'c005'")
        .await;
    w.sql("INSERT INTO customers (id, name) VALUES ('c999', 'ghost')")
        .await;
    let r = w.verify_with(opts()).await;
    assert!(!r.equal, "{r:#?}");
    assert!(collection(&r, "shop.orders").is_equal(), "{r:#?}");
    let customers = collection(&r, "shop.customers");
    assert_eq!(
        (customers.missing, customers.extra, customers.different),
        (0, 1, 1),
        "{customers:#?}"
    );
    let extra = listed(customers, Kind::Extra, "customers");
    assert_eq!(extra[0].id, json!("c999"));
    let d = listed(customers, Kind::Different, "customers");
    assert_eq!(d[0].id, json!("c005"));
    assert_eq!(
        (&d[0].mongo, &d[0].postgres),
        (&Some(json!("customer 5")), &Some(json!("Eve")))
    );
    assert!(customers.rechecked >= 1);

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let _ = stop_sync.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(30), sync_task)
        .await
        .expect("sync did not stop within 30 s")
        .unwrap();
    assert!(stopped.is_ok(), "sync failed: {stopped:?}");
}
