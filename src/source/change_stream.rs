//! The change-stream source (the default): ONE deployment-level stream (`client.watch()`)
//! filtered to the mapped namespaces and their DDL, with `fullDocument: updateLookup`, resumed
//! from the stored token (`resumeAfter`) or started at a recorded token for a fresh stream.
//!
//! Post-images: when a mapped collection has `changeStreamPreAndPostImages` enabled
//! (`listCollections` at each open), the stream asks for `fullDocument: whenAvailable` instead,
//! so each update of it carries the document as that update left it (`updateLookup` reads it
//! when the event is read, collapsing intermediate versions, and costs the server a lookup per
//! update). The mode is one per stream, so updates of the other mapped collections then come
//! without a document and are looked up here (`lookup`: one `$in` per namespace per
//! transaction or event), which gives what `updateLookup` would.
//!
//! The driver already resumes once on resumable `getMore` errors; anything else that is
//! transient (the initial `aggregate` failing, a server selection timeout) is retried here with
//! capped backoff by reopening from the last position this source returned.
//!
//! Large events: an event over 16 MB (a large document with `updateLookup` plus a large
//! `updateDescription`) cannot be returned whole; the server fails the read with 10334
//! BSONObjectTooLarge, and again at the same event after every reopen. Where the server has
//! `$changeStreamSplitLargeEvent` (decided from `hello`'s `maxWireVersion`: 21 is MongoDB 7.0)
//! the pipeline ends with it and the fragments (`splitEvent: {fragment, of}`) are joined back
//! into one event here, whose position is its last fragment's token: a reopen in the middle
//! of an event starts again at its first fragment, so only whole events are ever checkpointed.

use std::collections::HashSet;
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::Client;

use super::large_events::{decode_event, splits_large_events, Fragments, SPLIT_STAGE};
use super::{mapped_namespaces, source_error, Retry, Source, SourceError, SourceHealth};
use crate::event::{ChangeEvent, Namespace, Op, TxnId};
use crate::mapping::model::MappingSet;
use crate::position::Position;

/// How long one `getMore` waits for new events before the server answers empty (and we
/// emit a heartbeat with the post-batch resume token).
const MAX_AWAIT: Duration = Duration::from_secs(1);
/// Events per `getMore`. Without it a backlog comes in 16 MB replies, each decoded whole by
/// the driver, which put a catching-up `sync` at 351 MiB peak RSS; the pipeline reads ahead
/// about as far anyway.
const BATCH_SIZE: u32 = 1000;

/// Reads change events from a deployment-level change stream.
pub struct ChangeStreamSource {
    client: Client,
    pipeline: Vec<Document>,
    /// Full documents stay BSON bytes: the driver would otherwise build a `Document` of each
    /// that normalisation only walks once.
    /// Events stay raw until fragments are joined (`next_event`).
    stream: Option<ChangeStream<RawDocumentBuf>>,
    /// Whether the server splits large events (`$changeStreamSplitLargeEvent`); asked once.
    splits: Option<bool>,
    /// The `fullDocument` mode, decided at the first open from the collections' options.
    full_document: Option<FullDocumentType>,
    /// The mapped namespaces, whose options decide `full_document`.
    namespaces: Vec<Namespace>,
    /// Under `whenAvailable`, the mapped namespaces without post-images: their updates come
    /// without a document, which `lookup` reads.
    looked_up: HashSet<Namespace>,
    /// An event too large to read (no split stage) that the stream is reading past.
    skipping: Option<Skipping>,
    /// The position after the last event returned: where a reopen resumes.
    position: Position,
    /// After an `invalidate`, a new stream must `startAfter` instead of `resumeAfter`.
    start_after: bool,
    /// An event read while completing a transaction that belongs to the next call.
    stash: Option<ChangeEvent>,
    /// Where retried errors are counted (`Retry::counting`).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Every answer of the server and every failed request, for lag (`Source::health`).
    health: SourceHealth,
}

/// The `$match` stage: events on mapped namespaces, renames onto them, and `dropDatabase`
/// of their databases.
pub fn match_stage(mappings: &MappingSet) -> Document {
    let mut by_db: Vec<(String, Vec<String>)> = Vec::new();
    for ns in mapped_namespaces(mappings) {
        match by_db.iter_mut().find(|(db, _)| *db == ns.db) {
            Some((_, colls)) => colls.push(ns.coll),
            None => by_db.push((ns.db, vec![ns.coll])),
        }
    }
    let mut or: Vec<Bson> = Vec::new();
    for (db, colls) in &by_db {
        or.push(Bson::Document(
            doc! {"ns.db": db, "ns.coll": {"$in": colls.clone()}},
        ));
        or.push(Bson::Document(
            doc! {"operationType": "rename", "to.db": db, "to.coll": {"$in": colls.clone()}},
        ));
    }
    let dbs: Vec<String> = by_db.iter().map(|(db, _)| db.clone()).collect();
    or.push(Bson::Document(
        doc! {"operationType": "dropDatabase", "ns.db": {"$in": dbs}},
    ));
    doc! {"$match": {"$or": or}}
}

fn token_to_document(token: &ResumeToken) -> Option<Document> {
    match bson::to_bson(token) {
        Ok(Bson::Document(d)) => Some(d),
        _ => None,
    }
}

impl ChangeStreamSource {
    /// A source that resumes after `position` (a change-stream token). Nothing is read until
    /// the first `next_batch`.
    pub fn new(
        client: Client,
        mappings: &MappingSet,
        position: Position,
    ) -> Result<Self, SourceError> {
        if !matches!(position, Position::ChangeStream { .. }) {
            return Err(SourceError::Fatal(
                "the checkpoint holds an oplog position but mongo.source is change_stream; use the same source as before or run a full sync".into(),
            ));
        }
        Ok(ChangeStreamSource {
            client,
            pipeline: vec![match_stage(mappings)],
            stream: None,
            splits: None,
            full_document: None,
            looked_up: HashSet::new(),
            namespaces: mapped_namespaces(mappings),
            skipping: None,
            position,
            start_after: false,
            stash: None,
            metrics: None,
            health: SourceHealth::default(),
        })
    }

    async fn open(&mut self) -> Result<(), mongodb::error::Error> {
        let Position::ChangeStream { token, .. } = &self.position else {
            return Err(mongodb::error::Error::custom(
                "not a change-stream position",
            ));
        };
        let token: ResumeToken = bson::from_bson(Bson::Document(token.clone()))
            .map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
        let splits = match self.splits {
            Some(splits) => splits,
            None => {
                let splits = splits_large_events(&self.client).await?;
                self.splits = Some(splits);
                splits
            }
        };
        let full_document = match &self.full_document {
            Some(mode) => mode.clone(),
            None => {
                let images = with_post_images(&self.client, &self.namespaces).await?;
                let mode = if images.is_empty() {
                    FullDocumentType::UpdateLookup
                } else {
                    self.looked_up = self
                        .namespaces
                        .iter()
                        .filter(|ns| !images.contains(ns))
                        .cloned()
                        .collect();
                    let mut named: Vec<String> = images.iter().map(ToString::to_string).collect();
                    named.sort();
                    tracing::info!(with_post_images = %named.join(", "), looked_up = self.looked_up.len(), "Updates of collections with changeStreamPreAndPostImages are read with their post-images (fullDocument: whenAvailable); those of the others are looked up by _id.");
                    FullDocumentType::WhenAvailable
                };
                self.full_document = Some(mode.clone());
                mode
            }
        };
        let mut pipeline = self.pipeline.clone();
        if let Some(skipping) = &self.skipping {
            pipeline.push(skipping.filter());
        }
        if splits {
            pipeline.push(doc! {SPLIT_STAGE: {}});
        }
        let watch = self
            .client
            .watch()
            .pipeline(pipeline)
            .full_document(full_document)
            .max_await_time(MAX_AWAIT)
            .batch_size(BATCH_SIZE);
        let stream = if self.start_after {
            watch.start_after(token).await?
        } else {
            watch.resume_after(token).await?
        };
        self.start_after = false;
        self.stream = Some(stream.with_type());
        self.health.answered();
        Ok(())
    }

    /// The next whole event of the open stream (fragments joined), or `None` after an empty
    /// batch.
    async fn next_event(
        &mut self,
    ) -> Result<Option<ChangeStreamEvent<RawDocumentBuf>>, mongodb::error::Error> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let Some(first) = answered(&self.health, stream.next_if_any().await)? else {
            return Ok(None);
        };
        let Some(mut joined) = Fragments::start(&first)? else {
            return decode_event(&first).map(Some);
        };
        // The fragments of one event come one after the other, all available at once.
        while !joined.complete() {
            match answered(&self.health, stream.next_if_any().await)? {
                Some(fragment) => joined.add(&fragment)?,
                None if stream.is_alive() => continue,
                None => {
                    return Err(mongodb::error::Error::custom(
                        "the change stream ended in the middle of a split event",
                    ))
                }
            }
        }
        joined.finish().map(Some)
    }

    /// One attempt: events (a transaction completed), a heartbeat, or a driver error.
    async fn read(&mut self) -> Result<Vec<ChangeEvent>, mongodb::error::Error> {
        if self.stream.is_none() {
            self.open().await?;
        }
        if self.stream.is_none() {
            return Ok(Vec::new());
        }
        let first = match self.stash.take() {
            Some(e)
                if self
                    .skipping
                    .as_ref()
                    .is_some_and(|s| s.passed_by(&e.position)) =>
            {
                // The unreadable event comes first, in its place in the stream.
                self.stash = Some(e);
                return Ok(self.skipping.take().map(|s| s.event).into_iter().collect());
            }
            Some(e) => e,
            // One `getMore` at most: an empty batch is the server's word that nothing newer
            // exists, with its post-batch resume token as the new position.
            None => match self.next_event().await? {
                Some(raw) => match convert(raw) {
                    Converted::Event(e)
                        if self
                            .skipping
                            .as_ref()
                            .is_some_and(|s| s.passed_by(&e.position)) =>
                    {
                        self.stash = Some(*e);
                        return Ok(self.skipping.take().map(|s| s.event).into_iter().collect());
                    }
                    Converted::Event(e) => *e,
                    Converted::Invalidate(token) => {
                        // Only reachable if the deployment invalidates a cluster stream; start
                        // a new one after the invalidate.
                        self.position = Position::change_stream(token, None);
                        self.start_after = true;
                        self.stream = None;
                        return Ok(Vec::new());
                    }
                },
                None => {
                    let Some(stream) = self.stream.as_ref() else {
                        return Ok(Vec::new());
                    };
                    if !stream.is_alive() {
                        self.stream = None;
                        return Ok(Vec::new());
                    }
                    let Some(token) = stream.resume_token().as_ref().and_then(token_to_document)
                    else {
                        return Ok(Vec::new());
                    };
                    let position = Position::change_stream(token, None);
                    if self
                        .skipping
                        .as_ref()
                        .is_some_and(|s| s.passed_by(&position))
                    {
                        return Ok(self.skipping.take().map(|s| s.event).into_iter().collect());
                    }
                    let ct = position.cluster_time().unwrap_or(Timestamp {
                        time: 0,
                        increment: 0,
                    });
                    return Ok(vec![ChangeEvent::noop(position, ct)]);
                }
            },
        };
        let mut events = vec![first];
        if events[0].txn.is_some() {
            // Complete the transaction: its events share txn id and cluster time, and are
            // all available once the first is (one applyOps entry).
            loop {
                let next = match self.next_event().await? {
                    Some(raw) => match convert(raw) {
                        Converted::Event(e) => *e,
                        Converted::Invalidate(_) => break,
                    },
                    None => break,
                };
                if next.same_transaction(&events[0]) {
                    events.push(next);
                } else {
                    self.stash = Some(next);
                    break;
                }
            }
        }
        if !self.looked_up.is_empty() {
            let wanted: Vec<bool> = events
                .iter()
                .map(|e| {
                    e.op == Op::Update
                        && e.document.is_none()
                        && self.looked_up.contains(&e.namespace)
                })
                .collect();
            super::lookup::fill_documents(&self.client, &mut events, &wanted).await?;
        }
        Ok(events)
    }
}

impl ChangeStreamSource {
    /// Count the errors this source retries in `tributary_errors_total{kind}`.
    pub fn count_errors(
        mut self,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Source for ChangeStreamSource {
    fn health(&self) -> Option<SourceHealth> {
        Some(self.health.clone())
    }

    async fn next_batch(&mut self) -> Result<Vec<ChangeEvent>, SourceError> {
        let mut retry = Retry::counting(self.metrics.clone());
        loop {
            match self.read().await {
                Ok(events) if events.is_empty() => continue,
                Ok(events) => {
                    if let Some(last) = events.last() {
                        self.position = last.position.clone();
                    }
                    return Ok(events);
                }
                Err(e) => {
                    self.health.failed();
                    self.stream = None;
                    self.stash = None;
                    if let Some(token) = too_large_event_token(&e) {
                        if self.splits == Some(true) {
                            return Err(SourceError::Fatal(format!("{e}; the change stream splits large events ($changeStreamSplitLargeEvent) and still failed: report this with the MongoDB version")));
                        }
                        match self.skip_too_large(&token).await {
                            Ok(()) => continue,
                            Err(probe) => {
                                tracing::warn!(error = %probe, "The change event over 16 MB could not be looked up; retrying.");
                            }
                        }
                    }
                    let delay = retry.after(&e)?;
                    tracing::warn!(error = %e, attempt = retry.attempts(), delay_ms = delay.as_millis() as u64, "The change stream failed; reopening it from the last position.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

impl ChangeStreamSource {
    /// After a 10334 without the split stage: looks the failed event up (its namespace and
    /// `_id`, without the large fields), then reopens with the event filtered out; it is
    /// handed on as `Op::Unreadable` in its place, so it is dead-lettered and the stream goes
    /// on instead of failing at the same event after every restart.
    async fn skip_too_large(&mut self, data: &str) -> Result<(), mongodb::error::Error> {
        let Position::ChangeStream { token, .. } = &self.position else {
            return Err(mongodb::error::Error::custom(
                "not a change-stream position",
            ));
        };
        let token: ResumeToken = bson::from_bson(Bson::Document(token.clone()))
            .map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
        let mut pipeline = self.pipeline.clone();
        pipeline.extend(probe_stages(data));
        let watch = self
            .client
            .watch()
            .pipeline(pipeline)
            .max_await_time(MAX_AWAIT);
        let mut probe = if self.start_after {
            watch.start_after(token).await?
        } else {
            watch.resume_after(token).await?
        };
        let mut found = None;
        // The event is in the history already; a few empty batches mean it is out of reach.
        for _ in 0..10 {
            if let Some(event) = probe.next_if_any().await? {
                found = Some(event);
                break;
            }
        }
        let token_doc = doc! {"_data": data};
        let position =
            Position::change_stream(token_doc, found.as_ref().and_then(|e| e.cluster_time));
        let cluster_time = position.cluster_time().unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        let namespace = found
            .as_ref()
            .and_then(|e| e.ns.as_ref())
            .map(|ns| Namespace::new(&ns.db, ns.coll.clone().unwrap_or_default()))
            .unwrap_or_default();
        let key = found
            .as_ref()
            .and_then(|e| e.document_key.as_ref())
            .and_then(|k| k.get("_id").cloned());
        tracing::error!(namespace = %namespace, key = ?key, token = %data, "A change event is over 16 MB (MongoDB error 10334) and this server cannot split it ($changeStreamSplitLargeEvent needs MongoDB 7.0); it is written to the dead letters and the stream goes on past it.");
        self.skipping = Some(Skipping {
            data: data.to_owned(),
            event: ChangeEvent {
                op: Op::Unreadable {
                    reason: TOO_LARGE_REASON.to_owned(),
                },
                namespace,
                key,
                document: None,
                updated_paths: None,
                txn: None,
                cluster_time,
                position,
            },
        });
        Ok(())
    }
}

/// The namespaces that are collections with `changeStreamPreAndPostImages` enabled
/// (`listCollections` options).
async fn with_post_images(
    client: &Client,
    namespaces: &[Namespace],
) -> Result<HashSet<Namespace>, mongodb::error::Error> {
    let mut with_images = HashSet::new();
    let mut dbs: Vec<&str> = namespaces.iter().map(|ns| ns.db.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    for db in dbs {
        let names: Vec<&str> = namespaces
            .iter()
            .filter(|ns| ns.db == db)
            .map(|ns| ns.coll.as_str())
            .collect();
        let mut specs = client
            .database(db)
            .list_collections()
            .filter(doc! {"name": {"$in": names}})
            .await?;
        while let Some(spec) = futures::StreamExt::next(&mut specs).await {
            let spec = spec?;
            if spec
                .options
                .change_stream_pre_and_post_images
                .is_some_and(|images| images.enabled)
            {
                with_images.insert(Namespace::new(db, spec.name));
            }
        }
    }
    Ok(with_images)
}

/// Why an event too large to read is a dead letter, and what to do.
const TOO_LARGE_REASON: &str = "the change event is over 16 MB (MongoDB error 10334 \
BSONObjectTooLarge: a large document with updateLookup plus a large update) and this MongoDB \
cannot split it ($changeStreamSplitLargeEvent needs MongoDB 7.0 or 6.0.9); the row keeps its \
previous version until a later change of the document, or the dead-letter retry at the next \
start reads the current document";

/// An event the stream reads past: its token, and the event handed on in its place.
struct Skipping {
    /// The `_data` of the event's resume token.
    data: String,
    event: ChangeEvent,
}

impl Skipping {
    /// The stage keeping the event out of a reopened stream (the server fails when it
    /// serialises it, after the user stages).
    fn filter(&self) -> Document {
        doc! {"$match": {"_id._data": {"$ne": &self.data}}}
    }

    /// Whether `position` lies after the skipped event, which is then due.
    fn passed_by(&self, position: &Position) -> bool {
        match position {
            Position::ChangeStream { token, .. } => {
                token.get_str("_data").is_ok_and(|d| d > self.data.as_str())
            }
            Position::Oplog { .. } => false,
        }
    }
}

/// The stages that find one event by its token without its large fields.
fn probe_stages(data: &str) -> Vec<Document> {
    vec![
        doc! {"$match": {"_id._data": data}},
        doc! {"$project": {"fullDocument": 0, "updateDescription": 0, "fullDocumentBeforeChange": 0}},
    ]
}

/// The resume token of the event a 10334 BSONObjectTooLarge names: the server's message
/// ends with the object's first element, the event's `_id`:
/// `... First element: _id: { _data: "8265..." }`.
fn too_large_event_token(err: &mongodb::error::Error) -> Option<String> {
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        return None;
    };
    if c.code != 10334 {
        return None;
    }
    let (_, rest) = c.message.split_once("First element: _id: { _data: \"")?;
    let (data, _) = rest.split_once('"')?;
    data.chars()
        .all(|ch| ch.is_ascii_hexdigit())
        .then(|| data.to_owned())
}

/// Records a reply of the server (events or an empty batch) before passing it on.
fn answered<T>(
    health: &SourceHealth,
    reply: Result<T, mongodb::error::Error>,
) -> Result<T, mongodb::error::Error> {
    if reply.is_ok() {
        health.answered();
    }
    reply
}

enum Converted {
    Event(Box<ChangeEvent>),
    Invalidate(Document),
}

fn convert(raw: ChangeStreamEvent<RawDocumentBuf>) -> Converted {
    let token = token_to_document(&raw.id).unwrap_or_default();
    let position = Position::change_stream(token.clone(), raw.cluster_time);
    let cluster_time = raw
        .cluster_time
        .or(position.cluster_time())
        .unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
    let namespace = raw
        .ns
        .as_ref()
        .map(|ns| Namespace::new(&ns.db, ns.coll.clone().unwrap_or_default()))
        .unwrap_or_default();
    let txn = match (raw.lsid, raw.txn_number) {
        (Some(lsid), Some(txn_number)) => Some(TxnId { lsid, txn_number }),
        _ => None,
    };
    let op = match raw.operation_type {
        OperationType::Insert => Op::Insert,
        OperationType::Update => Op::Update,
        OperationType::Replace => Op::Replace,
        OperationType::Delete => Op::Delete,
        OperationType::Drop => Op::Drop,
        OperationType::Rename => Op::Rename {
            to: raw
                .to
                .map(|to| Namespace::new(to.db, to.coll.unwrap_or_default()))
                .unwrap_or_default(),
        },
        OperationType::DropDatabase => Op::DropDatabase,
        OperationType::Invalidate => return Converted::Invalidate(token),
        _ => Op::Noop,
    };
    let key = raw
        .document_key
        .as_ref()
        .and_then(|k| k.get("_id").cloned());
    let updated_paths = match op {
        Op::Update => raw
            .update_description
            .as_ref()
            .map(super::paths::from_update_description),
        _ => None,
    };
    Converted::Event(Box::new(ChangeEvent {
        op,
        namespace,
        key,
        document: raw.full_document,
        updated_paths,
        txn,
        cluster_time,
        position,
    }))
}

/// The stream's current position, recorded before a snapshot so streaming can resume from it:
/// the post-batch resume token of a freshly opened stream (the server's "now").
pub async fn current_position(
    client: &Client,
    mappings: &MappingSet,
) -> Result<Position, SourceError> {
    let stream = client
        .watch()
        .pipeline(vec![match_stage(mappings)])
        .max_await_time(Duration::from_millis(10))
        .await
        .map_err(|e| source_error(&e, 1))?;
    // A fresh stream with an empty first batch reports the server's high-water mark as its
    // resume token; reading further could only move past events we must not skip.
    match stream.resume_token().as_ref().and_then(token_to_document) {
        Some(token) => Ok(Position::change_stream(token, None)),
        None => Err(SourceError::Fatal(
            "the server did not return a resume token for a new change stream (postBatchResumeToken); MongoDB 4.0.7 or newer is required".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoded from bytes, as the driver does (unknown operation types borrow their name).
    fn raw(event: Document) -> ChangeStreamEvent<RawDocumentBuf> {
        bson::from_slice(&bson::to_vec(&event).unwrap()).unwrap()
    }

    fn event(c: Converted) -> ChangeEvent {
        match c {
            Converted::Event(e) => *e,
            Converted::Invalidate(_) => panic!("unexpected invalidate"),
        }
    }

    #[test]
    fn an_update_event_carries_key_document_txn_and_position() {
        let ct = Timestamp {
            time: 0x6500_0001,
            increment: 3,
        };
        let e = event(convert(raw(doc! {
            "_id": {"_data": "826500000100000003"},
            "operationType": "update",
            "clusterTime": ct,
            "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": "a"},
            "fullDocument": {"_id": "a", "q": 2},
            "updateDescription": {
                "updatedFields": {"q": 2, "items.1.qty": 3},
                "removedFields": ["note"],
                "truncatedArrays": [{"field": "tags", "newSize": 1}],
            },
            "lsid": {"id": 1},
            "txnNumber": 7_i64,
        })));
        assert_eq!(e.op, Op::Update);
        assert_eq!(e.namespace, Namespace::new("shop", "orders"));
        assert_eq!(e.key, Some(Bson::from("a")));
        assert_eq!(
            e.document,
            Some(RawDocumentBuf::from_document(&doc! {"_id": "a", "q": 2}).unwrap())
        );
        assert_eq!(e.txn.as_ref().map(|t| t.txn_number), Some(7));
        assert_eq!(
            e.updated_paths,
            Some(vec![
                "q".into(),
                "items.1.qty".into(),
                "note".into(),
                "tags".into()
            ])
        );
        assert_eq!(e.cluster_time, ct);
        assert_eq!(e.position.cluster_time(), Some(ct));
    }

    #[test]
    fn ddl_events_and_unknown_types() {
        let base = |op: &str| {
            doc! {"_id": {"_data": "8265"}, "operationType": op, "clusterTime": Timestamp { time: 1, increment: 1 },
            "ns": {"db": "shop", "coll": "orders"}}
        };
        let mut rename = base("rename");
        rename.insert("to", doc! {"db": "shop", "coll": "old"});
        assert_eq!(
            event(convert(raw(rename))).op,
            Op::Rename {
                to: Namespace::new("shop", "old")
            }
        );
        assert_eq!(event(convert(raw(base("drop")))).op, Op::Drop);
        let mut drop_db = base("dropDatabase");
        drop_db.insert("ns", doc! {"db": "shop"});
        let e = event(convert(raw(drop_db)));
        assert_eq!(
            (e.op, e.namespace),
            (Op::DropDatabase, Namespace::new("shop", ""))
        );
        assert_eq!(event(convert(raw(base("createIndexes")))).op, Op::Noop);
        assert!(matches!(
            convert(raw(base("invalidate"))),
            Converted::Invalidate(_)
        ));
    }

    #[test]
    fn the_match_stage_names_mapped_namespaces_renames_onto_them_and_their_databases() {
        use crate::mapping::model::{CollectionMapping, OnError};
        let m = |db: &str, coll: &str| CollectionMapping {
            database: db.into(),
            collection: coll.into(),
            table: coll.into(),
            columns: vec![],
            extra_props: None,
            on_error: OnError::DeadLetter,
            on_nul: crate::mapping::model::OnNul::default(),
            id_type: crate::mapping::model::IdType::default(),
            children: vec![],
        };
        let set = MappingSet {
            collections: vec![m("shop", "orders"), m("shop", "users"), m("crm", "leads")],
        };
        let stage = match_stage(&set);
        let or = stage
            .get_document("$match")
            .unwrap()
            .get_array("$or")
            .unwrap();
        assert_eq!(or.len(), 5);
        assert_eq!(
            or[0].as_document().unwrap(),
            &doc! {"ns.db": "shop", "ns.coll": {"$in": ["orders", "users"]}}
        );
        assert_eq!(
            or[4].as_document().unwrap(),
            &doc! {"operationType": "dropDatabase", "ns.db": {"$in": ["shop", "crm"]}}
        );
    }

    #[test]
    fn a_too_large_error_names_the_event_to_read_past() {
        let err = |code: i32, message: &str| -> mongodb::error::Error {
            bson::from_document::<mongodb::error::CommandError>(
                doc! {"code": code, "codeName": "X", "errmsg": message},
            )
            .map(|c| mongodb::error::Error::from(mongodb::error::ErrorKind::Command(c)))
            .unwrap()
        };
        let msg = "Executor error during getMore :: caused by :: BSONObj size: 17826141 \
                   (0x110015D) is invalid. Size must be between 0 and 16793600(16MB) First \
                   element: _id: { _data: \"826B1187C4000000012B042C0100296E5A\" }";
        assert_eq!(
            too_large_event_token(&err(10334, msg)).as_deref(),
            Some("826B1187C4000000012B042C0100296E5A")
        );
        assert_eq!(too_large_event_token(&err(2, msg)), None);
        assert_eq!(
            too_large_event_token(&err(10334, "BSONObj size: 1 is invalid")),
            None
        );
        let skipping = Skipping {
            data: "8265000002".into(),
            event: ChangeEvent::noop(
                Position::change_stream(doc! {"_data": "8265000002"}, None),
                Timestamp {
                    time: 0,
                    increment: 0,
                },
            ),
        };
        let at = |d: &str| Position::change_stream(doc! {"_data": d}, None);
        assert!(!skipping.passed_by(&at("8265000001")));
        assert!(!skipping.passed_by(&at("8265000002")));
        assert!(skipping.passed_by(&at("8265000003")));
        assert_eq!(
            skipping.filter(),
            doc! {"$match": {"_id._data": {"$ne": "8265000002"}}}
        );
    }
}
