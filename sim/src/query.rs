//! Query filters (`find`, `update`, `delete`, `$match`), sorting and `find`
//! projections, with MongoDB's matching semantics: dotted paths traverse
//! arrays of sub-documents, a predicate on an array field matches when the
//! whole array or any element matches, and negations (`$ne`, `$nin`, `$not`,
//! `$nor`) negate the whole path predicate.
//!
//! Also owns [`QueryError`], the error every pure module returns; the server
//! turns it into `{ok: 0, errmsg, code, codeName}`.
//!
//! Nuances of the real server not reproduced: collations, `$where`,
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
    /// `$expr`: an aggregation expression, true when it evaluates truthy.
    Aggregate(Bson),
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

    /// The index the positional operator `$` stands for in an update of
    /// `array_path`: the first element of that array satisfying every
    /// top-level condition of this filter on paths inside the array.
    pub(crate) fn positional_index(&self, doc: &Document, array_path: &str) -> Option<usize> {
        let Some(Bson::Array(items)) = get_path(doc, array_path) else {
            return None;
        };
        let mut conds: Vec<(&str, &Pred)> = Vec::new();
        array_conditions(&self.root, array_path, &mut conds);
        if conds.is_empty() {
            return None;
        }
        items.iter().position(|item| {
            conds.iter().all(|(rest, pred)| match (*rest, pred) {
                ("", Pred::ElemMatchDoc(expr)) => {
                    matches!(item, Bson::Document(d) if eval_expr(expr, d))
                }
                ("", Pred::ElemMatchValue(preds)) => {
                    preds.iter().all(|p| eval_pred(p, &[Some(item)]))
                }
                ("", pred) => eval_pred(pred, &[Some(item)]),
                (rest, pred) => {
                    let parts: Vec<&str> = rest.split('.').collect();
                    let mut values = Vec::new();
                    collect_path(item, &parts, &mut values);
                    eval_pred(pred, &values)
                }
            })
        })
    }
}

/// Top-level (possibly `$and`-nested) conditions on `array_path` or below
/// it, with the path remainder inside an element.
fn array_conditions<'a>(expr: &'a Expr, array_path: &str, out: &mut Vec<(&'a str, &'a Pred)>) {
    match expr {
        Expr::And(subs) => {
            for sub in subs {
                array_conditions(sub, array_path, out);
            }
        }
        Expr::Path(path, pred) => {
            if path == array_path {
                out.push(("", pred));
            } else if let Some(rest) = path
                .strip_prefix(array_path)
                .and_then(|r| r.strip_prefix('.'))
            {
                out.push((rest, pred));
            }
        }
        _ => {}
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
                "expr" => parts.push(Expr::Aggregate(value.clone())),
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
        // An expression that fails on this document (e.g. `$divide` by zero)
        // does not match it; the server would fail the whole query instead.
        Expr::Aggregate(e) => crate::aggregate::eval_expression(e, doc)
            .ok()
            .flatten()
            .is_some_and(|v| truthy(&v)),
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

mod projection;
mod sort;

pub use projection::project;
pub(crate) use projection::Projection;
pub use sort::sort_documents;
pub(crate) use sort::{compare_by_keys, parse_sort};

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
    fn get_path_follows_indexes() {
        let d = doc! {"a": {"b": [10, {"c": 3}]}};
        assert_eq!(get_path(&d, "a.b.0"), Some(&Bson::Int32(10)));
        assert_eq!(get_path(&d, "a.b.1.c"), Some(&Bson::Int32(3)));
        assert_eq!(get_path(&d, "a.x"), None);
    }

    #[test]
    fn expr_compares_fields() {
        let d = doc! {"spent": 120, "budget": 100};
        assert!(m(doc! {"$expr": {"$gt": ["$spent", "$budget"]}}, d.clone()));
        assert!(!m(
            doc! {"$expr": {"$lt": ["$spent", "$budget"]}},
            d.clone()
        ));
        assert!(!m(doc! {"$expr": {"$divide": [1, 0]}}, d));
    }

    #[test]
    fn positional_index_finds_the_matched_element() {
        let d = doc! {"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 5}, {"sku": "b", "qty": 9}], "n": [3, 7]};
        let f = Filter::parse(&doc! {"items.sku": "b", "items.qty": {"$gt": 6}}).unwrap();
        assert_eq!(f.positional_index(&d, "items"), Some(2));
        let f = Filter::parse(&doc! {"items": {"$elemMatch": {"sku": "b"}}}).unwrap();
        assert_eq!(f.positional_index(&d, "items"), Some(1));
        let f = Filter::parse(&doc! {"n": {"$gte": 5}}).unwrap();
        assert_eq!(f.positional_index(&d, "n"), Some(1));
        let f = Filter::parse(&doc! {"other": 1}).unwrap();
        assert_eq!(f.positional_index(&d, "items"), None);
    }
}
