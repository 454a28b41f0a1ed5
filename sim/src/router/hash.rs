//! The hashed shard key's hash: MongoDB's `BSONElementHasher::hash64` (seed 0; MD5 over the
//! element's canonical type as a little-endian int32 and its value, numbers squashed to a
//! 64-bit integer, embedded documents hashed field by field with their names), the first 8
//! bytes of the digest read little-endian. Types other than numbers, strings, ObjectIds,
//! booleans, dates, timestamps, binaries, null, MinKey/MaxKey and documents/arrays hash their extended-JSON text instead: stable,
//! but not MongoDB's value.

use bson::{Bson, Document};
use md5::{Digest, Md5};

pub fn hash64(v: &Bson) -> i64 {
    let mut h = Md5::new();
    h.update(0i32.to_le_bytes());
    element(&mut h, v, None);
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_le_bytes(b)
}

fn canonical_type(v: &Bson) -> i32 {
    match v {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        Bson::Null => 5,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        // As the server's own hasher test has it: a timestamp hashes like the date of the
        // same 8 bytes.
        Bson::Timestamp(_) => 45,
        Bson::RegularExpression(_) => 50,
        Bson::MaxKey => 127,
        _ => 60,
    }
}

fn element(h: &mut Md5, v: &Bson, name: Option<&str>) {
    h.update(canonical_type(v).to_le_bytes());
    if let Some(n) = name {
        h.update(n.as_bytes());
        h.update([0u8]);
    }
    match v {
        Bson::Int32(n) => h.update((*n as i64).to_le_bytes()),
        Bson::Int64(n) => h.update(n.to_le_bytes()),
        Bson::Double(f) => h.update(safe_long(*f).to_le_bytes()),
        Bson::String(s) => {
            h.update(((s.len() + 1) as i32).to_le_bytes());
            h.update(s.as_bytes());
            h.update([0u8]);
        }
        Bson::ObjectId(o) => h.update(o.bytes()),
        Bson::Boolean(b) => h.update([u8::from(*b)]),
        Bson::DateTime(d) => h.update(d.timestamp_millis().to_le_bytes()),
        Bson::Timestamp(t) => {
            h.update((((t.time as u64) << 32) | t.increment as u64).to_le_bytes())
        }
        Bson::Binary(b) => {
            h.update((b.bytes.len() as i32).to_le_bytes());
            h.update([u8::from(b.subtype)]);
            h.update(&b.bytes);
        }
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => {}
        Bson::Document(d) => fields(h, d),
        Bson::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                element(h, x, Some(&i.to_string()));
            }
            end_of_object(h);
        }
        other => h.update(other.clone().into_relaxed_extjson().to_string().as_bytes()),
    }
}

fn fields(h: &mut Md5, d: &Document) {
    for (k, v) in d {
        element(h, v, Some(k));
    }
    end_of_object(h);
}

/// The EOO element that ends an embedded object: its canonical type (0) and nothing else (an
/// EOO has no name bytes and no value).
fn end_of_object(h: &mut Md5) {
    h.update(0i32.to_le_bytes());
}

/// `BSONElement::safeNumberLong` of a double: truncated, saturated, NaN as 0.
fn safe_long(f: f64) -> i64 {
    if f.is_nan() {
        0
    } else {
        f as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, Bson};

    /// Values from the server's `hasher_test.cpp`.
    #[test]
    fn matches_mongodb_hash64() {
        let cases: Vec<(Bson, i64)> = vec![
            (Bson::Int32(0), 4854801880128277513),
            (Bson::Double(0.456), 4854801880128277513),
            (Bson::Double(f64::NAN), 4854801880128277513),
            (Bson::Int32(1), 5902408780260971510),
            (Bson::Double(1.987), 5902408780260971510),
            (Bson::Int64(-1), 1140205862565771219),
            (Bson::Int32(i32::MAX), 1143184177162245883),
            (Bson::Int64(i64::MAX), 921523596458303250),
            (Bson::Double(f64::MAX), 921523596458303250),
            (Bson::Double(-f64::MAX), 4532067210535695462),
            (Bson::MinKey, 7961148599568647290),
            (Bson::MaxKey, 5504842513779440750),
            (Bson::String("abc".into()), 8478485326885698097),
            (Bson::String(String::new()), 2049396243249673340),
            (
                Bson::Document(doc! {"a": "abc", "b": 123i64}),
                4771603801758380216,
            ),
            (Bson::Document(doc! {}), 7980500913326740417),
            (
                Bson::Array(vec!["bar".into(), "baz".into(), "qux".into()]),
                -2938911267422831539,
            ),
            (Bson::Array(vec![]), 8849948234993459283),
            (
                Bson::ObjectId(ObjectId::parse_str("010203040506070809101112").unwrap()),
                -5588663249627035708,
            ),
            (Bson::Boolean(true), 6405873908747105701),
            (Bson::Boolean(false), 6289544573401934092),
            (
                Bson::DateTime(bson::DateTime::from_millis(0)),
                -1178696894582842035,
            ),
            (
                Bson::Binary(bson::Binary {
                    subtype: bson::spec::BinarySubtype::Generic,
                    bytes: vec![0, 1, 2, 3, 4, 6],
                }),
                7252465090394235301,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(hash64(&v), want, "hash64({v})");
        }
    }
}
