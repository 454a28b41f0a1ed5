//! Operating the streamer: metrics and health endpoints, lag through a stopped MongoDB,
//! injected faults (MongoDB fail points, killed Postgres sessions, a Postgres restart), SIGKILLs
//! of the real binary (in streaming, and in the middle of copies that must resume), fail-over between two daemons, and two streams sharing one database.
//! Everything runs against real Postgres and mongo-sim over TCP with the official driver.

mod crash;
mod deadletters;
mod deploy;
mod failover;
mod faults;
mod lag;
mod lease;
mod logs;
mod metrics;
mod progress;
mod reload;
mod resume;
mod resync;
mod sharded;
mod streams;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tributary::config::Config;
use tributary::mapping::model::MappingSet;
use tributary::metrics::Metrics;
use tributary::pipeline::sync::{sync, SyncError, SyncOptions};

use crate::stream::World;
pub use crate::support::wait_until;

/// Parent rows `(id, qty, name)` and child rows `(order_id, idx, sku)`, sorted.
pub type Rows = (
    Vec<(String, Option<i32>, Option<String>)>,
    Vec<(String, i32, Option<String>)>,
);

/// An in-process `sync` with its metrics served over HTTP on a free port.
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SyncError>>,
    _stop_http: oneshot::Sender<()>,
}

impl Running {
    pub async fn start(
        config: &Config,
        mappings: Arc<MappingSet>,
        ready_max_lag_secs: u64,
    ) -> Running {
        let metrics = Arc::new(Metrics::new(ready_max_lag_secs).unwrap());
        let (http_tx, http_rx) = oneshot::channel::<()>();
        let addr = tributary::metrics::serve(metrics.clone(), "127.0.0.1:0", async {
            let _ = http_rx.await;
        })
        .await
        .unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let config = config.clone();
        let opts = SyncOptions {
            initial_sync: true,
            metrics: Some(metrics.clone()),
        };
        let task = tokio::spawn(async move {
            sync(&config, mappings, opts, async {
                let _ = rx.await;
            })
            .await
        });
        Running {
            metrics,
            base: format!("http://{addr}"),
            stop,
            task,
            _stop_http: http_tx,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// Sum of `name`'s samples whose labels contain `label` (e.g. `kind="mongo_network"`).
    pub fn counter(&self, name: &str, label: &str) -> f64 {
        sample_sum(&self.metrics.render(), name, label)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let r = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("sync did not stop within 60 s of shutdown")
            .unwrap();
        assert!(r.is_ok(), "sync failed: {r:?}");
    }
}

/// Sum of the samples of metric `name` (exact name, not `_bucket` etc.) whose label set
/// contains `label` (`""` matches all).
pub fn sample_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sets the `failCommand` fail point through the real driver, exactly as against MongoDB.
pub async fn fail_point(mongo: &mongodb::Client, mode: bson::Bson, data: Document) {
    mongo
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": mode, "data": data})
        .await
        .unwrap();
}

/// What `schema.orders` / `schema.order_items` hold, shaped like `World::expected`.
pub async fn rows_in(client: &Client, schema: &str) -> Rows {
    let mut parents: Vec<(String, Option<i32>, Option<String>)> = client
        .query(
            &format!("SELECT id, qty, name FROM \"{schema}\".orders"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut children: Vec<(String, i32, Option<String>)> = client
        .query(
            &format!("SELECT order_id, idx, sku FROM \"{schema}\".order_items"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    parents.sort();
    children.sort();
    (parents, children)
}

/// A config file for the `tributary` binary, next to its stderr logs.
pub struct ConfigFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    /// `sync` of the world's simulator into its database under stream `name`.
    pub fn new(w: &World, name: &str, schema: &str, source: &str, batch_max_rows: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tributary.toml");
        std::fs::write(
            &path,
            config_text(w, &w.db.url, name, schema, source, batch_max_rows),
        )
        .unwrap();
        ConfigFile { dir, path }
    }

    pub fn parse(&self) -> Config {
        Config::load(&self.path).unwrap()
    }
}

pub fn config_text(
    w: &World,
    pg_url: &str,
    name: &str,
    schema: &str,
    source: &str,
    batch_max_rows: usize,
) -> String {
    format!(
        r#"
[mongo]
uri = "{}"
source = "{source}"
[postgres]
uri = "{pg_url}"
schema = "{schema}"
pool_size = 4
[sync]
name = "{name}"
mappings = "{}"
batch_max_rows = {batch_max_rows}
batch_max_wait_ms = 20
[metrics]
listen = ""
"#,
        w.sim.uri(),
        w.config.sync.mappings.display(),
    )
}

/// The `tributary sync` binary as a child process; stderr goes to `log`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(config: &Path, log: PathBuf) -> Daemon {
        Daemon::spawn_args(&["sync"], config, log)
    }

    /// `tributary <args> --config <config>` (e.g. `["full-sync", "--mode", "upsert"]`).
    pub fn spawn_args(args: &[&str], config: &Path, log: PathBuf) -> Daemon {
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,tokio_postgres=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// The daemon's log so far, without terminal colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // Skip `ESC [ ... m`.
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Waits up to `secs` for the process to exit by itself; its exit code.
    pub async fn wait(mut self, secs: u64) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("tributary did not exit within {secs} s"))
            .unwrap();
        status.code()
    }

    /// SIGKILL: no flush, no clean close of anything.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// SIGTERM and the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().unwrap();
        // SAFETY-free alternative to libc: the `kill` utility sends SIGTERM to our own child.
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("sync did not exit within 60 s of SIGTERM")
            .unwrap();
        status.code()
    }
}

/// The backend pid of the session holding `stream`'s lock, as `tributary::lease::holder` sees it.
pub async fn holder_pid(client: &Client, stream: &str) -> Option<i32> {
    tributary::lease::holder(client, stream)
        .await
        .unwrap()
        .map(|h| h.pid)
}

/// The phase of stream `test`'s `shop.orders` in the state table (`None` before it exists).
pub async fn phase(w: &crate::stream::World) -> Option<String> {
    w.db.client
        .query_opt(
            "SELECT phase FROM tributary.collections WHERE stream = 'test' AND namespace = 'shop.orders'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}
