//! The sink: where normalized changes become Postgres rows. `Sink` is the seam the pipeline and
//! tests use; `postgres` is the one real implementation.

use std::future::Future;

use crate::mapping::value::PgValue;

pub mod dead_letter;
pub mod error;
pub mod free_later;
pub mod postgres;

pub use error::SinkError;

/// Where batches of changes go. The pipeline hands batches to exactly one `Sink`, one at a
/// time, in source order.
///
/// Contract every implementation keeps:
///
/// - **Atomicity and durability.** `apply` writes the batch's rows, its dead letters and its
///   checkpoint in ONE Postgres transaction. The checkpoint therefore commits together with the
///   rows it covers: after a crash at any instant (process killed, connection cut, server
///   restarted) either all of the batch and its checkpoint are visible, or none of it is and the
///   previous checkpoint still stands. There is no window where rows are committed but the
///   position is not, or the reverse.
/// - **Commits a server crash takes back** (batches may commit asynchronously, see
///   `postgres.synchronous_commit`) go with their checkpoints, newest first. The next batch
///   with a checkpoint then fails with `SinkError::CheckpointRewound` instead of building on
///   them, and the caller replays from the stored checkpoint.
/// - **What a crash mid-batch means.** Nothing: the open transaction is rolled back by Postgres.
///   The caller learns of it as an `Err` (usually `is_retryable()`), and whoever restarts reads
///   the last committed checkpoint and replays from there.
/// - **Ordering.** Changes of one document apply in the order given. A batch may be coalesced to
///   the last change per `(collection, key)`: insert-then-delete leaves nothing,
///   delete-then-insert leaves the row; a `Truncate` empties the collection's tables at its
///   position in the batch (earlier changes of that collection are moot, later ones apply).
/// - **Idempotent replay.** Applying a batch that was already applied leaves the same state:
///   upserts are by primary key, deletes by key, a document's child rows are replaced as a
///   whole. A replay after a crash therefore never duplicates nor loses anything.
/// - **Success means committed.** `Ok(())` is returned only after `COMMIT` returned; only then may
///   the caller advance anything that depends on the position.
/// - **Errors.** On `Err` nothing of the batch is visible. `SinkError::is_retryable` says
///   whether applying the same batch again may succeed (lost connection, server shutdown,
///   serialization failure, deadlock) or not (constraint or type errors: stop and report).
pub trait Sink: Send {
    /// Applies one batch atomically, with its checkpoint; see the trait documentation. The batch
    /// is borrowed so that a retry applies the same batch again without copying it.
    fn apply(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Writes `changes` in a transaction that is then rolled back: `Ok` when Postgres accepts
    /// them all. Nothing stays visible either way. The pipeline uses it to narrow a data error
    /// (`SinkError::is_data_error`) to the documents that cause it; a sink that cannot try
    /// accepts everything, and the error then stops the stream as before.
    fn probe(&mut self, changes: &[Change]) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = changes;
        async { Ok(()) }
    }
}

pub use crate::mapping::value::DocumentRows;

/// One normalized change to apply. `collection` indexes `MappingSet::collections`.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace the document's parent row; its child rows are replaced.
    Upsert {
        collection: usize,
        key: PgValue,
        rows: DocumentRows,
    },
    /// Like `Upsert`, for an update that left every child array of the document alone: the
    /// parent row is rewritten, the child rows only where they may be out of date (the parent
    /// row is missing, or a version of the document was refused since they were written).
    /// `rows.children` holds them for that case.
    UpsertParent {
        collection: usize,
        key: PgValue,
        rows: DocumentRows,
    },
    /// A version of this document was refused (dead-lettered), so its rows stay at an older
    /// version: the sink remembers that its child rows must be rewritten at its next
    /// `UpsertParent`.
    Refused { collection: usize, key: PgValue },
    /// Delete the parent row and its child rows.
    Delete { collection: usize, key: PgValue },
    /// Empty the collection's tables (drop / dropDatabase / rename-away).
    Truncate { collection: usize },
}

/// A document (or version of it) that could not be converted; stored instead of its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub namespace: String,
    pub document_key: serde_json::Value,
    pub document: serde_json::Value,
    pub error: String,
    pub cluster_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The key of the document's rows (`postgres::plan::key_text` of its converted `_id`),
    /// when the `_id` converts: a later write or delete of that key resolves the letter in
    /// its own transaction. `None` leaves it to the retry at the next start.
    pub row_key: Option<String>,
    /// The `_id` exactly, as the BSON of `{_id: …}`, when the builder had it: the retry at
    /// start looks the document up by it (`document_key`'s plain JSON loses the BSON type).
    pub id_bson: Option<Vec<u8>>,
}

/// The stream position after the last change of a batch, committed with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub stream: String,
    /// `change_stream` or `oplog`.
    pub source: String,
    pub resume_token: serde_json::Value,
    pub cluster_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Everything one Postgres transaction applies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// In source order; the sink keeps only the last change per `(collection, key)`.
    pub changes: Vec<Change>,
    pub dead_letters: Vec<DeadLetter>,
    pub checkpoint: Option<Checkpoint>,
}

/// Rows a batch's changes write per table (`tributary_rows_written_total{table}`): an upsert
/// writes its parent row and its child rows, an `UpsertParent` its parent row (the child rows
/// it rewrites only at times are not counted), a delete removes a parent row (its children
/// with it), a truncate counts nothing.
pub fn rows_per_table(
    mappings: &crate::mapping::model::MappingSet,
    changes: &[Change],
) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for change in changes {
        match change {
            Change::Upsert {
                collection, rows, ..
            } => {
                if let Some(m) = mappings.collections.get(*collection) {
                    *counts.entry(&m.table).or_default() += 1;
                    for (child, rows) in m.children.iter().zip(&rows.children) {
                        *counts.entry(&child.table).or_default() += rows.len() as u64;
                    }
                }
            }
            Change::UpsertParent { collection, .. } => {
                if let Some(m) = mappings.collections.get(*collection) {
                    *counts.entry(&m.table).or_default() += 1;
                }
            }
            Change::Delete { collection, .. } => {
                if let Some(m) = mappings.collections.get(*collection) {
                    *counts.entry(&m.table).or_default() += 1;
                }
            }
            Change::Truncate { .. } | Change::Refused { .. } => {}
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| (t.to_owned(), n))
        .collect()
}
