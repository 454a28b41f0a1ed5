//! `tributary cutover`: the migration verdict of SPEC "Cutover and verify".
//!
//! 1. Read MongoDB's current cluster time T (after `--block-writes` took effect).
//! 2. Catch up: wait until the stream's committed checkpoint passes T. A running `sync` that
//!    holds the stream's lock is only watched; otherwise `cutover` takes the lock and applies
//!    the changes itself with the same pipeline as `sync` (`catch_up`).
//! 3. Quiet: a change stream from T counts the writes to mapped namespaces for the quiet
//!    period (`quiet`).
//! 4. Verify with the chosen mode (`crate::verify`).
//! 5. The report is stored in `<state_schema>.cutovers` by a transaction committed with
//!    `synchronous_commit = on`, which flushes every earlier commit (the WAL is one sequence),
//!    the last checkpoint included, before the verdict is printed (`report`).

mod catch_up;
mod quiet;
pub mod report;
mod writes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::mapping::model::MappingSet;
use crate::pipeline::sync::SyncError;
use crate::sink::postgres::state::{self, Phase};
use crate::verify::{self, VerifyError, VerifyOptions};

pub use report::CutoverReport;
pub use writes::unblock_writes;

/// Options of `tributary cutover`.
#[derive(Debug, Clone)]
pub struct CutoverOptions {
    /// How long catching up may take before the verdict is "not ready".
    pub timeout: Duration,
    /// How long MongoDB must stay free of writes to mapped namespaces, from T on.
    pub quiet_period: Duration,
    /// The verification that runs after the quiet period.
    pub verify: VerifyOptions,
    /// Ask MongoDB to refuse user writes first (`setUserWriteBlockMode`), and leave them
    /// blocked when the verdict is ready.
    pub block_writes: bool,
    /// Progress bars on a terminal (else log lines).
    pub progress: bool,
}

/// Why a cutover could not reach a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    /// A mapped collection was never copied: there is nothing to cut over to yet.
    #[error("{0} never finished a copy into Postgres; run `tributary sync` (or `tributary full-sync`) until it streams, then cut over")]
    NotCopied(String),
    #[error("cutover: MongoDB {doing} failed: {error}")]
    Mongo {
        doing: String,
        error: mongodb::error::Error,
    },
    #[error("cutover: {0}")]
    Sync(#[from] SyncError),
    #[error("cutover: {0}")]
    Verify(#[from] VerifyError),
    #[error("cutover: Postgres {doing} failed: {error}")]
    Postgres {
        doing: String,
        error: tokio_postgres::Error,
    },
}

impl CutoverError {
    /// True for errors of the configuration or the stored state (exit 2: nothing written).
    pub fn is_config(&self) -> bool {
        match self {
            CutoverError::NotCopied(_) => true,
            CutoverError::Sync(SyncError::Config(_)) => true,
            CutoverError::Verify(e) => e.is_config(),
            _ => false,
        }
    }

    fn mongo(doing: &str) -> impl FnOnce(mongodb::error::Error) -> CutoverError + '_ {
        move |error| CutoverError::Mongo {
            doing: doing.to_owned(),
            error,
        }
    }
}

/// Runs a cutover to its verdict; the report says whether it is ready and why not.
pub async fn cutover(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: CutoverOptions,
) -> Result<CutoverReport, CutoverError> {
    let started_at = chrono::Utc::now();
    let (client, sink) = crate::pipeline::sync::connect(config, &mappings).await?;
    let stream = config.sync.name.clone();
    let state_schema = config.sync.state_schema.clone();
    {
        let pg = crate::pipeline::sync::state_client(&sink).await?;
        let phases = state::collection_states(&**pg, &state_schema, &stream)
            .await
            .map_err(SyncError::from)?;
        let never: Vec<String> = mappings
            .collections
            .iter()
            .map(|m| m.namespace())
            .filter(|ns| {
                !phases
                    .iter()
                    .any(|p| &p.namespace == ns && p.phase == Phase::Streaming)
            })
            .collect();
        if !never.is_empty() {
            return Err(CutoverError::NotCopied(never.join(", ")));
        }
    }

    if opts.block_writes {
        writes::block(&client).await?;
        tracing::info!("MongoDB now refuses user writes (setUserWriteBlockMode); `tributary cutover --unblock-writes` lifts it.");
    }
    let result = verdict(config, mappings, &opts, &client, &sink, started_at).await;
    if opts.block_writes && result.is_err() {
        // No verdict: the application must be able to go on writing to MongoDB.
        match writes::unblock_writes(&client).await {
            Ok(()) => tracing::warn!("The cutover failed, so MongoDB accepts user writes again."),
            Err(e) => {
                tracing::error!(error = %e, "The cutover failed and MongoDB still refuses user writes; run `tributary cutover --unblock-writes`.")
            }
        }
    }
    result
}

/// Steps 1–5 once the preconditions hold (and writes are blocked when asked).
async fn verdict(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: &CutoverOptions,
    client: &mongodb::Client,
    sink: &crate::sink::postgres::PostgresSink,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<CutoverReport, CutoverError> {
    let stream = config.sync.name.clone();
    let state_schema = config.sync.state_schema.clone();
    let target = writes::current_time(client).await?;
    let target_read_at = Instant::now();
    tracing::info!(target = %report::time_text(target), "Catching up to MongoDB's current cluster time.");
    let watcher = quiet::Watcher::start(client, &mappings, target).await?;

    let mut reasons = Vec::new();
    let catch = catch_up::catch_up(
        config,
        mappings.clone(),
        sink,
        target,
        opts.timeout,
        opts.progress,
    )
    .await?;
    if !catch.caught_up {
        reasons.push(format!(
            "not caught up within {} s: the stream's checkpoint is {:.1} s behind the target cluster time",
            opts.timeout.as_secs(),
            catch.lag_seconds
        ));
    }
    // The quiet period runs from T on; catching up may have used some (or all) of it.
    quiet::countdown(
        opts.quiet_period.saturating_sub(target_read_at.elapsed()),
        opts.progress,
    )
    .await;
    let writes = watcher.finish().await?;
    let (caught_up, lag_seconds) = (catch.caught_up, catch.lag_seconds);
    // Changes applied by this process stop here; the verification compares what is there.
    let applied_by = catch.stop().await?;
    for (ns, n) in &writes {
        reasons.push(format!(
            "{n} write{} to {ns} during the {} s quiet period",
            if *n == 1 { "" } else { "s" },
            opts.quiet_period.as_secs()
        ));
    }
    let quiet = writes.is_empty();

    let verified = verify::verify(config, mappings.clone(), opts.verify.clone()).await?;
    if !verified.equal {
        reasons.push(report::verify_reason(&verified));
    }
    let ready = reasons.is_empty();
    let mut writes_blocked = opts.block_writes;
    if opts.block_writes && !ready {
        // Not ready: the application goes on writing to MongoDB.
        writes::unblock_writes(client).await?;
        writes_blocked = false;
        tracing::warn!("Not ready, so MongoDB accepts user writes again.");
    }
    let report = CutoverReport {
        ready,
        stream,
        target_cluster_time: target,
        caught_up,
        lag_seconds,
        applied_by,
        quiet,
        writes,
        writes_blocked,
        verify: Some(verified),
        reasons,
        started_at,
        finished_at: chrono::Utc::now(),
    };
    report::store_durably(sink, &state_schema, &report).await?;
    Ok(report)
}
