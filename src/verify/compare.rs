//! Comparing what a document becomes with what Postgres holds: pure functions over `PgValue`s.
//!
//! The expected side is always the output of `mapping::convert_*` (the rows the sink would
//! write); the actual side is what `sink::postgres::decode` reads back. Values are equal when
//! they are the same value (SPEC "Cutover and verify"): numbers by value (`12.50` = `12.5`,
//! `integer 3` = `bigint 3`), timestamps to the millisecond (BSON dates have no finer unit), JSON
//! as JSON values (object key order and `1` vs `1.0` do not matter, as in `jsonb`), arrays
//! element by element under the same rules, everything else byte for byte.

use std::collections::HashMap;

use serde_json::Value;

pub use crate::mapping::json::value_json;
use crate::mapping::model::TableDef;
use crate::mapping::value::{PgValue, Row};
use crate::sink::DocumentRows;

/// One column whose values differ. `column` indexes the table's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDiff {
    pub column: usize,
    pub mongo: PgValue,
    pub postgres: PgValue,
}

/// How a row compares with the row a document becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    Equal,
    Missing,
    Different(Vec<ColumnDiff>),
}

/// One child table's rows of one document, compared by `idx`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChildDiff {
    /// Elements without a row.
    pub missing: Vec<i32>,
    /// Rows without an element.
    pub extra: Vec<i32>,
    pub different: Vec<(i32, Vec<ColumnDiff>)>,
}

impl ChildDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

/// A document compared with its parent row and child rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DocDiff {
    pub parent: RowState,
    /// One per child table, in mapping order.
    pub children: Vec<ChildDiff>,
}

impl DocDiff {
    pub fn is_equal(&self) -> bool {
        self.parent == RowState::Equal && self.children.iter().all(ChildDiff::is_empty)
    }
}

/// A row as Postgres holds it, read column by column, so that an implementation may decode a
/// value only when it is needed (`rows::FetchedRow` compares wire bytes first).
pub trait ActualRow {
    /// Whether column `i` holds the same value as `expected` (module doc).
    fn same(&self, i: usize, expected: &PgValue) -> bool;
    /// The value of column `i` (`Null` past the end).
    fn value(&self, i: usize) -> PgValue;
}

impl ActualRow for [PgValue] {
    fn same(&self, i: usize, expected: &PgValue) -> bool {
        same_value(expected, self.get(i).unwrap_or(&PgValue::Null))
    }
    fn value(&self, i: usize) -> PgValue {
        self.get(i).cloned().unwrap_or(PgValue::Null)
    }
}

impl ActualRow for Vec<PgValue> {
    fn same(&self, i: usize, expected: &PgValue) -> bool {
        self.as_slice().same(i, expected)
    }
    fn value(&self, i: usize) -> PgValue {
        self.as_slice().value(i)
    }
}

/// Compares `expected` (the converted document) with the parent row (`None`: no row) and the
/// child rows Postgres holds for its key (one list per child table, any order). `tables` is
/// the collection's `CollectionMapping::tables()`: parent first, then the children.
pub fn compare_document<P, C>(
    tables: &[TableDef],
    expected: &DocumentRows,
    parent: Option<&P>,
    children: &[&[C]],
) -> DocDiff
where
    P: ActualRow + ?Sized,
    C: ActualRow,
{
    let parent = match parent {
        None => RowState::Missing,
        Some(actual) => {
            let diffs = compare_columns(&expected.parent, actual, 0);
            if diffs.is_empty() {
                RowState::Equal
            } else {
                RowState::Different(diffs)
            }
        }
    };
    let child_tables = tables.len().saturating_sub(1);
    let children = (0..child_tables)
        .map(|i| {
            compare_children(
                expected.children.get(i).map_or(&[][..], Vec::as_slice),
                children.get(i).copied().unwrap_or(&[]),
            )
        })
        .collect();
    DocDiff { parent, children }
}

/// Child rows are `[parent_key, idx, columns...]`; they are matched by `idx` and compared from
/// the third column on (the parent key is what they were fetched by).
fn compare_children<C: ActualRow>(expected: &[Row], actual: &[C]) -> ChildDiff {
    let mut by_idx: HashMap<i32, &C> = actual
        .iter()
        .filter_map(|r| actual_idx(r).map(|i| (i, r)))
        .collect();
    let mut diff = ChildDiff::default();
    for row in expected {
        let Some(idx) = row_idx(row) else { continue };
        match by_idx.remove(&idx) {
            None => diff.missing.push(idx),
            Some(actual) => {
                let cols = compare_columns(row, actual, 2);
                if !cols.is_empty() {
                    diff.different.push((idx, cols));
                }
            }
        }
    }
    diff.extra = by_idx.into_keys().collect();
    diff.extra.sort_unstable();
    diff
}

/// The `idx` of a child row (its second value).
pub fn row_idx(row: &[PgValue]) -> Option<i32> {
    idx_of(row.get(1)?)
}

/// The `idx` of a child row read column by column.
pub fn actual_idx<R: ActualRow + ?Sized>(row: &R) -> Option<i32> {
    idx_of(&row.value(1))
}

fn idx_of(v: &PgValue) -> Option<i32> {
    match v {
        PgValue::Int4(i) => Some(*i),
        PgValue::Int2(i) => Some(i32::from(*i)),
        PgValue::Int8(i) => i32::try_from(*i).ok(),
        _ => None,
    }
}

fn compare_columns<R: ActualRow + ?Sized>(
    expected: &[PgValue],
    actual: &R,
    from: usize,
) -> Vec<ColumnDiff> {
    let mut diffs = Vec::new();
    for (i, want) in expected.iter().enumerate().skip(from) {
        if !actual.same(i, want) {
            diffs.push(ColumnDiff {
                column: i,
                mongo: want.clone(),
                postgres: actual.value(i),
            });
        }
    }
    diffs
}

/// Whether two values are the same value (module doc).
pub fn same_value(a: &PgValue, b: &PgValue) -> bool {
    use PgValue::*;
    match (a, b) {
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Text(x), Text(y)) => x == y,
        (Bool(x), Bool(y)) => x == y,
        (Timestamptz(x) | Timestamp(x), Timestamptz(y) | Timestamp(y)) => {
            x.div_euclid(1000) == y.div_euclid(1000)
        }
        (Date(x), Date(y)) => x == y,
        (Uuid(x), Uuid(y)) => x == y,
        (Bytea(x), Bytea(y)) => x == y,
        (Json(x), Json(y)) => json_equal(x, y),
        (Numeric(x), Numeric(y)) if x == y => true,
        (Array(x), Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        (Float4(_) | Float8(_), Float4(_) | Float8(_)) => match (float(a), float(b)) {
            (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
            _ => false,
        },
        _ => match (integer(a), integer(b)) {
            (Some(x), Some(y)) => x == y,
            _ => match (decimal(a), decimal(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        },
    }
}

fn float(v: &PgValue) -> Option<f64> {
    match v {
        PgValue::Float4(f) => Some(f64::from(*f)),
        PgValue::Float8(f) => Some(*f),
        _ => None,
    }
}

fn integer(v: &PgValue) -> Option<i64> {
    match v {
        PgValue::Int2(i) => Some(i64::from(*i)),
        PgValue::Int4(i) => Some(i64::from(*i)),
        PgValue::Int8(i) => Some(*i),
        _ => None,
    }
}

/// An exact number as `(negative, integer digits, fraction digits)` without leading or trailing
/// zeros, so equal values have equal forms; `None` for values that are not exact numbers.
fn decimal(v: &PgValue) -> Option<(bool, String, String)> {
    let text = match v {
        PgValue::Numeric(s) => s.clone(),
        PgValue::Int2(_) | PgValue::Int4(_) | PgValue::Int8(_) => integer(v)?.to_string(),
        _ => return None,
    };
    normalize_decimal(&text)
}

/// Plain decimal text (`-012.50`) in the form `decimal` compares. `NaN` and infinities keep
/// their names (as the integer part) so that they equal only themselves.
fn normalize_decimal(text: &str) -> Option<(bool, String, String)> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Some((false, text.to_owned(), String::new()));
    }
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let zero = int.is_empty() && frac.is_empty();
    Some((neg && !zero, int.to_owned(), frac.to_owned()))
}

/// JSON values compared as `jsonb` compares them: numbers by value, objects as sets of keys.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
                return p == q;
            }
            if let (Some(p), Some(q)) = (x.as_u64(), y.as_u64()) {
                return p == q;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p == q,
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::model::PgType;
    use serde_json::json;
    use PgValue::*;

    #[test]
    fn numbers_compare_by_value() {
        assert!(same_value(
            &Numeric("12.50".into()),
            &Numeric("12.5".into())
        ));
        assert!(same_value(&Numeric("-0.00".into()), &Numeric("0".into())));
        assert!(same_value(&Numeric("007".into()), &Int8(7)));
        assert!(same_value(&Int4(3), &Int8(3)));
        assert!(!same_value(
            &Numeric("19.99".into()),
            &Numeric("19.90".into())
        ));
        assert!(!same_value(&Numeric("-1".into()), &Numeric("1".into())));
        assert!(same_value(&Float4(1.5), &Float8(1.5)));
        assert!(same_value(&Float8(f64::NAN), &Float8(f64::NAN)));
        assert!(!same_value(&Float8(0.1), &Float8(0.1000001)));
        assert!(!same_value(&Numeric("NaN".into()), &Numeric("0".into())));
        assert!(!same_value(&Text("3".into()), &Int4(3)));
        assert!(!same_value(&Null, &Int4(0)));
    }

    #[test]
    fn timestamps_compare_to_the_millisecond() {
        assert!(same_value(&Timestamptz(1_000_000), &Timestamptz(1_000_999)));
        assert!(!same_value(
            &Timestamptz(1_000_000),
            &Timestamptz(1_001_000)
        ));
        assert!(same_value(&Timestamptz(-1_500), &Timestamp(-1_001)));
    }

    #[test]
    fn json_compares_as_values() {
        let a = Json(json!({"a": 1, "b": [1.0, "x", {"c": null}]}));
        let b = Json(json!({"b": [1, "x", {"c": null}], "a": 1.0}));
        assert!(same_value(&a, &b));
        assert!(!same_value(&a, &Json(json!({"a": 1, "b": [1, "x"]}))));
        assert!(!same_value(
            &Json(json!({"a": 1})),
            &Json(json!({"a": 1, "b": 2}))
        ));
    }

    #[test]
    fn arrays_compare_element_by_element() {
        let a = Array(vec![Numeric("1.0".into()), Null]);
        assert!(same_value(&a, &Array(vec![Numeric("1".into()), Null])));
        assert!(!same_value(&a, &Array(vec![Numeric("1".into())])));
        assert!(!same_value(&a, &Array(vec![Null, Numeric("1".into())])));
    }

    fn tables() -> Vec<TableDef> {
        vec![
            TableDef {
                name: "orders".into(),
                columns: vec![("id".into(), PgType::Text), ("qty".into(), PgType::Integer)],
                primary_key: vec![0],
            },
            TableDef {
                name: "items".into(),
                columns: vec![
                    ("order_id".into(), PgType::Text),
                    ("idx".into(), PgType::Integer),
                    ("sku".into(), PgType::Text),
                ],
                primary_key: vec![0, 1],
            },
        ]
    }

    fn item(idx: i32, sku: &str) -> Row {
        vec![Text("a".into()), Int4(idx), Text(sku.into())]
    }

    #[test]
    // `DocumentRows` may carry more than rows; only these two fields matter here.
    #[allow(clippy::field_reassign_with_default)]
    fn a_document_is_compared_row_by_row_and_child_by_idx() {
        let mut expected = DocumentRows::default();
        expected.parent = vec![Text("a".into()), Int4(2)];
        expected.children = vec![vec![item(0, "x"), item(1, "y"), item(2, "z")]];
        let same = compare_document(
            &tables(),
            &expected,
            Some(&vec![Text("a".into()), Int4(2)]),
            &[&[item(2, "z"), item(0, "x"), item(1, "y")]],
        );
        assert!(same.is_equal(), "{same:?}");

        let diff = compare_document(
            &tables(),
            &expected,
            Some(&vec![Text("a".into()), Int4(3)]),
            &[&[item(0, "x"), item(1, "q"), item(5, "w")]],
        );
        assert_eq!(
            diff.parent,
            RowState::Different(vec![ColumnDiff {
                column: 1,
                mongo: Int4(2),
                postgres: Int4(3)
            }])
        );
        assert_eq!(diff.children[0].missing, vec![2]);
        assert_eq!(diff.children[0].extra, vec![5]);
        assert_eq!(diff.children[0].different.len(), 1);
        assert_eq!(diff.children[0].different[0].0, 1);
        assert_eq!(diff.children[0].different[0].1[0].column, 2);

        let missing = compare_document::<Row, Row>(&tables(), &expected, None, &[&[]]);
        assert_eq!(missing.parent, RowState::Missing);
        assert_eq!(missing.children[0].missing, vec![0, 1, 2]);
    }

    #[test]
    fn report_values_use_the_plain_json_encoding() {
        assert_eq!(value_json(&Numeric("19.99".into())), json!("19.99"));
        assert_eq!(value_json(&Int4(3)), json!(3));
        assert_eq!(
            value_json(&Timestamptz(1_700_000_000_123_000)),
            json!("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(value_json(&Date(0)), json!("1970-01-01"));
        assert_eq!(value_json(&Bytea(vec![1, 2, 3])), json!("AQID"));
        assert_eq!(value_json(&Float8(f64::INFINITY)), json!("Infinity"));
    }
}
