//! What `verify` reports: the report structs (serialized as SPEC's `verify --json` object),
//! the tally that builds a collection's part from findings, and the human rendering.
//!
//! Counting rules: a collection's `missing`/`extra`/`different` count rows of its parent table
//! (a document with two wrong columns is one `different` row, listed as two entries);
//! `dead_letter` counts documents whose current version Postgres does not hold because it was
//! refused (its rows are not compared); each child table counts its own rows. At most
//! [`LISTED_PER_TABLE`] differences are listed per table; the counts are complete.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::compare::{value_json, ColumnDiff, DocDiff, RowState};
use crate::mapping::model::TableDef;
use crate::mapping::value::PgValue;

/// Differences listed per table (SPEC: "at most 20").
pub const LISTED_PER_TABLE: usize = 20;

/// The result of one verify: `verify --json` prints it, `cutover` embeds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// `counts`, `sample` or `full`.
    pub mode: &'static str,
    /// True when no collection has a difference of any kind.
    pub equal: bool,
    /// `sync.name`: whose checkpoint rechecks waited for and whose dead letters were read.
    pub stream: String,
    #[serde(serialize_with = "instant")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "instant")]
    pub finished_at: DateTime<Utc>,
    pub collections: Vec<CollectionReport>,
}

/// One mapped collection and its tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionReport {
    /// `db.collection`.
    pub namespace: String,
    /// The parent table.
    pub table: String,
    /// Documents in the collection (`counts`, `full`: exact; `sample`: MongoDB's estimate).
    pub documents: u64,
    /// Rows of the parent table.
    pub rows: u64,
    /// Documents compared one by one (0 in `counts` mode).
    pub checked: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub dead_letter: u64,
    /// Documents and rows found different at first and checked again (after the stream had
    /// applied everything up to the moment they were read, when a `sync` is running); only
    /// differences that persisted are counted above. An addition to SPEC's shape.
    pub rechecked: u64,
    pub children: Vec<ChildReport>,
    pub differences: Vec<Difference>,
}

impl CollectionReport {
    pub fn is_equal(&self) -> bool {
        self.missing == 0
            && self.extra == 0
            && self.different == 0
            && self.dead_letter == 0
            && self.children.iter().all(ChildReport::is_equal)
    }
}

/// One child table of a collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildReport {
    pub table: String,
    /// Array elements the documents hold (`full`, `sample`: of the documents compared that
    /// convert; `counts`: of every document).
    pub elements: u64,
    /// Rows of the child table (`sample`: of the documents compared).
    pub rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
}

impl ChildReport {
    pub fn is_equal(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

/// What kind of difference (SPEC "Cutover and verify").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A document (or array element) without its row.
    Missing,
    /// A row without its document (or element).
    Extra,
    /// A column's value differs.
    Different,
    /// The document's current version was refused (it sits in the dead-letter table).
    DeadLetter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Different => "different",
            Kind::DeadLetter => "dead_letter",
        }
    }
}

/// One listed difference. `_id` is the document's `_id` (for rows without a document, the
/// key Postgres holds), in plain JSON; `idx` is set for child rows; `column`, `mongo` and
/// `postgres` for `different`; `error` (an addition) says why a dead letter was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub kind: Kind,
    pub table: String,
    #[serde(rename = "_id")]
    pub id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idx: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// The final word on one document or row, after any recheck.
#[derive(Debug, Clone)]
pub enum Finding {
    /// The document's rows differ from what it converts to.
    Unequal { id: Value, diff: DocDiff },
    /// The document's current version is refused (`error` says why).
    DeadLetter { id: Value, error: String },
    /// A parent row without a document, and its child rows (`idx` per child table).
    ExtraRow {
        key: PgValue,
        children: Vec<Vec<i32>>,
    },
    /// Child rows whose parent document does not exist.
    OrphanRows {
        child: usize,
        key: PgValue,
        idx: Vec<i32>,
    },
}

/// Counts and listings of one collection, built from findings.
#[derive(Debug, Clone)]
pub struct Tally {
    tables: Vec<TableDef>,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub dead_letter: u64,
    pub rechecked: u64,
    /// Per child table: (missing, extra, different).
    pub children: Vec<[u64; 3]>,
    /// Per table (parent first): listed differences.
    listed: Vec<Vec<Difference>>,
}

impl Tally {
    pub fn new(tables: &[TableDef]) -> Tally {
        Tally {
            tables: tables.to_vec(),
            missing: 0,
            extra: 0,
            different: 0,
            dead_letter: 0,
            rechecked: 0,
            children: vec![[0; 3]; tables.len().saturating_sub(1)],
            listed: vec![Vec::new(); tables.len()],
        }
    }

    fn list(&mut self, table: usize, d: Difference) {
        if let Some(list) = self.listed.get_mut(table) {
            if list.len() < LISTED_PER_TABLE {
                list.push(d);
            }
        }
    }

    fn table_name(&self, table: usize) -> String {
        self.tables
            .get(table)
            .map(|t| t.name.clone())
            .unwrap_or_default()
    }

    fn entry(&self, kind: Kind, table: usize, id: &Value, idx: Option<i32>) -> Difference {
        Difference {
            kind,
            table: self.table_name(table),
            id: id.clone(),
            idx,
            column: None,
            mongo: None,
            postgres: None,
            error: None,
        }
    }

    fn list_columns(&mut self, table: usize, id: &Value, idx: Option<i32>, cols: &[ColumnDiff]) {
        for c in cols {
            let column = self
                .tables
                .get(table)
                .and_then(|t| t.columns.get(c.column))
                .map(|(n, _)| n.clone());
            let d = Difference {
                column,
                mongo: Some(value_json(&c.mongo)),
                postgres: Some(value_json(&c.postgres)),
                ..self.entry(Kind::Different, table, id, idx)
            };
            self.list(table, d);
        }
    }

    pub fn add(&mut self, finding: Finding) {
        match finding {
            Finding::DeadLetter { id, error } => {
                self.dead_letter += 1;
                let d = Difference {
                    error: Some(error),
                    ..self.entry(Kind::DeadLetter, 0, &id, None)
                };
                self.list(0, d);
            }
            Finding::Unequal { id, diff } => {
                match &diff.parent {
                    RowState::Equal => {}
                    RowState::Missing => {
                        self.missing += 1;
                        let d = self.entry(Kind::Missing, 0, &id, None);
                        self.list(0, d);
                    }
                    RowState::Different(cols) => {
                        self.different += 1;
                        self.list_columns(0, &id, None, cols);
                    }
                }
                for (i, child) in diff.children.iter().enumerate() {
                    let t = i + 1;
                    if let Some(c) = self.children.get_mut(i) {
                        c[0] += child.missing.len() as u64;
                        c[1] += child.extra.len() as u64;
                        c[2] += child.different.len() as u64;
                    }
                    for &idx in &child.missing {
                        let d = self.entry(Kind::Missing, t, &id, Some(idx));
                        self.list(t, d);
                    }
                    for &idx in &child.extra {
                        let d = self.entry(Kind::Extra, t, &id, Some(idx));
                        self.list(t, d);
                    }
                    for (idx, cols) in &child.different {
                        self.list_columns(t, &id, Some(*idx), cols);
                    }
                }
            }
            Finding::ExtraRow { key, children } => {
                self.extra += 1;
                let id = value_json(&key);
                let d = self.entry(Kind::Extra, 0, &id, None);
                self.list(0, d);
                for (i, idxs) in children.into_iter().enumerate() {
                    self.orphans(i, &id, &idxs);
                }
            }
            Finding::OrphanRows { child, key, idx } => {
                self.orphans(child, &value_json(&key), &idx);
            }
        }
    }

    fn orphans(&mut self, child: usize, id: &Value, idxs: &[i32]) {
        if let Some(c) = self.children.get_mut(child) {
            c[1] += idxs.len() as u64;
        }
        for &idx in idxs {
            let d = self.entry(Kind::Extra, child + 1, id, Some(idx));
            self.list(child + 1, d);
        }
    }

    /// The listed differences, parent table first.
    pub fn differences(&self) -> Vec<Difference> {
        self.listed.iter().flatten().cloned().collect()
    }
}

/// The human form of a report: a verdict line, then one block per collection.
pub fn render_text(r: &VerifyReport) -> String {
    let mut out = String::new();
    let seconds = (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0;
    let unequal = r.collections.iter().filter(|c| !c.is_equal()).count();
    let verdict = if r.equal {
        "EQUAL".to_owned()
    } else {
        format!(
            "NOT EQUAL ({unequal} of {} collection(s) differ)",
            r.collections.len()
        )
    };
    let _ = writeln!(
        out,
        "verify --mode {} of stream {:?}: {verdict} in {seconds:.1} s",
        r.mode, r.stream
    );
    for c in &r.collections {
        let _ = writeln!(
            out,
            "\n{} -> {}: {} documents, {} rows, {} checked, {} rechecked",
            c.namespace, c.table, c.documents, c.rows, c.checked, c.rechecked
        );
        let _ = writeln!(
            out,
            "  {:<24} missing {}, extra {}, different {}, dead_letter {}",
            c.table, c.missing, c.extra, c.different, c.dead_letter
        );
        for ch in &c.children {
            let _ = writeln!(
                out,
                "  {:<24} missing {}, extra {}, different {} ({} elements, {} rows)",
                ch.table, ch.missing, ch.extra, ch.different, ch.elements, ch.rows
            );
        }
        if c.differences.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  differences (at most {LISTED_PER_TABLE} listed per table):"
        );
        for d in &c.differences {
            let mut line = format!("    {:<11} {} _id {}", d.kind.as_str(), d.table, d.id);
            if let Some(idx) = d.idx {
                let _ = write!(line, " idx {idx}");
            }
            if let Some(col) = &d.column {
                let _ = write!(line, " column {col}");
            }
            if let (Some(m), Some(p)) = (&d.mongo, &d.postgres) {
                let _ = write!(line, ": mongo {m}, postgres {p}");
            }
            if let Some(e) = &d.error {
                let _ = write!(line, ": {e}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::model::PgType;
    use crate::verify::compare::ChildDiff;
    use serde_json::json;

    fn tables() -> Vec<TableDef> {
        vec![
            TableDef {
                name: "orders".into(),
                columns: vec![
                    ("id".into(), PgType::Text),
                    ("total".into(), PgType::Numeric(Some((12, Some(2))))),
                ],
                primary_key: vec![0],
            },
            TableDef {
                name: "order_items".into(),
                columns: vec![
                    ("order_id".into(), PgType::Text),
                    ("idx".into(), PgType::Integer),
                    ("qty".into(), PgType::Integer),
                ],
                primary_key: vec![0, 1],
            },
        ]
    }

    #[test]
    fn report_serializes_to_the_spec_shape() {
        let mut t = Tally::new(&tables());
        t.add(Finding::Unequal {
            id: json!("f11"),
            diff: DocDiff {
                parent: RowState::Missing,
                children: vec![ChildDiff::default()],
            },
        });
        t.add(Finding::Unequal {
            id: json!("f12"),
            diff: DocDiff {
                parent: RowState::Different(vec![ColumnDiff {
                    column: 1,
                    mongo: PgValue::Numeric("19.99".into()),
                    postgres: PgValue::Numeric("19.90".into()),
                }]),
                children: vec![ChildDiff {
                    different: vec![(
                        2,
                        vec![ColumnDiff {
                            column: 2,
                            mongo: PgValue::Int4(3),
                            postgres: PgValue::Int4(2),
                        }],
                    )],
                    ..ChildDiff::default()
                }],
            },
        });
        let at = DateTime::from_timestamp_millis(1_796_292_000_000).unwrap();
        let report = VerifyReport {
            mode: "full",
            equal: false,
            stream: "default".into(),
            started_at: at,
            finished_at: at + chrono::Duration::milliseconds(42_517),
            collections: vec![CollectionReport {
                namespace: "shop.orders".into(),
                table: "orders".into(),
                documents: 2,
                rows: 1,
                checked: 2,
                missing: t.missing,
                extra: t.extra,
                different: t.different,
                dead_letter: t.dead_letter,
                rechecked: 0,
                children: vec![ChildReport {
                    table: "order_items".into(),
                    elements: 3,
                    rows: 3,
                    missing: t.children[0][0],
                    extra: t.children[0][1],
                    different: t.children[0][2],
                }],
                differences: t.differences(),
            }],
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["started_at"], json!("2026-12-03T10:00:00.000Z"));
        assert_eq!(v["finished_at"], json!("2026-12-03T10:00:42.517Z"));
        let c = &v["collections"][0];
        assert_eq!(
            (c["missing"].clone(), c["different"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(c["children"][0]["different"], json!(1));
        assert_eq!(
            c["differences"],
            json!([
                {"kind": "missing", "table": "orders", "_id": "f11"},
                {"kind": "different", "table": "orders", "_id": "f12", "column": "total",
                 "mongo": "19.99", "postgres": "19.90"},
                {"kind": "different", "table": "order_items", "_id": "f12", "idx": 2,
                 "column": "qty", "mongo": 3, "postgres": 2}
            ])
        );
        let text = render_text(&report);
        assert!(text.contains("NOT EQUAL"), "{text}");
        assert!(
            text.contains("column total: mongo \"19.99\", postgres \"19.90\""),
            "{text}"
        );
    }

    #[test]
    fn listings_stop_at_twenty_per_table_but_counts_do_not() {
        let mut t = Tally::new(&tables());
        for i in 0..30 {
            t.add(Finding::ExtraRow {
                key: PgValue::Text(format!("k{i}")),
                children: vec![vec![0, 1]],
            });
        }
        assert_eq!(t.extra, 30);
        assert_eq!(t.children[0][1], 60);
        let listed = t.differences();
        assert_eq!(listed.iter().filter(|d| d.table == "orders").count(), 20);
        assert_eq!(
            listed.iter().filter(|d| d.table == "order_items").count(),
            20
        );
    }
}
