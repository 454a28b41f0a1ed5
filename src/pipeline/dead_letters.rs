//! The retry of open dead letters at start (`sync` and `full-sync`): fixing a mapping and
//! restarting repairs what it refused.
//!
//! Each open letter names its document by `document_key`, the `_id` as plain JSON, and (since
//! `id_bson` exists) by the `_id` exactly, which is what it is looked up by. A letter written
//! before that has only the plain JSON, which loses the BSON type (a JSON string may have been
//! a String, an ObjectId, a Date, a UUID or an Int64 beyond 2^53): the candidates of every
//! type that JSON form could come from are looked up instead. Either way, the documents whose
//! `_id` gives back exactly the letter's plain JSON are the letter's. Their current versions are then converted with today's mappings:
//!
//! - every one converts: its rows are written and the document's open letters resolved, in
//!   one transaction (`PostgresSink::apply_retried`);
//! - none is left (the document was deleted): the letters are resolved; the rows, if any, go
//!   with the delete event the stream applies (or applied) anyway;
//! - one is still refused, by the mapping or by Postgres (a value a live column refuses): the
//!   letters stay open, and no new letter is written for it.
//!
//! The retry is best effort: when it fails (MongoDB or Postgres unreachable), `sync` logs it
//! and streams anyway; the letters stay open until the next start.
//!
//! Writing a current version ahead of the stream is safe for the reason a full sync's copy
//! is: the stream resumes from a checkpoint older than the read, so every later change is
//! applied after it, by key.

use std::collections::HashMap;

use bson::{doc, oid::ObjectId, Binary, Bson, Document, RawDocumentBuf};
use futures::TryStreamExt;
use mongodb::Client;
use serde_json::Value;

use super::sync::{state_client, SyncError};
use crate::event::document_id;
use crate::mapping::convert::convert_raw_document;
use crate::mapping::json::to_json;
use crate::mapping::model::{CollectionMapping, MappingSet};
use crate::sink::postgres::state::{self, OpenDeadLetter};
use crate::sink::postgres::PostgresSink;
use crate::sink::Change;
use crate::source::source_error;

/// Letters looked up per `find` (each adds a few candidate `_id`s to one `$in`).
const CHUNK: usize = 200;

/// What the retry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Documents with open letters that were looked at.
    pub documents: usize,
    /// Of those, written again (their current version converts now).
    pub written: usize,
    /// Of those, gone from MongoDB.
    pub deleted: usize,
    /// Of those, still refused (their letters stay open).
    pub still_refused: usize,
}

/// Retries the open letters of the stream's collections `selected` (every mapped one when
/// `None`), then tells the sink which collections still have open letters. Never fails the
/// start: an error is logged and the letters stay open (module doc).
pub async fn retry_open_letters(
    client: &Client,
    sink: &PostgresSink,
    mappings: &MappingSet,
    selected: Option<&[usize]>,
) -> RetryReport {
    match retry(client, sink, mappings, selected).await {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(%error, "Retrying the open dead letters failed; they stay open and are retried at the next start. Streaming goes on.");
            RetryReport::default()
        }
    }
}

async fn retry(
    client: &Client,
    sink: &PostgresSink,
    mappings: &MappingSet,
    selected: Option<&[usize]>,
) -> Result<RetryReport, SyncError> {
    let open = {
        let pg = state_client(sink).await?;
        state::open_dead_letters(&**pg, sink.state_schema(), sink.stream(), None).await?
    };
    let mut by_collection: Vec<Vec<OpenDeadLetter>> =
        mappings.collections.iter().map(|_| Vec::new()).collect();
    for letter in open {
        if let Some(c) = mappings
            .collections
            .iter()
            .position(|m| m.namespace() == letter.namespace)
        {
            by_collection[c].push(letter);
        }
    }
    let mut report = RetryReport::default();
    let mut still_open = Vec::new();
    for (c, letters) in by_collection.into_iter().enumerate() {
        if letters.is_empty() {
            continue;
        }
        if selected.is_some_and(|s| !s.contains(&c)) {
            still_open.push(c);
            continue;
        }
        let mapping = &mappings.collections[c];
        let before = report.still_refused;
        for chunk in letters.chunks(CHUNK) {
            retry_chunk(client, sink, mapping, c, chunk, &mut report).await?;
        }
        if report.still_refused > before {
            still_open.push(c);
        }
    }
    sink.set_open_letters(&still_open);
    if report.documents > 0 {
        tracing::info!(
            documents = report.documents,
            written = report.written,
            deleted = report.deleted,
            still_refused = report.still_refused,
            "Retried the open dead letters: documents that convert now were written and their letters resolved; those still refused stay open (`tributary dead-letters` lists them)."
        );
    }
    Ok(report)
}

async fn retry_chunk(
    client: &Client,
    sink: &PostgresSink,
    mapping: &CollectionMapping,
    collection: usize,
    letters: &[OpenDeadLetter],
    report: &mut RetryReport,
) -> Result<(), SyncError> {
    // A letter none of whose candidates can be queried (module doc) stays open, untouched.
    let (letters, unqueryable): (Vec<&OpenDeadLetter>, Vec<&OpenDeadLetter>) =
        letters.iter().partition(|l| !letter_ids(l).is_empty());
    let coll = client
        .database(&mapping.database)
        .collection::<RawDocumentBuf>(&mapping.collection);
    let candidates: Vec<Bson> = letters.iter().flat_map(|l| letter_ids(l)).collect();
    let (letters, found, refused) = match find_ids(&coll, candidates).await {
        Ok(found) => (letters, found, Vec::new()),
        // The server refused the lookup: an `_id` its matcher takes for operators, by a rule
        // this module does not know. One letter at a time, so only that letter stays open.
        Err(e) if is_refused_query(&e) => {
            let (mut ok, mut found, mut refused) = (Vec::new(), Vec::new(), Vec::new());
            for letter in letters {
                match find_ids(&coll, letter_ids(letter)).await {
                    Ok(docs) => {
                        ok.push(letter);
                        found.extend(docs);
                    }
                    Err(e) if is_refused_query(&e) => refused.push(letter),
                    Err(e) => return Err(SyncError::Source(source_error(&e, 1))),
                }
            }
            (ok, found, refused)
        }
        Err(e) => return Err(SyncError::Source(source_error(&e, 1))),
    };
    for letter in unqueryable.into_iter().chain(refused) {
        report.documents += 1;
        report.still_refused += 1;
        tracing::warn!(namespace = %letter.namespace, key = %letter.document_key, "A dead letter's _id cannot be looked up in MongoDB; the letter stays open (resolve it by hand: `tributary dead-letters` lists it).");
    }
    if letters.is_empty() {
        return Ok(());
    }
    // The found documents by the plain JSON of their `_id`, as a letter names them.
    let mut by_key: HashMap<String, Vec<&RawDocumentBuf>> = HashMap::new();
    for d in &found {
        if let Ok(id) = document_id(d) {
            by_key.entry(key_form(&to_json(&id))).or_default().push(d);
        }
    }
    // Per document: its upserts and the letters they resolve.
    let mut written: Vec<(Vec<Change>, &[i64])> = Vec::new();
    let mut resolved = Vec::new();
    for letter in letters {
        report.documents += 1;
        let docs = by_key
            .get(&key_form(&letter.document_key))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if docs.is_empty() {
            report.deleted += 1;
            resolved.extend(&letter.ids);
            continue;
        }
        let converted: Result<Vec<_>, _> = docs
            .iter()
            .map(|d| convert_raw_document(mapping, d))
            .collect();
        match converted {
            Ok(converted) => {
                let changes = converted
                    .into_iter()
                    .map(|c| Change::Upsert {
                        collection,
                        key: c.key,
                        rows: c.rows,
                    })
                    .collect();
                written.push((changes, &letter.ids));
            }
            Err(e) => {
                report.still_refused += 1;
                tracing::debug!(namespace = %letter.namespace, key = %letter.document_key, reason = %e, "A dead-lettered document is still refused; its letter stays open.");
            }
        }
    }
    let changes: Vec<Change> = written.iter().flat_map(|(c, _)| c.clone()).collect();
    let all: Vec<i64> = written
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .chain(resolved.iter().copied())
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    match sink.apply_retried(&changes, &all).await {
        Ok(()) => {
            report.written += written.len();
            Ok(())
        }
        // Postgres refused a value the mapping now accepts (a live column narrower than the
        // mapping): one document at a time, so only those stay open.
        Err(e) if e.is_data_error() => {
            sink.apply_retried(&[], &resolved).await?;
            for (changes, ids) in &written {
                match sink.apply_retried(changes, ids).await {
                    Ok(()) => report.written += 1,
                    Err(e) if e.is_data_error() => {
                        report.still_refused += 1;
                        tracing::debug!(error = %e, "Postgres still refuses a dead-lettered document; its letter stays open.");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The `_id`s to look a letter's document up by: exactly those its letters recorded, else
/// (letters written before `id_bson`, or of refused rows) the candidates of its plain JSON.
fn letter_ids(letter: &OpenDeadLetter) -> Vec<Bson> {
    let exact: Vec<Bson> = letter
        .id_bson
        .iter()
        .filter_map(|b| crate::sink::dead_letter::id_of_bson(b))
        .filter(|b| !refused_under_in(b))
        .collect();
    if exact.is_empty() {
        candidate_ids(&letter.document_key)
    } else {
        exact
    }
}

/// A comparable form of a plain-JSON `_id`: numbers by value (`5` and `5.0` are one `_id` in
/// MongoDB), everything else by its JSON text.
fn key_form(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("n:{f}")),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(key_form).collect::<Vec<_>>().join(",")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), key_form(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// The BSON `_id`s whose plain JSON could be `v` (SPEC "JSON encoding of BSON"): a string may
/// have been a String, an ObjectId (24 hex digits), a Date (ISO-8601), a UUID (canonical) or
/// an Int64 beyond 2^53 (digits); a number matches every numeric type in MongoDB; a `$` object
/// is the form of a MinKey, MaxKey, JavaScript or DBPointer (`mapping::json`). Candidates
/// MongoDB refuses as `$in` values are left out: one would fail the whole lookup.
pub fn candidate_ids(v: &Value) -> Vec<Bson> {
    let mut out = candidates(v);
    out.retain(|b| !refused_under_in(b));
    out
}

/// Whether MongoDB refuses `b` as a value of `$in` ("cannot nest $ under $in"): a document
/// whose first field starts with `$`, unless it is a DBRef (it holds both `$ref` and `$id`),
/// which the server compares as a value. Deeper `$` fields are plain values to it (the
/// server's `isExpressionDocument`, src/mongo/db/matcher/expression_parser.cpp).
pub(crate) fn refused_under_in(b: &Bson) -> bool {
    match b {
        Bson::Document(d) => {
            d.keys().next().is_some_and(|k| k.starts_with('$'))
                && !(d.contains_key("$ref") && d.contains_key("$id"))
        }
        _ => false,
    }
}

/// The documents of `coll` whose `_id` is one of `ids`.
async fn find_ids(
    coll: &mongodb::Collection<RawDocumentBuf>,
    ids: Vec<Bson>,
) -> Result<Vec<RawDocumentBuf>, mongodb::error::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    coll.find(doc! {"_id": {"$in": ids}})
        .await?
        .try_collect()
        .await
}

/// Whether the server refused the query itself (a command error such as BadValue), as opposed
/// to failing to answer it.
fn is_refused_query(e: &mongodb::error::Error) -> bool {
    matches!(*e.kind, mongodb::error::ErrorKind::Command(_))
}

fn candidates(v: &Value) -> Vec<Bson> {
    match v {
        Value::Null => vec![Bson::Null],
        Value::Bool(b) => vec![Bson::Boolean(*b)],
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => vec![Bson::Int64(i)],
            (None, Some(f)) => vec![Bson::Double(f)],
            (None, None) => Vec::new(),
        },
        Value::String(s) => {
            let mut out = vec![Bson::String(s.clone())];
            if s.len() == 24 {
                if let Ok(oid) = ObjectId::parse_str(s) {
                    out.push(Bson::ObjectId(oid));
                }
            }
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                out.push(Bson::DateTime(bson::DateTime::from_millis(
                    t.timestamp_millis(),
                )));
            }
            if let Ok(u) = uuid::Uuid::parse_str(s) {
                if u.hyphenated().to_string() == *s {
                    out.push(Bson::Binary(Binary {
                        subtype: bson::spec::BinarySubtype::Uuid,
                        bytes: u.as_bytes().to_vec(),
                    }));
                }
            }
            if let Ok(i) = s.parse::<i64>() {
                out.push(Bson::Int64(i));
            }
            out
        }
        // An array is never an `_id`; a document's fields take their first candidate (the
        // types inside a document `_id` are rarely anything but strings and numbers).
        Value::Array(_) => Vec::new(),
        // MinKey, MaxKey, JavaScript, DBPointer: their plain JSON is Extended JSON.
        Value::Object(fields) if fields.keys().any(|k| k.starts_with('$')) => {
            Bson::try_from(v.clone()).into_iter().collect()
        }
        Value::Object(fields) => {
            let mut d = Document::new();
            for (k, v) in fields {
                match candidates(v).into_iter().next() {
                    Some(b) => {
                        d.insert(k.clone(), b);
                    }
                    None => return Vec::new(),
                }
            }
            vec![Bson::Document(d)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hex_string_may_be_a_string_or_an_object_id() {
        let hex = "5f1d7c0e9b3a4b6c8d2e0f11";
        let c = candidate_ids(&json!(hex));
        assert!(c.contains(&Bson::String(hex.into())));
        assert!(c.contains(&Bson::ObjectId(ObjectId::parse_str(hex).unwrap())));
        // Every candidate gives back the letter's key.
        for b in &c {
            assert_eq!(key_form(&to_json(b)), key_form(&json!(hex)), "{b:?}");
        }
    }

    #[test]
    fn dates_uuids_and_numbers_round_trip() {
        for id in [
            Bson::DateTime(bson::DateTime::from_millis(1_700_000_000_123)),
            Bson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: vec![7; 16],
            }),
            Bson::Int32(5),
            Bson::Double(2.5),
            Bson::Int64(1 << 60),
            Bson::Document(doc! {"a": 1, "b": "x"}),
        ] {
            let key = to_json(&id);
            let found = candidate_ids(&key)
                .iter()
                .any(|b| key_form(&to_json(b)) == key_form(&key));
            assert!(found, "{id:?} is not among the candidates of {key}");
        }
    }

    #[test]
    fn special_ids_are_found_and_unqueryable_ones_left_out() {
        for id in [
            Bson::MaxKey,
            Bson::MinKey,
            Bson::JavaScriptCode("f()".into()),
            Bson::Document(doc! {"a": Bson::MinKey}),
        ] {
            let key = to_json(&id);
            let c = candidate_ids(&key);
            assert!(c.contains(&id), "{id:?}: {c:?}");
            assert!(!c.iter().any(refused_under_in), "{c:?}");
        }
        assert!(candidate_ids(&json!({"$weird": 1})).is_empty());
        // Only the first field of an `$in` value decides (and a DBRef is a value).
        let nested = Bson::Document(doc! {"a": {"$weird": 1}});
        assert!(candidate_ids(&json!({"a": {"$weird": 1}})).contains(&nested));
        assert!(!refused_under_in(&Bson::Document(
            doc! {"$id": 1, "$ref": "c"}
        )));
        assert!(refused_under_in(&Bson::Document(doc! {"$ref": "c"})));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert_eq!(key_form(&json!(5)), key_form(&json!(5.0)));
        assert_ne!(key_form(&json!(5)), key_form(&json!("5")));
    }
}
