//! One read-only view of a document, whether parsed (`bson::Document`) or still BSON bytes
//! (`RawDocument`), so conversion works on either.
//!
//! The full sync reads documents as bytes and converts them without ever building a
//! `Document`: parsing every document into an `IndexMap` of owned keys and values, looking
//! columns up in it and dropping it again was over a third of a full sync's CPU. Only the
//! values a column reads become owned `Bson`, one at a time.

use std::borrow::Cow;

use bson::{Bson, Document, RawBsonRef, RawDocument};

/// A document to read fields from.
#[derive(Debug, Clone, Copy)]
pub enum DocRef<'a> {
    Parsed(&'a Document),
    Raw(&'a RawDocument),
}

/// One value inside a [`DocRef`].
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    Parsed(&'a Bson),
    Raw(RawBsonRef<'a>),
}

/// The reason given for bytes that are not valid BSON (the driver does not check them all).
fn malformed(e: impl std::fmt::Display) -> String {
    format!("the document is not valid BSON: {e}")
}

impl<'a> DocRef<'a> {
    /// The field `key`; `Err` only when raw bytes are malformed.
    pub fn get(self, key: &str) -> Result<Option<ValueRef<'a>>, String> {
        match self {
            DocRef::Parsed(d) => Ok(d.get(key).map(ValueRef::Parsed)),
            DocRef::Raw(d) => d.get(key).map(|v| v.map(ValueRef::Raw)).map_err(malformed),
        }
    }

    /// The fields in document order.
    pub fn fields(self) -> Result<Vec<(&'a str, ValueRef<'a>)>, String> {
        match self {
            DocRef::Parsed(d) => Ok(d
                .iter()
                .map(|(k, v)| (k.as_str(), ValueRef::Parsed(v)))
                .collect()),
            DocRef::Raw(d) => d
                .into_iter()
                .map(|r| r.map(|(k, v)| (k, ValueRef::Raw(v))).map_err(malformed))
                .collect(),
        }
    }

    pub fn is_empty(self) -> bool {
        match self {
            DocRef::Parsed(d) => d.is_empty(),
            DocRef::Raw(d) => d.is_empty(),
        }
    }
}

impl<'a> ValueRef<'a> {
    /// BSON null or undefined.
    pub fn is_null(self) -> bool {
        matches!(
            self,
            ValueRef::Parsed(Bson::Null | Bson::Undefined)
                | ValueRef::Raw(RawBsonRef::Null | RawBsonRef::Undefined)
        )
    }

    pub fn as_document(self) -> Option<DocRef<'a>> {
        match self {
            ValueRef::Parsed(Bson::Document(d)) => Some(DocRef::Parsed(d)),
            ValueRef::Raw(RawBsonRef::Document(d)) => Some(DocRef::Raw(d)),
            _ => None,
        }
    }

    /// An array's elements in order; `None` when the value is not an array.
    pub fn as_array(self) -> Option<Result<Vec<ValueRef<'a>>, String>> {
        match self {
            ValueRef::Parsed(Bson::Array(items)) => {
                Some(Ok(items.iter().map(ValueRef::Parsed).collect()))
            }
            ValueRef::Raw(RawBsonRef::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|r| r.map(ValueRef::Raw).map_err(malformed))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The value as `Bson`: borrowed when parsed already, else decoded (scalars are cheap;
    /// sub-documents and arrays are decoded whole).
    pub fn to_bson(self) -> Result<Cow<'a, Bson>, String> {
        match self {
            ValueRef::Parsed(v) => Ok(Cow::Borrowed(v)),
            ValueRef::Raw(v) => Bson::try_from(v).map(Cow::Owned).map_err(malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, RawDocumentBuf};

    fn both(d: &Document, check: impl Fn(DocRef<'_>)) {
        let raw = RawDocumentBuf::from_document(d).unwrap();
        check(DocRef::Parsed(d));
        check(DocRef::Raw(&raw));
    }

    #[test]
    fn parsed_and_raw_documents_read_alike() {
        let d = doc! {"a": 1, "b": {"c": [1, "x", null]}, "n": null, "e": {}};
        both(&d, |v| {
            assert_eq!(
                v.get("a").unwrap().unwrap().to_bson().unwrap().as_ref(),
                &Bson::Int32(1)
            );
            assert!(v.get("zz").unwrap().is_none());
            assert!(v.get("n").unwrap().unwrap().is_null());
            let b = v.get("b").unwrap().unwrap().as_document().unwrap();
            let items = b.get("c").unwrap().unwrap().as_array().unwrap().unwrap();
            assert_eq!(items.len(), 3);
            assert!(items[2].is_null());
            assert_eq!(
                items[1].to_bson().unwrap().as_ref(),
                &Bson::String("x".into())
            );
            let keys: Vec<&str> = v.fields().unwrap().into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys, ["a", "b", "n", "e"]);
            assert!(v
                .get("e")
                .unwrap()
                .unwrap()
                .as_document()
                .unwrap()
                .is_empty());
            assert!(v.get("a").unwrap().unwrap().as_array().is_none());
        });
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        // A document claiming a string longer than its bytes.
        let mut bytes = bson::to_vec(&doc! {"s": "abc"}).unwrap();
        let at = bytes.len() - 9;
        bytes[at] = 100;
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        let err = DocRef::Raw(raw).get("s").unwrap_err();
        assert!(err.contains("not valid BSON"), "{err}");
    }
}
