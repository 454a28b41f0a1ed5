//! The `_id` → key rules of docs/mappings.md ("Keys: `_id` → primary key"), as the oracle
//! reads them: which `_id`s a key column takes and the key each one gets, so that two
//! documents MongoDB keeps apart never share a row.

use bson::spec::BinarySubtype;
use bson::Bson;

use super::forms::{decode_dec128, exact_binary_decimal, Dec128, Decimal};
use super::oracle::{convert, exact, is_number, Cell, Rules};
use super::spec::{IdType, Mapping, SqlType};

/// The key of `_id`, or why it is refused (a dead letter under every `on_error`).
pub fn key_cell(m: &Mapping, rules: Rules, id: &Bson) -> Result<Cell, String> {
    if matches!(id, Bson::Null | Bson::Undefined) {
        return Err("null".into());
    }
    if rules.strict_ids {
        strict_key(&m.key.ty, m.id_type.unwrap_or(IdType::Auto), id)
    } else {
        convert(id, &m.key.ty)
    }
}

/// The `_id` rules (docs/mappings.md "Keys: `_id` → primary key"): each key column takes the
/// `_id` types whose keys no other accepted type can produce, so that two documents MongoDB
/// keeps apart never share a row.
fn strict_key(ty: &SqlType, id_type: IdType, id: &Bson) -> Result<Cell, String> {
    let refuse = || {
        Err(format!(
            "{} _id not taken by a {ty:?} key ({id_type:?})",
            kind(id)
        ))
    };
    match ty {
        SqlType::Text | SqlType::Varchar(_) => match (id_type, id) {
            (IdType::Auto, Bson::String(s)) if is_object_id_hex(s) => {
                Err("a String of 24 lower-case hex digits is the key of an ObjectId".into())
            }
            (IdType::Auto | IdType::String, Bson::String(_))
            | (IdType::Auto | IdType::ObjectId, Bson::ObjectId(_)) => convert(id, ty),
            (IdType::Number, v) if is_number(v) => convert(&Bson::String(exact_number_text(v)), ty),
            _ => refuse(),
        },
        SqlType::SmallInt | SqlType::Integer | SqlType::BigInt => match id {
            v if is_number(v) => convert(id, ty),
            _ => refuse(),
        },
        // Every Double by its exact binary value: its shortest text may be the value of
        // another _id (0.1 and Decimal128 0.1; 1e23 and Decimal128 1E+23).
        SqlType::Numeric(spec) => match id {
            Bson::Double(d) if d.is_finite() => {
                let exact = exact_binary_decimal(*d);
                let scale = match spec {
                    None => exact.needed_scale(),
                    Some((p, s)) => {
                        let (p, s) = (i64::from(*p), i64::from(s.unwrap_or(0)));
                        if exact.needed_scale() > s || exact.integer_digits() > p - s {
                            return Err("the Double's exact value does not fit".into());
                        }
                        s
                    }
                };
                Ok(Cell::Numeric(exact.plain(scale)))
            }
            v if is_number(v) => convert(id, ty),
            _ => refuse(),
        },
        // A Decimal128 only when it is exactly a value of the column (NaN and the
        // infinities are one key each, as in MongoDB).
        SqlType::Real | SqlType::Double => match id {
            Bson::Decimal128(d) => {
                let cell = convert(id, ty)?;
                let float = match cell {
                    Cell::F64(f) => f,
                    Cell::F32(f) => f64::from(f),
                    _ => unreachable!(),
                };
                match decode_dec128(d).decimal() {
                    Some(dec) if !dec.same_value(&exact_binary_decimal(float)) => {
                        Err("the Decimal128 is not exactly a value of the column".into())
                    }
                    _ => Ok(cell),
                }
            }
            v if is_number(v) => convert(id, ty),
            _ => refuse(),
        },
        SqlType::Uuid => match (id_type, id) {
            (IdType::Auto, Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid => convert(id, ty),
            // Lower case only: "ABC…" and "abc…" are two _ids but one uuid.
            (IdType::String, Bson::String(s)) if *s == s.to_lowercase() => convert(id, ty),
            _ => refuse(),
        },
        SqlType::Bytea => match (id_type, id) {
            (IdType::Auto | IdType::ObjectId, Bson::ObjectId(_)) => convert(id, ty),
            (IdType::Binary, Bson::Binary(b)) if b.subtype == BinarySubtype::Generic => {
                convert(id, ty)
            }
            _ => refuse(),
        },
        SqlType::Timestamptz | SqlType::Timestamp | SqlType::Date => match id {
            Bson::DateTime(_) => convert(id, ty),
            _ => refuse(),
        },
        SqlType::Boolean => match id {
            Bson::Boolean(_) => convert(id, ty),
            _ => refuse(),
        },
        SqlType::Jsonb => {
            if json_key_value(id, true) {
                convert(id, ty)
            } else {
                Err("not a String, JSON number, Boolean or ordered document of those".into())
            }
        }
        SqlType::Json | SqlType::Array(_) => refuse(),
    }
}

/// Values whose plain JSON no other `_id` has: Strings, Booleans, numbers that stay JSON
/// numbers (Int32, Int64 within ±2^53, finite Doubles), and documents whose fields are in
/// strictly ascending jsonb order (shorter first, then bytewise) and arrays, of those (and
/// nulls inside them).
fn json_key_value(v: &Bson, top: bool) -> bool {
    match v {
        Bson::String(_) | Bson::Boolean(_) | Bson::Int32(_) => true,
        Bson::Null => !top,
        Bson::Int64(i) => i.unsigned_abs() <= 1 << 53,
        Bson::Double(d) => d.is_finite(),
        Bson::Array(items) => !top && items.iter().all(|i| json_key_value(i, false)),
        Bson::Document(d) => {
            let keys: Vec<&String> = d.keys().collect();
            keys.windows(2)
                .all(|w| (w[0].len(), w[0].as_bytes()) < (w[1].len(), w[1].as_bytes()))
                && d.values().all(|v| json_key_value(v, false))
        }
        _ => false,
    }
}

fn is_object_id_hex(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A number's exact value as text, one text per value MongoDB considers equal: integral
/// values as plain digits, others in plain notation without trailing zeros (a Double by its
/// exact binary value), NaN and the infinities by name.
fn exact_number_text(v: &Bson) -> String {
    let special = match v {
        Bson::Double(d) if d.is_nan() => Some("NaN"),
        Bson::Double(d) if d.is_infinite() => Some(if *d > 0.0 { "Infinity" } else { "-Infinity" }),
        Bson::Decimal128(d) => match decode_dec128(d) {
            Dec128::NaN => Some("NaN"),
            Dec128::Infinity { neg } => Some(if neg { "-Infinity" } else { "Infinity" }),
            Dec128::Finite { .. } => None,
        },
        _ => None,
    };
    if let Some(s) = special {
        return s.to_owned();
    }
    let dec = match v {
        Bson::Double(d) => exact_binary_decimal(*d),
        _ => exact(v).unwrap(),
    };
    dec.plain(dec.needed_scale())
}

pub fn kind(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "Double",
        Bson::String(_) => "String",
        Bson::Array(_) => "Array",
        Bson::Document(_) => "Document",
        Bson::Boolean(_) => "Boolean",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "Regex",
        Bson::JavaScriptCode(_) => "JavaScript",
        Bson::JavaScriptCodeWithScope(_) => "JavaScript with scope",
        Bson::Int32(_) => "Int32",
        Bson::Int64(_) => "Int64",
        Bson::Timestamp(_) => "Timestamp",
        Bson::Binary(_) => "Binary",
        Bson::ObjectId(_) => "ObjectId",
        Bson::DateTime(_) => "Date",
        Bson::Symbol(_) => "Symbol",
        Bson::Decimal128(_) => "Decimal128",
        Bson::Undefined => "undefined",
        Bson::MaxKey => "MaxKey",
        Bson::MinKey => "MinKey",
        Bson::DbPointer(_) => "DBPointer",
    }
}

/// Whether two key cells are one key for Postgres's primary-key equality.
pub fn same_key(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::Numeric(x), Cell::Numeric(y)) => {
            let parse = |s: &str| {
                let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
                let (int, frac) = s.split_once('.').unwrap_or((s, ""));
                Decimal::new(neg, &format!("{int}{frac}"), -(frac.len() as i64))
            };
            parse(x).same_value(&parse(y))
        }
        (Cell::F64(x), Cell::F64(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Cell::F32(x), Cell::F32(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Cell::Json(x), Cell::Json(y)) => super::pg::json_eq(x, y, false),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_binary_values() {
        assert_eq!(
            exact_number_text(&Bson::Double(0.1)),
            "0.1000000000000000055511151231257827021181583404541015625"
        );
        assert_eq!(exact_number_text(&Bson::Double(2.0)), "2");
        assert_eq!(exact_number_text(&Bson::Double(-0.0)), "0");
        assert_eq!(
            exact_number_text(&Bson::Double(1e20)),
            "100000000000000000000"
        );
        assert_eq!(exact_number_text(&Bson::Int64(-5)), "-5");
    }
}
