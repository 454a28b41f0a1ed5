//! BSON → Postgres values, lossless or refused, and whole documents → rows.
//!
//! [`convert_value`] holds every conversion rule (the table is in `docs/mappings.md`): a
//! value either arrives in Postgres unchanged (the same number, the same instant, the same
//! bytes) or is refused with a reason; nothing is rounded, truncated or reinterpreted.
//! [`convert_document`] (and [`convert_raw_document`], for BSON bytes) walks the mapping's
//! paths, applies `on_error`, builds `extra_props` and the child rows.

use bson::spec::BinarySubtype;
use std::borrow::Cow;

use bson::{Bson, Document, RawBsonRef, RawDocument};
use serde_json::Value;

use super::decimal::Dec;
use super::json::{date_text, to_json, uuid_bytes};
use super::model::{CollectionMapping, FieldPath, OnError, OnNul, PgType};
use super::value::DocumentRows;
use super::value::{PgValue, Row};
use super::view::{DocRef, ValueRef};

/// A document converted to the rows of its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The primary key (the `_id` column's value), also the first value of every child row.
    pub key: PgValue,
    pub rows: DocumentRows,
    /// Values stored as NULL under `on_error: null`; empty otherwise.
    pub nulled: Vec<Nulled>,
}

/// A value stored as NULL under `on_error: null`: counted in
/// `tributary_nulled_values_total{namespace,column}` and logged with its reason. Displays as
/// `column (source): reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nulled {
    /// The column (`table.column` for a child table's column, the child table for a value
    /// that is not an array, the `extra_props` column for unmapped fields).
    pub column: String,
    /// The dotted source path read.
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Nulled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.column, self.path, self.reason)
    }
}

/// A value that could not be converted. Under `dead_letter` the caller dead-letters the whole
/// document; under `fail` (`fatal`) the stream stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` (source `{path}`): {reason}")]
pub struct ConvertError {
    /// The column (`table.column` for a child table's column, the table for a child array).
    pub column: String,
    /// The dotted source path read.
    pub path: String,
    pub reason: String,
    /// True under `on_error: fail`: the caller must stop (exit 3), not dead-letter.
    pub fatal: bool,
}

/// Smallest instant Postgres `timestamp`/`timestamptz` hold, 4714-11-24 00:00:00 BC, in
/// microseconds since 1970 (Postgres `MIN_TIMESTAMP` moved from the 2000 to the 1970 epoch).
/// The largest (294276 AD) lies beyond any BSON date in microseconds that fits i64.
const PG_MIN_TIMESTAMP_MICROS: i64 = -210_866_803_200_000_000;
/// Postgres `date` range in days since 1970: 4714-11-24 BC up to (excluding) 5874898-01-01.
const PG_MIN_DATE_DAYS: i64 = -2_440_588;
const PG_END_DATE_DAYS: i64 = 2_147_483_494 - 2_440_588;
const MILLIS_PER_DAY: i64 = 86_400_000;

/// Converts one BSON value for a column of type `ty`. `Err` is the reason it was refused.
/// BSON null and undefined are SQL NULL for every type.
pub fn convert_value(v: &Bson, ty: &PgType) -> Result<PgValue, String> {
    if matches!(v, Bson::Null | Bson::Undefined) {
        return Ok(PgValue::Null);
    }
    match ty {
        PgType::Text => text(v).map(PgValue::Text),
        PgType::Varchar(limit) => {
            let s = text(v)?;
            match limit {
                Some(n) if s.chars().count() > *n as usize => Err(format!(
                    "{} characters do not fit varchar({n})",
                    s.chars().count()
                )),
                _ => Ok(PgValue::Text(s)),
            }
        }
        PgType::SmallInt => integer(v, ty)
            .and_then(|i| i16::try_from(i).map_err(|_| out_of_range(v, ty)))
            .map(PgValue::Int2),
        PgType::Integer => integer(v, ty)
            .and_then(|i| i32::try_from(i).map_err(|_| out_of_range(v, ty)))
            .map(PgValue::Int4),
        PgType::BigInt => integer(v, ty)
            .and_then(|i| i64::try_from(i).map_err(|_| out_of_range(v, ty)))
            .map(PgValue::Int8),
        PgType::Real => real(v).map(PgValue::Float4),
        PgType::DoublePrecision => double(v).map(PgValue::Float8),
        PgType::Numeric(spec) => numeric(v, *spec).map(PgValue::Numeric),
        PgType::Boolean => match v {
            Bson::Boolean(b) => Ok(PgValue::Bool(*b)),
            _ => Err(refused(v, ty)),
        },
        PgType::Timestamptz => timestamp_micros(v, ty).map(PgValue::Timestamptz),
        PgType::Timestamp => timestamp_micros(v, ty).map(PgValue::Timestamp),
        PgType::Date => date_days(v).map(PgValue::Date),
        PgType::Uuid => uuid(v).map(PgValue::Uuid),
        PgType::Bytea => match v {
            Bson::Binary(b) => Ok(PgValue::Bytea(b.bytes.clone())),
            Bson::ObjectId(oid) => Ok(PgValue::Bytea(oid.bytes().to_vec())),
            _ => Err(refused(v, ty)),
        },
        PgType::Json | PgType::Jsonb => {
            let json = to_json(v);
            if super::json::has_nul(&json) {
                return Err(
                    "contains a NUL character (\\u0000), which Postgres JSON cannot store"
                        .to_owned(),
                );
            }
            Ok(PgValue::Json(json))
        }
        PgType::Array(elem) => match v {
            Bson::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Bson::Array(_) => Err(format!(
                        "element {i} is an array; {ty} is one-dimensional (use jsonb)"
                    )),
                    _ => convert_value(item, elem).map_err(|why| format!("element {i}: {why}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(PgValue::Array),
            _ => Err(format!(
                "{} is not an array, so it does not fit {ty}",
                kind(v)
            )),
        },
    }
}

/// The BSON type name used in reasons.
fn kind(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "a Double",
        Bson::String(_) => "a String",
        Bson::Array(_) => "an Array",
        Bson::Document(_) => "a Document",
        Bson::Boolean(_) => "a Boolean",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "a Regex",
        Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => "JavaScript code",
        Bson::Int32(_) => "an Int32",
        Bson::Int64(_) => "an Int64",
        Bson::Timestamp(_) => "a Timestamp",
        Bson::Binary(_) => "a Binary",
        Bson::ObjectId(_) => "an ObjectId",
        Bson::DateTime(_) => "a Date",
        Bson::Symbol(_) => "a Symbol",
        Bson::Decimal128(_) => "a Decimal128",
        Bson::Undefined => "undefined",
        Bson::MaxKey => "MaxKey",
        Bson::MinKey => "MinKey",
        Bson::DbPointer(_) => "a DBPointer",
    }
}

/// A short rendering of a scalar for reasons (documents and long strings are not echoed).
fn shown(v: &Bson) -> String {
    match v {
        Bson::Double(d) => format!("Double {}", double_text(*d)),
        Bson::Int32(i) => format!("Int32 {i}"),
        Bson::Int64(i) => format!("Int64 {i}"),
        Bson::Decimal128(d) => format!("Decimal128 {d}"),
        Bson::DateTime(d) => format!("Date {}", date_text(d.timestamp_millis())),
        _ => kind(v).to_owned(),
    }
}

fn refused(v: &Bson, ty: &PgType) -> String {
    format!("{} does not convert to {ty}", kind(v))
}

fn out_of_range(v: &Bson, ty: &PgType) -> String {
    format!("{} is out of range for {ty}", shown(v))
}

/// The canonical text of a double: the JSON number text (shortest round-trip digits, e.g.
/// `1.5`, `5.0`, `1e300`), and `NaN`, `Infinity`, `-Infinity`.
fn double_text(d: f64) -> String {
    match to_json(&Bson::Double(d)) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Text form: strings as they are; any other scalar as its plain JSON form (see `json.rs`),
/// unquoted when that is a string. Documents and arrays are refused (use json/jsonb).
fn text(v: &Bson) -> Result<String, String> {
    let s = match v {
        Bson::String(s) => s.clone(),
        Bson::Document(_) | Bson::Array(_) => {
            return Err(format!(
                "{} is not a scalar; map it to json or jsonb, or map its fields",
                kind(v)
            ))
        }
        Bson::DateTime(d)
            if chrono::DateTime::from_timestamp_millis(d.timestamp_millis()).is_none() =>
        {
            return Err(format!(
                "Date {} ms since 1970 has no ISO-8601 text form",
                d.timestamp_millis()
            ))
        }
        _ => match to_json(v) {
            Value::String(s) => s,
            other => other.to_string(),
        },
    };
    if s.contains('\0') {
        return Err("contains a NUL character, which Postgres text cannot store".to_owned());
    }
    Ok(s)
}

/// A whole number from Int32, Int64, an integral Double or an integral Decimal128; the caller
/// checks the column's range.
fn integer(v: &Bson, ty: &PgType) -> Result<i128, String> {
    match v {
        Bson::Int32(i) => Ok(i128::from(*i)),
        Bson::Int64(i) => Ok(i128::from(*i)),
        Bson::Double(d) => {
            if !d.is_finite() || d.fract() != 0.0 {
                return Err(format!(
                    "{} is not a whole number, so it does not fit {ty}",
                    shown(v)
                ));
            }
            // [-2^63, 2^63) bounds every integer column; beyond it the cast would saturate.
            if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(d) {
                return Err(out_of_range(v, ty));
            }
            Ok(*d as i64 as i128)
        }
        Bson::Decimal128(d) => {
            let dec = Dec::parse(&d.to_string())
                .ok_or_else(|| format!("{} is not a number that fits {ty}", shown(v)))?;
            if dec.needed_scale() > 0 {
                return Err(format!(
                    "{} is not a whole number, so it does not fit {ty}",
                    shown(v)
                ));
            }
            dec.to_i128().ok_or_else(|| out_of_range(v, ty))
        }
        _ => Err(refused(v, ty)),
    }
}

fn double(v: &Bson) -> Result<f64, String> {
    let ty = PgType::DoublePrecision;
    match v {
        Bson::Double(d) => Ok(*d),
        Bson::Int32(i) => Ok(f64::from(*i)),
        Bson::Int64(i) => {
            let f = *i as f64;
            // `f as i128` is exact for every double this large (they are all integers).
            if f as i128 == i128::from(*i) {
                Ok(f)
            } else {
                Err(format!("{} has no exact double precision value", shown(v)))
            }
        }
        Bson::Decimal128(d) => {
            let text = d.to_string();
            match special_float(&text) {
                Some(f) => Ok(f),
                None => {
                    let f: f64 = text.parse().map_err(|_| refused(v, &ty))?;
                    float_matches(f.is_finite(), &format!("{f:e}"), &text)
                        .then_some(f)
                        .ok_or_else(|| format!("{} has no exact double precision value", shown(v)))
                }
            }
        }
        _ => Err(refused(v, &ty)),
    }
}

fn real(v: &Bson) -> Result<f32, String> {
    let ty = PgType::Real;
    let inexact = || format!("{} has no exact real (float4) value", shown(v));
    match v {
        Bson::Double(d) => {
            let f = *d as f32;
            if f64::from(f).to_bits() == d.to_bits() || (d.is_nan() && f.is_nan()) {
                Ok(f)
            } else {
                Err(inexact())
            }
        }
        Bson::Int32(i) => {
            let f = *i as f32;
            (f as i128 == i128::from(*i))
                .then_some(f)
                .ok_or_else(inexact)
        }
        Bson::Int64(i) => {
            let f = *i as f32;
            (f as i128 == i128::from(*i))
                .then_some(f)
                .ok_or_else(inexact)
        }
        Bson::Decimal128(d) => {
            let text = d.to_string();
            match special_float(&text) {
                Some(f) => Ok(f as f32),
                None => {
                    let f: f32 = text.parse().map_err(|_| refused(v, &ty))?;
                    float_matches(f.is_finite(), &format!("{f:e}"), &text)
                        .then_some(f)
                        .ok_or_else(inexact)
                }
            }
        }
        _ => Err(refused(v, &ty)),
    }
}

/// Decimal128 NaN and infinities, which floats hold too.
fn special_float(text: &str) -> Option<f64> {
    match text {
        "NaN" | "-NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// A decimal converts to a float when the float's shortest round-trip text is the same
/// number: the rule Double → numeric uses in the other direction, so the two agree.
fn float_matches(finite: bool, float_text: &str, decimal_text: &str) -> bool {
    finite
        && match (Dec::parse(float_text), Dec::parse(decimal_text)) {
            (Some(f), Some(d)) => f.same_value(&d),
            _ => false,
        }
}

/// Exact decimal text for numeric. NaN and infinities are refused: they would need a special
/// case in every reader of the column, and `numeric(p,s)` cannot hold them at all.
fn numeric(v: &Bson, spec: Option<(u32, Option<u32>)>) -> Result<String, String> {
    let ty = PgType::Numeric(spec);
    let dec = match v {
        Bson::Int32(i) => Dec::parse(&i.to_string()),
        Bson::Int64(i) => Dec::parse(&i.to_string()),
        Bson::Double(d) if d.is_finite() => Dec::parse(&format!("{d:e}")),
        Bson::Decimal128(d) => Dec::parse(&d.to_string()),
        Bson::Double(_) => None,
        _ => return Err(refused(v, &ty)),
    }
    .ok_or_else(|| format!("{} is not a finite number; numeric columns refuse NaN and Infinity (use double precision)", shown(v)))?;
    match spec {
        None => Ok(match v {
            // Decimal128 keeps its own scale (12.50 stays 12.50); the others have none.
            Bson::Decimal128(_) => dec.to_plain_own_scale(),
            _ => dec.to_plain(0),
        }),
        Some((p, s)) => {
            let s = i64::from(s.unwrap_or(0));
            let p = i64::from(p);
            if dec.needed_scale() > s {
                return Err(format!(
                    "{} needs {} decimal places; {ty} would round it",
                    shown(v),
                    dec.needed_scale()
                ));
            }
            if dec.integer_digits() > p - s {
                return Err(format!(
                    "{} has {} digits before the point; {ty} holds {}",
                    shown(v),
                    dec.integer_digits(),
                    p - s
                ));
            }
            Ok(dec.to_plain(s))
        }
    }
}

/// Microseconds since 1970 of a Date, within Postgres's timestamp range.
fn timestamp_micros(v: &Bson, ty: &PgType) -> Result<i64, String> {
    let Bson::DateTime(d) = v else {
        return Err(refused(v, ty));
    };
    d.timestamp_millis()
        .checked_mul(1000)
        .filter(|m| *m >= PG_MIN_TIMESTAMP_MICROS)
        .ok_or_else(|| out_of_range(v, ty))
}

/// Days since 1970 of a Date that is exactly midnight UTC; any time of day is refused, as a
/// date column would drop it.
fn date_days(v: &Bson) -> Result<i32, String> {
    let Bson::DateTime(d) = v else {
        return Err(refused(v, &PgType::Date));
    };
    let millis = d.timestamp_millis();
    if millis.rem_euclid(MILLIS_PER_DAY) != 0 {
        return Err(format!(
            "{} is not midnight UTC; a date column would drop the time (use timestamptz)",
            shown(v)
        ));
    }
    let days = millis.div_euclid(MILLIS_PER_DAY);
    if !(PG_MIN_DATE_DAYS..PG_END_DATE_DAYS).contains(&days) {
        return Err(out_of_range(v, &PgType::Date));
    }
    i32::try_from(days).map_err(|_| out_of_range(v, &PgType::Date))
}

fn uuid(v: &Bson) -> Result<[u8; 16], String> {
    match v {
        Bson::Binary(b) => uuid_bytes(b.subtype, &b.bytes).ok_or_else(|| {
            if b.subtype == BinarySubtype::UuidOld {
                "Binary subtype 3 (legacy UUID) has a driver-specific byte order; only subtype 4 converts to uuid".to_owned()
            } else {
                format!("Binary subtype {:?} of {} bytes is not a UUID (subtype 4, 16 bytes)", b.subtype, b.bytes.len())
            }
        }),
        Bson::String(s) if is_canonical_uuid(s) => uuid::Uuid::parse_str(s)
            .map(|u| *u.as_bytes())
            .map_err(|e| e.to_string()),
        Bson::String(_) => Err(
            "the String is not a canonical UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)".to_owned(),
        ),
        _ => Err(refused(v, &PgType::Uuid)),
    }
}

/// `8-4-4-4-12` hex digits (either case).
fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Reads `path` in `doc`. `Ok(None)` when a field on the way is missing or null; `Err` when
/// the path runs into an array (arrays are reached only through child tables) or a scalar.
fn lookup<'a>(doc: DocRef<'a>, path: &FieldPath) -> Result<Option<ValueRef<'a>>, String> {
    let Some((last, parents)) = path.0.split_last() else {
        return Err("the empty path addresses no field".to_owned());
    };
    let mut cur = doc;
    for (i, seg) in parents.iter().enumerate() {
        match cur.get(seg)? {
            None => return Ok(None),
            Some(v) if v.is_null() => return Ok(None),
            Some(v) => match v.as_document() {
                Some(d) => cur = d,
                None => {
                    let prefix = path.0[..=i].join(".");
                    return Err(if v.as_array().is_some() {
                        format!(
                            "`{prefix}` is an array; a path cannot go into an array (map its \
                             elements with a child table)"
                        )
                    } else {
                        format!("`{prefix}` is {}, not a document", kind(&*v.to_bson()?))
                    });
                }
            },
        }
    }
    cur.get(last)
}

/// [`convert_value`] of a looked-up value. A string still in BSON bytes goes into a text
/// column without the owned `Bson` in between (text columns are most columns).
fn convert_found(v: ValueRef<'_>, ty: &PgType) -> Result<PgValue, String> {
    match (v, ty) {
        (ValueRef::Raw(RawBsonRef::String(s)), PgType::Text) if !s.contains('\0') => {
            Ok(PgValue::Text(s.to_owned()))
        }
        _ => convert_value(&*v.to_bson()?, ty),
    }
}

/// What to do with a failed value under the mapping's policy.
struct Policy<'a> {
    on_error: OnError,
    nulled: &'a mut Vec<Nulled>,
}

impl Policy<'_> {
    /// `Ok(PgValue::Null)` (recorded) under `null`, else the error to return.
    fn fail(&mut self, column: &str, path: &str, reason: String) -> Result<PgValue, ConvertError> {
        match self.on_error {
            OnError::Null => {
                self.nulled.push(Nulled {
                    column: column.to_owned(),
                    path: path.to_owned(),
                    reason,
                });
                Ok(PgValue::Null)
            }
            OnError::DeadLetter | OnError::Fail => Err(ConvertError {
                column: column.to_owned(),
                path: path.to_owned(),
                reason,
                fatal: self.on_error == OnError::Fail,
            }),
        }
    }

    /// `where_` names the column and path only when the value failed: building those names
    /// for every child element was a large part of a full sync's allocations.
    fn value(
        &mut self,
        where_: impl FnOnce() -> (String, String),
        found: Result<Option<ValueRef<'_>>, String>,
        ty: &PgType,
    ) -> Result<PgValue, ConvertError> {
        let converted = found.and_then(|v| v.map_or(Ok(PgValue::Null), |v| convert_found(v, ty)));
        match converted {
            Ok(value) => Ok(value),
            Err(reason) => {
                let (column, path) = where_();
                self.fail(&column, &path, reason)
            }
        }
    }
}

/// Converts a document's `_id` to the primary key (the rules of `key.rs`). A key is never
/// NULL, so under `on_error: null` a bad `_id` is still an error (dead-lettered; fatal only
/// under `fail`).
pub fn convert_key(m: &CollectionMapping, id: &Bson) -> Result<PgValue, ConvertError> {
    super::key::key_of(m, id).map_err(|reason| ConvertError {
        column: m.key_column().name.clone(),
        path: "_id".to_owned(),
        reason,
        fatal: m.on_error == OnError::Fail,
    })
}

/// Converts a whole document to its parent row, child rows and key.
pub fn convert_document(m: &CollectionMapping, doc: &Document) -> Result<Converted, ConvertError> {
    convert_view(m, DocRef::Parsed(doc))
}

/// [`convert_document`] of a document still in BSON bytes, as the full sync reads them.
pub fn convert_raw_document(
    m: &CollectionMapping,
    doc: &RawDocument,
) -> Result<Converted, ConvertError> {
    convert_view(m, DocRef::Raw(doc))
}

fn convert_view(m: &CollectionMapping, doc: DocRef<'_>) -> Result<Converted, ConvertError> {
    if m.on_nul != OnNul::Refuse {
        // Opted in: the document's strings lose (or replace) their NUL characters first. Only
        // such mappings pay for parsing the whole document.
        let parsed = match doc {
            DocRef::Parsed(d) => Cow::Borrowed(d),
            DocRef::Raw(raw) => Cow::Owned(Document::try_from(raw).map_err(|e| ConvertError {
                column: m.key_column().name.clone(),
                path: "_id".to_owned(),
                reason: format!("the document is not valid BSON: {e}"),
                fatal: m.on_error == OnError::Fail,
            })?),
        };
        if let Some(clean) = without_nul(&parsed, m.on_nul) {
            return convert_clean(m, DocRef::Parsed(&clean));
        }
        return convert_clean(m, DocRef::Parsed(&parsed));
    }
    convert_clean(m, doc)
}

/// The document with NUL stripped or replaced in every string but the `_id` (which is never
/// altered: two `_id`s that differ only by a NUL would share a row); `None` when it has none.
fn without_nul(doc: &Document, policy: OnNul) -> Option<Document> {
    fn clean(s: &str, policy: OnNul) -> String {
        match policy {
            OnNul::Replace => s.replace('\0', "\u{FFFD}"),
            _ => s.replace('\0', ""),
        }
    }
    fn walk(v: &Bson, policy: OnNul) -> Option<Bson> {
        match v {
            Bson::String(s) if s.contains('\0') => Some(Bson::String(clean(s, policy))),
            Bson::Symbol(s) if s.contains('\0') => Some(Bson::Symbol(clean(s, policy))),
            Bson::JavaScriptCode(s) if s.contains('\0') => {
                Some(Bson::JavaScriptCode(clean(s, policy)))
            }
            Bson::JavaScriptCodeWithScope(c) => {
                let scope = walk_doc(&c.scope, policy);
                (c.code.contains('\0') || scope.is_some()).then(|| {
                    Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                        code: clean(&c.code, policy),
                        scope: scope.unwrap_or_else(|| c.scope.clone()),
                    })
                })
            }
            Bson::Document(d) => walk_doc(d, policy).map(Bson::Document),
            Bson::Array(items) => {
                let cleaned: Vec<Option<Bson>> = items.iter().map(|i| walk(i, policy)).collect();
                cleaned.iter().any(Option::is_some).then(|| {
                    Bson::Array(
                        cleaned
                            .into_iter()
                            .zip(items)
                            .map(|(c, i)| c.unwrap_or_else(|| i.clone()))
                            .collect(),
                    )
                })
            }
            _ => None,
        }
    }
    fn walk_doc(d: &Document, policy: OnNul) -> Option<Document> {
        let cleaned: Vec<Option<Bson>> = d.values().map(|v| walk(v, policy)).collect();
        cleaned.iter().any(Option::is_some).then(|| {
            d.iter()
                .zip(cleaned)
                .map(|((k, v), c)| (k.clone(), c.unwrap_or_else(|| v.clone())))
                .collect()
        })
    }
    let cleaned: Vec<Option<Bson>> = doc
        .iter()
        .map(|(k, v)| if k == "_id" { None } else { walk(v, policy) })
        .collect();
    cleaned.iter().any(Option::is_some).then(|| {
        doc.iter()
            .zip(cleaned)
            .map(|((k, v), c)| (k.clone(), c.unwrap_or_else(|| v.clone())))
            .collect()
    })
}

fn convert_clean(m: &CollectionMapping, doc: DocRef<'_>) -> Result<Converted, ConvertError> {
    let key_error = |reason: String| ConvertError {
        column: m.key_column().name.clone(),
        path: "_id".to_owned(),
        reason,
        fatal: m.on_error == OnError::Fail,
    };
    let id = doc
        .get("_id")
        .and_then(|id| id.ok_or_else(|| "the document has no _id".to_owned()))
        .and_then(|id| id.to_bson())
        .map_err(key_error)?;
    let key = convert_key(m, &id)?;
    let mut nulled = Vec::new();
    let mut policy = Policy {
        on_error: m.on_error,
        nulled: &mut nulled,
    };
    let key_index = m.key_index();
    let mut parent: Row = Vec::with_capacity(m.columns.len() + 1);
    for (i, c) in m.columns.iter().enumerate() {
        if i == key_index {
            parent.push(key.clone());
        } else {
            parent.push(policy.value(
                || (c.name.clone(), c.source.to_string()),
                lookup(doc, &c.source),
                &c.pg_type,
            )?);
        }
    }
    if let Some(extra) = &m.extra_props {
        let rest = extra_props_of(m, doc).and_then(|rest| document_to_json_checked(&rest));
        parent.push(match rest {
            Ok(json) => PgValue::Json(json),
            Err(reason) => policy.fail(extra, "(unmapped fields)", reason)?,
        });
    }
    let mut children = Vec::with_capacity(m.children.len());
    for child in &m.children {
        let mut rows = Vec::new();
        let source = child.source.to_string();
        let items = lookup(doc, &child.source).and_then(|found| match found {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => match v.as_array() {
                Some(items) => items.map(Some),
                None => Err(format!(
                    "{} is not an array, so it has no elements for child table `{}`",
                    kind(&*v.to_bson()?),
                    child.table
                )),
            },
        });
        match items {
            Ok(None) => {}
            Ok(Some(items)) => {
                for (idx, item) in items.into_iter().enumerate() {
                    let idx = i32::try_from(idx).unwrap_or(i32::MAX);
                    let mut row: Row = Vec::with_capacity(child.columns.len() + 2);
                    row.push(key.clone());
                    row.push(PgValue::Int4(idx));
                    for c in &child.columns {
                        let found = element_field(item, &c.source, idx);
                        let where_ = || {
                            let mut path = child.source.0.clone();
                            path.push(idx.to_string());
                            path.extend(c.source.0.iter().cloned());
                            (
                                format!("{}.{}", child.table, c.name),
                                FieldPath(path).to_string(),
                            )
                        };
                        row.push(policy.value(where_, found, &c.pg_type)?);
                    }
                    rows.push(row);
                }
            }
            Err(reason) => {
                policy.fail(&child.table, &source, reason)?;
            }
        }
        children.push(rows);
    }
    Ok(Converted {
        key,
        rows: DocumentRows {
            parent,
            children,
            id: super::json::to_json(&id),
        },
        nulled,
    })
}

/// A child column's value inside one array element: the element itself for `.`, else a field
/// of the element (which must then be a document).
fn element_field<'a>(
    item: ValueRef<'a>,
    path: &FieldPath,
    idx: i32,
) -> Result<Option<ValueRef<'a>>, String> {
    if path.0.is_empty() {
        return Ok(Some(item));
    }
    if item.is_null() {
        return Ok(None);
    }
    match item.as_document() {
        Some(d) => lookup(d, path),
        None => Err(format!(
            "element {idx} is {}, not a document with field `{path}` (use `source: .` for scalar elements)",
            kind(&*item.to_bson()?)
        )),
    }
}

/// The document minus `_id` and every path a column or child reads; sub-documents left empty
/// by a removal are removed too (ones that were empty already stay).
pub fn extra_props(m: &CollectionMapping, doc: &Document) -> Document {
    // A parsed document has no malformed bytes to report.
    extra_props_of(m, DocRef::Parsed(doc)).unwrap_or_default()
}

fn extra_props_of(m: &CollectionMapping, doc: DocRef<'_>) -> Result<Document, String> {
    let id = ["_id".to_owned()];
    let paths: Vec<&[String]> = std::iter::once(&id[..])
        .chain(m.columns.iter().map(|c| &c.source.0[..]))
        .chain(m.children.iter().map(|c| &c.source.0[..]))
        .collect();
    without_paths_of(doc, &paths)
}

/// Copies `d` minus `paths` (each a field path relative to `d`). Built by skipping rather than
/// by cloning everything and removing: only kept values are copied.
#[cfg(test)]
pub(super) fn without_paths(d: &Document, paths: &[&[String]]) -> Document {
    without_paths_of(DocRef::Parsed(d), paths).unwrap_or_default()
}

fn without_paths_of(d: DocRef<'_>, paths: &[&[String]]) -> Result<Document, String> {
    let mut out = Document::new();
    for (key, value) in d.fields()? {
        let mut whole = false;
        let mut deeper: Vec<&[String]> = Vec::new();
        for p in paths {
            match p.split_first() {
                Some((first, rest)) if first == key => {
                    if rest.is_empty() {
                        whole = true;
                    } else {
                        deeper.push(rest);
                    }
                }
                _ => {}
            }
        }
        if whole {
            continue;
        }
        match value.as_document() {
            Some(sub) if !deeper.is_empty() => {
                let rest = without_paths_of(sub, &deeper)?;
                // A sub-document emptied by the removal goes; one that was empty already stays.
                if !rest.is_empty() || sub.is_empty() {
                    out.insert(key, Bson::Document(rest));
                }
            }
            _ => {
                out.insert(key, value.to_bson()?.into_owned());
            }
        }
    }
    Ok(out)
}

fn document_to_json_checked(d: &Document) -> Result<Value, String> {
    let json = super::json::document_to_json(d);
    if super::json::has_nul(&json) {
        Err("an unmapped field contains a NUL character (\\u0000), which Postgres JSON cannot store".to_owned())
    } else {
        Ok(json)
    }
}
