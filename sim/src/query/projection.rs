//! `find` and `$project` projections: inclusion, exclusion, `_id: 0`,
//! dotted and nested paths, `$slice`, and computed fields evaluated with
//! the aggregation expression language.

use bson::{doc, Bson, Document};

use super::{is_operator_doc, truthy, QueryError};

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
        if let Some(cond) = d.get("$elemMatch") {
            return elem_match_value(current, cond);
        }
    }
    // An expression evaluating to "missing" adds no field.
    crate::aggregate::eval_expression(expr, root)
}

/// `{field: {$elemMatch: cond}}`: the first matching element, as a
/// one-element array; no field when nothing matches.
fn elem_match_value(current: Option<&Bson>, cond: &Bson) -> Result<Option<Bson>, QueryError> {
    let Bson::Document(_) = cond else {
        return Err(QueryError::bad_value(
            "elemMatch: Invalid argument, object required.",
        ));
    };
    let filter = super::Filter::parse(&doc! {"v": {"$elemMatch": cond.clone()}})?;
    let Some(Bson::Array(items)) = current else {
        return Ok(None);
    };
    Ok(items
        .iter()
        .find(|item| filter.matches(&doc! {"v": [(*item).clone()]}))
        .map(|item| Bson::Array(vec![item.clone()])))
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
                // $slice or $elemMatch inside an exclusion projection.
                let expr = sub.get("$expr").unwrap_or(&Bson::Null);
                match computed_value(doc, Some(value), expr) {
                    Ok(Some(v)) => {
                        out.insert(key, v);
                    }
                    // $elemMatch without a match drops the field.
                    Ok(None) => {}
                    Err(_) => {
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
    use bson::doc;

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
    fn elem_match_projection_keeps_the_first_match() {
        let d = doc! {"_id": 1, "a": 1, "items": [{"k": 1}, {"k": 2}, {"k": 2, "x": 1}]};
        assert_eq!(
            project(&d, &doc! {"items": {"$elemMatch": {"k": 2}}}).unwrap(),
            doc! {"_id": 1, "items": [{"k": 2}]}
        );
        assert_eq!(
            project(&d, &doc! {"a": 0, "items": {"$elemMatch": {"k": 9}}}).unwrap(),
            doc! {"_id": 1}
        );
    }
}
