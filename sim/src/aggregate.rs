//! Aggregation: the ordinary pipeline stages `aggregate` needs, the stages a
//! `$changeStream` pipeline may carry, the stages of a pipeline-style update,
//! and the small expression language they share (field paths, `$literal`,
//! arithmetic, comparisons, `$cond`, `$ifNull`, `$concat`, ...).
//!
//! Also owns numeric arithmetic with MongoDB's type promotion (Int32 →
//! Int64 → Double, Decimal128 wins), which `update` reuses for `$inc`/`$mul`.
//!
//! Layout: this file (stages, `$group`, `$unwind`), `expression`, `arith`,
//! `sample` (`$sample`'s parsing and its two ways of picking documents), `documents`
//! (`$documents`).
//!
//! Nuances of the real server not reproduced: `$group` emits groups in
//! first-seen order (the server's order is unspecified); `$lookup`,
//! `$facet`, `$bucket`, window functions and most expression operators are
//! missing (unknown stage → 40324, unknown expression operator → 168
//! InvalidPipelineOperator); Int64 overflow in arithmetic falls back to
//! Double instead of erroring; Decimal128 arithmetic truncates instead of
//! rounding half-even past 34 digits.

use std::cmp::Ordering;

use bson::{doc, Bson, Document};

use crate::bson_order::{compare, number_as_f64, number_as_i64};
use crate::query::{compare_by_keys, parse_sort, Filter, Projection, QueryError};

/// Runs an ordinary aggregation pipeline over documents.
pub fn run_stages(docs: Vec<Document>, stages: &[Document]) -> Result<Vec<Document>, QueryError> {
    let mut docs = docs;
    for stage in stages {
        let (name, spec) = stage_parts(stage)?;
        docs = match name {
            "$match" => {
                let filter = Filter::parse(as_doc(name, spec)?)?;
                docs.into_iter().filter(|d| filter.matches(d)).collect()
            }
            "$sort" => {
                let keys = parse_sort(as_doc(name, spec)?)?;
                if keys.is_empty() {
                    return Err(QueryError::new(
                        15976,
                        "Location15976",
                        "$sort stage must have at least one sort key",
                    ));
                }
                docs.sort_by(|a, b| compare_by_keys(a, b, &keys));
                docs
            }
            "$skip" => {
                let n = non_negative(name, spec)?;
                docs.into_iter().skip(n).collect()
            }
            "$limit" => {
                let n = non_negative(name, spec)?;
                if n == 0 {
                    return Err(QueryError::new(
                        15958,
                        "Location15958",
                        "the limit must be positive",
                    ));
                }
                docs.truncate(n);
                docs
            }
            "$count" => {
                let Bson::String(field) = spec else {
                    return Err(QueryError::new(
                        40156,
                        "Location40156",
                        "the count field must be a non-empty string",
                    ));
                };
                if field.is_empty() || field.starts_with('$') || field.contains('.') {
                    return Err(QueryError::new(
                        40156,
                        "Location40156",
                        "the count field must be a non-empty string",
                    ));
                }
                if docs.is_empty() {
                    Vec::new()
                } else {
                    vec![doc! { field.as_str(): count_value(docs.len()) }]
                }
            }
            "$sample" => {
                // Not the leading stage of a collection's pipeline (that one
                // the caller answers, see `sample`): mongod's random sort.
                let size = sample::parse(spec)?;
                let picks = sample::random_sort(docs.len(), size, &mut rand::thread_rng());
                let mut slots: Vec<Option<Document>> = docs.into_iter().map(Some).collect();
                picks
                    .into_iter()
                    .filter_map(|i| slots.get_mut(i).and_then(Option::take))
                    .collect()
            }
            "$group" => group(docs, as_doc(name, spec)?)?,
            "$unwind" => unwind(docs, spec)?,
            "$project" | "$addFields" | "$set" | "$unset" | "$replaceRoot" | "$replaceWith" => {
                let mut out = Vec::with_capacity(docs.len());
                for d in docs {
                    if let Some(d) = apply_document_stage(name, spec, d)? {
                        out.push(d);
                    }
                }
                out
            }
            // Refused whether or not there are documents to run it on (mongod parses the
            // whole pipeline before reading anything).
            _ => return Err(unknown_stage(name)),
        };
    }
    Ok(docs)
}

/// Applies the stages that follow `$changeStream` to one event. `None` means
/// the event was filtered out. A stage that changes the event's `_id` (the
/// resume token) fails the stream with 280, as the server does.
pub fn apply_event_stages(
    event: Document,
    stages: &[Document],
) -> Result<Option<Document>, QueryError> {
    let original_id = event.get("_id").cloned();
    let mut current = event;
    for stage in stages {
        let (name, spec) = stage_parts(stage)?;
        match name {
            "$match" | "$project" | "$addFields" | "$set" | "$unset" | "$replaceRoot"
            | "$replaceWith" => {}
            "$sort" | "$skip" | "$limit" | "$count" | "$group" | "$unwind" | "$lookup" | "$out"
            | "$merge" | "$facet" | "$sample" | "$changeStream" => {
                return Err(QueryError::new(
                    20,
                    "IllegalOperation",
                    format!("Stage {name} is not permitted in a $changeStream pipeline"),
                ))
            }
            _ => return Err(unknown_stage(name)),
        }
        match apply_document_stage(name, spec, current)? {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    let unchanged = match (&original_id, current.get("_id")) {
        (Some(a), Some(b)) => compare(a, b) == Ordering::Equal && a == b,
        (None, None) => true,
        _ => false,
    };
    if !unchanged {
        return Err(QueryError::new(
            280,
            "ChangeStreamFatalError",
            "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. \
             Modifying the _id field of an event makes it impossible to resume the stream from that point. \
             Only transformations that retain the unmodified _id field are allowed.",
        ));
    }
    Ok(Some(current))
}

/// Applies one stage of a pipeline-style update (`$set`/`$addFields`,
/// `$unset`, `$project`, `$replaceRoot`/`$replaceWith`).
pub(crate) fn apply_update_stage(stage: &Document, doc: Document) -> Result<Document, QueryError> {
    let (name, spec) = stage_parts(stage)?;
    match name {
        "$set" | "$addFields" | "$unset" | "$project" | "$replaceRoot" | "$replaceWith" => {
            // These stages never filter, so `None` cannot happen here.
            Ok(apply_document_stage(name, spec, doc)?.unwrap_or_default())
        }
        _ => Err(QueryError::new(
            72,
            "InvalidOptions",
            format!("{name} is not allowed to be used within an update"),
        )),
    }
}

fn stage_parts(stage: &Document) -> Result<(&str, &Bson), QueryError> {
    let mut iter = stage.iter();
    match (iter.next(), iter.next()) {
        (Some((name, spec)), None) => Ok((name.as_str(), spec)),
        _ => Err(QueryError::new(
            40323,
            "Location40323",
            "A pipeline stage specification object must contain exactly one field.",
        )),
    }
}

fn unknown_stage(name: &str) -> QueryError {
    QueryError::new(
        40324,
        "Location40324",
        format!("Unrecognized pipeline stage name: '{name}'"),
    )
}

fn as_doc<'a>(name: &str, spec: &'a Bson) -> Result<&'a Document, QueryError> {
    match spec {
        Bson::Document(d) => Ok(d),
        _ => Err(QueryError::failed_to_parse(format!(
            "{name} specification must be an object"
        ))),
    }
}

fn non_negative(name: &str, spec: &Bson) -> Result<usize, QueryError> {
    match number_as_i64(spec) {
        Some(n) if n >= 0 => Ok(n as usize),
        _ => Err(QueryError::new(
            15956,
            "Location15956",
            format!("invalid argument to {name} stage: Expected a non-negative number"),
        )),
    }
}

fn count_value(n: usize) -> Bson {
    i32::try_from(n)
        .map(Bson::Int32)
        .unwrap_or(Bson::Int64(n as i64))
}

/// One-document stages; `None` when `$match` rejects the document.
fn apply_document_stage(
    name: &str,
    spec: &Bson,
    doc: Document,
) -> Result<Option<Document>, QueryError> {
    match name {
        "$match" => {
            let filter = Filter::parse(as_doc(name, spec)?)?;
            Ok(filter.matches(&doc).then_some(doc))
        }
        "$project" => {
            let spec = as_doc(name, spec)?;
            if spec.is_empty() {
                return Err(QueryError::new(
                    51272,
                    "Location51272",
                    "projection specification must have at least one field",
                ));
            }
            Ok(Some(Projection::parse(spec)?.apply(&doc)?))
        }
        "$addFields" | "$set" => {
            let spec = as_doc(name, spec)?;
            let mut out = doc.clone();
            for (path, expr) in spec {
                add_field(&mut out, &doc, path, expr)?;
            }
            Ok(Some(out))
        }
        "$unset" => {
            let fields: Vec<&str> = match spec {
                Bson::String(s) => vec![s.as_str()],
                Bson::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().ok_or_else(|| QueryError::new(31120, "Location31120", "$unset specification must be a string or an array containing only string values")))
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(QueryError::new(31002, "Location31002", "$unset specification must be a string or an array"))
                }
            };
            let mut proj = Document::new();
            for f in fields {
                proj.insert(f, 0);
            }
            Ok(Some(Projection::parse(&proj)?.apply(&doc)?))
        }
        "$replaceRoot" | "$replaceWith" => {
            let expr = if name == "$replaceRoot" {
                as_doc(name, spec)?.get("newRoot").ok_or_else(|| {
                    QueryError::new(
                        40231,
                        "Location40231",
                        "no newRoot specified for the $replaceRoot stage",
                    )
                })?
            } else {
                spec
            };
            match eval_expression(expr, &doc)? {
                Some(Bson::Document(d)) => Ok(Some(d)),
                other => Err(QueryError::new(
                    40228,
                    "Location40228",
                    format!(
                        "'newRoot' expression must evaluate to an object, but resulting value was: {}",
                        other.map(|v| v.to_string()).unwrap_or_else(|| "MISSING".into())
                    ),
                )),
            }
        }
        _ => Err(unknown_stage(name)),
    }
}

/// `$addFields` for one (possibly dotted) path; a plain sub-document spec
/// merges into an existing sub-document, as the server does.
fn add_field(
    out: &mut Document,
    root: &Document,
    path: &str,
    expr: &Bson,
) -> Result<(), QueryError> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    if let Some(rest) = rest {
        let mut child = match out.get(head) {
            Some(Bson::Document(d)) => d.clone(),
            _ => Document::new(),
        };
        add_field(&mut child, root, rest, expr)?;
        out.insert(head, child);
        return Ok(());
    }
    if let Bson::Document(spec) = expr {
        if !spec.keys().next().is_some_and(|k| k.starts_with('$')) && !spec.is_empty() {
            let mut child = match out.get(head) {
                Some(Bson::Document(d)) => d.clone(),
                _ => Document::new(),
            };
            for (k, v) in spec {
                add_field(&mut child, root, k, v)?;
            }
            out.insert(head, child);
            return Ok(());
        }
    }
    match eval_expression(expr, root)? {
        Some(v) => {
            out.insert(head, v);
        }
        // `$$REMOVE` or a missing field path removes the field.
        None => {
            out.remove(head);
        }
    }
    Ok(())
}

fn group(docs: Vec<Document>, spec: &Document) -> Result<Vec<Document>, QueryError> {
    let id_expr = spec.get("_id").ok_or_else(|| {
        QueryError::new(
            15955,
            "Location15955",
            "a group specification must include an _id",
        )
    })?;
    let mut accs: Vec<(&str, &str, &Bson)> = Vec::new();
    for (field, acc) in spec {
        if field == "_id" {
            continue;
        }
        let Bson::Document(acc) = acc else {
            return Err(QueryError::new(
                40234,
                "Location40234",
                format!("The field '{field}' must be an accumulator object"),
            ));
        };
        let mut it = acc.iter();
        let (op, arg) = match (it.next(), it.next()) {
            (Some((op, arg)), None) => (op.as_str(), arg),
            _ => {
                return Err(QueryError::new(
                    40238,
                    "Location40238",
                    format!("The field '{field}' must specify one accumulator"),
                ))
            }
        };
        if !matches!(
            op,
            "$sum"
                | "$avg"
                | "$first"
                | "$last"
                | "$max"
                | "$min"
                | "$push"
                | "$addToSet"
                | "$count"
        ) {
            return Err(QueryError::new(
                15952,
                "Location15952",
                format!("unknown group operator '{op}'"),
            ));
        }
        accs.push((field.as_str(), op, arg));
    }
    // Groups in first-seen order, each with its member documents.
    let mut groups: Vec<(Bson, Vec<Document>)> = Vec::new();
    for d in docs {
        let key = eval_expression(id_expr, &d)?.unwrap_or(Bson::Null);
        match groups
            .iter_mut()
            .find(|(k, _)| compare(k, &key) == Ordering::Equal)
        {
            Some((_, members)) => members.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, members) in groups {
        let mut g = doc! { "_id": key };
        for (field, op, arg) in &accs {
            g.insert(*field, accumulate(op, arg, &members)?);
        }
        out.push(g);
    }
    Ok(out)
}

fn accumulate(op: &str, arg: &Bson, members: &[Document]) -> Result<Bson, QueryError> {
    let mut values = Vec::with_capacity(members.len());
    for m in members {
        values.push(eval_expression(arg, m)?);
    }
    Ok(match op {
        "$count" => count_value(members.len()),
        "$sum" => values
            .iter()
            .flatten()
            .filter(|v| crate::bson_order::is_number(v))
            .fold(Bson::Int32(0), |acc, v| add_numbers(&acc, v)),
        "$avg" => {
            let nums: Vec<&Bson> = values
                .iter()
                .flatten()
                .filter(|v| crate::bson_order::is_number(v))
                .collect();
            if nums.is_empty() {
                Bson::Null
            } else if nums.iter().any(|v| matches!(v, Bson::Decimal128(_))) {
                let sum = nums
                    .iter()
                    .fold(Bson::Int32(0), |acc, v| add_numbers(&acc, v));
                let avg = number_as_f64(&sum).unwrap_or(0.0) / nums.len() as f64;
                f64_to_decimal(avg)
            } else {
                let sum: f64 = nums.iter().filter_map(|v| number_as_f64(v)).sum();
                Bson::Double(sum / nums.len() as f64)
            }
        }
        "$first" => values.first().cloned().flatten().unwrap_or(Bson::Null),
        "$last" => values.last().cloned().flatten().unwrap_or(Bson::Null),
        "$max" => values
            .into_iter()
            .flatten()
            .filter(|v| !matches!(v, Bson::Null | Bson::Undefined))
            .max_by(compare)
            .unwrap_or(Bson::Null),
        "$min" => values
            .into_iter()
            .flatten()
            .filter(|v| !matches!(v, Bson::Null | Bson::Undefined))
            .min_by(compare)
            .unwrap_or(Bson::Null),
        "$push" => Bson::Array(values.into_iter().flatten().collect()),
        _ => {
            // $addToSet
            let mut set: Vec<Bson> = Vec::new();
            for v in values.into_iter().flatten() {
                if !set.iter().any(|s| compare(s, &v) == Ordering::Equal) {
                    set.push(v);
                }
            }
            Bson::Array(set)
        }
    })
}

fn unwind(docs: Vec<Document>, spec: &Bson) -> Result<Vec<Document>, QueryError> {
    let (path, preserve, index_field) = match spec {
        Bson::String(s) => (s.as_str(), false, None),
        Bson::Document(d) => (
            d.get_str("path").map_err(|_| {
                QueryError::new(28812, "Location28812", "no path specified to $unwind stage")
            })?,
            d.get_bool("preserveNullAndEmptyArrays").unwrap_or(false),
            d.get_str("includeArrayIndex").ok(),
        ),
        _ => {
            return Err(QueryError::new(
                15981,
                "Location15981",
                "expected either a string or an object as specification for $unwind stage",
            ))
        }
    };
    let Some(field) = path.strip_prefix('$') else {
        return Err(QueryError::new(
            28818,
            "Location28818",
            "path option to $unwind stage should be prefixed with a '$'",
        ));
    };
    let mut out = Vec::new();
    for d in docs {
        match crate::query::get_path(&d, field).cloned() {
            Some(Bson::Array(items)) if !items.is_empty() => {
                for (i, item) in items.into_iter().enumerate() {
                    let mut copy = d.clone();
                    crate::update::set_path_value(&mut copy, field, item)?;
                    if let Some(f) = index_field {
                        copy.insert(f, Bson::Int64(i as i64));
                    }
                    out.push(copy);
                }
            }
            Some(Bson::Array(_)) | Some(Bson::Null) | None => {
                if preserve {
                    let mut copy = d;
                    if let Some(f) = index_field {
                        copy.insert(f, Bson::Null);
                    }
                    out.push(copy);
                }
            }
            Some(_) => {
                let mut copy = d;
                if let Some(f) = index_field {
                    copy.insert(f, Bson::Null);
                }
                out.push(copy);
            }
        }
    }
    Ok(out)
}

mod arith;
pub mod documents;
mod expression;
pub mod sample;

pub(crate) use arith::{add_numbers, f64_to_decimal, mul_numbers};
pub(crate) use expression::type_name;
pub use expression::{check_variables, eval_expression, LetScope};

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse().unwrap())
    }

    fn sample() -> Vec<Document> {
        vec![
            doc! {"_id": 1, "cust": "a", "total": dec("10.50"), "qty": 2, "tags": ["x", "y"]},
            doc! {"_id": 2, "cust": "b", "total": dec("5.25"), "qty": 1, "tags": []},
            doc! {"_id": 3, "cust": "a", "total": dec("1.00"), "qty": 7, "tags": ["z"]},
        ]
    }

    #[test]
    fn match_sort_skip_limit_count() {
        let out = run_stages(
            sample(),
            &[
                doc! {"$match": {"qty": {"$gt": 1}}},
                doc! {"$sort": {"qty": -1}},
                doc! {"$limit": 1},
            ],
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].get_i32("_id").unwrap(), 3);
        let out = run_stages(sample(), &[doc! {"$skip": 1}, doc! {"$count": "n"}]).unwrap();
        assert_eq!(out, vec![doc! {"n": 2}]);
        let out = run_stages(
            sample(),
            &[doc! {"$match": {"qty": 99}}, doc! {"$count": "n"}],
        )
        .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn group_accumulators() {
        let out = run_stages(
            sample(),
            &[
                doc! {"$group": {"_id": "$cust", "sum": {"$sum": "$total"}, "n": {"$sum": 1},
                "maxq": {"$max": "$qty"}, "minq": {"$min": "$qty"}, "first": {"$first": "$_id"}}},
            ],
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            doc! {"_id": "a", "sum": dec("11.50"), "n": 2, "maxq": 7, "minq": 2, "first": 1}
        );
        let out = run_stages(
            sample(),
            &[doc! {"$group": {"_id": null, "q": {"$sum": "$qty"}}}],
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"_id": null, "q": 10}]);
        let err = run_stages(
            sample(),
            &[doc! {"$group": {"_id": null, "q": {"$bogus": 1}}}],
        )
        .unwrap_err();
        assert_eq!(err.code, 15952);
    }

    #[test]
    fn project_addfields_unset_replace_root() {
        let d = doc! {"_id": 1, "a": {"b": 1}, "c": 2};
        let out = run_stages(
            vec![d.clone()],
            &[doc! {"$addFields": {"a.x": 5, "n": {"$add": ["$c", 1]}}}],
        )
        .unwrap();
        assert_eq!(
            out[0],
            doc! {"_id": 1, "a": {"b": 1, "x": 5}, "c": 2, "n": 3}
        );
        let out = run_stages(vec![d.clone()], &[doc! {"$set": {"a": {"y": 1}}}]).unwrap();
        assert_eq!(out[0], doc! {"_id": 1, "a": {"b": 1, "y": 1}, "c": 2});
        let out = run_stages(vec![d.clone()], &[doc! {"$unset": ["c", "a.b"]}]).unwrap();
        assert_eq!(out[0], doc! {"_id": 1, "a": {}});
        let out = run_stages(vec![d.clone()], &[doc! {"$project": {"c": 1}}]).unwrap();
        assert_eq!(out[0], doc! {"_id": 1, "c": 2});
        let out = run_stages(vec![d.clone()], &[doc! {"$replaceRoot": {"newRoot": "$a"}}]).unwrap();
        assert_eq!(out[0], doc! {"b": 1});
        assert_eq!(
            run_stages(vec![d], &[doc! {"$replaceWith": "$c"}])
                .unwrap_err()
                .code,
            40228
        );
    }

    #[test]
    fn unknown_stage_is_40324() {
        let err = run_stages(sample(), &[doc! {"$frobnicate": {}}]).unwrap_err();
        assert_eq!(err.code, 40324);
        assert_eq!(
            err.message,
            "Unrecognized pipeline stage name: '$frobnicate'"
        );
        assert_eq!(
            run_stages(sample(), &[doc! {"$match": {}, "$sort": {"a": 1}}])
                .unwrap_err()
                .code,
            40323
        );
    }

    #[test]
    fn unwind_arrays() {
        let out = run_stages(sample(), &[doc! {"$unwind": "$tags"}]).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].get_str("tags").unwrap(), "y");
        let out = run_stages(
            sample(),
            &[doc! {"$unwind": {"path": "$tags", "preserveNullAndEmptyArrays": true}}],
        )
        .unwrap();
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn event_stages() {
        let ev =
            doc! {"_id": {"_data": "82AA"}, "operationType": "insert", "fullDocument": {"a": 1}};
        let kept = apply_event_stages(ev.clone(), &[doc! {"$match": {"operationType": "insert"}}])
            .unwrap();
        assert_eq!(kept, Some(ev.clone()));
        let dropped =
            apply_event_stages(ev.clone(), &[doc! {"$match": {"operationType": "delete"}}])
                .unwrap();
        assert_eq!(dropped, None);
        let projected = apply_event_stages(ev.clone(), &[doc! {"$project": {"operationType": 1}}])
            .unwrap()
            .unwrap();
        assert_eq!(
            projected,
            doc! {"_id": {"_data": "82AA"}, "operationType": "insert"}
        );
        let err = apply_event_stages(ev.clone(), &[doc! {"$project": {"_id": 0}}]).unwrap_err();
        assert_eq!(err.code, 280);
        assert_eq!(
            apply_event_stages(ev.clone(), &[doc! {"$group": {"_id": null}}])
                .unwrap_err()
                .code,
            20
        );
        assert_eq!(
            apply_event_stages(ev, &[doc! {"$nope": 1}])
                .unwrap_err()
                .code,
            40324
        );
    }

    #[test]
    fn more_accumulators_and_variables() {
        let out = run_stages(
            sample(),
            &[doc! {"$group": {
                "_id": {"c": "$cust"},
                "avgq": {"$avg": "$qty"},
                "ids": {"$push": "$_id"},
                "tagsets": {"$addToSet": "$cust"},
                "n": {"$count": {}},
                "last": {"$last": "$$ROOT._id"},
            }}],
        )
        .unwrap();
        assert_eq!(
            out[0],
            doc! {"_id": {"c": "a"}, "avgq": 4.5, "ids": [1, 3], "tagsets": ["a"], "n": 2, "last": 3}
        );
        let out = run_stages(
            sample(),
            &[doc! {"$project": {"whole": "$$CURRENT.cust", "_id": 0}}],
        )
        .unwrap();
        assert_eq!(out[0], doc! {"whole": "a"});
        assert_eq!(
            run_stages(sample(), &[doc! {"$sort": {}}])
                .unwrap_err()
                .code,
            15976
        );
        assert_eq!(
            run_stages(sample(), &[doc! {"$limit": 0}])
                .unwrap_err()
                .code,
            15958
        );
        assert_eq!(
            run_stages(sample(), &[doc! {"$skip": -1}])
                .unwrap_err()
                .code,
            15956
        );
    }
}
