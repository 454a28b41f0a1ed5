//! Handshake and server-level commands: hello/isMaster, buildInfo,
//! getParameter, serverStatus, replSetGetStatus, configureFailPoint,
//! setUserWriteBlockMode.

use bson::{doc, oid::ObjectId, Document, Timestamp};

use super::{CmdResult, Conn, Req};
use crate::error::CommandError;
use crate::front::wire::MAX_MESSAGE_SIZE_BYTES;
use crate::node::oplog::{optime, TERM};
use crate::node::state::{lock, Shared};
use crate::node::write_block;

pub const VERSION: &str = "7.0.14";
fn election_id() -> ObjectId {
    ObjectId::from_bytes([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, TERM as u8])
}

/// The hello reply of the primary of `rs0`, advertising `me` as the only host.
pub fn hello_reply(
    shared: &Shared,
    connection_id: i64,
    me: &str,
    legacy: bool,
    hello_ok: bool,
) -> Document {
    let ts: Timestamp = shared.cluster_time();
    let now = bson::DateTime::now();
    let mut d = doc! {};
    // No `topologyVersion`: it would switch drivers to streaming (exhaust)
    // monitoring, which this server does not implement; they poll instead.
    d.insert("hosts", vec![me.to_string()]);
    d.insert("setName", shared.set_name.clone());
    d.insert("setVersion", 1);
    if legacy {
        d.insert("ismaster", true);
    } else {
        d.insert("isWritablePrimary", true);
    }
    d.insert("secondary", false);
    d.insert("primary", me);
    d.insert("me", me);
    d.insert("electionId", election_id());
    d.insert(
        "lastWrite",
        doc! {
            "opTime": optime(ts), "lastWriteDate": now,
            "majorityOpTime": optime(ts), "majorityWriteDate": now,
        },
    );
    d.insert("maxBsonObjectSize", 16_777_216);
    d.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE_BYTES as i32);
    d.insert("maxWriteBatchSize", 100_000);
    d.insert("localTime", now);
    d.insert("logicalSessionTimeoutMinutes", 30);
    d.insert("connectionId", connection_id as i32);
    d.insert("minWireVersion", 0);
    d.insert("maxWireVersion", shared.max_wire_version);
    d.insert("readOnly", false);
    if hello_ok {
        d.insert("helloOk", true);
    }
    d
}

pub fn hello(req: &Req<'_>, conn: &mut Conn) -> CmdResult {
    if let Ok(client) = req.cmd.get_document("client") {
        if let Ok(name) = client
            .get_document("application")
            .and_then(|a| a.get_str("name"))
        {
            conn.app_name = Some(name.to_string());
        }
    }
    if req.cmd.contains_key("maxAwaitTimeMS") {
        // We never advertise streaming (no exhaust), but answer at once rather
        // than hold the reply, which is valid for the polling protocol.
        tracing::debug!("awaitable hello answered immediately");
    }
    let legacy = req.name != "hello";
    let hello_ok = super::truthy(req.cmd.get("helloOk"));
    let mut reply = hello_reply(req.shared, conn.id, &conn.me, legacy, hello_ok);
    add_auth_fields(req.shared, &mut conn.session, &req.cmd, &mut reply);
    Ok(reply)
}

/// The handshake's authentication fields: `saslSupportedMechs` for the user the client
/// names, and the first SCRAM step of a `speculativeAuthenticate` (auth spec).
pub fn add_auth_fields(
    shared: &Shared,
    session: &mut crate::front::auth::Session,
    cmd: &Document,
    reply: &mut Document,
) {
    let Some(users) = shared.users.as_ref() else {
        return;
    };
    if let Ok(db_user) = cmd.get_str("saslSupportedMechs") {
        if let Some(mechs) = crate::front::auth::Session::supported_mechs(users, db_user) {
            reply.insert("saslSupportedMechs", mechs);
        }
    }
    if let Ok(spec) = cmd.get_document("speculativeAuthenticate") {
        if let Some(first) = session.speculative(users, spec) {
            reply.insert("speculativeAuthenticate", first);
        }
    }
}

pub fn build_info() -> Document {
    doc! {
        "version": VERSION,
        "gitVersion": "0000000000000000000000000000000000000000",
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": [7, 0, 14, 0],
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": 16_777_216,
        "storageEngines": ["inMemory"],
    }
}

pub fn get_parameter(req: &Req<'_>) -> CmdResult {
    let all = matches!(req.cmd.get("getParameter"), Some(bson::Bson::String(s)) if s == "*");
    let mut out = Document::new();
    // `enableTestCommands`: mongod answers `configureFailPoint` only when started with it,
    // and this server always does, so it reports it on as such a mongod would (drivers'
    // test harnesses read it to decide whether fail points exist).
    let known = doc! {
        "enableTestCommands": true,
        "featureCompatibilityVersion": {"version": "7.0"},
        "requireApiVersion": false,
        "transactionLifetimeLimitSeconds": 60,
        "maxBSONDepth": 200,
    };
    for (k, v) in &known {
        if all || req.cmd.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    if out.is_empty() {
        return Err(CommandError::new(
            72,
            "InvalidOptions",
            "no option found to get",
        ));
    }
    Ok(out)
}

pub fn configure_fail_point(req: &Req<'_>) -> CmdResult {
    if req.db != "admin" {
        return Err(CommandError::new(
            13,
            "Unauthorized",
            "configureFailPoint may only be run against the admin database.",
        ));
    }
    lock(&req.shared.failpoints).configure(&req.cmd)?;
    Ok(doc! {"count": 0})
}

/// Arguments any command takes beside its own fields (mongod's generic
/// arguments); a strict command refuses every other unknown field.
fn is_generic_argument(field: &str) -> bool {
    field.starts_with('$')
        || matches!(
            field,
            "lsid"
                | "txnNumber"
                | "autocommit"
                | "startTransaction"
                | "stmtId"
                | "maxTimeMS"
                | "readConcern"
                | "writeConcern"
                | "comment"
                | "apiVersion"
                | "apiStrict"
                | "apiDeprecationErrors"
        )
}

/// `{setUserWriteBlockMode: 1, global: <bool>}`. mongod 7.0 does not limit
/// it to `admin` (`adminOnly()` is false; only the cluster privilege
/// counts, and this server has no auth), so neither does this.
pub fn set_user_write_block_mode(req: &Req<'_>) -> CmdResult {
    let name = "setUserWriteBlockMode";
    if req.txn.is_some() {
        return Err(CommandError::new(
            263,
            "OperationNotSupportedInTransaction",
            format!("Cannot run '{name}' in a multi-document transaction."),
        ));
    }
    if let Some(field) = req
        .cmd
        .keys()
        .find(|k| *k != name && *k != "global" && !is_generic_argument(k))
    {
        return Err(CommandError::new(
            40415,
            "Location40415",
            format!("BSON field '{name}.{field}' is an unknown field."),
        ));
    }
    if req.cmd.contains_key("writeConcern") {
        return Err(CommandError::new(
            72,
            "InvalidOptions",
            "Command does not support writeConcern",
        ));
    }
    let global = match req.cmd.get("global") {
        Some(bson::Bson::Boolean(b)) => *b,
        Some(other) => {
            return Err(CommandError::type_mismatch(format!(
                "BSON field '{name}.global' is the wrong type '{}', expected type 'bool'",
                super::type_name(other)
            )))
        }
        None => {
            return Err(CommandError::new(
                40414,
                "Location40414",
                format!("BSON field '{name}.global' is missing but a required field"),
            ))
        }
    };
    let next = {
        let mut st = req.shared.state();
        let st = &mut *st;
        write_block::set(&mut st.catalog, &mut st.oplog, &mut st.history, global)?;
        st.oplog.next_seq()
    };
    req.shared.publish(next);
    Ok(Document::new())
}

/// `usersInfo`: `1` (every user of the database), a name, `{user, db}`, or a list of those.
/// Without `--auth` there are no users.
pub fn users_info(req: &Req<'_>) -> CmdResult {
    let Some(users) = req.shared.users.as_ref() else {
        return Ok(doc! {"users": []});
    };
    let arg = req.cmd.get("usersInfo");
    if super::as_i64(arg) == Some(1) {
        return Ok(doc! {"users": users.info(&req.db, None)});
    }
    let names: Vec<&bson::Bson> = match arg {
        Some(bson::Bson::Array(list)) => list.iter().collect(),
        other => other.into_iter().collect(),
    };
    let mut found = Vec::new();
    for v in names {
        let (db, name) = match v {
            bson::Bson::String(name) => (req.db.as_str(), name.as_str()),
            bson::Bson::Document(d) => match (d.get_str("db"), d.get_str("user")) {
                (Ok(db), Ok(name)) => (db, name),
                _ => return Err(not_a_user_name()),
            },
            _ => return Err(not_a_user_name()),
        };
        found.extend(users.info(db, Some(&[name.to_string()])));
    }
    Ok(doc! {"users": found})
}

/// mongod's refusal of a `usersInfo` argument that names no user.
fn not_a_user_name() -> CommandError {
    CommandError::bad_value("User and role names must be either strings or objects")
}

pub fn connection_status(conn: &Conn) -> Document {
    let (users, roles) = match &conn.session.user {
        Some(u) => (
            vec![bson::Bson::Document(
                doc! {"user": u.name.clone(), "db": u.db},
            )],
            u.roles
                .iter()
                .map(|r| bson::Bson::Document(r.to_document()))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    doc! {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": roles}}
}

pub fn server_status(req: &Req<'_>) -> Document {
    let ts = req.shared.cluster_time();
    // mongod's UserWriteBlockState: 1 disabled, 2 enabled (0 unknown).
    let write_block_mode = if write_block::blocked(&req.shared.state().catalog) {
        2
    } else {
        1
    };
    doc! {
        "host": "mongo-sim",
        "version": VERSION,
        "process": "mongod",
        "uptime": 1.0,
        "localTime": bson::DateTime::now(),
        "repl": {"setName": "rs0", "isWritablePrimary": true, "secondary": false,
                 "lastWrite": {"opTime": optime(ts)},
                 "userWriteBlockMode": write_block_mode},
        "storageEngine": {"name": "inMemory", "supportsCommittedReads": true},
    }
}

pub fn repl_set_get_status(req: &Req<'_>, conn: &Conn) -> Document {
    let ts = req.shared.cluster_time();
    let now = bson::DateTime::now();
    doc! {
        "set": "rs0",
        "date": now,
        "myState": 1,
        "term": TERM,
        "heartbeatIntervalMillis": 2000i64,
        "optimes": {"lastCommittedOpTime": optime(ts), "appliedOpTime": optime(ts),
                    "durableOpTime": optime(ts)},
        "members": [{
            "_id": 0, "name": conn.me.clone(), "health": 1.0, "state": 1,
            "stateStr": "PRIMARY", "optime": optime(ts), "optimeDate": now,
            "self": true, "electionId": election_id(),
        }],
    }
}
