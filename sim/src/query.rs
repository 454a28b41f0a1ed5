//! Query filters (`find`, `update`, `delete`, `$match`), sorting and `find`
//! projections, with MongoDB's matching semantics: dotted paths traverse
//! arrays of sub-documents, a predicate on an array field matches when the
//! whole array or any element matches, and negations (`$ne`, `$nin`, `$not`,
//! `$nor`) negate the whole path predicate.
//!
//! Also owns [`QueryError`], the error every pure module returns; the server
//! turns it into `{ok: 0, errmsg, code, codeName}`.
//!
//! Nuances of the real server not reproduced: collations, `$expr`, `$where`,
//! `$text`, geo and bitwise operators, `$jsonSchema` (all rejected with
//! BadValue); regexes run on the Rust `regex` engine, so PCRE-only syntax
//! (look-around, backreferences) is rejected; in sort keys an empty array
//! sorts like null rather than below it; `$elemMatch` in object form matches
//! only sub-document elements.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::bson_order::{compare, type_bracket};

/// A command-level error with the server's numeric code and code name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub code: i32,
    pub code_name: &'static str,
    pub message: String,
}

impl QueryError {
    pub fn new(code: i32, code_name: &'static str, message: impl Into<String>) -> Self {
        QueryError {
            code,
            code_name,
            message: message.into(),
        }
    }

    /// Code 2, the server's generic "your request is malformed" error.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, "BadValue", message)
    }

    /// Code 14, a value of the wrong BSON type for an operator.
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(14, "TypeMismatch", message)
    }

    /// Code 9, a malformed command or specification.
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, "FailedToParse", message)
    }
}

/// A parsed query filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Expr,
    id_eq: Option<Bson>,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Nor(Vec<Expr>),
    Const(bool),
    Path(String, Pred),
}

#[derive(Debug, Clone)]
enum Pred {
    Cmp(CmpOp, Bson),
    In(Vec<InItem>),
    Exists(bool),
    Type(Vec<TypeSel>),
    Size(usize),
    All(Vec<Pred>),
    ElemMatchDoc(Box<Expr>),
    ElemMatchValue(Vec<Pred>),
    Regex(regex::Regex),
    Mod(i64, i64),
    /// Negation of the whole path predicate (`$ne`, `$nin`, `$not`).
    Not(Box<Pred>),
    /// Several operators on one path; each is evaluated on its own.
    And(Vec<Pred>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
enum InItem {
    Value(Bson),
    Regex(regex::Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeSel {
    Code(i32),
    Number,
}

impl Filter {
    pub fn parse(filter: &Document) -> Result<Filter, QueryError> {
        let root = parse_document(filter)?;
        let id_eq = match filter.get("_id") {
            Some(v) if filter.len() == 1 => id_literal(v),
            _ => None,
        };
        Ok(Filter { root, id_eq })
    }

    /// A filter that matches every document.
    pub fn all() -> Filter {
        Filter {
            root: Expr::Const(true),
            id_eq: None,
        }
    }

    pub fn matches(&self, doc: &Document) -> bool {
        eval_expr(&self.root, doc)
    }

    /// The `_id` value for filters of the exact shape `{_id: v}` or
    /// `{_id: {$eq: v}}`, so the store can look the document up by key.
    pub fn id_equality(&self) -> Option<&Bson> {
        self.id_eq.as_ref()
    }
}

fn id_literal(v: &Bson) -> Option<Bson> {
    match v {
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            match (d.len(), d.get("$eq")) {
                (1, Some(inner)) if !matches!(inner, Bson::Array(_) | Bson::Null) => {
                    Some(inner.clone())
                }
                _ => None,
            }
        }
        Bson::RegularExpression(_) | Bson::Array(_) | Bson::Null | Bson::Undefined => None,
        other => Some(other.clone()),
    }
}

fn parse_document(filter: &Document) -> Result<Expr, QueryError> {
    let mut parts = Vec::with_capacity(filter.len());
    for (key, value) in filter {
        if let Some(op) = key.strip_prefix('$') {
            match op {
                "and" | "or" | "nor" => {
                    let list = match value {
                        Bson::Array(a) if !a.is_empty() => a,
                        _ => {
                            return Err(QueryError::bad_value(format!(
                                "${op} must be a nonempty array"
                            )))
                        }
                    };
                    let mut subs = Vec::with_capacity(list.len());
                    for item in list {
                        match item {
                            Bson::Document(d) => subs.push(parse_document(d)?),
                            _ => {
                                return Err(QueryError::bad_value(format!(
                                    "${op} argument's entries must be objects"
                                )))
                            }
                        }
                    }
                    parts.push(match op {
                        "and" => Expr::And(subs),
                        "or" => Expr::Or(subs),
                        _ => Expr::Nor(subs),
                    });
                }
                "alwaysTrue" => parts.push(Expr::Const(true)),
                "alwaysFalse" => parts.push(Expr::Const(false)),
                "comment" => {}
                _ => {
                    return Err(QueryError::bad_value(format!(
                        "unknown top level operator: {key}"
                    )))
                }
            }
        } else {
            parts.push(Expr::Path(key.clone(), parse_path_value(value)?));
        }
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Expr::And(parts)
    })
}

fn is_operator_doc(v: &Bson) -> Option<&Document> {
    match v {
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => Some(d),
        _ => None,
    }
}

fn parse_path_value(value: &Bson) -> Result<Pred, QueryError> {
    match value {
        Bson::RegularExpression(r) => Ok(Pred::Regex(compile_regex(&r.pattern, &r.options)?)),
        _ => match is_operator_doc(value) {
            Some(ops) => parse_operators(ops),
            None => Ok(Pred::Cmp(CmpOp::Eq, value.clone())),
        },
    }
}

fn parse_operators(ops: &Document) -> Result<Pred, QueryError> {
    let mut preds = Vec::with_capacity(ops.len());
    let options = match ops.get("$options") {
        Some(Bson::String(s)) => Some(s.as_str()),
        Some(_) => return Err(QueryError::bad_value("$options has to be a string")),
        None => None,
    };
    for (op, v) in ops {
        let pred = match op.as_str() {
            "$eq" => Pred::Cmp(CmpOp::Eq, v.clone()),
            "$ne" => Pred::Not(Box::new(Pred::Cmp(CmpOp::Eq, v.clone()))),
            "$gt" => Pred::Cmp(CmpOp::Gt, v.clone()),
            "$gte" => Pred::Cmp(CmpOp::Gte, v.clone()),
            "$lt" => Pred::Cmp(CmpOp::Lt, v.clone()),
            "$lte" => Pred::Cmp(CmpOp::Lte, v.clone()),
            "$in" => Pred::In(parse_in_list(v, "$in")?),
            "$nin" => Pred::Not(Box::new(Pred::In(parse_in_list(v, "$nin")?))),
            "$exists" => Pred::Exists(truthy(v)),
            "$type" => Pred::Type(parse_type_list(v)?),
            "$size" => Pred::Size(parse_size(v)?),
            "$all" => parse_all(v)?,
            "$elemMatch" => parse_elem_match(v)?,
            "$regex" => {
                let (pattern, inline_opts) = match v {
                    Bson::String(s) => (s.as_str(), ""),
                    Bson::RegularExpression(r) => (r.pattern.as_str(), r.options.as_str()),
                    _ => return Err(QueryError::bad_value("$regex has to be a string")),
                };
                let opts = options.unwrap_or(inline_opts);
                Pred::Regex(compile_regex(pattern, opts)?)
            }
            "$options" => {
                if !ops.contains_key("$regex") {
                    return Err(QueryError::bad_value("$options needs a $regex"));
                }
                continue;
            }
            "$not" => match v {
                Bson::RegularExpression(r) => Pred::Not(Box::new(Pred::Regex(compile_regex(
                    &r.pattern, &r.options,
                )?))),
                Bson::Document(d) if !d.is_empty() && is_operator_doc(v).is_some() => {
                    Pred::Not(Box::new(parse_operators(d)?))
                }
                Bson::Document(d) if d.is_empty() => {
                    return Err(QueryError::bad_value("$not cannot be empty"))
                }
                _ => return Err(QueryError::bad_value("$not needs a regex or a document")),
            },
            "$mod" => parse_mod(v)?,
            "$comment" => continue,
            other => {
                return Err(QueryError::bad_value(format!("unknown operator: {other}")));
            }
        };
        preds.push(pred);
    }
    Ok(if preds.len() == 1 {
        preds.remove(0)
    } else {
        Pred::And(preds)
    })
}

fn parse_in_list(v: &Bson, op: &str) -> Result<Vec<InItem>, QueryError> {
    let Bson::Array(items) = v else {
        return Err(QueryError::bad_value(format!("{op} needs an array")));
    };
    items
        .iter()
        .map(|item| match item {
            Bson::RegularExpression(r) => Ok(InItem::Regex(compile_regex(&r.pattern, &r.options)?)),
            Bson::Document(_) if is_operator_doc(item).is_some() => {
                Err(QueryError::bad_value(format!("cannot nest $ under {op}")))
            }
            other => Ok(InItem::Value(other.clone())),
        })
        .collect()
}

fn parse_type_list(v: &Bson) -> Result<Vec<TypeSel>, QueryError> {
    let one = |b: &Bson| -> Result<TypeSel, QueryError> {
        match b {
            Bson::String(s) => type_alias(s)
                .ok_or_else(|| QueryError::bad_value(format!("Unknown type name alias: {s}"))),
            Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => {
                let code = crate::bson_order::number_as_i64(b).unwrap_or(0);
                if matches!(code, -1 | 1..=19 | 127) {
                    Ok(TypeSel::Code(code as i32))
                } else {
                    Err(QueryError::bad_value(format!(
                        "Invalid numerical type code: {code}"
                    )))
                }
            }
            _ => Err(QueryError::type_mismatch(
                "type must be represented as a number or a string",
            )),
        }
    };
    match v {
        Bson::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn type_alias(s: &str) -> Option<TypeSel> {
    let code = match s {
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "undefined" => 6,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "dbPointer" => 12,
        "javascript" => 13,
        "symbol" => 14,
        "javascriptWithScope" => 15,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "minKey" => -1,
        "maxKey" => 127,
        "number" => return Some(TypeSel::Number),
        _ => return None,
    };
    Some(TypeSel::Code(code))
}

/// The BSON type number of a value, as `$type` reports it.
pub fn bson_type_code(v: &Bson) -> i32 {
    match v {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

fn parse_size(v: &Bson) -> Result<usize, QueryError> {
    let n = match v {
        Bson::Double(d) if d.fract() != 0.0 => {
            return Err(QueryError::bad_value("$size must be a whole number"))
        }
        _ => crate::bson_order::number_as_i64(v)
            .ok_or_else(|| QueryError::bad_value("$size needs a number"))?,
    };
    usize::try_from(n).map_err(|_| QueryError::bad_value("$size may not be negative"))
}

fn parse_all(v: &Bson) -> Result<Pred, QueryError> {
    let Bson::Array(items) = v else {
        return Err(QueryError::bad_value("$all needs an array"));
    };
    let mut preds = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Bson::Document(d) if d.keys().next().map(String::as_str) == Some("$elemMatch") => {
                preds.push(parse_operators(d)?);
            }
            Bson::RegularExpression(r) => {
                preds.push(Pred::Regex(compile_regex(&r.pattern, &r.options)?));
            }
            Bson::Document(_) if is_operator_doc(item).is_some() => {
                return Err(QueryError::bad_value("no $ expressions in $all"));
            }
            other => preds.push(Pred::Cmp(CmpOp::Eq, other.clone())),
        }
    }
    Ok(Pred::All(preds))
}

fn parse_elem_match(v: &Bson) -> Result<Pred, QueryError> {
    let Bson::Document(d) = v else {
        return Err(QueryError::bad_value("$elemMatch needs an Object"));
    };
    let value_form = d.keys().next().is_some_and(|k| {
        k.starts_with('$') && !matches!(k.as_str(), "$and" | "$or" | "$nor" | "$expr" | "$where")
    });
    if value_form {
        match parse_operators(d)? {
            Pred::And(preds) => Ok(Pred::ElemMatchValue(preds)),
            one => Ok(Pred::ElemMatchValue(vec![one])),
        }
    } else {
        Ok(Pred::ElemMatchDoc(Box::new(parse_document(d)?)))
    }
}

fn parse_mod(v: &Bson) -> Result<Pred, QueryError> {
    let bad = || QueryError::bad_value("malformed mod, needs to be an array of two numbers");
    let Bson::Array(items) = v else {
        return Err(bad());
    };
    if items.len() != 2 {
        return Err(bad());
    }
    let divisor = crate::bson_order::number_as_i64(&items[0]).ok_or_else(bad)?;
    let remainder = crate::bson_order::number_as_i64(&items[1]).ok_or_else(bad)?;
    if divisor == 0 {
        return Err(QueryError::bad_value("divisor cannot be 0"));
    }
    Ok(Pred::Mod(divisor, remainder))
}

/// Compiles a MongoDB (PCRE) regex with its option letters.
pub(crate) fn compile_regex(pattern: &str, options: &str) -> Result<regex::Regex, QueryError> {
    let mut flags = String::new();
    for c in options.chars() {
        match c {
            'i' | 'm' | 's' | 'x' => flags.push(c),
            // `u` (unicode) is always on in the Rust engine.
            'u' => {}
            other => {
                return Err(QueryError::bad_value(format!(
                    "invalid flag in regex options: {other}"
                )))
            }
        }
    }
    let full = if flags.is_empty() {
        pattern.to_string()
    } else {
        format!("(?{flags}){pattern}")
    };
    regex::Regex::new(&full).map_err(|e| {
        QueryError::new(
            51091,
            "Location51091",
            format!("Regular expression is invalid: {e}"),
        )
    })
}

pub(crate) fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Null | Bson::Undefined => false,
        Bson::Int32(i) => *i != 0,
        Bson::Int64(i) => *i != 0,
        Bson::Double(d) => *d != 0.0,
        Bson::Decimal128(d) => !matches!(
            crate::bson_order::Dec::from_decimal(d),
            crate::bson_order::Dec::Finite { coef: 0, .. }
        ),
        _ => true,
    }
}

// ---- evaluation ----

fn eval_expr(expr: &Expr, doc: &Document) -> bool {
    match expr {
        Expr::And(subs) => subs.iter().all(|e| eval_expr(e, doc)),
        Expr::Or(subs) => subs.iter().any(|e| eval_expr(e, doc)),
        Expr::Nor(subs) => !subs.iter().any(|e| eval_expr(e, doc)),
        Expr::Const(b) => *b,
        Expr::Path(path, pred) => {
            let parts: Vec<&str> = path.split('.').collect();
            let mut values = Vec::new();
            collect_from_doc(doc, &parts, &mut values);
            eval_pred(pred, &values)
        }
    }
}

fn collect_from_doc<'a>(doc: &'a Document, parts: &[&str], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    match doc.get(*first) {
        Some(child) => collect_path(child, rest, out),
        None => out.push(None),
    }
}

/// Values reached by a dotted path; `None` marks a branch where the path is missing.
fn collect_path<'a>(value: &'a Bson, parts: &[&str], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(Some(value));
        return;
    };
    match value {
        Bson::Document(d) => collect_from_doc(d, parts, out),
        Bson::Array(items) => {
            let before = out.len();
            if let Ok(idx) = first.parse::<usize>() {
                if let Some(item) = items.get(idx) {
                    collect_path(item, rest, out);
                }
            }
            for item in items {
                if let Bson::Document(_) = item {
                    collect_path(item, parts, out);
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

fn eval_pred(pred: &Pred, values: &[Option<&Bson>]) -> bool {
    match pred {
        Pred::Not(inner) => !eval_pred(inner, values),
        Pred::And(preds) => preds.iter().all(|p| eval_pred(p, values)),
        Pred::Exists(want) => values.iter().any(Option::is_some) == *want,
        Pred::Size(n) => values
            .iter()
            .any(|v| matches!(v, Some(Bson::Array(a)) if a.len() == *n)),
        Pred::All(preds) => !preds.is_empty() && preds.iter().all(|p| eval_pred(p, values)),
        Pred::ElemMatchDoc(expr) => values.iter().any(|v| match v {
            Some(Bson::Array(items)) => items
                .iter()
                .any(|item| matches!(item, Bson::Document(d) if eval_expr(expr, d))),
            _ => false,
        }),
        Pred::ElemMatchValue(preds) => values.iter().any(|v| match v {
            Some(Bson::Array(items)) => items
                .iter()
                .any(|item| preds.iter().all(|p| eval_pred(p, &[Some(item)]))),
            _ => false,
        }),
        leaf => values.iter().any(|v| match v {
            None => leaf_matches_missing(leaf),
            Some(Bson::Array(items)) => {
                leaf_matches(leaf, v.unwrap_or(&Bson::Null))
                    || items.iter().any(|item| leaf_matches(leaf, item))
            }
            Some(value) => leaf_matches(leaf, value),
        }),
    }
}

fn leaf_matches_missing(pred: &Pred) -> bool {
    match pred {
        Pred::Cmp(CmpOp::Eq | CmpOp::Gte | CmpOp::Lte, Bson::Null) => true,
        Pred::In(items) => items.iter().any(|i| matches!(i, InItem::Value(Bson::Null))),
        _ => false,
    }
}

fn leaf_matches(pred: &Pred, value: &Bson) -> bool {
    match pred {
        Pred::Cmp(op, target) => compare_op(*op, value, target),
        Pred::In(items) => items.iter().any(|item| match item {
            InItem::Value(target) => compare_op(CmpOp::Eq, value, target),
            InItem::Regex(re) => regex_matches(re, value),
        }),
        Pred::Type(sels) => sels.iter().any(|sel| match sel {
            TypeSel::Number => crate::bson_order::is_number(value),
            TypeSel::Code(c) => bson_type_code(value) == *c,
        }),
        Pred::Regex(re) => regex_matches(re, value),
        Pred::Mod(divisor, remainder) => match value {
            Bson::Double(d) if !d.is_finite() => false,
            _ => crate::bson_order::number_as_i64(value)
                .is_some_and(|n| n.wrapping_rem(*divisor) == *remainder),
        },
        // Array-level predicates never reach here (handled in eval_pred);
        // nested inside $elemMatch value form they see the element itself.
        other => eval_pred(other, &[Some(value)]),
    }
}

fn regex_matches(re: &regex::Regex, value: &Bson) -> bool {
    match value {
        Bson::String(s) | Bson::Symbol(s) => re.is_match(s),
        Bson::RegularExpression(r) => re.as_str().ends_with(r.pattern.as_str()),
        _ => false,
    }
}

fn compare_op(op: CmpOp, value: &Bson, target: &Bson) -> bool {
    // Null queries also match undefined, as in the server.
    let value = if matches!(value, Bson::Undefined) && matches!(target, Bson::Null) {
        &Bson::Null
    } else {
        value
    };
    if op == CmpOp::Eq {
        return compare(value, target) == Ordering::Equal;
    }
    // Range operators only match within the target's type bracket, except
    // MinKey/MaxKey which bound every type.
    let same_bracket = type_bracket(value) == type_bracket(target)
        || matches!(target, Bson::MinKey | Bson::MaxKey);
    if !same_bracket {
        return false;
    }
    let ord = compare(value, target);
    match op {
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
        CmpOp::Eq => ord == Ordering::Equal,
    }
}

// ---- paths ----

/// The value at a dotted path, following sub-documents and numeric array
/// indexes only (no array fan-out): the lookup `update` and sorting need.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut current = doc.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Bson::Document(d) => d.get(part)?,
            Bson::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

// ---- sort ----

/// Sorts documents in place by a sort specification such as `{a: 1, "b.c": -1}`.
/// An array field sorts by its smallest element ascending and its largest
/// descending, and a missing field sorts as null. The sort is stable.
pub fn sort_documents(docs: &mut [Document], sort: &Document) -> Result<(), QueryError> {
    let keys = parse_sort(sort)?;
    if keys.is_empty() {
        return Ok(());
    }
    docs.sort_by(|a, b| compare_by_keys(a, b, &keys));
    Ok(())
}

/// A parsed sort specification: `(path, ascending)` pairs.
pub(crate) fn parse_sort(sort: &Document) -> Result<Vec<(String, bool)>, QueryError> {
    let mut keys = Vec::with_capacity(sort.len());
    for (path, dir) in sort {
        let asc = match crate::bson_order::number_as_f64(dir) {
            Some(1.0) => true,
            Some(-1.0) => false,
            _ => match dir {
                // {$meta: "textScore"} etc.: no text search here, keep order.
                Bson::Document(d) if d.contains_key("$meta") => continue,
                _ => {
                    return Err(QueryError::new(
                        15974,
                        "Location15974",
                        format!(
                            "Illegal key in $sort specification: {path}: {dir}; \
                             $sort key ordering must be 1 (for ascending) or -1 (for descending)"
                        ),
                    ))
                }
            },
        };
        if path.is_empty() {
            return Err(QueryError::bad_value(
                "FieldPath cannot be constructed with empty string",
            ));
        }
        keys.push((path.clone(), asc));
    }
    Ok(keys)
}

pub(crate) fn compare_by_keys(a: &Document, b: &Document, keys: &[(String, bool)]) -> Ordering {
    for (path, asc) in keys {
        let ka = sort_key(a, path, *asc);
        let kb = sort_key(b, path, *asc);
        let ord = compare(&ka, &kb);
        let ord = if *asc { ord } else { ord.reverse() };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn sort_key(doc: &Document, path: &str, asc: bool) -> Bson {
    let parts: Vec<&str> = path.split('.').collect();
    let mut values = Vec::new();
    collect_from_doc(doc, &parts, &mut values);
    let mut flat: Vec<&Bson> = Vec::new();
    for v in values.iter().flatten() {
        match v {
            Bson::Array(items) if !items.is_empty() => flat.extend(items.iter()),
            other => flat.push(other),
        }
    }
    let best = if asc {
        flat.into_iter().min_by(|x, y| compare(x, y))
    } else {
        flat.into_iter().max_by(|x, y| compare(x, y))
    };
    match best {
        Some(Bson::Array(_)) | None => Bson::Null,
        Some(v) => v.clone(),
    }
}

// ---- projection ----

/// Applies a `find` projection: inclusion (`{a: 1, "b.c": 1}`), exclusion
/// (`{a: 0}`), `_id: 0`, nested specs (`{b: {c: 1}}`), `$slice` and computed
/// fields (`"$path"`, `{$literal: v}`, other aggregation expressions).
pub fn project(doc: &Document, projection: &Document) -> Result<Document, QueryError> {
    let plan = Projection::parse(projection)?;
    plan.apply(doc)
}

/// A parsed projection, reusable for many documents.
#[derive(Debug, Clone)]
pub(crate) struct Projection {
    inclusion: bool,
    tree: Document,
    exclude_id: bool,
}

/// Leaf markers in a projection tree.
const INCLUDE: i32 = 1;
const EXCLUDE: i32 = 0;

impl Projection {
    pub(crate) fn parse(spec: &Document) -> Result<Projection, QueryError> {
        let mut tree = Document::new();
        let mut mode: Option<bool> = None;
        let mut exclude_id = false;
        build_tree(spec, "", &mut tree, &mut mode, &mut exclude_id)?;
        Ok(Projection {
            // An empty or `_id`-only exclusion is an exclusion projection;
            // `{_id: 1}` alone is an inclusion one.
            inclusion: mode.unwrap_or(!exclude_id && !tree.is_empty()),
            tree,
            exclude_id,
        })
    }

    pub(crate) fn apply(&self, doc: &Document) -> Result<Document, QueryError> {
        let mut out = if self.inclusion {
            let mut out = Document::new();
            if !self.exclude_id && !self.tree.contains_key("_id") {
                if let Some(id) = doc.get("_id") {
                    out.insert("_id", id.clone());
                }
            }
            include(doc, doc, &self.tree, &mut out)?;
            out
        } else {
            exclude(doc, &self.tree)
        };
        if self.exclude_id {
            out.remove("_id");
        }
        Ok(out)
    }
}

fn build_tree(
    spec: &Document,
    prefix: &str,
    tree: &mut Document,
    mode: &mut Option<bool>,
    exclude_id: &mut bool,
) -> Result<(), QueryError> {
    if spec.is_empty() && !prefix.is_empty() {
        return Err(QueryError::new(
            51270,
            "Location51270",
            format!(
                "An empty sub-projection is not a valid value. Found empty object at path {prefix}"
            ),
        ));
    }
    for (key, value) in spec {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let leaf = match value {
            Bson::Boolean(_)
            | Bson::Int32(_)
            | Bson::Int64(_)
            | Bson::Double(_)
            | Bson::Decimal128(_) => {
                let inc = truthy(value);
                if full == "_id" {
                    if !inc {
                        *exclude_id = true;
                        continue;
                    }
                } else {
                    set_mode(mode, inc, &full)?;
                }
                Bson::Int32(if inc { INCLUDE } else { EXCLUDE })
            }
            Bson::Document(d) if is_operator_doc(value).is_some() => {
                match d.keys().next().map(String::as_str) {
                    // $slice keeps the projection's mode; it may appear in either.
                    Some("$slice") | Some("$elemMatch") => {}
                    _ => set_mode(mode, true, &full)?,
                }
                Bson::Document(doc! { "$expr": value.clone() })
            }
            Bson::Document(d) => {
                let mut sub = Document::new();
                build_tree(d, &full, &mut sub, mode, exclude_id)?;
                insert_tree(tree, key, Bson::Document(sub));
                continue;
            }
            other => {
                set_mode(mode, true, &full)?;
                Bson::Document(doc! { "$expr": other.clone() })
            }
        };
        insert_tree_path(tree, key, leaf);
    }
    Ok(())
}

use bson::doc;

fn set_mode(mode: &mut Option<bool>, inclusion: bool, path: &str) -> Result<(), QueryError> {
    match *mode {
        Some(m) if m != inclusion => Err(if inclusion {
            QueryError::new(
                31253,
                "Location31253",
                format!("Cannot do inclusion on field {path} in exclusion projection"),
            )
        } else {
            QueryError::new(
                31254,
                "Location31254",
                format!("Cannot do exclusion on field {path} in inclusion projection"),
            )
        }),
        _ => {
            *mode = Some(inclusion);
            Ok(())
        }
    }
}

fn insert_tree(tree: &mut Document, key: &str, value: Bson) {
    match (tree.get_mut(key), value) {
        (Some(Bson::Document(existing)), Bson::Document(new)) if !is_leaf(existing) => {
            for (k, v) in new {
                insert_tree(existing, &k, v);
            }
        }
        (_, value) => {
            tree.insert(key, value);
        }
    }
}

/// Inserts `value` at a dotted `key` of the projection tree.
fn insert_tree_path(tree: &mut Document, key: &str, value: Bson) {
    match key.split_once('.') {
        None => insert_tree(tree, key, value),
        Some((head, rest)) => {
            let mut sub = Document::new();
            insert_tree_path(&mut sub, rest, value);
            insert_tree(tree, head, Bson::Document(sub));
        }
    }
}

fn is_leaf(node: &Document) -> bool {
    node.contains_key("$expr")
}

fn include(
    root: &Document,
    doc: &Document,
    tree: &Document,
    out: &mut Document,
) -> Result<(), QueryError> {
    for (key, value) in doc {
        let Some(node) = tree.get(key) else { continue };
        match node {
            Bson::Int32(INCLUDE) => {
                out.insert(key, value.clone());
            }
            Bson::Document(sub) if !is_leaf(sub) => match value {
                Bson::Document(inner) => {
                    let mut child = Document::new();
                    include(root, inner, sub, &mut child)?;
                    out.insert(key, child);
                }
                Bson::Array(items) => {
                    out.insert(key, include_array(root, items, sub)?);
                }
                _ => {}
            },
            _ => {}
        }
    }
    // Computed fields (and sub-trees with computed leaves over missing
    // fields) come after the copied ones, in specification order.
    for (key, node) in tree {
        if let Bson::Document(sub) = node {
            if is_leaf(sub) {
                let expr = sub.get("$expr").unwrap_or(&Bson::Null);
                let current = doc.get(key);
                if let Some(v) = computed_value(root, current, expr)? {
                    out.insert(key, v);
                }
            } else if !doc.contains_key(key) && has_computed(sub) {
                let mut child = Document::new();
                include(root, &Document::new(), sub, &mut child)?;
                out.insert(key, child);
            }
        }
    }
    Ok(())
}

fn has_computed(tree: &Document) -> bool {
    tree.values().any(|v| match v {
        Bson::Document(d) => is_leaf(d) || has_computed(d),
        _ => false,
    })
}

fn include_array(root: &Document, items: &[Bson], tree: &Document) -> Result<Bson, QueryError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Bson::Document(d) => {
                let mut child = Document::new();
                include(root, d, tree, &mut child)?;
                out.push(Bson::Document(child));
            }
            Bson::Array(inner) => out.push(include_array(root, inner, tree)?),
            _ => {}
        }
    }
    Ok(Bson::Array(out))
}

fn computed_value(
    root: &Document,
    current: Option<&Bson>,
    expr: &Bson,
) -> Result<Option<Bson>, QueryError> {
    if let Bson::Document(d) = expr {
        if let Some(spec) = d.get("$slice") {
            return Ok(current.map(|v| slice_value(v, spec)).transpose()?.flatten());
        }
        if d.contains_key("$elemMatch") {
            return Err(QueryError::bad_value(
                "$elemMatch projection is not supported by mongo-sim",
            ));
        }
    }
    // An expression evaluating to "missing" adds no field.
    crate::aggregate::eval_expression(expr, root)
}

fn slice_value(value: &Bson, spec: &Bson) -> Result<Option<Bson>, QueryError> {
    let Bson::Array(items) = value else {
        return Ok(Some(value.clone()));
    };
    let len = items.len() as i64;
    let (skip, limit) = match spec {
        Bson::Array(pair) if pair.len() == 2 => {
            let s = crate::bson_order::number_as_i64(&pair[0])
                .ok_or_else(|| QueryError::bad_value("$slice skip must be a number"))?;
            let l = crate::bson_order::number_as_i64(&pair[1])
                .ok_or_else(|| QueryError::bad_value("$slice limit must be a number"))?;
            if l <= 0 {
                return Err(QueryError::bad_value("$slice limit must be positive"));
            }
            let start = if s < 0 { (len + s).max(0) } else { s.min(len) };
            (start, l)
        }
        other => {
            let n = crate::bson_order::number_as_i64(other).ok_or_else(|| {
                QueryError::bad_value("$slice only supports numbers and [skip, limit] arrays")
            })?;
            if n >= 0 {
                (0, n)
            } else {
                ((len + n).max(0), -n)
            }
        }
    };
    Ok(Some(Bson::Array(
        items
            .iter()
            .skip(skip as usize)
            .take(limit as usize)
            .cloned()
            .collect(),
    )))
}

fn exclude(doc: &Document, tree: &Document) -> Document {
    let mut out = Document::new();
    for (key, value) in doc {
        match tree.get(key) {
            Some(Bson::Int32(EXCLUDE)) => {}
            Some(Bson::Document(sub)) if is_leaf(sub) => {
                // $slice inside an exclusion projection.
                let expr = sub.get("$expr").unwrap_or(&Bson::Null);
                match computed_value(doc, Some(value), expr) {
                    Ok(Some(v)) => {
                        out.insert(key, v);
                    }
                    _ => {
                        out.insert(key, value.clone());
                    }
                }
            }
            Some(Bson::Document(sub)) => match value {
                Bson::Document(inner) => {
                    out.insert(key, exclude(inner, sub));
                }
                Bson::Array(items) => {
                    out.insert(key, exclude_array(items, sub));
                }
                other => {
                    out.insert(key, other.clone());
                }
            },
            _ => {
                out.insert(key, value.clone());
            }
        }
    }
    out
}

fn exclude_array(items: &[Bson], tree: &Document) -> Bson {
    Bson::Array(
        items
            .iter()
            .map(|item| match item {
                Bson::Document(d) => Bson::Document(exclude(d, tree)),
                Bson::Array(inner) => exclude_array(inner, tree),
                other => other.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    fn m(filter: Document, doc: Document) -> bool {
        Filter::parse(&filter).unwrap().matches(&doc)
    }

    #[test]
    fn implicit_equality_and_dotted_paths() {
        let d = doc! {"_id": 1, "a": 5, "b": {"c": "x"}, "arr": [1, 2, 3], "subs": [{"k": 1}, {"k": 2}]};
        assert!(m(doc! {"a": 5}, d.clone()));
        assert!(m(doc! {"a": 5.0}, d.clone()));
        assert!(!m(doc! {"a": 6}, d.clone()));
        assert!(m(doc! {"b.c": "x"}, d.clone()));
        assert!(m(doc! {"b": {"c": "x"}}, d.clone()));
        assert!(!m(doc! {"b": {"c": "x", "d": 1}}, d.clone()));
        assert!(m(doc! {"arr": 2}, d.clone()));
        assert!(m(doc! {"arr": [1, 2, 3]}, d.clone()));
        assert!(!m(doc! {"arr": [1, 2]}, d.clone()));
        assert!(m(doc! {"arr.1": 2}, d.clone()));
        assert!(m(doc! {"subs.k": 2}, d.clone()));
        assert!(!m(doc! {"subs.k": 3}, d.clone()));
        assert!(m(doc! {"missing": null}, d.clone()));
        assert!(!m(doc! {"a": null}, d.clone()));
        assert!(m(doc! {"a": 5, "b.c": "x"}, d.clone()));
        assert!(!m(doc! {"a": 5, "b.c": "y"}, d));
    }

    #[test]
    fn comparison_operators() {
        let d = doc! {"n": 10, "s": "m", "arr": [1, 20]};
        assert!(m(doc! {"n": {"$gt": 5}}, d.clone()));
        assert!(!m(doc! {"n": {"$gt": 10}}, d.clone()));
        assert!(m(doc! {"n": {"$gte": 10, "$lte": 10}}, d.clone()));
        assert!(m(doc! {"n": {"$lt": 10.5}}, d.clone()));
        // Type bracketing: a number is never greater than a string.
        assert!(!m(doc! {"n": {"$gt": "a"}}, d.clone()));
        assert!(m(doc! {"s": {"$gt": "a", "$lt": "z"}}, d.clone()));
        // Each operator may be satisfied by a different array element.
        assert!(m(doc! {"arr": {"$gt": 10, "$lt": 5}}, d.clone()));
        assert!(!m(
            doc! {"arr": {"$elemMatch": {"$gt": 10, "$lt": 5}}},
            d.clone()
        ));
        assert!(m(doc! {"n": {"$ne": 3}}, d.clone()));
        assert!(!m(doc! {"arr": {"$ne": 20}}, d.clone()));
        assert!(m(doc! {"missing": {"$ne": 3}}, d.clone()));
        assert!(m(doc! {"n": {"$eq": 10}}, d.clone()));
        assert!(m(doc! {"n": {"$in": [1, 10]}}, d.clone()));
        assert!(m(doc! {"arr": {"$in": [20]}}, d.clone()));
        assert!(m(doc! {"n": {"$nin": [1, 2]}}, d.clone()));
        assert!(!m(doc! {"arr": {"$nin": [1]}}, d.clone()));
        assert!(m(doc! {"missing": {"$in": [null]}}, d.clone()));
        assert!(m(doc! {"missing": {"$gte": null}}, d));
    }

    #[test]
    fn logical_operators() {
        let d = doc! {"a": 1, "b": 2};
        assert!(m(doc! {"$or": [{"a": 2}, {"b": 2}]}, d.clone()));
        assert!(!m(doc! {"$and": [{"a": 1}, {"b": 3}]}, d.clone()));
        assert!(m(doc! {"$nor": [{"a": 2}, {"b": 3}]}, d.clone()));
        assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, d.clone()));
        assert!(!m(doc! {"a": {"$not": {"$lt": 5}}}, d.clone()));
        assert!(m(doc! {"missing": {"$not": {"$gt": 5}}}, d));
        let err = Filter::parse(&doc! {"$or": []}).unwrap_err();
        assert_eq!(err.code, 2);
        let err = Filter::parse(&doc! {"$foo": 1}).unwrap_err();
        assert_eq!(err.message, "unknown top level operator: $foo");
        let err = Filter::parse(&doc! {"a": {"$bogus": 1}}).unwrap_err();
        assert_eq!((err.code, err.code_name), (2, "BadValue"));
    }

    #[test]
    fn element_operators() {
        let d = doc! {"a": null, "n": 1i64, "arr": ["x", "y"], "subs": [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]};
        assert!(m(doc! {"a": {"$exists": true}}, d.clone()));
        assert!(m(doc! {"zz": {"$exists": false}}, d.clone()));
        assert!(!m(doc! {"zz": {"$exists": 1}}, d.clone()));
        assert!(m(doc! {"subs.k": {"$exists": true}}, d.clone()));
        assert!(m(doc! {"n": {"$type": "long"}}, d.clone()));
        assert!(m(doc! {"n": {"$type": "number"}}, d.clone()));
        assert!(m(doc! {"n": {"$type": 18}}, d.clone()));
        assert!(m(doc! {"arr": {"$type": "array"}}, d.clone()));
        assert!(m(doc! {"arr": {"$type": "string"}}, d.clone()));
        assert!(m(doc! {"a": {"$type": ["int", "null"]}}, d.clone()));
        assert!(m(doc! {"arr": {"$size": 2}}, d.clone()));
        assert!(!m(doc! {"arr": {"$size": 1}}, d.clone()));
        assert!(m(doc! {"arr": {"$all": ["y", "x"]}}, d.clone()));
        assert!(!m(doc! {"arr": {"$all": ["y", "z"]}}, d.clone()));
        assert!(!m(doc! {"arr": {"$all": []}}, d.clone()));
        assert!(m(
            doc! {"subs": {"$elemMatch": {"k": 2, "v": "b"}}},
            d.clone()
        ));
        assert!(!m(
            doc! {"subs": {"$elemMatch": {"k": 2, "v": "a"}}},
            d.clone()
        ));
        assert!(m(
            doc! {"subs": {"$elemMatch": {"k": {"$gt": 1}}}},
            d.clone()
        ));
        assert!(m(doc! {"n": {"$mod": [2, 1]}}, d));
        assert_eq!(
            Filter::parse(&doc! {"a": {"$size": -1}}).unwrap_err().code,
            2
        );
        assert_eq!(Filter::parse(&doc! {"a": {"$in": 5}}).unwrap_err().code, 2);
    }

    #[test]
    fn regex_operators() {
        let d = doc! {"name": "Alice", "tags": ["red", "Blue"]};
        assert!(m(
            doc! {"name": {"$regex": "^al", "$options": "i"}},
            d.clone()
        ));
        assert!(!m(doc! {"name": {"$regex": "^al"}}, d.clone()));
        assert!(m(
            doc! {"name": bson::Regex { pattern: "ice$".into(), options: "".into() }},
            d.clone()
        ));
        assert!(m(
            doc! {"tags": {"$regex": "^b", "$options": "i"}},
            d.clone()
        ));
        assert!(m(
            doc! {"tags": {"$in": [bson::Regex { pattern: "^r".into(), options: "".into() }]}},
            d.clone()
        ));
        assert!(m(
            doc! {"name": {"$not": bson::Regex { pattern: "^B".into(), options: "".into() }}},
            d
        ));
        assert_eq!(
            Filter::parse(&doc! {"a": {"$regex": "(?<=a)b"}})
                .unwrap_err()
                .code,
            51091
        );
    }

    #[test]
    fn id_fast_path() {
        let oid = ObjectId::new();
        assert_eq!(
            Filter::parse(&doc! {"_id": oid}).unwrap().id_equality(),
            Some(&Bson::ObjectId(oid))
        );
        assert_eq!(
            Filter::parse(&doc! {"_id": {"$eq": 4}})
                .unwrap()
                .id_equality(),
            Some(&Bson::Int32(4))
        );
        assert!(Filter::parse(&doc! {"_id": {"$gt": 4}})
            .unwrap()
            .id_equality()
            .is_none());
        assert!(Filter::parse(&doc! {"_id": 1, "a": 2})
            .unwrap()
            .id_equality()
            .is_none());
        assert_eq!(
            Filter::parse(&doc! {"_id": {"a": 1}})
                .unwrap()
                .id_equality(),
            Some(&Bson::Document(doc! {"a": 1}))
        );
    }

    #[test]
    fn sorting() {
        let mut docs = vec![
            doc! {"_id": 1, "a": 3, "b": "x"},
            doc! {"_id": 2, "a": [5, 0], "b": "y"},
            doc! {"_id": 3, "b": "z"},
            doc! {"_id": 4, "a": 3, "b": "w"},
        ];
        sort_documents(&mut docs, &doc! {"a": 1, "b": -1}).unwrap();
        let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
        assert_eq!(ids, vec![3, 2, 1, 4]);
        sort_documents(&mut docs, &doc! {"a": -1}).unwrap();
        let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
        assert_eq!(ids, vec![2, 1, 4, 3]);
        assert_eq!(
            sort_documents(&mut docs, &doc! {"a": 2}).unwrap_err().code,
            15974
        );
    }

    #[test]
    fn projections() {
        let d = doc! {"_id": 7, "a": 1, "b": {"c": 2, "d": 3}, "arr": [{"x": 1, "y": 2}, 5], "list": [1, 2, 3, 4]};
        assert_eq!(
            project(&d, &doc! {"a": 1}).unwrap(),
            doc! {"_id": 7, "a": 1}
        );
        assert_eq!(
            project(&d, &doc! {"a": 1, "_id": 0}).unwrap(),
            doc! {"a": 1}
        );
        assert_eq!(
            project(&d, &doc! {"b.c": 1}).unwrap(),
            doc! {"_id": 7, "b": {"c": 2}}
        );
        assert_eq!(
            project(&d, &doc! {"b": {"d": 1}}).unwrap(),
            doc! {"_id": 7, "b": {"d": 3}}
        );
        assert_eq!(
            project(&d, &doc! {"arr.y": 1}).unwrap(),
            doc! {"_id": 7, "arr": [{"y": 2}]}
        );
        assert_eq!(
            project(&d, &doc! {"b.c": 0, "arr": 0, "list": 0}).unwrap(),
            doc! {"_id": 7, "a": 1, "b": {"d": 3}}
        );
        assert_eq!(project(&d, &doc! {"_id": 0}).unwrap().get("_id"), None);
        assert_eq!(project(&d, &doc! {"_id": 0}).unwrap().len(), 4);
        assert_eq!(
            project(&d, &doc! {"list": {"$slice": 2}, "a": 1}).unwrap(),
            doc! {"_id": 7, "a": 1, "list": [1, 2]}
        );
        assert_eq!(
            project(&d, &doc! {"list": {"$slice": -1}})
                .unwrap()
                .get_array("list")
                .unwrap(),
            &vec![Bson::Int32(4)]
        );
        assert_eq!(
            project(&d, &doc! {"a": 1, "z": "$b.c"}).unwrap(),
            doc! {"_id": 7, "a": 1, "z": 2}
        );
        assert_eq!(project(&d, &doc! {"a": 1, "b": 0}).unwrap_err().code, 31254);
        assert_eq!(project(&d, &doc! {"a": 0, "b": 1}).unwrap_err().code, 31253);
    }

    #[test]
    fn get_path_follows_indexes() {
        let d = doc! {"a": {"b": [10, {"c": 3}]}};
        assert_eq!(get_path(&d, "a.b.0"), Some(&Bson::Int32(10)));
        assert_eq!(get_path(&d, "a.b.1.c"), Some(&Bson::Int32(3)));
        assert_eq!(get_path(&d, "a.x"), None);
    }
}
