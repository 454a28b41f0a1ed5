//! The mapping rules that span more than one key: column names within a table, the `_id`
//! primary key, `extra_props`, child sources against parent columns, and tables and
//! collections mapped twice across all files (SPEC "`tributary check` rejects").

use std::collections::HashMap;
use std::path::Path;

use super::load::{CollectionPos, ColumnPos, MappingError};
use super::model::{CollectionMapping, ColumnMapping, FieldPath, PgType};
use super::yaml::Pos;

/// The column name every child table uses for the element's position in the array.
pub const IDX_COLUMN: &str = "idx";

fn error(file: &Path, pos: Pos, message: String, hint: String) -> MappingError {
    MappingError {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        message,
        hint,
    }
}

/// True when `inner` is `outer` or a path below it.
fn is_under(inner: &FieldPath, outer: &FieldPath) -> bool {
    inner.0.len() >= outer.0.len() && inner.0[..outer.0.len()] == outer.0[..]
}

/// Reports a second column with the same name (and names listed in `reserved`).
fn check_names(
    file: &Path,
    table: &str,
    columns: &[ColumnMapping],
    positions: &[ColumnPos],
    reserved: &[(&str, &str)],
    errors: &mut Vec<MappingError>,
) {
    let mut seen: HashMap<&str, Pos> = HashMap::new();
    for (c, p) in columns.iter().zip(positions) {
        if let Some((_, why)) = reserved.iter().find(|(name, _)| *name == c.name) {
            errors.push(error(
                file,
                p.name,
                format!("column `{}` of table `{table}` collides with {why}", c.name),
                "rename the column".to_owned(),
            ));
        } else if let Some(first) = seen.get(c.name.as_str()) {
            errors.push(error(
                file,
                p.name,
                format!("two columns named `{}` in table `{table}`", c.name),
                format!("rename one of them; the first is at line {}", first.line),
            ));
        } else {
            seen.insert(&c.name, p.name);
        }
    }
}

/// Rules within one collection's mapping.
pub(crate) fn check_collection(
    m: &CollectionMapping,
    p: &CollectionPos,
    errors: &mut Vec<MappingError>,
) {
    let file = &p.file;
    check_names(file, &m.table, &m.columns, &p.columns, &[], errors);

    let keys: Vec<usize> = (0..m.columns.len())
        .filter(|&i| m.columns[i].source.is_id())
        .collect();
    match keys.as_slice() {
        [] if p.incomplete => {}
        [] => errors.push(error(
            file,
            p.name,
            format!(
                "collection `{}` has no column with `source: _id`",
                m.collection
            ),
            "add e.g. `- { name: id, source: _id, type: text }`: the _id column is the primary key"
                .to_owned(),
        )),
        [key, rest @ ..] => {
            for &extra in rest {
                errors.push(error(
                    file,
                    p.columns[extra].source,
                    format!(
                        "columns `{}` and `{}` both read `_id`; the primary key must be one column",
                        m.columns[*key].name, m.columns[extra].name
                    ),
                    "keep one column with `source: _id`".to_owned(),
                ));
            }
            let allowed = super::key::allowed_id_types(&m.columns[*key].pg_type);
            if !allowed.contains(&m.id_type) {
                errors.push(error(
                    file,
                    p.name,
                    format!(
                        "`id_type: {}` does not fit the `_id` column `{}` ({})",
                        m.id_type.as_str(),
                        m.columns[*key].name,
                        m.columns[*key].pg_type
                    ),
                    format!(
                        "use one of {} with this column type",
                        allowed
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if m.columns[*key].pg_type == PgType::Json {
                errors.push(error(
                    file,
                    p.columns[*key].ty,
                    "the `_id` column cannot be `json`: a primary key needs equality".to_owned(),
                    "use jsonb, text or the _id's own type".to_owned(),
                ));
            }
        }
    }

    if let Some(extra) = &m.extra_props {
        if let Some(c) = m.columns.iter().find(|c| &c.name == extra) {
            errors.push(error(
                file,
                p.extra_props,
                format!("extra_props `{extra}` names the mapped column `{}`", c.name),
                "pick a column name no column uses".to_owned(),
            ));
        }
    }

    for (i, (child, cp)) in m.children.iter().zip(&p.children).enumerate() {
        if let Some(outer) = m.children[..i]
            .iter()
            .chain(&m.children[i + 1..])
            .find(|o| o.source != child.source && is_under(&child.source, &o.source))
        {
            errors.push(error(
                file,
                cp.source,
                format!(
                    "child `{}` reads `{}`, inside the array `{}` of child `{}`",
                    child.table, child.source, outer.source, outer.table
                ),
                "arrays nested in arrays are not child tables; map the inner array as a jsonb                  column of the outer child"
                    .to_owned(),
            ));
        }
        if let Some(c) = m
            .columns
            .iter()
            .find(|c| is_under(&child.source, &c.source))
        {
            errors.push(error(
                file,
                cp.source,
                format!(
                    "child `{}` reads `{}`, which column `{}` already reads as a value, so it is \
                     not an array path of its own",
                    child.table, child.source, c.name
                ),
                "a child's source is an array field no parent column reads: drop the column or \
                 the child"
                    .to_owned(),
            ));
        }
        for (c, colp) in m.columns.iter().zip(&p.columns) {
            if c.source != child.source && is_under(&c.source, &child.source) {
                errors.push(error(
                    file,
                    colp.source,
                    format!(
                        "column `{}` reads `{}`, inside the array `{}` of child `{}`",
                        c.name, c.source, child.source, child.table
                    ),
                    "map array elements in the child table's columns".to_owned(),
                ));
            }
        }
        if child.parent_key == IDX_COLUMN {
            errors.push(error(
                file,
                cp.parent_key,
                format!(
                    "parent_key `{IDX_COLUMN}` of child `{}` collides with its position column",
                    child.table
                ),
                "name the parent key column something else, e.g. `order_id`".to_owned(),
            ));
        }
        let parent_key_why = format!("its parent_key column `{}`", child.parent_key);
        check_names(
            file,
            &child.table,
            &child.columns,
            &cp.columns,
            &[
                (&child.parent_key, &parent_key_why),
                (
                    IDX_COLUMN,
                    "the `idx` column holding the element's position",
                ),
            ],
            errors,
        );
    }
}

/// Rules across every collection of every file: a collection or a table mapped twice.
pub(crate) fn check_set(
    all: &[(CollectionMapping, CollectionPos)],
    errors: &mut Vec<MappingError>,
) {
    let mut namespaces: HashMap<String, &CollectionPos> = HashMap::new();
    let mut tables: HashMap<&str, (&Path, Pos, String)> = HashMap::new();
    for (m, p) in all {
        let ns = m.namespace();
        if let Some(first) = namespaces.get(&ns) {
            errors.push(error(
                &p.file,
                p.name,
                format!("collection `{ns}` is mapped twice"),
                format!(
                    "keep one mapping; the other is at {}:{}:{}",
                    first.file.display(),
                    first.name.line,
                    first.name.column
                ),
            ));
            continue;
        }
        namespaces.insert(ns.clone(), p);
        let owned = std::iter::once((m.table.as_str(), p.table, ns.clone())).chain(
            m.children
                .iter()
                .zip(&p.children)
                .map(|(c, cp)| (c.table.as_str(), cp.table, format!("{ns} (child table)"))),
        );
        for (table, pos, owner) in owned {
            if let Some((file, first, first_owner)) = tables.get(table) {
                errors.push(error(
                    &p.file,
                    pos,
                    format!("table `{table}` is mapped twice (also by {first_owner})"),
                    format!(
                        "give one of them another `table:`; the other is at {}:{}:{}",
                        file.display(),
                        first.line,
                        first.column
                    ),
                ));
            } else {
                tables.insert(table, (&p.file, pos, owner));
            }
        }
    }
}
