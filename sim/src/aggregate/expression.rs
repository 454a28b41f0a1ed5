//! The aggregation expression language: field paths (`"$a.b"`, fanning
//! out over arrays), `$$ROOT`/`$$CURRENT`/`$$REMOVE`/`$$NOW`, object and
//! array literals, and the operators `$literal $add $subtract $multiply
//! $divide $concat $toLower $toUpper $toString $eq $ne $gt $gte $lt $lte
//! $cmp $and $or $not $cond $ifNull $size $arrayElemAt $first $last
//! $concatArrays $in $sum $max $min $avg $mergeObjects $type $getField $rand`, and the
//! command's `let` variables (`$$name`, see [`LetScope`]).

use std::cell::RefCell;
use std::cmp::Ordering;

use bson::{doc, Bson, Document};

use super::arith::{add_numbers, mul_numbers, negate};
use super::{accumulate, count_value};
use crate::bson_order::{compare, number_as_f64, number_as_i64};
use crate::query::{truthy, QueryError};

thread_local! {
    /// The running command's `let` variables. A command runs on one thread from start to end
    /// without yielding (see `LetScope::enter`), so its variables are this thread's meanwhile.
    static LET_VARS: RefCell<Option<Document>> = const { RefCell::new(None) };
}

/// The `let` variables of one command (find, aggregate, update, delete, findAndModify), as
/// `$$name` in its expressions, until dropped. Enter it only around code that does not await.
pub struct LetScope(());

impl LetScope {
    /// Evaluates `spec` (constant expressions: `$literal`, `$rand`, ...) and makes its
    /// variables visible; `None` when the command has no `let`.
    pub fn enter(command: &str, spec: Option<&Bson>) -> Result<Option<Self>, QueryError> {
        let Some(spec) = spec else {
            return Ok(None);
        };
        let Bson::Document(spec) = spec else {
            return Err(QueryError::type_mismatch(format!(
                "BSON field '{command}.let' is the wrong type '{}', expected type 'object'",
                type_name(spec)
            )));
        };
        let mut vars = Document::new();
        for (name, value) in spec {
            // mongod: user variable names start with a lowercase letter (or a non-ASCII one).
            let first = name.chars().next().unwrap_or(' ');
            if !first.is_ascii_lowercase() && first.is_ascii() {
                return Err(QueryError::new(
                    16870,
                    "Location16870",
                    format!("'{name}' starts with an invalid character for a user variable name"),
                ));
            }
            let v = eval_expression(value, &Document::new())?.unwrap_or(Bson::Null);
            vars.insert(name.clone(), v);
        }
        LET_VARS.with(|v| *v.borrow_mut() = Some(vars));
        Ok(Some(Self(())))
    }
}

impl Drop for LetScope {
    fn drop(&mut self) {
        LET_VARS.with(|v| *v.borrow_mut() = None);
    }
}

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
            Ok(doc_field_path(root, &s[1..]))
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

/// Refuses, as mongod does when it parses an expression, a `$$name` that is neither a
/// system variable nor one of the command's `let` variables (17276).
pub fn check_variables(expr: &Bson) -> Result<(), QueryError> {
    match expr {
        Bson::String(s) if s.starts_with("$$") => {
            let name = &s[2..];
            let var = name.split_once('.').map_or(name, |(v, _)| v);
            if matches!(var, "ROOT" | "CURRENT" | "REMOVE" | "NOW") {
                return Ok(());
            }
            variable(name, &Document::new()).map(|_| ())
        }
        Bson::Document(d) => {
            if d.contains_key("$literal") {
                return Ok(());
            }
            d.values().try_for_each(check_variables)
        }
        Bson::Array(items) => items.iter().try_for_each(check_variables),
        _ => Ok(()),
    }
}

fn variable(name: &str, root: &Document) -> Result<Option<Bson>, QueryError> {
    let (var, rest) = match name.split_once('.') {
        Some((v, r)) => (v, Some(r)),
        None => (name, None),
    };
    let base = match (var, rest) {
        ("ROOT" | "CURRENT", Some(path)) => return Ok(doc_field_path(root, path)),
        ("ROOT" | "CURRENT", None) => Bson::Document(root.clone()),
        ("REMOVE", _) => return Ok(None),
        ("NOW", _) => Bson::DateTime(bson::DateTime::now()),
        _ => match LET_VARS.with(|v| v.borrow().as_ref().and_then(|d| d.get(var).cloned())) {
            Some(value) => value,
            None => {
                return Err(QueryError::new(
                    17276,
                    "Location17276",
                    format!("Use of undefined variable: {var}"),
                ))
            }
        },
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

/// [`field_path`] starting at a document, without copying it.
fn doc_field_path(doc: &Document, path: &str) -> Option<Bson> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let child = doc.get(head)?;
    match rest {
        Some(r) => field_path(child, r),
        None => Some(child.clone()),
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
        "$rand" => {
            if !matches!(arg, Bson::Document(d) if d.is_empty()) {
                return Err(QueryError::new(
                    10065,
                    "Location10065",
                    "invalid parameter: expected an object ($rand)",
                ));
            }
            Bson::Double(rand::random::<f64>())
        }
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
        "$setField" | "$unsetField" => {
            let Bson::Document(spec) = arg else {
                return Err(QueryError::new(
                    4161100,
                    "Location4161100",
                    format!("{op} only supports an object as its argument"),
                ));
            };
            // `field` must be a constant: a string, or `$literal` of one (for names that
            // start with `$` or hold dots, which is what the operator exists for).
            let field = match spec.get("field") {
                Some(Bson::String(f)) if !f.starts_with('$') => f.clone(),
                Some(Bson::Document(l)) if l.len() == 1 => match l.get("$literal") {
                    Some(Bson::String(f)) => f.clone(),
                    _ => return Err(set_field_constant(op)),
                },
                _ => return Err(set_field_constant(op)),
            };
            let input = match spec.get("input") {
                Some(e) => eval_expression(e, root)?,
                None => {
                    return Err(QueryError::new(
                        4161102,
                        "Location4161102",
                        format!("{op} requires 'input' to be specified"),
                    ))
                }
            };
            let value = match (op, spec.get("value")) {
                ("$unsetField", _) => None,
                (_, Some(e)) => eval_expression(e, root)?,
                (_, None) => {
                    return Err(QueryError::new(
                        4161103,
                        "Location4161103",
                        "$setField requires 'value' to be specified",
                    ))
                }
            };
            match input {
                None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::Null,
                Some(Bson::Document(mut d)) => {
                    // A missing value ($$REMOVE) removes the field.
                    match value {
                        Some(v) => {
                            d.insert(field, v);
                        }
                        None => {
                            d.remove(&field);
                        }
                    }
                    Bson::Document(d)
                }
                Some(_) => {
                    return Err(QueryError::new(
                        4161105,
                        "Location4161105",
                        format!("{op} requires 'input' to evaluate to type Object"),
                    ))
                }
            }
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

/// `$setField`'s error for a `field` that is not a constant string.
fn set_field_constant(op: &str) -> QueryError {
    QueryError::new(
        4161106,
        "Location4161106",
        format!("{op} requires 'field' to evaluate to a constant, but got a non-constant argument"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse().unwrap())
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
}
