//! TEMPORARY stand-ins for sim-ops's pure modules that have not landed yet;
//! removed as soon as the real ones exist.
#![allow(dead_code, unused_variables)]

pub mod diff {
    use bson::{doc, Document};
    pub fn compute_v2_diff(pre: &Document, post: &Document) -> Option<Document> {
        if pre == post {
            return None;
        }
        let mut u = Document::new();
        let mut i = Document::new();
        let mut d = Document::new();
        for (k, v) in post {
            match pre.get(k) {
                Some(old) if old == v => {}
                Some(_) => {
                    u.insert(k.clone(), v.clone());
                }
                None => {
                    i.insert(k.clone(), v.clone());
                }
            }
        }
        for k in pre.keys() {
            if !post.contains_key(k) {
                d.insert(k.clone(), false);
            }
        }
        let mut out = doc! {};
        if !d.is_empty() {
            out.insert("d", d);
        }
        if !u.is_empty() {
            out.insert("u", u);
        }
        if !i.is_empty() {
            out.insert("i", i);
        }
        Some(out)
    }
}

pub mod token {
    use crate::query::QueryError;
    use bson::{doc, Bson, Document, Timestamp};
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TokenKind {
        Event,
        HighWater,
    }
    #[derive(Debug, Clone)]
    pub struct ResumeToken {
        pub ts: Timestamp,
        pub txn_op_index: u32,
        pub kind: TokenKind,
        pub from_invalidate: bool,
        pub document_key: Option<Bson>,
    }
    pub fn encode(t: &ResumeToken) -> Document {
        let kind = match t.kind {
            TokenKind::HighWater => 0u8,
            TokenKind::Event => 128,
        };
        doc! {"_data": format!("82{:08X}{:08X}{:02X}{:08X}{:02X}", t.ts.time, t.ts.increment, kind, t.txn_op_index, t.from_invalidate as u8)}
    }
    pub fn decode(d: &Document) -> Result<ResumeToken, QueryError> {
        let bad = || QueryError::new(260, "InvalidResumeToken", "invalid resume token");
        let s = d.get_str("_data").map_err(|_| bad())?;
        if s.len() < 31 {
            return Err(bad());
        }
        let h = |a: usize, b: usize| u32::from_str_radix(&s[a..b], 16).map_err(|_| bad());
        Ok(ResumeToken {
            ts: Timestamp {
                time: h(2, 10)?,
                increment: h(10, 18)?,
            },
            kind: if h(18, 20)? == 0 {
                TokenKind::HighWater
            } else {
                TokenKind::Event
            },
            txn_op_index: h(20, 28)?,
            from_invalidate: h(28, 30)? == 1,
            document_key: None,
        })
    }
}

pub mod change_event {
    use super::token::{encode, ResumeToken, TokenKind};
    use bson::{doc, Bson, Document, Timestamp};
    #[derive(Debug, Clone)]
    pub struct EventOptions {
        pub full_document: String,
        pub full_document_before_change: String,
        pub show_expanded_events: bool,
    }
    impl Default for EventOptions {
        fn default() -> Self {
            Self {
                full_document: "default".into(),
                full_document_before_change: "off".into(),
                show_expanded_events: false,
            }
        }
    }
    pub fn events_from_oplog_entry(
        entry: &Document,
        lookup: &dyn Fn(&str, &Bson) -> Option<Document>,
        opts: &EventOptions,
    ) -> Vec<Document> {
        let ts = entry.get_timestamp("ts").unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        let ns = entry.get_str("ns").unwrap_or_default();
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        let op = entry.get_str("op").unwrap_or_default();
        let o = entry.get_document("o").cloned().unwrap_or_default();
        let tok = encode(&ResumeToken {
            ts,
            txn_op_index: 0,
            kind: TokenKind::Event,
            from_invalidate: false,
            document_key: None,
        });
        match op {
            "i" => vec![
                doc! {"_id": tok, "operationType": "insert", "clusterTime": ts, "ns": {"db": db, "coll": coll}, "documentKey": {"_id": o.get("_id").cloned().unwrap_or(Bson::Null)}, "fullDocument": o},
            ],
            "d" => vec![
                doc! {"_id": tok, "operationType": "delete", "clusterTime": ts, "ns": {"db": db, "coll": coll}, "documentKey": o},
            ],
            "c" if o.contains_key("drop") => vec![
                doc! {"_id": tok, "operationType": "drop", "clusterTime": ts, "ns": {"db": db, "coll": o.get_str("drop").unwrap_or_default()}},
            ],
            _ => Vec::new(),
        }
    }
    pub fn invalidate_event(after: &ResumeToken, ts: Timestamp, wall: bson::DateTime) -> Document {
        let mut t = after.clone();
        t.from_invalidate = true;
        doc! {"_id": encode(&t), "operationType": "invalidate", "clusterTime": ts, "wallTime": wall}
    }
}

pub mod seed {
    use bson::{doc, Document};
    pub fn demo_documents(
        n: usize,
        _seed: u64,
    ) -> impl Iterator<Item = (&'static str, &'static str, Document)> {
        (0..n).map(|i| ("shop", "orders", doc! {"_id": i as i64}))
    }
}
