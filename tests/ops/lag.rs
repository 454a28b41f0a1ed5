//! Lag that tells the truth (SPEC "Metrics"): with `sync` streaming, the simulator process is
//! stopped (SIGSTOP) for 15 s. MongoDB neither answers nor fails, which is the case a lag made
//! only of the events read missed (it stayed 0): now `tributary_lag_seconds` rises past 10 s,
//! `tributary_source_connected` drops to 0 and `/readyz` fails within the 15 s; after SIGCONT
//! both recover and the tables end equal to the collection. Both sources.

use std::process::Stdio;
use std::time::Duration;

use bson::doc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tributary::config::{SecretUri, SourceKind};
use tributary::metrics;

use super::{sample_sum, wait_until, Running};
use crate::stream::{order, World};

/// How long the simulator stays stopped.
const STOPPED: Duration = Duration::from_secs(15);
/// `metrics.ready_max_lag_secs` for the run: the lag the scenario must exceed.
const READY_MAX_LAG_SECS: u64 = 10;
/// Marks the child process that only runs the simulator.
const SIM_PROCESS_ENV: &str = "TRIBUTARY_TEST_SIM_PROCESS";

/// Not a test: the simulator in a process of its own, so the scenario can stop it. The
/// scenario runs this test binary again with only this function selected.
#[tokio::test]
#[ignore = "helper process of ops::lag, started by the scenario itself"]
async fn simulator_process() {
    assert!(
        std::env::var_os(SIM_PROCESS_ENV).is_some(),
        "run by ops::lag's scenario only"
    );
    let sim = mongo_sim::start(mongo_sim::SimOptions::default())
        .await
        .unwrap();
    println!("mongo-sim listening on {}", sim.uri());
    std::future::pending::<()>().await;
}

/// The simulator process; killed when dropped.
struct SimProcess {
    child: Child,
    uri: String,
}

impl SimProcess {
    async fn start() -> SimProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "ops::lag::simulator_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(SIM_PROCESS_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let uri = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // The harness may print the test's name on the same line first.
                if let Some((_, uri)) = line.split_once("mongo-sim listening on ") {
                    return uri.trim().to_owned();
                }
            }
            panic!("the simulator process ended before listening");
        })
        .await
        .expect("the simulator process did not listen within 60 s");
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        SimProcess { child, uri }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {signal} {pid}");
    }
}

/// What the scenario saw while the simulator was stopped.
#[derive(Debug, Default)]
struct Seen {
    max_lag: f64,
    lag_above_bound_after: Option<Duration>,
    unready_after: Option<Duration>,
    disconnected_after: Option<Duration>,
}

async fn outage(source: SourceKind) {
    let mut w = World::new(source, 100).await;
    // Stream from the simulator process instead of the world's in-process one.
    let sim = SimProcess::start().await;
    w.mongo = mongodb::Client::with_uri_str(&sim.uri).await.unwrap();
    w.config.mongo.uri = SecretUri::new(sim.uri.clone());
    for i in 0..10 {
        w.orders()
            .insert_one(order(&format!("pre{i}"), i, &["a"]))
            .await
            .unwrap();
    }
    let run = Running::start(&w.config, w.mappings.clone(), READY_MAX_LAG_SECS).await;
    w.sync_point("before").await;
    wait_until(60, "/readyz 200 and lag 0 before the outage", || async {
        run.get("/readyz").await.0 == 200
            && sample_sum(&run.get("/metrics").await.1, metrics::LAG_SECONDS, "") == 0.0
    })
    .await;
    assert_eq!(run.metrics.source_connected.get(), 1, "connected before");
    // The oplog's bounds are read once the checkpoint is known: the simulator started moments
    // ago, so its window is short and the checkpoint is as far ahead of its oldest entry.
    wait_until(
        60,
        "the oplog window and the checkpoint headroom",
        || async {
            let text = run.get("/metrics").await.1;
            let window = sample_sum(&text, metrics::OPLOG_WINDOW_SECONDS, "");
            let headroom = sample_sum(&text, metrics::CHECKPOINT_HEADROOM_SECONDS, "");
            (0.0..600.0).contains(&window) && (0.0..600.0).contains(&headroom)
        },
    )
    .await;

    sim.signal("-STOP");
    let stopped_at = Instant::now();
    let mut seen = Seen::default();
    while stopped_at.elapsed() < STOPPED {
        let at = stopped_at.elapsed();
        let text = run.get("/metrics").await.1;
        let lag = sample_sum(&text, metrics::LAG_SECONDS, "");
        seen.max_lag = seen.max_lag.max(lag);
        if lag > READY_MAX_LAG_SECS as f64 {
            seen.lag_above_bound_after.get_or_insert(at);
        }
        if run.get("/readyz").await.0 == 503 {
            seen.unready_after.get_or_insert(at);
        }
        if sample_sum(&text, metrics::SOURCE_CONNECTED, "") == 0.0 {
            seen.disconnected_after.get_or_insert(at);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.signal("-CONT");
    let resumed_at = Instant::now();
    eprintln!("{source:?}: while stopped {STOPPED:?}: {seen:?}");
    assert!(
        seen.max_lag > READY_MAX_LAG_SECS as f64,
        "lag rose above {READY_MAX_LAG_SECS} s while MongoDB was stopped: {seen:?}"
    );
    assert!(
        seen.unready_after.is_some_and(|t| t <= STOPPED),
        "/readyz failed within {STOPPED:?}: {seen:?}"
    );
    assert!(
        seen.disconnected_after.is_some(),
        "tributary_source_connected dropped to 0: {seen:?}"
    );

    wait_until(
        120,
        "/readyz 200 and lag back under 3 s after SIGCONT",
        || async {
            run.get("/readyz").await.0 == 200
                && sample_sum(&run.get("/metrics").await.1, metrics::LAG_SECONDS, "") <= 3.0
        },
    )
    .await;
    eprintln!(
        "{source:?}: ready with lag ≤ 3 s again {:?} after SIGCONT",
        resumed_at.elapsed()
    );
    wait_until(60, "the source connected again", || async {
        run.metrics.source_connected.get() == 1
    })
    .await;

    // The stream goes on exactly where it was.
    w.orders()
        .update_one(doc! {"_id": "pre1"}, doc! {"$set": {"qty": 100}})
        .await
        .unwrap();
    w.orders().delete_one(doc! {"_id": "pre2"}).await.unwrap();
    for i in 0..10 {
        w.orders()
            .insert_one(order(&format!("post{i}"), i, &["b", "c"]))
            .await
            .unwrap();
    }
    w.sync_point("after").await;
    w.assert_equal().await;
    run.stop().await;
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_rises_and_readyz_fails_while_mongodb_is_stopped_change_stream() {
    outage(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_rises_and_readyz_fails_while_mongodb_is_stopped_oplog() {
    outage(SourceKind::Oplog).await;
}
