//! Binary wire encoding of `PgValue`: the `ToSql` impl used for statement parameters and for
//! binary COPY, including arrays and an exact `numeric` encoder.
//!
//! No crate encodes arbitrary-precision decimal text: `rust_decimal` stops at 28 digits and
//! BSON Decimal128 carries 34, so `numeric` is encoded by hand from the canonical text.

use bytes::{BufMut, BytesMut};
use postgres_types::{to_sql_checked, IsNull, Kind, ToSql, Type};

use crate::mapping::value::PgValue;

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01T00:00:00Z).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A value that does not fit the column it is being written to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

fn mismatch(v: &PgValue, ty: &Type) -> BoxError {
    let kind = match v {
        PgValue::Null => "null",
        PgValue::Text(_) => "text",
        PgValue::Int2(_) => "smallint",
        PgValue::Int4(_) => "integer",
        PgValue::Int8(_) => "bigint",
        PgValue::Float4(_) => "real",
        PgValue::Float8(_) => "double precision",
        PgValue::Numeric(_) => "numeric",
        PgValue::Bool(_) => "boolean",
        PgValue::Timestamptz(_) => "timestamptz",
        PgValue::Timestamp(_) => "timestamp",
        PgValue::Date(_) => "date",
        PgValue::Uuid(_) => "uuid",
        PgValue::Bytea(_) => "bytea",
        PgValue::Json(_) => "json",
        PgValue::Array(_) => "array",
    };
    Box::new(EncodeError(format!(
        "a {kind} value cannot be written to a column of type {}",
        ty.name()
    )))
}

impl ToSql for PgValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            PgValue::Null => return Ok(IsNull::Yes),
            PgValue::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    out.put_slice(s.as_bytes())
                }
                _ => return Err(mismatch(self, ty)),
            },
            // Widening between integer widths is exact, so it is allowed.
            PgValue::Int2(v) => {
                put_int(i64::from(*v), ty, out).ok_or_else(|| mismatch(self, ty))?
            }
            PgValue::Int4(v) => {
                if *ty == Type::INT2 {
                    return Err(mismatch(self, ty));
                }
                put_int(i64::from(*v), ty, out).ok_or_else(|| mismatch(self, ty))?
            }
            PgValue::Int8(v) => match *ty {
                Type::INT8 => out.put_i64(*v),
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Float4(v) => match *ty {
                Type::FLOAT4 => out.put_f32(*v),
                Type::FLOAT8 => out.put_f64(f64::from(*v)),
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Float8(v) => match *ty {
                Type::FLOAT8 => out.put_f64(*v),
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Numeric(text) => match *ty {
                Type::NUMERIC => encode_numeric(text, out)?,
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Bool(b) => match *ty {
                Type::BOOL => out.put_u8(u8::from(*b)),
                _ => return Err(mismatch(self, ty)),
            },
            // Both carry microseconds of the same calendar; only the column's meaning differs.
            PgValue::Timestamptz(us) | PgValue::Timestamp(us) => match *ty {
                Type::TIMESTAMPTZ | Type::TIMESTAMP => {
                    let v = us.checked_sub(PG_EPOCH_MICROS).ok_or_else(|| {
                        EncodeError(format!("timestamp {us}µs is out of Postgres' range"))
                    })?;
                    out.put_i64(v)
                }
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Date(days) => match *ty {
                Type::DATE => {
                    let v = days.checked_sub(PG_EPOCH_DAYS).ok_or_else(|| {
                        EncodeError(format!("date {days} days is out of Postgres' range"))
                    })?;
                    out.put_i32(v)
                }
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Uuid(bytes) => match *ty {
                Type::UUID => out.put_slice(bytes),
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Bytea(bytes) => match *ty {
                Type::BYTEA => out.put_slice(bytes),
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Json(v) => match *ty {
                Type::JSONB => {
                    out.put_u8(1); // jsonb binary format version
                    serde_json::to_writer(out.writer(), v)?;
                }
                Type::JSON => serde_json::to_writer(out.writer(), v)?,
                _ => return Err(mismatch(self, ty)),
            },
            PgValue::Array(items) => match ty.kind() {
                Kind::Array(member) => encode_array(items, member, out)?,
                _ => return Err(mismatch(self, ty)),
            },
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        // The variant decides; `to_sql` reports a precise mismatch instead of the driver's
        // generic "cannot convert" message.
        true
    }

    to_sql_checked!();
}

fn put_int(v: i64, ty: &Type, out: &mut BytesMut) -> Option<()> {
    match *ty {
        Type::INT2 => out.put_i16(i16::try_from(v).ok()?),
        Type::INT4 => out.put_i32(i32::try_from(v).ok()?),
        Type::INT8 => out.put_i64(v),
        _ => return None,
    }
    Some(())
}

/// One-dimensional array, lower bound 1; an empty array has zero dimensions, as Postgres
/// itself writes it.
fn encode_array(items: &[PgValue], member: &Type, out: &mut BytesMut) -> Result<(), BoxError> {
    let len = i32::try_from(items.len())
        .map_err(|_| EncodeError(format!("array of {} elements is too long", items.len())))?;
    let has_nulls = items.iter().any(|v| matches!(v, PgValue::Null));
    out.put_i32(if items.is_empty() { 0 } else { 1 });
    out.put_i32(i32::from(has_nulls));
    out.put_u32(member.oid());
    if !items.is_empty() {
        out.put_i32(len);
        out.put_i32(1);
    }
    for item in items {
        if let PgValue::Array(_) = item {
            return Err(Box::new(EncodeError(
                "nested arrays cannot be written to a one-dimensional array column".into(),
            )));
        }
        let at = out.len();
        out.put_i32(0);
        match item.to_sql(member, out)? {
            IsNull::Yes => out[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes()),
            IsNull::No => {
                let n = i32::try_from(out.len() - at - 4)
                    .map_err(|_| EncodeError("array element larger than 2 GiB".into()))?;
                out[at..at + 4].copy_from_slice(&n.to_be_bytes());
            }
        }
    }
    Ok(())
}

/// Encodes decimal text (`-12.50`, `0.001`, `1e3`, `NaN`, `Infinity`) as Postgres binary
/// `numeric`: base-10000 digits aligned on the decimal point, a weight (position of the first
/// digit group, in groups, relative to the point) and the display scale (digits after the
/// point, trailing zeros included, so `12.50` reads back as `12.50`).
pub fn encode_numeric(text: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let bad = || EncodeError(format!("{text:?} is not a decimal number"));
    let special = match text {
        "NaN" => Some(NUMERIC_NAN),
        "Infinity" | "+Infinity" => Some(NUMERIC_PINF),
        "-Infinity" => Some(NUMERIC_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }

    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = unsigned[i + 1..].parse().map_err(|_| bad())?;
            (&unsigned[..i], e)
        }
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Box::new(bad()));
    }
    let too_big = || EncodeError(format!("{text:?} is outside the range of numeric"));
    if exponent.abs() > 200_000 {
        return Err(Box::new(too_big()));
    }
    let dscale = (frac_part.len() as i64 - exponent).max(0);
    let dscale = u16::try_from(dscale).map_err(|_| too_big())?;

    // All significant digits, and how many of them sit before the decimal point.
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let mut point = int_part.len() as i64 + exponent;
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    point -= lead as i64;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(NUMERIC_POS);
        out.put_u16(dscale);
        return Ok(());
    }

    // Left-pad so that the point falls on a group boundary, then right-pad to whole groups.
    let pad = (4 - point.rem_euclid(4)) % 4;
    let point = point + pad;
    let mut aligned = vec![0u8; pad as usize];
    aligned.extend_from_slice(&digits);
    while !aligned.len().is_multiple_of(4) {
        aligned.push(0);
    }
    let groups: Vec<i16> = aligned
        .chunks(4)
        .map(|c| (c[0] as i16) * 1000 + (c[1] as i16) * 100 + (c[2] as i16) * 10 + c[3] as i16)
        .collect();
    let ndigits = i16::try_from(groups.len()).map_err(|_| too_big())?;
    let weight = i16::try_from(point / 4 - 1).map_err(|_| too_big())?;

    out.put_i16(ndigits);
    out.put_i16(weight);
    out.put_u16(if negative { NUMERIC_NEG } else { NUMERIC_POS });
    out.put_u16(dscale);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (ndigits, weight, sign, dscale, digits)
    fn numeric(text: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut b = BytesMut::new();
        encode_numeric(text, &mut b).unwrap();
        let r = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
        let n = r(0);
        let digits = (0..n as usize).map(|k| r(8 + 2 * k)).collect();
        (n, r(2), r(4) as u16, r(6) as u16, digits)
    }

    #[test]
    fn numeric_layouts_match_postgres() {
        // Expected layouts are what Postgres' numeric_send produces for the same text.
        assert_eq!(numeric("0"), (0, 0, 0, 0, vec![]));
        assert_eq!(numeric("0.00"), (0, 0, 0, 2, vec![]));
        assert_eq!(numeric("-0"), (0, 0, 0, 0, vec![]));
        assert_eq!(numeric("1"), (1, 0, 0, 0, vec![1]));
        assert_eq!(numeric("10000"), (1, 1, 0, 0, vec![1]));
        assert_eq!(numeric("12345.6"), (3, 1, 0, 1, vec![1, 2345, 6000]));
        assert_eq!(numeric("-12.50"), (2, 0, 0x4000, 2, vec![12, 5000]));
        assert_eq!(numeric("0.001"), (1, -1, 0, 3, vec![10]));
        assert_eq!(numeric("0.00001"), (1, -2, 0, 5, vec![1000]));
        assert_eq!(numeric("1e3"), (1, 0, 0, 0, vec![1000]));
        assert_eq!(numeric("1.5E-2"), (1, -1, 0, 3, vec![150]));
        assert_eq!(numeric("00042.000"), (1, 0, 0, 3, vec![42]));
        assert_eq!(
            numeric("9999999999999999999999999999999999"),
            (
                9,
                8,
                0,
                0,
                vec![99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999]
            )
        );
        assert_eq!(numeric("NaN"), (0, 0, 0xC000, 0, vec![]));
        assert_eq!(numeric("-Infinity"), (0, 0, 0xF000, 0, vec![]));
    }

    #[test]
    fn numeric_rejects_garbage() {
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "abc",
            "1e",
            "1e99999999",
            "12a",
            " 1",
        ] {
            let mut b = BytesMut::new();
            assert!(encode_numeric(bad, &mut b).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mismatched_variant_is_refused_with_a_reason() {
        let mut b = BytesMut::new();
        let Err(err) = PgValue::Text("x".into()).to_sql(&Type::INT4, &mut b) else {
            panic!("text accepted for int4");
        };
        assert!(err.to_string().contains("int4"), "{err}");
        assert!(PgValue::Int8(1 << 40).to_sql(&Type::INT4, &mut b).is_err());
        assert!(PgValue::Int4(70_000).to_sql(&Type::INT2, &mut b).is_err());
    }
}
