//! `tributary verify`: Postgres compared with MongoDB through the mappings (SPEC "Cutover and
//! verify"). `cutover` calls [`verify`] too and embeds its report.
//!
//! Layout:
//! - `compare`: pure value and row comparison (numbers by value, instants to the millisecond,
//!   JSON as values), and the plain-JSON form of values for reports.
//! - `check`: one batch of documents against its rows, converted by the sink's own
//!   `mapping::convert_raw_document`; the final finding of a difference (dead letter or not).
//! - `rows`: the statements run against the mapped tables and the dead-letter table.
//! - `mongo`: documents read again by `_id`, looked up by key, counted, sampled.
//! - `recheck`: a difference is reported only when it persists after the running stream has
//!   applied everything up to the moment it was read.
//! - `buckets`: hashed key buckets, to find rows without documents without holding every key.
//! - `counts`, `sample`, `full`: the three modes, one collection at a time.
//! - `report`: the report (SPEC's JSON shape), the tally of findings, the human rendering.
//! - `progress`: bars on a terminal, log lines otherwise.
//!
//! Nothing here writes: verify reads both ends and the state tables only. See docs/verify.md.

mod buckets;
mod check;
pub mod compare;
mod counts;
mod error;
mod full;
pub(crate) mod mongo;
mod progress;
mod recheck;
mod report;
mod rows;
mod sample;

use std::sync::Arc;
use std::time::Duration;

pub use error::VerifyError;
pub use progress::ProgressMode;
pub use report::{
    render_text, ChildReport, CollectionReport, Difference, Kind, VerifyReport, LISTED_PER_TABLE,
};

use crate::config::Config;
use crate::mapping::model::MappingSet;
use crate::pipeline::sync::{mongo_client, SyncError};
use crate::sink::postgres::ddl::qualified;
use crate::sink::postgres::PostgresSink;
use check::Target;
use recheck::Live;
use rows::{check_tables_exist, connection, DeadLetterQueries};

/// What to compare (SPEC `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Document count vs rows, array lengths vs child rows.
    #[default]
    Counts,
    /// `sample_size` random documents (and as many random rows) compared one by one.
    Sample,
    /// Every document and every row, both ways.
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Counts => "counts",
            Mode::Sample => "sample",
            Mode::Full => "full",
        }
    }
}

/// How differences found at first are checked again (see `recheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recheck {
    /// Wait for the stream (up to [`DEFAULT_RECHECK_WAIT`]) when a `sync` holds the stream's
    /// lock; otherwise read once more at once.
    #[default]
    Auto,
    /// Read once more at once, never wait: for a caller that itself holds the stream's lock
    /// and is not applying changes while it verifies (`cutover` after its quiet period).
    Immediate,
    /// Wait up to this long for the stream's checkpoint.
    Wait(Duration),
}

/// How long `Recheck::Auto` waits for a running stream to pass a difference's read time.
pub const DEFAULT_RECHECK_WAIT: Duration = Duration::from_secs(60);

/// Key buckets per table (see `buckets`): 64 KiB of counters per table.
pub const DEFAULT_BUCKETS: usize = 4096;

/// Options of one verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub mode: Mode,
    /// Documents per collection in `sample` mode (SPEC default 1000).
    pub sample_size: usize,
    pub recheck: Recheck,
    pub progress: ProgressMode,
    /// Concurrent `_id`-range readers per collection in `full` mode.
    pub readers: usize,
    /// Documents per chunk (`None`: `sync.batch_max_rows`): with `readers` and the pool size,
    /// this bounds memory.
    pub chunk: Option<usize>,
    /// Key buckets per table in `full` mode.
    pub buckets: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            mode: Mode::default(),
            sample_size: 1000,
            recheck: Recheck::default(),
            progress: ProgressMode::default(),
            readers: crate::source::snapshot::DEFAULT_READERS,
            chunk: None,
            buckets: DEFAULT_BUCKETS,
        }
    }
}

/// The sizes the modes work with, resolved from the options and the config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub chunk: usize,
    pub readers: usize,
    /// Chunks checked at once (each on its own connection).
    pub workers: usize,
    pub buckets: usize,
}

/// Compares Postgres with MongoDB for every mapped collection. `Ok` with `equal == false` when
/// differences were found; `Err` only when the comparison could not be made.
pub async fn verify(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    if opts.mode == Mode::Sample && opts.sample_size == 0 {
        return Err(VerifyError::Config(
            "--sample-size must be at least 1".to_owned(),
        ));
    }
    let started_at = chrono::Utc::now();
    let mongo = mongo_client(config, None).await.map_err(|e| match e {
        SyncError::Config(m) => VerifyError::Config(m),
        other => VerifyError::Config(other.to_string()),
    })?;
    let result = run(config, mappings, &opts, &mongo).await;
    // Dropping a client whose background tasks still hold connections panics at runtime
    // shutdown; an explicit shutdown stops them first.
    mongo.shutdown().await;
    let collections = result?;
    Ok(VerifyReport {
        mode: opts.mode.as_str(),
        equal: collections.iter().all(CollectionReport::is_equal),
        stream: config.sync.name.clone(),
        started_at,
        finished_at: chrono::Utc::now(),
        collections,
    })
}

async fn run(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: &VerifyOptions,
    mongo: &mongodb::Client,
) -> Result<Vec<CollectionReport>, VerifyError> {
    // Verify runs a portal scan beside the lookups it feeds: at least two connections.
    let pool_size = config.postgres.pool_size.max(2);
    let sink = PostgresSink::connect(
        &config.postgres.uri,
        pool_size,
        &config.postgres.schema,
        &config.sync.state_schema,
        &config.sync.name,
        mappings.clone(),
    )
    .await?;
    let pool = sink.pool().clone();
    let client = connection(&pool).await?;
    let dead_letters = DeadLetterQueries::new(&client, &config.sync.state_schema).await?;
    let targets: Vec<Arc<Target>> = mappings
        .collections
        .iter()
        .map(|m| {
            Arc::new(Target::new(
                Arc::new(m.clone()),
                &config.postgres.schema,
                pool.clone(),
                mongo,
                &config.sync.name,
                dead_letters.clone(),
            ))
        })
        .collect();
    let tables: Vec<_> = targets
        .iter()
        .flat_map(|t| t.all_tables().cloned())
        .collect();
    check_tables_exist(&client, &tables).await?;
    let live = Live::new(
        pool.clone(),
        &config.sync.state_schema,
        &config.sync.name,
        recheck_wait(&client, config, opts.recheck).await?,
    );
    drop(client);

    let settings = Settings {
        chunk: opts.chunk.unwrap_or(config.sync.batch_max_rows).max(1),
        readers: opts.readers.max(1),
        workers: opts.readers.clamp(1, pool_size.saturating_sub(1).max(1)),
        buckets: opts.buckets,
    };
    let progress = progress::Progress::new(opts.progress);
    let mut reports = Vec::with_capacity(targets.len());
    for target in targets {
        let mut bar = progress.collection(&target.namespace);
        tracing::debug!(namespace = %target.namespace, mode = opts.mode.as_str(), "Verifying the collection.");
        let report = match opts.mode {
            Mode::Counts => counts::run(&target, &live).await?,
            Mode::Sample => {
                sample::run(&target, &live, &settings, opts.sample_size, &mut bar).await?
            }
            Mode::Full => full::run(target.clone(), mongo, &live, &settings, &mut bar).await?,
        };
        bar.finish(report.is_equal());
        reports.push(report);
    }
    Ok(reports)
}

/// How long rechecks wait: under `Auto`, only when a process holds the stream's lock (a
/// running `sync` moves the checkpoint) and the checkpoint table exists.
async fn recheck_wait(
    client: &deadpool_postgres::Object,
    config: &Config,
    recheck: Recheck,
) -> Result<Option<Duration>, VerifyError> {
    let wait = match recheck {
        Recheck::Immediate => return Ok(None),
        Recheck::Wait(d) => d,
        Recheck::Auto => {
            let holder = crate::lease::holder(client, &config.sync.name)
                .await
                .map_err(VerifyError::postgres(format!(
                    "looking for the writer of stream {:?}",
                    config.sync.name
                )))?;
            if holder.is_none() {
                return Ok(None);
            }
            DEFAULT_RECHECK_WAIT
        }
    };
    let checkpoints = qualified(&config.sync.state_schema, "checkpoints");
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&checkpoints])
        .await
        .map_err(VerifyError::postgres(format!("looking for {checkpoints}")))?
        .get(0);
    Ok(exists.map(|_| wait))
}
