//! Change events over 16 MB. MongoDB serialises an event within 16 MiB + 16 KiB; a larger one
//! (a large document with `updateLookup` plus a large `updateDescription`) fails the read with
//! 10334 BSONObjectTooLarge, at the same event after every reopen. From 7.0 (6.0.9) the
//! `$changeStreamSplitLargeEvent` stage returns it as fragments instead (`splitEvent:
//! {fragment, of}`, each with its own resume token); this module decides whether the server
//! has the stage and joins fragments back into one event.

use bson::{doc, Bson, RawDocumentBuf};
use mongodb::change_stream::event::ChangeStreamEvent;
use mongodb::Client;

/// The first wire version of MongoDB 7.0, which has `$changeStreamSplitLargeEvent` (6.0.9+
/// has it too, but shares wire version 17 with the 6.0 releases before it).
const SPLIT_STAGE_WIRE_VERSION: i64 = 21;

/// The stage that splits events over 16 MB into fragments; it must end the pipeline.
pub const SPLIT_STAGE: &str = "$changeStreamSplitLargeEvent";

/// Whether the server has `$changeStreamSplitLargeEvent`, from `hello`'s `maxWireVersion`
/// (what drivers use to decide which features a server has).
pub async fn splits_large_events(client: &Client) -> Result<bool, mongodb::error::Error> {
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await?;
    let wire = match hello.get("maxWireVersion") {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        _ => 0,
    };
    Ok(wire >= SPLIT_STAGE_WIRE_VERSION)
}

/// An event as the driver would decode it.
pub fn decode_event(
    raw: &RawDocumentBuf,
) -> Result<ChangeStreamEvent<RawDocumentBuf>, mongodb::error::Error> {
    bson::from_slice(raw.as_bytes()).map_err(|e| {
        mongodb::error::Error::custom(format!("a change event could not be decoded: {e}"))
    })
}

/// The fragments of one split event, joined as they arrive: every field but `_id` and
/// `splitEvent`, in fragment order, under the last fragment's `_id` (resuming after it
/// continues with the next event).
pub struct Fragments {
    /// The fields so far, as BSON elements.
    fields: RawDocumentBuf,
    /// Fragments seen (`splitEvent.fragment` of the last one).
    seen: i32,
    /// `splitEvent.of`.
    of: i32,
    /// The last fragment's `_id`.
    id: Option<bson::RawBson>,
}

/// `splitEvent: {fragment, of}` of a raw event, if it is a fragment.
fn split_event(raw: &RawDocumentBuf) -> Result<Option<(i32, i32)>, mongodb::error::Error> {
    let bad = |e: String| {
        mongodb::error::Error::custom(format!("a split event fragment is malformed: {e}"))
    };
    match raw.get_document("splitEvent") {
        Ok(split) => {
            let fragment = split.get_i32("fragment").map_err(|e| bad(e.to_string()))?;
            let of = split.get_i32("of").map_err(|e| bad(e.to_string()))?;
            Ok(Some((fragment, of)))
        }
        Err(e) if matches!(e.kind, bson::raw::ValueAccessErrorKind::NotPresent) => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

impl Fragments {
    /// Starts joining at `raw` when it is a split event's first fragment; `None` when it is a
    /// whole event.
    pub fn start(raw: &RawDocumentBuf) -> Result<Option<Fragments>, mongodb::error::Error> {
        let Some((fragment, of)) = split_event(raw)? else {
            return Ok(None);
        };
        if fragment != 1 || of < 1 {
            return Err(mongodb::error::Error::custom(format!(
                "the change stream returned fragment {fragment} of {of} of a split event without its first"
            )));
        }
        let mut joined = Fragments {
            fields: RawDocumentBuf::new(),
            seen: 0,
            of,
            id: None,
        };
        joined.take(raw, fragment)?;
        Ok(Some(joined))
    }

    pub fn complete(&self) -> bool {
        self.seen == self.of
    }

    pub fn add(&mut self, raw: &RawDocumentBuf) -> Result<(), mongodb::error::Error> {
        match split_event(raw)? {
            Some((fragment, of)) if fragment == self.seen + 1 && of == self.of => {
                self.take(raw, fragment)
            }
            other => Err(mongodb::error::Error::custom(format!(
                "the change stream returned {} after fragment {} of {} of a split event",
                match other {
                    Some((f, o)) => format!("fragment {f} of {o}"),
                    None => "a whole event".to_owned(),
                },
                self.seen,
                self.of
            ))),
        }
    }

    fn take(&mut self, raw: &RawDocumentBuf, fragment: i32) -> Result<(), mongodb::error::Error> {
        for element in raw.iter() {
            let (key, value) = element.map_err(|e| {
                mongodb::error::Error::custom(format!("a split event fragment is malformed: {e}"))
            })?;
            match key {
                "_id" => self.id = Some(value.to_raw_bson()),
                "splitEvent" => {}
                _ => self.fields.append(key, value.to_raw_bson()),
            }
        }
        self.seen = fragment;
        Ok(())
    }

    pub fn finish(self) -> Result<ChangeStreamEvent<RawDocumentBuf>, mongodb::error::Error> {
        let mut whole = RawDocumentBuf::new();
        if let Some(id) = self.id {
            whole.append("_id", id);
        }
        for element in self.fields.iter() {
            let (key, value) = element.map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
            whole.append(key, value.to_raw_bson());
        }
        decode_event(&whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(d: bson::Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&d).unwrap()
    }

    #[test]
    fn fragments_join_into_the_event_under_the_last_token() {
        let first = raw(doc! {
            "_id": {"_data": "82A0"},
            "splitEvent": {"fragment": 1, "of": 2},
            "operationType": "update",
            "clusterTime": bson::Timestamp { time: 5, increment: 1 },
            "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": "a"},
            "updateDescription": {"updatedFields": {"q": 2}, "removedFields": []},
        });
        let second = raw(doc! {
            "_id": {"_data": "82A1"},
            "splitEvent": {"fragment": 2, "of": 2},
            "fullDocument": {"_id": "a", "q": 2},
        });
        assert!(Fragments::start(&second).is_err());
        assert!(Fragments::start(&raw(
            doc! {"_id": {"_data": "82"}, "operationType": "insert"}
        ))
        .unwrap()
        .is_none());
        let mut joined = Fragments::start(&first).unwrap().unwrap();
        assert!(!joined.complete());
        assert!(joined.add(&first).is_err());
        joined.add(&second).unwrap();
        assert!(joined.complete());
        let event = joined.finish().unwrap();
        assert_eq!(
            bson::to_document(&event.id).unwrap(),
            doc! {"_data": "82A1"}
        );
        assert_eq!(event.full_document, Some(raw(doc! {"_id": "a", "q": 2})));
        assert_eq!(event.document_key, Some(doc! {"_id": "a"}));
        assert!(event.update_description.is_some());
    }
}
