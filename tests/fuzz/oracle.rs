//! The independent oracle: what Postgres must hold for one document under one mapping,
//! written from SPEC "Mapping files" and docs/mappings.md ("Conversion: lossless or refused",
//! the text and JSON forms, `extra_props`, child tables, `on_error`, and the `_id` rules of
//! issue 18), never from `src/mapping`. It predicts cells in the forms `pg.rs` reads back.

use bson::spec::BinarySubtype;
use bson::{Bson, Document};
use serde_json::Value;

use super::forms::{
    canonical_uuid, days_from_civil, decode_dec128, json_form, json_has_nul, text_form, Dec128,
    Decimal, MILLIS_PER_DAY,
};
use super::keys::key_cell;
use super::spec::{Column, Mapping, OnError, OnNul, SqlType};

/// Which of issue 18's rules the product implements (see `mod.rs`, `RULES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Strings holding U+0000 are generated: such documents are dead-lettered and the dead
    /// letter stores them (`{"bson_base64", "json"}`).
    pub nul: bool,
    /// A key column takes only its type's `_id` family (and `id_type`), so that two documents
    /// never share a row; without it, the generator avoids `_id`s that could collide.
    pub strict_ids: bool,
    /// Strings that are not UTF-8 (`gen::INVALID_UTF8`, patched at insertion) are generated:
    /// documents whose mapped values hold one are dead-lettered as unreadable BSON.
    pub invalid_utf8: bool,
}

/// One predicted value, in the form it is read back (`pg.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    /// text, varchar: the exact characters.
    Text(String),
    Int(i128),
    /// numeric: Postgres's text of it (plain, with its scale).
    Numeric(String),
    F64(f64),
    F32(f32),
    Bool(bool),
    /// timestamptz, timestamp: microseconds since 1970 (UTC wall clock for timestamp).
    Micros(i64),
    /// date: days since 1970-01-01.
    Days(i64),
    Uuid([u8; 16]),
    Bytes(Vec<u8>),
    Json(Value),
    Array(Vec<Cell>),
}

/// What a document becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its parent row (parent columns in table order, then `extra_props`) and, per child
    /// table, its rows `[parent_key, idx, columns...]`.
    Rows {
        key: Cell,
        parent: Vec<Cell>,
        children: Vec<Vec<Vec<Cell>>>,
    },
    /// A dead letter, for `reason`.
    Refused(String),
}

/// Postgres's range: timestamps from 4714-11-24 00:00 BC, dates up to 5874897-12-31.
fn pg_min_days() -> i64 {
    days_from_civil(-4713, 11, 24)
}
fn pg_end_date_days() -> i64 {
    days_from_civil(5_874_898, 1, 1)
}

pub fn predict(m: &Mapping, rules: Rules, doc: &Document) -> Outcome {
    let cleaned;
    let doc = match m.on_nul {
        Some(policy @ (OnNul::Strip | OnNul::Replace)) => {
            cleaned = without_nul(doc, policy);
            &cleaned
        }
        _ => doc,
    };
    let key = match doc.get("_id") {
        Some(id) => match key_cell(m, rules, id) {
            Ok(k) => k,
            Err(why) => return Outcome::Refused(format!("_id: {why}")),
        },
        None => return Outcome::Refused("no _id".into()),
    };
    let mut policy = Policy(m.on_error);
    let mut parent = Vec::new();
    for (i, c) in m.parent_columns().into_iter().enumerate() {
        if i == m.key_index() {
            parent.push(key.clone());
            continue;
        }
        let cell = lookup(doc, &c.source).and_then(|v| convert_or_null(v, &c.ty));
        match policy.apply(cell) {
            Ok(cell) => parent.push(cell),
            Err(why) => return Outcome::Refused(format!("column {}: {why}", c.name)),
        }
    }
    if m.extra_props.is_some() {
        let json = json_form(&Bson::Document(extra_props(m, doc)));
        let cell = if json_has_nul(&json) {
            Err("U+0000 in an unmapped field".to_owned())
        } else {
            Ok(Cell::Json(json))
        };
        match policy.apply(cell) {
            Ok(cell) => parent.push(cell),
            Err(why) => return Outcome::Refused(format!("extra_props: {why}")),
        }
    }
    let mut children = Vec::new();
    for child in &m.children {
        let items = lookup(doc, &child.source).and_then(|v| match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(Vec::new()),
            Some(Bson::Array(items)) => Ok(items.clone()),
            Some(_) => Err("not an array".to_owned()),
        });
        let items = match items {
            Ok(items) => items,
            Err(why) => match m.on_error {
                OnError::Null => Vec::new(),
                OnError::DeadLetter => {
                    return Outcome::Refused(format!("child {}: {why}", child.table))
                }
            },
        };
        let mut rows = Vec::new();
        for (idx, item) in items.iter().enumerate() {
            let mut row = vec![key.clone(), Cell::Int(idx as i128)];
            for c in &child.columns {
                let cell = element_field(item, c).and_then(|v| convert_or_null(v, &c.ty));
                match policy.apply(cell) {
                    Ok(cell) => row.push(cell),
                    Err(why) => {
                        return Outcome::Refused(format!(
                            "{}.{} element {idx}: {why}",
                            child.table, c.name
                        ))
                    }
                }
            }
            rows.push(row);
        }
        children.push(rows);
    }
    Outcome::Rows {
        key,
        parent,
        children,
    }
}

/// `on_nul: strip | replace`: every string of the document but the `_id` loses its NULs (or
/// has U+FFFD instead): String, Symbol, JavaScript code and its scope, inside documents and
/// arrays.
fn without_nul(doc: &Document, policy: OnNul) -> Document {
    fn clean(s: &str, policy: OnNul) -> String {
        let with = if policy == OnNul::Replace {
            "\u{FFFD}"
        } else {
            ""
        };
        s.replace('\0', with)
    }
    fn walk(v: &Bson, policy: OnNul) -> Bson {
        match v {
            Bson::String(s) => Bson::String(clean(s, policy)),
            Bson::Symbol(s) => Bson::Symbol(clean(s, policy)),
            Bson::JavaScriptCode(s) => Bson::JavaScriptCode(clean(s, policy)),
            Bson::JavaScriptCodeWithScope(c) => {
                Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                    code: clean(&c.code, policy),
                    scope: walk_doc(&c.scope, policy),
                })
            }
            Bson::Document(d) => Bson::Document(walk_doc(d, policy)),
            Bson::Array(items) => Bson::Array(items.iter().map(|i| walk(i, policy)).collect()),
            other => other.clone(),
        }
    }
    fn walk_doc(d: &Document, policy: OnNul) -> Document {
        d.iter()
            .map(|(k, v)| (k.clone(), walk(v, policy)))
            .collect()
    }
    doc.iter()
        .map(|(k, v)| {
            let v = if k == "_id" {
                v.clone()
            } else {
                walk(v, policy)
            };
            (k.clone(), v)
        })
        .collect()
}

struct Policy(OnError);

impl Policy {
    fn apply(&mut self, cell: Result<Cell, String>) -> Result<Cell, String> {
        match (cell, self.0) {
            (Ok(c), _) => Ok(c),
            (Err(_), OnError::Null) => Ok(Cell::Null),
            (Err(why), OnError::DeadLetter) => Err(why),
        }
    }
}

/// The value at `path`: `None` when a field on the way is missing or null; an error when the
/// path crosses an array or another scalar.
fn lookup<'a>(doc: &'a Document, path: &[String]) -> Result<Option<&'a Bson>, String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty path".into());
    };
    let mut cur = doc;
    for seg in parents {
        match cur.get(seg) {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(None),
            Some(Bson::Document(d)) => cur = d,
            Some(Bson::Array(_)) => return Err(format!("`{seg}` is an array on the path")),
            Some(_) => return Err(format!("`{seg}` is a scalar on the path")),
        }
    }
    Ok(cur.get(last))
}

fn element_field<'a>(item: &'a Bson, c: &Column) -> Result<Option<&'a Bson>, String> {
    if c.source.is_empty() {
        return Ok(Some(item));
    }
    match item {
        Bson::Null | Bson::Undefined => Ok(None),
        Bson::Document(d) => lookup(d, &c.source),
        _ => Err("the element is not a document".into()),
    }
}

fn convert_or_null(v: Option<&Bson>, ty: &SqlType) -> Result<Cell, String> {
    v.map_or(Ok(Cell::Null), |v| convert(v, ty))
}

/// The document minus `_id` and every path a column or child reads; a sub-document emptied
/// by that goes too (one that was empty already stays).
pub fn extra_props(m: &Mapping, doc: &Document) -> Document {
    let id = vec!["_id".to_owned()];
    let mut paths: Vec<&[String]> = vec![&id];
    paths.extend(m.parent_columns().iter().map(|c| &c.source[..]));
    paths.extend(m.children.iter().map(|c| &c.source[..]));
    without(doc, &paths)
}

fn without(doc: &Document, paths: &[&[String]]) -> Document {
    let mut out = Document::new();
    for (k, v) in doc {
        let mut whole = false;
        let mut deeper: Vec<&[String]> = Vec::new();
        for p in paths {
            if p.first() == Some(k) {
                if p.len() == 1 {
                    whole = true;
                } else {
                    deeper.push(&p[1..]);
                }
            }
        }
        if whole {
            continue;
        }
        match v {
            Bson::Document(sub) if !deeper.is_empty() => {
                let rest = without(sub, &deeper);
                if !rest.is_empty() || sub.is_empty() {
                    out.insert(k, rest);
                }
            }
            _ => {
                out.insert(k, v.clone());
            }
        }
    }
    out
}

/// A value for a column of type `ty` (null and undefined are NULL).
pub fn convert(v: &Bson, ty: &SqlType) -> Result<Cell, String> {
    if matches!(v, Bson::Null | Bson::Undefined) {
        return Ok(Cell::Null);
    }
    match ty {
        SqlType::Text => text(v).map(Cell::Text),
        SqlType::Varchar(limit) => {
            let s = text(v)?;
            match limit {
                Some(n) if s.chars().count() > *n as usize => Err(format!("longer than {n}")),
                _ => Ok(Cell::Text(s)),
            }
        }
        SqlType::SmallInt => integer(v, i16::MIN.into(), i16::MAX.into()),
        SqlType::Integer => integer(v, i32::MIN.into(), i32::MAX.into()),
        SqlType::BigInt => integer(v, i64::MIN.into(), i64::MAX.into()),
        SqlType::Real => real(v).map(Cell::F32),
        SqlType::Double => double(v).map(Cell::F64),
        SqlType::Numeric(spec) => numeric(v, *spec).map(Cell::Numeric),
        SqlType::Boolean => match v {
            Bson::Boolean(b) => Ok(Cell::Bool(*b)),
            _ => Err("not a Boolean".into()),
        },
        SqlType::Timestamptz | SqlType::Timestamp => micros(v).map(Cell::Micros),
        SqlType::Date => days(v).map(Cell::Days),
        SqlType::Uuid => match v {
            Bson::Binary(b) if b.subtype == BinarySubtype::Uuid && b.bytes.len() == 16 => {
                Ok(Cell::Uuid(b.bytes.clone().try_into().unwrap()))
            }
            Bson::String(s) => canonical_uuid(s)
                .map(Cell::Uuid)
                .ok_or_else(|| "not a canonical UUID".into()),
            _ => Err("not a UUID".into()),
        },
        SqlType::Bytea => match v {
            Bson::Binary(b) => Ok(Cell::Bytes(b.bytes.clone())),
            Bson::ObjectId(oid) => Ok(Cell::Bytes(oid.bytes().to_vec())),
            _ => Err("not Binary or ObjectId".into()),
        },
        SqlType::Json | SqlType::Jsonb => {
            let json = json_form(v);
            if json_has_nul(&json) {
                Err("U+0000 in JSON".into())
            } else {
                Ok(Cell::Json(json))
            }
        }
        SqlType::Array(inner) => match v {
            Bson::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Bson::Array(_) => Err(format!("element {i} is an array")),
                    _ => convert(item, inner).map_err(|why| format!("element {i}: {why}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Cell::Array),
            _ => Err("not an array".into()),
        },
    }
}

fn text(v: &Bson) -> Result<String, String> {
    let s = text_form(v)?;
    if s.contains('\0') {
        return Err("U+0000 in text".into());
    }
    Ok(s)
}

/// A number's exact value: Int32, Int64, finite Double, finite Decimal128.
pub(super) fn exact(v: &Bson) -> Option<Decimal> {
    match v {
        Bson::Int32(i) => Some(Decimal::from_int((*i).into())),
        Bson::Int64(i) => Some(Decimal::from_int((*i).into())),
        Bson::Double(d) => Decimal::from_f64(*d),
        Bson::Decimal128(d) => decode_dec128(d).decimal(),
        _ => None,
    }
}

pub(super) fn is_number(v: &Bson) -> bool {
    matches!(
        v,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
    )
}

fn integer(v: &Bson, lo: i128, hi: i128) -> Result<Cell, String> {
    if !is_number(v) {
        return Err("not a number".into());
    }
    let i = match v {
        // The double's binary value, not its shortest text (which differs above 2^53).
        Bson::Double(d) if d.is_finite() && d.fract() == 0.0 && d.abs() < 1e38 => *d as i128,
        _ => exact(v)
            .and_then(|d| d.to_i128())
            .ok_or_else(|| "not a whole number in range".to_owned())?,
    };
    if (lo..=hi).contains(&i) {
        Ok(Cell::Int(i))
    } else {
        Err("out of range".into())
    }
}

/// The nearest `T` to a decimal, by Rust's correctly rounded parser.
fn decimal_text(d: &Decimal) -> String {
    let digits = if d.is_zero() { "0" } else { &d.digits };
    format!("{}{digits}e{}", if d.neg { "-" } else { "" }, d.exp)
}

fn double(v: &Bson) -> Result<f64, String> {
    match v {
        Bson::Double(d) => Ok(*d),
        Bson::Int32(i) => Ok(f64::from(*i)),
        Bson::Int64(i) => {
            let f = *i as f64;
            if f as i128 == i128::from(*i) {
                Ok(f)
            } else {
                Err("no exact double".into())
            }
        }
        Bson::Decimal128(d) => match decode_dec128(d) {
            Dec128::NaN => Ok(f64::NAN),
            Dec128::Infinity { neg } => Ok(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            dec => {
                let dec = dec.decimal().unwrap();
                let f: f64 = decimal_text(&dec).parse().unwrap();
                match Decimal::from_f64(f) {
                    Some(shortest) if shortest.same_value(&dec) => Ok(f),
                    _ => Err("no double with that shortest text".into()),
                }
            }
        },
        _ => Err("not a number".into()),
    }
}

fn real(v: &Bson) -> Result<f32, String> {
    match v {
        Bson::Double(d) => {
            let f = *d as f32;
            if d.is_nan() || f64::from(f).to_bits() == d.to_bits() {
                Ok(f)
            } else {
                Err("no exact real".into())
            }
        }
        Bson::Int32(_) | Bson::Int64(_) => {
            let i = exact(v).unwrap().to_i128().unwrap();
            let f = i as f32;
            if f as i128 == i {
                Ok(f)
            } else {
                Err("no exact real".into())
            }
        }
        Bson::Decimal128(d) => match decode_dec128(d) {
            Dec128::NaN => Ok(f32::NAN),
            Dec128::Infinity { neg } => Ok(if neg {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            }),
            dec => {
                let dec = dec.decimal().unwrap();
                let f: f32 = decimal_text(&dec).parse().unwrap();
                match Decimal::from_f32(f) {
                    Some(shortest) if shortest.same_value(&dec) => Ok(f),
                    _ => Err("no real with that shortest text".into()),
                }
            }
        },
        _ => Err("not a number".into()),
    }
}

fn numeric(v: &Bson, spec: Option<(u32, Option<u32>)>) -> Result<String, String> {
    if !is_number(v) {
        return Err("not a number".into());
    }
    let dec = exact(v).ok_or_else(|| "NaN or Infinity".to_owned())?;
    match spec {
        None => {
            let scale = match v {
                Bson::Decimal128(_) => (-dec.exp).max(0),
                _ => dec.needed_scale(),
            };
            Ok(dec.plain(scale))
        }
        Some((p, s)) => {
            let (p, s) = (i64::from(p), i64::from(s.unwrap_or(0)));
            if dec.needed_scale() > s {
                Err("would round".into())
            } else if dec.integer_digits() > p - s {
                Err("too many digits".into())
            } else {
                Ok(dec.plain(s))
            }
        }
    }
}

fn micros(v: &Bson) -> Result<i64, String> {
    let Bson::DateTime(d) = v else {
        return Err("not a Date".into());
    };
    let us = i128::from(d.timestamp_millis()) * 1000;
    let min = i128::from(pg_min_days()) * i128::from(MILLIS_PER_DAY) * 1000;
    let end = i128::from(days_from_civil(294_277, 1, 1)) * i128::from(MILLIS_PER_DAY) * 1000;
    if us < min || us >= end {
        return Err("outside Postgres's timestamp range".into());
    }
    i64::try_from(us).map_err(|_| "outside microseconds".into())
}

fn days(v: &Bson) -> Result<i64, String> {
    let Bson::DateTime(d) = v else {
        return Err("not a Date".into());
    };
    let ms = d.timestamp_millis();
    if ms.rem_euclid(MILLIS_PER_DAY) != 0 {
        return Err("not midnight UTC".into());
    }
    let days = ms.div_euclid(MILLIS_PER_DAY);
    if days < pg_min_days() || days >= pg_end_date_days() {
        return Err("outside Postgres's date range".into());
    }
    Ok(days)
}

/// Whether a predicted cell holds `needle` in a string (text, JSON, arrays of them).
pub fn cell_mentions(c: &Cell, needle: &str) -> bool {
    fn json(v: &Value, needle: &str) -> bool {
        match v {
            Value::String(s) => s.contains(needle),
            Value::Array(items) => items.iter().any(|i| json(i, needle)),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains(needle) || json(v, needle)),
            _ => false,
        }
    }
    match c {
        Cell::Text(s) => s.contains(needle),
        Cell::Json(v) => json(v, needle),
        Cell::Array(items) => items.iter().any(|i| cell_mentions(i, needle)),
        _ => false,
    }
}
