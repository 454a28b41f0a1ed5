//! The cluster's metadata as the config server keeps it: shards, databases (primary shard),
//! sharded collections (uuid, key, unique) and their chunks (`min`/`max`/`shard`/`lastmod`,
//! keyed by the collection's `uuid` as in MongoDB 7), and the routing of a document or a
//! filter to the shards that own it.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{doc, oid::ObjectId, Bson, Document, Timestamp};

use crate::bson_order::compare;

#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: ObjectId,
    pub min: Document,
    pub max: Document,
    pub shard: usize,
    /// `lastmod` as (major, minor).
    pub version: (u32, u32),
}

#[derive(Debug, Clone)]
pub struct ShardedColl {
    pub uuid: bson::Uuid,
    pub key: Document,
    pub unique: bool,
    pub epoch: ObjectId,
    pub timestamp: Timestamp,
    /// Sorted by `min`.
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Default)]
pub struct Meta {
    pub shard_hosts: Vec<String>,
    /// Databases `enableSharding` (or a first write) registered, all with primary shard0.
    pub databases: BTreeMap<String, usize>,
    pub collections: BTreeMap<String, ShardedColl>,
}

pub fn shard_name(i: usize) -> String {
    format!("shard{i}")
}

/// Compares two shard key values field by field (both follow the key's field order).
pub fn cmp_key(a: &Document, b: &Document) -> Ordering {
    for (x, y) in a.values().zip(b.values()) {
        let o = compare(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl ShardedColl {
    /// The shard key value of `doc` as chunks bound it (hashed fields as their hash).
    pub fn key_of(&self, doc: &Document) -> Document {
        let mut k = Document::new();
        for (field, kind) in &self.key {
            let v = crate::query::get_path(doc, field)
                .cloned()
                .unwrap_or(Bson::Null);
            let v = if kind.as_str() == Some("hashed") {
                Bson::Int64(super::hash::hash64(&v))
            } else {
                v
            };
            k.insert(field.clone(), v);
        }
        k
    }

    pub fn chunk_index(&self, key: &Document) -> usize {
        self.chunks
            .iter()
            .position(|c| {
                cmp_key(&c.min, key) != Ordering::Greater && cmp_key(key, &c.max) == Ordering::Less
            })
            .unwrap_or(0)
    }

    /// The shard owning `doc`.
    pub fn owner(&self, doc: &Document) -> usize {
        self.chunks[self.chunk_index(&self.key_of(doc))].shard
    }

    /// The one shard a filter targets when it pins every shard key field by equality.
    pub fn target(&self, filter: &Document) -> Option<usize> {
        let mut pinned = Document::new();
        for field in self.key.keys() {
            match filter.get(field) {
                Some(Bson::Document(d)) if d.keys().any(|k| k.starts_with('$')) => {
                    match d.get("$eq") {
                        Some(v) if d.len() == 1 => pinned.insert(field.clone(), v.clone()),
                        _ => return None,
                    };
                }
                Some(Bson::RegularExpression(_)) | None => return None,
                Some(v) => {
                    pinned.insert(field.clone(), v.clone());
                }
            }
        }
        Some(self.owner(&crate::router::meta::unflatten(&pinned)))
    }

    pub fn max_version(&self) -> (u32, u32) {
        self.chunks
            .iter()
            .map(|c| c.version)
            .max()
            .unwrap_or((1, 0))
    }

    pub fn chunk_doc(&self, c: &Chunk) -> Document {
        doc! {
            "_id": c.id,
            "uuid": self.uuid,
            "min": c.min.clone(),
            "max": c.max.clone(),
            "shard": shard_name(c.shard),
            "lastmod": Timestamp { time: c.version.0, increment: c.version.1 },
            "onCurrentShardSince": self.timestamp,
            "history": [{"validAfter": self.timestamp, "shard": shard_name(c.shard)}],
        }
    }
}

/// `{"a.b": 1}` as `{a: {b: 1}}`, so dotted key fields are found by path.
pub fn unflatten(d: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in d {
        let mut parts = k.split('.').collect::<Vec<_>>();
        let last = parts.pop().unwrap_or_default();
        let mut cur = &mut out;
        for p in parts {
            if !matches!(cur.get(p), Some(Bson::Document(_))) {
                cur.insert(p, Document::new());
            }
            cur = match cur.get_mut(p) {
                Some(Bson::Document(d)) => d,
                _ => return out.clone(),
            };
        }
        cur.insert(last, v.clone());
    }
    out
}

impl Meta {
    /// The documents of `config.<coll>`.
    pub fn config_docs(&self, coll: &str) -> Vec<Document> {
        match coll {
            "shards" => self
                .shard_hosts
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    doc! {"_id": shard_name(i), "host": format!("{}/{h}", shard_name(i)), "state": 1, "topologyTime": Timestamp { time: 1, increment: 0 }}
                })
                .collect(),
            "databases" => self
                .databases
                .iter()
                .map(|(db, p)| {
                    doc! {"_id": db.clone(), "primary": shard_name(*p), "partitioned": true,
                          "version": {"uuid": bson::Uuid::new(), "timestamp": Timestamp { time: 1, increment: 0 }, "lastMod": 1}}
                })
                .collect(),
            "collections" => self
                .collections
                .iter()
                .map(|(ns, c)| {
                    doc! {"_id": ns.clone(), "lastmodEpoch": c.epoch, "lastmod": bson::DateTime::now(),
                          "timestamp": c.timestamp, "uuid": c.uuid, "key": c.key.clone(),
                          "unique": c.unique, "noBalance": false}
                })
                .collect(),
            "chunks" => self
                .collections
                .values()
                .flat_map(|c| c.chunks.iter().map(|ch| c.chunk_doc(ch)))
                .collect(),
            _ => Vec::new(),
        }
    }
}
