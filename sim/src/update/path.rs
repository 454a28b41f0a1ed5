//! Setting and removing values at dotted paths the way update operators
//! do: intermediate documents are created, arrays are padded with null up
//! to a numeric index, and `$unset` of an array element leaves a null.

use bson::{Bson, Document};

use crate::query::QueryError;

/// Sets the value at a dotted path, creating intermediate documents and
/// padding arrays with nulls, like `$set`.
pub(crate) fn set_path_value(
    doc: &mut Document,
    path: &str,
    value: Bson,
) -> Result<(), QueryError> {
    let parts: Vec<&str> = path.split('.').collect();
    set_in_doc(doc, &parts, value)
}

fn set_in_doc(doc: &mut Document, parts: &[&str], value: Bson) -> Result<(), QueryError> {
    let Some((key, rest)) = parts.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        doc.insert(*key, value);
        return Ok(());
    }
    match doc.get_mut(*key) {
        Some(child) => set_in_value(child, key, rest, value),
        None => {
            let mut sub = Document::new();
            set_in_doc(&mut sub, rest, value)?;
            doc.insert(*key, sub);
            Ok(())
        }
    }
}

fn set_in_value(
    target: &mut Bson,
    name: &str,
    parts: &[&str],
    value: Bson,
) -> Result<(), QueryError> {
    match target {
        Bson::Document(d) => set_in_doc(d, parts, value),
        Bson::Array(items) => {
            let idx: usize = parts[0]
                .parse()
                .map_err(|_| path_not_viable(parts[0], name, target_clone(items)))?;
            let rest = &parts[1..];
            while items.len() < idx {
                items.push(Bson::Null);
            }
            if rest.is_empty() {
                if idx == items.len() {
                    items.push(value);
                } else {
                    items[idx] = value;
                }
                return Ok(());
            }
            if idx == items.len() {
                let mut sub = Document::new();
                set_in_doc(&mut sub, rest, value)?;
                items.push(Bson::Document(sub));
                Ok(())
            } else {
                set_in_value(&mut items[idx], parts[0], rest, value)
            }
        }
        other => Err(path_not_viable(parts[0], name, other.clone())),
    }
}

fn target_clone(items: &[Bson]) -> Bson {
    Bson::Array(items.to_vec())
}

fn path_not_viable(field: &str, name: &str, element: Bson) -> QueryError {
    QueryError::new(
        28,
        "PathNotViable",
        format!("Cannot create field '{field}' in element {{{name}: {element}}}"),
    )
}

/// Removes the value at a dotted path (array elements become null, as `$unset` does).
pub(crate) fn unset_path(doc: &mut Document, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    unset_in_doc(doc, &parts);
}

fn unset_in_doc(doc: &mut Document, parts: &[&str]) {
    let Some((key, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        doc.remove(*key);
        return;
    }
    if let Some(child) = doc.get_mut(*key) {
        unset_in_value(child, rest);
    }
}

fn unset_in_value(target: &mut Bson, parts: &[&str]) {
    match target {
        Bson::Document(d) => unset_in_doc(d, parts),
        Bson::Array(items) => {
            let Ok(idx) = parts[0].parse::<usize>() else {
                return;
            };
            let Some(item) = items.get_mut(idx) else {
                return;
            };
            if parts.len() == 1 {
                *item = Bson::Null;
            } else {
                unset_in_value(item, &parts[1..]);
            }
        }
        _ => {}
    }
}
