//! Aggregation: the ordinary pipeline stages `aggregate` needs, the stages a
//! `$changeStream` pipeline may carry, the stages of a pipeline-style update,
//! and the small expression language they share (field paths, `$literal`,
//! arithmetic, comparisons, `$cond`, `$ifNull`, `$concat`, ...).
//!
//! Also owns numeric arithmetic with MongoDB's type promotion (Int32 →
//! Int64 → Double, Decimal128 wins), which `update` reuses for `$inc`/`$mul`.
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

use crate::bson_order::{compare, number_as_f64, number_as_i64, Dec};
use crate::query::{compare_by_keys, parse_sort, truthy, Filter, Projection, QueryError};

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
            "$group" => group(docs, as_doc(name, spec)?)?,
            "$unwind" => unwind(docs, spec)?,
            _ => {
                let mut out = Vec::with_capacity(docs.len());
                for d in docs {
                    if let Some(d) = apply_document_stage(name, spec, d)? {
                        out.push(d);
                    }
                }
                out
            }
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
            | "$merge" | "$facet" | "$changeStream" => {
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

// ---- expressions ----

/// Evaluates an aggregation expression against a document. `None` is the
/// "missing" value (a field path to nothing, `$$REMOVE`).
pub fn eval_expression(expr: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    match expr {
        Bson::String(s) if s.starts_with("$$") => variable(&s[2..], root),
        Bson::String(s) if s.starts_with('$') => {
            if s.len() == 1 {
                return Err(QueryError::new(
                    16872,
                    "Location16872",
                    "'$' by itself is not a valid FieldPath",
                ));
            }
            Ok(field_path(&Bson::Document(root.clone()), &s[1..]))
        }
        Bson::Document(d) => {
            let first = d.keys().next();
            match first {
                Some(k) if k.starts_with('$') => {
                    if d.len() != 1 {
                        return Err(QueryError::new(
                            15983,
                            "Location15983",
                            format!("an expression specification must contain exactly one field, the name of the expression. Found {} fields", d.len()),
                        ));
                    }
                    let arg = d.get(k).unwrap_or(&Bson::Null);
                    operator(k, arg, root)
                }
                _ => {
                    let mut out = Document::new();
                    for (k, v) in d {
                        if let Some(val) = eval_expression(v, root)? {
                            out.insert(k, val);
                        }
                    }
                    Ok(Some(Bson::Document(out)))
                }
            }
        }
        Bson::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(eval_expression(item, root)?.unwrap_or(Bson::Null));
            }
            Ok(Some(Bson::Array(out)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn variable(name: &str, root: &Document) -> Result<Option<Bson>, QueryError> {
    let (var, rest) = match name.split_once('.') {
        Some((v, r)) => (v, Some(r)),
        None => (name, None),
    };
    let base = match var {
        "ROOT" | "CURRENT" => Bson::Document(root.clone()),
        "REMOVE" => return Ok(None),
        "NOW" => Bson::DateTime(bson::DateTime::now()),
        _ => {
            return Err(QueryError::new(
                17276,
                "Location17276",
                format!("Use of undefined variable: {var}"),
            ))
        }
    };
    Ok(match rest {
        Some(path) => field_path(&base, path),
        None => Some(base),
    })
}

/// A field path with aggregation semantics: arrays of documents fan out into
/// arrays of the sub-field's values.
fn field_path(value: &Bson, path: &str) -> Option<Bson> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    match value {
        Bson::Document(d) => {
            let child = d.get(head)?;
            match rest {
                Some(r) => field_path(child, r),
                None => Some(child.clone()),
            }
        }
        Bson::Array(items) => Some(Bson::Array(
            items.iter().filter_map(|i| field_path(i, path)).collect(),
        )),
        _ => None,
    }
}

fn args(arg: &Bson, root: &Document) -> Result<Vec<Option<Bson>>, QueryError> {
    match arg {
        Bson::Array(items) => items.iter().map(|i| eval_expression(i, root)).collect(),
        other => Ok(vec![eval_expression(other, root)?]),
    }
}

fn arity(op: &str, got: &[Option<Bson>], want: usize) -> Result<(), QueryError> {
    if got.len() == want {
        Ok(())
    } else {
        Err(QueryError::new(
            16020,
            "Location16020",
            format!(
                "Expression {op} takes exactly {want} arguments. {} were passed in.",
                got.len()
            ),
        ))
    }
}

fn is_nullish(v: &Option<Bson>) -> bool {
    matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined))
}

fn operator(op: &str, arg: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    let value = match op {
        "$literal" => arg.clone(),
        "$add" | "$multiply" => {
            let vals = args(arg, root)?;
            if vals.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            let mut acc = Bson::Int32(if op == "$add" { 0 } else { 1 });
            for v in vals.into_iter().flatten() {
                acc = match (&acc, &v) {
                    (Bson::DateTime(d), n) | (n, Bson::DateTime(d)) if op == "$add" => {
                        let ms = number_as_i64(n).unwrap_or(0);
                        Bson::DateTime(bson::DateTime::from_millis(
                            d.timestamp_millis().saturating_add(ms),
                        ))
                    }
                    _ => {
                        if !crate::bson_order::is_number(&v) {
                            return Err(QueryError::type_mismatch(format!(
                                "{op} only supports numeric types, not {}",
                                type_name(&v)
                            )));
                        }
                        if op == "$add" {
                            add_numbers(&acc, &v)
                        } else {
                            mul_numbers(&acc, &v)
                        }
                    }
                };
            }
            acc
        }
        "$subtract" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 2)?;
            if vals.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            match (&vals[0], &vals[1]) {
                (Some(Bson::DateTime(a)), Some(Bson::DateTime(b))) => {
                    Bson::Int64(a.timestamp_millis() - b.timestamp_millis())
                }
                (Some(Bson::DateTime(a)), Some(n)) => Bson::DateTime(bson::DateTime::from_millis(
                    a.timestamp_millis() - number_as_i64(n).unwrap_or(0),
                )),
                (Some(a), Some(b)) => add_numbers(a, &negate(b)),
                _ => Bson::Null,
            }
        }
        "$divide" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 2)?;
            if vals.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            let a = vals[0].as_ref().and_then(number_as_f64);
            let b = vals[1].as_ref().and_then(number_as_f64);
            match (a, b) {
                (_, Some(0.0)) => {
                    return Err(QueryError::new(2, "BadValue", "can't $divide by zero"))
                }
                (Some(a), Some(b)) => Bson::Double(a / b),
                _ => {
                    return Err(QueryError::type_mismatch(
                        "$divide only supports numeric types",
                    ))
                }
            }
        }
        "$concat" => {
            let vals = args(arg, root)?;
            let mut s = String::new();
            for v in vals {
                match v {
                    Some(Bson::String(part)) => s.push_str(&part),
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(other) => {
                        return Err(QueryError::new(
                            16702,
                            "Location16702",
                            format!("$concat only supports strings, not {}", type_name(&other)),
                        ))
                    }
                }
            }
            Bson::String(s)
        }
        "$toLower" | "$toUpper" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 1)?;
            let s = match &vals[0] {
                Some(Bson::String(s)) => s.clone(),
                None | Some(Bson::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            Bson::String(if op == "$toLower" {
                s.to_lowercase()
            } else {
                s.to_uppercase()
            })
        }
        "$toString" => match eval_expression(arg, root)? {
            None | Some(Bson::Null) => Bson::Null,
            Some(Bson::String(s)) => Bson::String(s),
            Some(Bson::ObjectId(o)) => Bson::String(o.to_hex()),
            Some(Bson::DateTime(d)) => Bson::String(d.try_to_rfc3339_string().unwrap_or_default()),
            Some(other) => Bson::String(other.to_string()),
        },
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 2)?;
            // Missing compares as less than null in expressions; treat as null.
            let a = vals[0].clone().unwrap_or(Bson::Null);
            let b = vals[1].clone().unwrap_or(Bson::Null);
            let ord = compare(&a, &b);
            match op {
                "$eq" => Bson::Boolean(ord == Ordering::Equal),
                "$ne" => Bson::Boolean(ord != Ordering::Equal),
                "$gt" => Bson::Boolean(ord == Ordering::Greater),
                "$gte" => Bson::Boolean(ord != Ordering::Less),
                "$lt" => Bson::Boolean(ord == Ordering::Less),
                "$lte" => Bson::Boolean(ord != Ordering::Greater),
                _ => Bson::Int32(ord as i32),
            }
        }
        "$and" => Bson::Boolean(
            args(arg, root)?
                .iter()
                .all(|v| v.as_ref().is_some_and(truthy)),
        ),
        "$or" => Bson::Boolean(
            args(arg, root)?
                .iter()
                .any(|v| v.as_ref().is_some_and(truthy)),
        ),
        "$not" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 1)?;
            Bson::Boolean(!vals[0].as_ref().is_some_and(truthy))
        }
        "$cond" => {
            let (c, t, e) = match arg {
                Bson::Array(items) if items.len() == 3 => (&items[0], &items[1], &items[2]),
                Bson::Document(d) => (
                    d.get("if").ok_or_else(|| {
                        QueryError::new(17080, "Location17080", "Missing 'if' parameter to $cond")
                    })?,
                    d.get("then").ok_or_else(|| {
                        QueryError::new(17081, "Location17081", "Missing 'then' parameter to $cond")
                    })?,
                    d.get("else").ok_or_else(|| {
                        QueryError::new(17082, "Location17082", "Missing 'else' parameter to $cond")
                    })?,
                ),
                _ => {
                    return Err(QueryError::new(
                        16020,
                        "Location16020",
                        "Expression $cond takes exactly 3 arguments.",
                    ))
                }
            };
            let cond = eval_expression(c, root)?;
            return eval_expression(
                if cond.as_ref().is_some_and(truthy) {
                    t
                } else {
                    e
                },
                root,
            );
        }
        "$ifNull" => {
            let vals = args(arg, root)?;
            if vals.len() < 2 {
                return Err(QueryError::new(
                    1257300,
                    "Location1257300",
                    "$ifNull needs at least two arguments",
                ));
            }
            let n = vals.len();
            for v in vals.iter().take(n - 1) {
                if !is_nullish(v) {
                    return Ok(v.clone());
                }
            }
            return Ok(vals[n - 1].clone());
        }
        "$size" => match eval_expression(arg, root)? {
            Some(Bson::Array(a)) => count_value(a.len()),
            other => {
                return Err(QueryError::new(
                    17124,
                    "Location17124",
                    format!(
                        "The argument to $size must be an array. Type of argument: {}",
                        other.as_ref().map(type_name).unwrap_or("missing")
                    ),
                ))
            }
        },
        "$arrayElemAt" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 2)?;
            if vals.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            let (Some(Bson::Array(items)), Some(idx)) =
                (&vals[0], vals[1].as_ref().and_then(number_as_i64))
            else {
                return Err(QueryError::new(
                    28689,
                    "Location28689",
                    "$arrayElemAt's first argument must be an array",
                ));
            };
            let i = if idx < 0 {
                items.len() as i64 + idx
            } else {
                idx
            };
            return Ok(usize::try_from(i).ok().and_then(|i| items.get(i).cloned()));
        }
        "$first" | "$last" => match eval_expression(arg, root)? {
            Some(Bson::Array(items)) => {
                return Ok(if op == "$first" {
                    items.first().cloned()
                } else {
                    items.last().cloned()
                })
            }
            None | Some(Bson::Null) => Bson::Null,
            _ => {
                return Err(QueryError::new(
                    28689,
                    "Location28689",
                    format!("{op}'s argument must be an array"),
                ))
            }
        },
        "$concatArrays" => {
            let mut out = Vec::new();
            for v in args(arg, root)? {
                match v {
                    Some(Bson::Array(items)) => out.extend(items),
                    None | Some(Bson::Null) => return Ok(Some(Bson::Null)),
                    Some(_) => {
                        return Err(QueryError::new(
                            28664,
                            "Location28664",
                            "$concatArrays only supports arrays",
                        ))
                    }
                }
            }
            Bson::Array(out)
        }
        "$in" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 2)?;
            let needle = vals[0].clone().unwrap_or(Bson::Null);
            match &vals[1] {
                Some(Bson::Array(items)) => {
                    Bson::Boolean(items.iter().any(|i| compare(i, &needle) == Ordering::Equal))
                }
                _ => {
                    return Err(QueryError::new(
                        40081,
                        "Location40081",
                        "$in requires an array as a second argument",
                    ))
                }
            }
        }
        "$sum" | "$max" | "$min" | "$avg" => {
            let vals = args(arg, root)?;
            let flat: Vec<Bson> = if vals.len() == 1 {
                match &vals[0] {
                    Some(Bson::Array(items)) => items.clone(),
                    Some(v) => vec![v.clone()],
                    None => vec![],
                }
            } else {
                vals.into_iter().flatten().collect()
            };
            let members: Vec<Document> = flat.into_iter().map(|v| doc! { "v": v }).collect();
            accumulate(op, &Bson::String("$v".into()), &members)?
        }
        "$mergeObjects" => {
            let mut out = Document::new();
            for v in args(arg, root)? {
                match v {
                    Some(Bson::Document(d)) => out.extend(d),
                    None | Some(Bson::Null) => {}
                    Some(_) => {
                        return Err(QueryError::new(
                            40400,
                            "Location40400",
                            "$mergeObjects requires object inputs",
                        ))
                    }
                }
            }
            Bson::Document(out)
        }
        "$type" => {
            let vals = args(arg, root)?;
            arity(op, &vals, 1)?;
            Bson::String(match &vals[0] {
                None => "missing".into(),
                Some(v) => type_name(v).into(),
            })
        }
        "$getField" => {
            let (field, input) = match arg {
                Bson::String(f) => (f.clone(), Some(Bson::Document(root.clone()))),
                Bson::Document(d) => (
                    d.get_str("field")
                        .map_err(|_| {
                            QueryError::new(
                                3041704,
                                "Location3041704",
                                "$getField requires 'field' to evaluate to type String",
                            )
                        })?
                        .to_string(),
                    match d.get("input") {
                        Some(e) => eval_expression(e, root)?,
                        None => Some(Bson::Document(root.clone())),
                    },
                ),
                _ => {
                    return Err(QueryError::new(
                        3041704,
                        "Location3041704",
                        "$getField requires 'field' to evaluate to type String",
                    ))
                }
            };
            return Ok(match input {
                Some(Bson::Document(d)) => d.get(&field).cloned(),
                _ => None,
            });
        }
        _ => {
            return Err(QueryError::new(
                168,
                "InvalidPipelineOperator",
                format!("Unrecognized expression '{op}'"),
            ))
        }
    };
    Ok(Some(value))
}

/// The `$type` expression name of a value.
pub(crate) fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

// ---- arithmetic ----

fn to_dec(v: &Bson) -> Dec {
    match v {
        Bson::Decimal128(d) => Dec::from_decimal(d),
        Bson::Int32(i) => Dec::from_i64(i64::from(*i)),
        Bson::Int64(i) => Dec::from_i64(*i),
        Bson::Double(d) => match f64_to_decimal(*d) {
            Bson::Decimal128(d) => Dec::from_decimal(&d),
            _ => Dec::NaN,
        },
        _ => Dec::NaN,
    }
}

pub(crate) fn f64_to_decimal(f: f64) -> Bson {
    let s = if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        // 15 significant digits, like the server's double → decimal conversion.
        format!("{f:.14e}")
    };
    s.parse().map(Bson::Decimal128).unwrap_or(Bson::Double(f))
}

fn negate(v: &Bson) -> Bson {
    match v {
        Bson::Int32(i) => i
            .checked_neg()
            .map(Bson::Int32)
            .unwrap_or(Bson::Int64(-i64::from(*i))),
        Bson::Int64(i) => i
            .checked_neg()
            .map(Bson::Int64)
            .unwrap_or(Bson::Double(-(*i as f64))),
        Bson::Double(d) => Bson::Double(-d),
        Bson::Decimal128(d) => match Dec::from_decimal(d) {
            Dec::Finite { neg, coef, exp } => Bson::Decimal128(
                Dec::Finite {
                    neg: !neg,
                    coef,
                    exp,
                }
                .to_decimal(),
            ),
            Dec::Inf { neg } => Bson::Decimal128(Dec::Inf { neg: !neg }.to_decimal()),
            Dec::NaN => v.clone(),
        },
        other => other.clone(),
    }
}

/// `a + b` with MongoDB's numeric promotion. Non-numbers count as zero
/// (callers check types first).
pub(crate) fn add_numbers(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Decimal128(_), _) | (_, Bson::Decimal128(_)) => {
            Bson::Decimal128(dec_add(to_dec(a), to_dec(b)).to_decimal())
        }
        (Bson::Double(_), _) | (_, Bson::Double(_)) => {
            Bson::Double(number_as_f64(a).unwrap_or(0.0) + number_as_f64(b).unwrap_or(0.0))
        }
        (Bson::Int32(x), Bson::Int32(y)) => x
            .checked_add(*y)
            .map(Bson::Int32)
            .unwrap_or(Bson::Int64(i64::from(*x) + i64::from(*y))),
        _ => {
            let (x, y) = (number_as_i64(a).unwrap_or(0), number_as_i64(b).unwrap_or(0));
            x.checked_add(y)
                .map(Bson::Int64)
                .unwrap_or(Bson::Double(x as f64 + y as f64))
        }
    }
}

/// `a * b` with MongoDB's numeric promotion.
pub(crate) fn mul_numbers(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Decimal128(_), _) | (_, Bson::Decimal128(_)) => {
            Bson::Decimal128(dec_mul(to_dec(a), to_dec(b)).to_decimal())
        }
        (Bson::Double(_), _) | (_, Bson::Double(_)) => {
            Bson::Double(number_as_f64(a).unwrap_or(0.0) * number_as_f64(b).unwrap_or(0.0))
        }
        (Bson::Int32(x), Bson::Int32(y)) => x
            .checked_mul(*y)
            .map(Bson::Int32)
            .unwrap_or(Bson::Int64(i64::from(*x) * i64::from(*y))),
        _ => {
            let (x, y) = (number_as_i64(a).unwrap_or(0), number_as_i64(b).unwrap_or(0));
            x.checked_mul(y)
                .map(Bson::Int64)
                .unwrap_or(Bson::Double(x as f64 * y as f64))
        }
    }
}

fn dec_add(a: Dec, b: Dec) -> Dec {
    match (a, b) {
        (Dec::NaN, _) | (_, Dec::NaN) => Dec::NaN,
        (Dec::Inf { neg: x }, Dec::Inf { neg: y }) if x != y => Dec::NaN,
        (Dec::Inf { neg }, _) | (_, Dec::Inf { neg }) => Dec::Inf { neg },
        (
            Dec::Finite {
                neg: na,
                coef: ca,
                exp: ea,
            },
            Dec::Finite {
                neg: nb,
                coef: cb,
                exp: eb,
            },
        ) => {
            let exp = ea.min(eb);
            let scale = |c: u128, e: i32| -> Option<i128> {
                let mut v = i128::try_from(c).ok()?;
                for _ in 0..(e - exp) {
                    v = v.checked_mul(10)?;
                }
                Some(v)
            };
            match (scale(ca, ea), scale(cb, eb)) {
                (Some(x), Some(y)) => {
                    let x = if na { -x } else { x };
                    let y = if nb { -y } else { y };
                    match x.checked_add(y) {
                        Some(sum) => Dec::Finite {
                            neg: sum < 0,
                            coef: sum.unsigned_abs(),
                            exp,
                        },
                        None => approx(a.to_f64() + b.to_f64()),
                    }
                }
                _ => approx(a.to_f64() + b.to_f64()),
            }
        }
    }
}

fn dec_mul(a: Dec, b: Dec) -> Dec {
    match (a, b) {
        (Dec::NaN, _) | (_, Dec::NaN) => Dec::NaN,
        (Dec::Inf { neg: x }, other) | (other, Dec::Inf { neg: x }) => match other {
            Dec::Finite { coef: 0, .. } => Dec::NaN,
            Dec::Finite { neg, .. } | Dec::Inf { neg } => Dec::Inf { neg: x != neg },
            Dec::NaN => Dec::NaN,
        },
        (
            Dec::Finite {
                neg: na,
                coef: ca,
                exp: ea,
            },
            Dec::Finite {
                neg: nb,
                coef: cb,
                exp: eb,
            },
        ) => match ca.checked_mul(cb) {
            Some(coef) => Dec::Finite {
                neg: na != nb,
                coef,
                exp: ea + eb,
            },
            None => approx(a.to_f64() * b.to_f64()),
        },
    }
}

fn approx(f: f64) -> Dec {
    match f64_to_decimal(f) {
        Bson::Decimal128(d) => Dec::from_decimal(&d),
        _ => Dec::NaN,
    }
}

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
    fn expressions() {
        let d = doc! {"a": 2, "b": 3.5, "s": "Hi", "arr": [{"k": 1}, {"k": 2}], "p": dec("1.10")};
        let e = |x: Bson| eval_expression(&x, &d).unwrap();
        assert_eq!(
            e(Bson::String("$arr.k".into())),
            Some(Bson::Array(vec![1.into(), 2.into()]))
        );
        assert_eq!(e(Bson::String("$missing".into())), None);
        assert_eq!(
            e(Bson::Document(doc! {"$literal": "$a"})),
            Some(Bson::String("$a".into()))
        );
        assert_eq!(
            e(Bson::Document(doc! {"$add": ["$a", "$b"]})),
            Some(Bson::Double(5.5))
        );
        assert_eq!(
            e(Bson::Document(doc! {"$multiply": ["$p", 3]})),
            Some(dec("3.30"))
        );
        assert_eq!(
            e(Bson::Document(doc! {"$subtract": ["$a", 5]})),
            Some(Bson::Int32(-3))
        );
        assert_eq!(
            e(Bson::Document(doc! {"$concat": ["$s", "!"]})),
            Some(Bson::String("Hi!".into()))
        );
        assert_eq!(
            e(Bson::Document(
                doc! {"$cond": [{"$gt": ["$a", 1]}, "big", "small"]}
            )),
            Some(Bson::String("big".into()))
        );
        assert_eq!(
            e(Bson::Document(doc! {"$ifNull": ["$nope", 0]})),
            Some(Bson::Int32(0))
        );
        assert_eq!(
            e(Bson::Document(doc! {"$size": "$arr"})),
            Some(Bson::Int32(2))
        );
        assert_eq!(e(Bson::String("$$REMOVE".into())), None);
        assert_eq!(
            eval_expression(&Bson::Document(doc! {"$nope": 1}), &d)
                .unwrap_err()
                .code,
            168
        );
    }

    #[test]
    fn arithmetic_promotion() {
        assert_eq!(
            add_numbers(&Bson::Int32(i32::MAX), &Bson::Int32(1)),
            Bson::Int64(i64::from(i32::MAX) + 1)
        );
        assert_eq!(
            add_numbers(&Bson::Int32(1), &Bson::Int64(1)),
            Bson::Int64(2)
        );
        assert_eq!(
            add_numbers(&Bson::Int32(1), &Bson::Double(0.5)),
            Bson::Double(1.5)
        );
        assert_eq!(add_numbers(&dec("0.10"), &dec("0.2")), dec("0.30"));
        assert_eq!(add_numbers(&dec("1.5"), &Bson::Int32(-2)), dec("-0.5"));
        assert_eq!(
            mul_numbers(&Bson::Int32(3), &Bson::Int32(4)),
            Bson::Int32(12)
        );
        assert_eq!(mul_numbers(&dec("2.50"), &Bson::Int32(2)), dec("5.00"));
    }
}
