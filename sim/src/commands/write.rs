//! Write commands: insert, update, delete (with `writeErrors` like mongod:
//! ordered batches stop at the first error) and findAndModify.

use bson::{doc, Bson, Document};

use super::{truthy, CmdResult, Req};
use crate::error::CommandError;
use crate::update::UpdateSpec;
use crate::wire::InsertDoc;
use crate::writes::{self, UpdateStatement, WriteError};

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

fn ordered(req: &Req<'_>) -> bool {
    req.cmd
        .get("ordered")
        .map(|b| truthy(Some(b)))
        .unwrap_or(true)
}

/// A write error inside a transaction aborts it, as on a real server.
fn abort_txn_on_error(req: &Req<'_>, had_error: bool) {
    if let (true, Some(key)) = (had_error, &req.txn) {
        let mut sessions = crate::state::lock(&req.shared.sessions);
        if let Some(s) = sessions.get_mut(key) {
            s.phase = crate::state::TxnPhase::Aborted;
            s.writes = Default::default();
        }
    }
}

fn finish(req: &Req<'_>, mut reply: Document, errors: Vec<Document>) -> CmdResult {
    abort_txn_on_error(req, !errors.is_empty());
    // A write conflict fails the whole command (so it can carry
    // TransientTransactionError), it is not a per-statement write error.
    if errors.iter().any(|e| e.get_i32("code") == Ok(112)) {
        return Err(crate::writes::write_conflict());
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
    let req = &*req;
    let ordered = ordered(req);
    let (n, errors) = req.with_target(|t| {
        let mut n = 0i32;
        let mut errors = Vec::new();
        for (i, d) in docs.into_iter().enumerate() {
            let inserted = match d {
                Some(InsertDoc::Raw(raw)) => writes::insert_raw(t, &req.db, &coll, raw),
                Some(InsertDoc::Decoded(d)) => writes::insert_one(t, &req.db, &coll, d),
                None => Err(WriteError::from(CommandError::type_mismatch(
                    "document must be an object",
                ))),
            };
            match inserted {
                Ok(()) => n += 1,
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
    finish(req, doc! {"n": n}, errors)
}

pub fn update(req: &Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let stmts = statements(req, "updates")?;
    let ordered = ordered(req);
    let (n, modified, upserted, errors) = req.with_target(|t| {
        let mut n = 0i64;
        let mut modified = 0i64;
        let mut upserted = Vec::new();
        let mut errors = Vec::new();
        for (i, st) in stmts.iter().enumerate() {
            let r = (|| -> Result<writes::UpdateOutcome, WriteError> {
                let filter = st.get_document("q").cloned().unwrap_or_default();
                let u = st
                    .get("u")
                    .ok_or_else(|| CommandError::failed_to_parse("update statement without 'u'"))?;
                let spec = UpdateSpec::parse(u)?;
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
                    },
                )
            })();
            match r {
                Ok(out) => {
                    n += out.matched;
                    modified += out.modified;
                    if let Some(id) = out.upserted {
                        n += 1;
                        upserted.push(Bson::Document(doc! {"index": i as i32, "_id": id}));
                    }
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
    let mut reply = doc! {"n": n as i32, "nModified": modified as i32};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    finish(req, reply, errors)
}

pub fn delete(req: &Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let stmts = statements(req, "deletes")?;
    let ordered = ordered(req);
    let (n, errors) = req.with_target(|t| {
        let mut n = 0i64;
        let mut errors = Vec::new();
        for (i, st) in stmts.iter().enumerate() {
            let filter = st.get_document("q").cloned().unwrap_or_default();
            let limit_one = super::as_i64(st.get("limit")).unwrap_or(0) == 1;
            match writes::delete(t, &req.db, &coll, &filter, limit_one, None) {
                Ok(out) => n += out.deleted,
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
    finish(req, doc! {"n": n as i32}, errors)
}

pub fn find_and_modify(req: &Req<'_>) -> CmdResult {
    let coll = req.coll()?;
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
            Ok(reply)
        }
        Err(e) => {
            abort_txn_on_error(req, true);
            Err(e.to_command_error())
        }
    }
}
