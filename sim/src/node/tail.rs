//! Reads of `local.oplog.rs`: plain finds (including `$natural: -1`) and
//! tailable/awaitData cursors that follow the oplog by sequence number and
//! fail with 136 CappedPositionLost once their position was truncated away.

use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document, Timestamp};

use crate::error::CommandError;
use crate::node::cursor::{await_batch, BatchDoc, MAX_BATCH_BYTES};
use crate::node::oplog::{Oplog, OplogEntry};
use crate::node::state::Shared;
use crate::node::store::approx_size;
use crate::query::{project, sort_documents, Fields, Filter};

pub struct TailCursor {
    pub filter: Filter,
    pub projection: Option<Document>,
    /// Sequence number of the next entry to examine.
    pub next_seq: u64,
    pub await_data: bool,
}

/// Entries examined per lock acquisition, so writers are never starved.
const SCAN_CHUNK: usize = 4096;

/// The lower bound on `ts` in a filter like `{ts: {$gte: X}}`, used to seek.
fn ts_lower_bound(filter: &Document) -> Option<Timestamp> {
    match filter.get("ts")? {
        Bson::Document(d) => match d.get("$gte").or_else(|| d.get("$gt"))? {
            Bson::Timestamp(ts) => Some(*ts),
            _ => None,
        },
        Bson::Timestamp(ts) => Some(*ts),
        _ => None,
    }
}

pub struct FindSpec<'a> {
    pub filter: &'a Document,
    pub sort: Option<&'a Document>,
    pub projection: Option<&'a Document>,
    pub skip: usize,
    pub limit: usize,
}

/// A non-tailable find: the full (filtered, ordered, limited) result.
pub fn find_all(oplog: &Oplog, spec: &FindSpec<'_>) -> Result<Vec<Document>, CommandError> {
    let filter = Filter::parse(spec.filter)?;
    let reverse = spec
        .sort
        .and_then(|s| s.get("$natural"))
        .map(|v| matches!(v, Bson::Int32(-1) | Bson::Int64(-1) | Bson::Double(-1.0)))
        .unwrap_or(false);
    let other_sort = spec
        .sort
        .filter(|s| !s.contains_key("$natural") && !s.is_empty());
    let entries = oplog.entries_from(0, usize::MAX);
    let mut matched = entries
        .iter()
        .filter(|e| e.matches(&filter))
        .map(|e| e.to_document().into_owned());
    let mut docs: Vec<Document> = if other_sort.is_some() {
        matched.collect()
    } else {
        let limit = if spec.limit == 0 {
            usize::MAX
        } else {
            spec.limit
        };
        if reverse {
            let all: Vec<&Arc<OplogEntry>> =
                entries.iter().filter(|e| e.matches(&filter)).collect();
            all.into_iter()
                .rev()
                .skip(spec.skip)
                .take(limit)
                .map(|e| e.to_document().into_owned())
                .collect()
        } else {
            matched.by_ref().skip(spec.skip).take(limit).collect()
        }
    };
    if let Some(sort) = other_sort {
        sort_documents(&mut docs, sort)?;
        docs = docs.into_iter().skip(spec.skip).collect();
        if spec.limit > 0 {
            docs.truncate(spec.limit);
        }
    }
    if let Some(p) = spec.projection.filter(|p| !p.is_empty()) {
        docs = docs
            .iter()
            .map(|d| project(d, p))
            .collect::<Result<_, _>>()?;
    }
    Ok(docs)
}

impl TailCursor {
    pub fn open(
        oplog: &Oplog,
        filter: &Document,
        projection: Option<&Document>,
        await_data: bool,
    ) -> Result<Self, CommandError> {
        let next_seq = match ts_lower_bound(filter) {
            Some(ts) => oplog.seq_at_or_after(ts),
            None => oplog.first_seq(),
        };
        Ok(Self {
            filter: Filter::parse(filter)?,
            projection: projection.filter(|p| !p.is_empty()).cloned(),
            next_seq,
            await_data,
        })
    }

    /// Collects up to `batch_size` matching entries (0 = only the byte cap);
    /// without a projection they are the oplog's shared entries, not copies.
    pub fn collect(
        &mut self,
        oplog: &Oplog,
        batch_size: usize,
        first: bool,
    ) -> Result<Vec<BatchDoc>, CommandError> {
        if !first && self.next_seq <= oplog.first_seq() && self.next_seq > 1 {
            // The entry we returned last has been truncated: we cannot know
            // what came between it and the oldest entry still present.
            return Err(CommandError::new(
                136,
                "CappedPositionLost",
                format!(
                    "CollectionScan died due to position in capped collection being deleted. \
                     Last seen record id: RecordId({})",
                    self.next_seq - 1
                ),
            ));
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        loop {
            let chunk = oplog.entries_from(self.next_seq, SCAN_CHUNK);
            if chunk.is_empty() {
                break;
            }
            for e in chunk {
                self.next_seq = e.seq + 1;
                if !e.matches(&self.filter) {
                    continue;
                }
                match &self.projection {
                    Some(p) => {
                        let doc = project(&e.to_document(), p)?;
                        bytes += approx_size(&doc);
                        out.push(BatchDoc::Owned(doc));
                    }
                    None => {
                        bytes += e.approx_size();
                        out.push(BatchDoc::Entry(e));
                    }
                }
                if (batch_size > 0 && out.len() >= batch_size) || bytes >= MAX_BATCH_BYTES {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// A getMore: returns what is there, or with awaitData waits up to
    /// `max_wait` for new entries and then returns an empty batch.
    pub async fn get_more(
        &mut self,
        shared: &Shared,
        batch_size: usize,
        max_wait: Duration,
    ) -> Result<Vec<BatchDoc>, CommandError> {
        let await_data = self.await_data;
        await_batch(shared, max_wait, await_data, |s| {
            self.collect(&s.state().oplog, batch_size, false)
        })
        .await
    }
}
