//! Generators: mappings (every SQL type, child tables with `.` and document elements, with
//! and without `extra_props`, `on_error` dead_letter and null), documents shaped by the
//! mapping (values that fit each column, values of every other BSON type, arrays where paths
//! expect scalars and scalars where child tables expect arrays, deep and empty documents) and
//! the writes a streaming phase applies.

mod documents;
mod mapping;
mod values;

use std::sync::Arc;

use bson::{Bson, Document};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use documents::{body, child_value, document};
use mapping::mapping;
pub use values::INVALID_UTF8;
use values::{any_value, for_column};

use super::oracle::Rules;
use super::spec::{Mapping, SqlType};

/// How the documents reach Postgres before the streaming phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// `tributary full-sync --mode replace`: shadow tables swapped in.
    FullSyncReplace,
    /// `tributary full-sync --mode upsert`.
    FullSyncUpsert,
    /// `sync`'s own initial copy (truncate, then copy).
    SyncInitial,
}

/// A write of the streaming phase; `usize`s pick a document among those written so far.
#[derive(Debug, Clone)]
pub enum Write {
    Insert(Document),
    /// The picked document's body becomes this one (its `_id` kept).
    Replace(usize, Document),
    Set(usize, String, Bson),
    Unset(usize, String),
    Delete(usize),
}

/// One end-to-end case: a mapping, the documents there before the copy, the writes streamed
/// after it.
#[derive(Debug, Clone)]
pub struct Case {
    pub mapping: Mapping,
    pub oplog: bool,
    pub copy: Copy,
    pub batch_max_rows: usize,
    pub initial: Vec<Document>,
    pub writes: Vec<Write>,
    /// A parent `text`/`varchar` column (index into `Mapping::parent_columns`) whose live column is made
    /// `varchar(3)` before the copy: Postgres then refuses longer values the mapping accepts
    /// (a data error, narrowed to the documents that cause it). Never with
    /// `FullSyncReplace`, whose swap brings the mapping's own tables.
    pub narrow: Option<usize>,
}

impl Case {
    /// Document versions this case sends (inserted, replaced or updated).
    pub fn documents(&self) -> usize {
        self.initial.len()
            + self
                .writes
                .iter()
                .filter(|w| !matches!(w, Write::Delete(_)))
                .count()
    }
}
fn write(m: &Mapping, rules: Rules) -> BoxedStrategy<Write> {
    let mut paths: Vec<(String, BoxedStrategy<Bson>)> = m
        .columns
        .iter()
        .map(|c| {
            let v = prop_oneof![
                for_column(&c.ty, rules, false),
                for_column(&c.ty, rules, true)
            ];
            (c.source.join("."), v.boxed())
        })
        .collect();
    paths.extend(m.children.iter().map(|c| {
        let v = prop_oneof![child_value(c, rules, false), child_value(c, rules, true)];
        (c.source.join("."), v.boxed())
    }));
    paths.push(("x".to_owned(), any_value(rules)));
    let set = select((0..paths.len()).collect::<Vec<_>>()).prop_flat_map(move |i| {
        let (p, v) = paths[i].clone();
        (any::<usize>(), Just(p), v).prop_map(|(t, p, v)| Write::Set(t, p, v))
    });
    let mut unset_paths: Vec<String> = m.columns.iter().map(|c| c.source.join(".")).collect();
    unset_paths.extend(m.children.iter().map(|c| c.source.join(".")));
    unset_paths.push("x".into());
    prop_oneof![
        3 => document(m, rules).prop_map(Write::Insert),
        2 => (
            any::<usize>(),
            prop_oneof![body(m, rules, false), body(m, rules, true)]
        )
            .prop_map(|(t, b)| Write::Replace(t, b)),
        4 => set,
        1 => (any::<usize>(), select(unset_paths)).prop_map(|(t, p)| Write::Unset(t, p)),
        1 => any::<usize>().prop_map(Write::Delete),
    ]
    .boxed()
}

/// A whole case; `docs` bounds the initial documents and `writes` the streamed writes.
pub fn case(
    rules: Rules,
    docs: std::ops::Range<usize>,
    writes: std::ops::Range<usize>,
) -> BoxedStrategy<Case> {
    mapping(rules)
        .prop_flat_map(move |m| {
            let m = Arc::new(m);
            (
                Just(m.clone()),
                any::<bool>(),
                select(vec![
                    Copy::FullSyncReplace,
                    Copy::FullSyncUpsert,
                    Copy::SyncInitial,
                ]),
                select(vec![3usize, 50, 5000]),
                vec(document(&m, rules), docs.clone()),
                vec(write(&m, rules), writes.clone()),
                proptest::option::weighted(0.3, any::<prop::sample::Index>()),
            )
        })
        .prop_map(
            |(m, oplog, copy, batch_max_rows, initial, writes, narrow)| {
                let texts: Vec<usize> = m
                    .parent_columns()
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| {
                        *i != m.key_index()
                            && (matches!(c.ty, SqlType::Text | SqlType::Varchar(None))
                                || matches!(c.ty, SqlType::Varchar(Some(n)) if n > 3))
                    })
                    .map(|(i, _)| i)
                    .collect();
                let narrow = narrow
                    .filter(|_| copy != Copy::FullSyncReplace && !texts.is_empty())
                    .map(|n| *n.get(&texts));
                Case {
                    mapping: (*m).clone(),
                    oplog,
                    copy,
                    batch_max_rows,
                    initial,
                    writes,
                    narrow,
                }
            },
        )
        .boxed()
}
