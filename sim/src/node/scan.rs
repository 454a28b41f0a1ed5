//! Collection scans in `_id` order that read one batch at a time: the cursor
//! of a `find` whose filter reads `_id` alone (none, equality, `$in`, a
//! range), sorted by `_id` (or not sorted, the store's natural order being
//! `_id` order). Equality and `$in` are point lookups, ranges seek.
//!
//! A full-sync reader pages through whole collections this way; holding the
//! entire result as `Document` copies doubled the simulator's memory and
//! was most of its CPU. Like a real `_id` index scan (and unlike a snapshot),
//! the cursor remembers only the last `_id` it returned and continues after
//! it on `getMore`: documents inserted behind that point, or updated or
//! deleted ahead of it, between batches are seen as they are then. Each
//! document is still returned at most once, because `_id` never changes.

use std::ops::Bound;

use bson::{Bson, Document};

use crate::bson_order::{type_bracket, OrderedBson};
use crate::error::CommandError;
use crate::node::cursor::{BatchDoc, MAX_BATCH_BYTES};
use crate::node::store::{approx_size, Catalog, Collection};
use crate::query::{project, Fields, Filter, IdKeys};

pub struct ScanCursor {
    db: String,
    coll: String,
    /// The collection scanned; a drop (or drop and re-create) kills the scan.
    uuid: Option<bson::Uuid>,
    filter: Filter,
    /// Where the next batch starts: the filter's lower `_id` bound at first,
    /// then just after the last `_id` returned (or skipped).
    from: Bound<OrderedBson>,
    /// The filter's upper `_id` bound: where the scan stops looking.
    to: Bound<OrderedBson>,
    projection: Option<Document>,
    /// Matching documents still to skip (`skip`, all within the first batch).
    skip: usize,
    /// Documents the `limit` still allows (`None` = no limit).
    remaining: Option<usize>,
    /// The sorted, distinct values of `{_id: v}` or `{_id: {$in: [...]}}`: looked up one by
    /// one instead of walking every key (tributary's oplog source re-reads updated documents
    /// this way; thousands of keys matched against every stored `_id` cost 360 µs per change).
    keys: Option<Vec<OrderedBson>>,
    /// The type bracket of an `_id` range: range operators match nothing outside it, so the
    /// walk skips to it and stops at its end (see `query::IdKeys`).
    bracket: Option<u8>,
}

/// What a `find` asks for, as far as a scan cares.
pub struct ScanSpec<'a> {
    pub db: &'a str,
    pub coll: &'a str,
    pub filter: &'a Document,
    pub sort: Option<&'a Document>,
    pub projection: Option<&'a Document>,
    pub skip: usize,
    /// 0 = no limit.
    pub limit: usize,
}

/// Whether `filter` reads no field but `_id`: its top-level keys are `_id`, or `$and`/`$or`/
/// `$nor` of such filters.
fn only_id(filter: &Document) -> bool {
    filter.iter().all(|(key, value)| match key.as_str() {
        "_id" => true,
        "$and" | "$or" | "$nor" => match value {
            Bson::Array(clauses) => clauses
                .iter()
                .all(|c| matches!(c, Bson::Document(d) if only_id(d))),
            _ => false,
        },
        _ => false,
    })
}

/// Whether `sort` leaves documents in `_id` order: absent, empty or `{_id: 1}`.
fn sorted_by_id(sort: Option<&Document>) -> bool {
    let Some(sort) = sort else { return true };
    match sort.len() {
        0 => true,
        1 => {
            matches!(sort.get("_id"), Some(Bson::Int32(1)) | Some(Bson::Int64(1)))
                || matches!(sort.get("_id"), Some(Bson::Double(d)) if *d == 1.0)
        }
        _ => false,
    }
}

impl ScanCursor {
    /// A scan for `spec`, or `None` when the query needs the general path.
    pub fn open(catalog: &Catalog, spec: &ScanSpec<'_>) -> Result<Option<Self>, CommandError> {
        if !sorted_by_id(spec.sort) {
            return Ok(None);
        }
        // Any filter on `_id` alone (also the `$or` of type brackets a full-sync reader sends
        // for its first and last range) is decided by the key; its `_id` conditions say
        // which keys to visit.
        if !only_id(spec.filter) {
            return Ok(None);
        }
        let (from, to, keys, bracket) = match IdKeys::of(spec.filter) {
            IdKeys::Any => (Bound::Unbounded, Bound::Unbounded, None, None),
            IdKeys::Points(p) => (Bound::Unbounded, Bound::Unbounded, Some(p), None),
            IdKeys::Range(r) => (r.from, r.to, None, Some(r.bracket)),
        };
        Ok(Some(Self {
            db: spec.db.to_string(),
            coll: spec.coll.to_string(),
            uuid: catalog.get(spec.db, spec.coll).map(|c| c.uuid),
            filter: Filter::parse(spec.filter)?,
            from,
            to,
            projection: spec.projection.filter(|p| !p.is_empty()).cloned(),
            skip: spec.skip,
            remaining: (spec.limit > 0).then_some(spec.limit),
            keys,
            bracket,
        }))
    }

    /// The next batch: at most `batch_size` documents (0 = only the ~16 MiB
    /// cap), and whether more may follow (`false` ends the cursor).
    pub fn next_batch(
        &mut self,
        catalog: &Catalog,
        batch_size: usize,
    ) -> Result<(Vec<BatchDoc>, bool), CommandError> {
        let coll = match (catalog.get(&self.db, &self.coll), self.uuid) {
            (Some(c), Some(uuid)) if c.uuid == uuid => c,
            (_, None) => return Ok((Vec::new(), false)),
            _ => {
                return Err(CommandError::new(
                    175,
                    "QueryPlanKilled",
                    format!(
                        "collection dropped. UUID {}",
                        self.uuid.map(|u| u.to_string()).unwrap_or_default()
                    ),
                ))
            }
        };
        self.collect(coll, batch_size)
    }

    fn collect(
        &mut self,
        coll: &Collection,
        batch_size: usize,
    ) -> Result<(Vec<BatchDoc>, bool), CommandError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        let mut last: Option<&OrderedBson> = None;
        let range = (self.from.clone(), self.to.clone());
        let candidates: Box<dyn Iterator<Item = (&OrderedBson, &crate::node::store::StoredDoc)>> =
            match &self.keys {
                Some(keys) => Box::new(
                    keys.iter()
                        .filter(|k| std::ops::RangeBounds::contains(&range, *k))
                        .filter_map(|k| coll.docs.get_key_value(k)),
                ),
                None => {
                    let bracket = self.bracket;
                    Box::new(
                        coll.docs
                            .range(range.clone())
                            .skip_while(move |(k, _)| {
                                bracket.is_some_and(|b| type_bracket(&k.0) < b)
                            })
                            .take_while(move |(k, _)| {
                                bracket.is_none_or(|b| type_bracket(&k.0) == b)
                            }),
                    )
                }
            };
        for (key, stored) in candidates {
            // The filter is about `_id` only (see `only_id`): the key is enough.
            if !self.filter.matches(&IdOnly(&key.0)) {
                continue;
            }
            if self.skip > 0 {
                self.skip -= 1;
                last = Some(key);
                continue;
            }
            if self.remaining == Some(0) {
                break;
            }
            let (item, size) = match (&self.projection, stored.raw()) {
                (Some(p), _) => {
                    let shown = project(&stored.doc(), p)?;
                    let size = approx_size(&shown);
                    (BatchDoc::Owned(shown), size)
                }
                (None, Some((raw, approx))) => (BatchDoc::Raw(raw.as_bytes().to_vec()), approx),
                (None, None) => {
                    let doc = stored.doc();
                    (encoded(&doc), approx_size(&doc))
                }
            };
            if (batch_size > 0 && out.len() >= batch_size)
                || (!out.is_empty() && bytes + size > MAX_BATCH_BYTES)
            {
                more = true;
                break;
            }
            bytes += size;
            out.push(item);
            last = Some(key);
            if let Some(r) = &mut self.remaining {
                *r -= 1;
            }
        }
        if let Some(key) = last {
            self.from = Bound::Excluded(key.clone());
        }
        Ok((out, more))
    }
}

/// A document seen only through its `_id`.
struct IdOnly<'a>(&'a Bson);

impl Fields for IdOnly<'_> {
    fn field(&self, key: &str) -> Option<&Bson> {
        (key == "_id").then_some(self.0)
    }

    fn to_document(&self) -> std::borrow::Cow<'_, Document> {
        let mut d = Document::new();
        d.insert("_id", self.0.clone());
        std::borrow::Cow::Owned(d)
    }
}

/// A stored document as the reply will carry it: encoded now, under the
/// lock, instead of cloned and encoded later.
fn encoded(doc: &Document) -> BatchDoc {
    let mut bytes = Vec::with_capacity(approx_size(doc));
    if crate::codec::encode_document(&mut bytes, doc).is_some() {
        return BatchDoc::Raw(bytes);
    }
    bytes.clear();
    match doc.to_writer(&mut bytes) {
        Ok(()) => BatchDoc::Raw(bytes),
        Err(_) => BatchDoc::Owned(doc.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn catalog(ids: impl IntoIterator<Item = Bson>) -> Catalog {
        let mut c = Collection::new(Document::new());
        for id in ids {
            c.put_new(OrderedBson(id.clone()), doc! {"_id": id, "x": 1}.into());
        }
        let mut cat = Catalog::default();
        cat.dbs.entry("d".into()).or_default().insert("c".into(), c);
        cat
    }

    fn ids(batch: &[BatchDoc]) -> Vec<Bson> {
        batch
            .iter()
            .map(|d| d.to_document().unwrap().get("_id").cloned().unwrap())
            .collect()
    }

    fn spec<'a>(filter: &'a Document, sort: Option<&'a Document>) -> ScanSpec<'a> {
        ScanSpec {
            db: "d",
            coll: "c",
            filter,
            sort,
            projection: None,
            skip: 0,
            limit: 0,
        }
    }

    #[test]
    fn pages_an_id_range_and_stops_at_its_end() {
        let cat = catalog((0..10).map(Bson::Int32));
        let f = doc! {"_id": {"$gte": 2, "$lt": 7}};
        let mut s = ScanCursor::open(&cat, &spec(&f, Some(&doc! {"_id": 1})))
            .unwrap()
            .unwrap();
        let (b, more) = s.next_batch(&cat, 3).unwrap();
        assert_eq!(ids(&b), [2, 3, 4].map(Bson::Int32));
        assert!(more);
        let (b, more) = s.next_batch(&cat, 3).unwrap();
        assert_eq!(ids(&b), [5, 6].map(Bson::Int32));
        assert!(!more);
    }

    #[test]
    fn in_on_id_looks_up_each_key_and_pages() {
        let cat = catalog((0..100).map(Bson::Int32));
        // Unsorted, repeated, another numeric type for the same value, and a missing key.
        let f = doc! {"_id": {"$in": [50, 3, Bson::Double(7.0), 3, 500, Bson::Int64(99)]}};
        let mut s = ScanCursor::open(&cat, &spec(&f, None)).unwrap().unwrap();
        assert!(s.keys.is_some());
        let (b, more) = s.next_batch(&cat, 2).unwrap();
        assert_eq!(ids(&b), [3, 7].map(Bson::Int32));
        assert!(more);
        let (b, more) = s.next_batch(&cat, 2).unwrap();
        assert_eq!(ids(&b), [50, 99].map(Bson::Int32));
        assert!(!more);
        // Regular expressions match by pattern, not by key: the walk decides.
        let f = doc! {"_id": {"$in": [Bson::RegularExpression(bson::Regex {
            pattern: "^a".into(),
            options: String::new(),
        })]}};
        assert!(ScanCursor::open(&cat, &spec(&f, None))
            .unwrap()
            .unwrap()
            .keys
            .is_none());
    }

    #[test]
    fn other_filters_on_id_alone_scan_and_match_by_key() {
        let cat = catalog([
            Bson::Int32(1),
            Bson::Int32(5),
            Bson::String("a".into()),
            Bson::String("q".into()),
        ]);
        // What a full-sync reader sends for its first range: below "b" in every bracket.
        let f = doc! {"$or": [{"_id": {"$lt": "b"}}, {"_id": {"$gte": f64::NEG_INFINITY}}]};
        let mut s = ScanCursor::open(&cat, &spec(&f, None)).unwrap().unwrap();
        let (b, more) = s.next_batch(&cat, 0).unwrap();
        assert_eq!(
            ids(&b),
            [Bson::Int32(1), Bson::Int32(5), Bson::String("a".into())]
        );
        assert!(!more);
        for (f, expected) in [
            (doc! {"_id": 5}, vec![Bson::Int32(5)]),
            (
                doc! {"_id": {"$in": [1, "q"]}},
                vec![Bson::Int32(1), Bson::String("q".into())],
            ),
            (doc! {"_id": {"$gte": 1, "$lt": "z"}}, vec![]),
        ] {
            let mut s = ScanCursor::open(&cat, &spec(&f, None)).unwrap().unwrap();
            assert_eq!(ids(&s.next_batch(&cat, 0).unwrap().0), expected, "{f}");
        }
    }

    #[test]
    fn range_operators_stay_within_the_type_bracket() {
        let cat = catalog([Bson::Int32(1), Bson::Int32(5), Bson::String("a".into())]);
        let f = doc! {"_id": {"$gte": 2}};
        let mut s = ScanCursor::open(&cat, &spec(&f, None)).unwrap().unwrap();
        let (b, more) = s.next_batch(&cat, 0).unwrap();
        assert_eq!(ids(&b), [Bson::Int32(5)]);
        assert!(!more);
    }

    #[test]
    fn continues_after_the_last_id_and_sees_later_inserts() {
        let mut cat = catalog([1, 2, 3, 4].map(Bson::Int32));
        let f = doc! {};
        let mut s = ScanCursor::open(&cat, &spec(&f, None)).unwrap().unwrap();
        let (b, _) = s.next_batch(&cat, 2).unwrap();
        assert_eq!(ids(&b), [1, 2].map(Bson::Int32));
        let c = cat.get_mut("d", "c").unwrap();
        c.remove(&OrderedBson(Bson::Int32(3)));
        c.docs
            .insert(OrderedBson(Bson::Int32(9)), doc! {"_id": 9}.into());
        c.docs
            .insert(OrderedBson(Bson::Int32(0)), doc! {"_id": 0}.into());
        let (b, more) = s.next_batch(&cat, 0).unwrap();
        assert_eq!(ids(&b), [4, 9].map(Bson::Int32));
        assert!(!more);
    }

    #[test]
    fn skip_and_limit_and_the_exact_end() {
        let cat = catalog((0..10).map(Bson::Int32));
        let f = doc! {};
        let mut sp = spec(&f, None);
        sp.skip = 3;
        sp.limit = 4;
        let mut s = ScanCursor::open(&cat, &sp).unwrap().unwrap();
        let (b, more) = s.next_batch(&cat, 2).unwrap();
        assert_eq!(ids(&b), [3, 4].map(Bson::Int32));
        assert!(more);
        let (b, more) = s.next_batch(&cat, 2).unwrap();
        assert_eq!(ids(&b), [5, 6].map(Bson::Int32));
        assert!(!more);
    }

    #[test]
    fn other_queries_take_the_general_path() {
        let cat = catalog([Bson::Int32(1)]);
        for (f, sort) in [
            (doc! {"x": 1}, None),
            (doc! {"$or": [{"_id": 1}, {"x": 1}]}, None),
            (doc! {}, Some(doc! {"_id": -1})),
            (doc! {}, Some(doc! {"x": 1})),
        ] {
            assert!(
                ScanCursor::open(&cat, &spec(&f, sort.as_ref()))
                    .unwrap()
                    .is_none(),
                "{f} {sort:?}"
            );
        }
    }

    #[test]
    fn a_dropped_collection_kills_the_scan() {
        let mut cat = catalog([1, 2].map(Bson::Int32));
        let f = doc! {};
        let mut s = ScanCursor::open(&cat, &spec(&f, None)).unwrap().unwrap();
        s.next_batch(&cat, 1).unwrap();
        cat.dbs.clear();
        assert_eq!(s.next_batch(&cat, 1).unwrap_err().code, 175);
    }
}
