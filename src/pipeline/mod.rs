//! The pipeline: source task → bounded channel → batcher (+ normalisation) → one-slot channel
//! → writer (sink). Reading and converting the next batch overlaps writing the current one;
//! every queue is bounded, so memory stays flat however far behind Postgres is.
//!
//! Checkpoints: each batch carries the position after its last event and the sink commits it in
//! the batch's own transaction, so the durable position never runs ahead of the durable rows.
//! Shutdown: the shutdown future stops the source; what was already read is batched, written
//! and committed, then `run` returns.

pub mod batcher;
pub mod dead_letters;
pub mod full_sync;
pub mod lag;
pub mod narrow;
pub mod normalize;
pub mod recopier;
pub mod recopy;
pub mod reload;
pub mod resume;
pub mod resync;
pub mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::event::ChangeEvent;
use crate::mapping::model::MappingSet;
use crate::metrics::Metrics;
use crate::position::Position;
use crate::sink::{Batch, Sink, SinkError};
use crate::source::{Source, SourceError};
use batcher::{Batcher, EventGroup};
use normalize::{normalize, FatalConversion, Normalized};

/// How `run` batches and where it checkpoints.
#[derive(Clone)]
pub struct PipelineConfig {
    /// Stream name: the checkpoint row this pipeline writes.
    pub stream: String,
    /// A batch closes at this many changes (`sync.batch_max_rows`).
    pub batch_max_rows: usize,
    /// ... or this long after its first event (`sync.batch_max_wait_ms`, the latency bound).
    pub batch_max_wait: Duration,
    /// Event groups the source may read ahead of the batcher.
    pub queue_capacity: usize,
    pub metrics: Option<Arc<Metrics>>,
    /// The catch-up display after a start (`resume`); `Off` for callers with their own.
    pub catch_up_progress: crate::progress::ProgressMode,
    /// Notified when a reloaded mapping set is staged (`reload::Reloads`): `run` commits what
    /// it read and returns `RunOutcome::Reload`.
    pub reload: Option<Arc<tokio::sync::Notify>>,
}

impl PipelineConfig {
    pub fn new(stream: &str, batch_max_rows: usize, batch_max_wait_ms: u64) -> Self {
        PipelineConfig {
            stream: stream.to_owned(),
            batch_max_rows: batch_max_rows.max(1),
            batch_max_wait: Duration::from_millis(batch_max_wait_ms),
            // Read-ahead only needs to keep the batcher fed while a batch is written; each group
            // holds a full document, so a deep queue is what made memory grow with the backlog
            // (253 MiB at 5,000 groups in the streaming benchmark; 106 at 1,000 and 88 MiB at
            // 250, at the same 21k changes/s).
            queue_capacity: (batch_max_rows / 20).clamp(16, 250),
            metrics: None,
            catch_up_progress: crate::progress::ProgressMode::Off,
            reload: None,
        }
    }
}

/// How `run` ended without an error.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The shutdown future fired; everything read was committed up to `position`.
    Shutdown { position: Option<Position> },
    /// A collection was renamed onto a mapped name: it needs a full sync, then streaming
    /// resumes from the committed checkpoint (`position`).
    Resync {
        collections: Vec<usize>,
        position: Option<Position>,
    },
    /// New mappings are staged (`PipelineConfig::reload`): everything read was committed up to
    /// `position`; streaming resumes from there with the new set.
    Reload { position: Option<Position> },
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("writing to Postgres failed: {0}")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Conversion(#[from] FatalConversion),
    /// After shutdown, the batches already read could not be committed within the drain
    /// deadline (Postgres kept failing). Nothing is lost: the next start replays them.
    #[error("could not commit the last batch within {0:?} after shutdown (Postgres kept failing); it will be replayed from the checkpoint at the next start")]
    DrainTimeout(Duration),
}

/// How long a shutdown waits for the batches already read to commit.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// A batch ready for the sink, with what the writer needs to report it.
struct Prepared {
    batch: Batch,
    position: Option<Position>,
    rows: usize,
    /// Rows per table, for `tributary_rows_written_total` once committed.
    table_rows: Vec<(String, u64)>,
    first_read_at: Instant,
    /// Only heartbeats and position moves: the source had nothing newer, so lag is zero.
    caught_up: bool,
    /// Cluster time of the batch's last event.
    last_time: Option<bson::Timestamp>,
    /// A re-copy's chunk or sweep (`recopy`): told once committed; it moves no position.
    done: Option<tokio::sync::oneshot::Sender<recopy::Applied>>,
}

/// Streams `source` into `sink` until `shutdown` fires or something fails.
pub async fn run<Src, S>(
    source: Src,
    sink: &mut S,
    mappings: Arc<MappingSet>,
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunOutcome, PipelineError>
where
    Src: Source + 'static,
    S: Sink,
{
    run_with(source, sink, mappings, config, shutdown, None).await
}

/// `run`, with the chunks and sweeps of online re-copies (`recopy`) taken from `recopies` and
/// written between batches, in stream order.
pub async fn run_with<Src, S>(
    source: Src,
    sink: &mut S,
    mappings: Arc<MappingSet>,
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
    recopies: Option<&mut mpsc::Receiver<recopy::RecopyItem>>,
) -> Result<RunOutcome, PipelineError>
where
    Src: Source + 'static,
    S: Sink,
{
    let (group_tx, group_rx) = mpsc::channel::<EventGroup>(config.queue_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Lag also counts the source's silence, which only the source itself can see.
    let pending = lag::Pending::watching(source.health());
    if let Some(m) = &config.metrics {
        tokio::spawn(lag::tick(pending.clone(), m.clone(), stop_rx.clone()));
    }
    tokio::spawn(resume::report(
        pending.clone(),
        config.catch_up_progress,
        stop_rx.clone(),
    ));
    let source_task = tokio::spawn(read_source(source, group_tx, stop_rx, pending.clone()));
    let (batch_tx, batch_rx) = mpsc::channel::<Prepared>(1);

    let batching = batch_events(
        Batcher::new(group_rx, config.batch_max_rows, config.batch_max_wait),
        &mappings,
        config,
        batch_tx,
        stop_tx.clone(),
        recopies,
    );
    let writing = async {
        let r = write_batches(sink, &mappings, batch_rx, config, &pending).await;
        if r.is_err() {
            // Stop reading: nothing more can be written.
            let _ = stop_tx.send(true);
        }
        r
    };
    let work = async { tokio::join!(batching, writing) };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    let reload = async {
        match &config.reload {
            Some(ready) => ready.notified().await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(reload);
    let mut stopped_by_shutdown = false;
    let mut reloading = false;
    let stopped = tokio::select! {
        r = &mut work => Some(r),
        // A signal (logged by `cli::signal`) or a lost lock (logged by `lease`).
        () = &mut shutdown => {
            stopped_by_shutdown = true;
            None
        }
        () = &mut reload => {
            reloading = true;
            None
        }
    };
    let (batched, written) = match stopped {
        Some(r) => r,
        None => {
            tracing::debug!("Stopping: no more reading; committing what was already read.");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(DRAIN_DEADLINE, &mut work).await {
                Ok(r) => r,
                Err(_) => {
                    source_task.abort();
                    return Err(PipelineError::DrainTimeout(DRAIN_DEADLINE));
                }
            }
        }
    };
    // Whatever ended the work, the source must stop too (it may be blocked on a full queue).
    let _ = stop_tx.send(true);
    let source_result = match source_task.await {
        Ok(r) => r,
        Err(e) => Err(SourceError::Fatal(format!("the source task failed: {e}"))),
    };
    let position = written?;
    let resync = batched?;
    if !resync.is_empty() {
        return Ok(RunOutcome::Resync {
            collections: resync,
            position,
        });
    }
    source_result?;
    if reloading {
        return Ok(RunOutcome::Reload { position });
    }
    if !stopped_by_shutdown {
        // The source only ends on its own with an error, handled above.
        tracing::warn!("The source ended without an error or a shutdown.");
    }
    Ok(RunOutcome::Shutdown { position })
}

/// Reads the source into the queue, one transaction (or lone event) per group.
async fn read_source<Src: Source>(
    mut source: Src,
    tx: mpsc::Sender<EventGroup>,
    mut stop: watch::Receiver<bool>,
    pending: lag::Pending,
) -> Result<(), SourceError> {
    loop {
        let events = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = source.next_batch() => r?,
        };
        for group in group_transactions(events) {
            if let Some(e) = group.iter().find(|e| e.op != crate::event::Op::Noop) {
                pending.read(e.cluster_time);
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return Ok(()),
                r = tx.send(group) => if r.is_err() { return Ok(()) },
            }
        }
    }
}

/// Splits events into groups: consecutive events of one transaction together, others alone.
pub fn group_transactions(events: Vec<ChangeEvent>) -> Vec<EventGroup> {
    let mut groups: Vec<EventGroup> = Vec::new();
    for e in events {
        match groups.last_mut() {
            Some(g) if g.last().is_some_and(|last| last.same_transaction(&e)) => g.push(e),
            _ => groups.push(vec![e]),
        }
    }
    groups
}

/// Batches and normalises events; returns collections needing a full sync (rename), if any.
/// Each group is converted as it arrives and its documents dropped, so a batch being gathered
/// holds rows, never `batch_max_rows` documents as well.
async fn batch_events(
    mut batcher: Batcher,
    mappings: &MappingSet,
    config: &PipelineConfig,
    tx: mpsc::Sender<Prepared>,
    stop: watch::Sender<bool>,
    mut recopies: Option<&mut mpsc::Receiver<recopy::RecopyItem>>,
) -> Result<Vec<usize>, FatalConversion> {
    let mut guard = recopy::Guard::default();
    loop {
        let first = match batcher.first_or(recopies.as_deref_mut()).await {
            batcher::First::Closed => break,
            batcher::First::Other(item) => {
                if let Some(p) = recopy_item(&mut guard, mappings, item)? {
                    if tx.send(p).await.is_err() {
                        break;
                    }
                }
                continue;
            }
            batcher::First::Group(g) => g,
        };
        let mut gathered = Gathered::default();
        batcher
            .batch_from(first, |group| {
                let group = guard.filter(mappings, group);
                gathered.add(mappings, config, group)
            })
            .await?;
        let Gathered {
            out,
            position,
            last_time,
            caught_up,
        } = gathered;
        if let Some(m) = &config.metrics {
            for d in &out.dead_letters {
                m.dead_letters_total
                    .with_label_values(&[&d.namespace])
                    .inc();
            }
            for (namespace, column) in &out.nulled {
                m.nulled_values_total
                    .with_label_values(&[namespace, column])
                    .inc();
            }
            m.queue_depth
                .set(i64::try_from(batcher.queued()).unwrap_or(i64::MAX));
        }
        let prepared = Prepared {
            caught_up,
            last_time,
            rows: out.changes.len(),
            table_rows: crate::sink::rows_per_table(mappings, &out.changes),
            batch: Batch {
                changes: out.changes,
                dead_letters: out.dead_letters,
                checkpoint: position.as_ref().map(|p| p.to_checkpoint(&config.stream)),
            },
            position,
            first_read_at: Instant::now(),
            done: None,
        };
        if tx.send(prepared).await.is_err() {
            break;
        }
        if !out.resync.is_empty() {
            let _ = stop.send(true);
            return Ok(out.resync);
        }
    }
    Ok(Vec::new())
}

/// A re-copy's item in stream order: a chunk or sweep the guard admits becomes a batch of its
/// own (no checkpoint); one it refuses is answered `Stale` at once.
fn recopy_item(
    guard: &mut recopy::Guard,
    mappings: &MappingSet,
    item: recopy::RecopyItem,
) -> Result<Option<Prepared>, FatalConversion> {
    use recopy::{Applied, RecopyItem};
    let (out, done) = match item {
        RecopyItem::Start { collection, reply } => {
            guard.start(collection);
            let _ = reply.send(());
            return Ok(None);
        }
        RecopyItem::Finish { collection } => {
            guard.finish(collection);
            return Ok(None);
        }
        RecopyItem::Chunk(chunk) => {
            if !guard.admit_chunk(&chunk) {
                let _ = chunk.reply.send(Applied::Stale);
                return Ok(None);
            }
            (recopy::chunk_changes(mappings, &chunk)?, chunk.reply)
        }
        RecopyItem::Sweep(sweep) => {
            if !guard.admit_sweep(mappings, &sweep) {
                let _ = sweep.reply.send(Applied::Stale);
                return Ok(None);
            }
            let out = Normalized {
                changes: recopy::sweep_changes(&sweep),
                ..Normalized::default()
            };
            (out, sweep.reply)
        }
    };
    Ok(Some(Prepared {
        caught_up: false,
        last_time: None,
        rows: out.changes.len(),
        table_rows: crate::sink::rows_per_table(mappings, &out.changes),
        batch: Batch {
            changes: out.changes,
            dead_letters: out.dead_letters,
            checkpoint: None,
        },
        position: None,
        first_read_at: Instant::now(),
        done: Some(done),
    }))
}

/// What a batch keeps of its events while they arrive: their changes, and of the last one its
/// position and time.
struct Gathered {
    out: Normalized,
    position: Option<Position>,
    /// Cluster time of the last event.
    last_time: Option<bson::Timestamp>,
    /// Every event so far was a heartbeat or a position move.
    caught_up: bool,
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered {
            out: Normalized::default(),
            position: None,
            last_time: None,
            caught_up: true,
        }
    }
}

impl Gathered {
    fn add(
        &mut self,
        mappings: &MappingSet,
        config: &PipelineConfig,
        group: EventGroup,
    ) -> Result<(), FatalConversion> {
        normalize(mappings, &group, &mut self.out)?;
        for e in group.iter().filter(|e| e.op != crate::event::Op::Noop) {
            self.caught_up = false;
            if let Some(m) = &config.metrics {
                m.events_total
                    .with_label_values(&[&e.namespace.to_string(), e.op.label()])
                    .inc();
            }
        }
        if let Some(last) = group.into_iter().last() {
            self.last_time = Some(last.cluster_time);
            self.position = Some(last.position);
        }
        Ok(())
    }
}

/// Backoff for retryable sink errors: 100 ms doubling to 30 s, with jitter, about five minutes
/// in all before the batch is given up ("a connection that stayed down"). It paces what is
/// reported (a WARN line and `tributary_errors_total` per step) and when to give up, not the
/// retries themselves (`RETRY_EVERY`).
fn sink_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(16)
        .with_jitter()
}

/// While Postgres fails retryably, the batch is tried again this often: a Postgres that is down
/// refuses the connection at once, so a try is a cheap probe, and streaming resumes within
/// about this long of the server's return instead of after a backoff step grown to many
/// seconds by back-to-back failures.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Failures of a write within this long of its first are retried without a WARN: a Postgres
/// restart is reported once, by the lease that loses its lock with it ("Lost the lock …"),
/// and a lone dropped connection that the next try gets past is not news.
const QUIET_FIRST: Duration = Duration::from_secs(2);

/// The pace of one write's retries: tried every `RETRY_EVERY`, counted at the first failure,
/// reported from `QUIET_FIRST` on and then on the backoff's schedule, given up when the
/// backoff runs out. A full sync's chunk writes use it too (`full_sync`): one policy for every
/// write that Postgres may fail transiently.
pub(crate) struct SinkRetry {
    backoff: backon::ExponentialBackoff,
    /// Failures before this instant are retried without a report.
    next_report: tokio::time::Instant,
    /// Failures since the last report, said in the next one.
    unreported: u32,
    /// No report yet: the first failure is the one counted in `tributary_errors_total`.
    never_reported: bool,
}

impl SinkRetry {
    pub(crate) fn new() -> Self {
        SinkRetry {
            backoff: backon::BackoffBuilder::build(sink_backoff()),
            next_report: tokio::time::Instant::now() + QUIET_FIRST,
            unreported: 0,
            never_reported: true,
        }
    }

    /// After the retryable failure `e` of writing `what` (e.g. "a batch"): counts the first
    /// failure in `tributary_errors_total`, reports (WARN, counted) from `QUIET_FIRST` on, on
    /// the backoff's schedule, and waits `RETRY_EVERY`; `Err(e)` when the backoff ran out
    /// (Postgres stayed down).
    pub(crate) async fn pause(
        &mut self,
        e: SinkError,
        metrics: Option<&Metrics>,
        what: &str,
    ) -> Result<(), SinkError> {
        match self.failed() {
            Retried::GiveUp => return Err(e),
            Retried::Quietly { first } => {
                if let (Some(m), true) = (metrics, first) {
                    m.errors_total.with_label_values(&[e.kind()]).inc();
                }
                tracing::debug!(error = %e, "Writing {what} failed; retrying it.");
            }
            Retried::Report {
                failures,
                next_report,
            } => {
                if let Some(m) = metrics {
                    m.errors_total.with_label_values(&[e.kind()]).inc();
                }
                let same = what.strip_prefix("a ").unwrap_or(what);
                tracing::warn!(error = %e, failures, retry_every_ms = RETRY_EVERY.as_millis() as u64, next_report_ms = next_report.as_millis() as u64, "Writing {what} failed; retrying the same {same} until Postgres takes it.");
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
        Ok(())
    }

    /// What to do after a retryable failure.
    fn failed(&mut self) -> Retried {
        self.unreported += 1;
        let now = tokio::time::Instant::now();
        if now < self.next_report {
            return Retried::Quietly {
                first: self.unreported == 1 && self.never_reported,
            };
        }
        self.never_reported = false;
        let Some(delay) = self.backoff.next() else {
            return Retried::GiveUp;
        };
        self.next_report = now + delay;
        Retried::Report {
            failures: std::mem::take(&mut self.unreported),
            next_report: delay,
        }
    }
}

/// `SinkRetry::failed`'s answer.
enum Retried {
    /// Retry without a WARN: reported recently, or within `QUIET_FIRST` of the first failure
    /// (`first`: this is it, to be counted).
    Quietly { first: bool },
    /// Retry, and say so: `failures` since the last report, the next one in `next_report`.
    Report {
        failures: u32,
        next_report: Duration,
    },
    /// The backoff ran out: Postgres stayed down.
    GiveUp,
}

/// Writes batches in order; returns the last committed position.
async fn write_batches<S: Sink>(
    sink: &mut S,
    mappings: &MappingSet,
    mut rx: mpsc::Receiver<Prepared>,
    config: &PipelineConfig,
    pending: &lag::Pending,
) -> Result<Option<Position>, SinkError> {
    let mut committed: Option<Position> = None;
    while let Some(mut p) = rx.recv().await {
        let idle =
            p.done.is_none() && p.batch.changes.is_empty() && p.batch.dead_letters.is_empty();
        if idle && p.position == committed {
            if p.caught_up {
                // Heartbeats carry the source's current time: everything read before is in.
                match p.last_time {
                    Some(t) => pending.committed_through(t),
                    None => pending.caught_up(),
                }
                if let Some(m) = &config.metrics {
                    pending.publish(m);
                }
            }
            continue;
        }
        let started = Instant::now();
        let mut backoff = backon::BackoffBuilder::build(sink_backoff());
        let mut retry = SinkRetry::new();
        // Replaced by a narrowed copy when Postgres refuses one document's rows (`narrow`).
        let mut narrowed: Option<Batch> = None;
        loop {
            let batch = narrowed.as_ref().unwrap_or(&p.batch);
            match sink.apply(batch).await {
                Ok(()) => break,
                Err(e) if e.is_data_error() => {
                    if let Some(m) = &config.metrics {
                        m.errors_total.with_label_values(&[e.kind()]).inc();
                    }
                    match narrow::narrow(sink, mappings, batch).await {
                        Ok(Some(smaller)) => {
                            if let Some(m) = &config.metrics {
                                for d in &smaller.dead_letters[batch.dead_letters.len()..] {
                                    m.dead_letters_total
                                        .with_label_values(&[&d.namespace])
                                        .inc();
                                }
                            }
                            narrowed = Some(smaller);
                        }
                        Ok(None) => return Err(e),
                        Err(probe) if probe.is_retryable() => {
                            let Some(delay) = backoff.next() else {
                                return Err(probe);
                            };
                            tokio::time::sleep(delay).await;
                        }
                        Err(probe) => return Err(probe),
                    }
                }
                Err(e) if e.is_retryable() => {
                    retry.pause(e, config.metrics.as_deref(), "a batch").await?;
                }
                Err(e) => {
                    // A lost lock is counted by `lease::sync_exclusively`, which handles it.
                    if let (Some(m), false) =
                        (&config.metrics, matches!(e, SinkError::LeaseLost { .. }))
                    {
                        m.errors_total.with_label_values(&[e.kind()]).inc();
                    }
                    return Err(e);
                }
            }
        }
        if let Some(done) = p.done.take() {
            // A re-copy's chunk or sweep: no position, no lag; its rows are counted.
            if let Some(m) = &config.metrics {
                for (table, n) in &p.table_rows {
                    m.rows_written_total.with_label_values(&[table]).inc_by(*n);
                }
            }
            let _ = done.send(recopy::Applied::Committed);
            let batch = p.batch;
            tokio::task::spawn_blocking(move || drop(batch));
            continue;
        }
        committed = p.position.clone();
        if let Some(m) = &config.metrics {
            m.batches_total.inc();
            for (table, n) in &p.table_rows {
                m.rows_written_total.with_label_values(&[table]).inc_by(*n);
            }
            m.batch_rows.observe(p.rows as f64);
            m.batch_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Some(ct) = committed.as_ref().and_then(Position::cluster_time) {
                m.last_applied_cluster_time_seconds.set(f64::from(ct.time));
            }
        }
        // Lag: the age of the oldest event still uncommitted after this commit (zero once the
        // source has nothing newer: heartbeats carry its current time).
        match p.last_time {
            Some(t) => pending.committed_through(t),
            None => pending.caught_up(),
        }
        if let Some(m) = &config.metrics {
            pending.publish(m);
        }
        tracing::debug!(
            rows = p.rows,
            waited_ms = p.first_read_at.elapsed().as_millis() as u64,
            "Committed a batch."
        );
        // Freeing a batch's rows takes real time; the other core can do it meanwhile.
        crate::sink::free_later::free_later(p.batch);
    }
    Ok(committed)
}

#[cfg(test)]
mod tests;
