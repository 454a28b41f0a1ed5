//! BSON bytes without the `bson` crate's serde path, for the common types: decoding a
//! document straight from bytes and encoding one straight into a buffer, both giving exactly
//! what `bson` gives (anything rarer returns `None` and is left to `bson`). Pure, below every
//! other module: the wire framing, the oplog, scans and change events all use it.

use bson::spec::BinarySubtype;
use bson::{Bson, Document};

pub mod canonical;

pub(crate) fn le_i32(b: &[u8]) -> i32 {
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
/// Nesting deeper than this is left to `bson`.
pub(crate) const MAX_DECODE_DEPTH: usize = 64;

/// Decodes `bytes` (exactly one document) into what `bson::from_slice`
/// returns, for the common types straight from the bytes: `bson`'s serde
/// path cost several times as much per inserted document. `None` for
/// anything else (rare types, and every malformed or unusual input), which
/// the caller leaves to `bson`, so its results and errors are unchanged.
pub(crate) fn decode_document(bytes: &[u8], depth: usize) -> Option<Document> {
    let mut doc = Document::new();
    decode_elements(bytes, depth, |key, value| {
        doc.insert(key, value);
        Some(())
    })?;
    Some(doc)
}

pub(crate) fn decode_array(bytes: &[u8], depth: usize) -> Option<Vec<Bson>> {
    let mut items = Vec::new();
    let mut buf = itoa_buf();
    decode_elements(bytes, depth, |key, value| {
        // Keys other than 0, 1, 2... are left to `bson`.
        (key.as_bytes() == index_key(&mut buf, items.len())).then_some(())?;
        items.push(value);
        Some(())
    })?;
    Some(items)
}

/// Where the elements of the BSON document `bytes` end (its trailing NUL), once its length
/// prefix, terminator and nesting `depth` check out; `None` otherwise.
pub(crate) fn document_end(bytes: &[u8], depth: usize) -> Option<usize> {
    if depth > MAX_DECODE_DEPTH || bytes.len() < 5 || bytes.last() != Some(&0) {
        return None;
    }
    if usize::try_from(le_i32(&bytes[..4])).ok()? != bytes.len() {
        return None;
    }
    Some(bytes.len() - 1)
}

pub(crate) fn decode_elements(
    bytes: &[u8],
    depth: usize,
    mut put: impl FnMut(&str, Bson) -> Option<()>,
) -> Option<()> {
    let end = document_end(bytes, depth)?;
    let mut pos = 4;
    while pos < end {
        let kind = bytes[pos];
        pos += 1;
        let nul = bytes[pos..end].iter().position(|b| *b == 0)?;
        let key = std::str::from_utf8(&bytes[pos..pos + nul]).ok()?;
        pos += nul + 1;
        let rest = &bytes[pos..end];
        let fixed = |n: usize| rest.get(..n);
        let (value, used) = match kind {
            0x01 => {
                let b = fixed(8)?;
                (Bson::Double(f64::from_le_bytes(b.try_into().ok()?)), 8)
            }
            0x02 => {
                let len = usize::try_from(le_i32(fixed(4)?)).ok()?;
                let body = rest.get(4..4 + len)?;
                let (text, nul) = body.split_last().map(|(n, t)| (t, *n))?;
                if nul != 0 || text.contains(&0) {
                    return None;
                }
                let text = std::str::from_utf8(text).ok()?;
                (Bson::String(text.to_string()), 4 + len)
            }
            0x03 | 0x04 => {
                let len = usize::try_from(le_i32(fixed(4)?)).ok()?;
                let body = rest.get(..len)?;
                let value = if kind == 0x03 {
                    Bson::Document(decode_document(body, depth + 1)?)
                } else {
                    Bson::Array(decode_array(body, depth + 1)?)
                };
                (value, len)
            }
            0x05 => {
                let len = usize::try_from(le_i32(fixed(4)?)).ok()?;
                let subtype = BinarySubtype::from(*rest.get(4)?);
                if subtype == BinarySubtype::BinaryOld {
                    return None;
                }
                let data = rest.get(5..5 + len)?;
                let value = Bson::Binary(bson::Binary {
                    subtype,
                    bytes: data.to_vec(),
                });
                (value, 5 + len)
            }
            0x07 => {
                let b: [u8; 12] = fixed(12)?.try_into().ok()?;
                (Bson::ObjectId(bson::oid::ObjectId::from_bytes(b)), 12)
            }
            0x08 => match fixed(1)? {
                [0] => (Bson::Boolean(false), 1),
                [1] => (Bson::Boolean(true), 1),
                _ => return None,
            },
            0x09 => {
                let b = fixed(8)?;
                let millis = i64::from_le_bytes(b.try_into().ok()?);
                (Bson::DateTime(bson::DateTime::from_millis(millis)), 8)
            }
            0x0A => (Bson::Null, 0),
            0x10 => (Bson::Int32(le_i32(fixed(4)?)), 4),
            0x11 => {
                let b = fixed(8)?;
                let increment = u32::from_le_bytes(b[..4].try_into().ok()?);
                let time = u32::from_le_bytes(b[4..].try_into().ok()?);
                (Bson::Timestamp(bson::Timestamp { time, increment }), 8)
            }
            0x12 => {
                let b = fixed(8)?;
                (Bson::Int64(i64::from_le_bytes(b.try_into().ok()?)), 8)
            }
            0xFF => (Bson::MinKey, 0),
            0x7F => (Bson::MaxKey, 0),
            _ => return None,
        };
        put(key, value)?;
        pos += used;
    }
    (pos == end).then_some(())
}

/// A BSON array of `items`: `element` writes one item under its decimal index key.
pub(crate) fn encode_list<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut element: impl FnMut(&mut Vec<u8>, &str, &T) -> Option<()>,
) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    let mut buf = itoa_buf();
    for (i, item) in items.iter().enumerate() {
        let key = std::str::from_utf8(index_key(&mut buf, i)).ok()?;
        element(out, key, item)?;
    }
    finish_length(out, start)
}

/// Scratch space for an array index written as a decimal key.
pub(crate) fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// `i` in decimal, the key of array element `i`.
pub(crate) fn index_key(buf: &mut [u8; 20], mut i: usize) -> &[u8] {
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (i % 10) as u8;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    &buf[pos..]
}

/// Appends `doc` as BSON, byte-for-byte what `bson` produces. `None` (with
/// `out` partly written) for what it does not handle: keys containing NUL,
/// which `bson` refuses, and the rare types (regex, code, symbol, old
/// binary...), which are left to `bson`.
pub fn encode_document(out: &mut Vec<u8>, doc: &Document) -> Option<()> {
    encode_fields(out, doc.iter().map(|(k, v)| (k.as_str(), v)))
}

/// [`encode_document`] of a document given as its fields in order.
pub(crate) fn encode_fields<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a str, &'a Bson)>,
) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    for (key, value) in fields {
        encode_element(out, key, value)?;
    }
    finish_length(out, start)
}

pub(crate) fn encode_array(out: &mut Vec<u8>, items: &[Bson]) -> Option<()> {
    encode_list(out, items, |out, key, value| {
        encode_element(out, key, value)
    })
}

pub(crate) fn finish_length(out: &mut Vec<u8>, start: usize) -> Option<()> {
    out.push(0);
    let len = i32::try_from(out.len() - start).ok()?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Some(())
}

/// Appends the element `key: doc` (type 3) as [`encode_element`] would.
pub(crate) fn encode_element_doc(out: &mut Vec<u8>, key: &str, doc: &Document) -> Option<()> {
    if key.as_bytes().contains(&0) {
        return None;
    }
    out.push(0x03);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    encode_document(out, doc)
}

/// Appends one element (type byte, key, value); `None` like [`encode_document`].
pub(crate) fn encode_element(out: &mut Vec<u8>, key: &str, value: &Bson) -> Option<()> {
    if key.as_bytes().contains(&0) {
        return None;
    }
    let type_at = out.len();
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    let element_type: u8 = match value {
        Bson::Double(v) => {
            out.extend_from_slice(&v.to_le_bytes());
            0x01
        }
        Bson::String(s) => {
            let len = i32::try_from(s.len() + 1).ok()?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
            0x02
        }
        Bson::Document(d) => {
            encode_document(out, d)?;
            0x03
        }
        Bson::Array(a) => {
            encode_array(out, a)?;
            0x04
        }
        Bson::Binary(b) if b.subtype != BinarySubtype::BinaryOld => {
            let len = i32::try_from(b.bytes.len()).ok()?;
            out.extend_from_slice(&len.to_le_bytes());
            out.push(u8::from(b.subtype));
            out.extend_from_slice(&b.bytes);
            0x05
        }
        Bson::ObjectId(id) => {
            out.extend_from_slice(&id.bytes());
            0x07
        }
        Bson::Boolean(b) => {
            out.push(u8::from(*b));
            0x08
        }
        Bson::DateTime(d) => {
            out.extend_from_slice(&d.timestamp_millis().to_le_bytes());
            0x09
        }
        Bson::Null => 0x0A,
        Bson::Int32(v) => {
            out.extend_from_slice(&v.to_le_bytes());
            0x10
        }
        Bson::Timestamp(ts) => {
            out.extend_from_slice(&ts.increment.to_le_bytes());
            out.extend_from_slice(&ts.time.to_le_bytes());
            0x11
        }
        Bson::Int64(v) => {
            out.extend_from_slice(&v.to_le_bytes());
            0x12
        }
        Bson::Decimal128(d) => {
            out.extend_from_slice(&d.bytes());
            0x13
        }
        Bson::MinKey => 0xFF,
        Bson::MaxKey => 0x7F,
        _ => return None,
    };
    out[type_at] = element_type;
    Some(())
}
