//! Crash consistency: the writer's backend is killed at random moments while a large batch is
//! being applied; afterwards rows and checkpoint must agree (both before or both after).

use std::time::{Duration, Instant};

use rand::Rng;
use tributary::mapping::value::PgValue;
use tributary::sink::{Batch, Change, DocumentRows, Sink};

use super::{checkpoint, orders_mapping, sink_for, stored_token};
use crate::support::fresh_database;

const ROWS: usize = 20_000;
const ROUNDS: i64 = 24;

/// Round `n` rewrites every order with note `v<n>` and one child whose sku is `v<n>`, deletes
/// and re-inserts nothing else: the state after round `n` is fully described by `n`.
fn round(n: i64) -> Batch {
    let note = format!("v{n}");
    let changes = (0..ROWS)
        .map(|i| {
            let key = PgValue::Text(format!("order-{i:06}"));
            Change::Upsert {
                collection: 0,
                key: key.clone(),
                rows: DocumentRows {
                    parent: vec![
                        key.clone(),
                        PgValue::Numeric(format!("{i}.{:02}", n % 100)),
                        PgValue::Text(note.clone()),
                        PgValue::Json(serde_json::json!({ "round": n })),
                    ],
                    children: vec![vec![vec![
                        key,
                        PgValue::Int4(0),
                        PgValue::Text(note.clone()),
                        PgValue::Int4(i as i32),
                    ]]],
                    ..DocumentRows::default()
                },
            }
        })
        .collect();
    Batch {
        changes,
        dead_letters: vec![],
        checkpoint: Some(checkpoint(n)),
    }
}

/// Asserts the tables hold exactly the state of round `n`.
async fn assert_state_of_round(db: &crate::support::TestDb, n: i64) {
    let note = format!("v{n}");
    let row = db
        .client
        .query_one(
            "SELECT (SELECT count(*) FROM orders), \
                    (SELECT count(*) FROM orders WHERE note = $1 AND extra->>'round' = $2), \
                    (SELECT count(*) FROM order_items), \
                    (SELECT count(*) FROM order_items WHERE sku = $1)",
            &[&note, &n.to_string()],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let r = ROWS as i64;
    assert_eq!(counts, (r, r, r, r), "tables do not match checkpoint {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writer_mid_batch_never_splits_rows_from_checkpoint() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, orders_mapping()).await;

    // Round 0 unkilled, to learn how long a batch takes here.
    let started = Instant::now();
    sink.apply(&round(0)).await.unwrap();
    let typical = started.elapsed();
    assert_state_of_round(&db, 0).await;

    let mut killed = 0;
    let mut committed = 0;
    let mut rng = rand::thread_rng();
    for n in 1..=ROUNDS {
        let batch = round(n);
        let delay = Duration::from_micros(rng.gen_range(0..=typical.as_micros() as u64));
        let killer_client = db.connect().await;
        // The random delay *is* the experiment: it picks the instant of the crash.
        let killer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            killer_client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                       AND application_name = 'tributary'",
                    &[],
                )
                .await
                .unwrap()
        });
        let result = sink.apply(&batch).await;
        killer.await.unwrap();
        match &result {
            Ok(()) => committed += 1,
            Err(e) => {
                killed += 1;
                assert!(
                    e.is_retryable(),
                    "a killed connection must be retryable: {e}"
                );
            }
        }

        let token = stored_token(&db).await.expect("a checkpoint exists");
        let at = token["n"].as_i64().unwrap();
        assert!(at == n || at == n - 1, "checkpoint {at} after round {n}");
        if result.is_ok() {
            assert_eq!(at, n, "Ok means committed");
        }
        assert_state_of_round(&db, at).await;

        // A failed round is replayed, as the pipeline would after a crash.
        if at == n - 1 {
            sink.apply(&round(n)).await.unwrap();
            assert_state_of_round(&db, n).await;
        }
    }
    assert!(
        killed > 0,
        "no round was interrupted ({committed} committed)"
    );
}
