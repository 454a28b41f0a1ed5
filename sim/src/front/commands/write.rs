//! Write commands: insert, update, delete (with `writeErrors` like mongod:
//! ordered batches stop at the first error) and findAndModify.

use bson::{doc, Bson, Document};

use super::{truthy, CmdResult, Req};
use crate::error::CommandError;
use crate::front::wire::InsertDoc;
use crate::node::failpoint::error_name;
use crate::node::retry::{RetryableWrite, StmtOutcome};
use crate::node::state::lock;
use crate::node::writes::{self, UpdateStatement, WriteError};
use crate::update::{check_array_filters, ArrayFilters, UpdateSpec};

fn statements(req: &Req<'_>, field: &str) -> Result<Vec<Document>, CommandError> {
    let arr = req.cmd.get_array(field).map_err(|_| {
        CommandError::new(
            40414,
            "Location40414",
            format!(
                "BSON field '{}.{field}' is missing but a required field",
                req.name
            ),
        )
    })?;
    arr.iter()
        .map(|b| match b {
            Bson::Document(d) => Ok(d.clone()),
            _ => Err(CommandError::type_mismatch(format!(
                "{field} entries must be objects"
            ))),
        })
        .collect()
}

/// Refuses a statement field mongod 7.0 does not know (40415): its IDL parser reads the whole
/// command, statements included, before running any of it, so the command fails (`ok: 0`), not
/// the statement. An option must never be accepted and ignored (`sort` on update is MongoDB
/// 8.0's).
fn check_statement_fields(
    req: &Req<'_>,
    field: &str,
    stmts: &[Document],
    known: &[&str],
) -> Result<(), CommandError> {
    let unknown = stmts
        .iter()
        .find_map(|st| st.keys().find(|k| !known.contains(&k.as_str())));
    match unknown {
        Some(k) => Err(CommandError::new(
            40415,
            "Location40415",
            format!("BSON field '{}.{field}.{k}' is an unknown field.", req.name),
        )),
        None => Ok(()),
    }
}

const UPDATE_FIELDS: &[&str] = &[
    "q",
    "u",
    "c",
    "arrayFilters",
    "multi",
    "upsert",
    "upsertSupplied",
    "collation",
    "hint",
    "sampleId",
];

fn ordered(req: &Req<'_>) -> bool {
    req.cmd
        .get("ordered")
        .map(|b| truthy(Some(b)))
        .unwrap_or(true)
}

/// A write error inside a transaction aborts it, as on a real server.
fn abort_txn_on_error(req: &Req<'_>, had_error: bool) {
    if let (true, Some(key)) = (had_error, &req.txn) {
        let mut sessions = crate::node::state::lock(&req.shared.sessions);
        if let Some(s) = sessions.get_mut(key) {
            s.phase = crate::node::state::TxnPhase::Aborted;
            s.writes = Default::default();
        }
    }
}

/// The retryable-write identity of this command (`lsid` + `txnNumber`, no transaction),
/// with its `txnNumber` made the session's current one.
fn retryable(req: &Req<'_>) -> Result<Option<RetryableWrite>, CommandError> {
    let Some(w) = RetryableWrite::of(&req.cmd, req.txn.is_some()) else {
        return Ok(None);
    };
    lock(&req.shared.retries).begin(&w.key, w.txn_number)?;
    Ok(Some(w))
}

/// What statement `i` did on an earlier attempt of this retryable write.
fn done_before(req: &Req<'_>, w: Option<&RetryableWrite>, i: usize) -> Option<StmtOutcome> {
    let w = w?;
    lock(&req.shared.retries)
        .executed(&w.key, w.txn_number, w.stmt(i))
        .cloned()
}

fn record(req: &Req<'_>, w: Option<&RetryableWrite>, i: usize, outcome: StmtOutcome) {
    if let Some(w) = w {
        lock(&req.shared.retries).record(&w.key, w.txn_number, w.stmt(i), outcome);
    }
}

/// `onPrimaryTransactionalWrite` for a retryable-write statement about to commit: sets
/// `close` when the connection is to drop after the command, and returns the error that
/// fails the statement before it commits.
fn transactional_write(
    req: &Req<'_>,
    w: Option<&RetryableWrite>,
    close: &mut bool,
) -> Option<WriteError> {
    w?;
    let fired = lock(&req.shared.failpoints).on_transactional_write()?;
    *close |= fired.close_connection;
    fired.fail_code.map(|code| {
        WriteError::from(CommandError::new(
            code,
            error_name(code),
            "Failing write due to failpoint. The write must not be reflected.",
        ))
    })
}

fn finish(req: &Req<'_>, mut reply: Document, errors: Vec<Document>) -> CmdResult {
    abort_txn_on_error(req, !errors.is_empty());
    // A write conflict fails the whole command (so it can carry
    // TransientTransactionError), it is not a per-statement write error.
    if errors.iter().any(|e| e.get_i32("code") == Ok(112)) {
        return Err(crate::node::writes::write_conflict());
    }
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

pub fn insert(req: &mut Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    // Taken out of the request rather than cloned: bulk inserts are hot.
    // `None` stands for an entry that is not an object.
    let docs: Vec<Option<InsertDoc<'_>>> = match req.documents.take() {
        Some(docs) => docs.into_iter().map(Some).collect(),
        None => match req.cmd.remove("documents") {
            Some(Bson::Array(docs)) => docs
                .into_iter()
                .map(|d| match d {
                    Bson::Document(d) => Some(InsertDoc::Decoded(d)),
                    _ => None,
                })
                .collect(),
            _ => {
                return Err(CommandError::failed_to_parse(
                    "'documents' must be an array",
                ))
            }
        },
    };
    let retry = retryable(req)?;
    let w = retry.as_ref();
    let mut close = false;
    let ordered = ordered(req);
    let (n, errors) = req.with_target(|t| {
        let mut n = 0i32;
        let mut errors = Vec::new();
        // An insert's documents commit together on mongod: its fail point fires once.
        let mut checked = false;
        for (i, d) in docs.into_iter().enumerate() {
            if done_before(req, w, i).is_some() {
                n += 1;
                continue;
            }
            if !checked {
                checked = true;
                if let Some(e) = transactional_write(req, w, &mut close) {
                    errors.push(e.to_document(i));
                    break;
                }
            }
            let inserted = match d {
                Some(InsertDoc::Raw(raw)) => writes::insert_raw(t, &req.db, &coll, raw),
                Some(InsertDoc::Decoded(d)) => writes::insert_one(t, &req.db, &coll, d),
                None => Err(WriteError::from(CommandError::type_mismatch(
                    "document must be an object",
                ))),
            };
            match inserted {
                Ok(()) => {
                    n += 1;
                    record(req, w, i, StmtOutcome::Inserted);
                }
                Err(e) => {
                    errors.push(e.to_document(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        (n, errors)
    })?;
    req.close_connection |= close;
    finish(req, doc! {"n": n}, errors)
}

pub fn update(req: &mut Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let stmts = statements(req, "updates")?;
    check_statement_fields(req, "updates", &stmts, UPDATE_FIELDS)?;
    let ordered = ordered(req);
    let retry = retryable(req)?;
    let w = retry.as_ref();
    let mut close = false;
    let (n, modified, upserted, errors) = req.with_target(|t| {
        let mut n = 0i64;
        let mut modified = 0i64;
        let mut upserted = Vec::new();
        let mut errors = Vec::new();
        for (i, st) in stmts.iter().enumerate() {
            let upserted_at = |id: Bson| Bson::Document(doc! {"index": i as i32, "_id": id});
            if let Some(StmtOutcome::Updated {
                n: sn,
                modified: sm,
                upserted: su,
            }) = done_before(req, w, i)
            {
                n += sn;
                modified += sm;
                upserted.extend(su.map(upserted_at));
                continue;
            }
            if let Some(e) = transactional_write(req, w, &mut close) {
                errors.push(e.to_document(i));
                break;
            }
            let r = (|| -> Result<writes::UpdateOutcome, WriteError> {
                let filter = st.get_document("q").cloned().unwrap_or_default();
                let u = st
                    .get("u")
                    .ok_or_else(|| CommandError::failed_to_parse("update statement without 'u'"))?;
                let spec = UpdateSpec::parse(u)?;
                let array_filters = ArrayFilters::parse(st.get("arrayFilters"))?;
                check_array_filters(&spec, &array_filters)?;
                let multi = truthy(st.get("multi"));
                if multi && matches!(spec, UpdateSpec::Replacement(_)) {
                    return Err(CommandError::failed_to_parse(
                        "multi update is not supported for replacement-style update",
                    )
                    .into());
                }
                writes::update(
                    t,
                    &req.db,
                    &coll,
                    &UpdateStatement {
                        filter: &filter,
                        spec: &spec,
                        multi,
                        upsert: truthy(st.get("upsert")),
                        sort: None,
                        array_filters: &array_filters,
                    },
                )
            })();
            match r {
                Ok(out) => {
                    let sn = out.matched + i64::from(out.upserted.is_some());
                    n += sn;
                    modified += out.modified;
                    record(
                        req,
                        w,
                        i,
                        StmtOutcome::Updated {
                            n: sn,
                            modified: out.modified,
                            upserted: out.upserted.clone(),
                        },
                    );
                    upserted.extend(out.upserted.map(upserted_at));
                }
                Err(e) => {
                    errors.push(e.to_document(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        (n, modified, upserted, errors)
    })?;
    req.close_connection |= close;
    let mut reply = doc! {"n": n as i32, "nModified": modified as i32};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    finish(req, reply, errors)
}

pub fn delete(req: &mut Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let stmts = statements(req, "deletes")?;
    let ordered = ordered(req);
    let retry = retryable(req)?;
    let w = retry.as_ref();
    let mut close = false;
    let (n, errors) = req.with_target(|t| {
        let mut n = 0i64;
        let mut errors = Vec::new();
        for (i, st) in stmts.iter().enumerate() {
            if let Some(StmtOutcome::Deleted { n: sn }) = done_before(req, w, i) {
                n += sn;
                continue;
            }
            if let Some(e) = transactional_write(req, w, &mut close) {
                errors.push(e.to_document(i));
                break;
            }
            let filter = st.get_document("q").cloned().unwrap_or_default();
            let limit_one = super::as_i64(st.get("limit")).unwrap_or(0) == 1;
            match writes::delete(t, &req.db, &coll, &filter, limit_one, None) {
                Ok(out) => {
                    n += out.deleted;
                    record(req, w, i, StmtOutcome::Deleted { n: out.deleted });
                }
                Err(e) => {
                    errors.push(e.to_document(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        (n, errors)
    })?;
    req.close_connection |= close;
    finish(req, doc! {"n": n as i32}, errors)
}

pub fn find_and_modify(req: &mut Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let retry = retryable(req)?;
    let w = retry.as_ref();
    if let Some(StmtOutcome::FindAndModify(reply)) = done_before(req, w, 0) {
        return Ok(reply);
    }
    let mut close = false;
    if let Some(e) = transactional_write(req, w, &mut close) {
        req.close_connection |= close;
        return Err(e.to_command_error());
    }
    req.close_connection |= close;
    let query = req.doc_arg("query")?.cloned().unwrap_or_default();
    let sort = req.doc_arg("sort")?.cloned();
    let fields = req.doc_arg("fields")?.cloned();
    let remove = truthy(req.cmd.get("remove"));
    let return_new = truthy(req.cmd.get("new"));
    let upsert = truthy(req.cmd.get("upsert"));
    let spec = match req.cmd.get("update") {
        Some(u) if !remove => Some(UpdateSpec::parse(u)?),
        Some(_) => {
            return Err(CommandError::failed_to_parse(
                "Cannot specify both an update and remove=true",
            ))
        }
        None if remove => None,
        None => {
            return Err(CommandError::failed_to_parse(
                "Either an update or remove=true must be specified",
            ))
        }
    };
    let array_filters = ArrayFilters::parse(req.cmd.get("arrayFilters"))?;
    if let Some(spec) = &spec {
        check_array_filters(spec, &array_filters)?;
    }
    let result = req.with_target(|t| -> Result<Document, WriteError> {
        match &spec {
            None => {
                let out = writes::delete(t, &req.db, &coll, &query, true, sort.as_ref())?;
                Ok(doc! {
                    "lastErrorObject": {"n": out.deleted as i32},
                    "value": out.last.map(Bson::Document).unwrap_or(Bson::Null),
                })
            }
            Some(spec) => {
                let out = writes::update(
                    t,
                    &req.db,
                    &coll,
                    &UpdateStatement {
                        filter: &query,
                        spec,
                        multi: false,
                        upsert,
                        sort: sort.as_ref(),
                        array_filters: &array_filters,
                    },
                )?;
                let mut leo = doc! {
                    "n": (out.matched + i64::from(out.upserted.is_some())) as i32,
                    "updatedExisting": out.matched > 0,
                };
                if let Some(id) = &out.upserted {
                    leo.insert("upserted", id.clone());
                }
                let value = if return_new {
                    out.post
                } else if out.upserted.is_some() {
                    None
                } else {
                    out.pre
                };
                Ok(doc! {
                    "lastErrorObject": leo,
                    "value": value.map(Bson::Document).unwrap_or(Bson::Null),
                })
            }
        }
    })?;
    match result {
        Ok(mut reply) => {
            if let (Some(f), Ok(v)) = (
                fields.filter(|f| !f.is_empty()),
                reply.get_document("value"),
            ) {
                let projected = crate::query::project(v, &f)?;
                reply.insert("value", projected);
            }
            record(req, w, 0, StmtOutcome::FindAndModify(reply.clone()));
            Ok(reply)
        }
        Err(e) => {
            abort_txn_on_error(req, true);
            Err(e.to_command_error())
        }
    }
}
