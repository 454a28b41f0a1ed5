//! Crash safety of the real binary: `tributary sync` is SIGKILLed at random moments (during the
//! full sync of a few thousand documents, then while a concurrent workload of inserts, updates,
//! replaces, deletes, transactions, child arrays and dead-lettering documents runs) and
//! restarted each time. At the end the tables equal the documents, child rows are exact, and
//! every dead-lettered document version was recorded exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{doc, Bson, Document};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tributary::config::SourceKind;

use super::{phase, wait_until, ConfigFile, Daemon};
use crate::stream::{order, World};

const SEEDED: usize = 3000;
const KILLS: usize = 22;

/// Writes until `stop`; returns the ids of the documents inserted with a value the mapping
/// refuses (each must be dead-lettered once).
async fn workload(
    orders: mongodb::Collection<Document>,
    client: mongodb::Client,
    mut stop: watch::Receiver<bool>,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut live: Vec<String> = (0..SEEDED).map(|i| format!("seed{i:05}")).collect();
    let mut bad = Vec::new();
    let mut n = 0usize;
    while !*stop.borrow() {
        n += 1;
        let skus: Vec<String> = (0..rng.gen_range(0..4))
            .map(|k| format!("s{n}-{k}"))
            .collect();
        let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
        match rng.gen_range(0..10) {
            0..=2 => {
                let id = format!("w{n:06}");
                orders
                    .insert_one(order(&id, n as i32, &skus))
                    .await
                    .unwrap();
                live.push(id);
            }
            3 | 4 if !live.is_empty() => {
                let id = &live[rng.gen_range(0..live.len())];
                let items: Vec<Bson> = skus
                    .iter()
                    .map(|s| Bson::Document(doc! {"sku": *s}))
                    .collect();
                orders
                    .update_one(
                        doc! {"_id": id},
                        doc! {"$set": {"qty": n as i32, "items": items}},
                    )
                    .await
                    .unwrap();
            }
            5 if !live.is_empty() => {
                let id = live[rng.gen_range(0..live.len())].clone();
                orders
                    .replace_one(doc! {"_id": &id}, order(&id, -(n as i32), &skus))
                    .await
                    .unwrap();
            }
            6 if !live.is_empty() => {
                let id = live.swap_remove(rng.gen_range(0..live.len()));
                orders.delete_one(doc! {"_id": id}).await.unwrap();
            }
            7 => {
                // One MongoDB transaction: never split across two Postgres transactions.
                let mut session = client.start_session().await.unwrap();
                session.start_transaction().await.unwrap();
                let a = format!("t{n:06}a");
                let b = format!("t{n:06}b");
                orders
                    .insert_one(order(&a, 1, &skus))
                    .session(&mut session)
                    .await
                    .unwrap();
                orders
                    .insert_one(order(&b, 2, &[]))
                    .session(&mut session)
                    .await
                    .unwrap();
                if let Some(id) = live.first() {
                    orders
                        .update_one(doc! {"_id": id}, doc! {"$inc": {"qty": 1}})
                        .session(&mut session)
                        .await
                        .unwrap();
                }
                session.commit_transaction().await.unwrap();
                live.push(a);
                live.push(b);
            }
            8 => {
                let id = format!("bad{n:06}");
                orders
                    .insert_one(doc! {"_id": &id, "qty": format!("not a number {n}")})
                    .await
                    .unwrap();
                bad.push(id);
            }
            _ => {
                let id = format!("w{n:06}");
                orders
                    .insert_one(order(&id, n as i32, &skus))
                    .await
                    .unwrap();
                live.push(id);
            }
        }
        if n.is_multiple_of(20) {
            // Let the other core breathe; the kills land between and inside batches either way.
            let _ = tokio::time::timeout(Duration::from_millis(5), stop.changed()).await;
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_binary_restarts_without_loss_or_doubling() {
    let w = World::new(SourceKind::ChangeStream, 200).await;
    let docs: Vec<Document> = (0..SEEDED)
        .map(|i| order(&format!("seed{i:05}"), i as i32, &["a", "b", "c"][..i % 4]))
        .collect();
    for chunk in docs.chunks(1000) {
        w.orders().insert_many(chunk.to_vec()).await.unwrap();
    }
    let cfg = ConfigFile::new(&w, "test", "public", "change_stream", 200);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut rng = StdRng::seed_from_u64(42);
    let mut workload_task = None;
    let mut in_copy = 0;
    let mut in_stream = 0;
    for kill in 0..KILLS {
        let started = chrono::Utc::now();
        let daemon = Daemon::spawn(&cfg.path, cfg.dir.path().join(format!("run{kill}.log")));
        if kill < 3 {
            // The first kills land in the full sync: once the copy has begun. A copy resumed
            // after a kill may finish before it is seen (its phase is then `streaming`); the
            // count below says where each kill landed.
            wait_until(60, "the copy to begin", || async {
                phase(&w).await.is_some()
            })
            .await;
        } else {
            if kill == 3 {
                workload_task = Some(tokio::spawn(workload(
                    w.orders(),
                    w.mongo.clone(),
                    stop_rx.clone(),
                )));
            }
            // The rest land while streaming: once this run has committed a checkpoint.
            wait_until(60, "this run to stream", || async {
                phase(&w).await.as_deref() == Some("streaming")
                    && checkpoint_written(&w).await.is_some_and(|t| t > started)
            })
            .await;
        }
        // At once in the copy (a resumed copy of 3,000 documents may end within the pause),
        // after a random pause while streaming.
        if kill >= 3 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        }
        match phase(&w).await.as_deref() {
            Some("streaming") => in_stream += 1,
            _ => in_copy += 1,
        }
        daemon.kill().await;
    }
    assert!(
        in_copy >= 1 && in_stream >= 10,
        "kills: {in_copy} during the copy, {in_stream} while streaming"
    );
    stop_tx.send(true).unwrap();
    let bad = workload_task.unwrap().await.unwrap();
    assert!(
        !bad.is_empty(),
        "the workload wrote no dead-lettering document"
    );

    let daemon = Daemon::spawn(&cfg.path, cfg.dir.path().join("final.log"));
    w.sync_point_in("public", "after-crashes").await;
    // Each refused insert is one dead letter, however many times its batch was replayed.
    let rows = w
        .db
        .client
        .query(
            "SELECT document_key::text, count(*) FROM tributary.dead_letters WHERE stream = 'test' GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    let letters: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for id in &bad {
        let n = letters
            .iter()
            .filter(|(k, _)| k.contains(id.as_str()))
            .map(|(_, n)| *n)
            .sum::<i64>();
        assert_eq!(
            n, 1,
            "document {id} dead-lettered {n} times; all: {letters:?}"
        );
    }
    assert_eq!(
        letters.len(),
        bad.len(),
        "unexpected dead letters: {letters:?}"
    );
    // The refused documents have no rows; remove them so documents and rows compare 1:1.
    w.orders()
        .delete_many(doc! {"_id": {"$in": &bad}})
        .await
        .unwrap();
    w.sync_point_in("public", "end").await;
    w.assert_equal().await;
    let code = daemon.terminate().await;
    assert_eq!(code, Some(0), "SIGTERM is a clean stop");
}

async fn checkpoint_written(w: &World) -> Option<chrono::DateTime<chrono::Utc>> {
    w.db.client
        .query_opt(
            "SELECT updated_at FROM tributary.checkpoints WHERE stream = 'test'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.get(0))
}
