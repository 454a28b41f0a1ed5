//! `sync`: the daemon's whole life — connect both ends, copy the collections that were never
//! copied (recording the stream position first), then stream from the checkpoint until
//! shutdown; a rename onto a mapped collection copies it between batches, and lost history
//! either stops the stream or (with `sync.resync_on_history_lost`) starts over with a full sync;
//! reloaded mappings (SIGHUP, `tributary reload`: `reload`) take over between batches.

use crate::progress::ProgressMode;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use mongodb::Client;

use super::full_sync::{copy_collections, FullSyncMode};
use super::normalize::FatalConversion;
use super::recopier::{Recopier, StateTables};
use super::recopy::RecopyContext;
use super::reload::{self, Refusal, ReloadSource, Reloads, Staged};
use super::{run_with, PipelineConfig, PipelineError, RunOutcome};
use crate::config::{Config, SourceKind};
use crate::mapping::model::MappingSet;
use crate::metrics::Metrics;
use crate::position::{Position, PositionError};
use crate::sink::postgres::owners::{self, TableOwned};
use crate::sink::postgres::partitions;
use crate::sink::postgres::state::{self, CollectionState, Phase};
use crate::sink::postgres::PostgresSink;
use crate::sink::{Batch, Sink, SinkError};
use crate::source::change_stream::{self, ChangeStreamSource};
use crate::source::oplog::{self, OplogSource};
use crate::source::SourceError;

/// Options of `tributary sync`.
#[derive(Clone, Default)]
pub struct SyncOptions {
    /// Copy collections that were never copied before streaming (`--no-initial-sync` sets
    /// false: they are marked streaming without a copy).
    pub initial_sync: bool,
    pub metrics: Option<Arc<Metrics>>,
}

/// Why `sync` or `full_sync` stopped. Every message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The checkpoint's position is gone from the oplog (codes 286/136).
    #[error("the stream's resume point has fallen off the MongoDB oplog, so changes since the last checkpoint are lost ({0}); run `tributary full-sync`, or set sync.resync_on_history_lost = true to do it automatically, and consider a larger oplog")]
    HistoryLost(String),
    /// MongoDB refused the stream, or stayed unreachable.
    #[error("reading from MongoDB failed: {0}")]
    Source(SourceError),
    /// Something in the config or the stored state does not fit.
    #[error("{0}")]
    Config(String),
    /// Postgres failed in a way retrying did not fix.
    #[error("writing to Postgres failed: {0}")]
    Sink(#[from] SinkError),
    /// Shutdown could not commit what was already read in time (replayed at the next start).
    #[error("{0}")]
    Shutdown(String),
    /// A document was refused under `on_error: fail`.
    #[error(transparent)]
    Conversion(#[from] FatalConversion),
    /// The stream's lock could not be taken (Postgres unreachable).
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    /// Another stream owns a table of this stream's mappings; nothing was written.
    #[error(transparent)]
    TableOwned(#[from] TableOwned),
    /// A mapped table is partitioned in a way the writes cannot use; nothing was written.
    #[error(transparent)]
    Partitioned(#[from] partitions::Unfit),
}

impl SyncError {
    /// The `tributary_errors_total{kind}` class of a fatal stop that was not counted where it
    /// happened (failed MongoDB commands and Postgres writes are counted as they occur).
    pub fn uncounted_kind(&self) -> Option<&'static str> {
        match self {
            SyncError::Config(_) | SyncError::TableOwned(_) | SyncError::Partitioned(_) => {
                Some("config")
            }
            SyncError::Conversion(_) => Some("conversion"),
            SyncError::Lease(_) => Some("lease"),
            SyncError::Shutdown(_) => Some("shutdown"),
            SyncError::HistoryLost(_) | SyncError::Source(_) | SyncError::Sink(_) => None,
        }
    }
}

impl From<oplog::MongosRefused> for SyncError {
    fn from(e: oplog::MongosRefused) -> Self {
        SyncError::Config(e.to_string())
    }
}

impl From<SourceError> for SyncError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::HistoryLost { code, message } => {
                SyncError::HistoryLost(format!("code {code}: {message}"))
            }
            other => SyncError::Source(other),
        }
    }
}

impl From<PipelineError> for SyncError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Source(s) => s.into(),
            PipelineError::Sink(s) => SyncError::Sink(s),
            PipelineError::Conversion(c) => SyncError::Conversion(c),
            e @ PipelineError::DrainTimeout(_) => SyncError::Shutdown(e.to_string()),
        }
    }
}

impl From<PositionError> for SyncError {
    fn from(e: PositionError) -> Self {
        SyncError::Config(format!(
            "the stored checkpoint cannot be used: {e}; run `tributary full-sync` to start the stream over"
        ))
    }
}

/// Connects to MongoDB (lazily: the driver connects on first use) and to Postgres, and makes
/// sure the tables exist. Refuses before any write when another stream owns one of the
/// mapped tables (`owners`), or when a pre-created partitioned table cannot take the writes
/// (`partitions`); claiming them is the caller's, under the stream's lock
/// (`claim_tables`).
pub(crate) async fn connect(
    config: &Config,
    mappings: &Arc<MappingSet>,
) -> Result<(Client, PostgresSink), SyncError> {
    connect_counting(config, mappings, None).await
}

/// `connect`, with failed MongoDB commands counted in `metrics` (`tributary_errors_total`).
pub(crate) async fn connect_counting(
    config: &Config,
    mappings: &Arc<MappingSet>,
    metrics: Option<&Arc<Metrics>>,
) -> Result<(Client, PostgresSink), SyncError> {
    let client = mongo_client(config, metrics).await?;
    // Before any table is created: a mongos cannot be tailed.
    if config.mongo.source == SourceKind::Oplog {
        oplog::refuse_mongos(&client).await?;
    }
    let mut sink = PostgresSink::connect(
        &config.postgres.uri,
        config.postgres.pool_size,
        &config.postgres.schema,
        &config.sync.state_schema,
        &config.sync.name,
        mappings.clone(),
    )
    .await?;
    sink.set_synchronous_commit(config.postgres.synchronous_commit);
    {
        let pg = state_client(&sink).await?;
        let tables = owners::mapped_tables(mappings);
        let taken = owners::conflicts(
            &**pg,
            sink.state_schema(),
            sink.schema(),
            sink.stream(),
            &tables,
        )
        .await
        .map_err(|e| SinkError::postgres("reading the owners of the mapped tables", e))?;
        refuse_owned(&sink, taken)?;
        // A pre-created partitioned table must fit the writes (`partitions::check`).
        for def in mappings.collections.iter().flat_map(|c| c.tables()) {
            let tree = partitions::read_tree(&**pg, sink.schema(), &def.name)
                .await
                .map_err(|e| {
                    SinkError::postgres(format!("reading the partitions of {}", def.name), e)
                })?;
            if let Some(tree) = tree {
                partitions::check(sink.schema(), &def, &tree)?;
            }
        }
    }
    sink.ensure_schema().await?;
    Ok((client, sink))
}

/// Claims every mapped table for the stream (`owners::claim`), or refuses with the tables
/// another stream owns. Run under the stream's lock, before the first write of rows.
pub(crate) async fn claim_tables(sink: &PostgresSink) -> Result<(), SyncError> {
    let mut pg = state_client(sink).await?;
    let tables = owners::mapped_tables(sink.mappings());
    let taken = owners::claim(
        &mut pg,
        sink.state_schema(),
        sink.schema(),
        sink.stream(),
        &tables,
    )
    .await
    .map_err(|e| SinkError::postgres("claiming the mapped tables for the stream", e))?;
    refuse_owned(sink, taken)
}

fn refuse_owned(sink: &PostgresSink, taken: Vec<owners::Owned>) -> Result<(), SyncError> {
    if taken.is_empty() {
        return Ok(());
    }
    Err(SyncError::TableOwned(TableOwned {
        stream: sink.stream().to_owned(),
        state_schema: sink.state_schema().to_owned(),
        tables: taken,
    }))
}

/// The MongoDB client of `mongo.uri` (lazy: the driver connects on first use), with failed
/// commands counted in `metrics` when given. Every command that reads MongoDB creates its
/// client here.
pub(crate) async fn mongo_client(
    config: &Config,
    metrics: Option<&Arc<Metrics>>,
) -> Result<Client, SyncError> {
    let bad_uri = |e: mongodb::error::Error| {
        SyncError::Config(format!(
            "mongo.uri cannot be used ({}); fix it in the config file",
            crate::config::redact_uri(&e.to_string())
        ))
    };
    let mut options = mongodb::options::ClientOptions::parse(&config.mongo.uri)
        .await
        .map_err(bad_uri)?;
    if let Some(m) = metrics {
        options.sdam_event_handler = Some(crate::source::count_driver_failures(m.clone()));
    }
    Client::with_options(options).map_err(bad_uri)
}

/// A pooled connection for reading and writing the state tables.
pub(crate) async fn state_client(
    sink: &PostgresSink,
) -> Result<deadpool_postgres::Object, SyncError> {
    sink.pool().get().await.map_err(|e| {
        SyncError::Sink(SinkError::Pool {
            detail: e.to_string(),
            retryable: true,
        })
    })
}

/// The stream's current position for the configured source: where streaming will resume
/// after a copy that starts now.
pub(crate) async fn record_position(
    client: &Client,
    config: &Config,
    mappings: &MappingSet,
) -> Result<Position, SyncError> {
    // A refusal names what was being opened (the namespaces a user may lack access to).
    Ok(match config.mongo.source {
        SourceKind::ChangeStream => change_stream::current_position(client, mappings)
            .await
            .map_err(|e| {
                let namespaces: Vec<String> = crate::source::mapped_namespaces(mappings)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                e.reading(format_args!(
                    "opening the deployment-wide change stream for {}",
                    namespaces.join(", ")
                ))
            })?,
        SourceKind::Oplog => oplog::current_position(client)
            .await
            .map_err(|e| e.reading("reading the end of local.oplog.rs"))?,
    })
}

/// `tributary sync`: runs until `shutdown` fires (then returns `Ok`) or a failure that
/// retrying did not fix.
pub async fn sync(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: SyncOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SyncError> {
    sync_reloading(config, mappings, opts, None, shutdown).await
}

/// `sync`, reloading the mappings each time `sighup` is notified (the daemon's SIGHUP).
/// Requests of `tributary reload` are read from the state schema either way (`reload`).
pub async fn sync_reloading(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: SyncOptions,
    sighup: Option<Arc<tokio::sync::Notify>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SyncError> {
    if let Some(m) = &opts.metrics {
        m.start_labels(&mappings);
    }
    // The mappings in force: a reload replaces them, also for the next time the lock is taken.
    let current = Arc::new(Mutex::new(mappings));
    let result =
        crate::lease::sync_exclusively(config, opts.metrics.as_deref(), shutdown, |lease, stop| {
            sync_inner(
                config,
                current.clone(),
                &opts,
                sighup.clone(),
                ProgressMode::Auto,
                lease,
                stop,
            )
        })
        .await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "The stream stopped; exiting.");
    }
    if let Some(m) = &opts.metrics {
        m.set_streaming(false);
        if let Err(e) = &result {
            m.up.set(0);
            if let Some(kind) = e.uncounted_kind() {
                m.errors_total.with_label_values(&[kind]).inc();
            }
        }
    }
    result
}

/// `sync` for a caller that already holds the stream's lock (`cutover` applying changes
/// itself): streams without standing by, until `shutdown` fires or a failure.
pub async fn sync_holding(
    config: &Config,
    mappings: Arc<MappingSet>,
    opts: &SyncOptions,
    lease: crate::lease::LeaseFlag,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SyncError> {
    // Cutover shows its own catch-up.
    let current = Arc::new(Mutex::new(mappings));
    sync_inner(
        config,
        current,
        opts,
        None,
        ProgressMode::Off,
        lease,
        shutdown,
    )
    .await
}

async fn sync_inner(
    config: &Config,
    current: Arc<Mutex<Arc<MappingSet>>>,
    opts: &SyncOptions,
    sighup: Option<Arc<tokio::sync::Notify>>,
    catch_up: ProgressMode,
    lease: crate::lease::LeaseFlag,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SyncError> {
    let mut mappings = lock(&current).clone();
    let (client, mut sink) = connect_counting(config, &mappings, opts.metrics.as_ref()).await?;
    // Under the stream's lock, before the first row: the tables become this stream's.
    claim_tables(&sink).await?;
    // No commit without the stream's lock (checked right before every COMMIT).
    sink.set_lease(lease);
    // The oplog's window and the checkpoint's headroom, through copies and streaming alike (a
    // long copy is when the recorded position is most at risk of falling off); started once
    // the checkpoint is known, so the first reading has a headroom. Stops when dropped.
    let mut oplog_watch = None;
    let shutdown = shutdown.boxed().shared();
    let stream = config.sync.name.clone();
    let state_schema = config.sync.state_schema.clone();
    let mut start_over = false;
    let mut retried = false;
    let reloads = Reloads::default();
    let _watcher = reload::spawn_watch(
        sink.pool().clone(),
        ReloadSource {
            mappings_path: config.sync.mappings.clone(),
            schema: config.postgres.schema.clone(),
            state_schema: state_schema.clone(),
            stream: stream.clone(),
        },
        sighup,
        reloads.clone(),
        opts.metrics.clone(),
    );
    loop {
        // 0. New mappings staged by a reload: applied between batches, before any copy.
        if let Some(staged) = reloads.take() {
            if apply_reload(&mut sink, &mut mappings, staged, opts.metrics.as_deref()).await? {
                *lock(&current) = mappings.clone();
                // Letters refused under the old mappings may convert now.
                retried = false;
            }
        }

        // 1. Where are we? Record the position BEFORE any copy when there is none.
        let checkpoint = {
            let pg = state_client(&sink).await?;
            state::read_checkpoint(&**pg, &state_schema, &stream).await?
        };
        sink.expect_checkpoint(checkpoint.as_ref());
        // With a stream under way (a stored checkpoint, or history lost), collections to copy
        // are re-copied online while the others stream; only a first start copies in bulk.
        let online = checkpoint.is_some() || start_over;
        let position = match checkpoint {
            Some(cp) if !start_over => {
                let p = Position::from_checkpoint(&cp)?;
                if p.source_name() != config.mongo.source.as_str() {
                    return Err(SyncError::Config(format!(
                        "stream {stream:?} was written by the {} source but mongo.source is {}; switch back, or use another sync.name and run a full sync",
                        p.source_name(),
                        config.mongo.source
                    )));
                }
                p
            }
            _ => {
                let p = record_position(&client, config, &mappings).await?;
                sink.apply(&Batch {
                    checkpoint: Some(p.to_checkpoint(&stream)),
                    ..Batch::default()
                })
                .await?;
                if start_over {
                    mark_all(&sink, &mappings, Phase::Pending).await?;
                    start_over = false;
                }
                p
            }
        };

        // The committed position, from the start (the headroom is measured from it).
        if let Some(m) = &opts.metrics {
            if let Some(ct) = position.cluster_time() {
                m.last_applied_cluster_time_seconds.set(f64::from(ct.time));
            }
            if oplog_watch.is_none() {
                oplog_watch = Some(super::lag::watch_oplog(client.clone(), m.clone()));
            }
        }

        // 2. Copy what was never copied (or whose copy was interrupted): in bulk before
        // streaming at a first start (and to finish a bulk copy that was cut short), online
        // while streaming otherwise.
        let (pending, recopies) = collections_to_copy(&sink, &mappings, online).await?;
        let recopies = if opts.initial_sync {
            // Shown as `pending` until its re-copy is done (and re-copied again if stopped).
            for &c in &recopies {
                set_phase(&sink, &mappings, c, Phase::Pending).await?;
            }
            recopies
        } else {
            for &c in &recopies {
                set_phase(&sink, &mappings, c, Phase::Streaming).await?;
            }
            Vec::new()
        };
        if !pending.is_empty() {
            if opts.initial_sync {
                let report = copy_collections(
                    &client,
                    &mut sink,
                    &mappings,
                    &pending,
                    FullSyncMode::Replace,
                    config.sync.batch_max_rows,
                    opts.metrics.as_deref(),
                    shutdown.clone(),
                )
                .await?;
                if report.interrupted {
                    return Ok(());
                }
            } else {
                tracing::warn!(collections = pending.len(), "Initial sync disabled: collections never copied start streaming without a copy.");
                for &c in &pending {
                    set_phase(&sink, &mappings, c, Phase::Streaming).await?;
                }
            }
        }

        // Once per start, after the copies (which write their own letters): documents that
        // were refused and convert now are written, and their letters resolved.
        if !retried {
            super::dead_letters::retry_open_letters(&client, &sink, &mappings, None).await;
            retried = true;
        }

        // 3. Stream from the checkpoint.
        if let Some(m) = &opts.metrics {
            m.set_streaming(true);
        }
        tracing::info!(stream = %stream, source = position.source_name(), "Streaming changes.");
        let mut pipeline = PipelineConfig::new(
            &stream,
            config.sync.batch_max_rows,
            config.sync.batch_max_wait_ms,
        );
        pipeline.metrics = opts.metrics.clone();
        pipeline.catch_up_progress = catch_up;
        pipeline.reload = Some(reloads.ready.clone());
        let (recopy_tx, mut recopy_rx) = tokio::sync::mpsc::channel(1);
        let recopier = Recopier::spawn(
            RecopyContext {
                client: client.clone(),
                mappings: mappings.clone(),
                pool: sink.pool().clone(),
                schema: config.postgres.schema.clone(),
                chunk: config.sync.recopy_chunk_rows.max(1),
                pause: std::time::Duration::from_millis(config.sync.recopy_pause_ms),
            },
            StateTables {
                state_schema: state_schema.clone(),
                stream: stream.clone(),
            },
            recopies,
            recopy_tx,
        );
        let outcome = match config.mongo.source {
            SourceKind::ChangeStream => {
                let source = ChangeStreamSource::new(client.clone(), &mappings, position)?
                    .count_errors(opts.metrics.clone());
                run_with(
                    source,
                    &mut sink,
                    mappings.clone(),
                    &pipeline,
                    shutdown.clone(),
                    Some(&mut recopy_rx),
                )
                .await
            }
            SourceKind::Oplog => {
                oplog::refuse_mongos(&client).await?;
                let source = OplogSource::new(client.clone(), &mappings, position)?
                    .count_errors(opts.metrics.clone());
                run_with(
                    source,
                    &mut sink,
                    mappings.clone(),
                    &pipeline,
                    shutdown.clone(),
                    Some(&mut recopy_rx),
                )
                .await
            }
        };
        drop(recopier);
        if let Some(m) = &opts.metrics {
            m.set_streaming(false);
        }
        match outcome {
            Ok(RunOutcome::Shutdown { .. }) => return Ok(()),
            // Applied at the top of the loop, from the committed checkpoint.
            Ok(RunOutcome::Reload { .. }) => {}
            Ok(RunOutcome::Resync { collections, .. }) => {
                for c in collections {
                    set_phase(&sink, &mappings, c, Phase::Pending).await?;
                }
            }
            Err(PipelineError::Sink(e @ SinkError::CheckpointRewound { .. })) => {
                // Counted by the writer; the loop re-reads the checkpoint and replays from it.
                tracing::warn!(error = %e, "Postgres took back recent commits; streaming again from the stored checkpoint.");
            }
            Err(PipelineError::Source(SourceError::HistoryLost { code, message }))
                if config.sync.resync_on_history_lost =>
            {
                tracing::error!(code, message = %message, "The resume point has fallen off the oplog; starting over with a full sync (sync.resync_on_history_lost).");
                start_over = true;
            }
            // Logged by `sync` once it is final: a lost lock that is taken again is not.
            Err(e) => return Err(SyncError::from(e)),
        }
    }
}

/// Mapped collections whose phase is not `streaming` (no row counts as `pending`): those to
/// copy in bulk before streaming, and those to re-copy online while streaming. With `online`,
/// only a bulk copy that was cut short (phase `snapshot`) is finished in bulk.
async fn collections_to_copy(
    sink: &PostgresSink,
    mappings: &MappingSet,
    online: bool,
) -> Result<(Vec<usize>, Vec<usize>), SyncError> {
    let pg = state_client(sink).await?;
    let states = state::collection_states(&**pg, sink.state_schema(), sink.stream()).await?;
    let mut bulk = Vec::new();
    let mut recopy = Vec::new();
    for (i, c) in mappings.collections.iter().enumerate() {
        let ns = c.namespace();
        let phase = states.iter().find(|s| s.namespace == ns).map(|s| s.phase);
        match phase {
            Some(Phase::Streaming) => {}
            Some(Phase::Snapshot) => bulk.push(i),
            _ if online => recopy.push(i),
            _ => bulk.push(i),
        }
    }
    Ok((bulk, recopy))
}

async fn set_phase(
    sink: &PostgresSink,
    mappings: &MappingSet,
    collection: usize,
    phase: Phase,
) -> Result<(), SyncError> {
    set_phase_of(sink, mappings.collections[collection].namespace(), phase).await
}

async fn set_phase_of(
    sink: &PostgresSink,
    namespace: String,
    phase: Phase,
) -> Result<(), SyncError> {
    let pg = state_client(sink).await?;
    let previous =
        state::collection_state(&**pg, sink.state_schema(), sink.stream(), &namespace).await?;
    let state = CollectionState {
        namespace,
        phase,
        snapshot_started_at: previous.as_ref().and_then(|p| p.snapshot_started_at),
        snapshot_done_at: previous.as_ref().and_then(|p| p.snapshot_done_at),
        documents: previous.and_then(|p| p.documents),
    };
    state::set_collection_state(&**pg, sink.state_schema(), sink.stream(), &state).await?;
    Ok(())
}

async fn mark_all(
    sink: &PostgresSink,
    mappings: &MappingSet,
    phase: Phase,
) -> Result<(), SyncError> {
    for c in 0..mappings.collections.len() {
        set_phase(sink, mappings, c, phase).await?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applies a staged reload between batches: creates what the new set's tables lack (the DDL of
/// a start), switches the sink to it, and marks for a copy the collections whose rows change
/// (new ones, new columns: the copy step fills them) and as never copied the removed ones (so
/// mapping one again copies it). `false` when the DDL failed: the running set stays, and the
/// requests are answered with the failure.
async fn apply_reload(
    sink: &mut PostgresSink,
    mappings: &mut Arc<MappingSet>,
    staged: Staged,
    metrics: Option<&Metrics>,
) -> Result<bool, SyncError> {
    let new = Arc::new(staged.mappings);
    let changes = reload::changes(mappings, &new);
    let created = {
        let pg = state_client(sink).await?;
        reload::missing_objects(&pg, &new, sink.schema(), sink.state_schema()).await
    };
    let old = std::mem::replace(mappings, new.clone());
    sink.set_mappings(new.clone());
    let created = match created {
        Ok(created) => sink.ensure_schema().await.map(|()| created),
        Err(e) => Err(e),
    };
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            sink.set_mappings(old.clone());
            *mappings = old;
            let refusal = Refusal::Failed(e.to_string());
            reload::report_refusal(&refusal, metrics);
            for id in staged.requests {
                reload::answer(sink.pool(), sink.state_schema(), id, &refusal.outcome()).await;
            }
            return Ok(false);
        }
    };
    for &c in &changes.recopy {
        set_phase(sink, &new, c, Phase::Pending).await?;
    }
    for ns in &changes.removed {
        set_phase_of(sink, ns.clone(), Phase::Pending).await?;
    }
    let summary = changes.describe(&new, &created);
    tracing::info!("Mappings reloaded: {summary}.");
    if let Some(m) = metrics {
        m.start_labels(&new);
        m.reloads_total.with_label_values(&["applied"]).inc();
    }
    for id in staged.requests {
        let outcome = format!("{}: {summary}", reload::APPLIED);
        reload::answer(sink.pool(), sink.state_schema(), id, &outcome).await;
    }
    Ok(true)
}
