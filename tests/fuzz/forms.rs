//! The oracle's own renderings of BSON values, written from docs/mappings.md ("Text form of a
//! scalar", "Plain JSON form") and the BSON Decimal128 spec, not from `src/mapping`: exact
//! decimals, Decimal128 decoding and its canonical string, calendar dates, and the plain JSON
//! form.

use base64::Engine as _;
use bson::spec::BinarySubtype;
use bson::{Bson, Decimal128, Document};
use serde_json::{json, Map, Value};

/// An exact decimal number: `(-1)^neg × digits × 10^exp`. `digits` has no leading zeros and is
/// empty for zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub neg: bool,
    pub digits: String,
    pub exp: i64,
}

impl Decimal {
    pub fn new(neg: bool, digits: &str, exp: i64) -> Decimal {
        let digits = digits.trim_start_matches('0').to_owned();
        Decimal { neg, digits, exp }
    }

    pub fn from_int(i: i128) -> Decimal {
        Decimal::new(i < 0, &i.unsigned_abs().to_string(), 0)
    }

    /// The shortest decimal that reads back as `f` (std's shortest round-trip digits).
    pub fn from_f64(f: f64) -> Option<Decimal> {
        if !f.is_finite() {
            return None;
        }
        Some(Decimal::from_sci(&format!("{f:e}")))
    }

    pub fn from_f32(f: f32) -> Option<Decimal> {
        if !f.is_finite() {
            return None;
        }
        Some(Decimal::from_sci(&format!("{f:e}")))
    }

    /// Parses `-1.25e-3` as std's `{:e}` writes it.
    fn from_sci(s: &str) -> Decimal {
        let (neg, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
        let exp: i64 = exp.parse().unwrap();
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        Decimal::new(neg, &format!("{int}{frac}"), exp - frac.len() as i64)
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The same value with trailing zeros of `digits` moved into `exp`.
    pub fn normalized(&self) -> Decimal {
        if self.is_zero() {
            return Decimal::new(false, "", 0);
        }
        let trimmed = self.digits.trim_end_matches('0');
        Decimal {
            neg: self.neg,
            digits: trimmed.to_owned(),
            exp: self.exp + (self.digits.len() - trimmed.len()) as i64,
        }
    }

    /// Same number (zero's sign ignored).
    pub fn same_value(&self, other: &Decimal) -> bool {
        let (a, b) = (self.normalized(), other.normalized());
        a.digits == b.digits && (a.is_zero() || (a.neg == b.neg && a.exp == b.exp))
    }

    /// Decimal places the value needs (trailing zeros dropped).
    pub fn needed_scale(&self) -> i64 {
        (-self.normalized().exp).max(0)
    }

    /// Digits before the decimal point (0 for |v| < 1).
    pub fn integer_digits(&self) -> i64 {
        let n = self.normalized();
        if n.is_zero() {
            0
        } else {
            (n.digits.len() as i64 + n.exp).max(0)
        }
    }

    pub fn to_i128(&self) -> Option<i128> {
        if self.needed_scale() > 0 {
            return None;
        }
        let n = self.normalized();
        if n.is_zero() {
            return Some(0);
        }
        if n.digits.len() as i64 + n.exp > 39 {
            return None;
        }
        let mut v: i128 = n.digits.parse().ok()?;
        for _ in 0..n.exp {
            v = v.checked_mul(10)?;
        }
        Some(if n.neg { -v } else { v })
    }

    /// Plain notation with exactly `scale` decimals (the value must need no more); no sign on
    /// zero, as Postgres numeric has no negative zero.
    pub fn plain(&self, scale: i64) -> String {
        assert!(self.needed_scale() <= scale, "{self:?} to scale {scale}");
        let n = self.normalized();
        // All digits of the value at `scale` decimals: digits × 10^(exp + scale).
        let shift = n.exp + scale;
        let mut all = n.digits.clone();
        if !n.is_zero() {
            all.push_str(&"0".repeat(shift as usize));
        }
        let width = scale as usize + 1;
        if all.len() < width {
            all = format!("{}{all}", "0".repeat(width - all.len()));
        }
        let (int, frac) = all.split_at(all.len() - scale as usize);
        let mut out = String::new();
        if n.neg && !n.is_zero() {
            out.push('-');
        }
        out.push_str(int);
        if scale > 0 {
            out.push('.');
            out.push_str(frac);
        }
        out
    }
}

/// A decoded Decimal128 (BSON spec, binary integer decimal encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dec128 {
    NaN,
    Infinity {
        neg: bool,
    },
    Finite {
        neg: bool,
        coefficient: u128,
        exp: i64,
    },
}

const DEC128_BIAS: i64 = 6176;
/// 10^34 - 1, the largest canonical coefficient.
pub const DEC128_MAX_COEFFICIENT: u128 = 10u128.pow(34) - 1;

pub fn decode_dec128(d: &Decimal128) -> Dec128 {
    let u = u128::from_le_bytes(d.bytes());
    let neg = u >> 127 == 1;
    let combination = (u >> 122) & 0x1f;
    if combination == 0x1f {
        return Dec128::NaN;
    }
    if combination == 0x1e {
        return Dec128::Infinity { neg };
    }
    let (exp, coefficient) = if (u >> 125) & 3 == 3 {
        // The second form: its coefficient is at least 2^113, above every canonical one.
        (((u >> 111) & 0x3fff) as i64, u128::MAX)
    } else {
        (((u >> 113) & 0x3fff) as i64, u & ((1u128 << 113) - 1))
    };
    let coefficient = if coefficient > DEC128_MAX_COEFFICIENT {
        0
    } else {
        coefficient
    };
    Dec128::Finite {
        neg,
        coefficient,
        exp: exp - DEC128_BIAS,
    }
}

/// A finite Decimal128 from its parts (`coefficient` ≤ 10^34 - 1, exp in -6176..=6111).
pub fn encode_dec128(neg: bool, coefficient: u128, exp: i64) -> Decimal128 {
    let biased = (exp + DEC128_BIAS) as u128;
    let u = (u128::from(neg) << 127) | (biased << 113) | coefficient;
    Decimal128::from_bytes(u.to_le_bytes())
}

pub fn dec128_special(nan: bool, neg: bool) -> Decimal128 {
    let combination: u128 = if nan { 0x1f } else { 0x1e };
    Decimal128::from_bytes(((u128::from(neg) << 127) | (combination << 122)).to_le_bytes())
}

impl Dec128 {
    pub fn decimal(&self) -> Option<Decimal> {
        match self {
            Dec128::Finite {
                neg,
                coefficient,
                exp,
            } => Some(Decimal::new(*neg, &coefficient.to_string(), *exp)),
            _ => None,
        }
    }

    /// The canonical string of the BSON Decimal128 spec (IEEE "to-scientific-string").
    pub fn text(&self) -> String {
        match self {
            Dec128::NaN => "NaN".to_owned(),
            Dec128::Infinity { neg } => if *neg { "-Infinity" } else { "Infinity" }.to_owned(),
            Dec128::Finite {
                neg,
                coefficient,
                exp,
            } => {
                let c = coefficient.to_string();
                let adjusted = exp + c.len() as i64 - 1;
                let body = if *exp <= 0 && adjusted >= -6 {
                    if *exp == 0 {
                        c
                    } else {
                        let point = c.len() as i64 + exp;
                        if point > 0 {
                            format!("{}.{}", &c[..point as usize], &c[point as usize..])
                        } else {
                            format!("0.{}{c}", "0".repeat((-point) as usize))
                        }
                    }
                } else {
                    let mut s = c[..1].to_owned();
                    if c.len() > 1 {
                        s.push('.');
                        s.push_str(&c[1..]);
                    }
                    let sign = if adjusted >= 0 { '+' } else { '-' };
                    format!("{s}E{sign}{}", adjusted.abs())
                };
                if *neg {
                    format!("-{body}")
                } else {
                    body
                }
            }
        }
    }
}

pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Years the ISO-8601 form covers: chrono's range, which the docs call "±262,000 years".
const ISO_YEARS: std::ops::RangeInclusive<i64> = -262_143..=262_142;

/// `2024-01-02T03:04:05.678Z`, years beyond 9999 as `+10000`, before year 0 as `-0001`;
/// `None` outside the ISO range.
pub fn iso_date(millis: i64) -> Option<String> {
    let days = millis.div_euclid(MILLIS_PER_DAY);
    let ms = millis.rem_euclid(MILLIS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    if !ISO_YEARS.contains(&y) {
        return None;
    }
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else if y < 0 {
        format!("-{:04}", -y)
    } else {
        format!("+{y}")
    };
    Some(format!(
        "{year}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    ))
}

/// The canonical text of a UUID.
pub fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Largest integer every JSON reader holds exactly: 2^53.
const SAFE_INTEGER: i64 = 1 << 53;

/// The plain JSON form (docs/mappings.md table).
pub fn json_form(v: &Bson) -> Value {
    match v {
        Bson::Double(d) if d.is_nan() => json!("NaN"),
        Bson::Double(d) if d.is_infinite() => {
            json!(if *d > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Bson::Double(d) => Value::Number(serde_json::Number::from_f64(*d).unwrap()),
        Bson::Int32(i) => json!(i),
        Bson::Int64(i) if (-SAFE_INTEGER..=SAFE_INTEGER).contains(i) => json!(i),
        Bson::Int64(i) => json!(i.to_string()),
        Bson::Decimal128(d) => json!(decode_dec128(d).text()),
        Bson::String(s) | Bson::Symbol(s) => json!(s),
        Bson::Boolean(b) => json!(b),
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::ObjectId(oid) => json!(oid.to_hex()),
        Bson::DateTime(d) => {
            let ms = d.timestamp_millis();
            json!(iso_date(ms).unwrap_or_else(|| ms.to_string()))
        }
        Bson::Binary(b) if b.subtype == BinarySubtype::Uuid && b.bytes.len() == 16 => {
            json!(uuid_text(&b.bytes))
        }
        Bson::Binary(b) => json!(base64::engine::general_purpose::STANDARD.encode(&b.bytes)),
        Bson::Timestamp(t) => json!({"t": t.time, "i": t.increment}),
        Bson::RegularExpression(r) => json!({"$regex": r.pattern, "$options": r.options}),
        Bson::JavaScriptCode(code) => json!({ "$code": code }),
        Bson::JavaScriptCodeWithScope(c) => {
            json!({"$code": c.code, "$scope": document_json(&c.scope)})
        }
        Bson::MinKey => json!({"$minKey": 1}),
        Bson::MaxKey => json!({"$maxKey": 1}),
        Bson::DbPointer(_) => v.clone().into_relaxed_extjson(),
        Bson::Document(d) => document_json(d),
        Bson::Array(items) => Value::Array(items.iter().map(json_form).collect()),
    }
}

pub fn document_json(d: &Document) -> Value {
    Value::Object(
        d.iter()
            .map(|(k, v)| (k.clone(), json_form(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// True when a string or key anywhere in `v` holds U+0000.
pub fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// The JSON number text of a finite double (what serde_json writes): shortest round-trip
/// digits, plain when the leading digit's exponent is in -5..=15 (`5.0`, `0.001`,
/// `1234.5`), else `1e+300`, `1.5e-7`; `-0.0`. (docs/mappings.md shows `1e300`: serde_json
/// wrote that before 1.0.140.)
pub fn double_text(f: f64) -> String {
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    let d = Decimal::from_f64(f.abs()).unwrap();
    let (digits, len) = (&d.digits, d.digits.len() as i64);
    let kk = len + d.exp; // 10^(kk-1) <= |f| < 10^kk
    let e = kk - 1;
    let body = if (-5..=15).contains(&e) {
        if d.exp >= 0 {
            format!("{digits}{}.0", "0".repeat(d.exp as usize))
        } else if kk > 0 {
            format!("{}.{}", &digits[..kk as usize], &digits[kk as usize..])
        } else {
            format!("0.{}{digits}", "0".repeat((-kk) as usize))
        }
    } else {
        let mantissa = if len == 1 {
            digits.clone()
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        format!("{mantissa}e{}{}", if e >= 0 { "+" } else { "-" }, e.abs())
    };
    format!("{sign}{body}")
}

/// The text form of a scalar for text columns (docs "Text form of a scalar"): the plain JSON
/// form, unquoted when it is a string.
pub fn text_form(v: &Bson) -> Result<String, String> {
    Ok(match v {
        Bson::Document(_) | Bson::Array(_) => return Err("not a scalar".into()),
        Bson::String(s) | Bson::Symbol(s) => s.clone(),
        Bson::Double(d) if d.is_finite() => double_text(*d),
        Bson::DateTime(d) => iso_date(d.timestamp_millis())
            .ok_or_else(|| "a Date outside the ISO-8601 range has no text form".to_owned())?,
        _ => match json_form(v) {
            Value::String(s) => s,
            other => other.to_string(),
        },
    })
}

/// The canonical form of a UUID string (8-4-4-4-12 hex digits, either case).
pub fn canonical_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut hex = Vec::with_capacity(32);
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
        } else {
            hex.push((c as char).to_digit(16)? as u8);
        }
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = pair[0] * 16 + pair[1];
    }
    Some(out)
}

/// The exact decimal expansion of a double's binary value.
pub fn exact_binary_decimal(d: f64) -> Decimal {
    if d == 0.0 {
        return Decimal::new(false, "", 0);
    }
    let bits = d.to_bits();
    let neg = bits >> 63 == 1;
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let frac = bits & ((1u64 << 52) - 1);
    let (mantissa, e2) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), exp - 1075)
    };
    // mantissa × 2^e2 = mantissa × 5^-e2 × 10^e2 for negative e2.
    if e2 >= 0 {
        let mut digits = vec![mantissa as u32, (mantissa >> 32) as u32];
        for _ in 0..e2 {
            mul_small(&mut digits, 2);
        }
        return Decimal::new(neg, &big_to_string(&digits), 0);
    }
    let mut digits = vec![mantissa as u32, (mantissa >> 32) as u32];
    for _ in 0..-e2 {
        mul_small(&mut digits, 5);
    }
    Decimal::new(neg, &big_to_string(&digits), e2)
}

/// Little-endian base-2^32 big integer helpers for `exact_binary_decimal`.
fn mul_small(n: &mut Vec<u32>, m: u32) {
    let mut carry = 0u64;
    for limb in n.iter_mut() {
        let v = u64::from(*limb) * u64::from(m) + carry;
        *limb = v as u32;
        carry = v >> 32;
    }
    if carry > 0 {
        n.push(carry as u32);
    }
}

fn big_to_string(n: &[u32]) -> String {
    let mut n: Vec<u32> = n.to_vec();
    let mut out = Vec::new();
    while n.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for limb in n.iter_mut().rev() {
            let v = (rem << 32) | u64::from(*limb);
            *limb = (v / 1_000_000_000) as u32;
            rem = v % 1_000_000_000;
        }
        out.push(rem as u32);
    }
    let mut s = String::new();
    for (i, chunk) in out.iter().rev().enumerate() {
        if i == 0 {
            s.push_str(&chunk.to_string());
        } else {
            s.push_str(&format!("{chunk:09}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal128_text_follows_the_spec_examples() {
        let cases = [
            ("1", 0, "1"),
            ("1", 3, "1E+3"),
            ("105", 1, "1.05E+3"),
            ("1250", -2, "12.50"),
            ("0", 0, "0"),
            ("0", -3, "0.000"),
            ("1", -7, "1E-7"),
            ("1", -6, "0.000001"),
            ("123", -9, "1.23E-7"),
            ("0", 5, "0E+5"),
        ];
        for (c, e, want) in cases {
            let d = decode_dec128(&encode_dec128(false, c.parse().unwrap(), e));
            assert_eq!(d.text(), want, "{c}E{e}");
            let parsed: Decimal128 = want.parse().unwrap();
            assert_eq!(decode_dec128(&parsed).text(), want);
        }
        assert_eq!(decode_dec128(&dec128_special(true, true)).text(), "NaN");
        assert_eq!(
            decode_dec128(&dec128_special(false, true)).text(),
            "-Infinity"
        );
    }

    #[test]
    fn dates_render_across_the_range() {
        assert_eq!(iso_date(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_date(-1).unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            iso_date(253_402_300_800_000).unwrap(),
            "+10000-01-01T00:00:00.000Z"
        );
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            civil_from_days(days_from_civil(-4713, 11, 24)),
            (-4713, 11, 24)
        );
        assert!(iso_date(i64::MAX).is_none());
    }

    #[test]
    fn decimals_print_plainly() {
        assert_eq!(Decimal::new(false, "1250", -2).plain(2), "12.50");
        assert_eq!(Decimal::new(false, "105", 1).plain(0), "1050");
        assert_eq!(Decimal::new(true, "", 0).plain(2), "0.00");
        assert_eq!(Decimal::new(true, "5", -1).plain(3), "-0.500");
        assert_eq!(Decimal::from_f64(0.1).unwrap().plain(1), "0.1");
        assert_eq!(Decimal::from_f64(1e3).unwrap().plain(0), "1000");
        assert_eq!(Decimal::from_f64(1.5e-7).unwrap().needed_scale(), 8);
    }

    #[test]
    fn double_text_is_the_json_number_text() {
        for f in [
            5.0,
            0.1,
            1e300,
            -0.0,
            0.0,
            1.5e-7,
            1e16,
            1e15,
            123.456,
            1e-5,
            1e-4,
            5e-324,
            f64::MAX,
            -1.2345e20,
            9007199254740993.0,
        ] {
            assert_eq!(double_text(f), serde_json::to_string(&f).unwrap(), "{f:e}");
        }
    }
}
