//! Update specifications: parsing the `u` of an update statement into a
//! replacement, an operator document or a pipeline, applying it to a
//! document, and building the seed document of an upsert.
//!
//! Semantics follow MongoDB 5.0+: operator paths are applied in
//! lexicographic order of their field names (numeric components
//! numerically), so new fields are appended in that order; conflicting
//! paths fail with 40 ConflictingUpdateOperators; changing `_id` fails with
//! 66 ImmutableField. `$setOnInsert` only acts in
//! [`apply_for_upsert_insert`]; [`apply`] ignores it.
//!
//! Layout: this file (parsing, applying each operator, upserts), `plan`
//! (operator order, path checks, positional operators), `arrays` (`$push`,
//! `$addToSet`, `$pull` details), `path` (setting and unsetting dotted paths).
//!
//! `$[]` updates every element of an array, `$[<id>]` the elements the statement's
//! `arrayFilters` match ([`apply_with_array_filters`]); `$` (the matched element)
//! needs [`apply_with_filter`]. Nuances of the real server not reproduced: `$` resolves
//! against top-level filter conditions only;
//! `$bit`; `$push` `$sort` by nested paths only through plain field names;
//! `$currentDate` with `timestamp` uses the wall clock rather than the
//! operation's oplog timestamp; Int64 overflow in `$inc` becomes a Double
//! instead of an error.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::aggregate::{add_numbers, apply_update_stage, mul_numbers};
use crate::bson_order::{compare, is_number};
use crate::query::{get_path, Filter, QueryError};

/// A parsed update (`u` of an update statement, or `findAndModify`'s `update`).
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateSpec {
    /// A whole new document (its `_id`, if any, must equal the old one).
    Replacement(Document),
    /// Update operators such as `{$set: {...}, $inc: {...}}`.
    Operators(Document),
    /// An aggregation pipeline of `$set`/`$unset`/`$project`/`$replaceRoot` stages.
    Pipeline(Vec<Document>),
}

const OPERATORS: &[&str] = &[
    "$set",
    "$unset",
    "$inc",
    "$mul",
    "$min",
    "$max",
    "$push",
    "$pull",
    "$pullAll",
    "$addToSet",
    "$pop",
    "$rename",
    "$currentDate",
    "$setOnInsert",
];

impl UpdateSpec {
    pub fn parse(u: &Bson) -> Result<UpdateSpec, QueryError> {
        match u {
            Bson::Document(d) => {
                let is_ops = d.keys().next().is_some_and(|k| k.starts_with('$'));
                if !is_ops {
                    // mongod's storage validation of a replacement: no `$` names at the top
                    // level (nested ones are allowed since 5.0), except a DBRef's.
                    let dollar = d.keys().find(|k| {
                        k.starts_with('$') && !matches!(k.as_str(), "$ref" | "$id" | "$db")
                    });
                    if let Some(k) = dollar {
                        return Err(QueryError::new(
                            52,
                            "DollarPrefixedFieldName",
                            format!(
                                "The dollar ($) prefixed field '{k}' in '{k}' is not allowed in \
                                 the context of an update's replacement document. Consider \
                                 using an aggregation pipeline with $replaceWith."
                            ),
                        ));
                    }
                    return Ok(UpdateSpec::Replacement(d.clone()));
                }
                for (op, arg) in d {
                    if !OPERATORS.contains(&op.as_str()) {
                        return Err(QueryError::failed_to_parse(format!(
                            "Unknown modifier: {op}. Expected a valid update modifier or \
                             pipeline-style update specified as an array"
                        )));
                    }
                    if !matches!(arg, Bson::Document(_)) {
                        return Err(QueryError::failed_to_parse(format!(
                            "Modifiers operate on fields but we found type {} instead. For \
                             example: {{$mod: {{<field>: ...}}}} not {{{op}: {arg}}}",
                            crate::aggregate::type_name(arg)
                        )));
                    }
                }
                // Surfaces path conflicts and malformed paths at parse time.
                collect_ops(d, true)?;
                Ok(UpdateSpec::Operators(d.clone()))
            }
            Bson::Array(stages) => {
                let mut out = Vec::with_capacity(stages.len());
                for s in stages {
                    match s {
                        Bson::Document(d) => out.push(d.clone()),
                        _ => {
                            return Err(QueryError::failed_to_parse(
                                "Each element of the 'pipeline' array must be an object",
                            ))
                        }
                    }
                }
                Ok(UpdateSpec::Pipeline(out))
            }
            _ => Err(QueryError::failed_to_parse(
                "Update argument must be either an object or an array",
            )),
        }
    }
}

/// Applies an update to an existing document and returns the new document.
pub fn apply(spec: &UpdateSpec, doc: &Document) -> Result<Document, QueryError> {
    apply_inner(spec, doc, false, None, &ArrayFilters::default())
}

/// [`apply`] with the statement's `arrayFilters` for its `$[<identifier>]` paths.
pub fn apply_with_array_filters(
    spec: &UpdateSpec,
    doc: &Document,
    filters: &ArrayFilters,
) -> Result<Document, QueryError> {
    apply_inner(spec, doc, false, None, filters)
}

/// Checks `arrayFilters` against the update's paths as mongod does before running it:
/// every `$[<identifier>]` has a filter, every filter is used, none with a replacement
/// or pipeline.
pub fn check_array_filters(spec: &UpdateSpec, filters: &ArrayFilters) -> Result<(), QueryError> {
    match spec {
        UpdateSpec::Operators(ops) => {
            let paths: Vec<String> = ops
                .values()
                .filter_map(Bson::as_document)
                .flat_map(|f| f.keys().cloned())
                .collect();
            filters.check_paths(paths.iter().map(String::as_str))
        }
        _ if filters.is_empty() => Ok(()),
        UpdateSpec::Pipeline(_) => Err(QueryError::failed_to_parse(
            "arrayFilters may not be specified for pipeline-style updates",
        )),
        UpdateSpec::Replacement(_) => Err(QueryError::failed_to_parse(
            "arrayFilters may not be specified for replacement-style updates",
        )),
    }
}

/// [`apply`] for an update whose paths may use the positional operator
/// `$`, which stands for the index of the array element `filter` matched.
pub fn apply_with_filter(
    spec: &UpdateSpec,
    doc: &Document,
    filter: &Filter,
) -> Result<Document, QueryError> {
    apply_inner(spec, doc, false, Some(filter), &ArrayFilters::default())
}

/// Applies an update to the seed of an upsert (see [`upsert_seed`]):
/// `$setOnInsert` takes effect, and `_id` may be set when the seed has none.
/// The caller adds a generated `_id` at the front when the result lacks one.
pub fn apply_for_upsert_insert(spec: &UpdateSpec, seed: &Document) -> Result<Document, QueryError> {
    let out = apply_inner(spec, seed, true, None, &ArrayFilters::default())?;
    Ok(id_first(out))
}

/// Moves `_id` to the front, where the server always stores it.
fn id_first(doc: Document) -> Document {
    match doc.keys().next() {
        Some(k) if k == "_id" => doc,
        _ if !doc.contains_key("_id") => doc,
        _ => {
            let mut doc = doc;
            let mut out = Document::new();
            if let Some(id) = doc.remove("_id") {
                out.insert("_id", id);
            }
            out.extend(doc);
            out
        }
    }
}

fn apply_inner(
    spec: &UpdateSpec,
    doc: &Document,
    inserting: bool,
    filter: Option<&Filter>,
    array_filters: &ArrayFilters,
) -> Result<Document, QueryError> {
    let out = match spec {
        UpdateSpec::Replacement(r) => {
            let mut out = Document::new();
            if let Some(id) = r.get("_id").or_else(|| doc.get("_id")) {
                out.insert("_id", id.clone());
            }
            for (k, v) in r {
                if k != "_id" {
                    out.insert(k.clone(), v.clone());
                }
            }
            out
        }
        UpdateSpec::Operators(ops) => {
            let mut out = doc.clone();
            for (op, path, arg) in collect_ops(ops, inserting)? {
                let path = resolve_positional(&out, &path, filter)?;
                for concrete in expand_positional(&out, &path, array_filters)? {
                    apply_op(&mut out, op, &concrete, arg)?;
                }
            }
            out
        }
        UpdateSpec::Pipeline(stages) => {
            let mut out = doc.clone();
            for stage in stages {
                out = apply_update_stage(stage, out)?;
            }
            // Like a replacement, a pipeline result without `_id` keeps the old one.
            if let (None, Some(id)) = (out.get("_id"), doc.get("_id")) {
                let mut with_id = Document::new();
                with_id.insert("_id", id.clone());
                with_id.extend(out);
                out = with_id;
            }
            out
        }
    };
    check_id_unchanged(doc, &out, spec)?;
    Ok(out)
}

fn check_id_unchanged(
    pre: &Document,
    post: &Document,
    spec: &UpdateSpec,
) -> Result<(), QueryError> {
    let Some(old) = pre.get("_id") else {
        return Ok(());
    };
    // An operator may not touch `_id` at all (1 -> 1.0 is a change); a
    // replacement or pipeline may write an equal value of another numeric
    // type, which mongod then stores (it compares values, not bytes).
    let same = |new: &Bson| match spec {
        UpdateSpec::Operators(_) => new == old,
        _ => compare(new, old).is_eq(),
    };
    match post.get("_id") {
        Some(new) if same(new) => Ok(()),
        other => Err(QueryError::new(
            66,
            "ImmutableField",
            match spec {
                UpdateSpec::Operators(_) => {
                    "Performing an update on the path '_id' would modify the immutable field '_id'"
                        .to_string()
                }
                _ => format!(
                    "After applying the update, the (immutable) field '_id' was found to have \
                     been altered to _id: {}",
                    other
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "missing".into())
                ),
            },
        )),
    }
}

fn apply_op(doc: &mut Document, op: &str, path: &str, arg: &Bson) -> Result<(), QueryError> {
    let current = get_path(doc, path).cloned();
    match op {
        "$set" | "$setOnInsert" => set_path_value(doc, path, arg.clone()),
        "$unset" => {
            unset_path(doc, path);
            Ok(())
        }
        "$inc" | "$mul" => {
            if !is_number(arg) {
                return Err(QueryError::type_mismatch(format!(
                    "Cannot {} with non-numeric argument: {{{path}: {arg}}}",
                    if op == "$inc" {
                        "increment"
                    } else {
                        "multiply"
                    }
                )));
            }
            let new = match &current {
                None => {
                    if op == "$inc" {
                        arg.clone()
                    } else {
                        mul_numbers(&Bson::Int32(0), arg)
                    }
                }
                Some(v) if is_number(v) => {
                    if op == "$inc" {
                        add_numbers(v, arg)
                    } else {
                        mul_numbers(v, arg)
                    }
                }
                Some(v) => {
                    return Err(QueryError::type_mismatch(format!(
                        "Cannot apply {op} to a value of non-numeric type. {{_id: {}}} has the \
                         field '{}' of non-numeric type {}",
                        doc.get("_id").map(|v| v.to_string()).unwrap_or_default(),
                        last_component(path),
                        crate::aggregate::type_name(v)
                    )))
                }
            };
            set_path_value(doc, path, new)
        }
        "$min" | "$max" => {
            let replace = match &current {
                None => true,
                Some(v) => {
                    let ord = compare(arg, v);
                    (op == "$min" && ord == Ordering::Less)
                        || (op == "$max" && ord == Ordering::Greater)
                }
            };
            if replace {
                set_path_value(doc, path, arg.clone())?;
            }
            Ok(())
        }
        "$push" | "$addToSet" => {
            let mut items = existing_array(doc, op, path, current)?;
            if op == "$push" {
                push(&mut items, arg)?;
            } else {
                let values = match each_values(arg)? {
                    Some(vals) => vals,
                    None => vec![arg.clone()],
                };
                for v in values {
                    if !items
                        .iter()
                        .any(|i| compare(i, &v) == Ordering::Equal && same_type(i, &v))
                    {
                        items.push(v);
                    }
                }
            }
            set_path_value(doc, path, Bson::Array(items))
        }
        "$pop" => {
            let Some(current) = current else {
                return Ok(());
            };
            let Bson::Array(mut items) = current else {
                return Err(QueryError::type_mismatch(format!(
                    "Path '{path}' contains an element of non-array type '{}'",
                    crate::aggregate::type_name(&current)
                )));
            };
            match crate::bson_order::number_as_f64(arg) {
                Some(n) if n >= 1.0 => {
                    items.pop();
                }
                Some(n) if n <= -1.0 => {
                    if !items.is_empty() {
                        items.remove(0);
                    }
                }
                _ => {
                    return Err(QueryError::failed_to_parse(format!(
                        "$pop expects 1 or -1, found: {arg}"
                    )))
                }
            }
            set_path_value(doc, path, Bson::Array(items))
        }
        "$pull" | "$pullAll" => {
            let Some(current) = current else {
                return Ok(());
            };
            let Bson::Array(items) = current else {
                return Err(QueryError::bad_value(format!(
                    "Cannot apply {op} to a non-array value"
                )));
            };
            let kept: Vec<Bson> = if op == "$pullAll" {
                let Bson::Array(remove) = arg else {
                    return Err(QueryError::bad_value(format!(
                        "$pullAll requires an array argument but was given a {}",
                        crate::aggregate::type_name(arg)
                    )));
                };
                items
                    .into_iter()
                    .filter(|i| !remove.iter().any(|r| compare(i, r) == Ordering::Equal))
                    .collect()
            } else {
                let matcher = PullMatcher::new(arg)?;
                items.into_iter().filter(|i| !matcher.matches(i)).collect()
            };
            set_path_value(doc, path, Bson::Array(kept))
        }
        "$rename" => {
            let Some(value) = current else { return Ok(()) };
            let to = arg.as_str().unwrap_or_default();
            if path.split('.').count() > 1 && through_array(doc, path) {
                return Err(QueryError::bad_value(format!(
                    "The source field cannot be an array element, '{path}' in doc with _id"
                )));
            }
            unset_path(doc, path);
            set_path_value(doc, to, value)
        }
        "$currentDate" => {
            let now = bson::DateTime::now();
            let value = match arg {
                Bson::Boolean(_) => Bson::DateTime(now),
                Bson::Document(d) => match d.get_str("$type") {
                    Ok("date") => Bson::DateTime(now),
                    Ok("timestamp") => Bson::Timestamp(bson::Timestamp {
                        time: u32::try_from(now.timestamp_millis() / 1000).unwrap_or(0),
                        increment: 1,
                    }),
                    _ => {
                        return Err(QueryError::bad_value(
                            "The '$type' string field is required to be 'date' or 'timestamp'",
                        ))
                    }
                },
                _ => {
                    return Err(QueryError::bad_value(format!(
                        "{arg} is not valid type for $currentDate. Please use a boolean ('true') \
                         or a $type expression ({{$type: 'timestamp/date'}})."
                    )))
                }
            };
            set_path_value(doc, path, value)
        }
        _ => Err(QueryError::failed_to_parse(format!(
            "Unknown modifier: {op}"
        ))),
    }
}

fn last_component(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn same_type(a: &Bson, b: &Bson) -> bool {
    crate::bson_order::type_bracket(a) == crate::bson_order::type_bracket(b)
}

fn through_array(doc: &Document, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    (1..parts.len()).any(|i| matches!(get_path(doc, &parts[..i].join(".")), Some(Bson::Array(_))))
}

mod arrays;
mod path;
mod plan;

use arrays::{each_values, existing_array, push, PullMatcher};
pub(crate) use path::set_path_value;
use path::unset_path;
use plan::resolve_positional;
pub use plan::ArrayFilters;
pub(crate) use plan::{collect_ops, expand_all_positional, expand_positional, uses_array_filters};

// ---- upsert ----

/// The document an upsert starts from: the filter's equality conditions
/// (`{a: v}`, `{a: {$eq: v}}`, dotted paths, inside `$and`), with `_id` first.
pub fn upsert_seed(filter: &Document) -> Document {
    let mut seed = Document::new();
    seed_from(filter, &mut seed);
    id_first(seed)
}

fn seed_from(filter: &Document, seed: &mut Document) {
    for (key, value) in filter {
        if key == "$and" {
            if let Bson::Array(items) = value {
                for item in items {
                    if let Bson::Document(d) = item {
                        seed_from(d, seed);
                    }
                }
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        let equality = match value {
            Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                d.get("$eq")
            }
            Bson::RegularExpression(_) => None,
            other => Some(other),
        };
        if let Some(v) = equality {
            if get_path(seed, key).is_none() {
                // A conflicting path (e.g. `a` after `a.b`) is left out rather than failing.
                let _ = set_path_value(seed, key, v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn upd(u: Document, d: Document) -> Result<Document, QueryError> {
        apply(&UpdateSpec::parse(&Bson::Document(u))?, &d)
    }

    #[test]
    fn parse_kinds() {
        assert!(matches!(
            UpdateSpec::parse(&Bson::Document(doc! {"a": 1})).unwrap(),
            UpdateSpec::Replacement(_)
        ));
        assert!(matches!(
            UpdateSpec::parse(&Bson::Document(doc! {"$set": {"a": 1}})).unwrap(),
            UpdateSpec::Operators(_)
        ));
        assert!(matches!(
            UpdateSpec::parse(&bson::bson!([{"$set": {"a": 1}}])).unwrap(),
            UpdateSpec::Pipeline(_)
        ));
        assert_eq!(
            UpdateSpec::parse(&Bson::Document(doc! {"$bogus": {"a": 1}}))
                .unwrap_err()
                .code,
            9
        );
        assert_eq!(
            UpdateSpec::parse(&Bson::Document(doc! {"$set": 1}))
                .unwrap_err()
                .code,
            9
        );
        assert_eq!(UpdateSpec::parse(&Bson::Int32(1)).unwrap_err().code, 9);
        let err = UpdateSpec::parse(&Bson::Document(doc! {"$set": {"a": 1}, "$inc": {"a.b": 1}}))
            .unwrap_err();
        assert_eq!(
            (err.code, err.code_name),
            (40, "ConflictingUpdateOperators")
        );
        assert_eq!(
            UpdateSpec::parse(&Bson::Document(doc! {"$set": {"a..b": 1}}))
                .unwrap_err()
                .code,
            56
        );
    }

    #[test]
    fn set_unset_and_field_order() {
        let d = doc! {"_id": 1, "a": 1, "b": {"c": 1, "d": 2}};
        let out = upd(
            doc! {"$set": {"z": 1, "a": 5, "b.c": 9, "n.m": true}, "$unset": {"b.d": ""}},
            d,
        )
        .unwrap();
        // Existing fields stay in place; new ones are appended in lexicographic order.
        assert_eq!(
            out,
            doc! {"_id": 1, "a": 5, "b": {"c": 9}, "n": {"m": true}, "z": 1}
        );
        let out = upd(doc! {"$set": {"arr.3": "x"}}, doc! {"_id": 1, "arr": [1]}).unwrap();
        assert_eq!(out, doc! {"_id": 1, "arr": [1, null, null, "x"]});
        let out = upd(
            doc! {"$unset": {"arr.0": 1}},
            doc! {"_id": 1, "arr": [1, 2]},
        )
        .unwrap();
        assert_eq!(out, doc! {"_id": 1, "arr": [null, 2]});
        let err = upd(doc! {"$set": {"a.b": 1}}, doc! {"_id": 1, "a": 5}).unwrap_err();
        assert_eq!((err.code, err.code_name), (28, "PathNotViable"));
        let out = upd(doc! {"$set": {"10": 1, "9": 1, "b": 1}}, doc! {"_id": 1}).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), vec!["_id", "9", "10", "b"]);
    }

    #[test]
    fn id_is_immutable() {
        let err = upd(doc! {"$set": {"_id": 2}}, doc! {"_id": 1}).unwrap_err();
        assert_eq!((err.code, err.code_name), (66, "ImmutableField"));
        assert_eq!(
            upd(doc! {"_id": 2, "a": 1}, doc! {"_id": 1})
                .unwrap_err()
                .code,
            66
        );
        assert_eq!(
            upd(doc! {"$set": {"_id": 1}}, doc! {"_id": 1}).unwrap(),
            doc! {"_id": 1}
        );
    }

    #[test]
    fn replacement_refuses_top_level_dollar_names() {
        let err = UpdateSpec::parse(&Bson::Document(doc! {"a": 1, "$set": {"b": 1}})).unwrap_err();
        assert_eq!((err.code, err.code_name), (52, "DollarPrefixedFieldName"));
        assert!(err
            .message
            .starts_with("The dollar ($) prefixed field '$set' in '$set'"));
        assert!(UpdateSpec::parse(&Bson::Document(doc! {"a": {"$b": 1}})).is_ok());
    }

    #[test]
    fn replacement_keeps_id_first() {
        let out = upd(doc! {"a": 1, "_id": 7}, doc! {"_id": 7, "old": true}).unwrap();
        assert_eq!(out, doc! {"_id": 7, "a": 1});
        let out = upd(doc! {"b": 2}, doc! {"_id": 7, "old": true}).unwrap();
        assert_eq!(out, doc! {"_id": 7, "b": 2});
    }

    #[test]
    fn arithmetic_operators() {
        let d = doc! {"_id": 1, "n": 5, "f": 1.5, "s": "x", "p": bson::Decimal128::from_bytes("1.25".parse::<bson::Decimal128>().unwrap().bytes())};
        let out = upd(
            doc! {"$inc": {"n": 2, "f": 1, "new": 3i64}, "$mul": {"p": 2, "m": 2.0}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(out.get("n"), Some(&Bson::Int32(7)));
        assert_eq!(out.get("f"), Some(&Bson::Double(2.5)));
        assert_eq!(out.get("new"), Some(&Bson::Int64(3)));
        assert_eq!(
            out.get("p"),
            Some(&Bson::Decimal128("2.50".parse().unwrap()))
        );
        assert_eq!(out.get("m"), Some(&Bson::Double(0.0)));
        assert_eq!(
            upd(doc! {"$inc": {"s": 1}}, d.clone()).unwrap_err().code,
            14
        );
        assert_eq!(
            upd(doc! {"$inc": {"n": "a"}}, d.clone()).unwrap_err().code,
            14
        );
        let out = upd(doc! {"$min": {"n": 3, "x": 1}, "$max": {"f": 1.0}}, d).unwrap();
        assert_eq!(out.get("n"), Some(&Bson::Int32(3)));
        assert_eq!(out.get("x"), Some(&Bson::Int32(1)));
        assert_eq!(out.get("f"), Some(&Bson::Double(1.5)));
    }

    #[test]
    fn array_operators() {
        let d = doc! {"_id": 1, "a": [1, 2, 3], "s": ["x"], "subs": [{"k": 1}, {"k": 2}]};
        let out = upd(doc! {"$push": {"a": 4, "new": "v"}}, d.clone()).unwrap();
        assert_eq!(out.get_array("a").unwrap().len(), 4);
        assert_eq!(
            out.get_array("new").unwrap(),
            &vec![Bson::String("v".into())]
        );
        let out = upd(
            doc! {"$push": {"a": {"$each": [9, 8], "$position": 0, "$slice": 3}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(
            out.get_array("a").unwrap(),
            &vec![9.into(), 8.into(), 1.into()]
        );
        let out = upd(
            doc! {"$push": {"a": {"$each": [0], "$sort": -1, "$slice": -2}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(out.get_array("a").unwrap(), &vec![1.into(), 0.into()]);
        let out = upd(
            doc! {"$addToSet": {"s": {"$each": ["x", "y", "y"]}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(
            out.get_array("s").unwrap(),
            &vec![Bson::String("x".into()), Bson::String("y".into())]
        );
        let out = upd(
            doc! {"$pull": {"a": {"$gte": 2}, "subs": {"k": 1}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(out.get_array("a").unwrap(), &vec![Bson::Int32(1)]);
        assert_eq!(
            out.get_array("subs").unwrap(),
            &vec![Bson::Document(doc! {"k": 2})]
        );
        let out = upd(
            doc! {"$pullAll": {"a": [1, 3]}, "$pop": {"s": 1}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(out.get_array("a").unwrap(), &vec![Bson::Int32(2)]);
        assert!(out.get_array("s").unwrap().is_empty());
        let out = upd(doc! {"$pop": {"a": -1}}, d.clone()).unwrap();
        assert_eq!(out.get_array("a").unwrap(), &vec![2.into(), 3.into()]);
        assert_eq!(upd(doc! {"$push": {"_id": 1}}, d).unwrap_err().code, 2);
    }

    #[test]
    fn rename_and_current_date() {
        let d = doc! {"_id": 1, "a": 1, "b": {"c": 2}};
        let out = upd(doc! {"$rename": {"a": "z", "b.c": "b.d"}}, d.clone()).unwrap();
        assert_eq!(out, doc! {"_id": 1, "b": {"d": 2}, "z": 1});
        let out = upd(doc! {"$rename": {"nope": "y"}}, d.clone()).unwrap();
        assert_eq!(out, d);
        let out = upd(
            doc! {"$currentDate": {"t": true, "ts": {"$type": "timestamp"}}},
            d,
        )
        .unwrap();
        assert!(matches!(out.get("t"), Some(Bson::DateTime(_))));
        assert!(matches!(out.get("ts"), Some(Bson::Timestamp(_))));
    }

    #[test]
    fn pipeline_updates() {
        let d = doc! {"_id": 1, "arr": [1, 2, 3], "a": 2};
        let spec = UpdateSpec::parse(
            &bson::bson!([{"$set": {"arr": [1, 2], "b": {"$add": ["$a", 1]}}}, {"$unset": "a"}]),
        )
        .unwrap();
        assert_eq!(
            apply(&spec, &d).unwrap(),
            doc! {"_id": 1, "arr": [1, 2], "b": 3}
        );
        let spec = UpdateSpec::parse(&bson::bson!([{"$replaceWith": {"x": 1}}])).unwrap();
        assert_eq!(apply(&spec, &d).unwrap(), doc! {"_id": 1, "x": 1});
        let spec = UpdateSpec::parse(&bson::bson!([{"$match": {}}])).unwrap();
        assert_eq!(apply(&spec, &d).unwrap_err().code, 72);
    }

    #[test]
    fn upserts() {
        let seed = upsert_seed(
            &doc! {"a": 1, "b.c": {"$eq": 2}, "n": {"$gt": 1}, "$and": [{"x": "y"}], "_id": 5},
        );
        assert_eq!(seed, doc! {"_id": 5, "a": 1, "b": {"c": 2}, "x": "y"});
        let spec = UpdateSpec::parse(&Bson::Document(
            doc! {"$set": {"s": 1}, "$setOnInsert": {"created": true}},
        ))
        .unwrap();
        let inserted = apply_for_upsert_insert(&spec, &seed).unwrap();
        assert_eq!(inserted.get("created"), Some(&Bson::Boolean(true)));
        let updated = apply(&spec, &seed).unwrap();
        assert_eq!(updated.get("created"), None);
        assert_eq!(updated.get("s"), Some(&Bson::Int32(1)));
        let spec = UpdateSpec::parse(&Bson::Document(doc! {"$set": {"_id": 9}})).unwrap();
        assert_eq!(
            apply_for_upsert_insert(&spec, &doc! {"a": 1}).unwrap(),
            doc! {"_id": 9, "a": 1}
        );
    }

    #[test]
    fn nested_and_indexed_paths() {
        let d = doc! {"_id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]};
        let out = upd(
            doc! {"$inc": {"items.1.qty": 5, "stats.count": 1}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(
            out,
            doc! {"_id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 7}], "stats": {"count": 1}}
        );
        let later = bson::DateTime::from_millis(2_000);
        let out = upd(
            doc! {"$max": {"when": later}},
            doc! {"_id": 1, "when": bson::DateTime::from_millis(1_000)},
        )
        .unwrap();
        assert_eq!(out.get_datetime("when").unwrap(), &later);
        let err = upd(doc! {"$set": {"items.x": 1}}, d).unwrap_err();
        assert_eq!(err.code, 28);
        // `$[x]` needs an array filter for `x`, and every filter must be used.
        let spec = UpdateSpec::parse(&Bson::Document(doc! {"$set": {"a.$[x].b": 1}})).unwrap();
        let none = ArrayFilters::default();
        assert_eq!(check_array_filters(&spec, &none).unwrap_err().code, 2);
        let unused = ArrayFilters::parse(Some(&bson::bson!([{"x.b": 1}, {"y": 2}]))).unwrap();
        assert_eq!(check_array_filters(&spec, &unused).unwrap_err().code, 9);
        let filters = ArrayFilters::parse(Some(&bson::bson!([{"x.b": {"$gt": 1}}]))).unwrap();
        check_array_filters(&spec, &filters).unwrap();
        let d = doc! {"_id": 1, "a": [{"b": 1}, {"b": 5}, {"b": 3}]};
        let out = apply_with_array_filters(&spec, &d, &filters).unwrap();
        assert_eq!(out, doc! {"_id": 1, "a": [{"b": 1}, {"b": 1}, {"b": 1}]});
        let dup = ArrayFilters::parse(Some(&bson::bson!([{"x": 1}, {"x": 2}])));
        assert_eq!(dup.unwrap_err().code, 9);
    }

    proptest::proptest! {
        #[test]
        fn set_then_get_returns_the_value(
            path in "[a-c]{1,2}(\\.[a-c]{1,2}){0,2}",
            value in proptest::prelude::any::<i64>(),
        ) {
            let spec = UpdateSpec::parse(&Bson::Document(doc! {"$set": {path.as_str(): value}})).unwrap();
            let out = apply(&spec, &doc! {"_id": 1, "a": {"b": 1}, "c": 2}).unwrap_or_default();
            if !out.is_empty() {
                proptest::prop_assert_eq!(get_path(&out, &path), Some(&Bson::Int64(value)));
                proptest::prop_assert_eq!(out.keys().next().map(String::as_str), Some("_id"));
            }
        }
    }

    #[test]
    fn all_positional_updates_every_element() {
        let d = doc! {"_id": 1, "items": [{"qty": 1}, {"qty": 2}], "n": [1, 2, 3]};
        let out = upd(
            doc! {"$inc": {"items.$[].qty": 10}, "$set": {"n.$[]": 0}},
            d,
        )
        .unwrap();
        assert_eq!(
            out,
            doc! {"_id": 1, "items": [{"qty": 11}, {"qty": 12}], "n": [0, 0, 0]}
        );
        let err = upd(doc! {"$set": {"missing.$[]": 1}}, doc! {"_id": 1}).unwrap_err();
        assert_eq!(err.code, 2);
    }

    #[test]
    fn positional_operator_uses_the_filter() {
        let d = doc! {"_id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]};
        let spec = UpdateSpec::parse(&Bson::Document(doc! {"$set": {"items.$.qty": 7}})).unwrap();
        let filter = Filter::parse(&doc! {"_id": 1, "items.sku": "b"}).unwrap();
        let out = apply_with_filter(&spec, &d, &filter).unwrap();
        assert_eq!(
            out,
            doc! {"_id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 7}]}
        );
        let err = apply(&spec, &d).unwrap_err();
        assert_eq!(
            err.message,
            "The positional operator did not find the match needed from the query."
        );
    }
}
