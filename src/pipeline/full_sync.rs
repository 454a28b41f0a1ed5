//! Full sync: copying whole collections, and the hand-off to streaming.
//!
//! Per collection: phase `snapshot` (stored), documents read (by up to four `_id`-range
//! readers, in no particular order) and converted, written in chunks through the sink's COPY
//! path, then phase `streaming` with the document count. A task reads and converts the next
//! chunk while up to two others are written, each on its own connection.
//!
//! Where the chunks go depends on the load (`Load`):
//! - `tributary full-sync --mode replace`: into fresh shadow tables (`sink::postgres::swap`),
//!   swapped in by one transaction that also stores phase `streaming`; readers of the live
//!   tables see the old rows until that commit and the new ones after it, never an empty or
//!   half-loaded table. An interrupted load resumes in the shadow tables it left.
//! - `sync`'s own initial copy (and the copy of a rename target): the live tables are truncated
//!   and filled chunk by chunk with `copy_rows` (`copy_collections` with `Replace`); nobody is
//!   expected to read a collection that has never been copied.
//! - `--mode upsert`: chunks are upserted over the live tables with `copy_rows`.
//!
//! Resuming (`resume`, docs/resumable-copies.md): every chunk is one range reader's next run of
//! `_id`s, and its progress (range, sequence number, last `_id`) commits in the transaction that
//! writes its rows. A copy killed or failed at any point resumes from those records: each range
//! continues after the last chunk of its unbroken run, with the split points saved when the
//! copy first started. A chunk's write is retried on transient Postgres errors with the
//! streaming path's policy (`SinkRetry`), so a Postgres restart does not even stop the copy.
//!
//! The hand-off guarantee lives in the callers' order of operations: the stream position is
//! recorded (and committed as the checkpoint when there is none) BEFORE any copy starts, and
//! streaming starts only after every copy finished, from that checkpoint. Every change made
//! during a copy is therefore replayed after it, in source order, as upserts of the latest full
//! document or deletes by key, so no snapshot row read before a change can outlive that
//! change. A collection added to the mappings later is copied the same way at the next start
//! (before streaming resumes from the existing, older checkpoint), and the target of a rename
//! is copied between batches after the rename committed; in both cases streaming is paused for
//! the copy and then replays everything since the checkpoint.
//!
//! Progress (`crate::progress`): a bar per collection and one for the whole run when stderr is a
//! terminal, log lines with the percentage otherwise; the totals are MongoDB's estimated
//! document counts, read for every selected collection before the first copy starts.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::RawDocumentBuf;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use mongodb::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::normalize::FatalConversion;
use super::sync::{claim_tables, connect, record_position, state_client, SyncError};
use super::SinkRetry;
use resume::{encode_id, saved_copy, start_copy};

mod resume;
use crate::config::Config;
use crate::event::document_id;
use crate::event::Namespace;
use crate::lease::LeaseFlag;
use crate::mapping::convert::{convert_key, convert_raw_document, Nulled};
use crate::mapping::json::to_json;
use crate::mapping::model::{CollectionMapping, MappingSet, OnError};
use crate::metrics::Metrics;
use crate::progress::{CollectionProgress, Progress, ProgressMode};
use crate::sink::postgres::copy_progress::{self, ChunkDone, CopyLoad};
use crate::sink::postgres::state::{self, CollectionState, Phase};
use crate::sink::postgres::{swap, PostgresSink};
use crate::sink::{Batch, Change, DeadLetter, DocumentRows, Sink, SinkError};
use crate::source::snapshot::{SnapshotChunk, SnapshotReader};
use crate::source::SourceError;
use serde_json::Value;

/// What to do with rows already in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullSyncMode {
    /// The tables end up holding exactly the collection: rows of documents deleted long ago
    /// disappear. `full_sync` loads fresh tables and swaps them in atomically; `sync`'s initial
    /// copy (`copy_collections`) truncates the tables and copies into them.
    #[default]
    Replace,
    /// Upsert over what is there; rows whose documents no longer exist stay.
    Upsert,
}

/// What one collection's copy did.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionReport {
    pub namespace: String,
    pub documents: u64,
    pub dead_letters: u64,
    pub elapsed: Duration,
}

/// What a full sync did; `interrupted` when the shutdown future fired before it finished (the
/// unfinished collection stays in phase `snapshot` and its copy resumes next time).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FullSyncReport {
    pub collections: Vec<CollectionReport>,
    pub interrupted: bool,
}

/// `tributary full-sync`: copies the given collections (`db.coll` names; all when `None`).
///
/// When the stream has no checkpoint yet, the current stream position is recorded first as
/// its checkpoint, so a later `sync` replays every change made during the copy. An existing
/// checkpoint is left alone (it is older, so replaying from it also covers the copy). Run it
/// while no `sync` daemon streams the same collections: a concurrent stream could apply a
/// change before the copy writes an older version of the same document. It therefore holds
/// the stream's lock (`crate::lease`) while it copies, and refuses to start while a `sync`
/// holds it (exit 2, nothing written).
///
/// `Replace` loads each collection into shadow tables and swaps them in by one transaction
/// (module doc); the position/checkpoint logic above is the same for both modes.
pub async fn full_sync(
    config: &Config,
    mappings: Arc<MappingSet>,
    collections: Option<Vec<String>>,
    mode: FullSyncMode,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<FullSyncReport, SyncError> {
    let selected = select_collections(&mappings, collections.as_deref())?;
    // Hold the stream's lock while copying: never race a running `sync` of the same stream.
    let Some(lease) = take_lock(config).await? else {
        return Err(SyncError::Config(format!(
            "a running `tributary sync` holds the lock of stream {:?} (see `tributary status`); stop it before a full sync, or use another sync.name",
            config.sync.name
        )));
    };
    // Let go of the lock before returning, so a command started right after this one finds
    // it free (`Lease::release`).
    let result = async {
        let (client, mut sink) = connect(config, &mappings).await?;
        // Under the stream's lock, before the first row: the tables become this stream's.
        claim_tables(&sink).await?;
        if mode == FullSyncMode::Replace {
            refuse_distributed(&sink, &mappings, &selected).await?;
        }
        sink.set_lease(lease.flag());
        let flag = lease.flag();
        let existing = {
            let pg = state_client(&sink).await?;
            state::read_checkpoint(&**pg, &config.sync.state_schema, &config.sync.name).await?
        };
        if existing.is_none() {
            let position = record_position(&client, config, &mappings).await?;
            sink.apply(&Batch {
                checkpoint: Some(position.to_checkpoint(&config.sync.name)),
                ..Batch::default()
            })
            .await?;
        }
        // Letters whose documents convert now are written and resolved before the copy, which
        // then records a letter only for versions without an open one.
        super::dead_letters::retry_open_letters(&client, &sink, &mappings, Some(&selected)).await;
        let shutdown = shutdown.boxed().shared();
        let load = match mode {
            FullSyncMode::Replace => Load::Swap { lease: Some(&flag) },
            FullSyncMode::Upsert => Load::Upsert,
        };
        copy_with(
            &client,
            &mut sink,
            &mappings,
            &selected,
            load,
            config.sync.batch_max_rows,
            metrics.as_deref(),
            shutdown,
        )
        .await
    }
    .await;
    lease.release().await;
    result
}

/// `--mode replace` on a Citus-distributed table would swap in a plain local table: refused
/// before anything is written (docs/scaling.md, "Citus-distributed targets").
async fn refuse_distributed(
    sink: &PostgresSink,
    mappings: &MappingSet,
    selected: &[usize],
) -> Result<(), SyncError> {
    let pg = state_client(sink).await?;
    for &c in selected {
        for t in mappings.collections[c].tables() {
            let distributed =
                crate::sink::postgres::partitions::citus_distributed(&**pg, sink.schema(), &t.name)
                    .await
                    .map_err(|e| {
                        SinkError::postgres(
                            format!("looking up whether {} is distributed", t.name),
                            e,
                        )
                    })?;
            if distributed {
                return Err(SyncError::Config(format!(
                    "table {} is a Citus-distributed table, and `full-sync --mode replace` would replace it with a plain local table; no row was written. Use `--mode upsert` (docs/scaling.md, \"Citus-distributed targets\")",
                    crate::sink::postgres::ddl::qualified(sink.schema(), &t.name)
                )));
            }
        }
    }
    Ok(())
}

/// The stream's lock, or `None` while another session holds it. Tried for a few seconds: the
/// backend of a process that just exited (killed, say) lets go of the lock only once it
/// notices its client is gone.
async fn take_lock(config: &Config) -> Result<Option<crate::lease::Lease>, SyncError> {
    const PATIENCE: Duration = Duration::from_secs(3);
    let started = tokio::time::Instant::now();
    loop {
        let taken = crate::lease::Lease::try_take(&config.postgres.uri, &config.sync.name).await?;
        if taken.is_some() || started.elapsed() >= PATIENCE {
            return Ok(taken);
        }
        tokio::time::sleep(crate::lease::POLL / 2).await;
    }
}

/// How one collection's chunks reach Postgres (module doc).
#[derive(Debug, Clone, Copy)]
enum Load<'a> {
    /// Upsert over the live tables.
    Upsert,
    /// Truncate the live tables, then copy into them (`sync`'s initial copy).
    TruncateThenCopy,
    /// Copy into shadow tables and swap them in; the swap commits only while `lease` is held.
    Swap { lease: Option<&'a LeaseFlag> },
}

/// Indexes of the named collections; every name must be mapped.
pub fn select_collections(
    mappings: &MappingSet,
    names: Option<&[String]>,
) -> Result<Vec<usize>, SyncError> {
    let Some(names) = names else {
        return Ok((0..mappings.collections.len()).collect());
    };
    names
        .iter()
        .map(|name| {
            let ns = Namespace::parse(name.trim());
            mappings
                .collections
                .iter()
                .position(|c| c.database == ns.db && c.collection == ns.coll)
                .ok_or_else(|| {
                    SyncError::Config(format!(
                        "--collections names {name:?}, which no mapping maps; use db.collection as in the mapping files"
                    ))
                })
        })
        .collect()
}

/// Copies `selected` one after another; stops between chunks when `shutdown` fires. This is
/// `sync`'s path: `Replace` truncates the live tables and copies into them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_collections<F>(
    client: &Client,
    sink: &mut PostgresSink,
    mappings: &MappingSet,
    selected: &[usize],
    mode: FullSyncMode,
    chunk: usize,
    metrics: Option<&Metrics>,
    shutdown: futures::future::Shared<F>,
) -> Result<FullSyncReport, SyncError>
where
    F: Future<Output = ()> + Unpin,
{
    let load = match mode {
        FullSyncMode::Replace => Load::TruncateThenCopy,
        FullSyncMode::Upsert => Load::Upsert,
    };
    copy_with(
        client, sink, mappings, selected, load, chunk, metrics, shutdown,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn copy_with<F>(
    client: &Client,
    sink: &mut PostgresSink,
    mappings: &MappingSet,
    selected: &[usize],
    load: Load<'_>,
    chunk: usize,
    metrics: Option<&Metrics>,
    shutdown: futures::future::Shared<F>,
) -> Result<FullSyncReport, SyncError>
where
    F: Future<Output = ()> + Unpin,
{
    let mut report = FullSyncReport::default();
    // The estimates come first, so the job's total is known before the first chunk.
    let mut estimates = Vec::with_capacity(selected.len());
    for &collection in selected {
        let mapping = &mappings.collections[collection];
        let namespace = Namespace::new(&mapping.database, &mapping.collection);
        estimates.push(
            SnapshotReader::new(client.clone(), namespace, chunk)
                .estimated_count()
                .await,
        );
    }
    let progress = Progress::new("Full sync", ProgressMode::Auto)
        .with_overall(estimates.iter().flatten().sum());
    for (&collection, estimate) in selected.iter().zip(estimates) {
        let mut bar = progress.collection(&mappings.collections[collection].namespace(), estimate);
        let copied = copy_collection(
            client, sink, mappings, collection, load, chunk, metrics, &shutdown, &mut bar,
        )
        .await;
        match copied {
            Ok(Some(r)) => {
                bar.finish("done");
                report.collections.push(r);
            }
            Ok(None) => {
                bar.abandon("interrupted");
                report.interrupted = true;
                break;
            }
            Err(e) => {
                bar.abandon("failed");
                progress.finish();
                return Err(e);
            }
        }
    }
    progress.finish();
    Ok(report)
}

/// Copies one collection; `None` when interrupted by shutdown.
#[allow(clippy::too_many_arguments)]
async fn copy_collection<F>(
    client: &Client,
    sink: &mut PostgresSink,
    mappings: &MappingSet,
    collection: usize,
    load: Load<'_>,
    chunk: usize,
    metrics: Option<&Metrics>,
    shutdown: &futures::future::Shared<F>,
    progress: &mut CollectionProgress,
) -> Result<Option<CollectionReport>, SyncError>
where
    F: Future<Output = ()> + Unpin,
{
    let mapping = &mappings.collections[collection];
    let namespace = mapping.namespace();
    let state_schema = sink.state_schema().to_owned();
    let stream = sink.stream().to_owned();
    let started = Instant::now();
    let reader = SnapshotReader::new(
        client.clone(),
        Namespace::new(&mapping.database, &mapping.collection),
        chunk,
    );
    let swapping = matches!(load, Load::Swap { .. });
    let (resume, rewrite) = match saved_copy(sink, collection, load.kind()).await? {
        // Chunks after a range's high-water mark may be in the shadow tables already (the
        // live tables are written by upserts, which do not mind).
        Some(resume) => (resume, swapping),
        None => (start_copy(sink, collection, load, &reader).await?, false),
    };
    progress.inc(resume.documents);
    let mut documents = resume.documents;
    let started_at = resume.started_at;
    let reader = reader.with_plan(resume.bounds, resume.starts);
    {
        let pg = state_client(sink).await?;
        state::set_collection_state(
            &**pg,
            &state_schema,
            &stream,
            &CollectionState::copying(namespace.clone(), started_at),
        )
        .await?;
    }
    // Reading and converting run in their own task, one chunk ahead: the next chunk is
    // converted while this one is written (converting in the writer's loop left Postgres idle
    // during every conversion).
    let mut prepared = spawn_prepare(
        reader,
        Arc::new(mapping.clone()),
        collection,
        namespace.clone(),
    );
    let mut dead = 0u64;
    // Two chunks are written at once, on two connections: while one waits for Postgres to
    // take its rows and commit, the other is encoded and sent. Chunks hold distinct documents
    // (disjoint `_id` ranges), so they never touch the same rows.
    let shared: &PostgresSink = sink;
    let writers = WRITERS.min(sink.pool().status().max_size).max(1);
    // Each resolves to the documents it copied (0 for dead letters).
    let mut in_flight: FuturesUnordered<BoxFuture<'_, Result<u64, SinkError>>> =
        FuturesUnordered::new();
    let mut exhausted = false;
    let mut interrupted = false;
    loop {
        tokio::select! {
            item = prepared.next(), if !exhausted && !interrupted && in_flight.len() < writers => {
                let item = match item {
                    Ok(Some(item)) => item,
                    Ok(None) => {
                        exhausted = true;
                        continue;
                    }
                    Err(e) => {
                        // As for a failed write below: no connection back mid-COPY.
                        while in_flight.next().await.is_some() {}
                        return Err(e);
                    }
                };
                if shutdown.clone().now_or_never().is_some() {
                    interrupted = true;
                    continue;
                }
                let PreparedChunk {
                    rows,
                    letters,
                    refused,
                    documents: count,
                    nulled,
                    done,
                } = item;
                if let Some(m) = metrics {
                    for (column, n) in &nulled {
                        m.nulled_values_total
                            .with_label_values(&[&namespace, column])
                            .inc_by(*n);
                    }
                }
                dead += letters.len() as u64;
                let chunk_namespace = namespace.clone();
                in_flight.push(
                    async move {
                        let namespace = chunk_namespace;
                        let letters_of = letters.len() as u64;
                        if !letters.is_empty() {
                            // Before the rows and their progress, so a recorded chunk never
                            // lacks its letters (a letter written twice is recorded once).
                            let batch = Batch {
                                changes: refused,
                                dead_letters: letters,
                                ..Batch::default()
                            };
                            retrying(metrics, || shared.apply_uncheckpointed(&batch)).await?;
                            count_dead_letters(metrics, &namespace, letters_of);
                        }
                        let written = copy_narrowed(
                            shared, swapping, rewrite, collection, rows, &done, metrics,
                        )
                        .await?;
                        let Narrowed::Split(refused) = written else {
                            return Ok(count - letters_of);
                        };
                        // Postgres refused what the mapping accepted (a live table whose type
                        // differs, say): those documents become dead letters, the rest stays;
                        // the chunk's progress commits with the letters.
                        let batch = refused_batch(mapping, collection, &namespace, refused);
                        let refused_of = batch.dead_letters.len() as u64;
                        retrying(metrics, || shared.apply_with_progress(&batch, Some(&done)))
                            .await?;
                        count_dead_letters(metrics, &namespace, refused_of);
                        Ok(count - letters_of - refused_of)
                    }
                    .boxed(),
                );
            }
            Some(written) = in_flight.next(), if !in_flight.is_empty() => {
                let count = match written {
                    Ok(count) => count,
                    Err(e) => {
                        // Let the other chunk finish rather than drop it mid-COPY, which would
                        // hand its connection back to the pool in an unknown state.
                        while in_flight.next().await.is_some() {}
                        return Err(e.into());
                    }
                };
                documents += count;
                if let Some(m) = metrics {
                    m.full_sync_documents_total
                        .with_label_values(&[&namespace])
                        .inc_by(count);
                }
                progress.inc(count);
            }
            else => break,
        }
    }
    if interrupted {
        tracing::info!(namespace = %namespace, documents, "Full sync of the collection interrupted by shutdown; it stays in phase snapshot, and the next `sync` or `full-sync` resumes the copy from the chunks committed so far.");
        return Ok(None);
    }
    let done = CollectionState {
        namespace: namespace.clone(),
        phase: Phase::Streaming,
        snapshot_started_at: Some(started_at),
        snapshot_done_at: Some(chrono::Utc::now()),
        documents: Some(i64::try_from(documents).unwrap_or(i64::MAX)),
    };
    if let Load::Swap { lease } = load {
        swap::swap_in(sink, collection, &done, lease).await?;
    } else {
        let mut pg = state_client(sink).await?;
        let tx = pg
            .transaction()
            .await
            .map_err(|e| SinkError::postgres("starting a transaction", e))?;
        state::set_collection_state(&*tx, &state_schema, &stream, &done).await?;
        // The copy is complete: nothing is left to resume.
        copy_progress::clear(&*tx, &state_schema, &stream, &namespace).await?;
        tx.commit()
            .await
            .map_err(|e| SinkError::postgres("recording the end of a copy", e))?;
    }
    let elapsed = started.elapsed();
    tracing::info!(namespace = %namespace, documents, dead_letters = dead, seconds = elapsed.as_secs_f64(), "Full sync of the collection finished.");
    Ok(Some(CollectionReport {
        namespace,
        documents,
        dead_letters: dead,
        elapsed,
    }))
}

impl Load<'_> {
    fn kind(self) -> CopyLoad {
        match self {
            Load::Upsert => CopyLoad::Upsert,
            Load::TruncateThenCopy => CopyLoad::Truncate,
            Load::Swap { .. } => CopyLoad::Shadow,
        }
    }
}

/// Runs `write` until it succeeds, retrying transient Postgres errors on the streaming path's
/// policy (`SinkRetry`); any other error, or a Postgres that stays down, is returned.
async fn retrying<F, Fut>(metrics: Option<&Metrics>, mut write: F) -> Result<(), SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), SinkError>>,
{
    let mut retry = SinkRetry::new();
    loop {
        match write().await {
            Err(e) if e.is_retryable() => retry.pause(e, metrics, "a chunk of the copy").await?,
            other => return other,
        }
    }
}

/// How a chunk was written by `copy_narrowed`.
enum Narrowed {
    /// In one transaction, with its progress.
    Whole,
    /// In parts, around the rows Postgres refused (given with its reason); its progress is
    /// still to be recorded.
    Split(Vec<(DocumentRows, SinkError)>),
}

/// Writes one chunk into the live tables (or, `swapping`, the shadow tables) with its progress
/// `done` in the same transaction. Transient errors are retried (`retrying`'s policy); a
/// Postgres data error is narrowed to the documents that cause it: the rows are split in halves
/// and each half written again, so every other row commits. Halves commit on their own, which a
/// copy allows: its writes are idempotent, and the chunk's progress is recorded only after the
/// last part (by the caller, with the refused rows' dead letters).
#[allow(clippy::too_many_arguments)]
async fn copy_narrowed(
    sink: &PostgresSink,
    swapping: bool,
    rewrite: bool,
    collection: usize,
    rows: Vec<DocumentRows>,
    done: &ChunkDone,
    metrics: Option<&Metrics>,
) -> Result<Narrowed, SinkError> {
    let mut pending = vec![rows];
    let mut refused = Vec::new();
    let mut split = false;
    let mut rewrite = rewrite;
    let mut retry = SinkRetry::new();
    while let Some(mut part) = pending.pop() {
        let progress = (!split).then_some(done);
        let written = if swapping {
            swap::copy_rows_into(sink, collection, &mut part, progress, rewrite).await
        } else {
            sink.copy_chunk(collection, &mut part, progress).await
        };
        match written {
            Ok(_) => {}
            Err(e) if e.is_data_error() && part.len() == 1 => {
                split = true;
                refused.extend(part.pop().map(|r| (r, e)));
            }
            Err(e) if e.is_data_error() && part.len() > 1 => {
                split = true;
                let second = part.split_off(part.len() / 2);
                pending.push(second);
                pending.push(part);
            }
            Err(e) if e.is_retryable() => {
                retry.pause(e, metrics, "a chunk of the copy").await?;
                // The lost attempt may have committed before its answer was lost: the next
                // one replaces what it finds instead of failing on the primary key.
                rewrite = true;
                pending.push(part);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(if split {
        Narrowed::Split(refused)
    } else {
        Narrowed::Whole
    })
}

/// The dead letters (and `Change::Refused`) of documents whose rows Postgres refused.
fn refused_batch(
    mapping: &CollectionMapping,
    collection: usize,
    namespace: &str,
    refused: Vec<(DocumentRows, SinkError)>,
) -> Batch {
    let mut batch = Batch::default();
    for (rows, error) in refused {
        let key = rows.parent[mapping.key_index()].clone();
        batch
            .dead_letters
            .push(crate::sink::dead_letter::refused_rows(
                mapping, namespace, &key, &rows, &error,
            ));
        if !mapping.children.is_empty() {
            batch.changes.push(Change::Refused { collection, key });
        }
    }
    batch
}

/// Counts a full sync's committed dead letters in `tributary_dead_letters_total`, as the
/// stream counts its own: an operator watching the counter sees every path's letters.
fn count_dead_letters(metrics: Option<&Metrics>, namespace: &str, letters: u64) {
    if let Some(m) = metrics {
        m.dead_letters_total
            .with_label_values(&[namespace])
            .inc_by(letters);
    }
}

/// Chunks written at once (each on its own connection, at most `postgres.pool_size`).
const WRITERS: usize = 2;

/// One chunk of a collection, converted: its rows and its dead letters.
struct PreparedChunk {
    rows: Vec<DocumentRows>,
    letters: Vec<DeadLetter>,
    /// `Change::Refused` of the dead-lettered documents: with `--mode upsert` their old rows
    /// stay, and the sink must know they are out of date.
    refused: Vec<Change>,
    documents: u64,
    /// Values stored as NULL under `on_error: null`, per column (logged once per chunk).
    nulled: Vec<(String, u64)>,
    /// Its progress, committed with its rows.
    done: ChunkDone,
}

/// The read-and-convert task of one collection's copy and the one-slot channel it fills.
/// Dropping it stops the task (and with it the range readers).
struct Prepare {
    rx: mpsc::Receiver<Result<PreparedChunk, SyncError>>,
    task: Option<JoinHandle<()>>,
    namespace: String,
}

fn spawn_prepare(
    mut reader: SnapshotReader,
    mapping: Arc<CollectionMapping>,
    collection: usize,
    namespace: String,
) -> Prepare {
    let (tx, rx) = mpsc::channel(1);
    let name = namespace.clone();
    let task = tokio::spawn(async move {
        loop {
            let item = match reader.next_piece().await {
                Ok(Some(piece)) => prepare_piece(&mapping, collection, &namespace, piece),
                Ok(None) => return,
                Err(e) => Err(e.into()),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Prepare {
        rx,
        task: Some(task),
        namespace: name,
    }
}

impl Prepare {
    /// The next converted chunk; `None` once the collection is exhausted.
    async fn next(&mut self) -> Result<Option<PreparedChunk>, SyncError> {
        if let Some(item) = self.rx.recv().await {
            return item.map(Some);
        }
        // The task dropped its sender: it finished, unless it panicked. The handle is kept
        // until it is joined, so a caller that gives up waiting (`select!`) loses nothing.
        let Some(task) = self.task.as_mut() else {
            return Ok(None);
        };
        let joined = task.await;
        self.task = None;
        match joined {
            Ok(()) => Ok(None),
            Err(e) => Err(SyncError::Source(SourceError::Fatal(format!(
                "the full-sync reader of {} stopped unexpectedly ({e}); run the command \
                 again: the copy of this collection starts over",
                self.namespace
            )))),
        }
    }
}

impl Drop for Prepare {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Converts one chunk and describes its progress.
fn prepare_piece(
    mapping: &CollectionMapping,
    collection: usize,
    namespace: &str,
    piece: SnapshotChunk,
) -> Result<PreparedChunk, SyncError> {
    let done = ChunkDone {
        namespace: namespace.to_owned(),
        range: i32::try_from(piece.range).unwrap_or(i32::MAX),
        seq: i64::try_from(piece.seq).unwrap_or(i64::MAX),
        last_id: piece.last_id.as_ref().map(encode_id).transpose()?,
        documents: i64::try_from(piece.docs.len()).unwrap_or(i64::MAX),
        range_done: piece.range_done,
    };
    let mut prepared = convert_chunk(mapping, collection, namespace, piece.docs)?;
    prepared.done = done;
    Ok(prepared)
}

/// Converts one chunk; a document that cannot be converted becomes a dead letter, or stops the
/// copy under `on_error: fail`.
fn convert_chunk(
    mapping: &CollectionMapping,
    collection: usize,
    namespace: &str,
    docs: Vec<RawDocumentBuf>,
) -> Result<PreparedChunk, SyncError> {
    let mut rows = Vec::with_capacity(docs.len());
    let mut letters = Vec::new();
    let mut refused = Vec::new();
    // Per column: how many values, and the first one's key and reason for the log line.
    let mut nulled: Vec<(String, u64, Value, Nulled)> = Vec::new();
    for raw in &docs {
        match convert_raw_document(mapping, raw) {
            Ok(c) => {
                for n in c.nulled {
                    match nulled.iter_mut().find(|(column, ..)| *column == n.column) {
                        Some(entry) => entry.1 += 1,
                        None => nulled.push((n.column.clone(), 1, c.rows.id.clone(), n)),
                    }
                }
                rows.push(c.rows);
            }
            Err(e) => {
                let id = document_id(raw).ok();
                let row_key = id.as_ref().and_then(|id| convert_key(mapping, id).ok());
                if let Some(key) = row_key.clone().filter(|_| !mapping.children.is_empty()) {
                    refused.push(Change::Refused { collection, key });
                }
                if e.fatal || mapping.on_error == OnError::Fail {
                    return Err(SyncError::Conversion(FatalConversion {
                        namespace: namespace.to_owned(),
                        key: id.as_ref().map(to_json).unwrap_or_default().to_string(),
                        reason: e.to_string(),
                    }));
                }
                letters.push(
                    DeadLetter::new(namespace, id.as_ref(), Some(raw), &e.to_string(), None)
                        .with_row_key(row_key.as_ref()),
                );
            }
        }
    }
    // One line per column and chunk, not per value: a copy of millions of documents with one
    // unconvertible field would otherwise log millions of lines.
    for (column, values, key, first) in &nulled {
        tracing::warn!(namespace = %namespace, column = %column, values, first_key = %key, source = %first.path, reason = %first.reason, "Values could not be converted; NULL is stored in their column (on_error: null), the rows are written and the copy goes on.");
    }
    Ok(PreparedChunk {
        rows,
        letters,
        refused,
        documents: docs.len() as u64,
        nulled: nulled
            .into_iter()
            .map(|(column, values, ..)| (column, values))
            .collect(),
        done: ChunkDone {
            namespace: namespace.to_owned(),
            range: 0,
            seq: 0,
            last_id: None,
            documents: 0,
            range_done: false,
        },
    })
}
