//! A batch reduced to its net effect per collection: what to truncate, which keys to delete and
//! which documents to (re)write. Pure, so the coalescing rules are unit-tested without Postgres.
//!
//! Rules (SPEC "Order"): changes apply in source order; only the last change per
//! `(collection, key)` survives; a `Truncate` discards every earlier change of its collection
//! and empties its tables before the surviving later changes run. A document may keep its child
//! rows only when every change of it in the batch was an `UpsertParent` (and it was not refused
//! before the last of them); the sink still checks that its rows are there and up to date.

use std::collections::HashMap;

use crate::mapping::model::TableDef;
use crate::mapping::value::PgValue;
use crate::sink::{Change, DocumentRows, SinkError};

/// What one collection's tables must undergo in this batch, in this order: truncate, delete,
/// upsert.
#[derive(Debug, Default, PartialEq)]
pub struct CollectionPlan<'a> {
    pub truncate: bool,
    pub deletes: Vec<&'a PgValue>,
    pub upserts: Vec<(&'a PgValue, &'a DocumentRows)>,
    /// Upserts whose child rows may stay as they are (collections with child tables only).
    pub parent_upserts: Vec<(&'a PgValue, &'a DocumentRows)>,
    /// Documents whose child rows are out of date after this batch: refused after their last
    /// rewrite in it (collections with child tables only).
    pub refused: Vec<&'a PgValue>,
}

impl CollectionPlan<'_> {
    pub fn is_empty(&self) -> bool {
        !self.truncate
            && self.deletes.is_empty()
            && self.upserts.is_empty()
            && self.parent_upserts.is_empty()
            && self.refused.is_empty()
    }
}

enum Net<'a> {
    Upsert(&'a DocumentRows),
    Delete,
}

/// One document's changes in the batch, folded.
struct Entry<'a> {
    key: &'a PgValue,
    net: Option<Net<'a>>,
    /// Every change so far was an `UpsertParent`, none after a refusal.
    parent_only: bool,
    /// Refused after its last upsert or delete.
    refused: bool,
}

/// Coalesces `changes` against the tables of each collection (`tables[c]`: parent first, then
/// children) and checks every row has its table's width, so a malformed batch fails before
/// anything is sent. The plan borrows the batch, so a batch that must be retried is never copied.
pub fn plan<'a>(
    changes: &'a [Change],
    tables: &[Vec<TableDef>],
) -> Result<Vec<CollectionPlan<'a>>, SinkError> {
    let mut entries: Vec<Vec<Entry>> = tables.iter().map(|_| Vec::new()).collect();
    let mut index: Vec<HashMap<KeyRepr<'a>, usize>> =
        tables.iter().map(|_| HashMap::new()).collect();
    let mut truncate = vec![false; tables.len()];

    let check = |c: usize| {
        if c < tables.len() {
            Ok(c)
        } else {
            Err(SinkError::InvalidBatch(format!(
                "change for collection #{c}, but only {} collections are mapped",
                tables.len()
            )))
        }
    };
    for change in changes {
        let (c, key) = match change {
            Change::Truncate { collection } => {
                let c = check(*collection)?;
                truncate[c] = true;
                entries[c].clear();
                index[c].clear();
                continue;
            }
            Change::Delete { collection, key } | Change::Refused { collection, key } => {
                (check(*collection)?, key)
            }
            Change::Upsert {
                collection,
                key,
                rows,
            }
            | Change::UpsertParent {
                collection,
                key,
                rows,
            } => {
                let c = check(*collection)?;
                check_rows(&tables[c], rows)?;
                (c, key)
            }
        };
        let i = *index[c].entry(key_repr(key)).or_insert_with(|| {
            entries[c].push(Entry {
                key,
                net: None,
                parent_only: true,
                refused: false,
            });
            entries[c].len() - 1
        });
        let e = &mut entries[c][i];
        match change {
            Change::Upsert { rows, .. } => {
                *e = Entry {
                    key,
                    net: Some(Net::Upsert(rows)),
                    parent_only: false,
                    refused: false,
                };
            }
            Change::UpsertParent { rows, .. } => {
                *e = Entry {
                    key,
                    net: Some(Net::Upsert(rows)),
                    parent_only: e.parent_only && !e.refused,
                    refused: false,
                };
            }
            Change::Delete { .. } => {
                *e = Entry {
                    key,
                    net: Some(Net::Delete),
                    parent_only: false,
                    refused: false,
                };
            }
            Change::Refused { .. } => e.refused = true,
            Change::Truncate { .. } => {}
        }
    }

    Ok(entries
        .into_iter()
        .zip(truncate)
        .zip(tables)
        .map(|((entries, truncate), tables)| {
            let has_children = tables.len() > 1;
            let mut p = CollectionPlan {
                truncate,
                ..CollectionPlan::default()
            };
            for e in entries {
                match e.net {
                    // After a truncate in this batch no child row is left to keep.
                    Some(Net::Upsert(rows)) if e.parent_only && has_children && !truncate => {
                        p.parent_upserts.push((e.key, rows));
                    }
                    Some(Net::Upsert(rows)) => p.upserts.push((e.key, rows)),
                    Some(Net::Delete) => p.deletes.push(e.key),
                    None => {}
                }
                if e.refused && has_children {
                    p.refused.push(e.key);
                }
            }
            p
        })
        .collect())
}

fn check_rows(tables: &[TableDef], rows: &DocumentRows) -> Result<(), SinkError> {
    let width = |t: &TableDef| t.columns.len();
    let (parent, children) = tables
        .split_first()
        .ok_or_else(|| SinkError::InvalidBatch("collection without tables".into()))?;
    if rows.parent.len() != width(parent) {
        return Err(SinkError::InvalidBatch(format!(
            "row for table {:?} has {} values, the table has {} columns",
            parent.name,
            rows.parent.len(),
            width(parent)
        )));
    }
    if rows.children.len() > children.len() {
        return Err(SinkError::InvalidBatch(format!(
            "document for table {:?} has rows for {} child tables, {} are mapped",
            parent.name,
            rows.children.len(),
            children.len()
        )));
    }
    for (t, child_rows) in children.iter().zip(&rows.children) {
        if let Some(r) = child_rows.iter().find(|r| r.len() != width(t)) {
            return Err(SinkError::InvalidBatch(format!(
                "row for child table {:?} has {} values, the table has {} columns",
                t.name,
                r.len(),
                width(t)
            )));
        }
    }
    Ok(())
}

/// The keys (`key_text`) whose rows a plan writes or deletes: the documents whose open dead
/// letters its transaction resolves.
pub fn written_keys(p: &CollectionPlan<'_>) -> Vec<String> {
    p.deletes
        .iter()
        .copied()
        .chain(p.upserts.iter().map(|(key, _)| *key))
        .chain(p.parent_upserts.iter().map(|(key, _)| *key))
        .map(key_text)
        .collect()
}

/// A key as text, equal for keys Postgres holds equal (one key type per collection, so the
/// forms of different types need not differ): how `stale` stores keys and how the sink matches
/// the keys Postgres returns.
pub fn key_text(key: &PgValue) -> String {
    match key_repr(key) {
        KeyRepr::Text(s) => s.to_owned(),
        KeyRepr::Int(i) => i.to_string(),
        KeyRepr::Other(s) => s,
    }
}

/// Identity of a key as Postgres compares it: `1.50` and `1.5` are one numeric key, `-0.0` and
/// `0.0` one float key. Everything else compares by value.
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyRepr<'a> {
    Text(&'a str),
    Int(i64),
    Other(String),
}

fn key_repr(key: &PgValue) -> KeyRepr<'_> {
    // Text and integer keys (nearly all keys) skip the formatting below.
    match key {
        PgValue::Text(s) => return KeyRepr::Text(s),
        PgValue::Int2(i) => return KeyRepr::Int(i64::from(*i)),
        PgValue::Int4(i) => return KeyRepr::Int(i64::from(*i)),
        PgValue::Int8(i) => return KeyRepr::Int(*i),
        _ => {}
    }
    KeyRepr::Other(match key {
        PgValue::Numeric(s) => {
            let (neg, digits) = s
                .strip_prefix('-')
                .map_or((false, s.as_str()), |d| (true, d));
            let digits = digits.trim_start_matches('0');
            let digits = if digits.contains('.') {
                digits.trim_end_matches('0').trim_end_matches('.')
            } else {
                digits
            };
            if digits.is_empty() {
                "N0".to_owned()
            } else {
                format!("N{}{digits}", if neg { "-" } else { "" })
            }
        }
        PgValue::Float4(f) if *f == 0.0 => "F0".to_owned(),
        PgValue::Float8(f) if *f == 0.0 => "F0".to_owned(),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::model::PgType;

    fn tables() -> Vec<Vec<TableDef>> {
        vec![vec![TableDef {
            name: "t".into(),
            columns: vec![("id".into(), PgType::Text), ("v".into(), PgType::Integer)],
            primary_key: vec![0],
        }]]
    }
    fn up(k: &str, v: i32) -> Change {
        Change::Upsert {
            collection: 0,
            key: PgValue::Text(k.into()),
            rows: DocumentRows {
                parent: vec![PgValue::Text(k.into()), PgValue::Int4(v)],
                children: vec![],
                ..DocumentRows::default()
            },
        }
    }
    fn del(k: &str) -> Change {
        Change::Delete {
            collection: 0,
            key: PgValue::Text(k.into()),
        }
    }

    /// A parent `t` with one child table `c`.
    fn with_child() -> Vec<Vec<TableDef>> {
        let mut t = tables();
        t[0].push(TableDef {
            name: "c".into(),
            columns: vec![
                ("t_id".into(), PgType::Text),
                ("idx".into(), PgType::Integer),
            ],
            primary_key: vec![0, 1],
        });
        t
    }
    fn parent_up(k: &str, v: i32) -> Change {
        match up(k, v) {
            Change::Upsert {
                collection,
                key,
                rows,
            } => Change::UpsertParent {
                collection,
                key,
                rows,
            },
            other => other,
        }
    }
    fn refused(k: &str) -> Change {
        Change::Refused {
            collection: 0,
            key: PgValue::Text(k.into()),
        }
    }
    fn keys<'a>(v: &[(&'a PgValue, &DocumentRows)]) -> Vec<&'a PgValue> {
        v.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn only_parent_updates_all_the_way_may_keep_child_rows() {
        let t = |s: &str| PgValue::Text(s.into());
        let changes = [
            parent_up("a", 1),
            parent_up("a", 2),
            up("b", 1),
            parent_up("b", 2),
            refused("c"),
            parent_up("c", 1),
            parent_up("d", 1),
            refused("d"),
            refused("e"),
        ];
        let p = plan(&changes, &with_child()).unwrap();
        assert_eq!(keys(&p[0].parent_upserts), vec![&t("a"), &t("d")]);
        assert_eq!(p[0].parent_upserts[0].1.parent[1], PgValue::Int4(2));
        assert_eq!(keys(&p[0].upserts), vec![&t("b"), &t("c")]);
        assert_eq!(p[0].refused, vec![&t("d"), &t("e")]);
    }

    #[test]
    fn without_child_tables_or_after_a_truncate_parent_updates_are_upserts() {
        let changes = [parent_up("a", 1), refused("a")];
        let p = plan(&changes, &tables()).unwrap();
        assert_eq!(p[0].upserts.len(), 1);
        assert!(p[0].parent_upserts.is_empty() && p[0].refused.is_empty());

        let changes = [Change::Truncate { collection: 0 }, parent_up("a", 1)];
        let p = plan(&changes, &with_child()).unwrap();
        assert_eq!(p[0].upserts.len(), 1);
        assert!(p[0].parent_upserts.is_empty());
    }

    #[test]
    fn last_change_per_key_wins() {
        let changes = [up("a", 1), del("a"), del("b"), up("b", 2), up("b", 3)];
        let p = plan(&changes, &tables()).unwrap();
        assert_eq!(p[0].deletes, vec![&PgValue::Text("a".into())]);
        assert_eq!(p[0].upserts.len(), 1);
        assert_eq!(p[0].upserts[0].1.parent[1], PgValue::Int4(3));
        assert!(!p[0].truncate);
    }

    #[test]
    fn truncate_discards_earlier_changes_only() {
        let changes = [up("a", 1), Change::Truncate { collection: 0 }, up("b", 2)];
        let p = plan(&changes, &tables()).unwrap();
        assert!(p[0].truncate);
        assert!(p[0].deletes.is_empty());
        assert_eq!(p[0].upserts.len(), 1);
        assert_eq!(p[0].upserts[0].0, &PgValue::Text("b".into()));
    }

    #[test]
    fn malformed_batches_are_refused() {
        let wrong_width = Change::Upsert {
            collection: 0,
            key: PgValue::Text("a".into()),
            rows: DocumentRows {
                parent: vec![PgValue::Text("a".into())],
                children: vec![],
                ..DocumentRows::default()
            },
        };
        assert!(plan(&[wrong_width], &tables()).is_err());
        assert!(plan(&[Change::Truncate { collection: 7 }], &tables()).is_err());
    }

    #[test]
    fn numerically_equal_keys_coalesce() {
        assert_eq!(
            key_repr(&PgValue::Numeric("1.50".into())),
            key_repr(&PgValue::Numeric("01.5".into()))
        );
        assert_eq!(
            key_repr(&PgValue::Numeric("-0.0".into())),
            key_repr(&PgValue::Numeric("0".into()))
        );
        assert_ne!(
            key_repr(&PgValue::Numeric("10".into())),
            key_repr(&PgValue::Numeric("1".into()))
        );
        assert_eq!(
            key_repr(&PgValue::Float8(-0.0)),
            key_repr(&PgValue::Float8(0.0))
        );
    }
}
