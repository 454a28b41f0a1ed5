//! The array operators' building blocks: `$push` modifiers (`$each`,
//! `$position`, `$sort`, `$slice`), `$addToSet`'s `$each`, and `$pull`
//! conditions (a query on document elements, operators on values, or
//! plain equality).

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::last_component;
use crate::bson_order::compare;
use crate::query::{Filter, QueryError};

pub(super) fn existing_array(
    doc: &Document,
    op: &str,
    path: &str,
    current: Option<Bson>,
) -> Result<Vec<Bson>, QueryError> {
    match current {
        None => Ok(Vec::new()),
        Some(Bson::Array(items)) => Ok(items),
        Some(other) => Err(QueryError::bad_value(format!(
            "The field '{}' must be an array but is of type {} in document {{_id: {}}} ({op})",
            last_component(path),
            crate::aggregate::type_name(&other),
            doc.get("_id").map(|v| v.to_string()).unwrap_or_default()
        ))),
    }
}

/// `{$each: [...]}` values, or `None` when the argument is a plain value.
pub(super) fn each_values(arg: &Bson) -> Result<Option<Vec<Bson>>, QueryError> {
    match arg {
        Bson::Document(d) if d.contains_key("$each") => match d.get("$each") {
            Some(Bson::Array(items)) => Ok(Some(items.clone())),
            _ => Err(QueryError::bad_value(
                "The argument to $each must be an array",
            )),
        },
        _ => Ok(None),
    }
}

pub(super) fn push(items: &mut Vec<Bson>, arg: &Bson) -> Result<(), QueryError> {
    let Some(values) = each_values(arg)? else {
        items.push(arg.clone());
        return Ok(());
    };
    let Bson::Document(mods) = arg else {
        return Ok(());
    };
    for key in mods.keys() {
        if !matches!(key.as_str(), "$each" | "$slice" | "$position" | "$sort") {
            return Err(QueryError::bad_value(format!(
                "Unrecognized clause in $push: {key}"
            )));
        }
    }
    let position = match mods.get("$position") {
        None => items.len(),
        Some(p) => {
            let n = crate::bson_order::number_as_i64(p).ok_or_else(|| {
                QueryError::bad_value("The value for $position must be an integer value")
            })?;
            let len = items.len() as i64;
            if n < 0 {
                (len + n).max(0) as usize
            } else {
                n.min(len) as usize
            }
        }
    };
    let tail = items.split_off(position);
    items.extend(values);
    items.extend(tail);
    if let Some(sort) = mods.get("$sort") {
        sort_array(items, sort)?;
    }
    if let Some(slice) = mods.get("$slice") {
        let n = crate::bson_order::number_as_i64(slice).ok_or_else(|| {
            QueryError::bad_value("The value for $slice must be an integer value")
        })?;
        if n >= 0 {
            items.truncate(n as usize);
        } else {
            let keep = (-n) as usize;
            if items.len() > keep {
                items.drain(..items.len() - keep);
            }
        }
    }
    Ok(())
}

fn sort_array(items: &mut [Bson], sort: &Bson) -> Result<(), QueryError> {
    match sort {
        Bson::Document(spec) => {
            let keys = crate::query::parse_sort(spec)?;
            items.sort_by(|a, b| match (a, b) {
                (Bson::Document(x), Bson::Document(y)) => crate::query::compare_by_keys(x, y, &keys),
                _ => compare(a, b),
            });
        }
        other => match crate::bson_order::number_as_f64(other) {
            Some(1.0) => items.sort_by(compare),
            Some(-1.0) => items.sort_by(|a, b| compare(b, a)),
            _ => {
                return Err(QueryError::bad_value(
                    "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields",
                ))
            }
        },
    }
    Ok(())
}

/// How `$pull` decides which elements to remove.
pub(super) enum PullMatcher {
    /// A plain document: a query run against each (document) element.
    Query(Filter),
    /// Operators such as `{$gte: 6}`: applied to each element's value.
    Value(Filter),
    Equal(Bson),
}

impl PullMatcher {
    pub(super) fn new(arg: &Bson) -> Result<PullMatcher, QueryError> {
        match arg {
            Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                let mut wrapped = Document::new();
                wrapped.insert("v", arg.clone());
                Ok(PullMatcher::Value(Filter::parse(&wrapped)?))
            }
            Bson::Document(d) => Ok(PullMatcher::Query(Filter::parse(d)?)),
            Bson::RegularExpression(_) => {
                let mut wrapped = Document::new();
                wrapped.insert("v", arg.clone());
                Ok(PullMatcher::Value(Filter::parse(&wrapped)?))
            }
            other => Ok(PullMatcher::Equal(other.clone())),
        }
    }

    pub(super) fn matches(&self, item: &Bson) -> bool {
        match self {
            PullMatcher::Query(f) => matches!(item, Bson::Document(d) if f.matches(d)),
            PullMatcher::Value(f) => {
                let mut wrapped = Document::new();
                wrapped.insert("v", item.clone());
                f.matches(&wrapped)
            }
            PullMatcher::Equal(v) => compare(item, v) == Ordering::Equal,
        }
    }
}
