//! Catching up to the target cluster time T: until the stream's committed checkpoint has
//! passed T, every change MongoDB applied before T may still be missing from Postgres. A
//! running `sync` (the holder of the stream's lock) is only watched; when none runs, this
//! process takes the lock and applies the changes itself with `sync`'s own pipeline, so the
//! rows are exactly what the daemon would have written.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use bson::Timestamp;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::CutoverError;
use crate::config::Config;
use crate::lease::Lease;
use crate::mapping::model::MappingSet;
use crate::pipeline::sync::{state_client, sync_holding, SyncError, SyncOptions};
use crate::position::{ts_cmp, Position};
use crate::sink::postgres::state;
use crate::sink::postgres::PostgresSink;

/// Who applied the changes up to T (`applied_by` of the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliedBy {
    /// A running `sync` held the stream's lock; the cutover only watched.
    Daemon,
    /// No `sync` ran; the cutover took the lock and applied the changes.
    Cutover,
}

/// Where catching up ended.
pub struct CatchUp {
    pub caught_up: bool,
    /// How far the checkpoint was behind T when catching up ended (0 when caught up).
    pub lag_seconds: f64,
    applier: Option<Applier>,
}

/// This process's own stream, while it applies changes.
struct Applier {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SyncError>>,
    _lease: Lease,
}

impl CatchUp {
    /// Stops applying (when this process applied anything) after committing what was read.
    pub async fn stop(self) -> Result<AppliedBy, CutoverError> {
        let Some(applier) = self.applier else {
            return Ok(AppliedBy::Daemon);
        };
        let _ = applier.stop.send(());
        match applier.task.await {
            Ok(result) => result?,
            Err(e) => {
                return Err(CutoverError::Sync(SyncError::Shutdown(format!(
                    "the cutover's own stream stopped unexpectedly ({e})"
                ))))
            }
        }
        Ok(AppliedBy::Cutover)
    }
}

/// How often the checkpoint is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Waits (up to `timeout`) until the stream's checkpoint passes `target`, applying the
/// changes itself when no `sync` holds the stream's lock.
pub async fn catch_up(
    config: &Config,
    mappings: Arc<MappingSet>,
    sink: &PostgresSink,
    target: Timestamp,
    timeout: Duration,
    progress: bool,
) -> Result<CatchUp, CutoverError> {
    let applier = match Lease::try_take(&config.postgres.uri, &config.sync.name)
        .await
        .map_err(SyncError::from)?
    {
        Some(lease) => {
            tracing::info!(stream = %config.sync.name, "No sync holds the stream's lock; the cutover applies the changes itself.");
            let (stop, stopped) = oneshot::channel::<()>();
            let flag = lease.flag();
            let config = config.clone();
            let task = tokio::spawn(async move {
                let opts = SyncOptions {
                    initial_sync: false,
                    metrics: None,
                };
                sync_holding(&config, mappings, &opts, flag, async {
                    let _ = stopped.await;
                })
                .await
            });
            Some(Applier {
                stop,
                task,
                _lease: lease,
            })
        }
        None => {
            tracing::info!(stream = %config.sync.name, "A sync holds the stream's lock; watching its checkpoint.");
            None
        }
    };
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} catching up: {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_log = tokio::time::Instant::now();
    let lag = loop {
        let lag = lag_behind(config, sink, target).await?;
        if lag.is_none() {
            break None;
        }
        if let Some(a) = &applier {
            if a.task.is_finished() {
                // It only ends by itself on an error; `stop` returns it.
                break lag;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break lag;
        }
        let behind = lag.unwrap_or(0.0);
        match &bar {
            Some(bar) => bar.set_message(format!("{behind:.0} s behind the target cluster time")),
            None if last_log.elapsed() >= Duration::from_secs(10) => {
                tracing::info!(
                    lag_seconds = behind,
                    "Catching up to the target cluster time."
                );
                last_log = tokio::time::Instant::now();
            }
            None => {}
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut out = CatchUp {
        caught_up: lag.is_none(),
        lag_seconds: lag.unwrap_or(0.0),
        applier,
    };
    if let Some(a) = &out.applier {
        if a.task.is_finished() {
            // Surface the applier's error rather than a verdict built on a stopped stream.
            let applier = out.applier.take();
            CatchUp {
                caught_up: false,
                lag_seconds: 0.0,
                applier,
            }
            .stop()
            .await?;
        }
    }
    Ok(out)
}

/// `None` when the committed checkpoint has passed `target`, else how many seconds it is
/// behind (T's seconds when there is no checkpoint at all).
async fn lag_behind(
    config: &Config,
    sink: &PostgresSink,
    target: Timestamp,
) -> Result<Option<f64>, CutoverError> {
    let checkpoint = {
        let pg = state_client(sink).await?;
        state::read_checkpoint(&**pg, &config.sync.state_schema, &config.sync.name)
            .await
            .map_err(SyncError::from)?
    };
    let at = match checkpoint {
        Some(cp) => Position::from_checkpoint(&cp)
            .map_err(SyncError::from)?
            .cluster_time(),
        None => None,
    };
    Ok(match at {
        Some(at) if ts_cmp(at, target).is_ge() => None,
        Some(at) => Some(f64::from(target.time.saturating_sub(at.time))),
        None => Some(f64::from(target.time)),
    })
}
