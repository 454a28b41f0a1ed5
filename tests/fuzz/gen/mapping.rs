//! Mappings: a key column of any key type (with `id_type`), columns of every SQL type at
//! top-level, nested and deep paths, names that need quoting, child tables, `extra_props`,
//! `on_error` and `on_nul`.

use proptest::prelude::*;
use proptest::sample::select;

use super::super::oracle::Rules;
use super::super::spec::{Child, Column, IdType, Mapping, OnError, OnNul, SqlType};

/// Field names of parent columns: top level, nested, deep, not ASCII, with a space.
const PARENT_PATHS: &[&str] = &[
    "a",
    "b",
    "c",
    "num",
    "when",
    "obj",
    "n.x",
    "n.y",
    "n.m.z",
    "deep.l1.l2.l3",
    "ünï",
    "with space",
];
/// Array fields child tables read (none under a parent path).
const CHILD_SOURCES: &[&str] = &["items", "tags", "n.list"];
/// Fields of child elements (`""` is `.`, the element itself).
const ELEMENT_PATHS: &[&str] = &["", "k", "v", "sub.w"];
/// Name stems: quoted identifiers must survive any of them.
const NAME_STEMS: &[&str] = &["c", "Col ", "select", "é\"x", "日本", "a.b", "UPPER", "x-y"];
const TABLES: &[&str] = &["docs", "Order Lines", "t\"q", "ünï"];

fn path(p: &str) -> Vec<String> {
    if p.is_empty() {
        Vec::new()
    } else {
        p.split('.').map(str::to_owned).collect()
    }
}

fn sql_type() -> BoxedStrategy<SqlType> {
    let scalar = select(SqlType::scalars());
    let array = select(SqlType::scalars())
        .prop_filter("json arrays are refused", |t| {
            !matches!(t, SqlType::Json | SqlType::Jsonb)
        })
        .prop_map(|t| SqlType::Array(Box::new(t)));
    prop_oneof![4 => scalar, 1 => array].boxed()
}

fn column(name: String, source: &str) -> impl Strategy<Value = Column> {
    let source = path(source);
    (sql_type(), 0usize..3).prop_map(move |(ty, spelling)| Column {
        name: name.clone(),
        source: source.clone(),
        ty,
        spelling,
    })
}

fn id_types(ty: &SqlType) -> Vec<Option<IdType>> {
    match ty {
        SqlType::Text | SqlType::Varchar(_) => vec![
            None,
            Some(IdType::Auto),
            Some(IdType::String),
            Some(IdType::ObjectId),
            Some(IdType::Number),
        ],
        SqlType::SmallInt
        | SqlType::Integer
        | SqlType::BigInt
        | SqlType::Numeric(_)
        | SqlType::Real
        | SqlType::Double => vec![None, Some(IdType::Auto), Some(IdType::Number)],
        SqlType::Uuid => vec![None, Some(IdType::Auto), Some(IdType::String)],
        SqlType::Bytea => vec![
            None,
            Some(IdType::Auto),
            Some(IdType::ObjectId),
            Some(IdType::Binary),
        ],
        _ => vec![None, Some(IdType::Auto)],
    }
}

pub(super) fn mapping(rules: Rules) -> BoxedStrategy<Mapping> {
    let names = (select(NAME_STEMS), select(TABLES));
    let parent = (
        select(SqlType::keys()),
        0usize..3,
        proptest::sample::subsequence(PARENT_PATHS, 0..6),
        any::<bool>(),
        prop_oneof![3 => Just(OnError::DeadLetter), 1 => Just(OnError::Null)],
        proptest::sample::subsequence(CHILD_SOURCES, 0..3),
        0usize..8,
        any::<prop::sample::Index>(),
        select(vec![
            None,
            Some(OnNul::Refuse),
            Some(OnNul::Strip),
            Some(OnNul::Replace),
        ]),
    );
    (names, parent)
        .prop_flat_map(
            move |(
                (stem, table),
                (key_ty, spelling, paths, extra, on_error, children, pos, idt, on_nul),
            )| {
                let columns: Vec<_> = paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| column(format!("{stem}{i}"), p))
                    .collect();
                let kids: Vec<_> = children
                    .iter()
                    .enumerate()
                    .map(|(j, source)| child(table, j, source))
                    .collect();
                let id_type = if rules.strict_ids {
                    *idt.get(&id_types(&key_ty))
                } else {
                    None
                };
                let key = Column {
                    name: format!("{stem}_id"),
                    source: path("_id"),
                    ty: key_ty,
                    spelling,
                };
                (columns, kids).prop_map(move |(columns, children)| Mapping {
                    table: table.to_owned(),
                    key: key.clone(),
                    key_position: pos,
                    columns,
                    extra_props: extra.then(|| format!("{stem} extra")),
                    on_error,
                    id_type,
                    on_nul: if rules.nul { on_nul } else { None },
                    children,
                })
            },
        )
        .boxed()
}

fn child(table: &str, j: usize, source: &str) -> impl Strategy<Value = Child> {
    let source = path(source);
    let table = format!("{table}_{j}");
    proptest::sample::subsequence(ELEMENT_PATHS, 1..4).prop_flat_map(move |paths| {
        let columns: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| column(format!("e{i} {}", p.replace('.', "_")), p))
            .collect();
        let (table, source) = (table.clone(), source.clone());
        columns.prop_map(move |columns| Child {
            table: table.clone(),
            source: source.clone(),
            parent_key: "parent key".to_owned(),
            columns,
        })
    })
}
