//! The 16 MB limits as MongoDB 7 applies them to documents and change
//! events, and `$changeStreamSplitLargeEvent` (7.0+), which cuts an event
//! too large for one reply into fragments.
//!
//! Limits (server `bsonobj.h`, `ops/insert.cpp`, `update_stage.cpp`,
//! `document_source_change_stream_split_large_event.h`):
//!
//! - a stored document is at most `BSONObjMaxUserSize` (16 MiB): a larger
//!   insert fails with 2 BadValue "object to insert too large", a larger
//!   result of an update with 17419, of an upsert with 17420;
//! - a change event is serialised with the internal limit (16 MiB + 16 KiB):
//!   a larger one fails the `aggregate`/`getMore` with 10334
//!   BSONObjectTooLarge, whose message names the event's `_id` (its resume
//!   token) as the object's first element, and the cursor is gone;
//! - with the split stage, an event over the internal limit minus 8 KiB is
//!   split: fields other than `_id` sorted by (BSON size, name) and packed
//!   greedily, each fragment `{_id: <fragment token>, splitEvent: {fragment:
//!   n, of: m}, ...fields}` (`change_stream_split_event_helpers.cpp`).
//!
//! Nuance not reproduced: the server counts a fragment with its sort-key
//! metadata; here that is estimated as one more copy of the token.

use bson::{doc, Bson, Document};

use crate::error::CommandError;
use crate::token;

/// `BSONObjMaxUserSize`: the largest document a collection stores.
pub const MAX_USER_SIZE: usize = 16 * 1024 * 1024;
/// `BSONObjMaxInternalSize`: the largest object the server serialises,
/// which bounds a change event returned without the split stage.
pub const MAX_INTERNAL_SIZE: usize = MAX_USER_SIZE + 16 * 1024;
/// `kBSONObjMaxChangeEventSize`: events above it are split by the stage
/// (8 KiB are left for the rest of the cursor reply).
pub const MAX_CHANGE_EVENT_SIZE: usize = MAX_INTERNAL_SIZE - 8 * 1024;
/// The stage's name.
pub const STAGE: &str = "$changeStreamSplitLargeEvent";

/// Below this `store::approx_size` a document is surely within the limits,
/// so only larger ones are serialised to measure them exactly (the
/// estimate is off by well under half for any shape).
pub const CERTAINLY_SMALL: usize = 8 * 1024 * 1024;

/// The exact BSON size of `doc`.
pub fn bson_size(doc: &Document) -> usize {
    // Serialising a `Document` fails only on keys with NUL bytes, which
    // never reach storage; such a document is treated as empty.
    bson::to_vec(doc).map(|v| v.len()).unwrap_or(5)
}

/// The exact size of `doc` when `approx` (its `store::approx_size`) could
/// be near a limit, else `approx`.
pub fn size_if_large(doc: &Document, approx: usize) -> usize {
    if approx < CERTAINLY_SMALL {
        approx
    } else {
        bson_size(doc)
    }
}

/// Size of one element `key: value` inside a document.
fn element_size(key: &str, value: &Bson) -> usize {
    let mut d = Document::new();
    d.insert(key, value.clone());
    bson_size(&d) - 5
}

/// The insert error for a document over 16 MiB (`fixDocumentForInsert`).
pub fn insert_too_large(size: usize) -> CommandError {
    CommandError::new(
        2,
        "BadValue",
        format!("object to insert too large. size in bytes: {size}, max size: {MAX_USER_SIZE}"),
    )
}

/// The update error for a result over 16 MiB.
pub fn update_too_large() -> CommandError {
    CommandError::new(
        17419,
        "Location17419",
        format!("Resulting document after update is larger than {MAX_USER_SIZE}"),
    )
}

/// The upsert error for an inserted document over 16 MiB.
pub fn upsert_too_large() -> CommandError {
    CommandError::new(
        17420,
        "Location17420",
        format!("Document to upsert is larger than {MAX_USER_SIZE}"),
    )
}

/// The error of serialising an event of `size` bytes whose `_id` is
/// `token` (`BSONObj::_assertInvalid`), without the executor's prefix.
pub fn event_too_large(size: usize, token: &str) -> CommandError {
    CommandError::new(
        10334,
        "BSONObjectTooLarge",
        format!(
            "BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and \
             {MAX_INTERNAL_SIZE}(16MB) First element: _id: {{ _data: \"{token}\" }}"
        ),
    )
}

/// Removes `$changeStreamSplitLargeEvent` from the stages that follow
/// `$changeStream`, checking it as the server does; whether it was there.
pub fn take_stage(stages: &mut Vec<Document>) -> Result<bool, CommandError> {
    let Some(pos) = stages.iter().position(|s| s.contains_key(STAGE)) else {
        return Ok(false);
    };
    let spec = stages[pos].get(STAGE);
    if !matches!(spec, Some(Bson::Document(d)) if d.is_empty()) || stages[pos].len() != 1 {
        return Err(CommandError::new(
            7182800,
            "Location7182800",
            "$changeStreamSplitLargeEvent spec should be an empty object",
        ));
    }
    if pos + 1 != stages.len() {
        return Err(CommandError::new(
            7182802,
            "Location7182802",
            "$changeStreamSplitLargeEvent must be the last stage in the pipeline",
        ));
    }
    stages.pop();
    Ok(true)
}

/// The fragments of `event` (already known to be over
/// [`MAX_CHANGE_EVENT_SIZE`]), without the first `skip` of them.
pub fn split(event: &Document, skip: usize) -> Result<Vec<Document>, CommandError> {
    let id = event.get_document("_id").map_err(|_| {
        CommandError::new(
            7182502,
            "Location7182502",
            "Cannot split an event without a resume token",
        )
    })?;
    let tok = token::decode(id).map_err(CommandError::from)?;
    let max = MAX_CHANGE_EVENT_SIZE.saturating_sub(bson_size(id));
    let mut fields: Vec<(usize, &String, &Bson)> = event
        .iter()
        .filter(|(k, _)| k.as_str() != "_id")
        .map(|(k, v)| (element_size(k, v), k, v))
        .collect();
    if fields.is_empty() {
        return Err(CommandError::new(
            7182502,
            "Location7182502",
            "Cannot split an empty event or an event containing solely '_id' field",
        ));
    }
    fields.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // The token's event identifier: operation type plus document key (or,
    // for DDL events, their description).
    let mut ident = doc! {"operationType": event.get_str("operationType").unwrap_or("")};
    match (event.get("documentKey"), event.get("operationDescription")) {
        (Some(key), _) => ident.insert("documentKey", key.clone()),
        (None, Some(desc)) => ident.insert("operationDescription", desc.clone()),
        (None, None) => ident.insert("documentKey", Bson::Null),
    };
    let uuid = event.get("collectionUUID");
    let mut fragments: Vec<Document> = Vec::new();
    let mut rest = fields.into_iter().peekable();
    while rest.peek().is_some() {
        let n = u32::try_from(fragments.len()).unwrap_or(u32::MAX);
        let frag_token = token::encode_fragment(tok.ts, tok.txn_op_index, uuid, &ident, n);
        let mut fragment = doc! {
            "_id": frag_token.clone(),
            "splitEvent": {"fragment": i32::try_from(n).unwrap_or(i32::MAX).saturating_add(1), "of": 0},
        };
        let mut size = bson_size(&fragment) + element_size("$sortKey", &Bson::Document(frag_token));
        // At least one field per fragment, then as many as still fit.
        while let Some((field_size, key, value)) = rest.next() {
            fragment.insert(key.clone(), value.clone());
            size += field_size;
            match rest.peek() {
                Some((next, _, _)) if size + next <= max => {}
                _ => break,
            }
        }
        if size > max {
            return Err(CommandError::new(
                7182500,
                "Location7182500",
                format!(
                    "Splitting change event failed: fragment size {size} is greater than \
                     maximum allowed fragment size {max}"
                ),
            ));
        }
        fragments.push(fragment);
    }
    let of = i32::try_from(fragments.len()).unwrap_or(i32::MAX);
    Ok(fragments
        .into_iter()
        .skip(skip)
        .map(|mut f| {
            if let Ok(split) = f.get_document_mut("splitEvent") {
                split.insert("of", of);
            }
            f
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Timestamp;

    fn event(big: usize, desc: usize) -> Document {
        let id = token::encode(&token::ResumeToken {
            ts: Timestamp {
                time: 100,
                increment: 1,
            },
            txn_op_index: 0,
            kind: token::TokenKind::Event,
            from_invalidate: false,
            document_key: Some(Bson::Document(doc! {"_id": 1})),
            fragment: None,
        });
        doc! {
            "_id": id,
            "operationType": "update",
            "clusterTime": Timestamp { time: 100, increment: 1 },
            "wallTime": bson::DateTime::from_millis(5),
            "fullDocument": {"_id": 1, "blob": "x".repeat(big)},
            "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": 1},
            "updateDescription": {"updatedFields": {"note": "y".repeat(desc)}, "removedFields": [], "truncatedArrays": []},
        }
    }

    #[test]
    fn a_large_update_splits_by_field_size() {
        let ev = event(10 * 1024 * 1024, 9 * 1024 * 1024);
        assert!(bson_size(&ev) > MAX_CHANGE_EVENT_SIZE);
        let frags = split(&ev, 0).unwrap();
        assert_eq!(frags.len(), 2);
        let keys = |d: &Document| d.keys().cloned().collect::<Vec<_>>();
        // Small fields first, by size then name, with the smaller big field.
        assert_eq!(
            keys(&frags[0]),
            vec![
                "_id",
                "splitEvent",
                "wallTime",
                "clusterTime",
                "operationType",
                "documentKey",
                "ns",
                "updateDescription"
            ]
        );
        assert_eq!(keys(&frags[1]), vec!["_id", "splitEvent", "fullDocument"]);
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(
                f.get_document("splitEvent").unwrap(),
                &doc! {"fragment": i as i32 + 1, "of": 2}
            );
            let t = token::decode(f.get_document("_id").unwrap()).unwrap();
            assert_eq!(t.fragment, Some(i as u32));
            assert_eq!(t.document_key, Some(Bson::Document(doc! {"_id": 1})));
            assert!(bson_size(f) <= MAX_CHANGE_EVENT_SIZE);
        }
        // Fragment tokens follow the event's own token and each other.
        let data = |d: &Document| {
            d.get_document("_id")
                .unwrap()
                .get_str("_data")
                .unwrap()
                .to_string()
        };
        assert!(data(&ev) < data(&frags[0]));
        assert!(data(&frags[0]) < data(&frags[1]));
        assert_eq!(split(&ev, 1).unwrap(), frags[1..].to_vec());
    }

    #[test]
    fn the_stage_must_be_last_and_empty() {
        let mut s = vec![doc! {"$match": {}}, doc! {STAGE: {}}];
        assert!(take_stage(&mut s).unwrap());
        assert_eq!(s, vec![doc! {"$match": {}}]);
        let mut s = vec![doc! {STAGE: {}}, doc! {"$match": {}}];
        assert_eq!(take_stage(&mut s).unwrap_err().code, 7182802);
        let mut s = vec![doc! {STAGE: {"a": 1}}];
        assert_eq!(take_stage(&mut s).unwrap_err().code, 7182800);
        assert!(!take_stage(&mut vec![doc! {"$match": {}}]).unwrap());
    }

    #[test]
    fn the_too_large_message_names_the_token() {
        let e = event_too_large(17_000_000, "82ABC");
        assert_eq!(e.code, 10334);
        assert!(e
            .message
            .starts_with("BSONObj size: 17000000 (0x1036640) is invalid."));
        assert!(e
            .message
            .ends_with("First element: _id: { _data: \"82ABC\" }"));
    }
}
