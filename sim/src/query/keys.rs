//! Which `_id` keys a filter can match, read off its top-level `_id` conditions (equality,
//! `$eq`, `$in`, `$gt`/`$gte`/`$lt`/`$lte`, also inside a top-level `$and`).
//!
//! A collection is a `BTreeMap` ordered by `_id`, which is what MongoDB's `_id` index is:
//! every command path (find, aggregate whose first stage is `$match`, count, distinct,
//! update, delete, findAndModify) asks this module for the keys to visit instead of decoding
//! and testing every document. mongod answers `find({_id: v})` from the index in about 0.1 ms
//! at any collection size; a scan here cost milliseconds per 100,000 documents, which made
//! clients that look documents up one by one (mongo-connector's `find_one({_id: v})`) look
//! slow where MongoDB is fast.
//!
//! The keys are candidates only: every candidate is still tested against the whole filter,
//! so a condition this module does not understand can only widen the candidates, never
//! change the result.

use std::ops::Bound;

use bson::{Bson, Document};

use crate::bson_order::{type_bracket, OrderedBson};

/// The `_id` keys a filter can match.
#[derive(Debug, Clone, PartialEq)]
pub enum IdKeys {
    /// No usable `_id` condition: every document is a candidate.
    Any,
    /// Only these keys, sorted and distinct (`{_id: v}`, `{_id: {$eq: v}}`, `{_id: {$in: [...]}}`).
    Points(Vec<OrderedBson>),
    /// Keys between the bounds and inside one type bracket (boxed: two keys are large).
    Range(Box<IdRange>),
}

/// Keys between `from` and `to` inside one type bracket: range operators match values of
/// their operand's bracket only (`{$gt: 5}` never matches a string).
#[derive(Debug, Clone, PartialEq)]
pub struct IdRange {
    pub from: Bound<OrderedBson>,
    pub to: Bound<OrderedBson>,
    pub bracket: u8,
}

impl IdKeys {
    /// The candidates of `filter` (a filter that already parsed).
    pub fn of(filter: &Document) -> IdKeys {
        let mut best = IdKeys::Any;
        collect(filter, &mut best);
        best
    }
}

/// Narrows `best` with every `_id` clause of `filter` and of its top-level `$and`s: the
/// conditions are ANDed, so any one of them bounds the result; the fewest keys win.
fn collect(filter: &Document, best: &mut IdKeys) {
    for (key, value) in filter {
        match (key.as_str(), value) {
            ("_id", v) => {
                let keys = clause(v);
                if narrower(&keys, best) {
                    *best = keys;
                }
            }
            ("$and", Bson::Array(items)) => {
                for item in items {
                    if let Bson::Document(d) = item {
                        collect(d, best);
                    }
                }
            }
            _ => {}
        }
    }
}

fn narrower(a: &IdKeys, b: &IdKeys) -> bool {
    match (a, b) {
        (IdKeys::Any, _) => false,
        (_, IdKeys::Any) => true,
        (IdKeys::Points(x), IdKeys::Points(y)) => x.len() < y.len(),
        (IdKeys::Points(_), IdKeys::Range(_)) => true,
        (IdKeys::Range(_), _) => false,
    }
}

/// Values whose equality (or `$in` membership) is exactly key equality in the store.
/// Null also matches a missing field, regexes match by pattern, arrays match their elements,
/// MinKey/MaxKey and Undefined have rules of their own: those are left to the scan.
fn plain(v: &Bson) -> bool {
    !matches!(
        v,
        Bson::Null
            | Bson::Undefined
            | Bson::RegularExpression(_)
            | Bson::Array(_)
            | Bson::MinKey
            | Bson::MaxKey
    )
}

fn is_operator_doc(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k.starts_with('$'))
}

fn points(values: impl IntoIterator<Item = Bson>) -> IdKeys {
    let mut keys: Vec<OrderedBson> = values.into_iter().map(OrderedBson).collect();
    keys.sort();
    keys.dedup();
    IdKeys::Points(keys)
}

/// The keys one `_id: value` clause allows.
fn clause(value: &Bson) -> IdKeys {
    let ops = match value {
        Bson::Document(d) if is_operator_doc(d) => d,
        v if plain(v) => return points([v.clone()]),
        _ => return IdKeys::Any,
    };
    let mut best = IdKeys::Any;
    let (mut from, mut to) = (Bound::Unbounded, Bound::Unbounded);
    let mut bracket: Option<u8> = None;
    for (op, v) in ops {
        match op.as_str() {
            "$eq" if plain(v) => best = points([v.clone()]),
            // Documents inside `$in` are left to the scan, as the filter's own `$in` fast
            // path does (query::parse::id_in_list).
            "$in" => match v {
                Bson::Array(items)
                    if items
                        .iter()
                        .all(|i| plain(i) && !matches!(i, Bson::Document(_))) =>
                {
                    let p = points(items.iter().cloned());
                    if narrower(&p, &best) {
                        best = p;
                    }
                }
                _ => {}
            },
            "$gt" | "$gte" | "$lt" | "$lte" if plain(v) => {
                let b = type_bracket(v);
                if bracket.is_some_and(|x| x != b) {
                    // Both ends must hold, and no value is in two brackets.
                    return IdKeys::Points(Vec::new());
                }
                bracket = Some(b);
                let key = OrderedBson(v.clone());
                let (slot, bound) = match op.as_str() {
                    "$gt" => (&mut from, Bound::Excluded(key)),
                    "$gte" => (&mut from, Bound::Included(key)),
                    "$lt" => (&mut to, Bound::Excluded(key)),
                    _ => (&mut to, Bound::Included(key)),
                };
                // A second bound on the same side is still checked by the filter.
                if matches!(slot, Bound::Unbounded) {
                    *slot = bound;
                }
            }
            _ => {}
        }
    }
    if !matches!(best, IdKeys::Any) {
        return best;
    }
    match bracket {
        Some(bracket) => {
            if let (
                Bound::Included(a) | Bound::Excluded(a),
                Bound::Included(b) | Bound::Excluded(b),
            ) = (&from, &to)
            {
                let both_included =
                    matches!((&from, &to), (Bound::Included(_), Bound::Included(_)));
                if a > b || (a == b && !both_included) {
                    return IdKeys::Points(Vec::new());
                }
            }
            IdKeys::Range(Box::new(IdRange { from, to, bracket }))
        }
        None => IdKeys::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn pts(v: &[Bson]) -> IdKeys {
        IdKeys::Points(v.iter().cloned().map(OrderedBson).collect())
    }

    #[test]
    fn equality_and_in_give_points() {
        assert_eq!(IdKeys::of(&doc! {"_id": 5}), pts(&[Bson::Int32(5)]));
        assert_eq!(IdKeys::of(&doc! {"_id": {"$eq": "a"}}), pts(&["a".into()]));
        assert_eq!(
            IdKeys::of(&doc! {"_id": {"$in": [3, 1, 3.0]}}),
            pts(&[Bson::Int32(1), Bson::Int32(3)])
        );
        // Other conditions beside `_id` only filter the candidates further.
        assert_eq!(
            IdKeys::of(&doc! {"x": 1, "_id": 2, "y": {"$gt": 0}}),
            pts(&[Bson::Int32(2)])
        );
        assert_eq!(
            IdKeys::of(&doc! {"$and": [{"x": 1}, {"_id": {"$in": [7]}}]}),
            pts(&[Bson::Int32(7)])
        );
        assert_eq!(
            IdKeys::of(&doc! {"_id": {"a": 1}}),
            pts(&[Bson::Document(doc! {"a": 1})])
        );
        assert_eq!(IdKeys::of(&doc! {"_id": {"$in": []}}), pts(&[]));
    }

    #[test]
    fn ranges_stay_in_their_bracket() {
        match IdKeys::of(&doc! {"_id": {"$gte": 2, "$lt": 9}}) {
            IdKeys::Range(r) => {
                let IdRange { from, to, bracket } = *r;
                assert_eq!(from, Bound::Included(OrderedBson(Bson::Int32(2))));
                assert_eq!(to, Bound::Excluded(OrderedBson(Bson::Int32(9))));
                assert_eq!(bracket, 10);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(IdKeys::of(&doc! {"_id": {"$gte": 1, "$lt": "z"}}), pts(&[]));
        assert_eq!(IdKeys::of(&doc! {"_id": {"$gt": 5, "$lt": 5}}), pts(&[]));
    }

    #[test]
    fn what_it_cannot_bound_scans() {
        for f in [
            doc! {},
            doc! {"x": 1},
            doc! {"_id": null},
            doc! {"_id": {"$ne": 1}},
            doc! {"_id": {"$in": [1, null]}},
            doc! {"_id": {"$in": [{"a": 1}]}},
            doc! {"_id": [1]},
            doc! {"$or": [{"_id": 1}, {"_id": 2}]},
            doc! {"_id": {"$gt": bson::Bson::MinKey}},
            doc! {"_id": bson::Regex { pattern: "^a".into(), options: String::new() }},
        ] {
            assert_eq!(IdKeys::of(&f), IdKeys::Any, "{f}");
        }
    }
}
