//! Command dispatch: fail points first, then the transaction context, then the
//! handler; every reply gets `ok`, `$clusterTime` and `operationTime`.
//!
//! Layout: `admin` (hello, buildInfo, sessions, fail points, write
//! blocking), `ddl` (namespaces and indexes), `write`
//! (insert/update/delete/findAndModify), `read` (find, getMore, count,
//! aggregate, killCursors; `find_keys`: find's min/max, returnKey, showRecordId), `out` (the `$out`/`$merge` stages), `explain`, `txn`
//! (commit/abort and the per-session transaction state), `txn_ddl` (`create` and
//! `createIndexes` inside a transaction).

mod admin;
mod coll_stats;
mod ddl;
mod explain;
mod find_keys;
mod out;
mod read;
mod txn;
mod txn_ddl;
mod validate;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document};

use crate::error::CommandError;
use crate::front::wire::InsertDoc;
use crate::node::cursor::BatchDoc;
use crate::node::state::{cluster_time_doc, lock, Shared};
use crate::node::write_block;
use crate::node::writes::{LiveSink, LiveTarget, RetryInfo, Target, TxnTarget};

pub use admin::{add_auth_fields, hello_reply};
pub use txn::{commit_together, session_key};

/// Per-connection facts handlers need.
pub struct Conn {
    pub id: i64,
    /// `client.application.name` from the handshake; `failCommand` can target it.
    pub app_name: Option<String>,
    /// `host:port` this connection reached us on: what `hello` advertises.
    pub me: String,
    /// Who this connection logged in as (only consulted with `--auth`).
    pub session: crate::front::auth::Session,
}

/// One command being executed.
pub struct Req<'a> {
    pub shared: &'a Arc<Shared>,
    pub cmd: Document,
    pub name: String,
    pub db: String,
    /// Set by handlers when the command is a change stream aggregate/getMore,
    /// which changes how error labels are assigned.
    pub is_change_stream: bool,
    /// The lsid `id` bytes of an open transaction this command runs in.
    pub txn: Option<Vec<u8>>,
    /// A cursor batch that travels beside the reply document (whose batch
    /// array is left empty) so the wire encoder writes it without copies.
    pub batch: Option<Vec<BatchDoc>>,
    /// An insert's `documents` sequence, when it came as one (`cmd` then
    /// has no `documents`): borrowed from the request frame.
    pub documents: Option<Vec<InsertDoc<'a>>>,
    /// Set by a handler whose fail point (`onPrimaryTransactionalWrite`) drops the
    /// connection after the command ran: no reply is sent.
    pub close_connection: bool,
}

pub enum Outcome {
    /// The reply, and the batch that belongs in its `cursor` (see `Req::batch`).
    Reply(Document, Option<Vec<BatchDoc>>),
    CloseConnection,
}

type CmdResult = Result<Document, CommandError>;

impl Req<'_> {
    /// Runs `f` against the storage this command sees: live storage (writes
    /// go to the oplog immediately) or its transaction's private copy.
    pub fn with_target<R>(&self, f: impl FnOnce(&mut dyn Target) -> R) -> Result<R, CommandError> {
        match &self.txn {
            None => {
                let (r, next) = {
                    let mut st = self.shared.state();
                    let st = &mut *st;
                    let writes_blocked = write_block::blocked(&st.catalog);
                    let r = f(&mut LiveTarget {
                        catalog: &mut st.catalog,
                        sink: LiveSink {
                            oplog: &mut st.oplog,
                            retry: self.retry_info(),
                            writes_blocked,
                            bypass_validation: truthy(self.cmd.get("bypassDocumentValidation")),
                            history: &mut st.history,
                            last_logged: None,
                        },
                    });
                    (r, st.oplog.next_seq())
                };
                self.shared.publish(next);
                Ok(r)
            }
            Some(key) => {
                let mut sessions = lock(&self.shared.sessions);
                let others: std::collections::BTreeSet<_> = sessions
                    .iter()
                    .filter(|(k, s)| {
                        *k != key && s.phase == crate::node::state::TxnPhase::InProgress
                    })
                    .flat_map(|(_, s)| s.writes.log.touched.iter().cloned())
                    .collect();
                let Some(s) = sessions.get_mut(key) else {
                    return Err(CommandError::no_such_transaction(
                        "transaction is no longer open",
                    ));
                };
                s.writes.log.others = others;
                let st = self.shared.state();
                s.writes.log.writes_blocked = write_block::blocked(&st.catalog);
                s.writes.log.bypass_validation = truthy(self.cmd.get("bypassDocumentValidation"));
                Ok(f(&mut TxnTarget {
                    catalog: &st.catalog,
                    txn: &mut s.writes,
                }))
            }
        }
    }

    /// Session info for a retryable write: a write command with `lsid` and
    /// `txnNumber` outside a transaction.
    fn retry_info(&self) -> Option<RetryInfo> {
        if !matches!(
            self.name.as_str(),
            "insert" | "update" | "delete" | "findAndModify" | "findandmodify"
        ) {
            return None;
        }
        let txn_number = as_i64(self.cmd.get("txnNumber"))?;
        let lsid = self.cmd.get_document("lsid").ok()?;
        Some(RetryInfo {
            lsid: txn::oplog_lsid(lsid),
            txn_number,
            next_stmt_id: 0,
            prev_ts: None,
        })
    }

    /// The collection name in the command's first field.
    pub fn coll(&self) -> Result<String, CommandError> {
        match self.cmd.get(&self.name) {
            Some(Bson::String(s)) => Ok(s.clone()),
            Some(other) => Err(CommandError::invalid_namespace(format!(
                "collection name has invalid type {}",
                type_name(other)
            ))),
            None => Err(CommandError::invalid_namespace("missing collection name")),
        }
    }

    pub fn doc_arg(&self, key: &str) -> Result<Option<&Document>, CommandError> {
        match self.cmd.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Document(d)) => Ok(Some(d)),
            Some(other) => Err(CommandError::type_mismatch(format!(
                "BSON field '{}.{key}' is the wrong type '{}', expected type 'object'",
                self.name,
                type_name(other)
            ))),
        }
    }
}

pub fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Boolean(_) => "bool",
        Bson::Null => "null",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        _ => "other",
    }
}

pub fn as_i64(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

pub fn truthy(v: Option<&Bson>) -> bool {
    match v {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Int32(n)) => *n != 0,
        Some(Bson::Int64(n)) => *n != 0,
        Some(Bson::Double(n)) => *n != 0.0,
        _ => false,
    }
}

/// Runs one command and builds the full reply; `documents` is an insert's
/// document sequence, kept apart from `cmd` (see `wire::Request::Msg`).
pub async fn execute<'a>(
    shared: &'a Arc<Shared>,
    conn: &mut Conn,
    cmd: Document,
    documents: Option<Vec<InsertDoc<'a>>>,
) -> Outcome {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    let db = cmd.get_str("$db").unwrap_or("admin").to_string();
    let mut req = Req {
        shared,
        cmd,
        name,
        db,
        is_change_stream: false,
        txn: None,
        batch: None,
        documents,
        close_connection: false,
    };
    note_session(&req);
    let mut write_concern_error = None;
    let result = match fail_point(&req, conn).await {
        Err(Some(e)) => Err(e),
        Err(None) => return Outcome::CloseConnection,
        Ok(wce) => {
            write_concern_error = wce;
            match authorize(&req, conn)
                .and_then(|()| check_snapshot_read_concern(&req.name, &req.cmd))
                .and_then(|()| txn::enter(&mut req))
                .and_then(|()| check_write_concern_in_transaction(&req))
            {
                Ok(()) => dispatch(&mut req, conn).await,
                Err(e) => Err(e),
            }
        }
    };
    if req.close_connection {
        return Outcome::CloseConnection;
    }
    let write_concern_error = write_concern_error.or_else(|| {
        result
            .as_ref()
            .ok()
            .and_then(|_| unsatisfiable_write_concern(&req))
    });
    let result = match result {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => return Outcome::CloseConnection,
        Err(e) => Err(e),
    };
    let ts = shared.cluster_time();
    // A failed command's reply is the error alone.
    let batch = if result.is_ok() {
        req.batch.take()
    } else {
        None
    };
    let mut reply = match result {
        Ok(mut body) => {
            if !body.contains_key("ok") {
                body.insert("ok", 1.0);
            }
            limit_cursor_time(&req, &body);
            body
        }
        Err(e) => {
            if crate::error::is_refusal(&e) {
                // What a client asked for in vain, one line each (the rule in sim/README.md).
                tracing::warn!(command = %req.name, db = %req.db, code = e.code, "refused: {}", e.message);
            } else {
                tracing::debug!(command = %req.name, code = e.code, error = %e.message, "command failed");
            }
            e.to_reply(&label_context(&req))
        }
    };
    if let Some((wce, labels)) = write_concern_error {
        // `failCommand`'s `writeConcernError`: the command ran, the wait for its write
        // concern "failed"; mongod labels the reply by the wait's code unless the fail
        // point names the labels.
        if !reply.contains_key("errorLabels") {
            let labels = labels.unwrap_or_else(|| {
                let code = wce.get_i32("code").ok();
                crate::error::server_labels(None, code, &label_context(&req))
            });
            if !labels.is_empty() {
                reply.insert("errorLabels", labels);
            }
        }
        reply.insert("writeConcernError", wce);
    }
    reply.insert("$clusterTime", cluster_time_doc(ts));
    reply.insert("operationTime", ts);
    Outcome::Reply(reply, batch)
}

/// Commands that wait for their write concern (writes and DDL).
fn waits_for_write_concern(name: &str) -> bool {
    matches!(
        name,
        "insert"
            | "update"
            | "delete"
            | "findAndModify"
            | "findandmodify"
            | "create"
            | "drop"
            | "dropDatabase"
            | "renameCollection"
            | "collMod"
            | "createIndexes"
            | "dropIndexes"
            | "deleteIndexes"
            | "commitTransaction"
            | "abortTransaction"
    )
}

/// The `writeConcernError` a one-member replica set gives a write concern it cannot meet:
/// `w` above 1 (100 UnsatisfiableWriteConcern) or a tag mode other than "majority" (79
/// UnknownReplWriteConcern). The write itself is done, as on mongod.
fn unsatisfiable_write_concern(req: &Req<'_>) -> InjectedWriteConcernError {
    // An aggregate ending in `$out`/`$merge` writes, and waits for its write concern too.
    let writes_output = req.name == "aggregate"
        && req
            .cmd
            .get_array("pipeline")
            .ok()
            .and_then(|p| p.last())
            .and_then(Bson::as_document)
            .is_some_and(|s| s.contains_key("$out") || s.contains_key("$merge"));
    if !waits_for_write_concern(&req.name) && !writes_output {
        return None;
    }
    let wc = req.cmd.get_document("writeConcern").ok()?;
    let (code, name, msg) = match wc.get("w")? {
        Bson::String(mode) if mode != "majority" => (
            79,
            "UnknownReplWriteConcern",
            format!("No write concern mode named '{mode}' found in replica set configuration"),
        ),
        w => match as_i64(Some(w)) {
            Some(n) if n > 1 => (
                100,
                "UnsatisfiableWriteConcern",
                "Not enough data-bearing nodes".to_string(),
            ),
            _ => return None,
        },
    };
    Some((
        bson::doc! {"code": code, "codeName": name, "errmsg": msg},
        None,
    ))
}

/// `readConcern: {level: "snapshot"}` outside a transaction: only reads that can run at a
/// point in time accept it (mongod: "Command X does not support { readConcern: { level:
/// \"snapshot\" } }", 72 InvalidOptions).
/// The router (mongos) checks the same.
pub(crate) fn check_snapshot_read_concern(name: &str, cmd: &Document) -> Result<(), CommandError> {
    let snapshot = cmd
        .get_document("readConcern")
        .is_ok_and(|rc| rc.get_str("level") == Ok("snapshot"));
    if !snapshot || cmd.contains_key("autocommit") {
        return Ok(());
    }
    if matches!(name, "find" | "aggregate" | "distinct" | "getMore") {
        return Ok(());
    }
    Err(CommandError::new(
        72,
        "InvalidOptions",
        format!("Command {name} does not support {{ readConcern: {{ level: \"snapshot\" }} }}"),
    ))
}

/// Operations inside a transaction take the transaction's write concern, given at commit:
/// one of their own is refused (mongod: 72 InvalidOptions).
fn check_write_concern_in_transaction(req: &Req<'_>) -> Result<(), CommandError> {
    if req.txn.is_some() {
        check_ddl_in_transaction(req)?;
    }
    let commit_or_abort = matches!(req.name.as_str(), "commitTransaction" | "abortTransaction");
    if req.txn.is_none() || commit_or_abort || !req.cmd.contains_key("writeConcern") {
        return Ok(());
    }
    Err(CommandError::new(
        72,
        "InvalidOptions",
        "writeConcern is not allowed within a multi-statement transaction",
    ))
}

/// DDL MongoDB 7.0 refuses inside a transaction (263 OperationNotSupportedInTransaction).
/// `create` and `createIndexes` are allowed there (on a collection that is new to the
/// transaction), and still applied at once here, not at commit (sim/README.md).
fn check_ddl_in_transaction(req: &Req<'_>) -> Result<(), CommandError> {
    if !matches!(
        req.name.as_str(),
        "drop" | "dropDatabase" | "renameCollection" | "dropIndexes" | "deleteIndexes" | "collMod"
    ) {
        return Ok(());
    }
    Err(CommandError::new(
        263,
        "OperationNotSupportedInTransaction",
        format!("Cannot run '{}' in a multi-document transaction.", req.name),
    ))
}

/// A cursor opened by a command with `maxTimeMS` keeps that limit for its getMores (mongod
/// carries the remaining time on the cursor; `awaitData` getMores bring their own).
fn limit_cursor_time(req: &Req<'_>, reply: &Document) {
    if req.name == "getMore" || as_i64(req.cmd.get("maxTimeMS")).is_none_or(|ms| ms <= 0) {
        return;
    }
    if let Some(id) = reply
        .get_document("cursor")
        .ok()
        .and_then(|c| as_i64(c.get("id")))
        .filter(|id| *id != 0)
    {
        lock(&req.shared.cursors).limit_time(id);
    }
}

/// With `--auth`, refuses what this connection's user may not run (13 Unauthorized).
fn authorize(req: &Req<'_>, conn: &Conn) -> Result<(), CommandError> {
    if req.shared.users.is_none() {
        return Ok(());
    }
    crate::front::auth::authorize(conn.session.user.as_deref(), &req.name, &req.db, &req.cmd)
}

/// `saslStart`/`saslContinue`; without `--auth`, mongod has no users to log in as.
fn sasl(req: &Req<'_>, conn: &mut Conn) -> CmdResult {
    let Some(users) = req.shared.users.as_ref() else {
        return Err(CommandError::new(
            18,
            "AuthenticationFailed",
            "Authentication failed.",
        ));
    };
    if req.name == "saslStart" {
        conn.session.sasl_start(users, &req.db, &req.cmd)
    } else {
        conn.session.sasl_continue(&req.cmd)
    }
}

/// Remembers the command's logical session for `$listLocalSessions`.
fn note_session(req: &Req<'_>) {
    let Ok(lsid) = req.cmd.get_document("lsid") else {
        return;
    };
    if let Some(Bson::Binary(id)) = lsid.get("id") {
        let entry = (txn::oplog_lsid(lsid), bson::DateTime::now());
        lock(&req.shared.seen_sessions).insert(id.bytes.clone(), entry);
    }
}

/// The facts mongod's error labels depend on, read off the command.
fn label_context(req: &Req<'_>) -> crate::error::LabelContext {
    let has_txn_number = req.cmd.contains_key("txnNumber");
    let in_transaction = has_txn_number && req.cmd.contains_key("autocommit");
    crate::error::LabelContext {
        change_stream: req.is_change_stream,
        in_transaction,
        retryable_write: has_txn_number && !in_transaction,
        commit_or_abort: matches!(req.name.as_str(), "commitTransaction" | "abortTransaction"),
    }
}

/// What `failCommand` leaves for after the command: a `writeConcernError` and the labels
/// the fail point dictates (`None`: the server's own).
type InjectedWriteConcernError = Option<(Document, Option<Vec<String>>)>;

/// Applies `failCommand`. `Err(None)` means drop the connection; `Ok(Some(..))` lets the
/// command run and then reports a `writeConcernError`.
async fn fail_point(
    req: &Req<'_>,
    conn: &Conn,
) -> Result<InjectedWriteConcernError, Option<CommandError>> {
    if matches!(req.name.as_str(), "configureFailPoint") {
        return Ok(None);
    }
    if as_i64(req.cmd.get("maxTimeMS")).is_some_and(|ms| ms > 0) {
        if let Some(e) = lock(&req.shared.failpoints).on_time_limited() {
            return Err(Some(e));
        }
    }
    // The command's namespace as the server names it for `failCommand`'s `namespace`.
    let namespace = match req.cmd.get(&req.name) {
        Some(Bson::String(coll)) => format!("{}.{coll}", req.db),
        _ => format!("{}.$cmd", req.db),
    };
    let inj =
        lock(&req.shared.failpoints).on_command(&req.name, conn.app_name.as_deref(), &namespace);
    let Some(inj) = inj else {
        return Ok(None);
    };
    if let Some(ms) = inj.block_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if inj.close_connection {
        return Err(None);
    }
    match inj.error {
        Some(e) => Err(Some(e)),
        None => Ok(inj.write_concern_error),
    }
}

/// `Ok(None)` asks the connection to close without a reply.
/// Strings compare byte-wise here, which is MongoDB's `simple` collation and no other: a
/// command (or an update/delete statement, or an index or collection default) asking for
/// another is refused, never answered with byte-wise results.
fn refuse_collation(req: &Req<'_>) -> Result<(), CommandError> {
    let mut specs: Vec<&Bson> = req.cmd.get("collation").into_iter().collect();
    for list in ["updates", "deletes", "indexes"] {
        if let Ok(items) = req.cmd.get_array(list) {
            specs.extend(
                items
                    .iter()
                    .filter_map(|s| s.as_document()?.get("collation")),
            );
        }
    }
    for spec in specs {
        // An empty collation is the simple one too (pymongo's own tests send `{}`).
        let simple = matches!(spec, Bson::Document(d)
            if d.is_empty() || (d.len() == 1 && d.get_str("locale") == Ok("simple")));
        if !simple {
            return Err(CommandError::bad_value(format!(
                "collation {spec} is not supported by mongo-sim (strings compare byte-wise: \
                 only {{locale: \"simple\"}})"
            )));
        }
    }
    Ok(())
}

async fn dispatch(req: &mut Req<'_>, conn: &mut Conn) -> Result<Option<Document>, CommandError> {
    refuse_collation(req)?;
    // The command's `let` variables; these commands never await, so the thread is theirs.
    let _vars = match req.name.as_str() {
        "find" | "aggregate" | "update" | "delete" | "findAndModify" | "findandmodify" => {
            crate::aggregate::LetScope::enter(&req.name, req.cmd.get("let"))?
        }
        _ => None,
    };
    let reply = match req.name.as_str() {
        "hello" | "isMaster" | "ismaster" => admin::hello(req, conn),
        "ping" => Ok(Document::new()),
        "saslStart" | "saslContinue" => sasl(req, conn),
        "authenticate" => conn
            .session
            .authenticate(req.shared.users.as_ref(), &req.db, &req.cmd),
        "logout" => {
            conn.session.user = None;
            Ok(Document::new())
        }
        "buildInfo" | "buildinfo" => Ok(admin::build_info()),
        "getParameter" => admin::get_parameter(req),
        "endSessions"
        | "killSessions"
        | "killAllSessions"
        | "killAllSessionsByPattern"
        | "refreshSessions" => txn::end_sessions(req),
        "configureFailPoint" => admin::configure_fail_point(req),
        "setUserWriteBlockMode" => admin::set_user_write_block_mode(req),
        "connectionStatus" => Ok(admin::connection_status(conn)),
        "whatsmyuri" => Ok(bson::doc! {"you": conn.me.clone()}),
        "serverStatus" => Ok(admin::server_status(req)),
        "replSetGetStatus" => Ok(admin::repl_set_get_status(req, conn)),
        "getCmdLineOpts" => Ok(bson::doc! {"argv": ["mongo-sim"], "parsed": {}}),
        "listDatabases" => ddl::list_databases(req, conn.session.user.as_deref()),
        "listCollections" => ddl::list_collections(req),
        "listIndexes" => ddl::list_indexes(req),
        "create" => ddl::create(req),
        "drop" => ddl::drop(req),
        "dropDatabase" => ddl::drop_database(req),
        "renameCollection" => ddl::rename_collection(req),
        "collMod" => ddl::coll_mod(req),
        "createIndexes" => ddl::create_indexes(req),
        "dropIndexes" | "deleteIndexes" => ddl::drop_indexes(req),
        "insert" => write::insert(req),
        "update" => write::update(req),
        "delete" => write::delete(req),
        "findAndModify" | "findandmodify" => write::find_and_modify(req),
        "find" => read::find(req),
        "getMore" => return read::get_more(req).await,
        "killCursors" => read::kill_cursors(req),
        "count" => read::count(req),
        "distinct" => read::distinct(req),
        "aggregate" => read::aggregate(req, &conn.me),
        "explain" => explain::explain(req),
        "validate" => validate::validate(req),
        "usersInfo" => admin::users_info(req),
        "commitTransaction" => txn::commit(req),
        "abortTransaction" => txn::abort(req),
        other => Err(CommandError::new(
            59,
            "CommandNotFound",
            format!("no such command: '{other}'"),
        )),
    };
    reply.map(Some)
}
