//! The progress of copies, so that a killed or failed copy resumes where it stopped
//! (docs/resumable-copies.md): `<state_schema>.copies` holds one row per collection whose copy
//! is under way — how it loads (`load`), a fingerprint of its mapping, and the split points of
//! its range readers — and `<state_schema>.copy_chunks` one row per committed chunk: the range
//! it belongs to, its sequence number within that range, the last `_id` it holds and whether
//! the range ended with it.
//!
//! A chunk's row is written in the transaction that writes the chunk's rows
//! (`ChunkDone` is passed to `PostgresSink::copy_chunk` or `swap::copy_rows_into`), so a
//! recorded chunk is always in the tables and a chunk that is in the tables is recorded, except
//! when Postgres refused some of its rows and the chunk was written in parts (then the row
//! commits with the last part, and a crash in between re-copies the chunk: writes of a copy are
//! idempotent). Bytes here are BSON: the sink stores them, the pipeline reads them.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::ddl::qualified;
use crate::sink::SinkError;

/// How a copy writes its chunks; a saved copy resumes only under the same load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyLoad {
    /// Live tables truncated at the start, then filled (`sync`'s initial copy).
    Truncate,
    /// Shadow tables filled, then swapped in (`full-sync --mode replace`).
    Shadow,
    /// Upserts over the live tables (`full-sync --mode upsert`).
    Upsert,
}

impl CopyLoad {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyLoad::Truncate => "truncate",
            CopyLoad::Shadow => "shadow",
            CopyLoad::Upsert => "upsert",
        }
    }

    pub fn parse(s: &str) -> Option<CopyLoad> {
        match s {
            "truncate" => Some(CopyLoad::Truncate),
            "shadow" => Some(CopyLoad::Shadow),
            "upsert" => Some(CopyLoad::Upsert),
            _ => None,
        }
    }
}

/// One row of `<state_schema>.copies`: a copy under way.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyPlan {
    pub namespace: String,
    /// `None` when the stored value is unknown (written by another version): never resumed.
    pub load: Option<CopyLoad>,
    /// `CollectionMapping::fingerprint` of the mapping the copy converts with.
    pub mapping: String,
    /// The range readers' split points, as BSON (`{bounds: [...]}`).
    pub bounds: Vec<u8>,
    pub ranges: i32,
    /// When the copy first started (kept across resumes).
    pub started_at: DateTime<Utc>,
}

/// A committed chunk, to be recorded in the chunk's own transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkDone {
    pub namespace: String,
    /// Index of the range reader that read it.
    pub range: i32,
    /// Its position among that range's chunks, from 0.
    pub seq: i64,
    /// BSON `{_id: …}` of the last document of the chunk; `None` for a chunk without documents
    /// (the end of a range).
    pub last_id: Option<Vec<u8>>,
    pub documents: i64,
    /// The range has no document after this chunk.
    pub range_done: bool,
}

fn pg(doing: &str) -> impl FnOnce(tokio_postgres::Error) -> SinkError + '_ {
    move |e| SinkError::postgres(doing, e)
}

/// Records `chunk` as committed (in the caller's transaction). Idempotent: a chunk copied again
/// after a crash overwrites its own row.
pub async fn record_chunk(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    chunk: &ChunkDone,
) -> Result<(), SinkError> {
    let sql = format!(
        "INSERT INTO {} (stream, namespace, range_no, seq, last_id, documents, range_done, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
         ON CONFLICT (stream, namespace, range_no, seq) DO UPDATE SET \
         last_id = EXCLUDED.last_id, documents = EXCLUDED.documents, \
         range_done = EXCLUDED.range_done, at = EXCLUDED.at",
        qualified(state_schema, "copy_chunks")
    );
    client
        .execute(
            &sql,
            &[
                &stream,
                &chunk.namespace,
                &chunk.range,
                &chunk.seq,
                &chunk.last_id,
                &chunk.documents,
                &chunk.range_done,
            ],
        )
        .await
        .map_err(pg("recording the progress of the copy"))?;
    Ok(())
}

/// The copy of `namespace` under way, if one was saved.
pub async fn read_plan(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    namespace: &str,
) -> Result<Option<CopyPlan>, SinkError> {
    let sql = format!(
        "SELECT load, mapping, bounds, ranges, started_at FROM {} \
         WHERE stream = $1 AND namespace = $2",
        qualified(state_schema, "copies")
    );
    let row = client
        .query_opt(&sql, &[&stream, &namespace])
        .await
        .map_err(pg("reading the saved progress of a copy"))?;
    Ok(row.map(|r| CopyPlan {
        namespace: namespace.to_owned(),
        load: CopyLoad::parse(r.get::<_, &str>(0)),
        mapping: r.get(1),
        bounds: r.get(2),
        ranges: r.get(3),
        started_at: r.get(4),
    }))
}

/// Saves the plan of a copy that starts now (after its tables were prepared: truncated, or
/// shadows created), replacing any earlier one.
pub async fn save_plan(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    plan: &CopyPlan,
) -> Result<(), SinkError> {
    let sql = format!(
        "INSERT INTO {} (stream, namespace, load, mapping, bounds, ranges, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (stream, namespace) DO UPDATE SET load = EXCLUDED.load, \
         mapping = EXCLUDED.mapping, bounds = EXCLUDED.bounds, ranges = EXCLUDED.ranges, \
         started_at = EXCLUDED.started_at",
        qualified(state_schema, "copies")
    );
    let load = plan.load.map_or("unknown", CopyLoad::as_str);
    client
        .execute(
            &sql,
            &[
                &stream,
                &plan.namespace,
                &load,
                &plan.mapping,
                &plan.bounds,
                &plan.ranges,
                &plan.started_at,
            ],
        )
        .await
        .map_err(pg("saving the plan of a copy"))?;
    Ok(())
}

/// Forgets the progress of `namespace`'s copy (a new copy starts, or the copy finished).
pub async fn clear(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    namespace: &str,
) -> Result<(), SinkError> {
    for table in ["copy_chunks", "copies"] {
        let sql = format!(
            "DELETE FROM {} WHERE stream = $1 AND namespace = $2",
            qualified(state_schema, table)
        );
        client
            .execute(&sql, &[&stream, &namespace])
            .await
            .map_err(pg("clearing the progress of a copy"))?;
    }
    Ok(())
}

/// Every recorded chunk of `namespace`'s copy, by range and sequence number.
pub async fn read_chunks(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    namespace: &str,
) -> Result<Vec<ChunkDone>, SinkError> {
    let sql = format!(
        "SELECT range_no, seq, last_id, documents, range_done FROM {} \
         WHERE stream = $1 AND namespace = $2 ORDER BY range_no, seq",
        qualified(state_schema, "copy_chunks")
    );
    let rows = client
        .query(&sql, &[&stream, &namespace])
        .await
        .map_err(pg("reading the progress of a copy"))?;
    Ok(rows
        .iter()
        .map(|r| ChunkDone {
            namespace: namespace.to_owned(),
            range: r.get(0),
            seq: r.get(1),
            last_id: r.get(2),
            documents: r.get(3),
            range_done: r.get(4),
        })
        .collect())
}

/// Forgets the chunks of `range` after `seq` (`None`: all of them): chunks committed out of
/// order beyond the first gap, which the resumed range reads (and writes) again.
pub async fn forget_after(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    namespace: &str,
    range: i32,
    seq: Option<i64>,
) -> Result<u64, SinkError> {
    let sql = format!(
        "DELETE FROM {} WHERE stream = $1 AND namespace = $2 AND range_no = $3 AND seq > $4",
        qualified(state_schema, "copy_chunks")
    );
    client
        .execute(&sql, &[&stream, &namespace, &range, &seq.unwrap_or(-1)])
        .await
        .map_err(pg("forgetting chunks of a copy that are copied again"))
}
