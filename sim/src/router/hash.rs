//! The hashed shard key's hash: MongoDB's `BSONElementHasher::hash64` (seed 0; MD5 over the
//! element's canonical type as a little-endian int32 and its value, numbers squashed to a
//! 64-bit integer, embedded documents hashed field by field with their names), the first 8
//! bytes of the digest read little-endian. Types other than numbers, strings, ObjectIds,
//! booleans, dates, null and documents/arrays hash their extended-JSON text instead: stable,
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
        Bson::Timestamp(_) => 47,
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
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => {}
        Bson::Document(d) => fields(h, d),
        Bson::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                element(h, x, Some(&i.to_string()));
            }
        }
        other => h.update(other.clone().into_relaxed_extjson().to_string().as_bytes()),
    }
}

fn fields(h: &mut Md5, d: &Document) {
    for (k, v) in d {
        element(h, v, Some(k));
    }
}

/// `BSONElement::safeNumberLong` of a double: truncated, saturated, NaN as 0.
fn safe_long(f: f64) -> i64 {
    if f.is_nan() {
        0
    } else {
        f as i64
    }
}
