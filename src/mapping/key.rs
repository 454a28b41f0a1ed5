//! The `_id` → primary key rules: which `_id` types a key column accepts, and the key each one
//! gets, so that two documents never share a row (SPEC "Two documents never share a row";
//! docs/mappings.md "Keys").
//!
//! MongoDB compares `_id`s by type and value, with every numeric type one key space: `1`,
//! `Int64(1)` and `1.0` are one document, `1` and `"1"` are two. A key column flattens types
//! (an ObjectId and the String of its hex digits are the same `text`), so each key column
//! accepts only `_id` types whose keys no other accepted type can produce, and refuses the
//! rest (they become dead letters). No state is needed to tell: the rule looks at one `_id`.

use bson::spec::BinarySubtype;
use bson::Bson;

use super::convert::convert_value;
use super::decimal::Dec;
use super::model::{CollectionMapping, IdType, PgType};
use super::value::PgValue;

/// The `id_type`s a key column of type `ty` may name (validation).
pub fn allowed_id_types(ty: &PgType) -> &'static [IdType] {
    use IdType::*;
    match ty {
        PgType::Text | PgType::Varchar(_) => &[Auto, String, ObjectId, Number],
        PgType::SmallInt
        | PgType::Integer
        | PgType::BigInt
        | PgType::Numeric(_)
        | PgType::Real
        | PgType::DoublePrecision => &[Auto, Number],
        PgType::Uuid => &[Auto, String],
        PgType::Bytea => &[Auto, ObjectId, Binary],
        _ => &[Auto],
    }
}

/// What a key column of type `ty` accepts under `id_type`, for messages and `check`.
pub fn accepted(ty: &PgType, id_type: IdType) -> &'static str {
    match (ty, id_type) {
        (PgType::Text | PgType::Varchar(_), IdType::Auto) => {
            "ObjectId and String _ids (a String of 24 hex digits excepted: it has the key of the ObjectId of those digits)"
        }
        (PgType::Uuid, IdType::String) => "lower-case canonical UUID String _ids",
        (_, IdType::String) => "String _ids",
        (_, IdType::ObjectId) => "ObjectId _ids",
        (_, IdType::Binary) => "Binary _ids of subtype 0",
        (PgType::Uuid, _) => "Binary subtype 4 (UUID) _ids",
        (PgType::Bytea, _) => "ObjectId _ids",
        (PgType::Jsonb, _) => {
            "String, number and Boolean _ids, and documents of those with fields in ascending order"
        }
        (
            PgType::SmallInt
            | PgType::Integer
            | PgType::BigInt
            | PgType::Numeric(_)
            | PgType::Real
            | PgType::DoublePrecision,
            _,
        )
        | (_, IdType::Number) => "numeric _ids",
        (PgType::Boolean, _) => "Boolean _ids",
        _ => "Date _ids",
    }
}

/// `tributary check`'s warning for a key column whose SQL type lets `_id`s of different types
/// have one key: what Tributary refuses there to keep them apart, and how to say otherwise.
/// `None` when the mapping's `id_type` already says which `_id`s the collection holds.
pub fn collision_warning(m: &CollectionMapping) -> Option<String> {
    let column = m.key_column();
    let collide = match &column.pg_type {
        PgType::Text | PgType::Varchar(_) => {
            "an ObjectId and the String of its hex digits, or a number and the String of its digits"
        }
        PgType::Uuid => "a Binary UUID and its canonical String",
        PgType::Bytea => "an ObjectId and a 12-byte Binary",
        PgType::Jsonb => "an ObjectId or Date and a String, or documents with reordered fields",
        _ => return None,
    };
    (m.id_type == IdType::Auto).then(|| {
        format!(
            "{}: key column `{}` ({}) would give {collide} one row; so it accepts only {}, and other _ids become dead letters. Set `id_type:` ({}) if this collection's _ids are of another type",
            m.namespace(),
            column.name,
            column.pg_type,
            accepted(&column.pg_type, IdType::Auto),
            allowed_id_types(&column.pg_type)
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The primary key of a document whose `_id` is `id`, or why this key column refuses it.
pub fn key_of(m: &CollectionMapping, id: &Bson) -> Result<PgValue, String> {
    let ty = &m.key_column().pg_type;
    let refuse = || {
        format!(
            "{} _id does not fit key column `{}` ({ty}), which accepts {} (id_type: {}); \
             map _id to a column of its own type or set `id_type` (docs/mappings.md \"Keys\")",
            kind(id),
            m.key_column().name,
            accepted(ty, m.id_type),
            m.id_type.as_str()
        )
    };
    if matches!(id, Bson::Null | Bson::Undefined) {
        return Err("the _id is null; a primary key cannot be NULL".to_owned());
    }
    match (ty, m.id_type) {
        (PgType::Text | PgType::Varchar(_), IdType::Auto) => match id {
            Bson::String(s) if is_object_id_hex(s) => Err(format!(
                "the String _id \"{s}\" has the same key as ObjectId(\"{s}\"), so the two \
                 documents would share a row; set `id_type: string` on the mapping if this \
                 collection's _ids are strings (docs/mappings.md \"Keys\")"
            )),
            Bson::String(_) | Bson::ObjectId(_) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Text | PgType::Varchar(_), IdType::String) => match id {
            Bson::String(_) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Uuid, IdType::String) => match id {
            // A uuid forgets the case of its digits; only the lower-case spelling is accepted,
            // so the upper-case String (another _id) cannot share its row.
            Bson::String(s) if s.bytes().any(|b| b.is_ascii_uppercase()) => Err(format!(
                "the String _id \"{s}\" has the same uuid key as \"{}\", another _id; only \
                 lower-case UUID Strings are accepted as uuid keys",
                s.to_ascii_lowercase()
            )),
            Bson::String(_) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Text | PgType::Varchar(_) | PgType::Bytea, IdType::ObjectId) => match id {
            Bson::ObjectId(_) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Text | PgType::Varchar(_), IdType::Number) => {
            let text = number_key_text(id).ok_or_else(refuse)?;
            convert_value(&Bson::String(text), ty)
        }
        (PgType::Uuid, _) => match id {
            Bson::Binary(b) if b.subtype == BinarySubtype::Uuid => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Bytea, IdType::Binary) => match id {
            Bson::Binary(b) if b.subtype == BinarySubtype::Generic => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Bytea, _) => match id {
            Bson::ObjectId(_) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Numeric(_), _) => match id {
            // The shortest text of 0.1 (or of 1e23) would be Decimal128("0.1")'s (or
            // Decimal128("1E+23")'s) key too; the exact value is not (MongoDB tells them apart).
            Bson::Double(d) if d.is_finite() => numeric_of_exact(*d, ty),
            _ if is_number(id) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Real | PgType::DoublePrecision, _) => match id {
            Bson::Decimal128(d) => {
                let value = convert_value(id, ty)?;
                let exact = match value {
                    PgValue::Float8(f) => exact_double(f),
                    PgValue::Float4(f) => exact_double(f64::from(f)),
                    _ => return Ok(value),
                };
                let same = match (Dec::parse(&d.to_string()), Dec::parse(&exact)) {
                    (Some(a), Some(b)) => a.same_value(&b),
                    // NaN and infinities: one key each, as in MongoDB.
                    _ => true,
                };
                if same {
                    Ok(value)
                } else {
                    Err(format!(
                        "Decimal128 {d} _id is not exactly a {ty} value; its key would be the \
                         key of the Double {exact}, a different _id in MongoDB"
                    ))
                }
            }
            _ if is_number(id) => convert_value(id, ty),
            _ => Err(refuse()),
        },
        (PgType::Jsonb, _) => {
            if json_key_is_injective(id, true) {
                convert_value(id, ty)
            } else {
                Err(refuse())
            }
        }
        // One BSON type converts to each of these at all, and distinct values stay distinct.
        _ => convert_value(id, ty),
    }
}

/// `numeric` of a non-integral double: its exact binary value, which fits an unconstrained
/// numeric and is refused by a `numeric(p,s)` too narrow for it.
fn numeric_of_exact(d: f64, ty: &PgType) -> Result<PgValue, String> {
    let exact = exact_double(d);
    let PgType::Numeric(spec) = ty else {
        return Err(format!("{ty} is not numeric"));
    };
    let dec = Dec::parse(&exact).ok_or_else(|| format!("Double {d} has no decimal form"))?;
    match spec {
        None => Ok(PgValue::Numeric(dec.to_plain(dec.needed_scale()))),
        Some((p, s)) => {
            let s = i64::from(s.unwrap_or(0));
            if dec.needed_scale() > s || dec.integer_digits() > i64::from(*p) - s {
                Err(format!(
                    "Double {d} _id is exactly {exact}, which {ty} cannot hold; a rounded key \
                     would be the key of another _id (use unconstrained numeric or double \
                     precision)"
                ))
            } else {
                Ok(PgValue::Numeric(dec.to_plain(s)))
            }
        }
    }
}

fn is_number(v: &Bson) -> bool {
    matches!(
        v,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
    )
}

/// The key text of a numeric `_id` under `id_type: number`: the number's exact value, so
/// that `2`, `Int64(2)`, `2.0` and `Decimal128("2.00")` share it and nothing else does.
pub fn number_key_text(v: &Bson) -> Option<String> {
    let text = match v {
        Bson::Int32(i) => return Some(i.to_string()),
        Bson::Int64(i) => return Some(i.to_string()),
        Bson::Double(d) if d.is_nan() => return Some("NaN".to_owned()),
        Bson::Double(d) if d.is_infinite() => {
            return Some(if *d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned())
        }
        Bson::Double(d) => exact_double(*d),
        Bson::Decimal128(d) => {
            let t = d.to_string();
            match t.as_str() {
                "NaN" | "-NaN" => return Some("NaN".to_owned()),
                "Infinity" | "-Infinity" => return Some(t),
                _ => t,
            }
        }
        _ => return None,
    };
    let dec = Dec::parse(&text)?;
    if dec.is_zero() {
        return Some("0".to_owned());
    }
    Some(dec.to_plain(dec.needed_scale().max(0)))
}

/// The exact decimal value of a finite double (every double is a finite binary fraction, at
/// most 1074 digits after the point), without trailing zeros.
pub fn exact_double(d: f64) -> String {
    let mut s = format!("{d:.1074}");
    if s.contains('.') {
        let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(trimmed);
    }
    if s == "-0" {
        s = "0".to_owned();
    }
    s
}

/// 24 lowercase hex digits: the text key of an ObjectId.
fn is_object_id_hex(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True when the plain JSON of `v` (as a jsonb key) is the JSON of no other `_id`: strings,
/// booleans, numbers that stay JSON numbers, and documents and arrays of those whose fields
/// are in strictly ascending order (jsonb sorts fields and keeps the last of duplicates).
fn json_key_is_injective(v: &Bson, top: bool) -> bool {
    match v {
        Bson::String(_) | Bson::Boolean(_) | Bson::Int32(_) => true,
        Bson::Null => !top,
        Bson::Int64(i) => i.unsigned_abs() <= 1 << 53,
        Bson::Double(d) => d.is_finite(),
        Bson::Array(items) => !top && items.iter().all(|i| json_key_is_injective(i, false)),
        Bson::Document(d) => {
            let keys: Vec<&String> = d.keys().collect();
            keys.windows(2).all(|w| jsonb_key_order(w[0], w[1]))
                && d.values().all(|v| json_key_is_injective(v, false))
        }
        _ => false,
    }
}

/// jsonb's object key order: shorter keys first, then bytewise.
fn jsonb_key_order(a: &str, b: &str) -> bool {
    (a.len(), a.as_bytes()) < (b.len(), b.as_bytes())
}

fn kind(v: &Bson) -> &'static str {
    match v {
        Bson::String(_) => "a String",
        Bson::ObjectId(_) => "an ObjectId",
        Bson::Int32(_) => "an Int32",
        Bson::Int64(_) => "an Int64",
        Bson::Double(_) => "a Double",
        Bson::Decimal128(_) => "a Decimal128",
        Bson::Document(_) => "a document",
        Bson::Array(_) => "an array",
        Bson::Binary(_) => "a Binary",
        Bson::DateTime(_) => "a Date",
        Bson::Boolean(_) => "a Boolean",
        Bson::Timestamp(_) => "a Timestamp",
        Bson::RegularExpression(_) => "a Regex",
        _ => "this type of",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;
    use std::str::FromStr;

    fn mapping(ty: PgType, id_type: IdType) -> CollectionMapping {
        CollectionMapping {
            database: "d".into(),
            collection: "c".into(),
            table: "c".into(),
            columns: vec![super::super::model::ColumnMapping {
                name: "id".into(),
                source: super::super::model::FieldPath::parse("_id"),
                pg_type: ty,
            }],
            extra_props: None,
            on_error: Default::default(),
            on_nul: Default::default(),
            id_type,
            children: vec![],
        }
    }

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(bson::Decimal128::from_str(s).unwrap())
    }

    #[test]
    fn text_auto_keeps_object_ids_and_strings_apart() {
        let m = mapping(PgType::Text, IdType::Auto);
        let oid = ObjectId::parse_str("5f1d7c0e9b3a4b6c8d2e0f11").unwrap();
        assert_eq!(
            key_of(&m, &Bson::ObjectId(oid)),
            Ok(PgValue::Text(oid.to_hex()))
        );
        let err = key_of(&m, &Bson::String(oid.to_hex())).unwrap_err();
        assert!(
            err.contains("ObjectId(\"5f1d7c0e9b3a4b6c8d2e0f11\")"),
            "{err}"
        );
        assert_eq!(
            key_of(&m, &Bson::String("1".into())),
            Ok(PgValue::Text("1".into()))
        );
        assert!(key_of(&m, &Bson::Int32(1)).is_err());
        // Upper-case hex is no ObjectId's key.
        assert!(key_of(&m, &Bson::String("5F1D7C0E9B3A4B6C8D2E0F11".into())).is_ok());
    }

    #[test]
    fn numbers_of_one_value_share_one_key_and_nothing_else_does() {
        let m = mapping(PgType::Text, IdType::Number);
        let two = [
            Bson::Int32(2),
            Bson::Int64(2),
            Bson::Double(2.0),
            dec("2.00"),
            dec("2E0"),
        ];
        for v in &two {
            assert_eq!(key_of(&m, v), Ok(PgValue::Text("2".into())), "{v:?}");
        }
        assert_eq!(key_of(&m, &Bson::Double(1.5)), key_of(&m, &dec("1.50")));
        assert_ne!(key_of(&m, &Bson::Double(0.1)), key_of(&m, &dec("0.1")));
        assert_eq!(key_of(&m, &Bson::Double(-0.0)), key_of(&m, &Bson::Int32(0)));
        assert!(key_of(&m, &Bson::String("2".into())).is_err());
    }

    #[test]
    fn numeric_keys_tell_a_double_from_a_decimal_of_its_shortest_text() {
        let m = mapping(PgType::Numeric(None), IdType::Auto);
        assert_ne!(key_of(&m, &Bson::Double(0.1)), key_of(&m, &dec("0.1")));
        assert_eq!(key_of(&m, &Bson::Double(0.5)), key_of(&m, &dec("0.5")));
        assert_eq!(
            key_of(&m, &Bson::Double(2.0)),
            Ok(PgValue::Numeric("2".into()))
        );
        assert_ne!(key_of(&m, &Bson::Double(1e23)), key_of(&m, &dec("1E+23")));
        assert_eq!(
            key_of(&m, &Bson::Double(1e23)),
            key_of(&m, &dec("99999999999999991611392"))
        );
        let narrow = mapping(PgType::Numeric(Some((10, Some(2)))), IdType::Auto);
        assert!(key_of(&narrow, &Bson::Double(0.1)).is_err());
        assert_eq!(
            key_of(&narrow, &Bson::Double(0.25)),
            Ok(PgValue::Numeric("0.25".into()))
        );
        let double = mapping(PgType::DoublePrecision, IdType::Auto);
        assert!(key_of(&double, &dec("0.1")).is_err());
        assert_eq!(key_of(&double, &dec("0.5")), Ok(PgValue::Float8(0.5)));
    }

    #[test]
    fn jsonb_keys_refuse_what_would_render_like_another_id() {
        let m = mapping(PgType::Jsonb, IdType::Auto);
        assert!(key_of(&m, &bson::bson!({"a": 1, "b": "x"})).is_ok());
        assert!(key_of(&m, &bson::bson!({"b": 1, "a": 2})).is_err());
        assert!(key_of(&m, &Bson::ObjectId(ObjectId::new())).is_err());
        assert!(key_of(&m, &dec("1")).is_err());
        assert!(key_of(&m, &Bson::Int64(9_007_199_254_740_993)).is_err());
        assert!(key_of(&m, &Bson::Int64(-9_007_199_254_740_992)).is_ok());
        assert!(key_of(&m, &Bson::String("x".into())).is_ok());
    }

    #[test]
    fn exact_doubles() {
        assert_eq!(exact_double(1.5), "1.5");
        assert_eq!(exact_double(2.0), "2");
        assert_eq!(exact_double(-0.0), "0");
        assert!(exact_double(0.1).starts_with("0.1000000000000000055511151231257827"));
        assert_eq!(exact_double(1e20), "100000000000000000000");
    }
}
