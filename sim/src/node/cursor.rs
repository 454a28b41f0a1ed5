//! Open cursors: materialised query results, `_id`-ordered collection scans,
//! oplog tails and change streams, keyed by their Int64 id. A `getMore` checks a cursor out of the table while
//! it works on it, so no lock is held while it waits for new data.
//!
//! Also owns [`BatchDoc`]: oplog-tail and change-stream batches are handed
//! to the reply encoder as shared oplog entries or pre-encoded events instead
//! of `Document` copies, because cloning (and then freeing) every entry and
//! event was most of what those cursors cost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bson::{Bson, Document};

use crate::error::CommandError;
use crate::node::oplog::OplogEntry;
use crate::node::scan::ScanCursor;
use crate::node::state::Shared;
use crate::node::store::approx_size;
use crate::node::stream::StreamCursor;
use crate::node::tail::TailCursor;
use crate::query::Fields;

/// Replies stay below the 16 MiB document limit with room for the envelope.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// A tailable cursor's getMore: what `collect` finds now; with `await_data`, when that is
/// nothing, `collect` again each time the oplog grows, until `max_wait` has passed.
pub async fn await_batch(
    shared: &Shared,
    max_wait: std::time::Duration,
    await_data: bool,
    mut collect: impl FnMut(&Shared) -> Result<Vec<BatchDoc>, CommandError>,
) -> Result<Vec<BatchDoc>, CommandError> {
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut rx = shared.subscribe();
    loop {
        rx.borrow_and_update();
        let batch = collect(shared)?;
        if !batch.is_empty() || !await_data {
            return Ok(batch);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(batch),
        }
    }
}

pub enum CursorKind {
    Docs(VecDeque<Document>),
    /// A collection read in `_id` order one batch at a time.
    Scan(Box<ScanCursor>),
    Tail(Box<TailCursor>),
    /// A tailable cursor on a capped user collection.
    Capped(Box<crate::node::capped::CappedTail>),
    Stream(Box<StreamCursor>),
}

pub struct Cursor {
    pub id: i64,
    /// `db.coll` as reported in replies.
    pub ns: String,
    pub kind: CursorKind,
    /// Opened by a command with `maxTimeMS`: its getMores run under that limit too (so
    /// `maxTimeAlwaysTimeOut` fails them).
    pub time_limited: bool,
}

#[derive(Default)]
pub struct CursorTable {
    cursors: HashMap<i64, Cursor>,
    next_id: i64,
}

impl CursorTable {
    /// Registers a cursor under a fresh id and returns the id.
    pub fn insert(&mut self, ns: String, kind: CursorKind) -> i64 {
        // Ids look like a real server's: large, positive and never reused.
        self.next_id += 1;
        let id = 0x1000_0000_0000 + self.next_id * 7919;
        self.cursors.insert(
            id,
            Cursor {
                id,
                ns,
                kind,
                time_limited: false,
            },
        );
        id
    }

    /// Marks cursor `id` as opened under a time limit (see [`Cursor::time_limited`]).
    pub fn limit_time(&mut self, id: i64) {
        if let Some(c) = self.cursors.get_mut(&id) {
            c.time_limited = true;
        }
    }

    pub fn put_back(&mut self, cursor: Cursor) {
        self.cursors.insert(cursor.id, cursor);
    }

    pub fn checkout(&mut self, id: i64) -> Option<Cursor> {
        self.cursors.remove(&id)
    }

    pub fn kill(&mut self, id: i64) -> bool {
        self.cursors.remove(&id).is_some()
    }
}

/// Takes the next batch from a materialised result: at most `batch_size`
/// documents (0 = no count limit) and about 16 MiB.
pub fn take_batch(docs: &mut VecDeque<Document>, batch_size: usize) -> Vec<Document> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(d) = docs.front() {
        if batch_size > 0 && out.len() >= batch_size {
            break;
        }
        let size = approx_size(d);
        if !out.is_empty() && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        if let Some(d) = docs.pop_front() {
            out.push(d);
        }
    }
    out
}

/// `{cursor: {firstBatch|nextBatch, id, ns}}`, extra cursor fields appended.
pub fn cursor_reply(
    first: bool,
    batch: Vec<Document>,
    id: i64,
    ns: &str,
    extra: Option<(&str, Bson)>,
) -> Document {
    let mut cursor = Document::new();
    cursor.insert(
        if first { "firstBatch" } else { "nextBatch" },
        batch.into_iter().map(Bson::Document).collect::<Vec<_>>(),
    );
    if let Some((k, v)) = extra {
        cursor.insert(k, v);
    }
    cursor.insert("id", id);
    cursor.insert("ns", ns);
    let mut reply = Document::new();
    reply.insert("cursor", cursor);
    reply
}

/// One document of a cursor batch that is encoded straight into the reply
/// (see [`cursor_reply_shared`]); the bytes are those of the `Document` it
/// stands for.
#[derive(Debug)]
pub enum BatchDoc {
    Owned(Document),
    /// An oplog entry, encoded from the oplog's own copy.
    Entry(Arc<OplogEntry>),
    /// A document already encoded as BSON (a change event).
    Raw(Vec<u8>),
}

impl BatchDoc {
    /// The document itself, for the rare reply the direct encoder leaves to
    /// the `bson` crate.
    pub fn to_document(&self) -> Result<Document, bson::de::Error> {
        match self {
            BatchDoc::Owned(d) => Ok(d.clone()),
            BatchDoc::Entry(e) => Ok(e.to_document().into_owned()),
            BatchDoc::Raw(bytes) => bson::from_slice(bytes),
        }
    }
}

/// Like [`cursor_reply`], but the batch travels next to the reply: the
/// returned document holds an empty `firstBatch`/`nextBatch` array that the
/// wire encoder fills from `batch` (`Req::batch`).
pub fn cursor_reply_shared(
    first: bool,
    id: i64,
    ns: &str,
    extra: Option<(&str, Bson)>,
) -> Document {
    cursor_reply(first, Vec::new(), id, ns, extra)
}

/// Reads a `batchSize` (absent = `None`).
pub fn batch_size(v: Option<&Bson>) -> Result<Option<usize>, crate::error::CommandError> {
    match v {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(n)) if *n >= 0 => Ok(Some(*n as usize)),
        Some(Bson::Int64(n)) if *n >= 0 => Ok(Some(*n as usize)),
        Some(Bson::Double(n)) if *n >= 0.0 => Ok(Some(*n as usize)),
        Some(other) => Err(crate::error::CommandError::bad_value(format!(
            "batchSize must be a non-negative number, got {other}"
        ))),
    }
}
