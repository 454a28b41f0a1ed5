//! BSON → plain JSON, as stored in `extra_props`, `json`/`jsonb` columns and dead letters
//! (SPEC "JSON encoding of BSON"). Plain, not MongoDB Extended JSON: what a SQL user wants to
//! query with `->>`, at the price of not recording every BSON type.
//!
//! | BSON | JSON |
//! |---|---|
//! | Double | number; NaN, Infinity, -Infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | Int32 | number |
//! | Int64 | number when within ±2^53 (exact in every JSON reader), else a decimal string |
//! | Decimal128 | string, its canonical text (`"12.50"`, `"1.05E+3"`, `"NaN"`) |
//! | String, Symbol | string |
//! | Boolean, Null | as is; Undefined → null |
//! | ObjectId | 24-char lower-case hex string |
//! | Date | `"2024-01-02T03:04:05.678Z"` (UTC, milliseconds); outside chrono's range (±262,000 years) the millisecond count as a string |
//! | Binary subtype 4 (16 bytes) | canonical UUID string `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"` |
//! | other Binary | standard base64 string (with padding) |
//! | Timestamp | `{"t": seconds, "i": increment}` |
//! | Regex | `{"$regex": pattern, "$options": options}` |
//! | JavaScript | `{"$code": code}`; with scope `{"$code": code, "$scope": {...}}` |
//! | MinKey, MaxKey | `{"$minKey": 1}`, `{"$maxKey": 1}` |
//! | DBPointer | its relaxed Extended JSON |
//! | Document, Array | object (field order kept), array |

use base64::Engine as _;
use bson::spec::BinarySubtype;
use bson::{Bson, Document};
use serde_json::{json, Map, Value};

use super::value::PgValue;

/// Largest integer magnitude every JSON reader (IEEE doubles) holds exactly: 2^53.
const MAX_SAFE_INTEGER: i64 = 1 << 53;

/// The plain JSON form of a BSON value (see the module table).
pub fn to_json(v: &Bson) -> Value {
    match v {
        Bson::Double(d) => double(*d),
        Bson::String(s) | Bson::Symbol(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Bson::Document(d) => document_to_json(d),
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::RegularExpression(r) => json!({"$regex": r.pattern, "$options": r.options}),
        Bson::JavaScriptCode(code) => json!({ "$code": code }),
        Bson::JavaScriptCodeWithScope(c) => {
            json!({"$code": c.code, "$scope": document_to_json(&c.scope)})
        }
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => int64(*i),
        Bson::Timestamp(ts) => json!({"t": ts.time, "i": ts.increment}),
        Bson::Binary(b) => match uuid_bytes(b.subtype, &b.bytes) {
            Some(u) => Value::String(uuid::Uuid::from_bytes(u).to_string()),
            None => Value::String(base64::engine::general_purpose::STANDARD.encode(&b.bytes)),
        },
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(dt) => Value::String(date_text(dt.timestamp_millis())),
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::MaxKey => json!({"$maxKey": 1}),
        Bson::MinKey => json!({"$minKey": 1}),
        Bson::DbPointer(_) => v.clone().into_relaxed_extjson(),
    }
}

/// A document as a JSON object, field order kept.
/// True when a string or key of `v` holds U+0000, which Postgres `json`/`jsonb` refuse.
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `v` with every U+0000 written as the six characters `\u0000`, which Postgres stores. Not
/// reversible on its own (a string may hold those six characters already): dead letters keep
/// the BSON beside it.
pub fn escape_nul(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\\u0000")),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\\u0000"), escape_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

pub fn document_to_json(d: &Document) -> Value {
    Value::Object(
        d.iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

fn double(d: f64) -> Value {
    if d.is_nan() {
        Value::String("NaN".to_owned())
    } else if d.is_infinite() {
        Value::String(if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned())
    } else {
        serde_json::Number::from_f64(d)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn int64(i: i64) -> Value {
    if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) {
        Value::from(i)
    } else {
        Value::String(i.to_string())
    }
}

/// The 16 bytes of a subtype-4 UUID binary.
pub(crate) fn uuid_bytes(subtype: BinarySubtype, bytes: &[u8]) -> Option<[u8; 16]> {
    if subtype == BinarySubtype::Uuid {
        bytes.try_into().ok()
    } else {
        None
    }
}

/// ISO-8601 UTC with milliseconds, e.g. `2024-01-02T03:04:05.678Z`.
pub(crate) fn date_text(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => millis.to_string(),
    }
}

/// A value in the plain-JSON encoding of SPEC "Mapping files", for reports: numbers as numbers
/// (exact decimals and non-finite floats as strings), instants as ISO-8601 UTC text, bytes as
/// base64, UUIDs canonical.
pub fn value_json(v: &PgValue) -> Value {
    match v {
        PgValue::Null => Value::Null,
        PgValue::Text(s) => Value::String(s.clone()),
        PgValue::Int2(i) => Value::from(*i),
        PgValue::Int4(i) => Value::from(*i),
        PgValue::Int8(i) => Value::from(*i),
        PgValue::Float4(f) => float_json(f64::from(*f)),
        PgValue::Float8(f) => float_json(*f),
        PgValue::Numeric(s) => Value::String(s.clone()),
        PgValue::Bool(b) => Value::Bool(*b),
        PgValue::Timestamptz(us) | PgValue::Timestamp(us) => Value::String(instant_text(*us)),
        PgValue::Date(days) => Value::String(
            chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| days.to_string()),
        ),
        PgValue::Uuid(b) => Value::String(uuid::Uuid::from_bytes(*b).to_string()),
        PgValue::Bytea(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PgValue::Json(j) => j.clone(),
        PgValue::Array(items) => Value::Array(items.iter().map(value_json).collect()),
    }
}

fn float_json(f: f64) -> Value {
    if f.is_nan() {
        Value::String("NaN".to_owned())
    } else if f.is_infinite() {
        Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned())
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Milliseconds as BSON dates are written; microseconds only when Postgres holds finer ones.
fn instant_text(us: i64) -> String {
    if us.rem_euclid(1000) == 0 {
        return date_text(us.div_euclid(1000));
    }
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;
    use bson::{doc, Binary, DateTime, Decimal128, Regex, Timestamp};

    #[test]
    fn every_bson_type_has_a_plain_form() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let uuid = Binary {
            subtype: BinarySubtype::Uuid,
            bytes: (0u8..16).collect(),
        };
        let bin = Binary {
            subtype: BinarySubtype::Generic,
            bytes: b"hi!".to_vec(),
        };
        let d = doc! {
            "oid": oid,
            "date": DateTime::from_millis(1_704_164_645_678),
            "dec": "12.50".parse::<Decimal128>().unwrap(),
            "small": 9_007_199_254_740_992_i64,
            "big": 9_007_199_254_740_993_i64,
            "neg": -9_007_199_254_740_993_i64,
            "i": 5,
            "f": 1.5,
            "nan": f64::NAN,
            "inf": f64::INFINITY,
            "ninf": f64::NEG_INFINITY,
            "uuid": uuid,
            "bin": bin,
            "ts": Timestamp { time: 7, increment: 3 },
            "re": Regex { pattern: "^a".into(), options: "i".into() },
            "js": Bson::JavaScriptCode("x()".into()),
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "u": Bson::Undefined,
            "n": Bson::Null,
            "arr": [1, "a", { "z": true }],
        };
        let want = json!({
            "oid": "65a1b2c3d4e5f60718293a4b",
            "date": "2024-01-02T03:04:05.678Z",
            "dec": "12.50",
            "small": 9_007_199_254_740_992_i64,
            "big": "9007199254740993",
            "neg": "-9007199254740993",
            "i": 5,
            "f": 1.5,
            "nan": "NaN",
            "inf": "Infinity",
            "ninf": "-Infinity",
            "uuid": "00010203-0405-0607-0809-0a0b0c0d0e0f",
            "bin": "aGkh",
            "ts": {"t": 7, "i": 3},
            "re": {"$regex": "^a", "$options": "i"},
            "js": {"$code": "x()"},
            "min": {"$minKey": 1},
            "max": {"$maxKey": 1},
            "u": null,
            "n": null,
            "arr": [1, "a", {"z": true}],
        });
        assert_eq!(document_to_json(&d), want);
    }

    #[test]
    fn field_order_is_kept() {
        let d = doc! { "z": 1, "a": 2, "m": 3 };
        let text = serde_json::to_string(&document_to_json(&d)).unwrap();
        assert_eq!(text, r#"{"z":1,"a":2,"m":3}"#);
    }

    #[test]
    fn dates_before_1970_and_far_away_render() {
        assert_eq!(date_text(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(date_text(i64::MAX), i64::MAX.to_string());
        assert_eq!(date_text(253_402_300_800_000), "+10000-01-01T00:00:00.000Z");
    }
}
