//! Resuming a copy: what `<state_schema>.copies` and `copy_chunks` (`copy_progress`) say
//! about an earlier, unfinished copy of a collection, whether it can be continued, and how a
//! new copy starts (forgetting earlier progress). The design and what invalidates a saved copy:
//! docs/resumable-copies.md.

use bson::{doc, Bson, Document};

use super::super::sync::{state_client, SyncError};
use super::Load;
use crate::mapping::json::to_json;
use crate::sink::postgres::copy_progress::{self, ChunkDone, CopyLoad, CopyPlan};
use crate::sink::postgres::state::{self, CollectionState, Phase};
use crate::sink::postgres::{swap, PostgresSink};
use crate::sink::{Batch, Change};
use crate::source::snapshot::{RangeStart, SnapshotReader};

/// Where a copy starts: its split points, where each range continues, and what was copied
/// before (all zero for a new copy).
pub(super) struct Resume {
    pub(super) bounds: Vec<Bson>,
    pub(super) starts: Vec<RangeStart>,
    /// Documents in the chunks already committed.
    pub(super) documents: u64,
    /// When the copy first started.
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
}

/// The saved progress of `collection`'s copy, when it can be resumed by a copy loading the
/// `kind` way (docs/resumable-copies.md "What a saved copy is good for"): the collection is in
/// phase `snapshot` (a re-copy asked for since sets `pending`), the copy loads the same way
/// and with the same mapping, its split points can be read, and a shadow load still has its
/// shadow tables. Otherwise `None`, with the reason logged, and a new copy starts.
pub(super) async fn saved_copy(
    sink: &PostgresSink,
    collection: usize,
    kind: CopyLoad,
) -> Result<Option<Resume>, SyncError> {
    let mapping = &sink.mappings().collections[collection];
    let namespace = mapping.namespace();
    let (state_schema, stream) = (sink.state_schema(), sink.stream());
    let (phase, plan) = {
        let pg = state_client(sink).await?;
        let phase = state::collection_state(&**pg, state_schema, stream, &namespace)
            .await?
            .map(|s| s.phase);
        (
            phase,
            copy_progress::read_plan(&**pg, state_schema, stream, &namespace).await?,
        )
    };
    let Some(plan) = plan else {
        return Ok(None);
    };
    let refused = if phase != Some(Phase::Snapshot) {
        Some("the collection was copied completely since, or a new copy was asked for".to_owned())
    } else if plan.load != Some(kind) {
        Some(format!(
            "it loaded the {} way and this copy loads the {} way",
            plan.load.map_or("unknown", CopyLoad::as_str),
            kind.as_str()
        ))
    } else if plan.mapping != mapping.fingerprint() {
        Some("the collection's mapping changed since".to_owned())
    } else if kind == CopyLoad::Shadow && !swap::shadows_exist(sink, collection).await? {
        Some("its shadow tables are gone".to_owned())
    } else {
        None
    };
    let bounds = match (refused, decode_bounds(&plan.bounds)) {
        (None, Ok(bounds)) => bounds,
        (why, bounds) => {
            let why = why.unwrap_or_else(|| match bounds {
                Err(e) => format!("its split points cannot be read ({e})"),
                Ok(_) => String::new(),
            });
            tracing::info!(namespace = %namespace, reason = %why, "The saved progress of an earlier copy of the collection is not used: {why}; the copy starts over.");
            return Ok(None);
        }
    };
    let ranges = SnapshotReader::range_count(&bounds);
    let chunks = {
        let pg = state_client(sink).await?;
        copy_progress::read_chunks(&**pg, state_schema, stream, &namespace).await?
    };
    let (starts, runs, documents) = continue_from(&chunks, ranges)?;
    let mut continuing = Vec::new();
    for (range, (start, run)) in starts.iter().zip(runs).enumerate() {
        let pg = state_client(sink).await?;
        let index = i32::try_from(range).unwrap_or(i32::MAX);
        copy_progress::forget_after(&**pg, state_schema, stream, &namespace, index, run).await?;
        if !start.done {
            continuing.push(match &start.after {
                Some(id) => format!("range {} after _id {}", range + 1, to_json(id)),
                None => format!("range {} from its start", range + 1),
            });
        }
    }
    let done = starts.iter().filter(|s| s.done).count();
    tracing::info!(
        namespace = %namespace,
        ranges_done = done,
        ranges,
        documents,
        continuing = %continuing.join(", "),
        "Resuming the copy of {namespace}: {done} of {ranges} ranges done, {documents} documents already copied; continuing {}.",
        if continuing.is_empty() { "nothing (every range is done)".to_owned() } else { continuing.join(", ") }
    );
    Ok(Some(Resume {
        bounds,
        starts,
        documents,
        started_at: plan.started_at,
    }))
}

/// Where each of `ranges` ranges continues, given the recorded `chunks`; also the sequence
/// number of the last chunk of each range's unbroken run (chunks after it are forgotten) and
/// the documents in those runs.
///
/// The chunks of one range commit in any order (two are written at once): a range continues
/// after the last chunk of the unbroken run of sequence numbers from 0, and chunks beyond a gap
/// are read and written again.
#[allow(clippy::type_complexity)]
fn continue_from(
    chunks: &[ChunkDone],
    ranges: usize,
) -> Result<(Vec<RangeStart>, Vec<Option<i64>>, u64), SyncError> {
    let mut sorted: Vec<&ChunkDone> = chunks.iter().collect();
    sorted.sort_by_key(|c| (c.range, c.seq));
    let mut starts = vec![RangeStart::default(); ranges];
    let mut runs = vec![None; ranges];
    let mut documents = 0u64;
    for (range, (start, run)) in starts.iter_mut().zip(runs.iter_mut()).enumerate() {
        let index = i32::try_from(range).unwrap_or(i32::MAX);
        let mut last: Option<&ChunkDone> = None;
        for c in sorted.iter().filter(|c| c.range == index) {
            if c.seq != last.map_or(0, |l| l.seq + 1) {
                break;
            }
            documents += u64::try_from(c.documents).unwrap_or(0);
            last = Some(c);
        }
        if let Some(last) = last {
            start.after = last.last_id.as_deref().map(decode_id).transpose()?;
            start.next_seq = u64::try_from(last.seq + 1).unwrap_or(0);
            start.done = last.range_done;
            *run = Some(last.seq);
        }
    }
    Ok((starts, runs, documents))
}

/// Starts a new copy of `collection`: forgets any earlier progress, prepares the tables
/// (truncates the live ones, or creates fresh shadows), then saves the plan (split points,
/// load, mapping) — last, so a saved plan always finds its tables prepared.
pub(super) async fn start_copy(
    sink: &PostgresSink,
    collection: usize,
    load: Load<'_>,
    reader: &SnapshotReader,
) -> Result<Resume, SyncError> {
    let mapping = &sink.mappings().collections[collection];
    let namespace = mapping.namespace();
    let (state_schema, stream) = (sink.state_schema(), sink.stream());
    let started_at = chrono::Utc::now();
    let earlier = {
        let pg = state_client(sink).await?;
        // Phase `snapshot` before the tables are touched: a crash from here on copies again.
        state::set_collection_state(
            &**pg,
            state_schema,
            stream,
            &CollectionState::copying(namespace.clone(), started_at),
        )
        .await?;
        let earlier = copy_progress::read_plan(&**pg, state_schema, stream, &namespace).await?;
        copy_progress::clear(&**pg, state_schema, stream, &namespace).await?;
        earlier
    };
    tracing::info!(namespace = %namespace, "Full sync of the collection started.");
    match load {
        Load::TruncateThenCopy => {
            sink.apply_uncheckpointed(&Batch {
                changes: vec![Change::Truncate { collection }],
                ..Batch::default()
            })
            .await?;
        }
        Load::Swap { .. } => swap::create_shadows(sink, collection).await?,
        Load::Upsert => {}
    }
    if earlier.is_some_and(|p| p.load == Some(CopyLoad::Shadow))
        && !matches!(load, Load::Swap { .. })
    {
        // Best effort: a later shadow load drops them anyway.
        if let Err(e) = swap::drop_shadows(sink, collection).await {
            tracing::warn!(namespace = %namespace, error = %e, "Could not drop the shadow tables of an abandoned load; the next load drops them.");
        }
    }
    let bounds = reader.plan_bounds().await;
    let plan = CopyPlan {
        namespace: namespace.clone(),
        load: Some(load.kind()),
        mapping: mapping.fingerprint(),
        bounds: encode_bounds(&bounds)?,
        ranges: i32::try_from(SnapshotReader::range_count(&bounds)).unwrap_or(i32::MAX),
        started_at,
    };
    let pg = state_client(sink).await?;
    copy_progress::save_plan(&**pg, state_schema, stream, &plan).await?;
    Ok(Resume {
        bounds,
        starts: Vec::new(),
        documents: 0,
        started_at,
    })
}

fn encode_bounds(bounds: &[Bson]) -> Result<Vec<u8>, SyncError> {
    bson::to_vec(&doc! {"bounds": bounds.to_vec()})
        .map_err(|e| SyncError::Config(format!("the split points of a copy cannot be saved: {e}")))
}

fn decode_bounds(bytes: &[u8]) -> Result<Vec<Bson>, SyncError> {
    let d: Document = bson::from_slice(bytes)
        .map_err(|e| SyncError::Config(format!("saved split points are not BSON: {e}")))?;
    d.get_array("bounds")
        .cloned()
        .map_err(|e| SyncError::Config(format!("saved split points lack their array: {e}")))
}

pub(super) fn encode_id(id: &Bson) -> Result<Vec<u8>, SyncError> {
    bson::to_vec(&doc! {"_id": id.clone()})
        .map_err(|e| SyncError::Config(format!("the progress of a copy cannot be saved: {e}")))
}

fn decode_id(bytes: &[u8]) -> Result<Bson, SyncError> {
    let d: Document = bson::from_slice(bytes)
        .map_err(|e| SyncError::Config(format!("a saved _id of a copy is not BSON: {e}")))?;
    d.get("_id")
        .cloned()
        .ok_or_else(|| SyncError::Config("a saved _id of a copy has no _id".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(range: i32, seq: i64, last: &str, documents: i64, range_done: bool) -> ChunkDone {
        ChunkDone {
            namespace: "shop.orders".into(),
            range,
            seq,
            last_id: Some(encode_id(&Bson::String(last.into())).unwrap()),
            documents,
            range_done,
        }
    }

    #[test]
    fn ranges_continue_after_their_unbroken_run_of_chunks() {
        let chunks = vec![
            // Range 0: 0, 1, then 3 committed before 2 (two written at once): 3 is redone.
            chunk(0, 3, "d", 10, false),
            chunk(0, 0, "a", 10, false),
            chunk(0, 1, "b", 10, false),
            // Range 1: finished.
            chunk(1, 0, "m", 10, false),
            chunk(1, 1, "n", 5, true),
            // Range 2: its first chunk is missing, so it starts over.
            chunk(2, 1, "y", 10, false),
            // Range 3: nothing yet.
        ];
        let (starts, runs, documents) = continue_from(&chunks, 4).unwrap();
        assert_eq!(documents, 35);
        assert_eq!(runs, vec![Some(1), Some(1), None, None]);
        assert_eq!(starts[0].after, Some(Bson::String("b".into())));
        assert_eq!(starts[0].next_seq, 2);
        assert!(!starts[0].done);
        assert!(starts[1].done);
        assert_eq!(starts[2], RangeStart::default());
        assert_eq!(starts[3], RangeStart::default());
    }

    #[test]
    fn a_range_ended_by_an_empty_chunk_is_done() {
        let mut end = chunk(0, 1, "a", 0, true);
        end.last_id = None;
        let (starts, _, documents) = continue_from(&[chunk(0, 0, "a", 7, false), end], 1).unwrap();
        assert!(starts[0].done);
        assert_eq!(documents, 7);
    }

    #[test]
    fn split_points_and_ids_round_trip_through_bson() {
        let bounds = vec![Bson::Int32(5), Bson::String("m".into())];
        assert_eq!(
            decode_bounds(&encode_bounds(&bounds).unwrap()).unwrap(),
            bounds
        );
        let id = Bson::ObjectId(bson::oid::ObjectId::from_bytes([3; 12]));
        assert_eq!(decode_id(&encode_id(&id).unwrap()).unwrap(), id);
    }
}
