//! `/metrics`, `/healthz` and `/readyz` of a running `sync`: every SPEC metric is exposed, lag
//! rises while the writer is blocked and returns to 0 when the source is idle, and readiness
//! follows the phase and the lag.

use bson::doc;
use tributary::config::SourceKind;
use tributary::metrics::{self, ALL};

use super::{fail_point, wait_until, Running};
use crate::stream::{order, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_served_and_lag_and_readiness_follow_the_stream() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    // Something for the full sync to copy, including a document that dead-letters (qty is an
    // integer column).
    for i in 0..20 {
        w.orders()
            .insert_one(order(&format!("pre{i:02}"), i, &["a", "b"]))
            .await
            .unwrap();
    }
    w.orders()
        .insert_one(doc! {"_id": "bad-pre", "qty": "not a number"})
        .await
        .unwrap();

    // Hold the stream's lock ourselves: the daemon stands by, healthy but not ready.
    let blocker = w.db.connect().await;
    blocker
        .execute(
            &format!("SELECT pg_advisory_lock({})", tributary::lease::KEY_SQL),
            &[&"test"],
        )
        .await
        .unwrap();
    // ready_max_lag_secs = 1, so a writer blocked for a few seconds makes it unready.
    let run = Running::start(&w.config, w.mappings.clone(), 1).await;
    assert_eq!(
        run.get("/healthz").await.0,
        200,
        "/healthz while standing by"
    );
    assert_eq!(run.get("/readyz").await.0, 503, "/readyz before streaming");
    assert!(
        !run.metrics.is_ready(),
        "not ready while another session holds the lock"
    );
    blocker
        .execute(
            &format!("SELECT pg_advisory_unlock({})", tributary::lease::KEY_SQL),
            &[&"test"],
        )
        .await
        .unwrap();

    w.sync_point_in("public", "streaming").await;
    wait_until(30, "/readyz 200 once streaming and caught up", || async {
        run.get("/readyz").await.0 == 200
    })
    .await;

    // A dropped connection, a dead letter and some traffic, so every labelled metric has a
    // sample.
    fail_point(
        &w.mongo,
        bson::Bson::Document(doc! {"times": 1}),
        doc! {"failCommands": ["getMore"], "closeConnection": true},
    )
    .await;
    w.orders()
        .insert_one(doc! {"_id": "bad-stream", "qty": "nope"})
        .await
        .unwrap();
    w.orders()
        .update_one(doc! {"_id": "pre01"}, doc! {"$set": {"qty": 100}})
        .await
        .unwrap();
    w.orders().delete_one(doc! {"_id": "pre02"}).await.unwrap();
    w.sync_point_in("public", "labels").await;

    let (status, text) = run.get("/metrics").await;
    assert_eq!(status, 200);
    // `tributary_nulled_values_total` has series only for collections that say
    // `on_error: null` (its only known label values); this mapping does not (ops::deadletters
    // covers it).
    for name in ALL
        .into_iter()
        .filter(|n| *n != metrics::NULLED_VALUES_TOTAL)
    {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
    // The 20 documents copied as rows; `bad-pre` is a dead letter, counted below.
    assert_eq!(
        super::sample_sum(&text, metrics::FULL_SYNC_DOCUMENTS_TOTAL, "shop.orders"),
        20.0,
        "{text}"
    );
    assert!(super::sample_sum(&text, metrics::DEAD_LETTERS_TOTAL, "shop.orders") >= 1.0);
    assert!(super::sample_sum(&text, metrics::EVENTS_TOTAL, "op=\"delete\"") >= 1.0);
    assert!(
        super::sample_sum(&text, metrics::ERRORS_TOTAL, "kind=\"mongo_network\"") >= 1.0,
        "the dropped connection is counted:\n{text}"
    );
    assert_eq!(super::sample_sum(&text, metrics::UP, ""), 1.0);

    // Idle source: lag goes back to 0.
    wait_until(10, "lag 0 on an idle stream", || async {
        super::sample_sum(&run.get("/metrics").await.1, metrics::LAG_SECONDS, "") == 0.0
    })
    .await;

    // Burst against a blocked writer: lag rises above 0 and /readyz fails, then recovers.
    let locker = w.db.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for i in 0..50 {
        w.orders()
            .insert_one(order(&format!("burst{i:02}"), i, &["x"]))
            .await
            .unwrap();
    }
    // Cluster times have a one-second resolution: keep the writer blocked for a few.
    let blocked_at = tokio::time::Instant::now();
    let mut saw_lag = false;
    let mut saw_unready = false;
    while blocked_at.elapsed() < std::time::Duration::from_secs(3) {
        let text = run.get("/metrics").await.1;
        saw_lag |= super::sample_sum(&text, metrics::LAG_SECONDS, "") > 0.0;
        saw_unready |= run.get("/readyz").await.0 == 503;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    locker.batch_execute("COMMIT").await.unwrap();
    // The blocked batch commits with events seconds old; watch until it is caught up again.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = run.get("/metrics").await.1;
        saw_lag |= super::sample_sum(&text, metrics::LAG_SECONDS, "") > 0.0;
        saw_unready |= run.get("/readyz").await.0 == 503;
        let applied =
            w.db.client
                .query("SELECT 1 FROM public.orders WHERE id = 'burst49'", &[])
                .await
                .is_ok_and(|r| !r.is_empty());
        if applied {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst was never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..40 {
        let text = run.get("/metrics").await.1;
        saw_lag |= super::sample_sum(&text, metrics::LAG_SECONDS, "") > 0.0;
        saw_unready |= run.get("/readyz").await.0 == 503;
        if saw_lag && saw_unready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        saw_lag,
        "lag never rose above 0 while the writer was blocked"
    );
    assert!(saw_unready, "/readyz never failed while lagging");
    wait_until(15, "lag 0 and /readyz 200 after the burst", || async {
        super::sample_sum(&run.get("/metrics").await.1, metrics::LAG_SECONDS, "") == 0.0
            && run.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(run.get("/healthz").await.0, 200);

    w.orders()
        .delete_many(doc! {"_id": {"$in": ["bad-pre", "bad-stream"]}})
        .await
        .unwrap();
    w.sync_point_in("public", "end").await;
    w.assert_equal().await;
    run.stop().await;
    w.stop().await;
}
