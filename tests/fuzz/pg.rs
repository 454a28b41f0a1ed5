//! Reading back what Postgres holds, each column as text in a form the oracle predicts
//! (`oracle::Cell`): numbers and booleans by their SQL text, timestamps as microseconds and
//! dates as days since 1970, bytea as hex, arrays element by element.

use serde_json::Value;
use tokio_postgres::Client;

use super::forms::uuid_text;
use super::oracle::Cell;
use super::spec::{ident, SqlType};

/// One column of one row as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Scalar(Option<String>),
    Array(Option<Vec<Option<String>>>),
}

/// SQL giving the text form of the value `e` of scalar type `ty`.
fn scalar_expr(e: &str, ty: &SqlType) -> String {
    match ty {
        SqlType::Text | SqlType::Varchar(_) => e.to_owned(),
        SqlType::Timestamptz | SqlType::Timestamp => {
            format!("((extract(epoch from {e}) * 1000000)::numeric(40,0))::text")
        }
        SqlType::Date => format!("({e} - DATE '1970-01-01')::text"),
        SqlType::Bytea => format!("encode({e}, 'hex')"),
        _ => format!("({e})::text"),
    }
}

fn column_expr(name: &str, ty: &SqlType) -> String {
    let c = ident(name);
    match ty {
        SqlType::Array(inner) => format!(
            "CASE WHEN {c} IS NULL THEN NULL ELSE ARRAY(SELECT {} FROM unnest({c}) WITH \
             ORDINALITY AS u(e, n) ORDER BY n)::text[] END",
            scalar_expr("u.e", inner)
        ),
        _ => scalar_expr(&c, ty),
    }
}

/// Every row of `schema.table`, columns as listed.
pub async fn read_table(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[(String, SqlType)],
) -> Vec<Vec<Read>> {
    let exprs: Vec<String> = columns
        .iter()
        .map(|(name, ty)| column_expr(name, ty))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        exprs.join(", "),
        ident(schema),
        ident(table)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("reading back {table}: {e:?}\n{sql}"));
    rows.iter()
        .map(|r| {
            columns
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| match ty {
                    SqlType::Array(_) => Read::Array(r.get(i)),
                    _ => Read::Scalar(r.get(i)),
                })
                .collect()
        })
        .collect()
}

/// `Ok` when `actual` holds exactly `expected` for a column of type `ty`.
pub fn compare(expected: &Cell, ty: &SqlType, actual: &Read) -> Result<(), String> {
    let mismatch = || Err(format!("expected {expected:?}, Postgres holds {actual:?}"));
    match (ty, actual) {
        (SqlType::Array(inner), Read::Array(items)) => match (expected, items) {
            (Cell::Null, None) => Ok(()),
            (Cell::Array(want), Some(got)) if want.len() == got.len() => {
                for (i, (w, g)) in want.iter().zip(got).enumerate() {
                    compare(w, inner, &Read::Scalar(g.clone()))
                        .map_err(|why| format!("element {i}: {why}"))?;
                }
                Ok(())
            }
            _ => mismatch(),
        },
        (_, Read::Scalar(None)) => match expected {
            Cell::Null => Ok(()),
            _ => mismatch(),
        },
        (_, Read::Scalar(Some(text))) => {
            let same = match expected {
                Cell::Null | Cell::Array(_) => false,
                Cell::Text(s) => s == text,
                Cell::Numeric(s) => s == text,
                Cell::Int(i) => text.parse::<i128>().ok() == Some(*i),
                Cell::F64(f) => text
                    .parse::<f64>()
                    .is_ok_and(|g| g.to_bits() == f.to_bits() || (g.is_nan() && f.is_nan())),
                Cell::F32(f) => text
                    .parse::<f32>()
                    .is_ok_and(|g| g.to_bits() == f.to_bits() || (g.is_nan() && f.is_nan())),
                Cell::Bool(b) => text == if *b { "true" } else { "false" },
                Cell::Micros(us) | Cell::Days(us) => text.parse::<i64>().ok() == Some(*us),
                Cell::Uuid(u) => *text == uuid_text(u),
                Cell::Bytes(b) => *text == b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                Cell::Json(want) => serde_json::from_str::<Value>(text)
                    .is_ok_and(|got| json_eq(want, &got, *ty == SqlType::Json)),
            };
            if same {
                Ok(())
            } else {
                mismatch()
            }
        }
        (_, Read::Array(_)) => mismatch(),
    }
}

/// JSON equality as Postgres keeps it: numbers by value (jsonb stores numeric), object keys
/// in order only for `json` (`ordered`).
pub fn json_eq(a: &Value, b: &Value, ordered: bool) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y, ordered))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && if ordered {
                    x.iter()
                        .zip(y)
                        .all(|((kx, vx), (ky, vy))| kx == ky && json_eq(vx, vy, ordered))
                } else {
                    x.iter()
                        .all(|(k, vx)| y.get(k).is_some_and(|vy| json_eq(vx, vy, ordered)))
                }
        }
        _ => a == b,
    }
}

/// The first place where `got` differs from `want` (for failure messages).
pub fn json_diff(want: &Value, got: &Value, ordered: bool) -> Option<String> {
    match (want, got) {
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| json_diff(x, y, ordered).map(|d| format!("[{i}]{d}"))),
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            x.iter().find_map(|(k, vx)| match y.get(k) {
                Some(vy) => json_diff(vx, vy, ordered).map(|d| format!(".{k}{d}")),
                None => Some(format!(": key {k:?} missing from {got}")),
            })
        }
        _ if json_eq(want, got, ordered) => None,
        _ => Some(format!(": expected {want}, found {got}")),
    }
}
