//! The MongoDB side of verify, besides the full-sync range readers it reuses: documents read
//! again by `_id` (with the cluster time of the read, for live rechecks), documents looked up
//! for keys Postgres holds, exact counts with array lengths, and `$sample`.
//!
//! Reads that a recheck depends on run in an explicit session: its `operationTime` after the
//! read is the cluster time the documents were read at.

use std::collections::HashSet;
use std::str::FromStr;

use bson::spec::BinarySubtype;
use bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Decimal128, RawDocumentBuf, Timestamp};
use futures::TryStreamExt;
use mongodb::Collection;

use super::error::VerifyError;
use crate::mapping::convert::convert_key;
use crate::mapping::model::{ChildMapping, CollectionMapping};
use crate::mapping::value::PgValue;
use crate::sink::postgres::plan::key_text;

/// Documents whose `_id` is one of `ids` (in no particular order), and the cluster time of the
/// read.
pub async fn read_by_ids(
    coll: &Collection<RawDocumentBuf>,
    ids: &[Bson],
) -> Result<(Vec<RawDocumentBuf>, Option<Timestamp>), VerifyError> {
    if ids.is_empty() {
        return Ok((Vec::new(), None));
    }
    let doing = || format!("reading documents of {} again", coll.namespace());
    let mut session = coll
        .client()
        .start_session()
        .await
        .map_err(VerifyError::mongo(doing()))?;
    let mut cursor = coll
        .find(doc! {"_id": {"$in": ids.to_vec()}})
        .session(&mut session)
        .await
        .map_err(VerifyError::mongo(doing()))?;
    let mut docs = Vec::with_capacity(ids.len());
    while let Some(d) = cursor.next(&mut session).await {
        docs.push(d.map_err(VerifyError::mongo(doing()))?);
    }
    Ok((docs, session.operation_time()))
}

/// Which of `keys` (as `key_text`) belong to a document of the collection, and the cluster time
/// of the lookup. The `_id`s that could have each key are asked for (`id_candidates`), and
/// the `_id`s found are converted to keys the way the sink converts them, so a document counts
/// only when its key is exactly the one Postgres holds.
pub async fn keys_with_documents(
    coll: &Collection<RawDocumentBuf>,
    mapping: &CollectionMapping,
    keys: &[PgValue],
) -> Result<(HashSet<String>, Option<Timestamp>), VerifyError> {
    if keys.is_empty() {
        return Ok((HashSet::new(), None));
    }
    let mut candidates: Vec<Bson> = Vec::with_capacity(keys.len() * 2);
    for k in keys {
        candidates.extend(id_candidates(k));
    }
    let doing = || format!("looking up documents of {}", coll.namespace());
    let mut session = coll
        .client()
        .start_session()
        .await
        .map_err(VerifyError::mongo(doing()))?;
    let mut cursor = coll
        .find(doc! {"_id": {"$in": candidates}})
        .projection(doc! {"_id": 1})
        .session(&mut session)
        .await
        .map_err(VerifyError::mongo(doing()))?;
    let mut found = HashSet::new();
    while let Some(d) = cursor.next(&mut session).await {
        let d = d.map_err(VerifyError::mongo(doing()))?;
        if let Ok(id) = crate::event::document_id(&d) {
            if let Ok(key) = convert_key(mapping, &id) {
                found.insert(key_text(&key));
            }
        }
    }
    Ok((found, session.operation_time()))
}

/// Every `_id` that could convert to `key` (a superset: callers convert what they find).
/// MongoDB's `$in` matches numbers across numeric types, so one number stands for all.
pub fn id_candidates(key: &PgValue) -> Vec<Bson> {
    let mut out = Vec::new();
    match key {
        PgValue::Null => {}
        PgValue::Text(s) => {
            out.push(Bson::String(s.clone()));
            if let Ok(oid) = ObjectId::parse_str(s) {
                out.push(Bson::ObjectId(oid));
            }
            out.extend(number_candidates(s));
            if let Ok(uuid) = uuid::Uuid::parse_str(s) {
                out.push(uuid_binary(*uuid.as_bytes()));
            }
            match s.as_str() {
                "true" => out.push(Bson::Boolean(true)),
                "false" => out.push(Bson::Boolean(false)),
                _ => {}
            }
            if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
                out.push(Bson::DateTime(DateTime::from_millis(d.timestamp_millis())));
            }
        }
        PgValue::Int2(i) => out.push(Bson::Int64(i64::from(*i))),
        PgValue::Int4(i) => out.push(Bson::Int64(i64::from(*i))),
        PgValue::Int8(i) => out.push(Bson::Int64(*i)),
        PgValue::Float4(f) => out.push(Bson::Double(f64::from(*f))),
        PgValue::Float8(f) => out.push(Bson::Double(*f)),
        PgValue::Numeric(s) => out.extend(number_candidates(s)),
        PgValue::Bool(b) => out.push(Bson::Boolean(*b)),
        PgValue::Timestamptz(us) | PgValue::Timestamp(us) => {
            out.push(Bson::DateTime(DateTime::from_millis(us.div_euclid(1000))))
        }
        PgValue::Date(days) => out.push(Bson::DateTime(DateTime::from_millis(
            i64::from(*days) * 86_400_000,
        ))),
        PgValue::Uuid(b) => {
            out.push(uuid_binary(*b));
            out.push(Bson::String(uuid::Uuid::from_bytes(*b).to_string()));
        }
        PgValue::Bytea(b) => {
            if let Ok(bytes) = <[u8; 12]>::try_from(b.as_slice()) {
                out.push(Bson::ObjectId(ObjectId::from_bytes(bytes)));
            }
            out.push(Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: b.clone(),
            }));
        }
        PgValue::Json(v) => {
            if let serde_json::Value::String(s) = v {
                out.extend(id_candidates(&PgValue::Text(s.clone())));
            } else if let Ok(b) = Bson::try_from(v.clone()) {
                out.push(b);
            }
        }
        PgValue::Array(_) => {}
    }
    out
}

fn uuid_binary(bytes: [u8; 16]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: bytes.to_vec(),
    })
}

/// The numbers whose text is `s`: an integer as Int64, anything else as Double and Decimal128.
fn number_candidates(s: &str) -> Vec<Bson> {
    let mut out = Vec::new();
    if let Ok(i) = s.parse::<i64>() {
        out.push(Bson::Int64(i));
        return out;
    }
    if !s.bytes().any(|b| b.is_ascii_digit()) {
        return out;
    }
    if let Ok(f) = s.parse::<f64>() {
        out.push(Bson::Double(f));
    }
    if let Ok(d) = Decimal128::from_str(s) {
        out.push(Bson::Decimal128(d));
    }
    out
}

/// Exact document count and, per child mapping, the total length of its arrays (a missing or
/// non-array field counts 0), with the cluster time of the count.
pub async fn counts(
    coll: &Collection<RawDocumentBuf>,
    children: &[ChildMapping],
) -> Result<(u64, Vec<u64>, Option<Timestamp>), VerifyError> {
    let mut group = doc! {"_id": Bson::Null, "n": {"$sum": 1}};
    for (i, c) in children.iter().enumerate() {
        let path = format!("${}", c.source);
        group.insert(
            format!("c{i}"),
            doc! {"$sum": {"$cond": [
                {"$eq": [{"$type": &path}, "array"]},
                {"$size": &path},
                0
            ]}},
        );
    }
    let doing = || format!("counting the documents of {}", coll.namespace());
    let mut session = coll
        .client()
        .start_session()
        .await
        .map_err(VerifyError::mongo(doing()))?;
    let mut cursor = coll
        .aggregate(vec![doc! {"$group": group}])
        .session(&mut session)
        .await
        .map_err(VerifyError::mongo(doing()))?;
    let row = cursor
        .next(&mut session)
        .await
        .transpose()
        .map_err(VerifyError::mongo(doing()))?;
    let number = |v: Option<&Bson>| -> u64 {
        match v {
            Some(Bson::Int32(i)) => u64::try_from(*i).unwrap_or(0),
            Some(Bson::Int64(i)) => u64::try_from(*i).unwrap_or(0),
            Some(Bson::Double(d)) if *d >= 0.0 => *d as u64,
            _ => 0,
        }
    };
    let (n, elements) = match &row {
        Some(d) => (
            number(d.get("n")),
            (0..children.len())
                .map(|i| number(d.get(format!("c{i}"))))
                .collect(),
        ),
        None => (0, vec![0; children.len()]),
    };
    Ok((n, elements, session.operation_time()))
}

/// `$sample` of `n` documents (MongoDB may return a document more than once).
pub async fn sample(
    coll: &Collection<RawDocumentBuf>,
    n: usize,
) -> Result<Vec<RawDocumentBuf>, VerifyError> {
    let size = i64::try_from(n).unwrap_or(i64::MAX);
    let doing = || format!("sampling {}", coll.namespace());
    coll.aggregate(vec![doc! {"$sample": {"size": size}}])
        .with_type::<RawDocumentBuf>()
        .await
        .map_err(VerifyError::mongo(doing()))?
        .try_collect()
        .await
        .map_err(VerifyError::mongo(doing()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_the_id_types_a_key_can_come_from() {
        let hex = "65a1b2c3d4e5f60718293a4b";
        let c = id_candidates(&PgValue::Text(hex.into()));
        assert!(c.contains(&Bson::String(hex.into())));
        assert!(c.contains(&Bson::ObjectId(ObjectId::parse_str(hex).unwrap())));
        let c = id_candidates(&PgValue::Text("42".into()));
        assert!(c.contains(&Bson::String("42".into())) && c.contains(&Bson::Int64(42)));
        let c = id_candidates(&PgValue::Numeric("1.50".into()));
        assert!(c.contains(&Bson::Double(1.5)));
        assert_eq!(id_candidates(&PgValue::Int4(7)), vec![Bson::Int64(7)]);
        assert_eq!(
            id_candidates(&PgValue::Text("x".into())),
            vec![Bson::String("x".into())]
        );
        let c = id_candidates(&PgValue::Json(serde_json::json!({"a": 1})));
        assert_eq!(c, vec![Bson::Document(doc! {"a": 1})]);
    }
}
