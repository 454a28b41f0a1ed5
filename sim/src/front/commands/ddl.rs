//! Namespace and index commands: list/create/drop collections and databases,
//! renameCollection, collMod, createIndexes/dropIndexes/listIndexes. Each
//! change writes the `c` oplog entry a real primary writes.

use bson::{doc, Bson, Document};

use super::{as_i64, CmdResult, Req};
use crate::error::CommandError;
use crate::node::oplog::OplogOp;
use crate::node::state::State;
use crate::node::store::check_collection_name;
use crate::node::write_block;
use crate::node::writes::create_live;
use crate::query::Filter;

pub(super) fn cmd_op(
    db: &str,
    ui: Option<bson::Uuid>,
    o: Document,
    o2: Option<Document>,
) -> OplogOp {
    OplogOp {
        op: "c",
        ns: format!("{db}.$cmd"),
        ui,
        o,
        o2,
        images: None,
    }
}

/// Runs a DDL change under the state lock and wakes oplog waiters.
fn ddl<R>(req: &Req<'_>, f: impl FnOnce(&mut State) -> R) -> R {
    let (r, next) = {
        let mut st = req.shared.state();
        let r = f(&mut st);
        (r, st.oplog.next_seq())
    };
    req.shared.publish(next);
    r
}

/// DDL other than `create` and `createIndexes` (see `txn_ddl`) is refused in a transaction.
fn in_txn_forbidden(req: &Req<'_>) -> Result<(), CommandError> {
    if req.txn.is_some() && req.name != "create" && req.name != "createIndexes" {
        return Err(CommandError::new(
            263,
            "OperationNotSupportedInTransaction",
            format!("Cannot run '{}' in a multi-document transaction.", req.name),
        ));
    }
    Ok(())
}

/// `listDatabases`; a logged-in `user` without the `listDatabases` privilege sees only the
/// databases it may read (mongod's `authorizedDatabases` default).
pub fn list_databases(req: &Req<'_>, user: Option<&crate::front::auth::User>) -> CmdResult {
    let st = req.shared.state();
    let name_only = super::truthy(req.cmd.get("nameOnly"));
    let filter = req.doc_arg("filter")?.map(Filter::parse).transpose()?;
    // A replica-set member always has `admin` (system.version), `config` (system.sessions,
    // transactions) and `local` (the oplog), whether mongo-sim stores anything in them or not.
    let mut sizes: std::collections::BTreeMap<&str, i64> =
        [("admin", 40960), ("config", 61440), ("local", 1i64 << 20)].into();
    for (name, colls) in &st.catalog.dbs {
        if colls.is_empty() {
            continue;
        }
        let docs: usize = colls.values().map(|c| c.docs.len()).sum();
        let size = sizes.entry(name.as_str()).or_insert(0);
        *size = (*size).max((docs as i64 + 1) * 4096);
    }
    let dbs = sizes
        .into_iter()
        .map(|(name, size)| doc! {"name": name, "sizeOnDisk": size, "empty": false});
    let mut out = Vec::new();
    let mut total = 0i64;
    for d in dbs {
        if user.is_some_and(|u| !u.sees_database(d.get_str("name").unwrap_or_default())) {
            continue;
        }
        if filter.as_ref().is_some_and(|f| !f.matches(&d)) {
            continue;
        }
        total += d.get_i64("sizeOnDisk").unwrap_or(0);
        if name_only {
            out.push(Bson::Document(
                doc! {"name": d.get_str("name").unwrap_or_default()},
            ));
        } else {
            out.push(Bson::Document(d));
        }
    }
    let mut reply = doc! {"databases": out};
    if !name_only {
        reply.insert("totalSize", total);
        reply.insert("totalSizeMb", total >> 20);
    }
    Ok(reply)
}

pub fn list_collections(req: &Req<'_>) -> CmdResult {
    let filter = req.doc_arg("filter")?.map(Filter::parse).transpose()?;
    let name_only = super::truthy(req.cmd.get("nameOnly"));
    let st = req.shared.state();
    let mut batch = Vec::new();
    let mut infos: Vec<Document> = Vec::new();
    if req.db == "local" {
        infos.push(doc! {
            "name": "oplog.rs", "type": "collection",
            "options": {"capped": true, "size": 1i64 << 30},
            "info": {"readOnly": false},
        });
    }
    if let Some(colls) = st.catalog.dbs.get(&req.db) {
        for (name, c) in colls {
            infos.push(doc! {
                "name": name, "type": "collection", "options": c.options.clone(),
                "info": {"readOnly": false, "uuid": c.uuid},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            });
        }
    }
    for info in infos {
        if filter.as_ref().is_some_and(|f| !f.matches(&info)) {
            continue;
        }
        if name_only {
            batch.push(
                doc! {"name": info.get_str("name").unwrap_or_default(), "type": "collection"},
            );
        } else {
            batch.push(info);
        }
    }
    Ok(crate::node::cursor::cursor_reply(
        true,
        batch,
        0,
        &format!("{}.$cmd.listCollections", req.db),
        None,
    ))
}

pub fn list_indexes(req: &Req<'_>) -> CmdResult {
    let coll = req.coll()?;
    let st = req.shared.state();
    let Some(c) = st.catalog.get(&req.db, &coll) else {
        return Err(CommandError::namespace_not_found(format!(
            "ns does not exist: {}.{coll}",
            req.db
        )));
    };
    Ok(crate::node::cursor::cursor_reply(
        true,
        c.indexes.clone(),
        0,
        &format!("{}.{coll}", req.db),
        None,
    ))
}

pub fn create(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    let coll = req.coll()?;
    check_collection_name(&req.db, &coll)?;
    let mut options = Document::new();
    for (k, v) in &req.cmd {
        if matches!(
            k.as_str(),
            "capped"
                | "size"
                | "max"
                | "changeStreamPreAndPostImages"
                | "validator"
                | "validationLevel"
                | "validationAction"
                | "collation"
                | "viewOn"
                | "pipeline"
                | "timeseries"
                | "expireAfterSeconds"
                | "clusteredIndex"
        ) {
            options.insert(k.clone(), v.clone());
        }
    }
    if req.txn.is_some() {
        return super::txn_ddl::create(req, &coll, options);
    }
    ddl(req, |st| {
        if st.catalog.get(&req.db, &coll).is_some() {
            return Err(CommandError::new(
                48,
                "NamespaceExists",
                format!("Collection {}.{coll} already exists.", req.db),
            ));
        }
        write_block::check_catalog(&st.catalog, &req.db)?;
        create_live(&mut st.catalog, &mut st.oplog, &req.db, &coll, options);
        Ok(Document::new())
    })
}

/// Drops one collection from live storage, logging `{drop: coll}`.
fn drop_one(st: &mut State, db: &str, coll: &str) -> Option<usize> {
    let c = st.catalog.dbs.get_mut(db)?.remove(coll)?;
    st.oplog.append(
        cmd_op(
            db,
            Some(c.uuid),
            doc! {"drop": coll},
            Some(doc! {"numRecords": c.docs.len() as i64}),
        ),
        None,
    );
    if st.catalog.dbs.get(db).is_some_and(|d| d.is_empty()) {
        st.catalog.dbs.remove(db);
    }
    Some(c.indexes.len())
}

pub fn drop(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    let coll = req.coll()?;
    ddl(req, |st| {
        if st.catalog.get(&req.db, &coll).is_some() {
            write_block::check_catalog(&st.catalog, &req.db)?;
        }
        // MongoDB 7 no longer fails when the collection does not exist.
        let n = drop_one(st, &req.db, &coll);
        let mut reply = Document::new();
        if let Some(n) = n {
            reply.insert("nIndexesWas", n as i32);
        }
        reply.insert("ns", format!("{}.{coll}", req.db));
        Ok(reply)
    })
}

pub fn drop_database(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    ddl(req, |st| {
        let names: Vec<String> = st
            .catalog
            .dbs
            .get(&req.db)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        // Blocked at its first collection drop; an empty database drops fine.
        if !names.is_empty() {
            write_block::check_catalog(&st.catalog, &req.db)?;
        }
        for name in &names {
            drop_one(st, &req.db, name);
        }
        st.catalog.dbs.remove(&req.db);
        st.oplog
            .append(cmd_op(&req.db, None, doc! {"dropDatabase": 1}, None), None);
        Ok(doc! {"dropped": req.db.clone()})
    })
}

fn split_ns(ns: &str) -> Result<(String, String), CommandError> {
    match ns.split_once('.') {
        Some((db, coll)) if !db.is_empty() && !coll.is_empty() => {
            Ok((db.to_string(), coll.to_string()))
        }
        _ => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{ns}'"
        ))),
    }
}

pub fn rename_collection(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    if req.db != "admin" {
        return Err(CommandError::new(
            13,
            "Unauthorized",
            "renameCollection may only be run against the admin database.",
        ));
    }
    let from = req
        .cmd
        .get_str("renameCollection")
        .unwrap_or_default()
        .to_string();
    let to = req
        .cmd
        .get_str("to")
        .map_err(|_| CommandError::type_mismatch("'to' must be a string"))?
        .to_string();
    let (fdb, fcoll) = split_ns(&from)?;
    let (tdb, tcoll) = split_ns(&to)?;
    check_collection_name(&tdb, &tcoll)?;
    let drop_target = super::truthy(req.cmd.get("dropTarget"));
    ddl(req, |st| {
        if st.catalog.get(&fdb, &fcoll).is_none() {
            return Err(CommandError::namespace_not_found(format!(
                "Source collection {from} does not exist"
            )));
        }
        if from == to {
            return Err(CommandError::illegal_operation(
                "Can't rename a collection to itself",
            ));
        }
        let target_uuid = st.catalog.get(&tdb, &tcoll).map(|c| c.uuid);
        if target_uuid.is_some() && !drop_target {
            return Err(CommandError::new(
                48,
                "NamespaceExists",
                "target namespace exists",
            ));
        }
        write_block::check_catalog(&st.catalog, &fdb)?;
        write_block::check_catalog(&st.catalog, &tdb)?;
        let Some(c) = st.catalog.dbs.get_mut(&fdb).and_then(|d| d.remove(&fcoll)) else {
            return Err(CommandError::namespace_not_found("source vanished"));
        };
        if st.catalog.dbs.get(&fdb).is_some_and(|d| d.is_empty()) {
            st.catalog.dbs.remove(&fdb);
        }
        let mut o = doc! {"renameCollection": from.clone(), "to": to.clone(), "stayTemp": false};
        if let Some(t) = target_uuid {
            o.insert("dropTarget", t);
        }
        st.oplog.append(cmd_op(&fdb, Some(c.uuid), o, None), None);
        st.catalog
            .dbs
            .entry(tdb.clone())
            .or_default()
            .insert(tcoll.clone(), c);
        Ok(Document::new())
    })
}

pub fn coll_mod(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    let coll = req.coll()?;
    ddl(req, |st| {
        // Checked once the collection is known to exist, as mongod does.
        let allowed = write_block::check_catalog(&st.catalog, &req.db);
        let Some(c) = st.catalog.get_mut(&req.db, &coll) else {
            return Err(CommandError::namespace_not_found(format!(
                "ns does not exist: {}.{coll}",
                req.db
            )));
        };
        allowed?;
        let mut o = doc! {"collMod": coll.clone()};
        for (k, v) in &req.cmd {
            if k == "collMod" || k.starts_with('$') || k == "lsid" || k == "writeConcern" {
                continue;
            }
            c.options.insert(k.clone(), v.clone());
            o.insert(k.clone(), v.clone());
        }
        let ui = c.uuid;
        st.oplog.append(cmd_op(&req.db, Some(ui), o, None), None);
        Ok(Document::new())
    })
}

/// A `partialFilterExpression` as mongod's index build takes it: an object (14), a valid
/// filter (its parse error), and only the expressions a partial index allows (67).
fn check_partial_filter(spec: &Document) -> Result<(), CommandError> {
    let Some(f) = spec.get("partialFilterExpression") else {
        return Ok(());
    };
    let Bson::Document(f) = f else {
        return Err(CommandError::type_mismatch(format!(
            "The field 'partialFilterExpression' must be an object, but got {}",
            super::type_name(f)
        )));
    };
    crate::query::Filter::parse(f)?;
    if let Some(op) = unsupported_in_partial(f, true) {
        return Err(CommandError::new(
            67,
            "CannotCreateIndex",
            format!("Expression not supported in partial index: {op}"),
        ));
    }
    Ok(())
}

/// The first operator of `f` a partial index does not allow (MongoDB 7.0: equality, `$exists:
/// true`, comparisons, `$type`, `$in`, and `$and`/`$or` at the top).
fn unsupported_in_partial(f: &Document, top: bool) -> Option<String> {
    for (k, v) in f {
        match k.as_str() {
            "$and" | "$or" if top => {
                let parts = v.as_array()?;
                if let Some(op) = parts
                    .iter()
                    .filter_map(Bson::as_document)
                    .find_map(|p| unsupported_in_partial(p, false))
                {
                    return Some(op);
                }
            }
            op if op.starts_with('$') => return Some(op.to_string()),
            _ => {
                if let Bson::Document(conds) = v {
                    for (op, arg) in conds {
                        let allowed = match op.as_str() {
                            "$eq" | "$gt" | "$gte" | "$lt" | "$lte" | "$type" | "$in" => true,
                            "$exists" => crate::front::commands::truthy(Some(arg)),
                            other => !other.starts_with('$'),
                        };
                        if !allowed {
                            return Some(op.clone());
                        }
                    }
                }
            }
        }
    }
    None
}

pub fn create_indexes(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    let coll = req.coll()?;
    check_collection_name(&req.db, &coll)?;
    let specs: Vec<Document> = req
        .cmd
        .get_array("indexes")
        .map_err(|_| CommandError::type_mismatch("'indexes' must be an array"))?
        .iter()
        .filter_map(|b| b.as_document().cloned())
        .collect();
    for s in &specs {
        if s.get_document("key").is_err() || s.get_str("name").is_err() {
            return Err(CommandError::failed_to_parse(
                "index specification must have 'key' and 'name'",
            ));
        }
        check_partial_filter(s)?;
    }
    if req.txn.is_some() {
        return super::txn_ddl::create_indexes(req, &coll, specs);
    }
    ddl(req, |st| {
        let allowed = write_block::check_catalog(&st.catalog, &req.db);
        let created = st.catalog.get(&req.db, &coll).is_none();
        if created {
            allowed.clone()?;
            create_live(
                &mut st.catalog,
                &mut st.oplog,
                &req.db,
                &coll,
                Document::new(),
            );
        }
        let Some(c) = st.catalog.get_mut(&req.db, &coll) else {
            return Err(CommandError::namespace_not_found("collection vanished"));
        };
        // Indexes that all exist already build nothing, and are not refused.
        let builds = specs.iter().any(|s| {
            let name = s.get_str("name").unwrap_or_default();
            !c.indexes.iter().any(|i| i.get_str("name") == Ok(name))
        });
        if builds {
            allowed?;
        }
        let before = c.indexes.len();
        let ui = c.uuid;
        let mut ops = Vec::new();
        for s in specs {
            let name = s.get_str("name").unwrap_or_default();
            if c.indexes.iter().any(|i| i.get_str("name") == Ok(name)) {
                continue;
            }
            if s.get_bool("unique").unwrap_or(false) {
                let pattern = s.get_document("key").cloned().unwrap_or_default();
                if let Some(key) = c.duplicate_for_new_index(&s) {
                    let dup = crate::node::store::DuplicateKey {
                        index: name.to_string(),
                        key_pattern: pattern,
                        key_value: key,
                    };
                    return Err(CommandError::new(
                        11000,
                        "DuplicateKey",
                        format!("Index build failed: {}", dup.errmsg(&req.db, &coll)),
                    ));
                }
            }
            let mut spec = doc! {"v": 2};
            spec.extend(s.clone());
            c.indexes.push(spec.clone());
            let mut o = doc! {"createIndexes": coll.clone()};
            o.extend(spec);
            ops.push(cmd_op(&req.db, Some(ui), o, None));
        }
        let after = c.indexes.len();
        for op in ops {
            st.oplog.append(op, None);
        }
        Ok(doc! {
            "numIndexesBefore": before as i32,
            "numIndexesAfter": after as i32,
            "createdCollectionAutomatically": created,
        })
    })
}

pub fn drop_indexes(req: &Req<'_>) -> CmdResult {
    in_txn_forbidden(req)?;
    let coll = req.coll()?;
    let index = req.cmd.get("index").cloned().unwrap_or(Bson::Null);
    ddl(req, |st| {
        let Some(c) = st.catalog.get_mut(&req.db, &coll) else {
            return Err(CommandError::namespace_not_found(format!(
                "ns not found {}.{coll}",
                req.db
            )));
        };
        let before = c.indexes.len();
        let ui = c.uuid;
        let victims: Vec<String> = c
            .indexes
            .iter()
            .filter(|i| i.get_str("name") != Ok("_id_"))
            .filter(|i| match &index {
                Bson::String(s) if s == "*" => true,
                Bson::String(s) => i.get_str("name") == Ok(s.as_str()),
                Bson::Document(k) => i.get_document("key").ok() == Some(k),
                Bson::Array(names) => names
                    .iter()
                    .any(|n| n.as_str().is_some_and(|n| i.get_str("name") == Ok(n))),
                _ => false,
            })
            .filter_map(|i| i.get_str("name").ok().map(str::to_string))
            .collect();
        if victims.is_empty() && !matches!(&index, Bson::String(s) if s == "*") {
            return Err(CommandError::new(
                27,
                "IndexNotFound",
                format!("index not found with name [{index}]"),
            ));
        }
        if !victims.is_empty() {
            write_block::check_catalog(&st.catalog, &req.db)?;
        }
        let Some(c) = st.catalog.get_mut(&req.db, &coll) else {
            return Err(CommandError::namespace_not_found("collection vanished"));
        };
        c.indexes
            .retain(|i| !victims.iter().any(|v| i.get_str("name") == Ok(v.as_str())));
        for v in victims {
            st.oplog.append(
                cmd_op(
                    &req.db,
                    Some(ui),
                    doc! {"dropIndexes": coll.clone(), "index": v},
                    None,
                ),
                None,
            );
        }
        Ok(doc! {"nIndexesWas": before as i32})
    })
}

/// Used by `count` and friends: numbers like `limit: 5.0` are accepted.
pub fn usize_arg(req: &Req<'_>, key: &str) -> Result<usize, CommandError> {
    match as_i64(req.cmd.get(key)) {
        Some(n) => Ok(n.unsigned_abs() as usize),
        None => Ok(0),
    }
}
