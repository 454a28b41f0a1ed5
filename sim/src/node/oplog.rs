//! The simulated `local.oplog.rs`: a capped, append-only sequence of
//! `Arc`-shared entries with real MongoDB 7 shapes, and the optime clock.
//!
//! Every entry has a sequence number (`seq`, dense and increasing) so that
//! cursors remember a position as an integer and find it again in O(1) even
//! after the front of the oplog was truncated.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf, Timestamp};

use crate::codec::canonical::RawInsert;
use crate::node::clock::ClusterClock;
use crate::node::store::{approx_value, decode_raw};
use crate::query::{Fields, Filter};

/// The election term this single-member set pretends to be in.
pub const TERM: i64 = 1;

/// One oplog entry, shared between the oplog, tail cursors and change streams.
///
/// Its fields are a plain list in the server's order, not a `Document`:
/// building a ~13-key `IndexMap` (owned keys, growth, rehashing, moving
/// `stmtId` and `prevOpTime` to their places) was over half of an insert.
/// Readers go through [`Fields`]; the few that need a real `Document`
/// (projections, `find` on the oplog, transaction reassembly) build one.
#[derive(Debug)]
pub struct OplogEntry {
    pub seq: u64,
    pub ts: Timestamp,
    /// The entry's `ns`, kept apart so streams can skip entries cheaply.
    pub ns: String,
    fields: Vec<(Cow<'static, str>, Bson)>,
    /// An insert's `o` as BSON bytes (its slot in `fields` holds `Null`):
    /// the collection stores no other copy of the document, and bytes cost
    /// a seventh of the memory of a `Document` and are copied straight into
    /// replies, change events and tails.
    raw_o: Option<RawDocumentBuf>,
    /// `store::approx_size` of `raw_o`'s document, computed once from the
    /// `Document` (walking the bytes means parsing them again).
    raw_o_approx: usize,
    /// Images by `txnOpIndex` (index 0 for a plain entry).
    pub images: Vec<Option<Box<Images>>>,
}

impl OplogEntry {
    /// The fields in order, as they are encoded; an insert's `o` is `Null`
    /// here and its bytes are [`OplogEntry::raw_o`].
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Bson)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// An insert's document, as BSON.
    pub fn raw_o(&self) -> Option<&RawDocument> {
        self.raw_o.as_deref()
    }

    /// `store::approx_size` of the document [`OplogEntry::raw_o`] encodes.
    pub fn raw_o_approx(&self) -> usize {
        self.raw_o_approx
    }

    /// `store::approx_size` of the entry as a `Document`.
    pub fn approx_size(&self) -> usize {
        self.fields
            .iter()
            .map(|(k, v)| {
                k.len()
                    + 2
                    + match (k.as_ref(), &self.raw_o) {
                        ("o", Some(_)) => self.raw_o_approx,
                        _ => approx_value(v),
                    }
            })
            .sum::<usize>()
            + 5
    }

    /// Whether `filter` matches the entry (as its `Document` would).
    pub fn matches(&self, filter: &Filter) -> bool {
        if self.raw_o.is_some() && filter.mentions("o") {
            return filter.matches(self.to_document().as_ref());
        }
        filter.matches(self)
    }
}

impl Fields for OplogEntry {
    fn field(&self, key: &str) -> Option<&Bson> {
        if key == "o" && self.raw_o.is_some() {
            return None;
        }
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn raw_doc_field(&self, key: &str) -> Option<(&RawDocument, usize)> {
        let raw = self.raw_o().filter(|_| key == "o")?;
        Some((raw, self.raw_o_approx))
    }

    fn to_document(&self) -> Cow<'_, Document> {
        Cow::Owned(
            self.fields
                .iter()
                .map(|(k, v)| {
                    let v = match (k.as_ref(), &self.raw_o) {
                        ("o", Some(raw)) => Bson::Document(decode_raw(raw)),
                        _ => v.clone(),
                    };
                    (k.to_string(), v)
                })
                .collect(),
        )
    }
}

/// What a write wants logged; the oplog adds `ts`, `t`, `v` and `wall`.
#[derive(Debug, Clone)]
pub struct OplogOp {
    pub op: &'static str,
    pub ns: String,
    pub ui: Option<bson::Uuid>,
    pub o: Document,
    pub o2: Option<Document>,
    /// Pre/post images, kept only for collections with
    /// `changeStreamPreAndPostImages` enabled; never written into the entry.
    pub images: Option<Box<Images>>,
}

/// The stored pre- and post-image of one write (MongoDB keeps them in
/// `config.system.preimages`; here they ride along with the entry).
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub pre: Option<Document>,
    pub post: Option<Document>,
}

impl OplogOp {
    /// The entry as it appears inside an `applyOps` array.
    pub fn to_inner_document(&self) -> Document {
        let mut d = doc! { "op": self.op, "ns": self.ns.clone() };
        if let Some(ui) = self.ui {
            d.insert("ui", ui);
        }
        d.insert("o", self.o.clone());
        if let Some(o2) = &self.o2 {
            d.insert("o2", o2.clone());
        }
        d
    }
}

/// An entry's fields other than `o` and the ones the oplog adds.
struct EntryHead {
    op: &'static str,
    ns: String,
    ui: Option<bson::Uuid>,
    o2: Option<Document>,
}

/// An entry's `o`: an insert's document as BSON and its `approx_size`, or
/// anything else as a `Document`.
enum EntryO {
    Raw(RawDocumentBuf, usize),
    Doc(Document),
}

pub struct Oplog {
    entries: VecDeque<Arc<OplogEntry>>,
    /// `seq` of the next entry to be appended.
    next_seq: u64,
    max_entries: usize,
    last_ts: Timestamp,
    /// Where optimes come from: shared by the nodes of a sharded cluster.
    clock: Arc<ClusterClock>,
    /// A time already drawn that the next entries take (a cross-shard commit, see
    /// `txn::commit_together`).
    pinned: Option<Timestamp>,
}

impl Oplog {
    #[cfg(test)]
    pub fn new(max_entries: usize) -> Self {
        Self::with_clock(max_entries, Arc::default())
    }

    /// An oplog drawing its optimes from `clock` (a shard of a cluster).
    pub fn with_clock(max_entries: usize, clock: Arc<ClusterClock>) -> Self {
        let mut oplog = Self {
            clock,
            pinned: None,
            entries: VecDeque::new(),
            next_seq: 1,
            max_entries: max_entries.max(1),
            last_ts: Timestamp {
                time: 0,
                increment: 0,
            },
        };
        // A real primary's oplog starts with this no-op, so it is never empty
        // and every reply has a clusterTime.
        oplog.append_with_images(
            OplogOp {
                op: "n",
                ns: String::new(),
                ui: None,
                o: doc! {"msg": "initiating set"},
                o2: None,
                images: None,
            },
            None,
            Vec::new(),
        );
        oplog
    }

    /// Makes the next entries take `ts` (drawn from the clock by the caller), or ends that.
    pub fn pin(&mut self, ts: Option<Timestamp>) {
        self.pinned = ts;
    }

    fn next_ts(&mut self) -> Timestamp {
        self.last_ts = match self.pinned {
            Some(ts) => ts,
            None => self.clock.tick(),
        };
        self.last_ts
    }

    /// Appends an entry built from `op`, plus `extra` fields (lsid, txnNumber...)
    /// placed before `op` like the server does.
    pub fn append(&mut self, mut op: OplogOp, extra: Option<Document>) -> Arc<OplogEntry> {
        let images = vec![op.images.take()];
        self.append_with_images(op, extra, images)
    }

    /// Like `append`, for an `applyOps` entry whose members carry images.
    pub fn append_with_images(
        &mut self,
        op: OplogOp,
        extra: Option<Document>,
        images: Vec<Option<Box<Images>>>,
    ) -> Arc<OplogEntry> {
        let o = match op.op {
            "i" => match encode_raw(&op.o) {
                Some(raw) => EntryO::Raw(raw, crate::node::store::approx_size(&op.o)),
                None => EntryO::Doc(op.o),
            },
            _ => EntryO::Doc(op.o),
        };
        let head = EntryHead {
            op: op.op,
            ns: op.ns,
            ui: op.ui,
            o2: op.o2,
        };
        self.push(head, o, extra, images)
    }

    /// Logs what `append` logs for an insert of `raw`'s document into `ns`
    /// (`ui`), without decoding it: its bytes become the entry's `o`.
    pub fn append_raw_insert(
        &mut self,
        ns: String,
        ui: bson::Uuid,
        id: Bson,
        raw: RawInsert<'_>,
        extra: Option<Document>,
    ) -> Arc<OplogEntry> {
        let head = EntryHead {
            op: "i",
            ns,
            ui: Some(ui),
            o2: Some(doc! {"_id": id}),
        };
        let o = match RawDocumentBuf::from_bytes(raw.bytes.to_vec()) {
            Ok(bytes) => EntryO::Raw(bytes, raw.approx),
            // Not reached: `RawInsert` bytes are a whole valid document.
            Err(_) => match encode_raw(&raw.to_document()) {
                Some(bytes) => EntryO::Raw(bytes, raw.approx),
                None => EntryO::Doc(raw.to_document()),
            },
        };
        self.push(head, o, extra, vec![None])
    }

    fn push(
        &mut self,
        head: EntryHead,
        o: EntryO,
        extra: Option<Document>,
        images: Vec<Option<Box<Images>>>,
    ) -> Arc<OplogEntry> {
        // mongod's order: session fields, the operation, `stmtId`, the
        // optime, then `prevOpTime`.
        let mut stmt_id = None;
        let mut prev_op_time = None;
        let mut fields: Vec<(Cow<'static, str>, Bson)> =
            Vec::with_capacity(9 + extra.as_ref().map_or(0, Document::len));
        for (k, v) in extra.into_iter().flatten() {
            match k.as_str() {
                "stmtId" => stmt_id = Some(v),
                "prevOpTime" => prev_op_time = Some(v),
                "lsid" => fields.push((Cow::Borrowed("lsid"), v)),
                "txnNumber" => fields.push((Cow::Borrowed("txnNumber"), v)),
                _ => fields.push((Cow::Owned(k), v)),
            }
        }
        fields.push((Cow::Borrowed("op"), Bson::String(head.op.to_string())));
        fields.push((Cow::Borrowed("ns"), Bson::String(head.ns.clone())));
        if let Some(ui) = head.ui {
            fields.push((Cow::Borrowed("ui"), Bson::from(ui)));
        }
        let (raw_o, raw_o_approx) = match o {
            EntryO::Raw(raw, approx) => {
                fields.push((Cow::Borrowed("o"), Bson::Null));
                (Some(raw), approx)
            }
            EntryO::Doc(o) => {
                fields.push((Cow::Borrowed("o"), Bson::Document(o)));
                (None, 0)
            }
        };
        if let Some(o2) = head.o2 {
            fields.push((Cow::Borrowed("o2"), Bson::Document(o2)));
        }
        if let Some(stmt) = stmt_id {
            fields.push((Cow::Borrowed("stmtId"), stmt));
        }
        let ts = self.next_ts();
        fields.push((Cow::Borrowed("ts"), Bson::Timestamp(ts)));
        fields.push((Cow::Borrowed("t"), Bson::Int64(TERM)));
        fields.push((Cow::Borrowed("v"), Bson::Int64(2)));
        fields.push((Cow::Borrowed("wall"), Bson::DateTime(bson::DateTime::now())));
        if let Some(prev) = prev_op_time {
            fields.push((Cow::Borrowed("prevOpTime"), prev));
        }
        let entry = Arc::new(OplogEntry {
            seq: self.next_seq,
            ts,
            ns: head.ns,
            fields,
            raw_o,
            raw_o_approx,
            images,
        });
        self.next_seq += 1;
        self.entries.push_back(entry.clone());
        while self.entries.len() > self.max_entries {
            self.entries.pop_front();
        }
        entry
    }

    /// The latest optime of the cluster: this node's own latest entry, or a later time another
    /// node drew (this node's next entry will be later still, see `clock`).
    pub fn last_ts(&self) -> Timestamp {
        self.clock.now()
    }

    /// The time of this oplog's newest entry (`last_ts` is the cluster's, which another shard
    /// may have moved since).
    pub fn last_entry_ts(&self) -> Timestamp {
        self.last_ts
    }

    /// `seq` of the oldest entry still present.
    pub fn first_seq(&self) -> u64 {
        self.entries.front().map(|e| e.seq).unwrap_or(self.next_seq)
    }

    /// `seq` the next appended entry will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn oldest_ts(&self) -> Timestamp {
        self.entries.front().map(|e| e.ts).unwrap_or(self.last_ts)
    }

    /// Up to `max` entries starting at `seq` (clamped to what is present).
    pub fn entries_from(&self, seq: u64, max: usize) -> Vec<Arc<OplogEntry>> {
        let first = self.first_seq();
        let start = seq.max(first);
        let idx = (start - first) as usize;
        self.entries.iter().skip(idx).take(max).cloned().collect()
    }

    /// The first `seq` whose entry has `ts >= ts` (or `next_seq` when none).
    pub fn seq_at_or_after(&self, ts: Timestamp) -> u64 {
        let idx = self.entries.partition_point(|e| cmp_ts(e.ts, ts).is_lt());
        self.first_seq() + idx as u64
    }

    /// Whether an entry with exactly this timestamp is present.
    pub fn contains_ts(&self, ts: Timestamp) -> bool {
        let seq = self.seq_at_or_after(ts);
        self.entries_from(seq, 1)
            .first()
            .is_some_and(|e| e.ts == ts)
    }
}

/// `doc` as BSON bytes, or `None` when it cannot be encoded (a key with a
/// NUL, which the insert path rejects before it gets here).
fn encode_raw(doc: &Document) -> Option<RawDocumentBuf> {
    let mut bytes = Vec::with_capacity(crate::node::store::approx_size(doc));
    if crate::codec::encode_document(&mut bytes, doc).is_none() {
        bytes.clear();
        doc.to_writer(&mut bytes).ok()?;
    }
    RawDocumentBuf::from_bytes(bytes).ok()
}

pub fn cmp_ts(a: Timestamp, b: Timestamp) -> std::cmp::Ordering {
    (a.time, a.increment).cmp(&(b.time, b.increment))
}

/// The timestamp one tick after `ts`.
pub fn ts_after(ts: Timestamp) -> Timestamp {
    Timestamp {
        time: ts.time,
        increment: ts.increment.wrapping_add(1),
    }
}

/// `{ts, t}` as used in `prevOpTime`, `lastWrite.opTime`.
pub fn optime(ts: Timestamp) -> Bson {
    Bson::Document(doc! {"ts": ts, "t": TERM})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(n: i32) -> OplogOp {
        OplogOp {
            op: "i",
            ns: "d.c".into(),
            ui: None,
            o: doc! {"_id": n},
            o2: None,
            images: None,
        }
    }

    #[test]
    fn capped_oplog_keeps_the_newest_and_seq_lookups_still_work() {
        let mut log = Oplog::new(3);
        for n in 0..5 {
            log.append(insert(n), None);
        }
        assert_eq!(log.first_seq(), 4);
        let got = log.entries_from(5, 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].raw_o().unwrap().get_i32("_id").ok(), Some(3));
    }

    /// The order and values `Oplog::append` used to produce by building a
    /// `Document` and moving `stmtId` and `prevOpTime` into place.
    #[test]
    fn fields_are_in_the_servers_order() {
        let mut log = Oplog::new(10);
        let mut op = insert(7);
        op.ui = Some(bson::Uuid::new());
        op.o2 = Some(doc! {"_id": 7});
        let extra = doc! {
            "lsid": {"id": 1}, "txnNumber": 3i64, "stmtId": 0,
            "prevOpTime": {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64},
        };
        let e = log.append(op, Some(extra));
        let keys: Vec<&str> = e.fields().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "lsid",
                "txnNumber",
                "op",
                "ns",
                "ui",
                "o",
                "o2",
                "stmtId",
                "ts",
                "t",
                "v",
                "wall",
                "prevOpTime"
            ]
        );
        let d = e.to_document();
        assert_eq!(e.approx_size(), crate::node::store::approx_size(&d));
        assert_eq!(d.get_str("op"), Ok("i"));
        assert_eq!(d.get_timestamp("ts"), Ok(e.ts));
        let first = log.entries_from(0, 1);
        let keys: Vec<&str> = first[0].fields().map(|(k, _)| k).collect();
        assert_eq!(keys, ["op", "ns", "o", "ts", "t", "v", "wall"]);
    }

    #[test]
    fn an_insert_keeps_its_document_as_bson_and_reads_like_a_document() {
        use crate::change_event::{
            encoded_events_from_oplog_entry, events_from_oplog_entry, EventOptions,
        };
        let mut log = Oplog::new(10);
        let mut op = insert(7);
        op.o = doc! {
            "_id": 7, "s": "x", "a": [1, {"b": 2.5}],
            "d": Bson::Decimal128("1.10".parse().unwrap()),
        };
        let e = log.append(op.clone(), None);
        assert!(e.raw_o().is_some());
        let d = e.to_document();
        assert_eq!(d.get_document("o").unwrap(), &op.o);
        assert_eq!(e.approx_size(), crate::node::store::approx_size(&d));
        for (filter, want) in [
            (doc! {"o.a.b": 2.5}, true),
            (doc! {"o.s": "y"}, false),
            (doc! {"o": {"$exists": true}}, true),
            (doc! {"ns": "d.c", "op": "i"}, true),
        ] {
            let f = Filter::parse(&filter).unwrap();
            assert_eq!(e.matches(&f), want, "{filter}");
            assert_eq!(f.matches(d.as_ref()), want, "{filter}");
        }
        let opts = EventOptions::default();
        let no_lookup = |_: &str, _: &Bson| None;
        let from_entry = events_from_oplog_entry(e.as_ref(), &no_lookup, &opts);
        let from_doc = events_from_oplog_entry(d.as_ref(), &no_lookup, &opts);
        assert_eq!(from_entry, from_doc);
        let encoded = encoded_events_from_oplog_entry(e.as_ref(), &no_lookup, &opts).unwrap();
        assert_eq!(encoded[0].bytes, bson::to_vec(&from_doc[0]).unwrap());
        assert_eq!(
            encoded[0].approx_size,
            crate::node::store::approx_size(&from_doc[0])
        );
    }

    #[test]
    fn timestamps_strictly_increase_and_are_searchable() {
        let mut log = Oplog::new(100);
        let a = log.append(insert(1), None);
        let b = log.append(insert(2), None);
        assert!(cmp_ts(a.ts, b.ts).is_lt());
        assert_eq!(log.seq_at_or_after(b.ts), b.seq);
        assert!(log.contains_ts(a.ts));
        assert!(!log.contains_ts(ts_after(b.ts)));
    }
}
