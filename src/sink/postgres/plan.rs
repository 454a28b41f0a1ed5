//! A batch reduced to its net effect per collection: what to truncate, which keys to delete and
//! which documents to (re)write. Pure, so the coalescing rules are unit-tested without Postgres.
//!
//! Rules (SPEC "Order"): changes apply in source order; only the last change per
//! `(collection, key)` survives; a `Truncate` discards every earlier change of its collection
//! and empties its tables before the surviving later changes run.

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
}

impl CollectionPlan<'_> {
    pub fn is_empty(&self) -> bool {
        !self.truncate && self.deletes.is_empty() && self.upserts.is_empty()
    }
}

enum Net<'a> {
    Upsert(&'a PgValue, &'a DocumentRows),
    Delete(&'a PgValue),
}

/// Coalesces `changes` against the tables of each collection (`tables[c]`: parent first, then
/// children) and checks every row has its table's width, so a malformed batch fails before
/// anything is sent. The plan borrows the batch, so a batch that must be retried is never copied.
pub fn plan<'a>(
    changes: &'a [Change],
    tables: &[Vec<TableDef>],
) -> Result<Vec<CollectionPlan<'a>>, SinkError> {
    let mut nets: Vec<Vec<Option<Net>>> = tables.iter().map(|_| Vec::new()).collect();
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
        let (c, key, net) = match change {
            Change::Truncate { collection } => {
                let c = check(*collection)?;
                truncate[c] = true;
                nets[c].clear();
                index[c].clear();
                continue;
            }
            Change::Delete { collection, key } => {
                let c = check(*collection)?;
                (c, key_repr(key), Net::Delete(key))
            }
            Change::Upsert {
                collection,
                key,
                rows,
            } => {
                let c = check(*collection)?;
                check_rows(&tables[c], rows)?;
                (c, key_repr(key), Net::Upsert(key, rows))
            }
        };
        match index[c].get(&key) {
            Some(&i) => nets[c][i] = Some(net),
            None => {
                index[c].insert(key, nets[c].len());
                nets[c].push(Some(net));
            }
        }
    }

    Ok(nets
        .into_iter()
        .zip(truncate)
        .map(|(entries, truncate)| {
            let mut p = CollectionPlan {
                truncate,
                ..CollectionPlan::default()
            };
            for net in entries.into_iter().flatten() {
                match net {
                    Net::Upsert(k, rows) => p.upserts.push((k, rows)),
                    Net::Delete(k) => p.deletes.push(k),
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
            },
        }
    }
    fn del(k: &str) -> Change {
        Change::Delete {
            collection: 0,
            key: PgValue::Text(k.into()),
        }
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
