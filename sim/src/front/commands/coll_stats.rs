//! The `$collStats` stage: a collection's document count and storage statistics, as one
//! document (one per shard through mongos, with `shard`). mongo-sim keeps no latency or
//! plan-cache counters, so `latencyStats` and `queryExecStats` are refused rather than
//! answered with zeros.

use bson::{doc, Bson, Document};

use super::type_name;
use crate::error::CommandError;
use crate::node::store::{approx_value, stored_size, Collection};

pub const STAGE: &str = "$collStats";

/// What the stage asks for.
pub struct Spec {
    count: bool,
    storage_scale: Option<i64>,
}

/// Parses `{$collStats: {...}}`'s argument as mongod's IDL does.
pub fn parse(arg: &Bson) -> Result<Spec, CommandError> {
    let Bson::Document(d) = arg else {
        return Err(CommandError::new(
            5447000,
            "Location5447000",
            format!("$collStats must take a nested object but found: $collStats: {arg}"),
        ));
    };
    let mut spec = Spec {
        count: false,
        storage_scale: None,
    };
    for (k, v) in d {
        let object = |v: &Bson| match v {
            Bson::Document(o) => Ok(o.clone()),
            other => Err(CommandError::type_mismatch(format!(
                "BSON field '$collStats.{k}' is the wrong type '{}', expected type 'object'",
                type_name(other)
            ))),
        };
        match k.as_str() {
            "count" => {
                object(v)?;
                spec.count = true;
            }
            "storageStats" => {
                let o = object(v)?;
                // A fractional scale counts by its integer part, as mongod's IDL takes it.
                let scale = match o.get("scale") {
                    None => 1,
                    Some(Bson::Double(f)) => f.trunc() as i64,
                    Some(s @ (Bson::Int32(_) | Bson::Int64(_))) => {
                        crate::front::commands::as_i64(Some(s)).unwrap_or(1)
                    }
                    Some(other) => {
                        return Err(CommandError::type_mismatch(format!(
                            "BSON field '$collStats.storageStats.scale' is the wrong type '{}', \
                             expected types '[long, int, decimal, double']",
                            type_name(other)
                        )))
                    }
                };
                if scale < 1 {
                    return Err(CommandError::new(
                        51024,
                        "Location51024",
                        format!("BSON field 'scale' value must be >= 1, actual value '{scale}'"),
                    ));
                }
                spec.storage_scale = Some(scale);
            }
            "latencyStats" | "queryExecStats" => {
                return Err(CommandError::bad_value(format!(
                    "$collStats {k} is not supported by mongo-sim (it keeps no operation counters)"
                )))
            }
            other => {
                return Err(CommandError::new(
                    40415,
                    "Location40415",
                    format!("BSON field '$collStats.{other}' is an unknown field."),
                ))
            }
        }
    }
    Ok(spec)
}

/// The stage's one document for `db.coll` (`c`: `None` when it does not exist) on `host`.
pub fn stats(
    spec: &Spec,
    ns: &str,
    host: &str,
    c: Option<&Collection>,
) -> Result<Document, CommandError> {
    let mut out = doc! {"ns": ns, "host": host, "localTime": bson::DateTime::now()};
    let missing = |what: &str| {
        CommandError::namespace_not_found(format!(
            "PlanExecutor error during aggregation :: caused by :: Unable to retrieve {what} in \
             $collStats stage :: caused by :: Collection [{ns}] not found."
        ))
    };
    if let Some(scale) = spec.storage_scale {
        let c = c.ok_or_else(|| missing("storageStats"))?;
        out.insert("storageStats", storage_stats(c, scale));
    }
    if spec.count {
        let c = c.ok_or_else(|| missing("count"))?;
        out.insert("count", c.docs.len() as i64);
    }
    Ok(out)
}

/// mongod's `appendCollectionStorageStats` over an in-memory store: sizes are the documents'
/// and index keys' BSON sizes (nothing is compressed or preallocated).
fn storage_stats(c: &Collection, scale: i64) -> Document {
    let size: i64 = c.docs.values().map(|d| stored_size(d) as i64).sum();
    let count = c.docs.len() as i64;
    let mut index_sizes = Document::new();
    let mut total_index = 0i64;
    for ix in &c.indexes {
        let name = ix.get_str("name").unwrap_or_default().to_string();
        let key = ix.get_document("key").cloned().unwrap_or_default();
        let bytes: i64 = c
            .docs
            .values()
            .map(|d| {
                let d = d.doc();
                key.keys()
                    .map(|f| crate::query::get_path(&d, f).map_or(1, approx_value) as i64)
                    .sum::<i64>()
            })
            .sum();
        total_index += bytes;
        index_sizes.insert(name, bytes / scale);
    }
    let mut s = doc! {"size": size / scale, "count": count};
    if count > 0 {
        s.insert("avgObjSize", size / count);
    }
    s.insert("numOrphanDocs", 0i64);
    s.insert("storageSize", size / scale);
    s.insert("freeStorageSize", 0i64);
    s.insert("capped", c.cap.is_some());
    if let Some(cap) = c.cap {
        s.insert("max", cap.max as i64);
        s.insert("maxSize", cap.size as i64 / scale);
    }
    s.insert("nindexes", c.indexes.len() as i32);
    s.insert("indexDetails", Document::new());
    s.insert("indexBuilds", Vec::<Bson>::new());
    s.insert("totalIndexSize", total_index / scale);
    s.insert("totalSize", (size + total_index) / scale);
    s.insert("indexSizes", index_sizes);
    s.insert("scaleFactor", scale as i32);
    s
}
