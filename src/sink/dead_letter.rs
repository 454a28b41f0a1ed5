//! The one builder of dead letters. Every path that refuses a document (streaming, the full
//! sync, a batch narrowed after a Postgres data error) builds its letter here, so a letter is
//! always storable: Postgres `jsonb` and `text` refuse U+0000, and a letter that cannot be
//! written would stop the stream at the same event after every restart.

use base64::Engine as _;
use bson::{Bson, Document, RawDocument};
use serde_json::Value;

use super::{DeadLetter, DocumentRows, SinkError};
use crate::mapping::json::{escape_nul, has_nul, to_json, value_json};
use crate::mapping::model::CollectionMapping;
use crate::mapping::value::PgValue;

impl DeadLetter {
    /// A letter for `document` (absent for a refused delete), refused for `error`.
    pub fn new(
        namespace: &str,
        key: Option<&Bson>,
        document: Option<&RawDocument>,
        error: &str,
        cluster_time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> DeadLetter {
        DeadLetter {
            namespace: namespace.to_owned(),
            document_key: key.map(|k| storable(to_json(k))).unwrap_or(Value::Null),
            document: document.map(storable_document).unwrap_or(Value::Null),
            error: error.replace('\0', "\\u0000"),
            cluster_time,
            row_key: None,
            id_bson: key.and_then(id_bson),
        }
    }

    /// The letter, resolvable by a later write of `key` (the document's converted `_id`).
    pub fn with_row_key(mut self, key: Option<&PgValue>) -> DeadLetter {
        self.row_key = key.map(crate::sink::postgres::plan::key_text);
        self
    }

    /// A letter whose document is already plain JSON (rows Postgres refused; see the sink).
    pub fn of_json(
        namespace: &str,
        key: Value,
        document: Value,
        error: &str,
        cluster_time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> DeadLetter {
        DeadLetter {
            namespace: namespace.to_owned(),
            document_key: storable(key),
            document: storable(document),
            error: error.replace('\0', "\\u0000"),
            cluster_time,
            row_key: None,
            id_bson: None,
        }
    }
}

/// The letter of a document whose rows Postgres refused although the mapping accepted them
/// (a live column narrower than the mapping says, say). A batch holds rows, not documents, so
/// the letter holds the rows as the mapping made them, by table and column; the document
/// itself is still in MongoDB under `document_key`.
pub fn refused_rows(
    mapping: &CollectionMapping,
    namespace: &str,
    key: &PgValue,
    rows: &DocumentRows,
    error: &SinkError,
) -> DeadLetter {
    let tables = mapping.tables();
    let mut out = serde_json::Map::new();
    let row_json = |def: &crate::mapping::model::TableDef, row: &[PgValue]| {
        Value::Object(
            def.columns
                .iter()
                .zip(row)
                .map(|((name, _), v)| (name.clone(), value_json(v)))
                .collect(),
        )
    };
    if let Some(def) = tables.first() {
        out.insert(def.name.clone(), row_json(def, &rows.parent));
    }
    for (def, child_rows) in tables.iter().skip(1).zip(&rows.children) {
        out.insert(
            def.name.clone(),
            Value::Array(child_rows.iter().map(|r| row_json(def, r)).collect()),
        );
    }
    DeadLetter::of_json(
        namespace,
        if rows.id.is_null() {
            value_json(key)
        } else {
            rows.id.clone()
        },
        serde_json::json!({ "refused_rows": out }),
        &format!("Postgres refused the document's rows: {error}"),
        None,
    )
    .with_row_key(Some(key))
}

/// The BSON of `{_id: key}`, which `id_of_bson` reads back.
fn id_bson(key: &Bson) -> Option<Vec<u8>> {
    bson::to_vec(&bson::doc! {"_id": key.clone()}).ok()
}

/// The `_id` a letter's `id_bson` holds.
pub fn id_of_bson(bytes: &[u8]) -> Option<Bson> {
    bson::from_slice::<Document>(bytes)
        .ok()?
        .get("_id")
        .cloned()
}

/// JSON that Postgres stores: NUL written as `\u0000` text.
fn storable(v: Value) -> Value {
    if has_nul(&v) {
        escape_nul(v)
    } else {
        v
    }
}

/// A letter's `document`: its plain JSON; for a document holding U+0000, its BSON in base64
/// beside that JSON with each NUL written as the text `\u0000` (the BSON is exact, the JSON
/// readable); for bytes that are not valid BSON (the driver does not check every element),
/// the bytes in base64 with the reason. Nothing is lost either way, and any BSON tool can
/// read the base64 back.
pub fn storable_document(doc: &RawDocument) -> Value {
    let base64 = || base64::engine::general_purpose::STANDARD.encode(doc.as_bytes());
    match Document::try_from(doc) {
        Ok(d) => {
            let json = to_json(&Bson::Document(d));
            if has_nul(&json) {
                serde_json::json!({
                    "bson_base64": base64(),
                    "json": escape_nul(json),
                })
            } else {
                json
            }
        }
        Err(e) => serde_json::json!({
            "unreadable_bson": e.to_string(),
            "bson_base64": base64(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, RawDocumentBuf};

    #[test]
    fn a_document_with_nul_keeps_its_bson_and_a_storable_json() {
        let d = doc! {"_id": "a\0b", "name": "x\0y", "n": 1};
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        let letter = DeadLetter::new("s.c", d.get("_id"), Some(&raw), "why\0", None);
        assert!(!has_nul(&letter.document));
        assert!(!has_nul(&letter.document_key));
        assert!(!letter.error.contains('\0'));
        assert_eq!(letter.document_key, Value::String("a\\u0000b".into()));
        assert_eq!(letter.document["json"]["name"], "x\\u0000y");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(letter.document["bson_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(Document::from_reader(&bytes[..]).unwrap(), d);
    }

    #[test]
    fn a_plain_document_is_its_json() {
        let d = doc! {"_id": 1, "a": "b"};
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        let letter = DeadLetter::new("s.c", d.get("_id"), Some(&raw), "why", None);
        assert_eq!(letter.document, serde_json::json!({"_id": 1, "a": "b"}));
    }
}
