//! The full-sync reader: every document of one collection exactly once, in chunks, read by
//! several concurrent readers over disjoint `_id` ranges.
//!
//! Split points: the collection's estimated count (metadata) decides how many readers to use
//! (at most `readers`, default 4, each with at least one chunk and 1000 documents, so small
//! collections use one reader); `split_points` finds the boundaries (a sharded collection's
//! chunks, a `$sample`, or `skip` walks).
//!
//! Ranges must cover every document exactly once although `_id`s may mix BSON types, and
//! MongoDB's `$gte`/`$lt` only match values of the operand's own type bracket (a `$lt: "m"`
//! never matches an integer). The boundaries are sorted and deduplicated here (concurrent
//! writes can reorder skip results; boundaries of types this module cannot order are dropped)
//! and give the ranges `(-inf, b_1)`, `[b_i, b_i+1)` and `[b_k, +inf)` in MongoDB's sort order
//! across types. A range within one bracket is `{_id: {$gte, $lt}}`; one that spans brackets
//! is an `$or` of the rest of the low bound's bracket, each whole bracket in between (`$gte`
//! its smallest value) and the start of the high bound's bracket. Every clause is an `_id`
//! index range. With no usable boundary one reader reads the whole collection.
//!
//! A resumable copy saves the split points (`plan_bounds`) and gives them back with where each
//! range continues (`with_plan`); `next_piece` says which range a chunk came from, its place in
//! that range and the range's last `_id` so far, and a range's end is always said (by a chunk
//! without documents when needed), so the copy can record exactly what it committed.
//!
//! Each range is read sorted by `_id` (the `_id` index, so a document is seen at most once even
//! while it is being updated) with the driver's batch size equal to the chunk size. A transient
//! error reopens that range after the last `_id` it returned, using per-bracket lower bounds so
//! that documents of later type brackets are not skipped. Chunks of different ranges
//! interleave (the copy does not depend on order); the readers split one chunk size between them
//! and share a one-slot channel, so memory does not grow with the reader count; dropping the
//! reader stops its tasks.

use std::cmp::Ordering;

use bson::spec::BinarySubtype;
use bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Document, RawDocumentBuf, Timestamp};
use futures::StreamExt;
use mongodb::{Client, Collection, Cursor};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{split_points, Retry, SourceError};
use crate::bson_order::{bracket, compare};
use crate::event::Namespace;

/// Concurrent range readers per collection unless told otherwise.
pub const DEFAULT_READERS: usize = 4;

/// A range reader is only worth its split queries and cursor for at least this many documents
/// (and at least one chunk); smaller collections are read by fewer readers, or one.
const MIN_RANGE_DOCUMENTS: u64 = 1000;

type ChunkResult = Result<SnapshotChunk, SourceError>;

/// One chunk of one range, in `_id` order within its range: what a resumable copy records.
#[derive(Debug)]
pub struct SnapshotChunk {
    pub docs: Vec<RawDocumentBuf>,
    /// Index of the range (of `SnapshotReader::bounds`) it was read from.
    pub range: usize,
    /// Its position among its range's chunks (continuing a resumed range's numbering).
    pub seq: u64,
    /// The range's last `_id` read so far: a resumed range continues after it.
    pub last_id: Option<Bson>,
    /// Nothing of the range is left after this chunk (a chunk may then hold no document).
    pub range_done: bool,
}

/// Where one range of a resumed read starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeStart {
    /// Read after this `_id` (`None`: from the range's start).
    pub after: Option<Bson>,
    /// The sequence number of the range's next chunk.
    pub next_seq: u64,
    /// The range was read to its end already.
    pub done: bool,
}

enum State {
    NotStarted,
    Running {
        rx: mpsc::Receiver<ChunkResult>,
        tasks: JoinSet<()>,
    },
    Done,
}

/// Reads one collection with up to `readers` concurrent `_id`-range readers.
pub struct SnapshotReader {
    client: Client,
    namespace: Namespace,
    chunk: usize,
    readers: usize,
    /// Ranges in use once reading started (for tests and logs).
    ranges: Option<usize>,
    /// Split points and per-range starts given by a resumable copy (`with_plan`).
    preset: Option<(Vec<Bson>, Vec<RangeStart>)>,
    state: State,
}

impl SnapshotReader {
    pub fn new(client: Client, namespace: Namespace, chunk: usize) -> Self {
        SnapshotReader {
            client,
            namespace,
            chunk: chunk.max(1),
            readers: DEFAULT_READERS,
            ranges: None,
            preset: None,
            state: State::NotStarted,
        }
    }

    /// At most `readers` concurrent range readers (at least one).
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Reads the ranges of these split points (from `plan_bounds`, possibly in an earlier
    /// run), each from its `starts` entry (missing entries: from the start). A resumable copy
    /// saves the split points, so a resumed read has exactly the ranges of the first one.
    pub fn with_plan(mut self, bounds: Vec<Bson>, starts: Vec<RangeStart>) -> Self {
        self.preset = Some((bounds, starts));
        self
    }

    /// The number of ranges the split points `bounds` give.
    pub fn range_count(bounds: &[Bson]) -> usize {
        split(bounds).len().max(1)
    }

    /// How many ranges are being read; `None` before the first `next_chunk`.
    pub fn ranges(&self) -> Option<usize> {
        self.ranges
    }

    fn collection(&self) -> Collection<Document> {
        self.client
            .database(&self.namespace.db)
            .collection::<Document>(&self.namespace.coll)
    }

    /// Documents in the collection, from its metadata (for progress only).
    pub async fn estimated_count(&self) -> Option<u64> {
        self.collection().estimated_document_count().await.ok()
    }

    /// The split points of the ranges to read, sorted and deduplicated: none (one
    /// whole-collection range) when splitting is not worth it or the boundaries cannot be
    /// found (splitting is only an optimisation).
    pub async fn plan_bounds(&self) -> Vec<Bson> {
        let whole = Vec::new();
        let count = self.estimated_count().await.unwrap_or(0);
        let per_range = (self.chunk as u64).max(MIN_RANGE_DOCUMENTS);
        let by_size = usize::try_from(count / per_range).unwrap_or(usize::MAX);
        let n = self.readers.min(by_size);
        if n <= 1 {
            return whole;
        }
        match split_points::find(&self.client, &self.namespace, count, n).await {
            Some((bounds, method)) => {
                tracing::info!(namespace = %self.namespace, ranges = n, split = %method, "Split points of the copy found.");
                clean(bounds)
            }
            None => {
                tracing::warn!(namespace = %self.namespace, "Finding split points for the full sync failed; reading the collection with one reader.");
                whole
            }
        }
    }

    async fn start(&mut self) {
        let (bounds, starts) = match self.preset.take() {
            Some(preset) => preset,
            None => (self.plan_bounds().await, Vec::new()),
        };
        let mut ranges = split(&bounds);
        if ranges.is_empty() {
            ranges.push(Range::whole());
        }
        self.ranges = Some(ranges.len());
        tracing::debug!(namespace = %self.namespace, ranges = ranges.len(), "Full sync reads the collection in ranges.");
        let open: Vec<(usize, Range, RangeStart)> = ranges
            .into_iter()
            .enumerate()
            .map(|(i, range)| (i, range, starts.get(i).cloned().unwrap_or_default()))
            .filter(|(_, _, start)| !start.done)
            .collect();
        // The readers share one chunk's worth of documents: each holds a chunk it is filling,
        // one blocked in `send` and the driver's buffered batch, so full-size chunks per reader
        // multiplied memory by the reader count (355 MiB peak RSS at four readers).
        let per_reader = self.chunk.div_ceil(open.len().max(1)).max(1);
        let (tx, rx) = mpsc::channel(1);
        let mut tasks = JoinSet::new();
        for (index, range, start) in open {
            let mut reader = RangeReader {
                collection: self.collection().clone_with_type(),
                namespace: self.namespace.clone(),
                chunk: per_reader,
                range,
                index,
                seq: start.next_seq,
                cursor: None,
                last_id: start.after,
                done: false,
            };
            let tx = tx.clone();
            tasks.spawn(async move {
                loop {
                    match reader.next_chunk().await {
                        Ok(Some(docs)) => {
                            if tx.send(Ok(docs)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            });
        }
        self.state = State::Running { rx, tasks };
    }

    /// The next chunk of up to `chunk` documents; `None` when the collection is exhausted.
    /// Documents stay BSON bytes: the full sync converts them without parsing them whole.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<RawDocumentBuf>>, SourceError> {
        loop {
            match self.next_piece().await? {
                None => return Ok(None),
                // The end of a range, said for resumable copies only.
                Some(piece) if piece.docs.is_empty() => continue,
                Some(piece) => return Ok(Some(piece.docs)),
            }
        }
    }

    /// `next_chunk` with where the chunk lies: its range, its place in it and whether the range
    /// ends with it (then possibly without documents), for a copy that records its progress.
    pub async fn next_piece(&mut self) -> Result<Option<SnapshotChunk>, SourceError> {
        if matches!(self.state, State::NotStarted) {
            self.start().await;
        }
        let State::Running { rx, tasks } = &mut self.state else {
            return Ok(None);
        };
        match rx.recv().await {
            Some(Ok(docs)) => Ok(Some(docs)),
            Some(Err(e)) => {
                self.state = State::Done;
                Err(e)
            }
            None => {
                // Every reader dropped its sender: finished, unless one of them panicked.
                let mut failure = None;
                while let Some(joined) = tasks.join_next().await {
                    if let Err(e) = joined {
                        failure = Some(SourceError::Fatal(format!(
                            "a full-sync range reader of {} failed: {e}",
                            self.namespace
                        )));
                    }
                }
                self.state = State::Done;
                match failure {
                    Some(e) => Err(e),
                    None => Ok(None),
                }
            }
        }
    }
}

/// One `_id` range: `filter` selects it; `one_bracket` when all its `_id`s share a type
/// bracket, so a plain `$gt` resumes it (otherwise `from(last, false)` does).
#[derive(Debug, Clone)]
struct Range {
    filter: Document,
    one_bracket: bool,
}

impl Range {
    fn whole() -> Range {
        Range {
            filter: doc! {},
            one_bracket: false,
        }
    }
}

/// The ranges for the found boundaries (in `_id` order, possibly of mixed types and, under
/// concurrent writes, out of order): `(-inf, b_1)`, `[b_i, b_i+1)`, `[b_k, +inf)` in MongoDB's
/// sort order; empty when no usable boundary remains.
fn split(bounds: &[Bson]) -> Vec<Range> {
    let bounds = clean(bounds.to_vec());
    let (Some(first), Some(last)) = (bounds.first(), bounds.last()) else {
        return Vec::new();
    };
    let mut ranges = vec![Range {
        filter: doc! {"$or": below(first)},
        one_bracket: false,
    }];
    ranges.extend(bounds.windows(2).map(|w| between(&w[0], &w[1])));
    ranges.push(Range {
        filter: doc! {"$or": from(last, true)},
        one_bracket: false,
    });
    ranges
}

/// The usable boundaries of `bounds`, in MongoDB's sort order, without duplicates.
fn clean(bounds: Vec<Bson>) -> Vec<Bson> {
    let mut bounds: Vec<Bson> = bounds.into_iter().filter(comparable).collect();
    bounds.sort_by(compare);
    bounds.dedup_by(|a, b| compare(a, b) == Ordering::Equal);
    bounds
}

/// `[lo, hi)` for `lo < hi`.
fn between(lo: &Bson, hi: &Bson) -> Range {
    if bracket(lo) == bracket(hi) {
        return Range {
            filter: doc! {"_id": {"$gte": lo.clone(), "$lt": hi.clone()}},
            one_bracket: true,
        };
    }
    let mut clauses = vec![doc! {"_id": {"$gte": lo.clone()}}];
    for b in BRACKETS {
        if *b > bracket(lo) && *b < bracket(hi) {
            clauses.extend(whole_bracket(*b));
        }
    }
    clauses.extend(head(hi));
    Range {
        filter: doc! {"$or": clauses},
        one_bracket: false,
    }
}

/// Clauses matching every `_id` below `hi`.
fn below(hi: &Bson) -> Vec<Document> {
    let mut clauses = Vec::new();
    for b in BRACKETS {
        if *b < bracket(hi) {
            clauses.extend(whole_bracket(*b));
        }
    }
    clauses.extend(head(hi));
    clauses
}

/// Clauses matching the values of `hi`'s bracket below `hi` (NaN sorts below every number).
fn head(hi: &Bson) -> Vec<Document> {
    let mut clauses = vec![doc! {"_id": {"$lt": hi.clone()}}];
    if bracket(hi) == NUMBERS {
        clauses.push(doc! {"_id": f64::NAN});
    }
    clauses
}

/// `$or` clauses matching every `_id` after `id` in MongoDB's order, across type brackets.
pub fn after(id: &Bson) -> Vec<Document> {
    from(id, false)
}

/// Clauses matching every `_id` from `lo` on (`inclusive`) or after it.
fn from(lo: &Bson, inclusive: bool) -> Vec<Document> {
    let op = if inclusive { "$gte" } else { "$gt" };
    let mut clauses = match lo {
        // Nothing compares greater than NaN; the numbers after it start at -infinity.
        Bson::Double(d) if d.is_nan() => vec![doc! {"_id": {"$gte": f64::NEG_INFINITY}}],
        _ => vec![doc! {"_id": {op: lo.clone()}}],
    };
    for b in BRACKETS {
        if *b > bracket(lo) {
            clauses.extend(whole_bracket(*b));
        }
    }
    clauses
}

/// The type brackets an `_id` can have, in sort order (arrays, regexes and undefined are not
/// allowed as `_id`; DBPointer and JavaScript-with-scope, deprecated types, are left out).
const BRACKETS: &[u8] = &[0, 5, NUMBERS, 15, 20, 30, 35, 40, 45, 47, 60, 127];
const NUMBERS: u8 = 10;

/// Clauses matching every `_id` of one bracket: `$gte` its smallest value (range operators
/// stay within the operand's bracket, so this stops at the bracket's end).
fn whole_bracket(b: u8) -> Vec<Document> {
    match b {
        0 => vec![doc! {"_id": Bson::MinKey}],
        5 => vec![doc! {"_id": Bson::Null}],
        NUMBERS => vec![
            doc! {"_id": f64::NAN},
            doc! {"_id": {"$gte": f64::NEG_INFINITY}},
        ],
        15 => vec![doc! {"_id": {"$gte": ""}}],
        20 => vec![doc! {"_id": {"$gte": {}}}],
        30 => {
            vec![
                doc! {"_id": {"$gte": Binary { subtype: BinarySubtype::Generic, bytes: Vec::new() }}},
            ]
        }
        35 => vec![doc! {"_id": {"$gte": ObjectId::from_bytes([0; 12])}}],
        40 => vec![doc! {"_id": {"$gte": false}}],
        45 => vec![doc! {"_id": {"$gte": DateTime::MIN}}],
        47 => vec![doc! {"_id": {"$gte": Timestamp { time: 0, increment: 0 }}}],
        60 => vec![doc! {"_id": {"$gte": Bson::JavaScriptCode(String::new())}}],
        127 => vec![doc! {"_id": Bson::MaxKey}],
        _ => Vec::new(),
    }
}

/// Boundary types this module can order itself (the common `_id` types).
fn comparable(v: &Bson) -> bool {
    match v {
        Bson::Double(d) => !d.is_nan(),
        Bson::Int32(_)
        | Bson::Int64(_)
        | Bson::String(_)
        | Bson::Symbol(_)
        | Bson::ObjectId(_)
        | Bson::DateTime(_) => true,
        _ => false,
    }
}

/// A read document's `_id` (every stored document has one).
fn raw_id(d: &RawDocumentBuf) -> Result<Bson, mongodb::error::Error> {
    crate::event::document_id(d).map_err(|why| {
        mongodb::error::Error::custom(format!("the server returned a document, but {why}"))
    })
}

/// Reads one range in `_id` order, resuming after the last `_id` on transient errors.
struct RangeReader {
    collection: Collection<RawDocumentBuf>,
    namespace: Namespace,
    chunk: usize,
    range: Range,
    /// Its index among the collection's ranges, and the sequence number of its next chunk.
    index: usize,
    seq: u64,
    cursor: Option<Cursor<RawDocumentBuf>>,
    /// The last `_id` returned: a reopened read continues after it.
    last_id: Option<Bson>,
    done: bool,
}

impl RangeReader {
    async fn open(&mut self) -> Result<(), mongodb::error::Error> {
        let filter = match &self.last_id {
            Some(id) if self.range.one_bracket => {
                doc! {"$and": [self.range.filter.clone(), {"_id": {"$gt": id.clone()}}]}
            }
            Some(id) => doc! {"$and": [self.range.filter.clone(), {"$or": from(id, false)}]},
            None => self.range.filter.clone(),
        };
        let cursor = self
            .collection
            .find(filter)
            .sort(doc! {"_id": 1})
            .batch_size(u32::try_from(self.chunk).unwrap_or(u32::MAX))
            .await?;
        self.cursor = Some(cursor);
        Ok(())
    }

    async fn read(&mut self) -> Result<Vec<RawDocumentBuf>, mongodb::error::Error> {
        if self.cursor.is_none() {
            self.open().await?;
        }
        let mut docs = Vec::new();
        let Some(cursor) = self.cursor.as_mut() else {
            self.done = true;
            return Ok(docs);
        };
        while docs.len() < self.chunk {
            match cursor.next().await {
                Some(d) => {
                    let d = d?;
                    self.last_id = Some(raw_id(&d)?);
                    docs.push(d);
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        Ok(docs)
    }

    /// The next chunk of this range; `None` after the chunk that ended it (which may hold no
    /// document, so that the end of a range is always said).
    async fn next_chunk(&mut self) -> Result<Option<SnapshotChunk>, SourceError> {
        let mut retry = Retry::default();
        loop {
            if self.done {
                return Ok(None);
            }
            // Documents read before an error are kept by `last_id`; re-reading starts after it.
            let before = self.last_id.clone();
            match self.read().await {
                Ok(docs) => {
                    let chunk = SnapshotChunk {
                        docs,
                        range: self.index,
                        seq: self.seq,
                        last_id: self.last_id.clone(),
                        range_done: self.done,
                    };
                    self.seq += 1;
                    return Ok(Some(chunk));
                }
                Err(e) => {
                    self.cursor = None;
                    self.last_id = before;
                    let delay = retry.after(&e).map_err(|err| {
                        err.reading(format_args!("the full-sync read of {}", self.namespace))
                    })?;
                    tracing::warn!(namespace = %self.namespace, error = %e, attempt = retry.attempts(), "Reading the collection for the full sync failed; retrying after the last document read.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sorts_and_dedups_boundaries_across_brackets() {
        let oid = ObjectId::from_bytes([7; 12]);
        let ranges = split(&[
            Bson::String("m".into()),
            Bson::Int32(5),
            Bson::Int64(5),
            Bson::ObjectId(oid),
            Bson::Boolean(true),
        ]);
        // Int 5, "m", ObjectId: (-inf, 5), [5, "m"), ["m", oid), [oid, +inf).
        assert_eq!(ranges.len(), 4);
        let below = ranges[0].filter.get_array("$or").map(Vec::len).unwrap_or(0);
        // MinKey, null, then `$lt: 5` and NaN.
        assert_eq!(below, 4);
        assert!(!ranges[1].one_bracket);
        let between = ranges[1].filter.get_array("$or").map(Vec::len).unwrap_or(0);
        // `$gte: 5`, `$lt: "m"`: adjacent brackets, nothing in between.
        assert_eq!(between, 2);
        let last = ranges[3].filter.get_array("$or").map(Vec::len).unwrap_or(0);
        // `$gte: oid`, then bool, date, timestamp, code, MaxKey.
        assert_eq!(last, 6);
    }

    #[test]
    fn split_within_one_bracket_uses_plain_bounds() {
        let ranges = split(&[Bson::Int64(9), Bson::Double(2.5)]);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[1].filter, doc! {"_id": {"$gte": 2.5, "$lt": 9_i64}});
        assert!(ranges[1].one_bracket);
        assert!(split(&[Bson::Null, Bson::Boolean(true)]).is_empty());
    }

    #[test]
    fn resuming_after_a_number_keeps_every_later_bracket() {
        let clauses = from(&Bson::Int32(3), false);
        assert_eq!(clauses[0], doc! {"_id": {"$gt": 3}});
        assert!(clauses.contains(&doc! {"_id": {"$gte": ""}}));
        assert!(clauses.contains(&doc! {"_id": {"$gte": ObjectId::from_bytes([0; 12])}}));
        assert!(!clauses.contains(&doc! {"_id": Bson::Null}));
    }
}
