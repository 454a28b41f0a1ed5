//! In-memory storage: databases of collections of documents ordered by `_id`,
//! plus the namespace rules (which names are valid, which are internal).
//!
//! A live insert stores no copy of its document: [`StoredDoc::Inserted`]
//! points at the `o` of the oplog entry that inserted it, which keeps it as
//! BSON bytes (a 400-byte demo order took ~5 KB as a `Document`). Readers
//! that need a `Document` decode it; `_id`-ordered scans copy the bytes.
//! Updated documents are stored as their own `Document`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument};

use crate::bson_order::{type_bracket, OrderedBson};
use crate::error::CommandError;
use crate::node::oplog::OplogEntry;
use crate::query::{Fields, IdKeys};

/// A stored document: its own copy, or the `o` of the insert's oplog entry.
#[derive(Debug, Clone)]
pub enum StoredDoc {
    Own(Document),
    /// An `op: "i"` entry whose `o` is the document (shared, never changed).
    Inserted(Arc<OplogEntry>),
}

impl From<Document> for StoredDoc {
    fn from(d: Document) -> Self {
        StoredDoc::Own(d)
    }
}

impl StoredDoc {
    /// The document; decoded when it is kept as BSON.
    pub fn doc(&self) -> Cow<'_, Document> {
        match self {
            StoredDoc::Own(d) => Cow::Borrowed(d),
            StoredDoc::Inserted(entry) => match entry.raw_o() {
                Some(raw) => Cow::Owned(decode_raw(raw)),
                None => entry.doc_field("o").map(Cow::Borrowed).unwrap_or_default(),
            },
        }
    }

    /// The document's BSON, when that is how it is kept, with
    /// [`approx_size`] of the document.
    pub fn raw(&self) -> Option<(&RawDocument, usize)> {
        match self {
            StoredDoc::Own(_) => None,
            StoredDoc::Inserted(entry) => Some((entry.raw_o()?, entry.raw_o_approx())),
        }
    }
}

/// A document the simulator encoded itself; the bytes are valid BSON, so
/// decoding cannot fail (an empty document stands in if it ever did).
pub fn decode_raw(raw: &RawDocument) -> Document {
    Document::try_from(raw).unwrap_or_default()
}

/// The limits of a capped collection, as mongod keeps them: `size` in bytes (at least 4096,
/// else rounded up to a multiple of 256) and `max` documents (0 = no count limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub size: usize,
    pub max: usize,
}

impl Cap {
    /// The cap `create`'s options ask for, `None` without `capped: true`.
    pub fn of(options: &Document) -> Option<Self> {
        if !matches!(options.get("capped"), Some(Bson::Boolean(true))) {
            return None;
        }
        let num = |k: &str| match options.get(k) {
            Some(Bson::Int32(n)) => (*n).max(0) as usize,
            Some(Bson::Int64(n)) => (*n).max(0) as usize,
            Some(Bson::Double(n)) if *n > 0.0 => *n as usize,
            _ => 0,
        };
        let size = num("size");
        let size = if size <= 4096 {
            4096
        } else {
            size.div_ceil(256) * 256
        };
        Some(Self {
            size,
            max: num("max"),
        })
    }
}

/// The stored size of a document, as a capped collection counts it.
pub fn stored_size(d: &StoredDoc) -> usize {
    match d.raw() {
        Some((raw, _)) => raw.as_bytes().len(),
        None => approx_size(&d.doc()),
    }
}

#[derive(Debug, Clone)]
pub struct Collection {
    pub uuid: bson::Uuid,
    /// The documents by `_id`. Writers go through [`Collection::put_new`],
    /// [`Collection::replace`] and [`Collection::remove`], which keep the record ids.
    pub docs: BTreeMap<OrderedBson, StoredDoc>,
    /// Record ids in insertion order, as WiredTiger's RecordIds: `$natural` order, which an
    /// update does not change.
    pub natural: BTreeMap<u64, OrderedBson>,
    rids: BTreeMap<OrderedBson, u64>,
    next_rid: u64,
    /// `capped: true` and its limits.
    pub cap: Option<Cap>,
    /// Bytes stored, counted for capped collections only (mongod's dataSize).
    bytes: usize,
    /// The `create` options (capped, changeStreamPreAndPostImages, ...).
    pub options: Document,
    /// Index specs as listIndexes reports them; only `_id` is enforced.
    pub indexes: Vec<Document>,
    /// The shard key pattern when the collection is sharded (pushed by the router): its
    /// fields join `_id` in the oplog's document keys, as on a MongoDB 7 shard.
    pub shard_key: Option<Document>,
}

impl Collection {
    /// Whether `changeStreamPreAndPostImages: {enabled: true}` is set.
    pub fn images_enabled(&self) -> bool {
        self.options
            .get_document("changeStreamPreAndPostImages")
            .and_then(|d| d.get_bool("enabled"))
            .unwrap_or(false)
    }

    /// The stored documents whose `_id` is among `keys`, in `_id` order, with their stored
    /// key (`{_id: 2.0}` finds the document stored under `2i64`, and oplog entries must name
    /// the stored one). Point lookups and range seeks on the ordered map, as mongod's `_id`
    /// index answers them; the caller still applies the whole filter.
    pub fn candidates<'a>(
        &'a self,
        keys: &'a IdKeys,
    ) -> Box<dyn Iterator<Item = (&'a OrderedBson, &'a StoredDoc)> + 'a> {
        match keys {
            IdKeys::Any => Box::new(self.docs.iter()),
            IdKeys::Points(points) => {
                Box::new(points.iter().filter_map(|k| self.docs.get_key_value(k)))
            }
            IdKeys::Range(r) => {
                let bracket = r.bracket;
                Box::new(
                    self.docs
                        .range((r.from.clone(), r.to.clone()))
                        .skip_while(move |(k, _)| type_bracket(&k.0) < bracket)
                        .take_while(move |(k, _)| type_bracket(&k.0) == bracket),
                )
            }
        }
    }

    pub fn new(options: Document) -> Self {
        Self {
            uuid: bson::Uuid::new(),
            docs: BTreeMap::new(),
            natural: BTreeMap::new(),
            rids: BTreeMap::new(),
            next_rid: 1,
            cap: Cap::of(&options),
            bytes: 0,
            options,
            indexes: vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}],
            shard_key: None,
        }
    }

    /// The key the oplog names `doc` by: `{_id}`, or the shard key's fields then `_id` (not
    /// repeated when it is part of the key) for a sharded collection.
    pub fn document_key(&self, doc: &Document, id: Bson) -> Document {
        let Some(pattern) = &self.shard_key else {
            return doc! {"_id": id};
        };
        let mut key = Document::new();
        for field in pattern.keys() {
            if field == "_id" {
                key.insert("_id", id.clone());
            } else {
                let v = crate::query::get_path(doc, field)
                    .cloned()
                    .unwrap_or(Bson::Null);
                key.insert(field.clone(), v);
            }
        }
        if !key.contains_key("_id") {
            key.insert("_id", id);
        }
        key
    }
}

impl Collection {
    /// The record id of the document stored under `key` (`showRecordId`'s `$recordId`).
    pub fn record_id(&self, key: &OrderedBson) -> Option<u64> {
        self.rids.get(key).copied()
    }

    /// Stores a new document under a fresh record id (the end of `$natural` order).
    pub fn put_new(&mut self, key: OrderedBson, doc: StoredDoc) {
        if self.cap.is_some() {
            self.bytes += stored_size(&doc);
        }
        let rid = self.next_rid;
        self.next_rid += 1;
        self.natural.insert(rid, key.clone());
        self.rids.insert(key.clone(), rid);
        if let Some(old) = self.docs.insert(key, doc) {
            // Not reached: callers check for a duplicate `_id` first.
            self.bytes = self.bytes.saturating_sub(stored_size(&old));
        }
    }

    /// Replaces the document stored under `old`, now keyed `new` (an equal `_id` of another
    /// numeric type), keeping its record id as an update does on mongod.
    /// Returns the version it replaced (kept by `history` for snapshot reads).
    pub fn replace(
        &mut self,
        old: &OrderedBson,
        new: OrderedBson,
        doc: StoredDoc,
    ) -> Option<StoredDoc> {
        let Some(rid) = self.rids.remove(old) else {
            self.put_new(new, doc);
            return None;
        };
        let prev = self.docs.remove(old);
        if let Some(prev) = &prev {
            if self.cap.is_some() {
                self.bytes = self.bytes.saturating_sub(stored_size(prev));
            }
        }
        if self.cap.is_some() {
            self.bytes += stored_size(&doc);
        }
        self.natural.insert(rid, new.clone());
        self.rids.insert(new.clone(), rid);
        self.docs.insert(new, doc);
        prev
    }

    /// Puts back a version under its old record id (a snapshot view undoing a write).
    pub fn restore(&mut self, key: OrderedBson, doc: StoredDoc, rid: u64) {
        if self.cap.is_some() {
            self.bytes += stored_size(&doc);
        }
        self.natural.insert(rid, key.clone());
        self.rids.insert(key.clone(), rid);
        self.docs.insert(key, doc);
    }

    pub fn remove(&mut self, key: &OrderedBson) -> Option<StoredDoc> {
        let doc = self.docs.remove(key)?;
        if let Some(rid) = self.rids.remove(key) {
            self.natural.remove(&rid);
        }
        if self.cap.is_some() {
            self.bytes = self.bytes.saturating_sub(stored_size(&doc));
        }
        Some(doc)
    }

    /// The oldest documents a capped collection must let go of now that it is over its
    /// `max` or `size` (mongod's capped delete after an insert), oldest first.
    pub fn over_cap(&self) -> Vec<OrderedBson> {
        let Some(cap) = self.cap else {
            return Vec::new();
        };
        let (mut n, mut bytes) = (self.docs.len(), self.bytes);
        let mut out = Vec::new();
        for key in self.natural.values() {
            if n <= 1 || (bytes <= cap.size && (cap.max == 0 || n <= cap.max)) {
                break;
            }
            if let Some(d) = self.docs.get(key) {
                bytes = bytes.saturating_sub(stored_size(d));
            }
            n -= 1;
            out.push(key.clone());
        }
        out
    }

    /// Documents in `$natural` (insertion) order, or its reverse.
    pub fn in_natural_order(
        &self,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = (&OrderedBson, &StoredDoc)> + '_> {
        let it = self
            .natural
            .values()
            .filter_map(|k| self.docs.get_key_value(k));
        if reverse {
            let it = self
                .natural
                .values()
                .rev()
                .filter_map(|k| self.docs.get_key_value(k));
            Box::new(it)
        } else {
            Box::new(it)
        }
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub dbs: BTreeMap<String, BTreeMap<String, Collection>>,
}

impl Catalog {
    pub fn get(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.dbs.get(db).and_then(|d| d.get(coll))
    }

    pub fn get_mut(&mut self, db: &str, coll: &str) -> Option<&mut Collection> {
        self.dbs.get_mut(db).and_then(|d| d.get_mut(coll))
    }
}

/// Rejects names the server would reject with 73 InvalidNamespace.
pub fn check_collection_name(db: &str, coll: &str) -> Result<(), CommandError> {
    if db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid database name: '{db}'"
        )));
    }
    if coll.is_empty() || coll.contains('\0') || coll.starts_with('.') || coll.contains('$') {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid collection name: {coll}"
        )));
    }
    Ok(())
}

/// A violated unique index: its name, key pattern and the duplicated key.
#[derive(Debug, Clone)]
pub struct DuplicateKey {
    pub index: String,
    pub key_pattern: Document,
    pub key_value: Document,
}

impl DuplicateKey {
    pub fn on_id(id: &Bson) -> Self {
        Self {
            index: "_id_".into(),
            key_pattern: doc! {"_id": 1},
            key_value: doc! {"_id": id.clone()},
        }
    }

    /// The write error message exactly as mongod words it.
    pub fn errmsg(&self, db: &str, coll: &str) -> String {
        let shown = Bson::Document(self.key_value.clone()).to_string();
        format!(
            "E11000 duplicate key error collection: {db}.{coll} index: {} dup key: {shown}",
            self.index
        )
    }
}

/// The key a unique index extracts from `doc` (missing fields are null),
/// or `None` for a sparse index when every key field is missing.
fn index_key(doc: &Document, pattern: &Document, sparse: bool) -> Option<Document> {
    let mut key = Document::new();
    let mut any = false;
    for field in pattern.keys() {
        let v = crate::query::get_path(doc, field).cloned();
        any |= v.is_some();
        key.insert(field.clone(), v.unwrap_or(Bson::Null));
    }
    (any || !sparse).then_some(key)
}

/// Which documents index `ix` holds: every one, or for a partial index those its
/// `partialFilterExpression` matches (checked when the index was created).
fn holds(ix: &Document) -> impl Fn(&Document) -> bool {
    let filter = ix
        .get_document("partialFilterExpression")
        .ok()
        .and_then(|f| crate::query::Filter::parse(f).ok());
    move |doc| filter.as_ref().is_none_or(|f| f.matches(doc))
}

fn same_key(a: &Document, b: &Document) -> bool {
    a.values()
        .zip(b.values())
        .all(|(x, y)| crate::bson_order::compare(x, y).is_eq())
}

impl Collection {
    /// A unique secondary index that `doc` would violate, ignoring the
    /// document stored under `self_id` (the one being updated).
    pub fn unique_violation(&self, doc: &Document, self_id: Option<&Bson>) -> Option<DuplicateKey> {
        for ix in &self.indexes {
            let indexed = holds(ix);
            if !ix.get_bool("unique").unwrap_or(false)
                || ix.get_str("name") == Ok("_id_")
                || !indexed(doc)
            {
                continue;
            }
            let Ok(pattern) = ix.get_document("key") else {
                continue;
            };
            let sparse = ix.get_bool("sparse").unwrap_or(false);
            let Some(key) = index_key(doc, pattern, sparse) else {
                continue;
            };
            let clash = self.docs.iter().any(|(id, other)| {
                let other = other.doc();
                self_id.is_none_or(|s| !crate::bson_order::compare(s, &id.0).is_eq())
                    && indexed(&other)
                    && index_key(&other, pattern, sparse).is_some_and(|k| same_key(&k, &key))
            });
            if clash {
                return Some(DuplicateKey {
                    index: ix.get_str("name").unwrap_or_default().to_string(),
                    key_pattern: pattern.clone(),
                    key_value: key,
                });
            }
        }
        None
    }

    /// Whether a unique index other than `_id_` exists (inserts then need
    /// the decoded document, see `unique_violation`).
    pub fn has_unique_secondary(&self) -> bool {
        self.indexes
            .iter()
            .any(|ix| ix.get_bool("unique").unwrap_or(false) && ix.get_str("name") != Ok("_id_"))
    }

    /// The first duplicate a new unique index (`spec`) over existing documents would hit.
    pub fn duplicate_for_new_index(&self, spec: &Document) -> Option<Document> {
        let pattern = spec.get_document("key").ok()?;
        let sparse = spec.get_bool("sparse").unwrap_or(false);
        let indexed = holds(spec);
        let mut seen: Vec<Document> = Vec::new();
        for doc in self.docs.values() {
            let doc = doc.doc();
            if !indexed(&doc) {
                continue;
            }
            let Some(key) = index_key(&doc, pattern, sparse) else {
                continue;
            };
            if seen.iter().any(|k| same_key(k, &key)) {
                return Some(key);
            }
            seen.push(key);
        }
        None
    }
}

/// Approximate encoded size of a document, used to cap batches near 16 MiB
/// without serialising twice.
pub fn approx_size(doc: &Document) -> usize {
    doc.iter()
        .map(|(k, v)| k.len() + 2 + approx_value(v))
        .sum::<usize>()
        + 5
}

/// `approx_size` of one value.
pub fn approx_value(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => approx_size(d),
        Bson::Array(a) => a.iter().map(|x| approx_value(x) + 4).sum::<usize>() + 5,
        Bson::String(s) => s.len() + 5,
        Bson::Binary(b) => b.bytes.len() + 5,
        Bson::ObjectId(_) => 12,
        Bson::Int32(_) => 4,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sizes_round_like_mongod() {
        assert_eq!(Cap::of(&doc! {"size": 1000}), None);
        let cap = |o: Document| Cap::of(&o).map(|c| (c.size, c.max));
        assert_eq!(cap(doc! {"capped": true, "size": 1000}), Some((4096, 0)));
        assert_eq!(
            cap(doc! {"capped": true, "size": 5000i64, "max": 3}),
            Some((5120, 3))
        );
    }

    #[test]
    fn capped_collection_lets_the_oldest_go_and_keeps_natural_order() {
        let mut c = Collection::new(doc! {"capped": true, "size": 4096, "max": 3});
        for i in [5, 1, 4, 2] {
            c.put_new(OrderedBson(Bson::Int32(i)), doc! {"_id": i}.into());
        }
        let over: Vec<Bson> = c.over_cap().into_iter().map(|k| k.0).collect();
        assert_eq!(over, vec![Bson::Int32(5)]);
        // An update keeps the document's place in `$natural` order.
        let one = OrderedBson(Bson::Int32(1));
        c.replace(&one, one.clone(), doc! {"_id": 1, "x": "grown"}.into());
        c.remove(&OrderedBson(Bson::Int32(5)));
        let order: Vec<Bson> = c
            .in_natural_order(false)
            .map(|(k, _)| k.0.clone())
            .collect();
        assert_eq!(order, vec![Bson::Int32(1), Bson::Int32(4), Bson::Int32(2)]);
        let back: Vec<Bson> = c.in_natural_order(true).map(|(k, _)| k.0.clone()).collect();
        assert_eq!(back, vec![Bson::Int32(2), Bson::Int32(4), Bson::Int32(1)]);
        // By size: about 1 KB documents in 4096 bytes.
        let mut c = Collection::new(doc! {"capped": true, "size": 4096});
        for i in 0..5 {
            c.put_new(
                OrderedBson(Bson::Int32(i)),
                doc! {"_id": i, "p": "x".repeat(1000)}.into(),
            );
        }
        // Five of about 1,015 bytes: the oldest goes, four fit in 4096.
        assert_eq!(c.over_cap().len(), 1);
    }
}
