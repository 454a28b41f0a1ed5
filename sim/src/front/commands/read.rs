//! Read commands: find (including `local.oplog.rs` and tailable cursors),
//! getMore, killCursors, count, distinct and aggregate (ordinary pipelines
//! and `$changeStream`).

use std::collections::VecDeque;
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use rand::Rng;

use super::coll_stats;
use super::find_keys::{index_key, plan_index, KeyOptions};
use super::{as_i64, truthy, CmdResult, Req};
use crate::aggregate::{apply_event_stages, documents, run_stages, sample};
use crate::error::CommandError;
use crate::node::capped::{check_sort, natural_direction, CappedTail};
use crate::node::cursor::{batch_size, cursor_reply, cursor_reply_shared, take_batch, CursorKind};
use crate::node::scan::{ScanCursor, ScanSpec};
use crate::node::state::lock;
use crate::node::store::{Collection, StoredDoc};
use crate::node::stream::{misplaced_stage, Scope, StreamCursor, StreamSpec};
use crate::node::tail::{find_all, FindSpec, TailCursor};
use crate::node::writes::matching_docs;
use crate::query::{project, sort_documents, Filter, QueryError};

/// A first batch holds 101 documents unless the client asks otherwise.
const DEFAULT_FIRST_BATCH: usize = 101;
/// getMore waits this long for awaitData cursors when no maxTimeMS is given.
const DEFAULT_AWAIT_MS: u64 = 1000;

fn is_oplog(req: &Req<'_>, coll: &str) -> bool {
    req.db == "local" && coll == "oplog.rs"
}

/// Registers what is left of a result as a cursor and returns its id (0 if none).
/// `keep` registers it even when nothing is left: the first batch of `batchSize: 0` is
/// empty and mongod returns a live cursor without having run the query yet.
fn register(
    req: &Req<'_>,
    ns: String,
    rest: VecDeque<Document>,
    single_batch: bool,
    keep: bool,
) -> i64 {
    if (rest.is_empty() && !keep) || single_batch {
        return 0;
    }
    lock(&req.shared.cursors).insert(ns, CursorKind::Docs(rest))
}

pub fn find(req: &mut Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let ns = format!("{}.{coll}", req.db);
    let filter = req.doc_arg("filter")?.cloned().unwrap_or_default();
    let sort = req.doc_arg("sort")?.cloned();
    let projection = req.doc_arg("projection")?.cloned();
    let skip = as_i64(req.cmd.get("skip")).unwrap_or(0);
    let limit = as_i64(req.cmd.get("limit")).unwrap_or(0);
    if skip < 0 {
        return Err(CommandError::bad_value("skip value must be non-negative"));
    }
    let mut single_batch = truthy(req.cmd.get("singleBatch")) || limit < 0;
    let limit = limit.unsigned_abs() as usize;
    let requested = batch_size(req.cmd.get("batchSize"))?;
    // `batchSize: 0`: an empty first batch and a cursor for the rest (mongod does not even
    // run the query before the first getMore).
    let empty_first = requested == Some(0);
    let mut first_size = requested.unwrap_or(DEFAULT_FIRST_BATCH);
    if limit > 0 && (first_size == 0 || first_size > limit) {
        first_size = limit;
    }
    let tailable = truthy(req.cmd.get("tailable"));
    if truthy(req.cmd.get("awaitData")) && !tailable {
        return Err(CommandError::failed_to_parse(
            "Cannot set 'awaitData' without also setting 'tailable'",
        ));
    }
    if tailable && !is_oplog(req, &coll) {
        return find_tailable(
            req,
            (skip as usize, limit),
            &coll,
            &filter,
            projection.as_ref(),
            sort.as_ref(),
            first_size,
            empty_first,
            single_batch,
        );
    }
    // `$natural` order (a `$natural` sort or hint, or no sort on a capped collection) is
    // insertion order, as a collection scan returns it.
    let hint = req.cmd.get("hint").cloned();
    let hint_doc = match &hint {
        Some(Bson::Document(d)) => Some(d.clone()),
        _ => None,
    };
    let capped = req.with_target(|t| t.read(&req.db, &coll).is_some_and(|c| c.cap.is_some()))?;
    let unsorted = sort.as_ref().is_none_or(|s| s.is_empty());
    let natural = natural_direction(sort.as_ref())
        .or_else(|| natural_direction(hint_doc.as_ref()))
        .or_else(|| (capped && unsorted).then_some(false));
    // A hinted index: the results come in its key order (an index scan), unless sorted.
    let hinted = match &hint {
        Some(h) if natural_direction(hint_doc.as_ref()).is_none() => {
            req.with_target(|t| hinted_index(t.read(&req.db, &coll), h, &ns))??
        }
        _ => None,
    };
    let key_opts = KeyOptions::parse(req)?;
    // A hint on a missing collection is an EOF plan, where mongod checks no bounds either.
    if hint.is_none() || hinted.is_some() || natural_direction(hint_doc.as_ref()).is_some() {
        key_opts.check_bounds(hinted.as_ref())?;
    }
    let index_order = hinted.clone().filter(|_| unsorted);
    if tailable {
        let await_data = truthy(req.cmd.get("awaitData"));
        let (tail, batch, has_records) = {
            let st = req.shared.state();
            let mut c = TailCursor::open(&st.oplog, &filter, projection.as_ref(), await_data)?;
            let batch = if empty_first {
                Vec::new()
            } else {
                c.collect(&st.oplog, first_size, true)?
            };
            let has_records = st.oplog.next_seq() > st.oplog.first_seq();
            (c, batch, has_records)
        };
        // mongod keeps a tailable cursor, even after an empty first batch, unless the
        // collection it tails has no records (`shouldSaveCursor`, SERVER-13955).
        let id = if !has_records || single_batch {
            0
        } else {
            lock(&req.shared.cursors).insert(ns.clone(), CursorKind::Tail(Box::new(tail)))
        };
        req.batch = Some(batch);
        return Ok(cursor_reply_shared(true, id, &ns, None));
    }
    if !is_oplog(req, &coll)
        && req.txn.is_none()
        && natural.is_none()
        && index_order.is_none()
        && !key_opts.any()
        && !asks_past_time(req)
    {
        let spec = ScanSpec {
            db: &req.db,
            coll: &coll,
            filter: &filter,
            sort: sort.as_ref(),
            projection: projection.as_ref(),
            skip: skip as usize,
            limit,
        };
        let at;
        let opened = {
            let st = req.shared.state();
            // Under the lock that also reads the first batch: the time is exactly the read's.
            at = snapshot_time(req, &st.oplog, &coll)?;
            match ScanCursor::open(&st.catalog, &spec)? {
                Some(scan) if empty_first => {
                    let exists = st.catalog.get(&req.db, &coll).is_some();
                    Some((scan, Vec::new(), exists))
                }
                Some(mut scan) => {
                    let (batch, more) = scan.next_batch(&st.catalog, first_size)?;
                    Some((scan, batch, more))
                }
                None => None,
            }
        };
        if let Some((scan, batch, more)) = opened {
            let id = if more && !single_batch {
                lock(&req.shared.cursors).insert(ns.clone(), CursorKind::Scan(Box::new(scan)))
            } else {
                0
            };
            req.batch = Some(batch);
            return Ok(cursor_reply_shared(true, id, &ns, at_cluster_time(at)));
        }
    }
    // Read before the documents: a time no later than the read's is safe to report (the
    // documents hold every change up to it).
    let at = if req.txn.is_none() && !is_oplog(req, &coll) {
        snapshot_time(req, &req.shared.state().oplog, &coll)?
    } else {
        None
    };
    let mut exists = true;
    let mut docs: Vec<Document> = if is_oplog(req, &coll) {
        let st = req.shared.state();
        find_all(
            &st.oplog,
            &FindSpec {
                filter: &filter,
                sort: sort.as_ref(),
                projection: projection.as_ref(),
                skip: skip as usize,
                limit,
            },
        )?
    } else {
        let parsed = Filter::parse(&filter)?;
        let (mut docs, found) = read_coll(req, &coll, at, |c| match c {
            Some(c) => match natural {
                Some(reverse) => (natural_docs(c, &parsed, reverse), true),
                None => (matching_docs(c, &parsed), true),
            },
            None => (Vec::new(), false),
        })?;
        exists = found;
        let by_natural = natural_direction(sort.as_ref()).is_some();
        if let Some(key) = &index_order {
            sort_documents(&mut docs, key)?;
        }
        if let Some(sort) = sort.as_ref().filter(|s| !s.is_empty() && !by_natural) {
            sort_documents(&mut docs, sort)?;
        }
        key_opts.apply_bounds(&mut docs, hinted.as_ref());
        let mut docs: Vec<Document> = docs.into_iter().skip(skip as usize).collect();
        if limit > 0 {
            docs.truncate(limit);
        }
        if key_opts.return_key || key_opts.show_record_id {
            return_keys(
                req,
                &coll,
                &key_opts,
                hinted.as_ref(),
                sort.as_ref(),
                &filter,
                &mut docs,
            )?;
        } else if let Some(p) = projection.as_ref().filter(|p| !p.is_empty()) {
            docs = docs
                .iter()
                .map(|d| project(d, p))
                .collect::<Result<_, _>>()?;
        }
        docs
    };
    if limit > 0 && docs.len() <= first_size && !empty_first {
        single_batch = true;
    }
    let mut rest: VecDeque<Document> = std::mem::take(&mut docs).into();
    let batch = if empty_first {
        Vec::new()
    } else {
        take_batch(&mut rest, first_size)
    };
    let id = register(req, ns.clone(), rest, single_batch, empty_first && exists);
    Ok(cursor_reply(true, batch, id, &ns, at_cluster_time(at)))
}

/// The cluster time a read with `readConcern: {level: "snapshot"}` outside a transaction
/// reads at (the reply's `atClusterTime`, as mongod 5.0+ answers), and whether that is in the
/// past, so that the read is served from `history` instead of live storage.
#[derive(Debug, Clone, Copy)]
struct ReadAt {
    ts: Timestamp,
    past: bool,
}

/// What a read outside a transaction with `readConcern: {level: "snapshot"}` asks for:
/// `Some(None)` the current time, `Some(Some(t))` its `atClusterTime`; `None` for other reads.
fn snapshot_request(req: &Req<'_>) -> Option<Option<Timestamp>> {
    let rc = req.cmd.get_document("readConcern").ok()?;
    (req.txn.is_none() && rc.get_str("level") == Ok("snapshot"))
        .then(|| rc.get_timestamp("atClusterTime").ok())
}

/// Whether the command asks for a snapshot at a cluster time already past (such a read
/// cannot use the lazy `_id` scan, which reads live storage at each getMore).
fn asks_past_time(req: &Req<'_>) -> bool {
    matches!(snapshot_request(req), Some(Some(asked))
        if crate::node::oplog::cmp_ts(asked, req.shared.cluster_time()).is_lt())
}

/// For a snapshot read outside a transaction, the time it reads at: now, or the
/// `atClusterTime` asked for. A past time is served when no DDL touched `coll` since (mongod
/// 7.0 answers 239 SnapshotTooOld, or reads a catalog that no longer matches, across such
/// changes: the sim refuses them all) and the oplog still reaches back to it; the history
/// window is checked when the version is built (`history::History::view_at`).
fn snapshot_time(
    req: &Req<'_>,
    oplog: &crate::node::oplog::Oplog,
    coll: &str,
) -> Result<Option<ReadAt>, CommandError> {
    let Some(asked) = snapshot_request(req) else {
        return Ok(None);
    };
    let now = oplog.last_ts();
    let asked = match asked {
        Some(t) if crate::node::oplog::cmp_ts(t, now).is_lt() => t,
        current => {
            return Ok(Some(ReadAt {
                ts: current.unwrap_or(now),
                past: false,
            }))
        }
    };
    let ns = format!("{}.{coll}", req.db);
    let from = oplog.seq_at_or_after(crate::node::oplog::ts_after(asked));
    let changed = crate::node::oplog::cmp_ts(asked, oplog.oldest_ts()) == std::cmp::Ordering::Less
        || oplog
            .entries_from(from, usize::MAX)
            .iter()
            .any(|e| ddl_on(e, &req.db, coll));
    if changed {
        return Err(crate::node::history::too_old(asked, &ns));
    }
    Ok(Some(ReadAt {
        ts: asked,
        past: true,
    }))
}

/// Runs `f` on `db.coll` as the read sees it: the version at `at` when that is past (built
/// from `history`), else live storage or the transaction's own view.
fn read_coll<R>(
    req: &Req<'_>,
    coll: &str,
    at: Option<ReadAt>,
    f: impl FnOnce(Option<&Collection>) -> R,
) -> Result<R, CommandError> {
    let Some(ReadAt { ts, past: true }) = at else {
        return req.with_target(|t| f(t.read(&req.db, coll)));
    };
    let view = {
        let st = req.shared.state();
        match st.catalog.get(&req.db, coll) {
            Some(c) => {
                let ns = format!("{}.{coll}", req.db);
                Some(st.history.view_at(&ns, c, ts, st.oplog.last_ts())?)
            }
            None => None,
        }
    };
    Ok(f(view.as_ref()))
}

/// Whether an oplog entry changes `db.coll`'s catalog entry: a command of its database naming
/// it (create, drop, rename, ...) or dropping the database, alone or inside an `applyOps`.
fn ddl_on(e: &crate::node::oplog::OplogEntry, db: &str, coll: &str) -> bool {
    let full = format!("{db}.{coll}");
    let cmd_ns = format!("{db}.$cmd");
    let names_coll = |o: &Document| {
        o.contains_key("dropDatabase")
            || o.values()
                .any(|v| matches!(v, Bson::String(s) if s == coll || *s == full))
    };
    if e.ns == cmd_ns {
        return e
            .fields()
            .any(|(k, v)| k == "o" && matches!(v, Bson::Document(o) if names_coll(o)));
    }
    if e.ns != "admin.$cmd" {
        return false;
    }
    // A transaction's `applyOps`: its DDL members (`txn_ddl`).
    e.fields().any(|(k, v)| {
        k == "o"
            && matches!(v, Bson::Document(o) if o.get_array("applyOps").is_ok_and(|ops| {
                ops.iter().filter_map(Bson::as_document).any(|op| {
                    op.get_str("ns") == Ok(cmd_ns.as_str())
                        && op.get_document("o").is_ok_and(names_coll)
                })
            }))
    })
}

fn at_cluster_time(at: Option<ReadAt>) -> Option<(&'static str, Bson)> {
    at.map(|r| ("atClusterTime", Bson::Timestamp(r.ts)))
}

/// The key pattern of the index `hint` names (by name or key pattern); `None` when the
/// collection does not exist (an EOF plan). mongod's planner refuses a hint that names no
/// index with 2 BadValue.
pub(super) fn hinted_index(
    c: Option<&Collection>,
    hint: &Bson,
    ns: &str,
) -> Result<Option<Document>, CommandError> {
    let Some(c) = c else { return Ok(None) };
    let found = c.indexes.iter().find(|ix| match hint {
        Bson::String(name) => ix.get_str("name") == Ok(name.as_str()),
        Bson::Document(key) => ix.get_document("key").is_ok_and(|k| k == key),
        _ => false,
    });
    match found.and_then(|ix| ix.get_document("key").ok()) {
        Some(key) => Ok(Some(key.clone())),
        None => Err(CommandError::bad_value(format!(
            "error processing query: ns={ns} planner returned error :: caused by :: hint \
             provided does not correspond to an existing index"
        ))),
    }
}

/// `returnKey` (each document replaced by its key in the plan's index) and `showRecordId`
/// (`$recordId` appended; with `returnKey` the key alone, as mongod returns it).
fn return_keys(
    req: &Req<'_>,
    coll: &str,
    opts: &KeyOptions,
    hinted: Option<&Document>,
    sort: Option<&Document>,
    filter: &Document,
    docs: &mut [Document],
) -> Result<(), CommandError> {
    req.with_target(|t| {
        let Some(c) = t.read(&req.db, coll) else {
            return Ok(());
        };
        if opts.return_key {
            let key = plan_index(c, hinted, sort, filter)?;
            for d in docs.iter_mut() {
                *d = index_key(d, key.as_ref());
            }
        } else {
            for d in docs.iter_mut() {
                let rid = d
                    .get("_id")
                    .and_then(|id| c.record_id(&crate::bson_order::OrderedBson(id.clone())));
                if let Some(rid) = rid {
                    d.insert("$recordId", rid as i64);
                }
            }
        }
        Ok(())
    })?
}

/// Documents matching `filter` in `$natural` (insertion) order or its reverse.
fn natural_docs(c: &Collection, filter: &Filter, reverse: bool) -> Vec<Document> {
    c.in_natural_order(reverse)
        .map(|(_, d)| d.doc())
        .filter(|d| filter.matches(d.as_ref()))
        .map(|d| d.into_owned())
        .collect()
}

/// A tailable find on a user collection: capped ones only, followed in `$natural` order. Like
/// mongod's `shouldSaveCursor` (SERVER-13955) the cursor stays alive after an empty first
/// batch whenever the collection has records.
#[allow(clippy::too_many_arguments)]
fn find_tailable(
    req: &mut Req<'_>,
    skip_limit: (usize, usize),
    coll: &str,
    filter: &Document,
    projection: Option<&Document>,
    sort: Option<&Document>,
    first_size: usize,
    empty_first: bool,
    single_batch: bool,
) -> CmdResult {
    let ns = format!("{}.{coll}", req.db);
    check_sort(sort)?;
    let await_data = truthy(req.cmd.get("awaitData"));
    let opened = {
        let st = req.shared.state();
        match st.catalog.get(&req.db, coll) {
            Some(c) if c.cap.is_some() => {
                let mut tail = CappedTail::open(
                    (&req.db, coll),
                    c,
                    filter,
                    projection,
                    await_data,
                    skip_limit,
                )?;
                let batch = if empty_first {
                    Vec::new()
                } else {
                    tail.collect(&st.catalog, first_size)?
                };
                Some((tail, batch, !c.docs.is_empty()))
            }
            Some(_) => {
                return Err(CommandError::bad_value(format!(
                    "error processing query: ns={ns} tailable cursor requested on non capped collection"
                )))
            }
            None => None,
        }
    };
    let Some((tail, batch, has_records)) = opened else {
        // No collection: an EOF plan, nothing to keep.
        req.batch = Some(Vec::new());
        return Ok(cursor_reply_shared(true, 0, &ns, None));
    };
    let id = if !has_records || single_batch || tail.exhausted() {
        0
    } else {
        lock(&req.shared.cursors).insert(ns.clone(), CursorKind::Capped(Box::new(tail)))
    };
    req.batch = Some(batch);
    Ok(cursor_reply_shared(true, id, &ns, None))
}

/// `Ok(None)` closes the connection (a fail point asked for it).
pub async fn get_more(req: &mut Req<'_>) -> Result<Option<Document>, CommandError> {
    let id = match req.cmd.get("getMore") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => *n as i64,
        _ => {
            return Err(CommandError::type_mismatch(
                "Field 'getMore' must be of type long",
            ))
        }
    };
    let coll = req
        .cmd
        .get_str("collection")
        .unwrap_or_default()
        .to_string();
    let requested = batch_size(req.cmd.get("batchSize"))?.unwrap_or(0);
    let max_wait = Duration::from_millis(
        as_i64(req.cmd.get("maxTimeMS"))
            .filter(|n| *n > 0)
            .map(|n| n as u64)
            .unwrap_or(DEFAULT_AWAIT_MS),
    );
    let Some(mut cursor) = lock(&req.shared.cursors).checkout(id) else {
        return Err(CommandError::cursor_not_found(id));
    };
    if cursor.time_limited {
        // Out of time: mongod kills the cursor with the getMore.
        if let Some(e) = lock(&req.shared.failpoints).on_time_limited() {
            return Err(e);
        }
    }
    req.is_change_stream = matches!(cursor.kind, CursorKind::Stream(_));
    let expected_coll = cursor
        .ns
        .split_once('.')
        .map(|(_, c)| c.to_string())
        .unwrap_or_default();
    if coll != expected_coll || !cursor.ns.starts_with(&format!("{}.", req.db)) {
        let ns = cursor.ns.clone();
        lock(&req.shared.cursors).put_back(cursor);
        return Err(CommandError::new(
            13,
            "Unauthorized",
            format!("Requested getMore on namespace '{}.{coll}', but cursor belongs to a different namespace {ns}", req.db),
        ));
    }
    let inj = lock(&req.shared.failpoints).on_get_more();
    if let Some(inj) = inj {
        if let Some(ms) = inj.block_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if inj.close_connection {
            lock(&req.shared.cursors).put_back(cursor);
            return Ok(None);
        }
        if let Some(e) = inj.error {
            lock(&req.shared.cursors).put_back(cursor);
            return Err(e);
        }
    }
    let ns = cursor.ns.clone();
    // Set for oplog tails and change streams, whose entries and events go
    // to the encoder uncopied.
    let mut shared_batch = None;
    let (batch, alive, extra) = match &mut cursor.kind {
        CursorKind::Docs(docs) => {
            let batch = take_batch(docs, requested);
            let alive = !docs.is_empty();
            (batch, alive, None)
        }
        CursorKind::Scan(scan) => {
            let (batch, more) = scan.next_batch(&req.shared.state().catalog, requested)?;
            shared_batch = Some(batch);
            (Vec::new(), more, None)
        }
        CursorKind::Tail(tail) => match tail.get_more(req.shared, requested, max_wait).await {
            Ok(batch) => {
                shared_batch = Some(batch);
                (Vec::new(), true, None)
            }
            Err(e) => return Err(e),
        },
        CursorKind::Capped(tail) => {
            let batch = tail.get_more(req.shared, requested, max_wait).await?;
            shared_batch = Some(batch);
            (Vec::new(), !tail.exhausted(), None)
        }
        CursorKind::Stream(stream) => {
            match stream.get_more(req.shared, requested, max_wait).await {
                Ok(batch) => {
                    shared_batch = Some(batch);
                    let pbrt = stream.post_batch_token();
                    let alive = !stream.is_invalidated();
                    (
                        Vec::new(),
                        alive,
                        Some(("postBatchResumeToken", Bson::Document(pbrt))),
                    )
                }
                Err(e) => return Err(e),
            }
        }
    };
    let reply_id = if alive {
        let id = cursor.id;
        lock(&req.shared.cursors).put_back(cursor);
        id
    } else {
        0
    };
    match shared_batch {
        Some(shared) => {
            req.batch = Some(shared);
            Ok(Some(cursor_reply_shared(false, reply_id, &ns, extra)))
        }
        None => Ok(Some(cursor_reply(false, batch, reply_id, &ns, extra))),
    }
}

pub fn kill_cursors(req: &Req<'_>) -> CmdResult {
    let ids = req
        .cmd
        .get_array("cursors")
        .map_err(|_| CommandError::type_mismatch("'cursors' must be an array"))?;
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    let mut table = lock(&req.shared.cursors);
    for id in ids {
        let Some(n) = as_i64(Some(id)) else { continue };
        if table.kill(n) {
            killed.push(Bson::Int64(n));
        } else {
            not_found.push(Bson::Int64(n));
        }
    }
    Ok(doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": [],
        "cursorsUnknown": [],
    })
}

pub fn count(req: &Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let query = req.doc_arg("query")?.cloned().unwrap_or_default();
    let filter = Filter::parse(&query)?;
    let skip = super::ddl::usize_arg(req, "skip")?;
    let limit = super::ddl::usize_arg(req, "limit")?;
    let total = req.with_target(|t| match t.read(&req.db, &coll) {
        Some(c) if query.is_empty() => c.docs.len(),
        Some(c) => c
            .candidates(filter.id_keys())
            .filter(|(_, d)| filter.matches(d.doc().as_ref()))
            .count(),
        None => 0,
    })?;
    let mut n = total.saturating_sub(skip);
    if limit > 0 {
        n = n.min(limit);
    }
    Ok(doc! {"n": n as i32})
}

pub fn distinct(req: &Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let key = req
        .cmd
        .get_str("key")
        .map_err(|_| CommandError::type_mismatch("'key' must be a string"))?
        .to_string();
    let query = req.doc_arg("query")?.cloned().unwrap_or_default();
    let filter = Filter::parse(&query)?;
    let at = snapshot_time(req, &req.shared.state().oplog, &coll)?;
    let docs = read_coll(req, &coll, at, |c| {
        c.map(|c| matching_docs(c, &filter)).unwrap_or_default()
    })?;
    let mut values: Vec<Bson> = Vec::new();
    for d in &docs {
        let mut v: Option<&Bson> = None;
        let mut cur = Some(d);
        for part in key.split('.') {
            v = cur.and_then(|c| c.get(part));
            cur = v.and_then(Bson::as_document);
        }
        let items: Vec<Bson> = match v {
            Some(Bson::Array(a)) => a.clone(),
            Some(x) => vec![x.clone()],
            None => Vec::new(),
        };
        for item in items {
            if !values
                .iter()
                .any(|x| crate::bson_order::compare(x, &item).is_eq())
            {
                values.push(item);
            }
        }
    }
    values.sort_by(crate::bson_order::compare);
    let mut reply = doc! {"values": values};
    // distinct answers a snapshot read's time at the top level (no cursor).
    if let Some(at) = at {
        reply.insert("atClusterTime", at.ts);
    }
    Ok(reply)
}

fn pipeline(req: &Req<'_>) -> Result<Vec<Document>, CommandError> {
    let arr = req.cmd.get_array("pipeline").map_err(|_| {
        CommandError::type_mismatch("'pipeline' option must be specified as an array")
    })?;
    arr.iter()
        .map(|s| {
            s.as_document().cloned().ok_or_else(|| {
                CommandError::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                )
            })
        })
        .collect()
}

/// `me`: the `host:port` the client reached (`$collStats`'s `host`).
pub fn aggregate(req: &mut Req<'_>, me: &str) -> CmdResult {
    let mut stages = pipeline(req)?;
    // A final `$out`/`$merge` writes the results instead of returning them.
    let output = super::out::take(&mut stages, req)?;
    let cursor_opts = req.doc_arg("cursor")?.cloned();
    if cursor_opts.is_none() && !truthy(req.cmd.get("explain")) {
        return Err(CommandError::failed_to_parse(
            "The 'cursor' option is required, except for aggregate with the explain argument",
        ));
    }
    let requested = batch_size(cursor_opts.as_ref().and_then(|c| c.get("batchSize")))?;
    if stages
        .iter()
        .skip(1)
        .any(|s| s.contains_key("$changeStream"))
    {
        return Err(misplaced_stage());
    }
    if let Some(Bson::Document(cs)) = stages.first().and_then(|s| s.get("$changeStream")) {
        req.is_change_stream = true;
        // A change stream reads majority-committed changes only: an explicit other level
        // is refused (mongod's ReadConcernSupportResult for $changeStream).
        if let Some(level) = req
            .doc_arg("readConcern")?
            .and_then(|rc| rc.get_str("level").ok())
            .filter(|l| *l != "majority")
        {
            return Err(CommandError::new(
                72,
                "InvalidOptions",
                format!("$changeStream does not support readConcern level '{level}'"),
            ));
        }
        let cs = cs.clone();
        return change_stream(req, cs, stages[1..].to_vec(), requested);
    }
    first_only(&stages, coll_stats::STAGE)?;
    if first_only(&stages, documents::STAGE)?
        && matches!(req.cmd.get("aggregate"), Some(Bson::String(_)))
    {
        return Err(CommandError::invalid_namespace(format!(
            "{} can only be run as the first stage of a collectionless aggregation \
             (aggregate: 1)",
            documents::STAGE
        )));
    }
    let mut stages = &stages[..];
    let at = match req.cmd.get("aggregate") {
        Some(Bson::String(coll)) if !is_oplog(req, coll) => {
            snapshot_time(req, &req.shared.state().oplog, coll)?
        }
        _ => None,
    };
    let docs = match req.cmd.get("aggregate") {
        Some(Bson::String(coll)) => {
            let coll = coll.clone();
            let leading_stats = stages
                .first()
                .and_then(|s| s.get(coll_stats::STAGE))
                .map(coll_stats::parse)
                .transpose()?;
            let leading_sample = stages
                .first()
                .and_then(|s| s.get("$sample"))
                .filter(|_| stages[0].len() == 1 && !is_oplog(req, &coll));
            if let Some(spec) = leading_stats {
                stages = &stages[1..];
                let ns = format!("{}.{coll}", req.db);
                vec![req
                    .with_target(|t| coll_stats::stats(&spec, &ns, me, t.read(&req.db, &coll)))??]
            } else if let Some(spec) = leading_sample {
                let size = sample::parse(spec)?;
                stages = &stages[1..];
                read_coll(req, &coll, at, |c| match c {
                    Some(c) => sample_collection(c, size),
                    None => Ok(Vec::new()),
                })??
            } else if is_oplog(req, &coll) {
                let st = req.shared.state();
                find_all(
                    &st.oplog,
                    &FindSpec {
                        filter: &Document::new(),
                        sort: None,
                        projection: None,
                        skip: 0,
                        limit: 0,
                    },
                )?
            } else {
                // A leading `$match` reads through the `_id` index like a find (mongod
                // pushes it down into the query layer), so only its matches are decoded.
                let leading_match = stages
                    .first()
                    .filter(|s| s.len() == 1)
                    .and_then(|s| s.get_document("$match").ok())
                    .map(Filter::parse)
                    .transpose()?;
                if leading_match.is_some() {
                    stages = &stages[1..];
                }
                let filter = leading_match.unwrap_or_else(Filter::all);
                read_coll(req, &coll, at, |c| {
                    c.map(|c| matching_docs(c, &filter)).unwrap_or_default()
                })?
            }
        }
        // `{aggregate: 1}` starting from `$documents`.
        _ if stages
            .first()
            .is_some_and(|s| s.len() == 1 && s.contains_key(documents::STAGE)) =>
        {
            let docs =
                documents::documents(stages[0].get(documents::STAGE).unwrap_or(&Bson::Null))?;
            stages = &stages[1..];
            docs
        }
        // `{aggregate: 1}` with `$listLocalSessions` first: the sessions this server has
        // seen (mongod's logical session cache), one `{_id: {id, uid}, lastUse}` each.
        _ if stages
            .first()
            .is_some_and(|s| s.len() == 1 && s.contains_key("$listLocalSessions")) =>
        {
            stages = &stages[1..];
            lock(&req.shared.seen_sessions)
                .values()
                .map(|(lsid, last_use)| doc! {"_id": lsid.clone(), "lastUse": *last_use})
                .collect()
        }
        _ => Vec::new(),
    };
    let out = run_stages(docs, stages)?;
    let ns = match req.cmd.get("aggregate") {
        Some(Bson::String(c)) => format!("{}.{c}", req.db),
        _ => format!("{}.$cmd.aggregate", req.db),
    };
    if let Some(output) = &output {
        super::out::write(req, output, out)?;
        return Ok(cursor_reply(true, Vec::new(), 0, &ns, None));
    }
    let mut rest: VecDeque<Document> = out.into();
    // `cursor: {batchSize: 0}`: an empty first batch and a live cursor, as mongod answers.
    let empty_first = requested == Some(0);
    let batch = if empty_first {
        Vec::new()
    } else {
        take_batch(&mut rest, requested.unwrap_or(DEFAULT_FIRST_BATCH))
    };
    let id = register(req, ns.clone(), rest, false, empty_first);
    Ok(cursor_reply(true, batch, id, &ns, at_cluster_time(at)))
}

/// Whether the pipeline has `stage`, which may only come first (else mongod's 40602).
fn first_only(stages: &[Document], stage: &str) -> Result<bool, CommandError> {
    match stages.iter().position(|s| s.contains_key(stage)) {
        None => Ok(false),
        Some(0) => Ok(true),
        Some(_) => Err(CommandError::new(
            40602,
            "Location40602",
            format!("{stage} is only valid as the first stage in a pipeline"),
        )),
    }
}

/// A leading `$sample` over collection `c`, the way mongod plans it: a
/// random cursor for a small share of a big collection, else a random sort
/// (see `aggregate::sample`). Only the chosen documents are decoded.
fn sample_collection(c: &Collection, size: usize) -> Result<Vec<Document>, QueryError> {
    let docs: Vec<&StoredDoc> = c.docs.values().collect();
    let mut rng = rand::thread_rng();
    let picks = if sample::uses_random_cursor(docs.len(), size) {
        sample::random_cursor(size, || rng.gen_range(0..docs.len()))?
    } else {
        sample::random_sort(docs.len(), size, &mut rng)
    };
    Ok(picks
        .into_iter()
        .filter_map(|i| docs.get(i).map(|d| d.doc().into_owned()))
        .collect())
}

fn change_stream(
    req: &mut Req<'_>,
    stage: Document,
    user_stages: Vec<Document>,
    requested: Option<usize>,
) -> CmdResult {
    let mut spec = StreamSpec::parse(&stage)?;
    let mut user_stages = user_stages;
    spec.split = crate::node::split::take_stage(&mut user_stages)?;
    if spec.split && req.shared.max_wire_version < crate::node::state::MAX_WIRE_VERSION {
        // An older server does not know the stage.
        return Err(CommandError::new(
            40324,
            "Location40324",
            format!(
                "Unrecognized pipeline stage name: '{}'",
                crate::node::split::STAGE
            ),
        ));
    }
    let scope = match req.cmd.get("aggregate") {
        Some(Bson::String(coll)) => {
            if req.db == "admin" || req.db == "config" || req.db == "local" {
                return Err(CommandError::invalid_namespace(format!(
                    "{}.{coll} is not a valid namespace for a change stream",
                    req.db
                )));
            }
            Scope::Collection {
                db: req.db.clone(),
                coll: coll.clone(),
            }
        }
        Some(Bson::Int32(1)) | Some(Bson::Int64(1)) | Some(Bson::Double(_)) => {
            if spec.all_changes_for_cluster {
                if req.db != "admin" {
                    return Err(CommandError::invalid_namespace(
                        "$changeStream may only be run against the 'admin' database if \
                         allChangesForCluster:true",
                    ));
                }
                Scope::Cluster
            } else if req.db == "admin" {
                return Err(CommandError::invalid_namespace(
                    "$changeStream may not be opened on the internal admin database",
                ));
            } else {
                Scope::Database { db: req.db.clone() }
            }
        }
        _ => {
            return Err(CommandError::failed_to_parse(
                "aggregate field must be a collection name or 1",
            ))
        }
    };
    // A user stage the server would reject fails the aggregate itself (280
    // for a modified `_id` only shows up on real events).
    let probe = doc! {"_id": {"_data": "00"}, "operationType": "insert"};
    if let Err(e) = apply_event_stages(probe, &user_stages) {
        if e.code != 280 {
            return Err(e.into());
        }
    }
    let ns = scope.cursor_ns();
    let mut cursor = {
        let st = req.shared.state();
        StreamCursor::open(&st.oplog, scope, spec, user_stages)?
    };
    let batch = cursor.first_batch(req.shared, requested.unwrap_or(DEFAULT_FIRST_BATCH))?;
    let pbrt = cursor.post_batch_token();
    let id = if cursor.is_invalidated() {
        0
    } else {
        lock(&req.shared.cursors).insert(ns.clone(), CursorKind::Stream(Box::new(cursor)))
    };
    req.batch = Some(batch);
    Ok(cursor_reply_shared(
        true,
        id,
        &ns,
        Some(("postBatchResumeToken", Bson::Document(pbrt))),
    ))
}
