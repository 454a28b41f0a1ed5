//! Planning an operator update: the `(operator, path, argument)` triples in
//! the order the server applies them (field names lexicographically,
//! numeric components numerically), path validation, conflict detection
//! (40 ConflictingUpdateOperators), and resolving the positional operators
//! `$` and `$[]` into concrete paths.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::query::{get_path, Filter, QueryError};

/// Flattens an operator document into `(operator, path, argument)` triples in
/// the order the server applies them, rejecting conflicting paths.
pub(crate) fn collect_ops(
    ops: &Document,
    inserting: bool,
) -> Result<Vec<(&str, String, &Bson)>, QueryError> {
    let mut all: Vec<(&str, String, &Bson)> = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for (op, fields) in ops {
        let Bson::Document(fields) = fields else {
            continue;
        };
        for (path, arg) in fields {
            validate_path(path)?;
            touched.push(path.clone());
            if op == "$rename" {
                let Bson::String(to) = arg else {
                    return Err(QueryError::bad_value(format!(
                        "The 'to' field for $rename must be a string: {path}: {arg}"
                    )));
                };
                validate_path(to)?;
                if to == path {
                    return Err(QueryError::bad_value(format!(
                        "The source and target field for $rename must differ: {path}: \"{to}\""
                    )));
                }
                touched.push(to.clone());
            }
            if op == "$setOnInsert" && !inserting {
                continue;
            }
            all.push((op.as_str(), path.clone(), arg));
        }
    }
    for (i, a) in touched.iter().enumerate() {
        for b in &touched[i + 1..] {
            if let Some(prefix) = conflict(a, b) {
                return Err(QueryError::new(
                    40,
                    "ConflictingUpdateOperators",
                    format!("Updating the path '{b}' would create a conflict at '{prefix}'"),
                ));
            }
        }
    }
    all.sort_by(|a, b| compare_paths(&a.1, &b.1));
    Ok(all)
}

fn validate_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(QueryError::new(
            56,
            "EmptyFieldName",
            format!("An update path '{path}' contains an empty field name, which is not allowed."),
        ));
    }
    if path
        .split('.')
        .any(|p| p.starts_with('$') && p != "$[]" && p != "$")
    {
        return Err(QueryError::bad_value(format!(
            "The positional operators in '{path}' are not supported by mongo-sim"
        )));
    }
    Ok(())
}

/// Replaces the first `$` component of `path` by the index the filter matched.
pub(super) fn resolve_positional(
    doc: &Document,
    path: &str,
    filter: Option<&Filter>,
) -> Result<String, QueryError> {
    let parts: Vec<&str> = path.split('.').collect();
    let Some(pos) = parts.iter().position(|p| *p == "$") else {
        return Ok(path.to_string());
    };
    let array_path = parts[..pos].join(".");
    let not_found = || {
        QueryError::bad_value(
            "The positional operator did not find the match needed from the query.",
        )
    };
    let idx = filter
        .and_then(|f| f.positional_index(doc, &array_path))
        .ok_or_else(not_found)?;
    let mut resolved: Vec<String> = parts.iter().map(|p| (*p).to_string()).collect();
    resolved[pos] = idx.to_string();
    Ok(resolved.join("."))
}

/// Expands each `$[]` (all elements) in `path` into the indexes of the
/// array found there in `doc`.
pub(crate) fn expand_all_positional(doc: &Document, path: &str) -> Result<Vec<String>, QueryError> {
    let Some((prefix, rest)) = path.split_once("$[]") else {
        return Ok(vec![path.to_string()]);
    };
    let array_path = prefix.trim_end_matches('.');
    let len = match get_path(doc, array_path) {
        Some(Bson::Array(items)) => items.len(),
        Some(_) => {
            return Err(QueryError::bad_value(format!(
                "Cannot apply array updates to non-array element {array_path}"
            )))
        }
        None => {
            return Err(QueryError::bad_value(format!(
            "The path '{array_path}' must exist in the document in order to apply array updates."
        )))
        }
    };
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        for tail in expand_all_positional(doc, &format!("{array_path}.{i}{rest}"))? {
            out.push(tail);
        }
    }
    Ok(out)
}

/// The shorter path when one path equals or is a prefix of the other.
fn conflict<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    (long == short || long.starts_with(&format!("{short}."))).then_some(short)
}

fn compare_paths(a: &str, b: &str) -> Ordering {
    let mut ia = a.split('.');
    let mut ib = b.split('.');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(nx), Ok(ny)) => nx.cmp(&ny),
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}
