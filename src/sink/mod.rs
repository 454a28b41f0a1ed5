//! The sink: where normalized changes become Postgres rows. `Sink` is the seam the pipeline and
//! tests use; `postgres` is the one real implementation.

use crate::mapping::value::{PgValue, Row};

/// Rows produced from one document: the parent row, then for each `ChildMapping` (same order as
/// `CollectionMapping::children`) its rows, each laid out `[parent_key, idx, columns...]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentRows {
    pub parent: Row,
    pub children: Vec<Vec<Row>>,
}

/// One normalized change to apply. `collection` indexes `MappingSet::collections`.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace the document's parent row; its child rows are replaced.
    Upsert {
        collection: usize,
        key: PgValue,
        rows: DocumentRows,
    },
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
