//! Fail-over between two `tributary sync` processes with one stream name: the second stands by,
//! takes over within 10 s of the first one's SIGKILL, and the result is equal; `status --json`
//! names the new writer.

use std::time::Duration;

use bson::doc;
use tokio::sync::watch;
use tributary::config::SourceKind;

use super::{holder_pid, wait_until, ConfigFile, Daemon};
use crate::stream::{order, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_after_the_writer_is_killed() {
    let w = World::new(SourceKind::Oplog, 100).await;
    let cfg = ConfigFile::new(&w, "test", "public", "oplog", 100);
    let first = Daemon::spawn(&cfg.path, cfg.dir.path().join("first.log"));
    wait_until(60, "the first daemon to take the lock", || async {
        holder_pid(&w.db.client, "test").await.is_some()
    })
    .await;
    let first_pid = holder_pid(&w.db.client, "test").await.unwrap();
    let second = Daemon::spawn(&cfg.path, cfg.dir.path().join("second.log"));
    wait_until(60, "the second daemon to stand by", || async {
        second.log_text().contains("Standing by")
    })
    .await;
    let standby_log = second.log_text();
    assert!(
        standby_log.contains("stream test") && standby_log.contains(&format!("pid {first_pid}")),
        "the standby names the stream and the holder: {standby_log}"
    );
    assert_eq!(
        standby_log.matches("Standing by").count(),
        1,
        "logged once: {standby_log}"
    );

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let orders = w.orders();
    let workload = tokio::spawn(async move {
        let mut n = 0;
        while !*stop_rx.borrow() {
            n += 1;
            orders
                .insert_one(order(
                    &format!("o{n:05}"),
                    n,
                    &["x", "y"][..(n as usize) % 3],
                ))
                .await
                .unwrap();
            if n % 3 == 0 {
                orders
                    .update_one(
                        doc! {"_id": format!("o{:05}", n - 1)},
                        doc! {"$set": {"items": [{"sku": "u"}]}},
                    )
                    .await
                    .unwrap();
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), stop_rx.changed()).await;
        }
    });
    w.sync_point_in("public", "first-writes").await;
    first.kill().await;
    let killed_at = tokio::time::Instant::now();
    wait_until(30, "a new holder", || async {
        holder_pid(&w.db.client, "test")
            .await
            .is_some_and(|p| p != first_pid)
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(10), "take-over took {took:?}");
    stop_tx.send(true).unwrap();
    workload.await.unwrap();
    w.sync_point_in("public", "after-takeover").await;
    w.assert_equal().await;

    let new_pid = holder_pid(&w.db.client, "test").await.unwrap();
    assert!(
        second
            .log_text()
            .contains(&format!("backend_pid={new_pid}")),
        "the standby is the new holder: {}",
        second.log_text()
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["status", "--json", "--config"])
        .arg(&cfg.path)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "test")
        .unwrap();
    assert_eq!(
        stream["writer"]["pid"], new_pid,
        "status names the new writer: {json}"
    );
    assert!(stream["lag_seconds"].is_number(), "{json}");
    assert_eq!(second.terminate().await, Some(0));
}
