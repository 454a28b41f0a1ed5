//! The simulated `local.oplog.rs`: a capped, append-only sequence of
//! `Arc`-shared entries with real MongoDB 7 shapes, and the optime clock.
//!
//! Every entry has a sequence number (`seq`, dense and increasing) so that
//! cursors remember a position as an integer and find it again in O(1) even
//! after the front of the oplog was truncated.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::{doc, Bson, Document, Timestamp};

/// The election term this single-member set pretends to be in.
pub const TERM: i64 = 1;

/// One oplog entry, shared between the oplog, tail cursors and change streams.
#[derive(Debug)]
pub struct OplogEntry {
    pub seq: u64,
    pub ts: Timestamp,
    /// The entry's `ns`, kept outside `doc` so streams can skip entries cheaply.
    pub ns: String,
    pub doc: Document,
    /// Images by `txnOpIndex` (index 0 for a plain entry).
    pub images: Vec<Option<Box<Images>>>,
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

pub struct Oplog {
    entries: VecDeque<Arc<OplogEntry>>,
    /// `seq` of the next entry to be appended.
    next_seq: u64,
    max_entries: usize,
    last_ts: Timestamp,
}

impl Oplog {
    pub fn new(max_entries: usize) -> Self {
        let mut oplog = Self {
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
        oplog.append_raw(
            doc! {"op": "n", "ns": "", "o": {"msg": "initiating set"}},
            String::new(),
            Vec::new(),
        );
        oplog
    }

    /// The next optime: wall-clock seconds, increment restarting each second.
    fn next_ts(&mut self) -> Timestamp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let ts = if now > self.last_ts.time {
            Timestamp {
                time: now,
                increment: 1,
            }
        } else {
            Timestamp {
                time: self.last_ts.time,
                increment: self.last_ts.increment + 1,
            }
        };
        self.last_ts = ts;
        ts
    }

    /// Appends an entry built from `op`, plus `extra` fields (lsid, txnNumber...)
    /// placed before `op` like the server does.
    pub fn append(&mut self, op: OplogOp, extra: Option<Document>) -> Arc<OplogEntry> {
        let images = vec![op.images.clone()];
        self.append_with_images(op, extra, images)
    }

    /// Like `append`, for an `applyOps` entry whose members carry images.
    pub fn append_with_images(
        &mut self,
        op: OplogOp,
        extra: Option<Document>,
        images: Vec<Option<Box<Images>>>,
    ) -> Arc<OplogEntry> {
        let mut d = extra.unwrap_or_default();
        d.insert("op", op.op);
        d.insert("ns", op.ns.clone());
        if let Some(ui) = op.ui {
            d.insert("ui", ui);
        }
        d.insert("o", op.o);
        if let Some(o2) = op.o2 {
            d.insert("o2", o2);
        }
        // A retryable write's stmtId follows the operation, as in mongod.
        if let Some(stmt) = d.remove("stmtId") {
            d.insert("stmtId", stmt);
        }
        self.append_raw(d, op.ns, images)
    }

    fn append_raw(
        &mut self,
        mut d: Document,
        ns: String,
        images: Vec<Option<Box<Images>>>,
    ) -> Arc<OplogEntry> {
        let ts = self.next_ts();
        d.insert("ts", ts);
        d.insert("t", TERM);
        d.insert("v", 2i64);
        d.insert("wall", bson::DateTime::now());
        let prev = d.remove("prevOpTime");
        if let Some(prev) = prev {
            d.insert("prevOpTime", prev);
        }
        let entry = Arc::new(OplogEntry {
            seq: self.next_seq,
            ts,
            ns,
            doc: d,
            images,
        });
        self.next_seq += 1;
        self.entries.push_back(entry.clone());
        while self.entries.len() > self.max_entries {
            self.entries.pop_front();
        }
        entry
    }

    pub fn last_ts(&self) -> Timestamp {
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
        assert_eq!(got[0].doc.get_document("o").unwrap().get_i32("_id"), Ok(3));
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
