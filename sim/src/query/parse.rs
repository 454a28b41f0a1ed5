//! Parsing a filter document into the matcher's expression tree, with the
//! server's error codes and messages for malformed operators.

use bson::{Bson, Document};

use super::{CmpOp, Expr, InItem, Pred, QueryError, TypeSel};

pub(super) fn id_literal(v: &Bson) -> Option<Bson> {
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

/// The members of `{$in: [...]}` when every one is a plain value whose
/// `$in` equality is the store's key equality (not regex, array, document,
/// null or undefined, which match more than their own key).
pub(super) fn id_in_list(v: &Bson) -> Option<Vec<Bson>> {
    let Bson::Document(d) = v else {
        return None;
    };
    let (1, Some(Bson::Array(items))) = (d.len(), d.get("$in")) else {
        return None;
    };
    let plain = items.iter().all(|item| {
        !matches!(
            item,
            Bson::RegularExpression(_)
                | Bson::Array(_)
                | Bson::Document(_)
                | Bson::Null
                | Bson::Undefined
        )
    });
    plain.then(|| items.clone())
}

pub(super) fn parse_document(filter: &Document) -> Result<Expr, QueryError> {
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
                "expr" => {
                    crate::aggregate::check_variables(value)?;
                    parts.push(Expr::Aggregate(value.clone()));
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

pub(crate) fn is_operator_doc(v: &Bson) -> Option<&Document> {
    match v {
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => Some(d),
        _ => None,
    }
}

/// A query value that is a document of operators, as the server's matcher decides it
/// (`isExpressionDocument`): the first field starts with `$` and the document is not a DBRef
/// (one holding both `$ref` and `$id`, in any order), which is compared as a value instead.
fn is_expression_doc(v: &Bson) -> Option<&Document> {
    is_operator_doc(v).filter(|d| !(d.contains_key("$ref") && d.contains_key("$id")))
}

fn parse_path_value(value: &Bson) -> Result<Pred, QueryError> {
    match value {
        Bson::RegularExpression(r) => Ok(Pred::Regex(compile_regex(&r.pattern, &r.options)?)),
        _ => match is_expression_doc(value) {
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
            Bson::Document(_) if is_expression_doc(item).is_some() => {
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
pub(crate) fn compile_regex(pattern: &str, options: &str) -> Result<super::pcre::Pcre, QueryError> {
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
    super::pcre::Pcre::new(&full).map_err(|e| {
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
