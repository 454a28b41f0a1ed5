//! The oplog source: a tailable, awaiting `find` on `local.oplog.rs` from the stored `ts`.
//!
//! - Resume: query `{ts: {$gte: stored}}` and require the first entry to be the stored one
//!   (then skip it). A first entry *after* the stored ts means the stored entry has rolled off
//!   the capped oplog: history is lost (reported like code 136).
//! - Updates: both formats (`$set`/`$unset`, and the 5.0+ `{$v: 2, diff}`) are handled the same
//!   way: the document is re-read by `_id` (as MoSQL does), coalesced into one
//!   `find({_id: {$in: [...]}})` per namespace per call. Applying diffs would need the last
//!   known version of every document, which a stateless streamer does not have; the re-read
//!   returns the current document, which is exactly what `updateLookup` gives the change-stream
//!   source, and replaying the rest of the history in order converges to the same rows.
//!   A replacement (`o` without operators) carries the whole document and is used as is.
//!   Cost: one round trip per namespace per batch of updates.
//! - Transactions: all operations of an `applyOps` entry form one transaction group; a large
//!   transaction split over `partialTxn` entries is held back until its last entry and emitted
//!   whole. While one is held, other events are emitted with the position before the held
//!   transaction, so a restart never skips it (the in-between events are replayed, harmlessly).
//! - Commands: `drop`, `renameCollection`, `dropDatabase` become DDL events; `create`,
//!   indexes and other commands, `n` no-ops and `fromMigrate` entries only advance the position.
//!
//! Every oplog entry is read (no `ns` filter on the server): the stored entry may belong to
//! any namespace. A first batch may be empty (mongod keeps a tailable cursor on a non-empty
//! collection even when its query matches nothing yet), so `open` asks again until the
//! resume point arrives.

use std::time::Duration;

use bson::{doc, Document, RawBson, RawDocument, RawDocumentBuf, Timestamp};
use futures::StreamExt;
use mongodb::options::CursorType;
use mongodb::raw_batch_cursor::{RawBatch, RawBatchCursor};
use mongodb::Client;

use super::lookup::{self, id_of};
use super::{mapped_namespaces, source_error, Retry, Source, SourceError, SourceHealth};
use crate::event::{ChangeEvent, Namespace, Op, TxnId};
use crate::mapping::model::MappingSet;
use crate::position::{ts_cmp, Position};

/// How long one `getMore` waits for new entries before answering empty (an empty answer is
/// the heartbeat: the server saying nothing newer exists).
const MAX_AWAIT: Duration = Duration::from_secs(1);
/// Most oplog entries per server batch, so per call (bounds memory and the re-read fan-out).
const MAX_ENTRIES: u32 = 1000;

/// Tails `local.oplog.rs`.
pub struct OplogSource {
    client: Client,
    mapped: Vec<Namespace>,
    /// Read batch by batch (the driver's raw batch cursor), not entry by entry: the entry
    /// cursor hides empty awaited batches, which are the only sign the server answered while
    /// idle. Entries stay BSON bytes: most are read for a few fields, and an insert's `o` is
    /// passed on as it is.
    cursor: Option<RawBatchCursor>,
    /// The first batch after a reopen, whose first entry (the resume point, already handled)
    /// is skipped.
    first: Option<RawBatch>,
    /// `ts` of the last entry fully handled: where a reopen resumes.
    ts: Timestamp,
    /// A transaction split across `partialTxn` entries, held until its last entry.
    partial: Option<PartialTxn>,
    /// Where retried errors are counted (`Retry::counting`).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Every answer of the server and every failed request, for lag (`Source::health`).
    health: SourceHealth,
}

struct PartialTxn {
    id: TxnId,
    /// The position before the first held entry: safe to resume from while it is held.
    before: Timestamp,
    ops: Vec<RawDocumentBuf>,
}

/// What one oplog entry becomes before updates are re-read.
struct Pending {
    event: ChangeEvent,
    /// The update must be re-read by `_id`.
    reread: bool,
}

impl OplogSource {
    pub fn new(
        client: Client,
        mappings: &MappingSet,
        position: Position,
    ) -> Result<Self, SourceError> {
        let Position::Oplog { ts } = position else {
            return Err(SourceError::Fatal(
                "the checkpoint holds a change-stream position but mongo.source is oplog; use the same source as before or run a full sync".into(),
            ));
        };
        Ok(OplogSource {
            client,
            mapped: mapped_namespaces(mappings),
            cursor: None,
            first: None,
            ts,
            partial: None,
            metrics: None,
            health: SourceHealth::default(),
        })
    }

    fn is_mapped(&self, ns: &Namespace) -> bool {
        self.mapped.contains(ns)
    }

    fn is_mapped_db(&self, db: &str) -> bool {
        self.mapped.iter().any(|n| n.db == db)
    }

    async fn open(&mut self) -> Result<(), mongodb::error::Error> {
        let resume = self.partial.as_ref().map(|p| p.before).unwrap_or(self.ts);
        let mut cursor = self
            .client
            .database("local")
            .collection::<RawDocumentBuf>("oplog.rs")
            .find(doc! {"ts": {"$gte": resume}})
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(MAX_AWAIT)
            // Replies of one call's worth of entries instead of 16 MB ones: the driver decodes
            // each reply whole.
            .batch_size(MAX_ENTRIES)
            .batch()
            .await?;
        self.health.answered();
        // The first entry must be the resume point itself; anything else means it rolled off.
        let first = loop {
            match cursor.next().await {
                Some(batch) => {
                    let batch = batch?;
                    if first_entry(&batch)?.is_some() {
                        break batch;
                    }
                    // An empty batch from a live cursor: ask again.
                }
                None => return Err(history_lost(resume, None)),
            }
        };
        let first_ts = first_entry(&first)?.and_then(|e| e.get_timestamp("ts").ok());
        if first_ts != Some(resume) {
            return Err(history_lost(resume, first_ts));
        }
        self.partial = None;
        self.ts = resume;
        self.first = Some(first);
        self.cursor = Some(cursor);
        Ok(())
    }

    async fn read(&mut self) -> Result<Vec<ChangeEvent>, mongodb::error::Error> {
        if self.cursor.is_none() {
            self.open().await?;
        }
        // The first batch after a reopen starts with the resume point, handled already.
        let (batch, skip) = match self.first.take() {
            Some(batch) => (batch, 1),
            None => {
                let Some(cursor) = self.cursor.as_mut() else {
                    return Ok(Vec::new());
                };
                match cursor.next().await {
                    Some(batch) => {
                        let batch = batch?;
                        self.health.answered();
                        (batch, 0)
                    }
                    None => {
                        // A tailable cursor dies when the collection is dropped or the server
                        // ends it; reopen from the last position.
                        self.cursor = None;
                        return Ok(Vec::new());
                    }
                }
            }
        };
        let mut pending = Vec::new();
        let mut last_ts = self.ts;
        for entry in batch.doc_slices()?.into_iter().skip(skip) {
            let Some(entry) = entry?.as_document() else {
                continue;
            };
            let Ok(ts) = entry.get_timestamp("ts") else {
                continue;
            };
            self.entry(entry, ts, &mut pending);
            last_ts = ts;
        }
        drop(batch);
        let mut events = reread(&self.client, pending).await?;
        // The position emitted must never pass a held partial transaction.
        let safe = self.partial.as_ref().map(|p| p.before).unwrap_or(last_ts);
        for e in &mut events {
            if let Position::Oplog { ts } = &e.position {
                if ts_cmp(*ts, safe).is_gt() {
                    e.position = Position::Oplog { ts: safe };
                }
            }
        }
        // Also the heartbeat of an empty batch: nothing newer than `safe` exists.
        if events.last().map(|e| e.position.clone()) != Some(Position::Oplog { ts: safe }) {
            events.push(ChangeEvent::noop(Position::Oplog { ts: safe }, safe));
        }
        self.ts = last_ts;
        Ok(events)
    }

    /// Turns one oplog entry into pending events.
    fn entry(&mut self, entry: &RawDocument, ts: Timestamp, out: &mut Vec<Pending>) {
        if entry.get_bool("fromMigrate").unwrap_or(false) {
            return;
        }
        let op = entry.get_str("op").unwrap_or("n");
        let ns = Namespace::parse(entry.get_str("ns").unwrap_or(""));
        match op {
            "i" | "u" | "d" => {
                if let Some(p) = self.crud(entry, &ns, ts, None) {
                    out.push(p);
                }
            }
            "c" => self.command(entry, &ns, ts, out),
            _ => {}
        }
    }

    fn crud(
        &self,
        entry: &RawDocument,
        ns: &Namespace,
        ts: Timestamp,
        txn: Option<TxnId>,
    ) -> Option<Pending> {
        if !self.is_mapped(ns) {
            return None;
        }
        let o = entry.get_document("o").ok()?;
        let mut updated_paths = None;
        let (op, key, document, reread) = match entry.get_str("op").ok()? {
            "i" => (Op::Insert, id_of(o), Some(o.to_raw_document_buf()), false),
            "d" => (Op::Delete, id_of(o), None, false),
            "u" => {
                let key = entry
                    .get_document("o2")
                    .ok()
                    .and_then(id_of)
                    .or_else(|| id_of(o));
                let is_operator = o
                    .iter()
                    .any(|f| f.is_ok_and(|(k, _)| k.starts_with('$') || k == "diff"));
                if is_operator {
                    updated_paths = super::paths::from_oplog_update(o);
                    (Op::Update, key, None, true)
                } else {
                    let mut full = o.to_raw_document_buf();
                    if !matches!(o.get("_id"), Ok(Some(_))) {
                        if let Some(id) = key.clone().and_then(|id| RawBson::try_from(id).ok()) {
                            full.append("_id", id);
                        }
                    }
                    (Op::Replace, key, Some(full), false)
                }
            }
            _ => return None,
        };
        Some(Pending {
            event: ChangeEvent {
                op,
                namespace: ns.clone(),
                key,
                document,
                updated_paths,
                txn,
                cluster_time: ts,
                position: Position::Oplog { ts },
            },
            reread,
        })
    }

    fn command(
        &mut self,
        entry: &RawDocument,
        ns: &Namespace,
        ts: Timestamp,
        out: &mut Vec<Pending>,
    ) {
        let Ok(o) = entry.get_document("o") else {
            return;
        };
        let ddl = |op: Op, namespace: Namespace| Pending {
            event: ChangeEvent {
                op,
                namespace,
                key: None,
                document: None,
                updated_paths: None,
                txn: None,
                cluster_time: ts,
                position: Position::Oplog { ts },
            },
            reread: false,
        };
        if let Ok(ops) = o.get_array("applyOps") {
            let id = TxnId {
                lsid: entry
                    .get_document("lsid")
                    .ok()
                    .and_then(|l| Document::try_from(l).ok())
                    .unwrap_or_else(|| doc! {"applyOps": ts}),
                txn_number: entry.get_i64("txnNumber").unwrap_or(0),
            };
            let mut all: Vec<RawDocumentBuf> = match self.partial.take() {
                Some(p) if p.id == id => p.ops,
                Some(p) => {
                    // A different transaction's partial entries never completed (aborted):
                    // nothing of it was committed.
                    tracing::warn!(txn_number = p.id.txn_number, "An unfinished partial transaction in the oplog was superseded; it is ignored.");
                    Vec::new()
                }
                None => Vec::new(),
            };
            all.extend(
                ops.into_iter()
                    .filter_map(|b| b.ok()?.as_document().map(RawDocument::to_raw_document_buf)),
            );
            if o.get_bool("partialTxn").unwrap_or(false)
                || entry.get_bool("partialTxn").unwrap_or(false)
            {
                let before = self.partial_before(ts);
                self.partial = Some(PartialTxn {
                    id,
                    before,
                    ops: all,
                });
                return;
            }
            for inner in all {
                let inner_ns = Namespace::parse(inner.get_str("ns").unwrap_or(""));
                match inner.get_str("op").unwrap_or("n") {
                    "i" | "u" | "d" => {
                        if let Some(p) = self.crud(&inner, &inner_ns, ts, Some(id.clone())) {
                            out.push(p);
                        }
                    }
                    "c" => self.command(&inner, &inner_ns, ts, out),
                    _ => {}
                }
            }
            return;
        }
        if let Ok(coll) = o.get_str("drop") {
            let target = Namespace::new(&ns.db, coll);
            if self.is_mapped(&target) {
                out.push(ddl(Op::Drop, target));
            }
        } else if let Ok(from) = o.get_str("renameCollection") {
            let from = Namespace::parse(from);
            let to = Namespace::parse(o.get_str("to").unwrap_or(""));
            if self.is_mapped(&from) || self.is_mapped(&to) {
                out.push(ddl(Op::Rename { to }, from));
            }
        } else if matches!(o.get("dropDatabase"), Ok(Some(_))) && self.is_mapped_db(&ns.db) {
            out.push(ddl(Op::DropDatabase, Namespace::new(&ns.db, "")));
        }
    }

    /// The resume point while a partial transaction is held: the entry before its first one.
    fn partial_before(&self, ts: Timestamp) -> Timestamp {
        match &self.partial {
            Some(p) => p.before,
            None => {
                let _ = ts;
                self.ts
            }
        }
    }
}

/// Fills in the documents of updates by re-reading them (`lookup`). (A free function: the
/// cursor in `OplogSource` is not `Sync`, so `&self` cannot cross an await.)
async fn reread(
    client: &Client,
    pending: Vec<Pending>,
) -> Result<Vec<ChangeEvent>, mongodb::error::Error> {
    let wanted: Vec<bool> = pending.iter().map(|p| p.reread).collect();
    let mut events: Vec<ChangeEvent> = pending.into_iter().map(|p| p.event).collect();
    lookup::fill_documents(client, &mut events, &wanted).await?;
    Ok(events)
}

/// The first entry of a batch, if it has any.
fn first_entry(batch: &RawBatch) -> Result<Option<&RawDocument>, mongodb::error::Error> {
    match batch.doc_slices()?.into_iter().next() {
        Some(entry) => Ok(entry?.as_document()),
        None => Ok(None),
    }
}

fn history_lost(resume: Timestamp, first: Option<Timestamp>) -> mongodb::error::Error {
    let message = match first {
        Some(f) => format!(
            "the oplog no longer holds the entry at {}:{} (its oldest readable entry is {}:{})",
            resume.time, resume.increment, f.time, f.increment
        ),
        None => format!(
            "the oplog no longer holds the entry at {}:{}",
            resume.time, resume.increment
        ),
    };
    mongodb::error::Error::custom(HistoryLostMarker(message))
}

/// Carried inside a driver error so `next_batch` can report lost history like code 136.
#[derive(Debug, Clone)]
struct HistoryLostMarker(String);

impl OplogSource {
    /// Count the errors this source retries in `tributary_errors_total{kind}`.
    pub fn count_errors(
        mut self,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Source for OplogSource {
    fn health(&self) -> Option<SourceHealth> {
        Some(self.health.clone())
    }

    async fn next_batch(&mut self) -> Result<Vec<ChangeEvent>, SourceError> {
        let mut retry = Retry::counting(self.metrics.clone());
        loop {
            match self.read().await {
                Ok(events) if events.is_empty() => continue,
                Ok(events) => return Ok(events),
                Err(e) => {
                    self.health.failed();
                    self.cursor = None;
                    self.first = None;
                    if let Some(HistoryLostMarker(message)) = e.get_custom::<HistoryLostMarker>() {
                        return Err(SourceError::HistoryLost {
                            code: 136,
                            message: message.clone(),
                        });
                    }
                    let delay = retry.after(&e)?;
                    tracing::warn!(error = %e, attempt = retry.attempts(), delay_ms = delay.as_millis() as u64, "Tailing the oplog failed; reopening it from the last position.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Refuses a `mongos`: a sharded cluster has one oplog per shard and none on the router.
/// Tailing each shard directly would mean connecting to every shard's members, merging their
/// oplogs by time, dropping chunk migrations' `fromMigrate` writes and following shards as they
/// are added; change streams through `mongos` do all of that, and are MongoDB's supported way
/// (docs/scaling.md). A server that does not answer is not refused here: the reads that follow
/// retry it.
/// Returns the refusal to show (a config error: the pipeline stops with exit 2).
pub async fn refuse_mongos(client: &Client) -> Result<(), MongosRefused> {
    let Ok(hello) = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
    else {
        return Ok(());
    };
    if hello.get_str("msg") == Ok("isdbgrid") {
        return Err(MongosRefused);
    }
    Ok(())
}

/// `mongo.source = "oplog"` pointed at a mongos.
#[derive(Debug, thiserror::Error)]
#[error("mongo.uri is a mongos (sharded cluster), which has no oplog to tail: set mongo.source = \"change_stream\" (a change stream through mongos merges every shard's changes and hides chunk migrations)")]
pub struct MongosRefused;

/// The newest oplog entry's `ts`: the position recorded before a snapshot.
pub async fn current_position(client: &Client) -> Result<Position, SourceError> {
    refuse_mongos(client)
        .await
        .map_err(|e| SourceError::Fatal(e.to_string()))?;
    let newest = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .map_err(|e| source_error(&e, 1))?;
    match newest.and_then(|d| d.get_timestamp("ts").ok()) {
        Some(ts) => Ok(Position::Oplog { ts }),
        None => Err(SourceError::Fatal(
            "local.oplog.rs is empty or unreadable; oplog mode needs a replica set and read access to the local database".into(),
        )),
    }
}

/// The `ts` of the oldest and the newest entry of `local.oplog.rs` (natural order, as the
/// capped collection stores them): the history a resume can still reach. `None` when the
/// oplog is empty.
pub async fn oplog_bounds(
    client: &Client,
) -> Result<Option<(Timestamp, Timestamp)>, mongodb::error::Error> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let ts_of = |d: Option<Document>| d.and_then(|d| d.get_timestamp("ts").ok());
    let first = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1})
        .await?;
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .projection(doc! {"ts": 1})
        .await?;
    Ok(ts_of(first).zip(ts_of(last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::model::{CollectionMapping, ColumnMapping, FieldPath, OnError, PgType};
    use bson::Bson;

    fn mappings() -> MappingSet {
        MappingSet {
            collections: vec![CollectionMapping {
                database: "shop".into(),
                collection: "orders".into(),
                table: "orders".into(),
                columns: vec![ColumnMapping {
                    name: "id".into(),
                    source: FieldPath::parse("_id"),
                    pg_type: PgType::Text,
                }],
                extra_props: None,
                on_error: OnError::DeadLetter,
                on_nul: crate::mapping::model::OnNul::default(),
                id_type: crate::mapping::model::IdType::default(),
                children: vec![],
            }],
        }
    }

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 50,
            increment: i,
        }
    }

    async fn source() -> OplogSource {
        // The driver connects lazily: nothing is contacted by these tests.
        let client = Client::with_uri_str("mongodb://127.0.0.1:9/")
            .await
            .unwrap();
        OplogSource::new(client, &mappings(), Position::Oplog { ts: ts(0) }).unwrap()
    }

    fn handle(s: &mut OplogSource, entries: &[Document]) -> Vec<Pending> {
        let mut out = Vec::new();
        for e in entries {
            let t = e.get_timestamp("ts").unwrap();
            s.entry(&RawDocumentBuf::from_document(e).unwrap(), t, &mut out);
        }
        out
    }

    #[tokio::test]
    async fn crud_entries_become_events_and_updates_are_reread() {
        let mut s = source().await;
        let out = handle(
            &mut s,
            &[
                doc! {"op": "i", "ns": "shop.orders", "ts": ts(1), "o": {"_id": "a", "q": 1}},
                doc! {"op": "u", "ns": "shop.orders", "ts": ts(2), "o2": {"_id": "a"}, "o": {"$v": 2, "diff": {"u": {"q": 2}}}},
                doc! {"op": "u", "ns": "shop.orders", "ts": ts(3), "o2": {"_id": "a"}, "o": {"$set": {"q": 3}}},
                doc! {"op": "u", "ns": "shop.orders", "ts": ts(4), "o2": {"_id": "a"}, "o": {"_id": "a", "q": 4}},
                doc! {"op": "d", "ns": "shop.orders", "ts": ts(5), "o": {"_id": "a"}},
                doc! {"op": "i", "ns": "shop.other", "ts": ts(6), "o": {"_id": "z"}},
                doc! {"op": "n", "ns": "", "ts": ts(7), "o": {"msg": "periodic noop"}},
                doc! {"op": "i", "ns": "shop.orders", "ts": ts(8), "fromMigrate": true, "o": {"_id": "m"}},
            ],
        );
        let ops: Vec<(Op, bool)> = out.iter().map(|p| (p.event.op.clone(), p.reread)).collect();
        assert_eq!(
            ops,
            vec![
                (Op::Insert, false),
                (Op::Update, true),
                (Op::Update, true),
                (Op::Replace, false),
                (Op::Delete, false),
            ]
        );
        assert!(out
            .iter()
            .all(|p| p.event.key == Some(Bson::String("a".into()))));
        let replaced = out[3].event.document.as_ref().unwrap();
        assert_eq!(
            Document::try_from(replaced.as_ref()).unwrap(),
            doc! {"_id": "a", "q": 4}
        );
        assert_eq!(out[4].event.position, Position::Oplog { ts: ts(5) });
        let paths: Vec<Option<Vec<String>>> =
            out.iter().map(|p| p.event.updated_paths.clone()).collect();
        assert_eq!(
            paths,
            vec![
                None,
                Some(vec!["q".into()]),
                Some(vec!["q".into()]),
                None,
                None
            ]
        );
    }

    #[tokio::test]
    async fn a_replacement_without_id_gets_the_key_of_o2() {
        let mut s = source().await;
        let out = handle(
            &mut s,
            &[
                doc! {"op": "u", "ns": "shop.orders", "ts": ts(1), "o2": {"_id": 7}, "o": {"q": 4, "tags": ["a"]}},
            ],
        );
        assert_eq!(out[0].event.op, Op::Replace);
        assert_eq!(out[0].event.key, Some(Bson::Int32(7)));
        let replaced = out[0].event.document.as_ref().unwrap();
        assert_eq!(
            Document::try_from(replaced.as_ref()).unwrap(),
            doc! {"q": 4, "tags": ["a"], "_id": 7}
        );
    }

    #[tokio::test]
    async fn an_apply_ops_entry_is_one_transaction() {
        let mut s = source().await;
        let out = handle(
            &mut s,
            &[
                doc! {"op": "c", "ns": "admin.$cmd", "ts": ts(1), "lsid": {"id": 1}, "txnNumber": 4_i64,
                "o": {"applyOps": [
                    {"op": "i", "ns": "shop.orders", "o": {"_id": "a"}},
                    {"op": "u", "ns": "shop.orders", "o2": {"_id": "b"}, "o": {"$v": 2, "diff": {"d": {"x": false}}}},
                    {"op": "d", "ns": "shop.orders", "o": {"_id": "c"}},
                ]}},
            ],
        );
        assert_eq!(out.len(), 3);
        let first = &out[0].event;
        assert!(first.txn.is_some());
        assert!(out.iter().all(|p| p.event.same_transaction(first)));
        assert!(out
            .iter()
            .all(|p| p.event.position == Position::Oplog { ts: ts(1) }));
    }

    #[tokio::test]
    async fn a_split_transaction_is_held_until_its_last_entry() {
        let mut s = source().await;
        let part = |i: u32, id: &str, partial: bool| {
            let mut o = doc! {"applyOps": [{"op": "i", "ns": "shop.orders", "o": {"_id": id}}]};
            if partial {
                o.insert("partialTxn", true);
            }
            doc! {"op": "c", "ns": "admin.$cmd", "ts": ts(i), "lsid": {"id": 1}, "txnNumber": 9_i64, "o": o}
        };
        let held = handle(&mut s, &[part(1, "a", true), part(2, "b", true)]);
        assert!(held.is_empty());
        assert_eq!(s.partial.as_ref().map(|p| p.before), Some(ts(0)));
        let out = handle(&mut s, &[part(3, "c", false)]);
        let keys: Vec<_> = out.iter().map(|p| p.event.key.clone().unwrap()).collect();
        assert_eq!(
            keys,
            vec![Bson::from("a"), Bson::from("b"), Bson::from("c")]
        );
        assert!(out.iter().all(|p| p.event.same_transaction(&out[0].event)));
        assert!(s.partial.is_none());
    }

    #[tokio::test]
    async fn commands_become_ddl_events_for_mapped_namespaces() {
        let mut s = source().await;
        let out = handle(
            &mut s,
            &[
                doc! {"op": "c", "ns": "shop.$cmd", "ts": ts(1), "o": {"create": "orders"}},
                doc! {"op": "c", "ns": "shop.$cmd", "ts": ts(2), "o": {"drop": "orders"}},
                doc! {"op": "c", "ns": "shop.$cmd", "ts": ts(3), "o": {"drop": "unmapped"}},
                doc! {"op": "c", "ns": "admin.$cmd", "ts": ts(4), "o": {"renameCollection": "shop.tmp", "to": "shop.orders"}},
                doc! {"op": "c", "ns": "shop.$cmd", "ts": ts(5), "o": {"dropDatabase": 1}},
                doc! {"op": "c", "ns": "other.$cmd", "ts": ts(6), "o": {"dropDatabase": 1}},
            ],
        );
        let ops: Vec<(Op, String)> = out
            .iter()
            .map(|p| (p.event.op.clone(), p.event.namespace.to_string()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (Op::Drop, "shop.orders".to_owned()),
                (
                    Op::Rename {
                        to: Namespace::new("shop", "orders")
                    },
                    "shop.tmp".to_owned()
                ),
                (Op::DropDatabase, "shop".to_owned()),
            ]
        );
    }
}
