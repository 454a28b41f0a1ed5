//! Turns one oplog entry into the change events MongoDB 7 emits for it, in
//! order, with the server's field order:
//!
//! `[to], [txnNumber, lsid], _id, operationType, clusterTime,
//! [collectionUUID], wallTime, [fullDocument], [ns], [documentKey],
//! [operationDescription], [updateDescription], [stateBeforeChange],
//! [fullDocumentBeforeChange]`
//!
//! (the server's event transformation appends `to` and the transaction ids
//! before the resume token, and reserves the `fullDocument` slot that an
//! `updateLookup` later fills). CRUD entries give `insert`/`update`/
//! `replace`/`delete`; an `applyOps` is unwound with `txnOpIndex` in the
//! tokens; `drop`, `renameCollection` and `dropDatabase` commands give
//! their events; `create`, `createIndexes`/`commitIndexBuild`,
//! `dropIndexes` and `collMod` only with `showExpandedEvents`. No-ops,
//! `fromMigrate` entries and internal namespaces give nothing.
//!
//! Each event is assembled once, field by field, into either a `Document`
//! ([`events_from_oplog_entry`]) or its BSON bytes
//! ([`encoded_events_from_oplog_entry`], what change streams without user
//! stages or images return): the bytes borrow `fullDocument` and the
//! document key from the entry instead of cloning them.
//!
//! Nuances of the real server not reproduced: a transaction split over
//! several `partialTxn` applyOps entries (and prepared transactions'
//! `commitTransaction`) is only unwound from a single complete entry;
//! `$v: 1` updates, which MongoDB 7 rejects, are accepted
//! and described from their `$set`/`$unset`; views and timeseries `create`
//! events and `nsType` (8.1+) are not produced.

use std::borrow::Cow;

use bson::{Bson, DateTime, Document, RawDocument, Timestamp};

use crate::diff::update_description;
use crate::node::store::{approx_size, approx_value, decode_raw};
use crate::query::Fields;
use crate::token::{encode, encode_data, ResumeToken, TokenKind};

/// The `$changeStream` options that shape events.
#[derive(Debug, Clone)]
pub struct EventOptions {
    /// `default`, `updateLookup`, `whenAvailable` or `required`.
    pub full_document: String,
    /// `off`, `whenAvailable` or `required`.
    pub full_document_before_change: String,
    pub show_expanded_events: bool,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            full_document: "default".into(),
            full_document_before_change: "off".into(),
            show_expanded_events: false,
        }
    }
}

/// What every event of one oplog entry (or one applyOps member) shares.
struct Origin<'a> {
    ts: Timestamp,
    wall: DateTime,
    txn_op_index: u32,
    /// `(txnNumber, lsid)` for events unwound from a transaction.
    txn: Option<(&'a Bson, &'a Bson)>,
}

/// The parts of one event, assembled in the server's field order by
/// [`assemble`]; the big ones borrow from the oplog entry, so an event
/// encoded straight to BSON ([`encoded_events_from_oplog_entry`]) copies
/// `fullDocument` once, into the reply bytes.
#[derive(Default)]
struct Parts<'a> {
    operation_type: &'static str,
    uuid: Option<Cow<'a, Bson>>,
    ns: Option<Document>,
    to: Option<Document>,
    full_document: Option<Cow<'a, Bson>>,
    /// An insert's `fullDocument` kept as BSON by the oplog.
    full_document_raw: Option<(&'a RawDocument, usize)>,
    document_key: Option<Cow<'a, Document>>,
    operation_description: Option<Document>,
    update_description: Option<Document>,
    state_before_change: Option<Document>,
    before_change: bool,
}

/// Change events for one oplog entry; `lookup(ns, _id)` returns the current
/// document for `fullDocument: updateLookup`.
pub fn events_from_oplog_entry(
    entry: &dyn Fields,
    lookup: &dyn Fn(&str, &Bson) -> Option<Document>,
    opts: &EventOptions,
) -> Vec<Document> {
    let mut events = Vec::new();
    for_each_event(entry, lookup, opts, &mut |origin, parts| {
        let mut sink = DocSink(Document::new());
        assemble(origin, parts, opts, &mut sink);
        events.push(sink.0);
    });
    events
}

/// One change event already encoded as BSON, with what a stream checks
/// before returning it.
#[derive(Debug)]
pub struct EncodedEvent {
    /// The event's BSON bytes, identical to encoding its `Document`.
    pub bytes: Vec<u8>,
    /// `store::approx_size` of the event's `Document`, for batch limits.
    pub approx_size: usize,
    /// `_id._data`, the resume token.
    pub token: String,
    pub operation_type: &'static str,
    /// The event's `ns` (`{db, coll}`), when it has one.
    pub ns: Option<Document>,
}

/// What [`events_from_oplog_entry`] returns, encoded straight to BSON
/// without building (and cloning `fullDocument` into) a `Document` per
/// event; `None` when some value needs the `bson` crate's encoder (the
/// caller then uses [`events_from_oplog_entry`]).
pub fn encoded_events_from_oplog_entry(
    entry: &dyn Fields,
    lookup: &dyn Fn(&str, &Bson) -> Option<Document>,
    opts: &EventOptions,
) -> Option<Vec<EncodedEvent>> {
    let mut events = Vec::new();
    let mut ok = true;
    for_each_event(entry, lookup, opts, &mut |origin, parts| {
        if !ok {
            return;
        }
        let operation_type = parts.operation_type;
        let mut sink = RawSink::default();
        sink.open();
        assemble(origin, parts, opts, &mut sink);
        match sink.finish() {
            Some((bytes, approx_size, token, ns)) => events.push(EncodedEvent {
                bytes,
                approx_size,
                token,
                operation_type,
                ns,
            }),
            None => ok = false,
        }
    });
    ok.then_some(events)
}

/// Calls `emit` with the parts of every event of `entry`, in order.
fn for_each_event<'a>(
    entry: &'a dyn Fields,
    lookup: &dyn Fn(&str, &Bson) -> Option<Document>,
    opts: &EventOptions,
    emit: &mut dyn FnMut(&Origin<'a>, Parts<'a>),
) {
    if entry.bool_field("fromMigrate").unwrap_or(false) {
        return;
    }
    let Some(ts) = entry.ts_field("ts") else {
        return;
    };
    let wall = entry
        .date_field("wall")
        .unwrap_or_else(|| DateTime::from_millis(i64::from(ts.time) * 1000));
    let origin = Origin {
        ts,
        wall,
        txn_op_index: 0,
        txn: None,
    };
    let is_apply_ops = entry.str_field("op") == Some("c")
        && matches!(entry.doc_field("o"), Some(o) if o.contains_key("applyOps"));
    if is_apply_ops {
        unwind_apply_ops(entry, origin, lookup, opts, emit);
        return;
    }
    if let Some(p) = one_operation(entry, lookup, opts) {
        emit(&origin, p);
    }
}

fn unwind_apply_ops<'a>(
    entry: &'a dyn Fields,
    origin: Origin<'a>,
    lookup: &dyn Fn(&str, &Bson) -> Option<Document>,
    opts: &EventOptions,
    emit: &mut dyn FnMut(&Origin<'a>, Parts<'a>),
) {
    // The server emits a multi-entry transaction at its last entry; partial
    // entries produce nothing on their own.
    if entry.bool_field("partialTxn").unwrap_or(false)
        || entry.bool_field("prepare").unwrap_or(false)
    {
        return;
    }
    let Some(Ok(ops)) = entry.doc_field("o").map(|o| o.get_array("applyOps")) else {
        return;
    };
    let txn = match (entry.field("txnNumber"), entry.field("lsid")) {
        (Some(n), Some(l)) => Some((n, l)),
        _ => None,
    };
    for (idx, op) in ops.iter().enumerate() {
        let Bson::Document(op) = op else { continue };
        let inner = Origin {
            ts: origin.ts,
            wall: origin.wall,
            txn_op_index: u32::try_from(idx).unwrap_or(u32::MAX),
            txn,
        };
        if let Some(parts) = one_operation(op, lookup, opts) {
            emit(&inner, parts);
        }
    }
}

fn split_ns(ns: &str) -> (&str, &str) {
    ns.split_once('.').unwrap_or((ns, ""))
}

fn ns_doc(db: &str, coll: Option<&str>) -> Document {
    let mut d = Document::new();
    d.insert("db", db);
    if let Some(c) = coll {
        d.insert("coll", c);
    }
    d
}

/// Namespaces change streams never report.
fn is_internal(db: &str, coll: &str) -> bool {
    matches!(db, "admin" | "config" | "local") || coll.starts_with("system.")
}

fn without(doc: &Document, keys: &[&str]) -> Document {
    doc.iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The event parts for one CRUD or command operation, or `None` if it has no event.
fn one_operation<'a>(
    op: &'a dyn Fields,
    lookup: &dyn Fn(&str, &Bson) -> Option<Document>,
    opts: &EventOptions,
) -> Option<Parts<'a>> {
    let ns = op.str_field("ns")?;
    let (db, coll) = split_ns(ns);
    if let Some((raw, approx)) = op.raw_doc_field("o") {
        // Only inserts keep their `o` as bytes.
        if op.str_field("op")? != "i" || is_internal(db, coll) {
            return None;
        }
        let id = raw
            .get("_id")
            .ok()
            .flatten()
            .and_then(|v| Bson::try_from(v).ok());
        return Some(Parts {
            operation_type: "insert",
            uuid: op.field("ui").map(Cow::Borrowed),
            document_key: Some(match op.doc_field("o2") {
                Some(k) => Cow::Borrowed(k),
                None => Cow::Owned(id_key(id.as_ref())),
            }),
            full_document_raw: Some((raw, approx)),
            ns: Some(ns_doc(db, Some(coll))),
            ..Parts::default()
        });
    }
    let o_value = op.field("o")?;
    let o = o_value.as_document()?;
    let uuid = op.field("ui").map(Cow::Borrowed);
    let expanded = opts.show_expanded_events;
    let mut parts = Parts {
        uuid,
        ..Parts::default()
    };
    match op.str_field("op")? {
        "i" | "u" | "d" if is_internal(db, coll) => return None,
        "i" => {
            parts.operation_type = "insert";
            parts.document_key = Some(match op.doc_field("o2") {
                Some(k) => Cow::Borrowed(k),
                None => Cow::Owned(id_key(o.get("_id"))),
            });
            parts.full_document = Some(Cow::Borrowed(o_value));
        }
        "d" => {
            parts.operation_type = "delete";
            parts.document_key = Some(Cow::Borrowed(o));
            parts.before_change = true;
        }
        "u" => {
            let key = match op.doc_field("o2") {
                Some(k) => Cow::Borrowed(k),
                None => Cow::Owned(id_key(o.get("_id"))),
            };
            parts.before_change = true;
            if o.contains_key("_id") {
                parts.operation_type = "replace";
                parts.full_document = Some(Cow::Borrowed(o_value));
            } else {
                parts.operation_type = "update";
                parts.update_description = Some(describe_update(o, expanded)?);
                match opts.full_document.as_str() {
                    "updateLookup" => {
                        let found = key.get("_id").and_then(|id| lookup(ns, id));
                        parts.full_document =
                            Some(Cow::Owned(found.map(Bson::Document).unwrap_or(Bson::Null)));
                    }
                    // Post-images come from the stored images (the stream fills the slot),
                    // never from a read of the collection, as in MongoDB.
                    "whenAvailable" | "required" => {
                        parts.full_document = Some(Cow::Owned(Bson::Null));
                    }
                    _ => {}
                }
            }
            parts.document_key = Some(key);
        }
        "c" => command(o, db, &mut parts, op.doc_field("o2"), expanded)?,
        // A primary shard's `shardCollection` note: an expanded event.
        "n" if expanded => {
            let note = op.doc_field("o2")?;
            note.get_str("shardCollection").ok()?;
            parts.operation_type = "shardCollection";
            parts.operation_description = Some(without(note, &["shardCollection"]));
        }
        _ => return None,
    }
    if parts.ns.is_none() && parts.operation_type != "dropDatabase" {
        parts.ns = Some(ns_doc(db, Some(coll)));
    }
    Some(parts)
}

fn id_key(id: Option<&Bson>) -> Document {
    let mut d = Document::new();
    d.insert("_id", id.cloned().unwrap_or(Bson::Null));
    d
}

fn describe_update(o: &Document, expanded: bool) -> Option<Document> {
    if let Ok(diff) = o.get_document("diff") {
        return Some(update_description(diff, expanded));
    }
    // `$v: 1` (or unversioned) modifier entries from old oplogs.
    let mut updated = Document::new();
    let mut removed = Vec::new();
    if let Ok(set) = o.get_document("$set") {
        updated.extend(set.clone());
    }
    if let Ok(unset) = o.get_document("$unset") {
        removed.extend(unset.keys().map(|k| Bson::String(k.clone())));
    }
    if updated.is_empty() && removed.is_empty() {
        return None;
    }
    let mut desc = Document::new();
    desc.insert("updatedFields", updated);
    desc.insert("removedFields", removed);
    desc.insert("truncatedArrays", Bson::Array(Vec::new()));
    if expanded {
        desc.insert("disambiguatedPaths", Document::new());
    }
    Some(desc)
}

/// Command (`op: "c"`) entries: collection and database DDL.
fn command(
    o: &Document,
    db: &str,
    parts: &mut Parts<'_>,
    o2: Option<&Document>,
    expanded: bool,
) -> Option<()> {
    if let Ok(coll) = o.get_str("drop") {
        if is_internal(db, coll) {
            return None;
        }
        parts.operation_type = "drop";
        parts.ns = Some(ns_doc(db, Some(coll)));
    } else if let Ok(from) = o.get_str("renameCollection") {
        let (from_db, from_coll) = split_ns(from);
        let (to_db, to_coll) = split_ns(o.get_str("to").ok()?);
        if is_internal(from_db, from_coll) {
            return None;
        }
        parts.operation_type = "rename";
        parts.ns = Some(ns_doc(from_db, Some(from_coll)));
        let target = ns_doc(to_db, Some(to_coll));
        let mut desc = without(o, &["renameCollection", "stayTemp"]);
        desc.insert("to", target.clone());
        parts.to = Some(target);
        parts.operation_description = Some(desc);
    } else if o.contains_key("dropDatabase") {
        if is_internal(db, "") {
            return None;
        }
        parts.operation_type = "dropDatabase";
        parts.ns = Some(ns_doc(db, None));
        parts.uuid = None;
    } else if !expanded {
        return None;
    } else if let Ok(coll) = o.get_str("create") {
        if is_internal(db, coll) {
            return None;
        }
        parts.operation_type = "create";
        parts.ns = Some(ns_doc(db, Some(coll)));
        parts.operation_description = Some(without(o, &["create"]));
    } else if let Ok(coll) = o.get_str("createIndexes") {
        parts.operation_type = "createIndexes";
        parts.ns = Some(ns_doc(db, Some(coll)));
        let mut desc = Document::new();
        desc.insert(
            "indexes",
            vec![Bson::Document(without(o, &["createIndexes"]))],
        );
        parts.operation_description = Some(desc);
    } else if let Ok(coll) = o.get_str("commitIndexBuild") {
        parts.operation_type = "createIndexes";
        parts.ns = Some(ns_doc(db, Some(coll)));
        let mut desc = Document::new();
        desc.insert(
            "indexes",
            o.get("indexes").cloned().unwrap_or(Bson::Array(Vec::new())),
        );
        parts.operation_description = Some(desc);
    } else if let Ok(coll) = o.get_str("dropIndexes") {
        parts.operation_type = "dropIndexes";
        parts.ns = Some(ns_doc(db, Some(coll)));
        let spec = match o2 {
            Some(o2) => without(o2, &["dropIndexes"]),
            None => without(o, &["dropIndexes"]),
        };
        let mut desc = Document::new();
        desc.insert("indexes", vec![Bson::Document(spec)]);
        parts.operation_description = Some(desc);
    } else if let Ok(coll) = o.get_str("collMod") {
        parts.operation_type = "modify";
        parts.ns = Some(ns_doc(db, Some(coll)));
        parts.operation_description = Some(without(o, &["collMod"]));
        if let Some(o2) = o2 {
            let mut before = Document::new();
            if let Some(v) = o2.get("collectionOptions_old") {
                before.insert("collectionOptions", v.clone());
            }
            if let Some(v) = o2.get("indexOptions_old") {
                before.insert("indexOptions", v.clone());
            }
            parts.state_before_change = Some(before);
        }
    } else {
        // commitTransaction, abortTransaction, startIndexBuild, ...
        return None;
    }
    Some(())
}

/// Receives an event's fields in the server's order, building a `Document`
/// ([`DocSink`]) or BSON bytes ([`RawSink`]); both get the same calls, so
/// the two forms cannot disagree.
trait EventSink {
    /// `_id: {_data: <token>}`.
    fn token(&mut self, data: String);
    fn value(&mut self, key: &'static str, value: Cow<'_, Bson>);
    fn document(&mut self, key: &'static str, value: Cow<'_, Document>);
    /// A document kept as BSON, with its `store::approx_size`.
    fn raw_document(&mut self, key: &'static str, value: &RawDocument, approx: usize);
}

struct DocSink(Document);

impl EventSink for DocSink {
    fn token(&mut self, data: String) {
        let mut id = Document::new();
        id.insert("_data", data);
        self.0.insert("_id", id);
    }

    fn value(&mut self, key: &'static str, value: Cow<'_, Bson>) {
        self.0.insert(key, value.into_owned());
    }

    fn document(&mut self, key: &'static str, value: Cow<'_, Document>) {
        self.0.insert(key, value.into_owned());
    }

    fn raw_document(&mut self, key: &'static str, value: &RawDocument, _approx: usize) {
        self.0.insert(key, decode_raw(value));
    }
}

/// Writes the event as BSON, tracking `store::approx_size` of the
/// `Document` it stands for; `failed` once a value needs `bson`'s encoder.
#[derive(Default)]
struct RawSink {
    out: Vec<u8>,
    approx: usize,
    token: String,
    /// The `ns` written, kept for the stream's scope check.
    ns: Option<Document>,
    failed: bool,
}

impl RawSink {
    fn open(&mut self) {
        self.out.reserve(256);
        self.out.extend_from_slice(&[0u8; 4]);
        self.approx = 5;
    }

    /// The bytes, approximate size, token and `ns`.
    fn finish(mut self) -> Option<(Vec<u8>, usize, String, Option<Document>)> {
        if self.failed {
            return None;
        }
        self.out.push(0);
        let len = i32::try_from(self.out.len()).ok()?;
        self.out[..4].copy_from_slice(&len.to_le_bytes());
        Some((self.out, self.approx, self.token, self.ns))
    }
}

impl EventSink for RawSink {
    fn token(&mut self, data: String) {
        // `_id: {_data: data}` as `approx_size` and the encoder see it.
        self.approx += "_id".len() + 2 + ("_data".len() + 2 + data.len() + 5) + 5;
        let Ok(str_len) = i32::try_from(data.len() + 1) else {
            self.failed = true;
            return;
        };
        let doc_len = 4 + 1 + "_data".len() + 1 + 4 + data.len() + 1 + 1;
        self.out.push(0x03);
        self.out.extend_from_slice(b"_id\0");
        self.out.extend_from_slice(&(doc_len as i32).to_le_bytes());
        self.out.push(0x02);
        self.out.extend_from_slice(b"_data\0");
        self.out.extend_from_slice(&str_len.to_le_bytes());
        self.out.extend_from_slice(data.as_bytes());
        self.out.extend_from_slice(&[0, 0]);
        self.token = data;
    }

    fn value(&mut self, key: &'static str, value: Cow<'_, Bson>) {
        self.approx += key.len() + 2 + approx_value(&value);
        if crate::codec::encode_element(&mut self.out, key, &value).is_none() {
            self.failed = true;
        }
    }

    fn document(&mut self, key: &'static str, value: Cow<'_, Document>) {
        self.approx += key.len() + 2 + approx_size(&value);
        if crate::codec::encode_element_doc(&mut self.out, key, &value).is_none() {
            self.failed = true;
        }
        if key == "ns" {
            self.ns = Some(value.into_owned());
        }
    }

    fn raw_document(&mut self, key: &'static str, value: &RawDocument, approx: usize) {
        self.approx += key.len() + 2 + approx;
        self.out.push(0x03);
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(0);
        self.out.extend_from_slice(value.as_bytes());
    }
}

fn assemble(origin: &Origin, parts: Parts<'_>, opts: &EventOptions, ev: &mut dyn EventSink) {
    let expanded = opts.show_expanded_events;
    if let Some(to) = parts.to {
        ev.document("to", Cow::Owned(to));
    }
    if let Some((txn_number, lsid)) = origin.txn {
        ev.value("txnNumber", Cow::Borrowed(txn_number));
        ev.value("lsid", Cow::Borrowed(lsid));
    }
    let data = encode_data(
        origin.ts,
        origin.txn_op_index,
        TokenKind::Event,
        false,
        parts.document_key.as_deref(),
    );
    ev.token(data);
    ev.value(
        "operationType",
        Cow::Owned(Bson::String(parts.operation_type.to_string())),
    );
    ev.value("clusterTime", Cow::Owned(Bson::Timestamp(origin.ts)));
    if expanded {
        if let Some(uuid) = parts.uuid {
            ev.value("collectionUUID", uuid);
        }
    }
    ev.value("wallTime", Cow::Owned(Bson::DateTime(origin.wall)));
    if let Some((raw, approx)) = parts.full_document_raw {
        ev.raw_document("fullDocument", raw, approx);
    } else if let Some(full) = parts.full_document {
        ev.value("fullDocument", full);
    }
    if let Some(ns) = parts.ns {
        ev.document("ns", Cow::Owned(ns));
    }
    if let Some(key) = parts.document_key {
        ev.document("documentKey", key);
    }
    if expanded {
        if let Some(desc) = parts.operation_description {
            ev.document("operationDescription", Cow::Owned(desc));
        }
    }
    if let Some(desc) = parts.update_description {
        ev.document("updateDescription", Cow::Owned(desc));
    }
    if expanded {
        if let Some(before) = parts.state_before_change {
            ev.document("stateBeforeChange", Cow::Owned(before));
        }
    }
    if parts.before_change && opts.full_document_before_change != "off" {
        ev.value("fullDocumentBeforeChange", Cow::Owned(Bson::Null));
    }
}

/// The `invalidate` event that closes a collection stream after `drop` or
/// `rename` (or a database stream after `dropDatabase`); its token is the
/// invalidating event's token marked `fromInvalidate`.
pub fn invalidate_event(after: &ResumeToken, ts: Timestamp, wall: DateTime) -> Document {
    let token = ResumeToken {
        from_invalidate: true,
        kind: TokenKind::Event,
        fragment: None,
        ..after.clone()
    };
    let mut ev = Document::new();
    ev.insert("_id", encode(&token));
    ev.insert("operationType", "invalidate");
    ev.insert("clusterTime", ts);
    ev.insert("wallTime", wall);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::decode;
    use bson::{doc, spec::BinarySubtype, Binary};

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: i,
        }
    }

    fn uuid() -> Bson {
        Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: vec![9; 16],
        })
    }

    fn entry(op: &str, ns: &str, o: Document, o2: Option<Document>) -> Document {
        let mut e = doc! {"op": op, "ns": ns, "ui": uuid(), "o": o};
        if let Some(o2) = o2 {
            e.insert("o2", o2);
        }
        e.insert("ts", ts(1));
        e.insert("t", 1i64);
        e.insert("v", 2i64);
        e.insert("wall", DateTime::from_millis(1_700_000_000_000));
        e
    }

    fn no_lookup(_: &str, _: &Bson) -> Option<Document> {
        None
    }

    fn keys(d: &Document) -> Vec<&str> {
        d.keys().map(String::as_str).collect()
    }

    #[test]
    fn encoded_events_are_the_documents_bytes() {
        let lookup = |_: &str, id: &Bson| Some(doc! {"_id": id.clone(), "x": 1.5, "y": [1, "a"]});
        let mut txn = entry(
            "c",
            "admin.$cmd",
            doc! {"applyOps": [
                {"op": "i", "ns": "shop.a", "ui": uuid(), "o": {"_id": 1}, "o2": {"_id": 1}},
                {"op": "u", "ns": "shop.b", "ui": uuid(), "o": {"$v": 2, "diff": {"u": {"n": 2}}}, "o2": {"_id": "k"}},
                {"op": "d", "ns": "shop.a", "ui": uuid(), "o": {"_id": 1}},
            ]},
            None,
        );
        txn.insert("lsid", doc! {"id": uuid(), "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![1; 32] }});
        txn.insert("txnNumber", 3i64);
        let entries = vec![
            entry(
                "i",
                "shop.orders",
                doc! {"_id": 7, "s": "é", "n": null, "d": {"a": [1, 2.5]}},
                Some(doc! {"_id": 7}),
            ),
            entry(
                "i",
                "shop.orders",
                doc! {"_id": bson::oid::ObjectId::new()},
                None,
            ),
            entry(
                "u",
                "shop.orders",
                doc! {"$v": 2, "diff": {"u": {"a": 1}, "d": {"b": false}}},
                Some(doc! {"_id": 7}),
            ),
            entry(
                "u",
                "shop.orders",
                doc! {"$set": {"a": 1}, "$unset": {"b": true}},
                Some(doc! {"_id": 7}),
            ),
            entry(
                "u",
                "shop.orders",
                doc! {"_id": 7, "a": 2},
                Some(doc! {"_id": 7}),
            ),
            entry("d", "shop.orders", doc! {"_id": "x"}, None),
            entry(
                "i",
                "shop.orders",
                doc! {"_id": 1, "r": bson::Regex { pattern: "a".into(), options: "i".into() }},
                None,
            ),
            entry("c", "shop.$cmd", doc! {"drop": "orders"}, None),
            entry(
                "c",
                "shop.$cmd",
                doc! {"renameCollection": "shop.a", "to": "shop.b", "stayTemp": false},
                None,
            ),
            entry("c", "shop.$cmd", doc! {"dropDatabase": 1}, None),
            entry(
                "c",
                "shop.$cmd",
                doc! {"create": "c", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}},
                None,
            ),
            entry(
                "c",
                "shop.$cmd",
                doc! {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"},
                None,
            ),
            entry(
                "c",
                "shop.$cmd",
                doc! {"collMod": "c", "validationLevel": "off"},
                Some(doc! {"collectionOptions_old": {"x": 1}}),
            ),
            txn,
        ];
        let mut all = Vec::new();
        for fd in ["default", "updateLookup"] {
            for fdbc in ["off", "whenAvailable"] {
                for expanded in [false, true] {
                    all.push(EventOptions {
                        full_document: fd.into(),
                        full_document_before_change: fdbc.into(),
                        show_expanded_events: expanded,
                    });
                }
            }
        }
        let mut checked = 0;
        for e in &entries {
            for opts in &all {
                let docs = events_from_oplog_entry(e, &lookup, opts);
                let Some(encoded) = encoded_events_from_oplog_entry(e, &lookup, opts) else {
                    // Only the regex document is left to the `bson` crate.
                    assert!(e.get_document("o").unwrap().contains_key("r"));
                    continue;
                };
                assert_eq!(docs.len(), encoded.len());
                for (d, enc) in docs.iter().zip(&encoded) {
                    assert_eq!(enc.bytes, bson::to_vec(d).unwrap());
                    assert_eq!(enc.approx_size, approx_size(d));
                    assert_eq!(
                        enc.token,
                        d.get_document("_id").unwrap().get_str("_data").unwrap()
                    );
                    assert_eq!(enc.operation_type, d.get_str("operationType").unwrap());
                    assert_eq!(enc.ns.as_ref(), d.get_document("ns").ok());
                    checked += 1;
                }
            }
        }
        assert!(checked > 80, "{checked}");
    }

    #[test]
    fn insert_event_shape() {
        let e = entry(
            "i",
            "shop.orders",
            doc! {"_id": 7, "total": 3},
            Some(doc! {"_id": 7}),
        );
        let evs = events_from_oplog_entry(&e, &no_lookup, &EventOptions::default());
        assert_eq!(evs.len(), 1);
        let ev = &evs[0];
        assert_eq!(
            keys(ev),
            vec![
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "fullDocument",
                "ns",
                "documentKey"
            ]
        );
        assert_eq!(ev.get_str("operationType").unwrap(), "insert");
        assert_eq!(
            ev.get_document("ns").unwrap(),
            &doc! {"db": "shop", "coll": "orders"}
        );
        assert_eq!(
            ev.get_document("fullDocument").unwrap(),
            &doc! {"_id": 7, "total": 3}
        );
        let tok = decode(ev.get_document("_id").unwrap()).unwrap();
        assert_eq!(tok.ts, ts(1));
        assert_eq!(tok.kind, TokenKind::Event);
        assert_eq!(tok.document_key, Some(Bson::Document(doc! {"_id": 7})));
        // Without o2 (pre-5.3 entries) the key comes from the document.
        let e = entry("i", "shop.orders", doc! {"_id": 8}, None);
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(ev.get_document("documentKey").unwrap(), &doc! {"_id": 8});
    }

    #[test]
    fn update_event_with_and_without_lookup() {
        let o = doc! {"$v": 2, "diff": {"u": {"a": 5}, "sarr": {"a": true, "l": 1}}};
        let e = entry("u", "shop.orders", o, Some(doc! {"_id": 7}));
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(
            keys(ev),
            vec![
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "ns",
                "documentKey",
                "updateDescription"
            ]
        );
        assert_eq!(
            ev.get_document("updateDescription").unwrap(),
            &doc! {"updatedFields": {"a": 5}, "removedFields": [], "truncatedArrays": [{"field": "arr", "newSize": 1}]}
        );
        let lookup = |ns: &str, id: &Bson| {
            (ns == "shop.orders" && id == &Bson::Int32(7)).then(|| doc! {"_id": 7, "a": 5})
        };
        let opts = EventOptions {
            full_document: "updateLookup".into(),
            ..EventOptions::default()
        };
        let ev = &events_from_oplog_entry(&e, &lookup, &opts)[0];
        assert_eq!(
            keys(ev),
            vec![
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "fullDocument",
                "ns",
                "documentKey",
                "updateDescription"
            ]
        );
        assert_eq!(
            ev.get_document("fullDocument").unwrap(),
            &doc! {"_id": 7, "a": 5}
        );
        let ev = &events_from_oplog_entry(&e, &no_lookup, &opts)[0];
        assert_eq!(ev.get("fullDocument"), Some(&Bson::Null));
    }

    #[test]
    fn replace_delete_and_v1_updates() {
        let e = entry(
            "u",
            "shop.orders",
            doc! {"_id": 7, "b": 1},
            Some(doc! {"_id": 7}),
        );
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(ev.get_str("operationType").unwrap(), "replace");
        assert_eq!(
            ev.get_document("fullDocument").unwrap(),
            &doc! {"_id": 7, "b": 1}
        );
        let e = entry("d", "shop.orders", doc! {"_id": 7}, None);
        let opts = EventOptions {
            full_document_before_change: "whenAvailable".into(),
            ..EventOptions::default()
        };
        let ev = &events_from_oplog_entry(&e, &no_lookup, &opts)[0];
        assert_eq!(
            keys(ev),
            vec![
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "ns",
                "documentKey",
                "fullDocumentBeforeChange"
            ]
        );
        assert_eq!(ev.get_str("operationType").unwrap(), "delete");
        let e = entry(
            "u",
            "shop.orders",
            doc! {"$v": 1, "$set": {"a": 1}, "$unset": {"b": true}},
            Some(doc! {"_id": 7}),
        );
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(
            ev.get_document("updateDescription").unwrap(),
            &doc! {"updatedFields": {"a": 1}, "removedFields": ["b"], "truncatedArrays": []}
        );
    }

    #[test]
    fn transactions_unwind_with_txn_op_index() {
        let ops = vec![
            Bson::Document(doc! {"op": "i", "ns": "shop.a", "ui": uuid(), "o": {"_id": 1}}),
            Bson::Document(doc! {"op": "d", "ns": "shop.b", "ui": uuid(), "o": {"_id": 2}}),
            Bson::Document(doc! {"op": "i", "ns": "config.transactions", "o": {"_id": 3}}),
        ];
        let mut e = entry("c", "admin.$cmd", doc! {"applyOps": ops}, None);
        e.remove("ui");
        let lsid = doc! {"id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![1; 16] }, "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![2; 32] }};
        e.insert("lsid", lsid.clone());
        e.insert("txnNumber", 4i64);
        let evs = events_from_oplog_entry(&e, &no_lookup, &EventOptions::default());
        assert_eq!(evs.len(), 2);
        assert_eq!(keys(&evs[0])[..3], ["txnNumber", "lsid", "_id"]);
        assert_eq!(evs[0].get_i64("txnNumber").unwrap(), 4);
        assert_eq!(evs[1].get_document("lsid").unwrap(), &lsid);
        let t0 = decode(evs[0].get_document("_id").unwrap()).unwrap();
        let t1 = decode(evs[1].get_document("_id").unwrap()).unwrap();
        assert_eq!((t0.txn_op_index, t1.txn_op_index), (0, 1));
        assert_eq!(t0.ts, t1.ts);
        let d0 = evs[0]
            .get_document("_id")
            .unwrap()
            .get_str("_data")
            .unwrap();
        let d1 = evs[1]
            .get_document("_id")
            .unwrap()
            .get_str("_data")
            .unwrap();
        assert!(d0 < d1);
        // Partial transaction entries wait for the final one.
        e.insert("partialTxn", true);
        assert!(events_from_oplog_entry(&e, &no_lookup, &EventOptions::default()).is_empty());
    }

    #[test]
    fn ddl_events() {
        let opts = EventOptions::default();
        let e = entry("c", "shop.$cmd", doc! {"drop": "orders"}, None);
        let ev = &events_from_oplog_entry(&e, &no_lookup, &opts)[0];
        assert_eq!(
            keys(ev),
            vec!["_id", "operationType", "clusterTime", "wallTime", "ns"]
        );
        assert_eq!(
            ev.get_document("ns").unwrap(),
            &doc! {"db": "shop", "coll": "orders"}
        );
        let e = entry(
            "c",
            "shop.$cmd",
            doc! {"renameCollection": "shop.a", "to": "shop.b", "stayTemp": false, "dropTarget": false},
            None,
        );
        let ev = &events_from_oplog_entry(&e, &no_lookup, &opts)[0];
        assert_eq!(
            keys(ev),
            vec![
                "to",
                "_id",
                "operationType",
                "clusterTime",
                "wallTime",
                "ns"
            ]
        );
        assert_eq!(
            ev.get_document("to").unwrap(),
            &doc! {"db": "shop", "coll": "b"}
        );
        let expanded = EventOptions {
            show_expanded_events: true,
            ..EventOptions::default()
        };
        let ev = &events_from_oplog_entry(&e, &no_lookup, &expanded)[0];
        assert_eq!(
            ev.get_document("operationDescription").unwrap(),
            &doc! {"to": {"db": "shop", "coll": "b"}, "dropTarget": false}
        );
        assert_eq!(ev.get("collectionUUID"), Some(&uuid()));
        let e = entry("c", "shop.$cmd", doc! {"dropDatabase": 1}, None);
        let ev = &events_from_oplog_entry(&e, &no_lookup, &expanded)[0];
        assert_eq!(ev.get_document("ns").unwrap(), &doc! {"db": "shop"});
        assert!(!ev.contains_key("collectionUUID"));
        let create = entry(
            "c",
            "shop.$cmd",
            doc! {"create": "c", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}},
            None,
        );
        assert!(events_from_oplog_entry(&create, &no_lookup, &opts).is_empty());
        let ev = &events_from_oplog_entry(&create, &no_lookup, &expanded)[0];
        assert_eq!(ev.get_str("operationType").unwrap(), "create");
        assert_eq!(
            ev.get_document("operationDescription").unwrap(),
            &doc! {"idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
        );
        let ci = entry(
            "c",
            "shop.$cmd",
            doc! {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"},
            None,
        );
        let ev = &events_from_oplog_entry(&ci, &no_lookup, &expanded)[0];
        assert_eq!(
            ev.get_document("operationDescription").unwrap(),
            &doc! {"indexes": [{"v": 2, "key": {"a": 1}, "name": "a_1"}]}
        );
        let cm = entry(
            "c",
            "shop.$cmd",
            doc! {"collMod": "c", "validationLevel": "off"},
            Some(doc! {"collectionOptions_old": {"uuid": uuid()}}),
        );
        let ev = &events_from_oplog_entry(&cm, &no_lookup, &expanded)[0];
        assert_eq!(ev.get_str("operationType").unwrap(), "modify");
        assert!(ev.contains_key("stateBeforeChange"));
    }

    #[test]
    fn entries_without_events() {
        let opts = EventOptions::default();
        let noop = entry("n", "", doc! {"msg": "periodic noop"}, None);
        assert!(events_from_oplog_entry(&noop, &no_lookup, &opts).is_empty());
        let mut migrated = entry("i", "shop.a", doc! {"_id": 1}, None);
        migrated.insert("fromMigrate", true);
        assert!(events_from_oplog_entry(&migrated, &no_lookup, &opts).is_empty());
        let internal = entry("i", "config.system.sessions", doc! {"_id": 1}, None);
        assert!(events_from_oplog_entry(&internal, &no_lookup, &opts).is_empty());
        let commit = entry("c", "admin.$cmd", doc! {"commitTransaction": 1}, None);
        assert!(events_from_oplog_entry(&commit, &no_lookup, &opts).is_empty());
    }

    #[test]
    fn invalidate_follows_its_cause() {
        let e = entry("c", "shop.$cmd", doc! {"drop": "orders"}, None);
        let drop = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        let after = decode(drop.get_document("_id").unwrap()).unwrap();
        let inv = invalidate_event(&after, ts(1), DateTime::from_millis(5));
        assert_eq!(
            keys(&inv),
            vec!["_id", "operationType", "clusterTime", "wallTime"]
        );
        let tok = decode(inv.get_document("_id").unwrap()).unwrap();
        assert!(tok.from_invalidate);
        let d_drop = drop.get_document("_id").unwrap().get_str("_data").unwrap();
        let d_inv = inv.get_document("_id").unwrap().get_str("_data").unwrap();
        assert!(d_drop < d_inv);
    }

    #[test]
    fn spec_test_array_truncation() {
        // change-streams.json "Test array truncation": a pipeline update that
        // shortens an array reports only truncatedArrays.
        let pre = doc! {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3]};
        let spec = crate::update::UpdateSpec::parse(
            &bson::bson!([{"$set": {"array": ["foo", {"a": "bar"}]}}]),
        )
        .unwrap();
        let post = crate::update::apply(&spec, &pre).unwrap();
        let o = crate::diff::update_oplog_object(&spec, &pre, &post).unwrap();
        let e = entry("u", "database0.collection0", o, Some(doc! {"_id": 1}));
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(ev.get_str("operationType").unwrap(), "update");
        assert_eq!(
            ev.get_document("updateDescription").unwrap(),
            &doc! {"updatedFields": {}, "removedFields": [], "truncatedArrays": [{"field": "array", "newSize": 2}]}
        );
    }

    #[test]
    fn spec_test_insert_update_replace_delete() {
        let pre = doc! {"_id": 1, "x": 1};
        let spec =
            crate::update::UpdateSpec::parse(&Bson::Document(doc! {"$set": {"x": 2}})).unwrap();
        let post = crate::update::apply(&spec, &pre).unwrap();
        let o = crate::diff::update_oplog_object(&spec, &pre, &post).unwrap();
        let e = entry("u", "database0.collection0", o, Some(doc! {"_id": 1}));
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(
            ev.get_document("updateDescription").unwrap(),
            &doc! {"updatedFields": {"x": 2}, "removedFields": [], "truncatedArrays": []}
        );
        let spec = crate::update::UpdateSpec::parse(&Bson::Document(doc! {"x": 3})).unwrap();
        let replaced = crate::update::apply(&spec, &post).unwrap();
        let o = crate::diff::update_oplog_object(&spec, &post, &replaced).unwrap();
        let e = entry("u", "database0.collection0", o, Some(doc! {"_id": 1}));
        let ev = &events_from_oplog_entry(&e, &no_lookup, &EventOptions::default())[0];
        assert_eq!(ev.get_str("operationType").unwrap(), "replace");
        assert_eq!(
            ev.get_document("fullDocument").unwrap(),
            &doc! {"_id": 1, "x": 3}
        );
    }
}
