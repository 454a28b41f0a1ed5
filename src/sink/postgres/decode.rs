//! Reading values back: `FromSql for PgValue`, the inverse of `encode`. Verification compares
//! what Postgres holds with what the mapping would write, and tests check round trips, both in
//! terms of `PgValue`.

use postgres_types::{FromSql, Kind, Type};

use crate::mapping::value::PgValue;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn short(ty: &Type) -> BoxError {
    Box::new(DecodeError(format!("truncated {} value", ty.name())))
}

fn take<const N: usize>(raw: &[u8], at: usize, ty: &Type) -> Result<[u8; N], BoxError> {
    raw.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| short(ty))
}

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<PgValue, BoxError> {
        Ok(match *ty {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                PgValue::Text(std::str::from_utf8(raw)?.to_owned())
            }
            Type::INT2 => PgValue::Int2(i16::from_be_bytes(take(raw, 0, ty)?)),
            Type::INT4 => PgValue::Int4(i32::from_be_bytes(take(raw, 0, ty)?)),
            Type::INT8 => PgValue::Int8(i64::from_be_bytes(take(raw, 0, ty)?)),
            Type::FLOAT4 => PgValue::Float4(f32::from_be_bytes(take(raw, 0, ty)?)),
            Type::FLOAT8 => PgValue::Float8(f64::from_be_bytes(take(raw, 0, ty)?)),
            Type::NUMERIC => PgValue::Numeric(decode_numeric(raw)?),
            Type::BOOL => PgValue::Bool(take::<1>(raw, 0, ty)?[0] != 0),
            Type::TIMESTAMPTZ => PgValue::Timestamptz(
                i64::from_be_bytes(take(raw, 0, ty)?).saturating_add(PG_EPOCH_MICROS),
            ),
            Type::TIMESTAMP => PgValue::Timestamp(
                i64::from_be_bytes(take(raw, 0, ty)?).saturating_add(PG_EPOCH_MICROS),
            ),
            Type::DATE => {
                PgValue::Date(i32::from_be_bytes(take(raw, 0, ty)?).saturating_add(PG_EPOCH_DAYS))
            }
            Type::UUID => PgValue::Uuid(take(raw, 0, ty)?),
            Type::BYTEA => PgValue::Bytea(raw.to_vec()),
            Type::JSON => PgValue::Json(serde_json::from_slice(raw)?),
            Type::JSONB => match raw.split_first() {
                Some((1, rest)) => PgValue::Json(serde_json::from_slice(rest)?),
                _ => return Err(Box::new(DecodeError("unsupported jsonb version".into()))),
            },
            _ => match ty.kind() {
                Kind::Array(member) => decode_array(raw, member, ty)?,
                _ => {
                    return Err(Box::new(DecodeError(format!(
                        "type {} is not one a mapping can use",
                        ty.name()
                    ))))
                }
            },
        })
    }

    fn from_sql_null(_ty: &Type) -> Result<PgValue, BoxError> {
        Ok(PgValue::Null)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn decode_array(raw: &[u8], member: &Type, ty: &Type) -> Result<PgValue, BoxError> {
    let ndim = i32::from_be_bytes(take(raw, 0, ty)?);
    if ndim == 0 {
        return Ok(PgValue::Array(Vec::new()));
    }
    if ndim != 1 {
        return Err(Box::new(DecodeError(format!(
            "{ndim}-dimensional arrays are not supported"
        ))));
    }
    let len = i32::from_be_bytes(take(raw, 12, ty)?).max(0) as usize;
    let mut at = 20;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let n = i32::from_be_bytes(take(raw, at, ty)?);
        at += 4;
        if n < 0 {
            out.push(PgValue::Null);
            continue;
        }
        let bytes = raw.get(at..at + n as usize).ok_or_else(|| short(ty))?;
        out.push(PgValue::from_sql(member, bytes)?);
        at += n as usize;
    }
    Ok(PgValue::Array(out))
}

/// Binary `numeric` to the text Postgres itself prints (`12.50`, `-0.001`, `NaN`).
pub fn decode_numeric(raw: &[u8]) -> Result<String, BoxError> {
    let ty = &Type::NUMERIC;
    let ndigits = i16::from_be_bytes(take(raw, 0, ty)?).max(0) as usize;
    let weight = i16::from_be_bytes(take(raw, 2, ty)?) as i64;
    let sign = u16::from_be_bytes(take(raw, 4, ty)?);
    let dscale = u16::from_be_bytes(take(raw, 6, ty)?) as i64;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut groups = Vec::with_capacity(ndigits);
    for k in 0..ndigits {
        let g = i16::from_be_bytes(take(raw, 8 + 2 * k, ty)?);
        if !(0..10_000).contains(&g) {
            return Err(Box::new(DecodeError(format!(
                "numeric digit {g} out of range"
            ))));
        }
        groups.push(g);
    }
    // Digit of group position p (p = weight for the first group; 0 is units, -1 first fraction).
    let group_at = |p: i64| -> i16 {
        let i = weight - p;
        if i >= 0 && (i as usize) < groups.len() {
            groups[i as usize]
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == 0x4000 && ndigits > 0 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for p in (0..=weight).rev() {
            let g = group_at(p);
            if p == weight {
                s.push_str(&g.to_string());
            } else {
                s.push_str(&format!("{g:04}"));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut p = -1;
        while (frac.len() as i64) < dscale {
            frac.push_str(&format!("{:04}", group_at(p)));
            p -= 1;
        }
        frac.truncate(dscale as usize);
        s.push_str(&frac);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn numeric_text_round_trips_through_binary() {
        for text in [
            "0",
            "0.00",
            "1",
            "-1",
            "10000",
            "12345.6",
            "-12.50",
            "0.001",
            "0.00001",
            "123456789.987654321",
            "9999999999999999999999999999999999",
            "-0.0000000000000000000000000000000001",
            "NaN",
            "Infinity",
            "100000000",
            "1.0000",
            "5000.0005",
        ] {
            let mut b = BytesMut::new();
            super::super::encode::encode_numeric(text, &mut b).unwrap();
            assert_eq!(decode_numeric(&b).unwrap(), text);
        }
    }
}
