//! Online re-copies (docs/online-copies.md): one collection copied again while `sync` streams
//! every collection, without truncating its tables and without pausing the stream.
//!
//! A re-copy task reads the collection in `_id` order, one chunk per `find` with
//! `readConcern: {level: "snapshot"}`, whose reply says the cluster time T it read at. The chunk
//! goes to the batcher as an item of the ordered stream of batches (`Guard` decides there,
//! in stream order): its documents become the rows an insert of them would (`normalize`, dead
//! letters included) and are written as upserts in one transaction, between two batches. From
//! then on a streamed change of that collection whose `_id` lies in the chunk's range, whose
//! cluster time is ≤ T and whose document the chunk holds is skipped (the chunk already holds
//! a newer state; an oplog diff must not be applied to it). A chunk whose range the stream
//! already wrote past T (the stream overtook the read) is refused and read again.
//!
//! After the last chunk the table's keys are swept: in pages, looked up with `_id: {$in}` at a
//! snapshot time, and the rows of documents that no longer exist are deleted through the same
//! ordered path (a page the stream wrote past its lookup time is looked up again).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::Client;
use tokio::sync::{mpsc, oneshot};

use super::normalize::{normalize, FatalConversion, Normalized};
use super::sync::SyncError;
use crate::bson_order::compare;
use crate::event::{document_id, ChangeEvent, Namespace, Op};
use crate::mapping::convert::convert_key;
use crate::mapping::model::MappingSet;
use crate::mapping::value::PgValue;
use crate::position::Position;
use crate::sink::postgres::ddl::{qualified, quote_ident};
use crate::sink::postgres::plan::key_text;
use crate::sink::{Change, SinkError};
use crate::source::SourceError;

/// What a re-copy task hands to the batcher.
#[derive(Debug)]
pub enum RecopyItem {
    /// A re-copy of `collection` begins: from now on the batcher remembers which keys of it
    /// the stream writes, so a chunk read before them is not applied after them. Answered once
    /// in effect.
    Start {
        collection: usize,
        reply: oneshot::Sender<()>,
    },
    Chunk(Box<ChunkItem>),
    Sweep(SweepItem),
    /// The re-copy of `collection` is complete (the copied ranges stay until the stream passes
    /// their times).
    Finish {
        collection: usize,
    },
}

/// Documents of `(after, last]` (`None`: unbounded) as of cluster time `at`, in `_id` order.
#[derive(Debug)]
pub struct ChunkItem {
    pub collection: usize,
    pub after: Option<Bson>,
    pub last: Option<Bson>,
    pub at: Timestamp,
    pub docs: Vec<RawDocumentBuf>,
    pub reply: oneshot::Sender<Applied>,
}

/// Keys whose documents did not exist at cluster time `at`: their rows are deleted.
#[derive(Debug)]
pub struct SweepItem {
    pub collection: usize,
    pub at: Timestamp,
    pub keys: Vec<PgValue>,
    pub reply: oneshot::Sender<Applied>,
}

/// The batcher's (then the writer's) answer to a chunk or a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The stream already wrote some of its keys after its time: read it again.
    Stale,
    /// Written and committed.
    Committed,
}

fn ts(t: Timestamp) -> (u32, u32) {
    (t.time, t.increment)
}

/// A copied range and what it held.
#[derive(Debug)]
struct Copied {
    after: Option<Bson>,
    last: Option<Bson>,
    at: Timestamp,
    /// The chunk's `_id`s, in `_id` order.
    ids: Vec<Bson>,
}

fn in_range(id: &Bson, after: Option<&Bson>, last: Option<&Bson>) -> bool {
    after.is_none_or(|a| compare(id, a) == Ordering::Greater)
        && last.is_none_or(|l| compare(id, l) != Ordering::Greater)
}

impl Copied {
    /// The chunk holds a newer state of the document `id` changed at `time`.
    fn supersedes(&self, id: &Bson, time: Timestamp) -> bool {
        ts(time) <= ts(self.at)
            && in_range(id, self.after.as_ref(), self.last.as_ref())
            && self.ids.binary_search_by(|x| compare(x, id)).is_ok()
    }
}

#[derive(Debug, Default)]
struct Guarded {
    /// A re-copy is running: `recent` records what the stream writes.
    active: bool,
    ranges: Vec<Copied>,
    /// `_id`s the stream wrote since the last admitted chunk's time, with their times.
    recent: Vec<(Bson, Timestamp)>,
}

/// The batcher's memory of the re-copies under way: copied ranges and their times, and the
/// keys the stream wrote meanwhile (module doc). Lives in stream order, so every decision is
/// at the point of the stream where the chunk is written.
#[derive(Debug, Default)]
pub struct Guard {
    collections: HashMap<usize, Guarded>,
}

impl Guard {
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }

    /// Drops the events a copied chunk supersedes, and records the rest of the collections
    /// being copied.
    pub fn filter(&mut self, mappings: &MappingSet, group: Vec<ChangeEvent>) -> Vec<ChangeEvent> {
        if self.collections.is_empty() {
            return group;
        }
        let mut kept = Vec::with_capacity(group.len());
        for e in group {
            // Ranges the stream has passed can no longer supersede anything.
            for g in self.collections.values_mut() {
                g.ranges.retain(|r| ts(r.at) >= ts(e.cluster_time));
            }
            let guarded = (e.op != Op::Noop)
                .then(|| collection_index(mappings, &e.namespace))
                .flatten()
                .and_then(|c| self.collections.get_mut(&c));
            let (Some(g), Some(id)) = (guarded, e.key.as_ref()) else {
                kept.push(e);
                continue;
            };
            if g.ranges.iter().any(|r| r.supersedes(id, e.cluster_time)) {
                continue;
            }
            if g.active {
                g.recent.push((id.clone(), e.cluster_time));
            }
            kept.push(e);
        }
        self.collections
            .retain(|_, g| g.active || !g.ranges.is_empty());
        kept
    }

    pub fn start(&mut self, collection: usize) {
        let g = self.collections.entry(collection).or_default();
        g.active = true;
        g.recent.clear();
    }

    pub fn finish(&mut self, collection: usize) {
        if let Some(g) = self.collections.get_mut(&collection) {
            g.active = false;
            g.recent.clear();
        }
        self.collections
            .retain(|_, g| g.active || !g.ranges.is_empty());
    }

    /// Whether `chunk` may be written now; records its range when it may.
    pub fn admit_chunk(&mut self, chunk: &ChunkItem) -> bool {
        let g = self.collections.entry(chunk.collection).or_default();
        let overtaken = g.recent.iter().any(|(id, t)| {
            ts(*t) > ts(chunk.at) && in_range(id, chunk.after.as_ref(), chunk.last.as_ref())
        });
        if overtaken {
            return false;
        }
        // Later chunks are read later: nothing at or before this one's time matters to them.
        g.recent.retain(|(_, t)| ts(*t) > ts(chunk.at));
        let mut ids: Vec<Bson> = chunk
            .docs
            .iter()
            .filter_map(|d| document_id(d).ok())
            .collect();
        ids.sort_by(compare);
        g.ranges.push(Copied {
            after: chunk.after.clone(),
            last: chunk.last.clone(),
            at: chunk.at,
            ids,
        });
        true
    }

    /// Whether the rows of `sweep`'s keys may be deleted now: not when the stream wrote one of
    /// them after the lookup.
    pub fn admit_sweep(&mut self, mappings: &MappingSet, sweep: &SweepItem) -> bool {
        let Some(g) = self.collections.get(&sweep.collection) else {
            return true;
        };
        let Some(mapping) = mappings.collections.get(sweep.collection) else {
            return true;
        };
        let keys: HashSet<String> = sweep.keys.iter().map(key_text).collect();
        !g.recent.iter().any(|(id, t)| {
            ts(*t) > ts(sweep.at)
                && convert_key(mapping, id).is_ok_and(|k| keys.contains(&key_text(&k)))
        })
    }
}

fn collection_index(mappings: &MappingSet, ns: &Namespace) -> Option<usize> {
    mappings
        .collections
        .iter()
        .position(|c| c.database == ns.db && c.collection == ns.coll)
}

/// The changes a chunk's documents become: exactly those of their insert events.
pub fn chunk_changes(
    mappings: &MappingSet,
    chunk: &ChunkItem,
) -> Result<Normalized, FatalConversion> {
    let mapping = &mappings.collections[chunk.collection];
    let namespace = Namespace::new(&mapping.database, &mapping.collection);
    let events: Vec<ChangeEvent> = chunk
        .docs
        .iter()
        .map(|d| ChangeEvent {
            op: Op::Insert,
            namespace: namespace.clone(),
            key: document_id(d).ok(),
            document: Some(d.clone()),
            updated_paths: None,
            txn: None,
            cluster_time: chunk.at,
            position: Position::Oplog { ts: chunk.at },
        })
        .collect();
    let mut out = Normalized::default();
    normalize(mappings, &events, &mut out)?;
    Ok(out)
}

/// The deletes of a sweep.
pub fn sweep_changes(sweep: &SweepItem) -> Vec<Change> {
    sweep
        .keys
        .iter()
        .map(|key| Change::Delete {
            collection: sweep.collection,
            key: key.clone(),
        })
        .collect()
}

/// What a re-copy task needs.
#[derive(Clone)]
pub struct RecopyContext {
    pub client: Client,
    pub mappings: Arc<MappingSet>,
    pub pool: deadpool_postgres::Pool,
    /// Schema of the mapped tables.
    pub schema: String,
    /// Documents per chunk (and keys per sweep page).
    pub chunk: usize,
    /// A pause between chunk reads (`sync.recopy_pause_ms`, for tests).
    pub pause: Duration,
}

/// Re-copies one collection through `tx` (module doc); returns the documents copied.
pub async fn recopy(
    ctx: &RecopyContext,
    collection: usize,
    tx: &mpsc::Sender<RecopyItem>,
) -> Result<u64, SyncError> {
    let mapping = &ctx.mappings.collections[collection];
    let namespace = mapping.namespace();
    let closed = || SyncError::Shutdown("the stream stopped during a re-copy".into());
    let (reply, started) = oneshot::channel();
    tx.send(RecopyItem::Start { collection, reply })
        .await
        .map_err(|_| closed())?;
    started.await.map_err(|_| closed())?;
    tracing::info!(namespace = %namespace, "Re-copying online: the table keeps its rows while the copy replaces them.");
    let db = ctx.client.database(&mapping.database);
    let mut after: Option<Bson> = None;
    let mut documents = 0u64;
    let mut rereads = 0u64;
    loop {
        let mut filter = Document::new();
        if let Some(a) = &after {
            filter = doc! {"$or": crate::source::snapshot::after(a)};
        }
        let n = i64::try_from(ctx.chunk.max(1)).unwrap_or(i64::MAX);
        let read = snapshot_find(
            &db,
            doc! {"find": &mapping.collection, "filter": filter, "sort": {"_id": 1},
            "limit": n, "batchSize": n, "readConcern": {"level": "snapshot"}},
        )
        .await
        .map_err(|e| e.reading(format_args!("the re-copy read of {namespace}")))?;
        let (docs, at, cut_short) = read;
        let end = !cut_short && docs.len() < ctx.chunk.max(1);
        let last = if end {
            None
        } else {
            docs.last().and_then(|d| document_id(d).ok())
        };
        let count = docs.len() as u64;
        let (reply, answer) = oneshot::channel();
        tx.send(RecopyItem::Chunk(Box::new(ChunkItem {
            collection,
            after: after.clone(),
            last: last.clone(),
            at,
            docs,
            reply,
        })))
        .await
        .map_err(|_| closed())?;
        match answer.await.map_err(|_| closed())? {
            Applied::Stale => {
                rereads += 1;
                continue;
            }
            Applied::Committed => documents += count,
        }
        if end {
            break;
        }
        after = last;
        if !ctx.pause.is_zero() {
            tokio::time::sleep(ctx.pause).await;
        }
    }
    let deleted = sweep(ctx, collection, tx).await?;
    let _ = tx.send(RecopyItem::Finish { collection }).await;
    tracing::info!(namespace = %namespace, documents, rows_deleted = deleted, chunks_read_again = rereads, "Re-copy done.");
    Ok(documents)
}

/// Deletes the rows whose documents are gone (module doc); returns how many.
async fn sweep(
    ctx: &RecopyContext,
    collection: usize,
    tx: &mpsc::Sender<RecopyItem>,
) -> Result<u64, SyncError> {
    let mapping = &ctx.mappings.collections[collection];
    let namespace = mapping.namespace();
    let table = qualified(&ctx.schema, &mapping.table);
    let key = quote_ident(&mapping.key_column().name);
    let page = i64::try_from(ctx.chunk.max(1)).unwrap_or(i64::MAX);
    let first_sql = format!("SELECT {key} FROM {table} ORDER BY {key} LIMIT {page}");
    let next_sql =
        format!("SELECT {key} FROM {table} WHERE {key} > $1 ORDER BY {key} LIMIT {page}");
    let db = ctx.client.database(&mapping.database);
    let closed = || SyncError::Shutdown("the stream stopped during a re-copy".into());
    let mut last: Option<PgValue> = None;
    let mut deleted = 0u64;
    loop {
        let keys: Vec<PgValue> = {
            let pg = ctx.pool.get().await.map_err(|e| {
                SyncError::Sink(SinkError::Pool {
                    detail: e.to_string(),
                    retryable: true,
                })
            })?;
            let rows = match &last {
                None => pg.query(first_sql.as_str(), &[]).await,
                Some(k) => pg.query(next_sql.as_str(), &[k]).await,
            }
            .map_err(|e| {
                SyncError::Config(format!(
                    "reading the keys of {table} for the re-copy of {namespace} failed: {e}"
                ))
            })?;
            rows.iter()
                .filter_map(|r| r.try_get::<_, PgValue>(0).ok())
                .collect()
        };
        let Some(page_last) = keys.last().cloned() else {
            return Ok(deleted);
        };
        loop {
            let candidates: Vec<Bson> = keys
                .iter()
                .flat_map(crate::verify::mongo::id_candidates)
                .filter(|id| !super::dead_letters::refused_under_in(id))
                .collect();
            let n = i64::try_from(candidates.len().max(1)).unwrap_or(i64::MAX);
            let (found, at, cut_short) = snapshot_find(
                &db,
                doc! {"find": &mapping.collection, "filter": {"_id": {"$in": candidates}},
                "projection": {"_id": 1}, "batchSize": n,
                "readConcern": {"level": "snapshot"}},
            )
            .await
            .map_err(|e| e.reading(format_args!("the re-copy's lookup of {namespace}")))?;
            if cut_short {
                return Err(SyncError::Config(format!(
                    "the re-copy's lookup of {namespace} did not fit one reply; lower sync.recopy_chunk_rows"
                )));
            }
            let present: HashSet<String> = found
                .iter()
                .filter_map(|d| document_id(d).ok())
                .filter_map(|id| convert_key(mapping, &id).ok())
                .map(|k| key_text(&k))
                .collect();
            let missing: Vec<PgValue> = keys
                .iter()
                .filter(|k| !present.contains(&key_text(k)))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
            let n = missing.len() as u64;
            let (reply, answer) = oneshot::channel();
            tx.send(RecopyItem::Sweep(SweepItem {
                collection,
                at,
                keys: missing,
                reply,
            }))
            .await
            .map_err(|_| closed())?;
            if answer.await.map_err(|_| closed())? == Applied::Committed {
                deleted += n;
                break;
            }
        }
        last = Some(page_last);
    }
}

/// Runs a snapshot `find`: its documents, the cluster time it read at, and whether the reply
/// was cut short (the server left a cursor: more matched than one reply holds).
async fn snapshot_find(
    db: &mongodb::Database,
    command: Document,
) -> Result<(Vec<RawDocumentBuf>, Timestamp, bool), SourceError> {
    let mut retry = crate::source::Retry::default();
    loop {
        match db.run_command(command.clone()).await {
            Ok(reply) => return parse_reply(&reply),
            Err(e) => {
                let delay = retry.after(&e)?;
                tracing::warn!(error = %e, attempt = retry.attempts(), "A re-copy read failed; retrying it.");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn parse_reply(reply: &Document) -> Result<(Vec<RawDocumentBuf>, Timestamp, bool), SourceError> {
    let bad = |what: &str| {
        SourceError::Fatal(format!(
            "the server's reply to a snapshot read has no {what}; online re-copies need MongoDB 5.0 or later (readConcern snapshot outside transactions)"
        ))
    };
    let cursor = reply.get_document("cursor").map_err(|_| bad("cursor"))?;
    let at = cursor
        .get_timestamp("atClusterTime")
        .map_err(|_| bad("cursor.atClusterTime"))?;
    let cut_short = cursor.get_i64("id").is_ok_and(|id| id != 0);
    let docs = cursor
        .get_array("firstBatch")
        .map_err(|_| bad("cursor.firstBatch"))?
        .iter()
        .filter_map(|d| match d {
            Bson::Document(d) => RawDocumentBuf::from_document(d).ok(),
            _ => None,
        })
        .collect();
    Ok((docs, at, cut_short))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(after: Option<i32>, last: Option<i32>, at: u32, ids: &[i32]) -> ChunkItem {
        ChunkItem {
            collection: 0,
            after: after.map(Bson::Int32),
            last: last.map(Bson::Int32),
            at: Timestamp {
                time: at,
                increment: 0,
            },
            docs: ids.iter().map(|i| bson::rawdoc! {"_id": *i}).collect(),
            reply: oneshot::channel().0,
        }
    }

    fn ev(id: i32, at: u32) -> ChangeEvent {
        let t = Timestamp {
            time: at,
            increment: 0,
        };
        ChangeEvent {
            op: Op::Update,
            namespace: Namespace::new("db", "c"),
            key: Some(Bson::Int32(id)),
            document: Some(bson::rawdoc! {"_id": id}),
            updated_paths: None,
            txn: None,
            cluster_time: t,
            position: Position::Oplog { ts: t },
        }
    }

    fn mappings() -> MappingSet {
        crate::mapping::load::load_str(
            "database: db\ncollections:\n  c:\n    table: c\n    columns:\n      - { name: id, source: _id, type: bigint }\n",
            std::path::Path::new("c.yml"),
        )
        .expect("mapping")
    }

    #[test]
    fn events_a_chunk_holds_are_skipped_until_the_stream_passes_it() {
        let m = mappings();
        let mut g = Guard::default();
        g.start(0);
        assert!(g.admit_chunk(&chunk(None, Some(10), 100, &[1, 5, 10])));
        // Older than the chunk, its document in the chunk: skipped.
        assert!(g.filter(&m, vec![ev(5, 90)]).is_empty());
        // Not in the chunk (deleted by T): applied (a delete must not be lost).
        assert_eq!(g.filter(&m, vec![ev(6, 95)]).len(), 1);
        // Outside the range: applied.
        assert_eq!(g.filter(&m, vec![ev(11, 95)]).len(), 1);
        // Newer than the chunk: applied, and the range is gone.
        assert_eq!(g.filter(&m, vec![ev(5, 101)]).len(), 1);
        assert_eq!(g.filter(&m, vec![ev(5, 99)]).len(), 1);
    }

    #[test]
    fn a_chunk_the_stream_overtook_is_refused() {
        let m = mappings();
        let mut g = Guard::default();
        g.start(0);
        // The stream wrote key 3 at time 120, after a read at 100 of (None, 10].
        assert_eq!(g.filter(&m, vec![ev(3, 120)]).len(), 1);
        assert!(!g.admit_chunk(&chunk(None, Some(10), 100, &[3])));
        // A write outside the range does not matter; a read after the write is fine.
        assert!(g.admit_chunk(&chunk(Some(10), None, 100, &[11])));
        assert!(g.admit_chunk(&chunk(None, Some(10), 130, &[3])));
    }
}
