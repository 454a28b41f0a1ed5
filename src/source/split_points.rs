//! Where a full sync divides a collection into `_id` ranges, one per concurrent reader.
//!
//! Three ways, tried in this order (as MongoDB's Spark connector's partitioners do):
//! 1. **Chunks**: a collection sharded on `{_id: 1}` (a range key) is already divided by the
//!    cluster into chunks of similar size; their lower bounds in `config.chunks`, read through
//!    `mongos`, are split points that cost one small query and follow the data's real spread.
//!    A hashed or non-`_id` shard key divides hash or key space, not `_id`s, so it is of no use.
//! 2. **Sample**: `$sample` of a few dozen `_id`s per range, sorted here; their quantiles split
//!    the collection into ranges of about equal size. For a sample under 5 % of the collection
//!    MongoDB answers from a random cursor (no scan, no sort), on replica sets and through
//!    `mongos` alike.
//! 3. **Skip**: `find().sort({_id: 1}).skip(k).limit(1)` per boundary, an `_id` index walk of
//!    `k` keys each: exact, but its cost grows with the collection. Used when the others are
//!    refused (a server or proxy without `$sample`, no right to read `config`).
//!
//! Splitting is only an optimisation: any failure gives fewer ranges, never a wrong copy (the
//! ranges are built from whatever boundaries come back, in `snapshot`).

use std::fmt;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::{Client, Collection};

use crate::bson_order::compare;
use crate::event::Namespace;

/// `_id`s sampled per range: enough that range sizes stay within about ±20 % of each other.
const SAMPLES_PER_RANGE: u64 = 32;

/// How the split points of a collection were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMethod {
    Chunks,
    Sample,
    Skip,
}

impl fmt::Display for SplitMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SplitMethod::Chunks => "chunks",
            SplitMethod::Sample => "sample",
            SplitMethod::Skip => "skip",
        })
    }
}

/// Up to `ranges - 1` boundaries dividing `namespace` (of about `count` documents) into
/// `ranges` parts, in no particular order, with the method that found them; `None` when no
/// method worked.
pub async fn find(
    client: &Client,
    namespace: &Namespace,
    count: u64,
    ranges: usize,
) -> Option<(Vec<Bson>, SplitMethod)> {
    for method in [SplitMethod::Chunks, SplitMethod::Sample, SplitMethod::Skip] {
        match find_with(client, namespace, count, ranges, method).await {
            Ok(Some(bounds)) => return Some((bounds, method)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(namespace = %namespace, %method, error = %e, "Split points not found this way; trying the next.");
            }
        }
    }
    None
}

/// The boundaries one method gives; `Ok(None)` when it does not apply to this collection.
pub async fn find_with(
    client: &Client,
    namespace: &Namespace,
    count: u64,
    ranges: usize,
    method: SplitMethod,
) -> Result<Option<Vec<Bson>>, mongodb::error::Error> {
    if ranges <= 1 {
        return Ok(Some(Vec::new()));
    }
    match method {
        SplitMethod::Chunks => by_chunks(client, namespace, ranges).await,
        SplitMethod::Sample => by_sample(client, namespace, count, ranges).await,
        SplitMethod::Skip => by_skip(client, namespace, count, ranges).await.map(Some),
    }
}

fn collection(client: &Client, namespace: &Namespace) -> Collection<Document> {
    client
        .database(&namespace.db)
        .collection::<Document>(&namespace.coll)
}

async fn by_chunks(
    client: &Client,
    namespace: &Namespace,
    ranges: usize,
) -> Result<Option<Vec<Bson>>, mongodb::error::Error> {
    let config = client.database("config");
    let Some(entry) = config
        .collection::<Document>("collections")
        .find_one(doc! {"_id": namespace.to_string()})
        .await?
    else {
        return Ok(None);
    };
    if entry.get_bool("dropped").unwrap_or(false) || !is_id_range_key(entry.get("key")) {
        return Ok(None);
    }
    // Since MongoDB 5.0 chunks name their collection by uuid; before, by namespace.
    let filter = match entry.get("uuid") {
        Some(uuid) => doc! {"uuid": uuid.clone()},
        None => doc! {"ns": namespace.to_string()},
    };
    let mins: Vec<Bson> = config
        .collection::<Document>("chunks")
        .find(filter)
        .sort(doc! {"min": 1})
        .projection(doc! {"min": 1})
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|c| c.get_document("min").ok()?.get("_id").cloned())
        .filter(|id| !matches!(id, Bson::MinKey | Bson::MaxKey))
        .collect();
    // Fewer chunks than readers (a young collection): sampling gives every reader a range.
    if mins.len() + 1 < ranges {
        return Ok(None);
    }
    Ok(Some(evenly(mins, ranges)))
}

/// Whether a shard key is exactly `{_id: 1}`: the only key whose chunks are `_id` ranges.
fn is_id_range_key(key: Option<&Bson>) -> bool {
    let Some(Bson::Document(key)) = key else {
        return false;
    };
    key.len() == 1
        && key.get("_id").is_some_and(|v| {
            matches!(v, Bson::Int32(1) | Bson::Int64(1)) || v == &Bson::Double(1.0)
        })
}

async fn by_sample(
    client: &Client,
    namespace: &Namespace,
    count: u64,
    ranges: usize,
) -> Result<Option<Vec<Bson>>, mongodb::error::Error> {
    let size = SAMPLES_PER_RANGE * ranges as u64;
    if count < size.saturating_mul(2) {
        return Ok(None);
    }
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let mut ids: Vec<Bson> = collection(client, namespace)
        .aggregate([
            doc! {"$sample": {"size": size}},
            doc! {"$project": {"_id": 1}},
        ])
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|d| d.get("_id").cloned())
        .collect();
    if ids.len() < ranges {
        return Ok(None);
    }
    ids.sort_by(compare);
    Ok(Some(evenly(ids, ranges)))
}

async fn by_skip(
    client: &Client,
    namespace: &Namespace,
    count: u64,
    ranges: usize,
) -> Result<Vec<Bson>, mongodb::error::Error> {
    let mut bounds = Vec::with_capacity(ranges - 1);
    for i in 1..ranges as u64 {
        let found = collection(client, namespace)
            .find_one(doc! {})
            .sort(doc! {"_id": 1})
            .skip(count * i / ranges as u64)
            .projection(doc! {"_id": 1})
            .await?;
        bounds.extend(found.and_then(|d| d.get("_id").cloned()));
    }
    Ok(bounds)
}

/// `ranges - 1` values of the sorted `values` at even distances (all of them when fewer).
fn evenly(values: Vec<Bson>, ranges: usize) -> Vec<Bson> {
    if values.len() < ranges {
        return values;
    }
    (1..ranges)
        .map(|i| values[i * values.len() / ranges].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_takes_quantiles_and_keeps_all_when_few() {
        let v: Vec<Bson> = (0..100).map(Bson::Int32).collect();
        assert_eq!(
            evenly(v, 4),
            vec![Bson::Int32(25), Bson::Int32(50), Bson::Int32(75)]
        );
        let few: Vec<Bson> = (0..2).map(Bson::Int32).collect();
        assert_eq!(evenly(few.clone(), 4), few);
    }

    #[test]
    fn only_an_id_range_key_gives_id_ranges() {
        assert!(is_id_range_key(Some(&Bson::Document(doc! {"_id": 1}))));
        assert!(is_id_range_key(Some(&Bson::Document(doc! {"_id": 1i64}))));
        assert!(!is_id_range_key(Some(&Bson::Document(
            doc! {"_id": "hashed"}
        ))));
        assert!(!is_id_range_key(Some(&Bson::Document(
            doc! {"_id": 1, "b": 1}
        ))));
        assert!(!is_id_range_key(Some(&Bson::Document(doc! {"region": 1}))));
        assert!(!is_id_range_key(None));
    }
}
