//! Tailable (and tailable + awaitData) cursors on capped user collections: they follow the
//! collection in `$natural` (insertion) order by record id, as mongod's tailable collection
//! scan does, and fail with 136 CappedPositionLost once the record they stood on was deleted
//! (the oldest documents go when the collection is over its `max` or `size`).

use std::time::Duration;

use bson::{Bson, Document};

use crate::error::CommandError;
use crate::node::cursor::{await_batch, BatchDoc, MAX_BATCH_BYTES};
use crate::node::state::Shared;
use crate::node::store::{approx_size, Catalog, Collection};
use crate::query::{project, Filter};

pub struct CappedTail {
    db: String,
    coll: String,
    uuid: bson::Uuid,
    filter: Filter,
    projection: Option<Document>,
    /// The record id of the last document examined (matching or not): the scan's position.
    last: Option<u64>,
    await_data: bool,
    /// Matching documents still to skip (`skip`).
    skip: usize,
    /// Documents the `limit` still allows (`None` = no limit); the cursor ends at 0.
    remaining: Option<usize>,
}

/// The direction of a `{$natural: 1|-1}` sort or hint: `Some(true)` for reverse.
pub fn natural_direction(spec: Option<&Document>) -> Option<bool> {
    let spec = spec?;
    if spec.len() != 1 {
        return None;
    }
    let n = match spec.get("$natural")? {
        Bson::Int32(n) => *n as f64,
        Bson::Int64(n) => *n as f64,
        Bson::Double(n) => *n,
        _ => return None,
    };
    Some(n < 0.0)
}

/// Refuses what mongod refuses for a tailable find: a sort other than `{$natural: 1}`.
pub fn check_sort(sort: Option<&Document>) -> Result<(), CommandError> {
    let Some(sort) = sort.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    if natural_direction(Some(sort)) == Some(false) {
        Ok(())
    } else {
        Err(CommandError::bad_value(
            "cannot use tailable option with a sort other than {$natural: 1}",
        ))
    }
}

impl CappedTail {
    pub fn open(
        (db, coll): (&str, &str),
        c: &Collection,
        filter: &Document,
        projection: Option<&Document>,
        await_data: bool,
        (skip, limit): (usize, usize),
    ) -> Result<Self, CommandError> {
        Ok(Self {
            db: db.to_string(),
            coll: coll.to_string(),
            uuid: c.uuid,
            filter: Filter::parse(filter)?,
            projection: projection.filter(|p| !p.is_empty()).cloned(),
            last: None,
            await_data,
            skip,
            remaining: (limit > 0).then_some(limit),
        })
    }

    /// Whether the `limit` has been reached (the cursor is closed then).
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Up to `batch_size` matching documents after the position (0 = only the byte cap).
    pub fn collect(
        &mut self,
        catalog: &Catalog,
        batch_size: usize,
    ) -> Result<Vec<BatchDoc>, CommandError> {
        let c = match catalog.get(&self.db, &self.coll) {
            Some(c) if c.uuid == self.uuid => c,
            _ => {
                return Err(CommandError::new(
                    175,
                    "QueryPlanKilled",
                    format!("collection dropped. UUID {}", self.uuid),
                ))
            }
        };
        if let Some(last) = self.last.filter(|r| !c.natural.contains_key(r)) {
            return Err(CommandError::new(
                136,
                "CappedPositionLost",
                format!(
                    "CollectionScan died due to position in capped collection being deleted. \
                     Last seen record id: RecordId({last})"
                ),
            ));
        }
        let from = self.last.map_or(0, |r| r + 1);
        let mut out = Vec::new();
        let mut bytes = 0;
        for (rid, key) in c.natural.range(from..) {
            if self.exhausted() {
                break;
            }
            self.last = Some(*rid);
            let Some(stored) = c.docs.get(key) else {
                continue;
            };
            let doc = stored.doc();
            if !self.filter.matches(doc.as_ref()) {
                continue;
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if let Some(n) = &mut self.remaining {
                *n -= 1;
            }
            let doc = match &self.projection {
                Some(p) => project(&doc, p)?,
                None => doc.into_owned(),
            };
            bytes += approx_size(&doc);
            out.push(BatchDoc::Owned(doc));
            if (batch_size > 0 && out.len() >= batch_size) || bytes >= MAX_BATCH_BYTES {
                break;
            }
        }
        Ok(out)
    }

    /// A getMore: what is there, or with awaitData up to `max_wait` for new documents.
    pub async fn get_more(
        &mut self,
        shared: &Shared,
        batch_size: usize,
        max_wait: Duration,
    ) -> Result<Vec<BatchDoc>, CommandError> {
        let await_data = self.await_data;
        await_batch(shared, max_wait, await_data, |s| {
            self.collect(&s.state().catalog, batch_size)
        })
        .await
    }
}
