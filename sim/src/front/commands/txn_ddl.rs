//! `create` and `createIndexes` inside a multi-document transaction, as MongoDB 7 allows them:
//! a collection created in the transaction (explicitly, by `createIndexes`, or implicitly by a
//! write) lives in the transaction's private copy, its `create` and `createIndexes` entries go
//! into the commit's `applyOps` (with the transaction's `lsid`/`txnNumber`), nobody else sees
//! it before the commit, and an abort leaves nothing. New indexes are allowed only on a
//! collection that does not exist yet or that this transaction created and is still empty
//! (the server's `runCreateIndexesOnNewCollection`); anything else is 263
//! OperationNotSupportedInTransaction with the server's message.

use bson::{doc, Document};

use super::{CmdResult, Req};
use crate::error::CommandError;
use crate::node::state::lock;
use crate::node::store::{Catalog, Collection};
use crate::node::write_block;
use crate::node::writes::{create_op, TxnWrites};

/// Runs `f` on the live catalog (read-only) and the transaction's private writes.
fn with_txn<R>(
    req: &Req<'_>,
    f: impl FnOnce(&Catalog, &mut TxnWrites) -> Result<R, CommandError>,
) -> Result<R, CommandError> {
    let Some(key) = &req.txn else {
        return Err(CommandError::no_such_transaction(
            "transaction is no longer open",
        ));
    };
    let mut sessions = lock(&req.shared.sessions);
    let Some(s) = sessions.get_mut(key) else {
        return Err(CommandError::no_such_transaction(
            "transaction is no longer open",
        ));
    };
    let st = req.shared.state();
    f(&st.catalog, &mut s.writes)
}

fn not_in_txn(message: String) -> CommandError {
    CommandError::new(263, "OperationNotSupportedInTransaction", message)
}

/// System collections are refused in transactions like any other write to them.
fn check_not_system(db: &str, coll: &str) -> Result<(), CommandError> {
    if coll.starts_with("system.") {
        return Err(not_in_txn(format!(
            "Cannot write to system collection {db}.{coll} within a transaction."
        )));
    }
    Ok(())
}

/// The collection as the transaction sees it.
fn visible<'a>(
    catalog: &'a Catalog,
    txn: &'a TxnWrites,
    db: &str,
    coll: &str,
) -> Option<&'a Collection> {
    txn.colls
        .get(&(db.to_string(), coll.to_string()))
        .or_else(|| catalog.get(db, coll))
}

/// Creates `db.coll` in the transaction's copy, logging its `create` entry there.
fn create_in(txn: &mut TxnWrites, db: &str, coll: &str, options: Document) {
    let c = Collection::new(options);
    txn.log.ops.push((create_op(db, coll, &c), None));
    txn.colls.insert((db.to_string(), coll.to_string()), c);
}

/// `create` inside a transaction.
pub fn create(req: &Req<'_>, coll: &str, options: Document) -> CmdResult {
    check_not_system(&req.db, coll)?;
    with_txn(req, |catalog, txn| {
        if visible(catalog, txn, &req.db, coll).is_some() {
            return Err(CommandError::new(
                48,
                "NamespaceExists",
                format!("Collection {}.{coll} already exists.", req.db),
            ));
        }
        write_block::check_catalog(catalog, &req.db)?;
        create_in(txn, &req.db, coll, options);
        Ok(Document::new())
    })
}

/// `createIndexes` inside a transaction; `specs` are validated (`key` and `name`).
pub fn create_indexes(req: &Req<'_>, coll: &str, specs: Vec<Document>) -> CmdResult {
    check_not_system(&req.db, coll)?;
    let ns = format!("{}.{coll}", req.db);
    with_txn(req, |catalog, txn| {
        let exists = |c: &Collection, s: &Document| {
            let name = s.get_str("name").unwrap_or_default();
            c.indexes.iter().any(|i| i.get_str("name") == Ok(name))
        };
        let created_automatically = match visible(catalog, txn, &req.db, coll) {
            // Indexes that all exist already build nothing, and are not refused.
            Some(c) if specs.iter().all(|s| exists(c, s)) => {
                let n = c.indexes.len() as i32;
                return Ok(doc! {
                    "numIndexesBefore": n,
                    "numIndexesAfter": n,
                    "createdCollectionAutomatically": false,
                    "note": "all indexes already exist",
                });
            }
            Some(_) if catalog.get(&req.db, coll).is_some() => {
                return Err(not_in_txn(format!(
                    "Cannot create new indexes on existing collection {ns} in a \
                     multi-document transaction."
                )));
            }
            Some(c) if !c.docs.is_empty() => {
                return Err(not_in_txn(format!(
                    "Cannot create new indexes on non-empty collection {ns} in a \
                     multi-document transaction."
                )));
            }
            Some(_) => false,
            None => {
                write_block::check_catalog(catalog, &req.db)?;
                create_in(txn, &req.db, coll, Document::new());
                true
            }
        };
        let key = (req.db.clone(), coll.to_string());
        let TxnWrites { colls, log } = txn;
        let Some(c) = colls.get_mut(&key) else {
            return Err(CommandError::namespace_not_found("collection vanished"));
        };
        let before = c.indexes.len() as i32;
        for s in specs {
            if exists(c, &s) {
                continue;
            }
            let mut spec = doc! {"v": 2};
            spec.extend(s);
            c.indexes.push(spec.clone());
            let mut o = doc! {"createIndexes": coll};
            o.extend(spec);
            log.ops
                .push((super::ddl::cmd_op(&req.db, Some(c.uuid), o, None), None));
        }
        Ok(doc! {
            "numIndexesBefore": before,
            "numIndexesAfter": c.indexes.len() as i32,
            "createdCollectionAutomatically": created_automatically,
        })
    })
}
