//! Injected faults, each while a stream is running: MongoDB fail points (`failCommand`) through
//! the real driver, a Postgres session killed under the writer, and a Postgres restart. After
//! each the stream continues, the tables equal the documents, and `tributary_errors_total`
//! counted the failure under its kind (where tributary can see it).

use std::process::Command;

use bson::{doc, Bson, Document};
use tributary::config::{Config, SourceKind};
use tributary::metrics::ERRORS_TOTAL;

use super::{config_text, fail_point, rows_in, wait_until, Running};
use crate::stream::{order, World};

/// One fault: the fail point's `data`, and the `kind` label it must be counted under.
/// `counted` is false where the driver recovers without telling anyone (a change stream
/// resumes past a labelled or timed-out `getMore` on its own; see `count_driver_failures`).
struct Fault {
    name: &'static str,
    data: Document,
    kind: &'static str,
    counted: bool,
}

fn faults(kind: SourceKind) -> Vec<Fault> {
    // The change stream reopens with `aggregate`, the oplog tail with `find`.
    let reopen = match kind {
        SourceKind::ChangeStream => "aggregate",
        SourceKind::Oplog => "find",
    };
    vec![
        Fault {
            name: "closed connection on getMore",
            data: doc! {"failCommands": ["getMore"], "closeConnection": true},
            kind: "mongo_network",
            counted: true,
        },
        Fault {
            name: "closed connection on getMore and on the reopen",
            data: doc! {"failCommands": ["getMore", reopen], "closeConnection": true},
            kind: "mongo_network",
            counted: true,
        },
        Fault {
            name: "ResumableChangeStreamError label",
            data: doc! {"failCommands": ["getMore"], "errorCode": 280,
            "errorLabels": ["ResumableChangeStreamError"]},
            kind: "mongo_resumable",
            counted: kind == SourceKind::Oplog,
        },
        Fault {
            name: "10107 NotWritablePrimary (step-down)",
            data: doc! {"failCommands": ["getMore"], "errorCode": 10107},
            kind: "mongo_step_down",
            counted: true,
        },
        Fault {
            name: "50 MaxTimeMSExpired",
            data: doc! {"failCommands": ["getMore"], "errorCode": 50},
            kind: "mongo_timeout",
            counted: kind == SourceKind::Oplog,
        },
    ]
}

async fn write_some(w: &World, tag: &str) {
    for i in 0..10 {
        w.orders()
            .insert_one(order(&format!("{tag}-{i}"), i, &["p", "q"]))
            .await
            .unwrap();
    }
    w.orders()
        .update_one(
            doc! {"_id": format!("{tag}-0")},
            doc! {"$set": {"qty": 99, "items": [{"sku": "r"}]}},
        )
        .await
        .unwrap();
    w.orders()
        .delete_one(doc! {"_id": format!("{tag}-1")})
        .await
        .unwrap();
}

async fn survives_faults(kind: SourceKind) {
    let w = World::new(kind, 50).await;
    write_some(&w, "before").await;
    let run = Running::start(&w.config, w.mappings.clone(), 30).await;
    w.sync_point_in("public", "start").await;

    for (n, fault) in faults(kind).into_iter().enumerate() {
        let before = run.counter(ERRORS_TOTAL, &format!("kind=\"{}\"", fault.kind));
        fail_point(&w.mongo, Bson::Document(doc! {"times": 2}), fault.data).await;
        write_some(&w, &format!("f{n}")).await;
        w.sync_point_in("public", &format!("after-{n}")).await;
        w.assert_equal().await;
        let after = run.counter(ERRORS_TOTAL, &format!("kind=\"{}\"", fault.kind));
        assert!(
            after > before || !fault.counted,
            "{}: tributary_errors_total{{kind={:?}}} did not count it ({before} -> {after})",
            fault.name,
            fault.kind
        );
    }

    // The writer's session is killed in the middle of a batch: a lock makes the batch wait
    // inside its transaction, then that session is terminated (the sink's pool connections are
    // named `tributary`; the lock connection `tributary sync test` is left alone).
    let before = run.counter(ERRORS_TOTAL, "kind=\"postgres_");
    let locker = w.db.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    w.orders()
        .insert_one(order("blocked", 1, &["b"]))
        .await
        .unwrap();
    let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                   AND application_name = 'tributary' AND wait_event_type = 'Lock'";
    wait_until(30, "the writer to wait on the table lock", || async {
        w.db.client
            .query(waiting, &[])
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    let killed: i64 =
        w.db.client
            .query_one(
                &format!("SELECT count(pg_terminate_backend(pid)) FROM ({waiting}) AS w"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(killed, 1, "exactly the blocked writer session is killed");
    locker.batch_execute("COMMIT").await.unwrap();
    write_some(&w, "terminated").await;
    w.sync_point_in("public", "after-terminate").await;
    w.assert_equal().await;
    assert!(
        run.counter(ERRORS_TOTAL, "kind=\"postgres_") > before,
        "the killed writer session was not counted"
    );
    run.stop().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_survives_injected_faults() {
    survives_faults(SourceKind::ChangeStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_survives_injected_faults() {
    survives_faults(SourceKind::Oplog).await;
}

/// A Postgres crash takes back the last batches (they commit with `synchronous_commit = off`,
/// the default) together with their checkpoints. The stream notices, either at its next batch
/// (`checkpoint_rewound`) or because the crash also ended its lock connection (`lease_lost`),
/// streams again from the stored checkpoint, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_what_a_postgres_crash_took_back() {
    let w = World::new(SourceKind::ChangeStream, 50).await;
    let cluster = Cluster::start();
    {
        // Keep asynchronous commits in the WAL buffers for 10 s: the crash takes the last ones back.
        let pg = crate::support::postgres::connect(&cluster.url).await;
        pg.batch_execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
            .await
            .unwrap();
        pg.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    }
    let config = cluster.config(&w);
    let run = Running::start(&config, w.mappings.clone(), 30).await;
    write_some(&w, "before").await;
    wait_until(60, "the first rows", || cluster.has_order("before-9")).await;
    // Batches committed just now are visible but only in the WAL buffers: crash.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart("immediate");
        cluster
    })
    .await
    .unwrap();
    write_some(&w, "after").await;
    // `write_some`'s last write is the delete of `after-1`: only once it is applied has the
    // stream caught up (waiting for `after-9`, the last insert, compared too early).
    wait_until(120, "the stream to continue after the crash", || {
        cluster.has_settled("after")
    })
    .await;

    let pg = crate::support::postgres::connect(&cluster.url).await;
    assert_eq!(
        rows_in(&pg, "public").await,
        w.expected().await,
        "tables differ after the crash"
    );
    assert!(
        run.counter(ERRORS_TOTAL, "kind=\"checkpoint_rewound\"")
            + run.counter(ERRORS_TOTAL, "kind=\"lease_lost\"")
            > 0.0,
        "the crash was not noticed: {}",
        run.metrics.render()
    );
    run.stop().await;
    drop(pg);
    drop(cluster);
    w.stop().await;
}

/// A throwaway Postgres cluster of this test's own, so it can be restarted.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
}

impl Cluster {
    /// A `change_stream` config for `w` writing into this cluster (kept in its folder).
    fn config(&self, w: &World) -> Config {
        let path = self.dir.path().join("tributary.toml");
        std::fs::write(
            &path,
            config_text(w, &self.url, "test", "public", "change_stream", 50),
        )
        .unwrap();
        Config::load(&path).unwrap()
    }

    /// Whether `public.orders` holds the row `id` (false while the server is down).
    async fn has_order(&self, id: &str) -> bool {
        let Ok((c, conn)) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await else {
            return false;
        };
        tokio::spawn(conn);
        c.query("SELECT 1 FROM public.orders WHERE id = $1", &[&id])
            .await
            .is_ok_and(|r| !r.is_empty())
    }

    /// True once every write of `write_some(tag)` is in the tables: its last insert is there
    /// and its final delete applied (false while Postgres is unreachable).
    async fn has_settled(&self, tag: &str) -> bool {
        let Ok((c, conn)) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await else {
            return false;
        };
        tokio::spawn(conn);
        let sql = "SELECT count(*) FILTER (WHERE id = $1), count(*) FILTER (WHERE id = $2) \
                   FROM public.orders";
        let (last, deleted) = (format!("{tag}-9"), format!("{tag}-1"));
        c.query_one(sql, &[&last, &deleted])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1 && r.get::<_, i64>(1) == 0)
    }

    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script())
            .args(["start"])
            .arg(dir.path().join("pg"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg-throwaway.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Cluster { dir, url }
    }

    /// `pg_ctl restart -m MODE` (`fast`: every session is terminated and the WAL flushed;
    /// `immediate`: a crash, recovered at the start), back on the same port.
    fn restart(&self, mode: &str) {
        let pg = self.dir.path().join("pg");
        let port = std::fs::read_to_string(pg.join("port")).unwrap();
        let bindir = String::from_utf8(
            Command::new("bash")
                .args([
                    "-c",
                    "pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1",
                ])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let pg_ctl = format!("{}/pg_ctl", bindir.lines().next().unwrap().trim());
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            port.trim(),
            pg.display()
        );
        let data = pg.join("data");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let out = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", mode, "-w", "-l"])
            .arg(pg.join("postgres.log"))
            .args(["-o", &opts, "restart"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .output();
    }
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-throwaway.sh")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_postgres_restart_mid_stream() {
    let w = World::new(SourceKind::ChangeStream, 50).await;
    let cluster = Cluster::start();
    let config = cluster.config(&w);
    let pg = crate::support::postgres::connect(&cluster.url).await;

    write_some(&w, "before").await;
    let run = Running::start(&config, w.mappings.clone(), 30).await;
    wait_until(60, "the first rows", || cluster.has_order("before-9")).await;

    // Writes keep coming while the server restarts.
    let writer = {
        let orders = w.orders();
        tokio::spawn(async move {
            for i in 0..60 {
                orders
                    .insert_one(order(&format!("during-{i:02}"), i, &["z"]))
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let restart = tokio::task::spawn_blocking(move || {
        cluster.restart("fast");
        cluster
    });
    let cluster = restart.await.unwrap();
    writer.await.unwrap();
    drop(pg);
    w.orders()
        .insert_one(doc! {"_id": "~after-restart", "qty": 1})
        .await
        .unwrap();
    wait_until(120, "the stream to continue after the restart", || {
        cluster.has_order("~after-restart")
    })
    .await;

    let pg = crate::support::postgres::connect(&cluster.url).await;
    let expected = w.expected().await;
    assert_eq!(
        rows_in(&pg, "public").await,
        expected,
        "tables differ after the restart"
    );
    assert!(
        run.counter(ERRORS_TOTAL, "kind=\"postgres_") + run.counter(ERRORS_TOTAL, "kind=\"lease")
            > 0.0,
        "the restart was not counted: {}",
        run.metrics.render()
    );
    run.stop().await;
    drop(pg);
    drop(cluster);
    w.stop().await;
}

/// What an operator reads in the log of a Postgres restart under `sync` (the binary, logging
/// to a file): warnings about the lost connection, one more "Streaming changes." when it is
/// back, no ERROR and no "shutting down", although the stream never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_logs_warnings_then_streaming_again_and_no_error() {
    let w = World::new(SourceKind::ChangeStream, 50).await;
    let cluster = Cluster::start();
    cluster.config(&w);
    let path = cluster.dir.path().join("tributary.toml");
    let log_path = cluster.dir.path().join("sync.log");
    write_some(&w, "before").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sync", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_until(60, "the first rows", || cluster.has_order("before-9")).await;
    let restart = tokio::task::spawn_blocking(move || {
        cluster.restart("fast");
        cluster
    });
    let cluster = restart.await.unwrap();
    w.orders()
        .insert_one(doc! {"_id": "~after-restart", "qty": 1})
        .await
        .unwrap();
    wait_until(120, "the stream to continue after the restart", || {
        cluster.has_order("~after-restart")
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("ERROR"),
        0,
        "no ERROR for a restart the stream survived:\n{log}"
    );
    assert_eq!(count("Shutting down"), 0, "{log}");
    assert_eq!(count("NOTICE"), 0, "DDL notices are not news:\n{log}");
    // What failed and what Tributary does about it, once: the lock (lost with its connection)
    // is taken again; the retries of a restart this short are not news, nor is the pool's.
    assert_eq!(
        count("WARN"),
        1,
        "one warning for the lost connection:\n{log}"
    );
    // After it, one INFO says streaming resumed (the lock taken back is implied).
    let after: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("WARN"))
        .take_while(|l| !l.contains("SIGTERM"))
        .filter(|l| l.contains("INFO"))
        .collect();
    assert_eq!(after.len(), 1, "{log}");
    assert!(after[0].contains("Streaming changes."), "{log}");
    assert_eq!(count("deadpool"), 0, "{log}");
    assert_eq!(
        count("Streaming changes."),
        2,
        "once at start, once when Postgres is back:\n{log}"
    );
    drop(cluster);
    w.stop().await;
}

/// A Postgres restart in the middle of `sync`'s initial copy (the binary, 50,000 documents):
/// the restart also ends the lock's session, so the daemon goes through standby, takes the lock
/// again and resumes the copy from its committed chunks (docs/resumable-copies.md); it never
/// starts the copy over, and the tables end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_the_initial_copy_resumes_it() {
    use super::resume::{seeded_world, CHUNK, DOCS};
    let w = seeded_world().await;
    let cluster = Cluster::start();
    let path = cluster.dir.path().join("tributary.toml");
    std::fs::write(
        &path,
        config_text(&w, &cluster.url, "test", "public", "change_stream", CHUNK),
    )
    .unwrap();
    let daemon = super::Daemon::spawn(&path, cluster.dir.path().join("sync.log"));
    let copied = |url: String| async move {
        let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
            return (0, None);
        };
        tokio::spawn(conn);
        let n = c
            .query_one(
                "SELECT coalesce(sum(documents), 0)::bigint FROM tributary.copy_chunks",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        let phase = c
            .query_opt(
                "SELECT phase FROM tributary.collections WHERE namespace = 'shop.orders'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get::<_, String>(0));
        (n, phase)
    };
    wait_until(90, "30 % of the copy to be committed", || async {
        copied(cluster.url.clone()).await.0 >= (DOCS * 3 / 10) as i64
    })
    .await;
    let restart = tokio::task::spawn_blocking(move || {
        cluster.restart("fast");
        cluster
    });
    let cluster = restart.await.unwrap();
    wait_until(120, "the copy to finish after the restart", || async {
        copied(cluster.url.clone()).await.1.as_deref() == Some("streaming")
    })
    .await;
    w.orders()
        .insert_one(doc! {"_id": "~after-restart", "qty": 1})
        .await
        .unwrap();
    wait_until(60, "the stream after the copy", || {
        cluster.has_order("~after-restart")
    })
    .await;
    let pg = crate::support::postgres::connect(&cluster.url).await;
    assert_eq!(
        rows_in(&pg, "public").await,
        w.expected().await,
        "tables differ after the restart"
    );
    let log = daemon.log_text();
    assert_eq!(
        log.matches("Full sync of the collection started.").count(),
        1,
        "the copy was started over:\n{log}"
    );
    assert!(
        log.contains("Resuming the copy of shop.orders:"),
        "the copy did not resume after the restart:\n{log}"
    );
    assert_eq!(daemon.terminate().await, Some(0), "SIGTERM is a clean stop");
    drop(pg);
    drop(cluster);
}
