//! Rechecks: a verify of a busy live system raises no false alarm.
//!
//! A document found different is read again (in a session, so the read's cluster time T is
//! known), then verify waits until the stream's committed checkpoint
//! (`<state_schema>.checkpoints` of `sync.name`) has passed T: every change up to the moment the
//! document was read is then in Postgres. Its rows are read and compared with that version and
//! with the version read right after the rows; a match with either ends the matter (the row is
//! a version the document really had, no older than T). Otherwise the newer version is the
//! next round's, until the difference persists although the stream caught up with it and
//! nothing changed meanwhile, or the wait runs out (`Live::wait`): then it is reported as it
//! was last seen. Rows without a document are handled alike: the documents are looked up again
//! after the checkpoint passed the lookup, and the rows read again with their versions (`xmin`);
//! rows rewritten between two rounds (their document came and went again) go round again.
//!
//! Without a running `sync` (nobody holds the stream's lock) nothing would move the
//! checkpoint: each difference is read once more at once, which still absorbs a write that
//! raced the first read, and reported if it is still there.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bson::{Bson, RawDocumentBuf, Timestamp};
use deadpool_postgres::Pool;

use super::check::{fetch_rows, findings, id_of, judge, keys_of, Target};
use super::compare::row_idx;
use super::error::VerifyError;
use super::mongo::{keys_with_documents, read_by_ids};
use super::report::Finding;
use super::rows::{connection, TableQueries};
use crate::mapping::value::{PgValue, Row};
use crate::position::{ts_cmp, Position};
use crate::sink::postgres::plan::key_text;
use crate::sink::postgres::state;

/// How often the checkpoint is read while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// Whether (and how long) rechecks wait for a running stream.
#[derive(Debug, Clone)]
pub struct Live {
    pool: Pool,
    state_schema: String,
    stream: String,
    /// `Some`: a stream applies changes; wait up to this long for it. `None`: recheck at once.
    wait: Option<Duration>,
}

impl Live {
    pub fn new(pool: Pool, state_schema: &str, stream: &str, wait: Option<Duration>) -> Live {
        Live {
            pool,
            state_schema: state_schema.to_owned(),
            stream: stream.to_owned(),
            wait,
        }
    }

    pub fn waits(&self) -> bool {
        self.wait.is_some()
    }

    pub fn deadline(&self) -> Instant {
        Instant::now() + self.wait.unwrap_or(Duration::ZERO)
    }

    /// Waits until the checkpoint has passed `t`: true when it did, false when there is no
    /// stream to wait for, `t` is unknown or `deadline` came first.
    pub async fn caught_up(
        &self,
        t: Option<Timestamp>,
        deadline: Instant,
    ) -> Result<bool, VerifyError> {
        let (Some(t), true) = (t, self.waits()) else {
            return Ok(false);
        };
        loop {
            if let Some(cp) = self.checkpoint_time().await? {
                if ts_cmp(cp, t) != std::cmp::Ordering::Less {
                    return Ok(true);
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn checkpoint_time(&self) -> Result<Option<Timestamp>, VerifyError> {
        let client = connection(&self.pool).await?;
        let cp = state::read_checkpoint(&**client, &self.state_schema, &self.stream).await?;
        Ok(cp
            .and_then(|c| Position::from_checkpoint(&c).ok())
            .and_then(|p| p.cluster_time()))
    }

    /// Whether another round may follow one that started waiting at `reached`.
    fn again(&self, reached: bool, deadline: Instant) -> bool {
        self.waits() && reached && Instant::now() < deadline
    }
}

/// An `_id`'s identity for matching documents read back to the `_id`s asked for (the debug
/// form tells types apart: an ObjectId and its hex string are different documents).
fn id_repr(id: &Bson) -> String {
    format!("{id:?}")
}

fn by_id(docs: Vec<RawDocumentBuf>) -> HashMap<String, RawDocumentBuf> {
    docs.into_iter()
        .filter_map(|d| id_of(&d).map(|id| (id_repr(&id), d)))
        .collect()
}

/// Rechecks documents found different (`ids`); returns the findings that persisted.
pub async fn documents(
    target: &Target,
    live: &Live,
    ids: Vec<Bson>,
) -> Result<Vec<Finding>, VerifyError> {
    let deadline = live.deadline();
    let (docs, mut t) = read_by_ids(&target.coll, &ids).await?;
    let mut read = by_id(docs);
    let mut current: Vec<(Bson, Option<RawDocumentBuf>)> = ids
        .into_iter()
        .map(|id| {
            let doc = read.remove(&id_repr(&id));
            (id, doc)
        })
        .collect();
    let mut found = Vec::new();
    loop {
        let reached = live.caught_up(t, deadline).await?;
        let ids: Vec<Bson> = current.iter().map(|(id, _)| id.clone()).collect();
        let rows = fetch_rows(target, &keys_of(target, &ids)).await?;
        let unresolved: Vec<Bson> = current
            .iter()
            .filter(|(id, doc)| !judge(target, id, doc.as_ref(), &rows).0.is_equal())
            .map(|(id, _)| id.clone())
            .collect();
        if unresolved.is_empty() {
            return Ok(found);
        }
        // The version after the rows were read: the rows may already hold it.
        let (after, t_after) = read_by_ids(&target.coll, &unresolved).await?;
        let mut after = by_id(after);
        let mut before: HashMap<String, Option<RawDocumentBuf>> = current
            .into_iter()
            .map(|(id, doc)| (id_repr(&id), doc))
            .collect();
        let mut next = Vec::new();
        let mut out = Vec::new();
        for id in unresolved {
            let repr = id_repr(&id);
            let doc = after.remove(&repr);
            let (j, _) = judge(target, &id, doc.as_ref(), &rows);
            if j.is_equal() {
                continue;
            }
            let earlier = before.remove(&repr).flatten();
            let changed =
                earlier.as_ref().map(|d| d.as_bytes()) != doc.as_ref().map(|d| d.as_bytes());
            // Unchanged since a read the stream has caught up with: the difference persists.
            if changed && live.again(reached, deadline) {
                next.push((id, doc));
            } else {
                out.extend(findings(target, &id, doc.as_ref(), j).await?);
            }
        }
        found.extend(out);
        if next.is_empty() {
            return Ok(found);
        }
        current = next;
        t = t_after;
    }
}

/// Keys without a document found by `lookup`, deduplicated.
async fn without_documents(
    target: &Target,
    keys: Vec<PgValue>,
) -> Result<(Vec<PgValue>, Option<Timestamp>), VerifyError> {
    let (found, t) = keys_with_documents(&target.coll, &target.mapping, &keys).await?;
    let mut seen = HashSet::new();
    let left = keys
        .into_iter()
        .filter(|k| {
            let text = key_text(k);
            !found.contains(&text) && seen.insert(text)
        })
        .collect();
    Ok((left, t))
}

/// Parent rows (by key) that may have no document: see `settled_without_documents`. Returns
/// the rows that persisted and how many were rechecked.
pub async fn extra_rows(
    target: &Target,
    live: &Live,
    keys: Vec<PgValue>,
) -> Result<(Vec<Finding>, u64), VerifyError> {
    let (left, rechecked) = settled_without_documents(target, live, &target.parent, keys).await?;
    let found = left
        .into_iter()
        .map(|(key, _)| Finding::ExtraRow {
            key,
            children: Vec::new(),
        })
        .collect();
    Ok((found, rechecked))
}

/// Child rows of `child` whose parent document may not exist (`parent_keys`): as
/// `extra_rows`, for every child row of those keys.
pub async fn orphan_rows(
    target: &Target,
    live: &Live,
    child: usize,
    parent_keys: Vec<PgValue>,
) -> Result<(Vec<Finding>, u64), VerifyError> {
    let Some(table) = target.children.get(child) else {
        return Ok((Vec::new(), 0));
    };
    let (left, rechecked) = settled_without_documents(target, live, table, parent_keys).await?;
    let found = left
        .into_iter()
        .map(|(key, rows)| {
            let mut idx: Vec<i32> = rows.iter().filter_map(|r| row_idx(r)).collect();
            idx.sort_unstable();
            Finding::OrphanRows { child, key, idx }
        })
        .collect();
    Ok((found, rechecked))
}

/// The keys of `table` (parent keys) that have rows but no document, and those rows, once the
/// answer holds still: the documents are looked up (at cluster time T), verify waits until the
/// stream's checkpoint has passed T, and the rows are read again with their versions (`xmin`)
/// and the documents looked up again. A key whose rows are gone, or whose document is back, is
/// no finding. A key whose rows were rewritten since the previous round (another `xmin`: the
/// stream deleted them and inserted them again, so the document existed meanwhile) goes round
/// again while the wait allows; rows unchanged across a round the stream caught up with are
/// reported. Without a running stream, one round.
async fn settled_without_documents(
    target: &Target,
    live: &Live,
    table: &TableQueries,
    keys: Vec<PgValue>,
) -> Result<(Vec<(PgValue, Vec<Row>)>, u64), VerifyError> {
    let deadline = live.deadline();
    let (mut pending, mut t) = without_documents(target, keys).await?;
    let rechecked = pending.len() as u64;
    let mut versions: HashMap<String, Vec<String>> = HashMap::new();
    let mut found = Vec::new();
    while !pending.is_empty() {
        let reached = live.caught_up(t, deadline).await?;
        let mut rows: HashMap<String, (PgValue, Vec<Row>)> = HashMap::new();
        {
            let client = connection(&target.pool).await?;
            for r in table.existing(&client, &pending).await? {
                if let Some(k) = r.first() {
                    rows.entry(key_text(k))
                        .or_insert_with(|| (k.clone(), Vec::new()))
                        .1
                        .push(r);
                }
            }
        }
        let still: Vec<PgValue> = pending
            .into_iter()
            .filter(|k| rows.contains_key(&key_text(k)))
            .collect();
        let (left, t_next) = without_documents(target, still).await?;
        let mut next = Vec::new();
        for key in left {
            let text = key_text(&key);
            let Some((key, rows)) = rows.remove(&text) else {
                continue;
            };
            let mut now: Vec<String> = rows.iter().filter_map(xmin_of).collect();
            now.sort_unstable();
            let changed = versions.get(&text) != Some(&now);
            if changed && live.again(reached, deadline) {
                versions.insert(text, now);
                next.push(key);
            } else {
                found.push((key, rows));
            }
        }
        pending = next;
        t = t_next;
    }
    Ok((found, rechecked))
}

/// The `xmin` `TableQueries::existing` puts last in each row.
fn xmin_of(row: &Row) -> Option<String> {
    match row.last()? {
        PgValue::Text(s) => Some(s.clone()),
        _ => None,
    }
}
