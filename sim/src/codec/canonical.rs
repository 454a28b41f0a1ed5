//! Inserted documents the simulator can keep exactly as the client sent
//! them.
//!
//! An insert stores its document as the BSON that `encode_document` writes
//! for the decoded `Document`. For most documents those are the very bytes
//! on the wire, and decoding ~10 owned values per document only to encode
//! them again was most of an insert's CPU (and, through the allocator's
//! fresh pages, of its page faults). [`raw_insert`] recognises such bytes
//! without allocating: the types `decode_document` decodes itself, array
//! keys `0, 1, 2...`, no key twice in one document, and `_id` first (so
//! `with_id_first` would not move it). Anything else is decoded as before,
//! so what is stored is the same either way.

use bson::Bson;

use super::{decode_elements, document_end, index_key, itoa_buf, le_i32};

/// A document of an insert's `documents` sequence, kept as its wire bytes.
#[derive(Debug, Clone, Copy)]
pub struct RawInsert<'a> {
    /// One whole document; decoding and re-encoding it gives these bytes.
    pub bytes: &'a [u8],
    /// `store::approx_size` of the decoded document.
    pub approx: usize,
}

impl RawInsert<'_> {
    /// The document's `_id`, decoded.
    pub fn id(self) -> Bson {
        let mut id = Bson::Null;
        // Stops after the first element (`_id`, see `raw_insert`).
        let _ = decode_elements(self.bytes, 0, |_, value| {
            id = value;
            None
        });
        id
    }

    /// The decoded document, for the paths that need one (transactions,
    /// unique secondary indexes).
    pub fn to_document(self) -> bson::Document {
        super::decode_document(self.bytes, 0).unwrap_or_default()
    }
}

/// `bytes` (one whole document) as a [`RawInsert`], when the insert path
/// would store exactly these bytes for it.
pub fn raw_insert(bytes: &[u8]) -> Option<RawInsert<'_>> {
    // `_id` first, and not an array (which the insert rejects).
    if bytes.get(5..9) != Some(b"_id\0") || bytes.get(4) == Some(&0x04) {
        return None;
    }
    let approx = approx_size(bytes, 0, false, &mut Vec::new())?;
    Some(RawInsert { bytes, approx })
}

/// `store::approx_size` of the document or array `bytes` encodes, when it
/// is canonical (see the module doc); `None` otherwise. Accepts exactly
/// what `decode_elements` accepts, minus duplicate keys. `keys` holds the
/// keys of the documents being scanned, innermost last.
fn approx_size<'a>(
    bytes: &'a [u8],
    depth: usize,
    array: bool,
    keys: &mut Vec<&'a [u8]>,
) -> Option<usize> {
    let end = document_end(bytes, depth)?;
    let mut pos = 4;
    let level = keys.len();
    let mut buf = itoa_buf();
    let mut index = 0;
    let mut size = 5;
    while pos < end {
        let kind = bytes[pos];
        pos += 1;
        let nul = bytes[pos..end].iter().position(|b| *b == 0)?;
        let key = &bytes[pos..pos + nul];
        std::str::from_utf8(key).ok()?;
        if array {
            (key == index_key(&mut buf, index)).then_some(())?;
            index += 1;
        } else {
            keys.push(key);
        }
        pos += nul + 1;
        let rest = &bytes[pos..end];
        let fixed = |n: usize| rest.get(..n);
        let len = || usize::try_from(le_i32(fixed(4)?)).ok();
        // (approx_value, bytes used), as `store::approx_value` counts.
        let (value, used) = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => (fixed(8).map(|_| 8)?, 8),
            0x02 => {
                let len = len()?;
                let body = rest.get(4..4 + len)?;
                let (text, nul) = body.split_last().map(|(n, t)| (t, *n))?;
                if nul != 0 || text.contains(&0) {
                    return None;
                }
                std::str::from_utf8(text).ok()?;
                (text.len() + 5, 4 + len)
            }
            0x03 | 0x04 => {
                let len = len()?;
                let body = rest.get(..len)?;
                (approx_size(body, depth + 1, kind == 0x04, keys)?, len)
            }
            0x05 => {
                let len = len()?;
                // Subtype 2 (old binary) is left to `bson`, as when decoding.
                if *rest.get(4)? == 0x02 {
                    return None;
                }
                rest.get(5..5 + len)?;
                (len + 5, 5 + len)
            }
            0x07 => (fixed(12).map(|_| 12)?, 12),
            0x08 => match fixed(1)? {
                [0] | [1] => (8, 1),
                _ => return None,
            },
            0x0A | 0xFF | 0x7F => (8, 0),
            0x10 => (fixed(4).map(|_| 4)?, 4),
            _ => return None,
        };
        size += if array {
            value + 4
        } else {
            key.len() + 2 + value
        };
        pos += used;
    }
    if pos != end || has_duplicates(&keys[level..]) {
        return None;
    }
    keys.truncate(level);
    Some(size)
}

/// Whether a key occurs twice (a `Document` keeps one, so its bytes differ).
fn has_duplicates(keys: &[&[u8]]) -> bool {
    if keys.len() <= 16 {
        return keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k));
    }
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, Document};

    /// What the insert path stores for `bytes`: decoded, `_id` first,
    /// encoded again.
    fn stored(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
        let doc: Document = bson::from_slice(bytes).ok()?;
        let doc = crate::node::writes::with_id_first(doc);
        let mut out = Vec::new();
        super::super::encode_document(&mut out, &doc)
            .map(|_| out.clone())
            .or_else(|| bson::to_vec(&doc).ok())
            .map(|b| (b, crate::node::store::approx_size(&doc)))
    }

    /// A raw insert is only ever recognised where it stores what decoding
    /// would have stored, with the same approx_size and `_id`.
    fn agrees(bytes: &[u8]) {
        let Some(raw) = raw_insert(bytes) else {
            return;
        };
        let (want, approx) = stored(bytes).expect("recognised bytes that bson refuses");
        assert_eq!(raw.bytes, &want[..], "bytes differ for {bytes:?}");
        assert_eq!(raw.approx, approx);
        let doc: Document = bson::from_slice(bytes).unwrap();
        assert_eq!(Some(&raw.id()), doc.get("_id"));
        assert_eq!(bson::to_vec(&raw.to_document()).unwrap(), want);
    }

    #[test]
    fn common_documents_are_kept_as_sent() {
        use bson::{oid::ObjectId, Binary, DateTime, Timestamp};
        let doc = doc! {
            "_id": ObjectId::new(), "d": 1.5, "nan": f64::NAN, "s": "héllo", "e": "",
            "n": null, "t": true, "f": false, "i": -7i32, "l": 1i64 << 40,
            "ts": Timestamp { time: 5, increment: 9 }, "dt": DateTime::from_millis(-3),
            "uuid": bson::Uuid::new(),
            "bin": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![1, 2, 3] },
            "min": Bson::MinKey, "max": Bson::MaxKey,
            "nested": {"a": [1, "x", {"b": []}, [[]]], "": {}},
        };
        let bytes = bson::to_vec(&doc).unwrap();
        assert!(raw_insert(&bytes).is_some());
        agrees(&bytes);
        for cut in 0..bytes.len() {
            agrees(&bytes[..cut]);
        }
        for at in 0..bytes.len() {
            for byte in [0u8, 1, 2, 4, b'_', 0x7F, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] = byte;
                agrees(&bad);
            }
        }
    }

    #[test]
    fn documents_that_would_change_are_decoded() {
        let cases = [
            doc! {"a": 1, "_id": 2},
            doc! {"x": 1},
            doc! {"_id": [1]},
            doc! {"_id": 1, "d": Bson::Decimal128("1.5".parse().unwrap())},
            doc! {"_id": 1, "r": bson::Regex { pattern: "a".into(), options: "i".into() }},
            doc! {"_id": 1, "b": bson::Binary { subtype: BinarySubtype::BinaryOld, bytes: vec![] }},
        ];
        for doc in cases {
            let bytes = bson::to_vec(&doc).unwrap();
            assert!(raw_insert(&bytes).is_none(), "{doc}");
        }
        // A key twice, at the top and nested (the encoder never writes
        // that, so build the bytes by hand), and array keys out of order.
        let dup = |inner: &[u8]| {
            let mut d = (inner.len() as i32 + 5).to_le_bytes().to_vec();
            d.extend_from_slice(inner);
            d.push(0);
            d
        };
        let mut elems = b"\x10_id\0\x01\0\0\0".to_vec();
        elems.extend_from_slice(b"\x10a\0\x01\0\0\0\x10a\0\x02\0\0\0");
        assert!(raw_insert(&dup(&elems)).is_none());
        let mut nested = b"\x10_id\0\x01\0\0\0\x03n\0".to_vec();
        nested.extend_from_slice(&dup(b"\x10a\0\x01\0\0\0\x10a\0\x02\0\0\0"));
        assert!(raw_insert(&dup(&nested)).is_none());
        let mut array = b"\x10_id\0\x01\0\0\0\x04n\0".to_vec();
        array.extend_from_slice(&dup(b"\x101\0\x01\0\0\0\x100\0\x02\0\0\0"));
        assert!(raw_insert(&dup(&array)).is_none());
        // The same key in different documents is fine.
        let mut apart = b"\x10_id\0\x01\0\0\0\x03a\0".to_vec();
        apart.extend_from_slice(&dup(b"\x10a\0\x01\0\0\0"));
        assert!(raw_insert(&dup(&apart)).is_some());
        agrees(&dup(&apart));
    }

    #[test]
    fn many_keys_are_checked_for_duplicates_too() {
        let mut doc = doc! {"_id": 1};
        for i in 0..40 {
            doc.insert(format!("k{i}"), i);
        }
        let bytes = bson::to_vec(&doc).unwrap();
        assert!(raw_insert(&bytes).is_some());
        agrees(&bytes);
        // Rename k39 to k19.
        let at = bytes.windows(4).position(|w| w == b"k39\0").unwrap();
        let mut dup = bytes.clone();
        dup[at..at + 4].copy_from_slice(b"k19\0");
        assert!(raw_insert(&dup).is_none());
    }

    proptest::proptest! {
        #[test]
        fn recognised_documents_store_the_same_bytes(
            fields in proptest::collection::vec(("[_a-c]{0,3}", crate::bson_order::tests::arb_bson()), 0..6),
            id in crate::bson_order::tests::arb_bson(),
        ) {
            let mut doc = doc! {"_id": id};
            doc.extend(fields);
            agrees(&bson::to_vec(&doc).unwrap());
        }
    }
}
