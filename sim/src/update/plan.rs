//! Planning an operator update: the `(operator, path, argument)` triples in
//! the order the server applies them (field names lexicographically,
//! numeric components numerically), path validation, conflict detection
//! (40 ConflictingUpdateOperators), and resolving the positional operators
//! `$`, `$[]` and `$[<identifier>]` (with the statement's `arrayFilters`) into concrete paths.

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
        .any(|p| p.starts_with('$') && p != "$" && identifier(p).is_none())
    {
        return Err(QueryError::bad_value(format!(
            "The positional operators in '{path}' are not supported by mongo-sim"
        )));
    }
    Ok(())
}

/// The identifier of a `$[<identifier>]` path component (`""` for `$[]`).
fn identifier(component: &str) -> Option<&str> {
    component.strip_prefix("$[")?.strip_suffix(']')
}

/// Whether `path` holds a `$[<identifier>]` component (it needs `arrayFilters`).
pub(crate) fn uses_array_filters(path: &str) -> bool {
    path.split('.')
        .any(|p| identifier(p).is_some_and(|id| !id.is_empty()))
}

/// An update statement's `arrayFilters`: one filter per identifier, each matched against
/// `{<identifier>: element}` (mongod binds the element to the identifier the same way).
#[derive(Debug, Default)]
pub struct ArrayFilters {
    filters: Vec<(String, Filter)>,
}

impl ArrayFilters {
    /// Parses `arrayFilters` as mongod's `parseArrayFilters` checks it.
    pub fn parse(spec: Option<&Bson>) -> Result<Self, QueryError> {
        let items = match spec {
            None => return Ok(Self::default()),
            Some(Bson::Array(items)) => items,
            Some(_) => {
                return Err(QueryError::type_mismatch(
                    "arrayFilters must be an array of objects",
                ))
            }
        };
        let mut filters: Vec<(String, Filter)> = Vec::new();
        for item in items {
            let Bson::Document(f) = item else {
                return Err(QueryError::type_mismatch(
                    "Each array filter must be an object",
                ));
            };
            let mut ids = f.keys().map(|k| k.split('.').next().unwrap_or_default());
            let Some(id) = ids.next() else {
                return Err(QueryError::failed_to_parse(
                    "Cannot use an expression without a top-level field name in arrayFilters",
                ));
            };
            if ids.any(|other| other != id) {
                return Err(QueryError::failed_to_parse(format!(
                    "Error parsing array filter :: caused by :: Expected a single top-level field \
                     name, found '{id}' and '{}'",
                    f.keys()
                        .map(|k| k.split('.').next().unwrap_or_default())
                        .find(|o| *o != id)
                        .unwrap_or_default()
                )));
            }
            let valid = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric());
            if !valid {
                return Err(QueryError::bad_value(format!(
                    "Error parsing array filter :: caused by :: The top-level field name must be \
                     an alphanumeric string beginning with a lowercase letter, found '{id}'"
                )));
            }
            if filters.iter().any(|(k, _)| k == id) {
                return Err(QueryError::failed_to_parse(format!(
                    "Found multiple array filters with the same top-level field name {id}"
                )));
            }
            filters.push((id.to_string(), Filter::parse(f)?));
        }
        Ok(Self { filters })
    }

    /// mongod refuses an identifier without a filter and a filter no path uses.
    pub fn check_paths<'a>(&self, paths: impl Iterator<Item = &'a str>) -> Result<(), QueryError> {
        let mut used: Vec<&str> = Vec::new();
        for path in paths {
            for id in path
                .split('.')
                .filter_map(identifier)
                .filter(|i| !i.is_empty())
            {
                if !self.filters.iter().any(|(k, _)| k == id) {
                    return Err(QueryError::bad_value(format!(
                        "No array filter found for identifier '{id}' in path '{path}'"
                    )));
                }
                used.push(id);
            }
        }
        match self
            .filters
            .iter()
            .find(|(k, _)| !used.contains(&k.as_str()))
        {
            Some((id, _)) => Err(QueryError::failed_to_parse(format!(
                "The array filter for identifier '{id}' was not used in the update"
            ))),
            None => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    fn matches(&self, id: &str, element: &Bson) -> bool {
        self.filters
            .iter()
            .find(|(k, _)| k == id)
            .is_some_and(|(_, f)| {
                let mut wrapped = Document::new();
                wrapped.insert(id, element.clone());
                f.matches(&wrapped)
            })
    }
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
    expand_positional(doc, path, &ArrayFilters::default())
}

/// Expands each `$[]` (all elements) and `$[<identifier>]` (the elements its array filter
/// matches) in `path` into the indexes of the array found there in `doc`.
pub(crate) fn expand_positional(
    doc: &Document,
    path: &str,
    filters: &ArrayFilters,
) -> Result<Vec<String>, QueryError> {
    let parts: Vec<&str> = path.split('.').collect();
    let Some(pos) = parts.iter().position(|p| identifier(p).is_some()) else {
        return Ok(vec![path.to_string()]);
    };
    let id = identifier(parts[pos]).unwrap_or_default();
    let array_path = parts[..pos].join(".");
    let rest: String = parts[pos + 1..].iter().map(|p| format!(".{p}")).collect();
    let array_path = array_path.as_str();
    let items = match get_path(doc, array_path) {
        Some(Bson::Array(items)) => items,
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
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if !id.is_empty() && !filters.matches(id, item) {
            continue;
        }
        for tail in expand_positional(doc, &format!("{array_path}.{i}{rest}"), filters)? {
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
