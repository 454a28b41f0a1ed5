//! `--auth` and `--x509-user`: the users a secured simulator knows (SCRAM users in `admin`, as
//! `mongod --auth` users created with `db.getSiblingDB("admin").createUser`; X.509 users in
//! `$external`, named by their certificate's subject), their built-in roles, the commands that
//! log a connection in (`saslStart`, `saslContinue`, MONGODB-X509's `authenticate`, and the
//! `speculativeAuthenticate` of `hello`), and the check every other command passes first:
//! 13 Unauthorized before login ("Command find requires authentication") and for a role that
//! lacks the privilege ("not authorized on shop to execute command { insert: ... }").
//!
//! The privilege model is a subset of MongoDB's built-in roles, enough to tell reading from
//! writing from administering:
//! - `root`: everything.
//! - `readWriteAnyDatabase` / `readAnyDatabase`: read-write / read on every database except
//!   `local` and `config` (MongoDB 3.4+), `listDatabases`, cluster-wide change streams.
//! - `read@DB` / `readWrite@DB`: MongoDB's `{role: "read", db: DB}` and `{role: "readWrite",
//!   db: DB}` (`read@local` is what a user needs to tail `local.oplog.rs`).
//!
//! Cluster administration (`serverStatus`, `replSetGetStatus`, `getParameter`,
//! `setUserWriteBlockMode`, `configureFailPoint`, ...) needs `root`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bson::{doc, Bson, Document};

use crate::error::CommandError;
use crate::front::scram::{self, Conversation, Credential, Mechanism};

/// A MongoDB built-in role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Root,
    ReadWriteAnyDatabase,
    ReadAnyDatabase,
    /// `read` on one database.
    Read(String),
    /// `readWrite` on one database.
    ReadWrite(String),
}

impl Role {
    /// `{role, db}`, as `connectionStatus` and `usersInfo` list it.
    pub fn to_document(&self) -> Document {
        let (role, db) = match self {
            Role::Root => ("root", "admin"),
            Role::ReadWriteAnyDatabase => ("readWriteAnyDatabase", "admin"),
            Role::ReadAnyDatabase => ("readAnyDatabase", "admin"),
            Role::Read(db) => ("read", db.as_str()),
            Role::ReadWrite(db) => ("readWrite", db.as_str()),
        };
        bson::doc! {"role": role, "db": db}
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "root" => Some(Role::Root),
            "readWriteAnyDatabase" => Some(Role::ReadWriteAnyDatabase),
            "readAnyDatabase" => Some(Role::ReadAnyDatabase),
            _ => match s.split_once('@') {
                Some(("read", db)) if valid_db(db) => Some(Role::Read(db.to_string())),
                Some(("readWrite", db)) if valid_db(db) => Some(Role::ReadWrite(db.to_string())),
                _ => None,
            },
        }
    }
}

fn valid_db(db: &str) -> bool {
    !db.is_empty() && !db.contains(['/', '\\', '.', ' ', '"', '$'])
}

/// `local` and `config` are outside every `...AnyDatabase` role.
fn internal_db(db: &str) -> bool {
    db == "local" || db == "config"
}

/// One user: its name, roles and SCRAM credentials (computed on first use: PBKDF2 with
/// mongod's iteration counts is slow in debug builds, and most tests use one mechanism).
/// X.509 users have no password and never log in with SCRAM.
pub struct User {
    pub name: String,
    /// `admin` (SCRAM users) or `$external` (X.509 users).
    pub db: &'static str,
    pub roles: Vec<Role>,
    password: String,
    sha1: OnceLock<Credential>,
    sha256: OnceLock<Credential>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("db", &self.db)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl User {
    fn credential(&self, mech: Mechanism) -> Credential {
        let cell = match mech {
            Mechanism::Sha1 => &self.sha1,
            Mechanism::Sha256 => &self.sha256,
        };
        cell.get_or_init(|| Credential::new(mech, &self.name, &self.password))
            .clone()
    }

    fn can_read(&self, db: &str) -> bool {
        self.roles.iter().any(|r| match r {
            Role::Root => true,
            Role::ReadWriteAnyDatabase | Role::ReadAnyDatabase => !internal_db(db),
            Role::Read(d) | Role::ReadWrite(d) => d == db,
        })
    }

    fn can_write(&self, db: &str) -> bool {
        self.roles.iter().any(|r| match r {
            Role::Root => true,
            Role::ReadWriteAnyDatabase => !internal_db(db),
            Role::ReadWrite(d) => d == db,
            Role::Read(_) | Role::ReadAnyDatabase => false,
        })
    }

    /// `find` + `changeStream` on every non-system collection of every database: what a
    /// cluster-wide change stream (`allChangesForCluster`) requires.
    fn can_read_any(&self) -> bool {
        self.roles.iter().any(|r| {
            matches!(
                r,
                Role::Root | Role::ReadWriteAnyDatabase | Role::ReadAnyDatabase
            )
        })
    }

    /// Whether `listDatabases` shows every database (else only the user's own ones).
    pub fn lists_all_databases(&self) -> bool {
        self.can_read_any()
    }

    fn is_root(&self) -> bool {
        self.roles.contains(&Role::Root)
    }

    /// Whether the user may see database `db` in `listDatabases`.
    pub fn sees_database(&self, db: &str) -> bool {
        self.lists_all_databases() || self.can_read(db)
    }
}

/// The users of `--auth` (in `admin`) and `--x509-user` (in `$external`).
#[derive(Debug, Default, Clone)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
    /// X.509 users by certificate subject (RFC 2253).
    external: HashMap<String, Arc<User>>,
}

/// The database MONGODB-X509 users live in.
pub const EXTERNAL: &str = "$external";

/// A bad `--auth` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSpecError {
    #[error("--auth entry {0:?}: expected USER:PASSWORD[:ROLE[+ROLE...]]")]
    Shape(String),
    #[error("--auth entry for {user:?}: unknown role {role:?} (root, readWriteAnyDatabase, readAnyDatabase, read@DB, readWrite@DB)")]
    Role { user: String, role: String },
    #[error("--auth names user {0:?} twice")]
    Duplicate(String),
    #[error("--x509-user {0:?}: expected SUBJECT[:ROLE[+ROLE...]] with SUBJECT a distinguished name such as CN=client,OU=sync,O=Example")]
    X509Shape(String),
    #[error("--x509-user {subject:?}: unknown role {role:?} (root, readWriteAnyDatabase, readAnyDatabase, read@DB, readWrite@DB); a subject holding ':' must name its roles")]
    X509Role { subject: String, role: String },
    #[error("--x509-user names subject {0:?} twice")]
    X509Duplicate(String),
}

/// `ROLE[+ROLE...]`, or the first role that is not one.
fn parse_roles(roles: &str) -> Result<Vec<Role>, String> {
    roles
        .split('+')
        .map(|r| Role::parse(r).ok_or_else(|| r.to_string()))
        .collect()
}

impl Users {
    /// Parses `USER:PASSWORD[:ROLE[+ROLE...]][,...]`. A password may contain `:` only when
    /// the entry names its roles (the last `:` then separates them).
    pub fn parse(spec: &str) -> Result<Users, AuthSpecError> {
        let mut users = Users::default();
        for entry in spec.split(',').filter(|e| !e.is_empty()) {
            let (name, rest) = entry
                .split_once(':')
                .ok_or_else(|| AuthSpecError::Shape(redact(entry)))?;
            if name.is_empty() || rest.is_empty() {
                return Err(AuthSpecError::Shape(redact(entry)));
            }
            let (password, roles) = match rest.rsplit_once(':') {
                Some((password, roles)) => {
                    let parsed: Option<Vec<Role>> = roles.split('+').map(Role::parse).collect();
                    match parsed {
                        Some(r) if !password.is_empty() => (password, r),
                        _ => {
                            let bad = roles
                                .split('+')
                                .find(|r| Role::parse(r).is_none())
                                .unwrap_or(roles);
                            return Err(AuthSpecError::Role {
                                user: name.to_string(),
                                role: bad.to_string(),
                            });
                        }
                    }
                }
                None => (rest, vec![Role::Root]),
            };
            let user = User {
                name: name.to_string(),
                db: "admin",
                roles,
                password: password.to_string(),
                sha1: OnceLock::new(),
                sha256: OnceLock::new(),
            };
            if users
                .by_name
                .insert(name.to_string(), Arc::new(user))
                .is_some()
            {
                return Err(AuthSpecError::Duplicate(name.to_string()));
            }
        }
        Ok(users)
    }

    /// Adds an X.509 user, `SUBJECT[:ROLE[+ROLE...]]` (`--x509-user`; ROLE defaults to
    /// `root`). A DN holds commas, hence one flag per user rather than `--auth`'s list; the
    /// last `:` separates the roles, so a subject holding `:` must name them.
    pub fn add_x509(&mut self, spec: &str) -> Result<(), AuthSpecError> {
        let (subject, roles) = match spec.rsplit_once(':') {
            Some((subject, roles)) => {
                let roles = parse_roles(roles).map_err(|role| AuthSpecError::X509Role {
                    subject: subject.to_string(),
                    role,
                })?;
                (subject, roles)
            }
            None => (spec, vec![Role::Root]),
        };
        if !subject.contains('=') {
            return Err(AuthSpecError::X509Shape(spec.to_string()));
        }
        let user = User {
            name: subject.to_string(),
            db: EXTERNAL,
            roles,
            password: String::new(),
            sha1: OnceLock::new(),
            sha256: OnceLock::new(),
        };
        if self
            .external
            .insert(subject.to_string(), Arc::new(user))
            .is_some()
        {
            return Err(AuthSpecError::X509Duplicate(subject.to_string()));
        }
        Ok(())
    }

    fn get(&self, db: &str, user: &str) -> Option<Arc<User>> {
        // Every user lives in `admin`: authSource=admin (the default) finds them, any other
        // database does not, as on mongod.
        if db != "admin" {
            return None;
        }
        self.by_name.get(user).cloned()
    }

    /// `usersInfo`'s entries for the users of `db` (`$external` holds the X.509 ones) that
    /// `wanted` selects (`None`: all), by name.
    pub fn info(&self, db: &str, wanted: Option<&[String]>) -> Vec<Document> {
        let users = match db {
            "admin" => &self.by_name,
            EXTERNAL => &self.external,
            _ => return Vec::new(),
        };
        let mut out: Vec<Document> = users
            .values()
            .filter(|u| wanted.is_none_or(|w| w.contains(&u.name)))
            .map(|u| {
                let mechanisms: Vec<&str> = if u.db == EXTERNAL {
                    vec!["external"]
                } else {
                    vec![Mechanism::Sha1.name(), Mechanism::Sha256.name()]
                };
                bson::doc! {
                    "_id": format!("{}.{}", u.db, u.name),
                    "user": u.name.clone(),
                    "db": u.db,
                    "roles": u.roles.iter().map(Role::to_document).collect::<Vec<_>>(),
                    "mechanisms": mechanisms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.get_str("_id").ok().cmp(&b.get_str("_id").ok()));
        out
    }
}

/// An entry with its password hidden, for error messages.
fn redact(entry: &str) -> String {
    match entry.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => entry.to_string(),
    }
}

/// A connection's login state.
#[derive(Debug, Default)]
pub struct Session {
    /// The user this connection logged in as.
    pub user: Option<Arc<User>>,
    /// The subject (RFC 2253) of the client certificate the TLS handshake verified.
    x509_subject: Option<String>,
    /// The SCRAM exchange under way, with its conversation id.
    conversation: Option<(i32, Arc<User>, Conversation, bool)>,
    next_conversation_id: i32,
}

fn auth_failed() -> CommandError {
    CommandError::new(18, "AuthenticationFailed", "Authentication failed.")
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes,
    })
}

fn payload(cmd: &Document) -> Result<Vec<u8>, CommandError> {
    match cmd.get("payload") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        // mongosh and some drivers send the payload as a base64 string.
        Some(Bson::String(s)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| CommandError::bad_value("Invalid payload: not base64"))
        }
        Some(_) => Err(CommandError::type_mismatch(
            "BSON field 'payload' is the wrong type, expected type 'binData' or 'string'",
        )),
        None => Err(CommandError::new(
            40414,
            "IDLFailedToParse",
            "BSON field 'payload' is missing but a required field",
        )),
    }
}

/// The command arguments every command accepts besides its own (mongod's generic arguments);
/// `$`-prefixed ones (`$db`, `$clusterTime`, `$readPreference`, ...) are accepted too.
const GENERIC_ARGUMENTS: &[&str] = &[
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "comment",
    "maxTimeMS",
    "maxTimeMSOpOnly",
    "readConcern",
    "writeConcern",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "clientOperationKey",
    "mayBypassWriteBlocking",
];

impl Session {
    /// A session for a connection whose TLS handshake verified a client certificate with this
    /// subject (`None`: no certificate, or no TLS).
    pub fn with_certificate(x509_subject: Option<String>) -> Session {
        Session {
            x509_subject,
            ..Session::default()
        }
    }

    /// `authenticate` on `db` (MONGODB-X509; also the body of a `speculativeAuthenticate`).
    /// mongod's replies: `{dbname, user}` on success. An unknown certificate subject is 11
    /// UserNotFound `Could not find user "SUBJECT" for db "$external"` and a database other
    /// than `$external` 17 ProtocolError (mongod passes those two through); everything else
    /// (no certificate, a `user` that is not the certificate's subject, another mechanism)
    /// becomes 18 "Authentication failed.", as mongod's `CmdAuthenticate` rewrites it.
    pub fn authenticate(
        &mut self,
        users: Option<&Users>,
        db: &str,
        cmd: &Document,
    ) -> Result<Document, CommandError> {
        // The IDL parse (strict): before the command runs, so its errors are not rewritten.
        for key in cmd.keys() {
            if key != "authenticate"
                && key != "mechanism"
                && key != "user"
                && !key.starts_with('$')
                && !GENERIC_ARGUMENTS.contains(&key.as_str())
            {
                return Err(CommandError::new(
                    40415,
                    "IDLUnknownField",
                    format!("BSON field 'authenticate.{key}' is an unknown field."),
                ));
            }
        }
        let string_field = |name: &str| match cmd.get(name) {
            None => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(CommandError::type_mismatch(format!(
                "BSON field 'authenticate.{name}' is the wrong type '{}', expected type 'string'",
                crate::front::commands::type_name(other)
            ))),
        };
        let Some(mechanism) = string_field("mechanism")? else {
            return Err(CommandError::new(
                40414,
                "IDLFailedToParse",
                "BSON field 'authenticate.mechanism' is missing but a required field",
            ));
        };
        let user = string_field("user")?;
        if mechanism != "MONGODB-X509" {
            tracing::debug!(mechanism, "authenticate with an unsupported mechanism");
            return Err(auth_failed());
        }
        let Some(subject) = self.x509_subject.as_deref() else {
            // mongod: "No verified subject name available from client".
            tracing::debug!("MONGODB-X509 without a client certificate");
            return Err(auth_failed());
        };
        if user.is_some_and(|u| u != subject) {
            // mongod: "There is no x.509 client certificate matching the user."
            tracing::debug!(
                user,
                subject,
                "MONGODB-X509 user is not the certificate's subject"
            );
            return Err(auth_failed());
        }
        if db != EXTERNAL {
            return Err(CommandError::new(
                17,
                "ProtocolError",
                "X.509 authentication must always use the $external database.",
            ));
        }
        let Some(found) = users.and_then(|u| u.external.get(subject)).cloned() else {
            return Err(CommandError::new(
                11,
                "UserNotFound",
                format!("Could not find user \"{subject}\" for db \"{EXTERNAL}\""),
            ));
        };
        tracing::debug!(user = %found.name, "authenticated with MONGODB-X509");
        self.user = Some(found);
        Ok(doc! {"dbname": EXTERNAL, "user": subject})
    }

    /// `saslStart` on `db` (also the body of a `speculativeAuthenticate`).
    pub fn sasl_start(
        &mut self,
        users: &Users,
        db: &str,
        cmd: &Document,
    ) -> Result<Document, CommandError> {
        let mechanism = cmd.get_str("mechanism").unwrap_or_default();
        let Some(mech) = Mechanism::parse(mechanism) else {
            return Err(CommandError::new(
                334,
                "MechanismUnavailable",
                format!("Received authentication for mechanism {mechanism} which is not enabled"),
            ));
        };
        let payload = payload(cmd)?;
        let first = scram::parse_client_first(&payload).map_err(|e| {
            tracing::debug!(error = %e, "saslStart refused");
            auth_failed()
        })?;
        let Some(user) = users.get(db, &first.user) else {
            tracing::debug!(user = %first.user, db, "saslStart for an unknown user");
            return Err(auth_failed());
        };
        let (conversation, server_first) =
            Conversation::start(user.credential(mech), first, &scram::server_nonce());
        let skip_empty = cmd
            .get_document("options")
            .ok()
            .is_some_and(|o| crate::front::commands::truthy(o.get("skipEmptyExchange")));
        self.next_conversation_id += 1;
        let id = self.next_conversation_id;
        self.conversation = Some((id, user, conversation, skip_empty));
        Ok(doc! {
            "conversationId": id,
            "done": false,
            "payload": binary(server_first.into_bytes()),
        })
    }

    /// `saslContinue`: checks the proof (logging the connection in) or, without
    /// `skipEmptyExchange`, answers the client's empty last message.
    pub fn sasl_continue(&mut self, cmd: &Document) -> Result<Document, CommandError> {
        let id = match cmd.get("conversationId") {
            Some(Bson::Int32(n)) => *n,
            Some(Bson::Int64(n)) => *n as i32,
            Some(Bson::Double(n)) => *n as i32,
            _ => 0,
        };
        let payload = payload(cmd)?;
        let Some((current, user, conversation, skip_empty)) = self.conversation.take() else {
            return Err(CommandError::new(
                17,
                "ProtocolError",
                "No SASL session state found",
            ));
        };
        if current != id {
            return Err(CommandError::new(
                17,
                "ProtocolError",
                format!(
                    "Requested conversation id: {id} but current conversation id is: {current}"
                ),
            ));
        }
        if self.user.as_ref().is_some_and(|u| Arc::ptr_eq(u, &user)) && payload.is_empty() {
            // The empty exchange that ends a conversation without skipEmptyExchange.
            return Ok(doc! {"conversationId": id, "done": true, "payload": binary(Vec::new())});
        }
        match conversation.finish(&payload) {
            Ok(server_final) => {
                tracing::debug!(user = %user.name, "authenticated");
                self.user = Some(user.clone());
                if !skip_empty {
                    self.conversation = Some((current, user, conversation, skip_empty));
                }
                Ok(doc! {
                    "conversationId": id,
                    "done": skip_empty,
                    "payload": binary(server_final.into_bytes()),
                })
            }
            // Whatever was wrong (proof, nonce, channel binding, a malformed message), the
            // client learns only what mongod tells it.
            Err(e) => {
                tracing::debug!(user = %user.name, error = %e, "authentication failed");
                Err(auth_failed())
            }
        }
    }

    /// The `speculativeAuthenticate` of a `hello`: the reply's field, or `None` when the
    /// attempt failed (the client then authenticates the ordinary way and gets the error).
    pub fn speculative(&mut self, users: &Users, spec: &Document) -> Option<Document> {
        if spec.contains_key("authenticate") {
            // mongod renames `db` to `$db` and defaults it to `$external`.
            let mut cmd = spec.clone();
            let db = match cmd.remove("db") {
                Some(Bson::String(db)) => db,
                _ => EXTERNAL.to_string(),
            };
            return self.authenticate(Some(users), &db, &cmd).ok();
        }
        let db = spec.get_str("db").unwrap_or("admin").to_string();
        if !spec.contains_key("saslStart") {
            return None;
        }
        self.sasl_start(users, &db, spec).ok()
    }

    /// `saslSupportedMechs: "db.user"` in a `hello`: the mechanisms of that user, or `None`
    /// when there is no such user (mongod then leaves the field out).
    pub fn supported_mechs(users: &Users, db_user: &str) -> Option<Vec<Bson>> {
        let (db, user) = db_user.split_once('.')?;
        users.get(db, user).map(|_| {
            vec![
                Bson::String(Mechanism::Sha1.name().into()),
                Bson::String(Mechanism::Sha256.name().into()),
            ]
        })
    }
}

/// Commands mongod runs on a connection that has not logged in (`requiresAuth() == false`).
fn allowed_before_login(name: &str) -> bool {
    matches!(
        name,
        "hello"
            | "isMaster"
            | "ismaster"
            | "ping"
            | "buildInfo"
            | "buildinfo"
            | "saslStart"
            | "saslContinue"
            | "authenticate"
            | "logout"
            | "getnonce"
            | "connectionStatus"
            | "whatsmyuri"
            | "listCommands"
            | "endSessions"
    )
}

/// The database a command reads or writes, when it is not the one it runs on.
fn target_db<'a>(name: &str, db: &'a str, cmd: &'a Document) -> &'a str {
    if name == "renameCollection" {
        if let Ok(ns) = cmd.get_str("renameCollection") {
            return ns.split_once('.').map_or(ns, |(d, _)| d);
        }
    }
    db
}

fn is_change_stream(cmd: &Document) -> Option<&Document> {
    let pipeline = cmd.get_array("pipeline").ok()?;
    match pipeline.first()? {
        Bson::Document(stage) => stage.get_document("$changeStream").ok(),
        _ => None,
    }
}

/// Whether an aggregate writes (`$out`, `$merge`).
fn aggregate_writes(cmd: &Document) -> bool {
    cmd.get_array("pipeline").is_ok_and(|p| {
        p.iter().any(|s| {
            matches!(s, Bson::Document(d) if d.contains_key("$out") || d.contains_key("$merge"))
        })
    })
}

/// What a command needs beyond a login.
enum Need {
    Nothing,
    Read(String),
    Write(String),
    ReadAny,
    Root,
}

fn need(name: &str, db: &str, cmd: &Document) -> Need {
    let target = target_db(name, db, cmd).to_string();
    match name {
        "find" | "count" | "distinct" | "listCollections" | "listIndexes" | "dbStats"
        | "collStats" | "getMore" => Need::Read(target),
        "aggregate" => match is_change_stream(cmd) {
            Some(cs) if crate::front::commands::truthy(cs.get("allChangesForCluster")) => {
                Need::ReadAny
            }
            _ if aggregate_writes(cmd) => Need::Write(target),
            _ => Need::Read(target),
        },
        "insert" | "update" | "delete" | "findAndModify" | "findandmodify" | "create" | "drop"
        | "dropDatabase" | "createIndexes" | "dropIndexes" | "deleteIndexes" | "collMod" => {
            Need::Write(target)
        }
        "renameCollection" => {
            // Both ends must be writable; the source database is checked here, the target
            // below.
            Need::Write(target)
        }
        "killCursors" | "endSessions" | "killSessions" | "refreshSessions"
        | "commitTransaction" | "abortTransaction" | "listDatabases" | "connectionStatus"
        | "whatsmyuri" | "hello" | "isMaster" | "ismaster" | "ping" | "buildInfo" | "buildinfo"
        | "saslStart" | "saslContinue" | "logout" | "listCommands" => Need::Nothing,
        _ => Need::Root,
    }
}

/// Checks that `user` (None: not logged in) may run `cmd` (named `name`) on `db`.
pub fn authorize(
    user: Option<&User>,
    name: &str,
    db: &str,
    cmd: &Document,
) -> Result<(), CommandError> {
    if allowed_before_login(name) {
        return Ok(());
    }
    let Some(user) = user else {
        return Err(CommandError::new(
            13,
            "Unauthorized",
            format!("Command {name} requires authentication"),
        ));
    };
    let ok = match need(name, db, cmd) {
        Need::Nothing => true,
        Need::Read(d) => user.can_read(&d),
        Need::Write(d) => {
            user.can_write(&d)
                && (name != "renameCollection"
                    || cmd
                        .get_str("to")
                        .map(|to| to.split_once('.').map_or(to, |(d, _)| d))
                        .is_ok_and(|to| user.can_write(to)))
        }
        Need::ReadAny => user.can_read_any(),
        Need::Root => user.is_root(),
    };
    if ok {
        Ok(())
    } else {
        Err(CommandError::new(
            13,
            "Unauthorized",
            format!(
                "not authorized on {db} to execute command {}",
                shell_form(cmd)
            ),
        ))
    }
}

/// A command as mongod prints it in "not authorized" messages: `{ insert: "orders", ... }`
/// (field names bare, strings double-quoted).
pub fn shell_form(doc: &Document) -> String {
    if doc.is_empty() {
        return "{}".into();
    }
    let fields: Vec<String> = doc
        .iter()
        .map(|(k, v)| format!("{k}: {}", shell_value(v)))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn shell_value(v: &Bson) -> String {
    match v {
        Bson::Document(d) => shell_form(d),
        Bson::Array(a) if a.is_empty() => "[]".into(),
        Bson::Array(a) => format!(
            "[ {} ]",
            a.iter().map(shell_value).collect::<Vec<_>>().join(", ")
        ),
        Bson::String(s) => format!("{s:?}"),
        Bson::Double(d) if d.fract() == 0.0 && d.is_finite() => format!("{d:.1}"),
        Bson::Binary(b) if b.subtype == bson::spec::BinarySubtype::Uuid && b.bytes.len() == 16 => {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&b.bytes);
            format!("UUID(\"{}\")", bson::Uuid::from_bytes(bytes))
        }
        Bson::Binary(b) => {
            let hex: String = b.bytes.iter().map(|x| format!("{x:02X}")).collect();
            format!("BinData({}, {hex})", u8::from(b.subtype))
        }
        Bson::ObjectId(o) => format!("ObjectId('{o}')"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(roles: &str) -> Arc<User> {
        let users = Users::parse(&format!("u:pw:{roles}")).unwrap();
        users.get("admin", "u").unwrap()
    }

    #[test]
    fn parses_users_roles_and_defaults_to_root() {
        let users =
            Users::parse("admin:pw,reader:a:b:readAnyDatabase,oplog:x:read@local+read@shop")
                .unwrap();
        assert_eq!(users.get("admin", "admin").unwrap().roles, vec![Role::Root]);
        let reader = users.get("admin", "reader").unwrap();
        assert_eq!(reader.roles, vec![Role::ReadAnyDatabase]);
        assert_eq!(reader.password, "a:b");
        assert_eq!(
            users.get("admin", "oplog").unwrap().roles,
            vec![Role::Read("local".into()), Role::Read("shop".into())]
        );
        assert!(users.get("shop", "admin").is_none(), "users live in admin");
        assert!(matches!(
            Users::parse("a:pw:superuser"),
            Err(AuthSpecError::Role { .. })
        ));
        assert!(matches!(Users::parse("a"), Err(AuthSpecError::Shape(_))));
        assert!(matches!(
            Users::parse("a:1,a:2"),
            Err(AuthSpecError::Duplicate(_))
        ));
    }

    #[test]
    fn unauthenticated_commands_are_refused_except_the_handshake() {
        let e = authorize(None, "find", "shop", &doc! {"find": "orders"}).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (13, "Command find requires authentication")
        );
        assert_eq!(e.code_name, "Unauthorized");
        for cmd in [
            "hello",
            "isMaster",
            "ping",
            "buildInfo",
            "saslStart",
            "saslContinue",
        ] {
            authorize(None, cmd, "admin", &doc! {cmd: 1}).unwrap();
        }
    }

    #[test]
    fn read_only_users_read_and_watch_but_do_not_write() {
        let reader = user("readAnyDatabase");
        let insert = doc! {"insert": "orders", "ordered": true, "$db": "shop"};
        let e = authorize(Some(&reader), "insert", "shop", &insert).unwrap_err();
        assert_eq!(e.code, 13);
        assert_eq!(
            e.message,
            "not authorized on shop to execute command { insert: \"orders\", ordered: true, $db: \"shop\" }"
        );
        authorize(Some(&reader), "find", "shop", &doc! {"find": "orders"}).unwrap();
        let cluster_stream =
            doc! {"aggregate": 1, "pipeline": [{"$changeStream": {"allChangesForCluster": true}}]};
        authorize(Some(&reader), "aggregate", "admin", &cluster_stream).unwrap();
        // `local` is outside readAnyDatabase (MongoDB 3.4+): the oplog needs read@local.
        let oplog = doc! {"find": "oplog.rs"};
        assert!(authorize(Some(&reader), "find", "local", &oplog).is_err());
        authorize(
            Some(&user("readAnyDatabase+read@local")),
            "find",
            "local",
            &oplog,
        )
        .unwrap();
        assert!(authorize(
            Some(&reader),
            "serverStatus",
            "admin",
            &doc! {"serverStatus": 1}
        )
        .is_err());
    }

    /// A client's final message for `server_first` (RFC 5802), as a driver computes it.
    fn client_final(
        mech: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = b64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        // The same derivation the server stores, with the client's password.
        let cred = Credential::with_salt(mech, "u", password, salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let key = |k: &[u8], d: &[u8]| match mech {
            Mechanism::Sha1 => super::scram::tests_support::hmac_sha1(k, d),
            Mechanism::Sha256 => super::scram::tests_support::hmac_sha256(k, d),
        };
        let signature = key(&cred.stored_key, auth_message.as_bytes());
        let client_key = super::scram::tests_support::client_key(mech, password, &cred);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", b64.encode(proof)).into_bytes()
    }

    fn payload_of(reply: &Document) -> String {
        match reply.get("payload") {
            Some(Bson::Binary(b)) => String::from_utf8(b.bytes.clone()).unwrap(),
            other => panic!("no payload: {other:?}"),
        }
    }

    #[test]
    fn speculative_authentication_then_continue_logs_in() {
        let users = Users::parse("u:pw").unwrap();
        let mut session = Session::default();
        let spec = doc! {
            "saslStart": 1, "mechanism": "SCRAM-SHA-256", "db": "admin",
            "payload": binary(b"n,,n=u,r=clientnonce".to_vec()),
            "options": {"skipEmptyExchange": true},
        };
        let first = session
            .speculative(&users, &spec)
            .expect("speculative reply");
        let id = first.get_i32("conversationId").unwrap();
        let server_first = payload_of(&first);
        let proof = client_final(Mechanism::Sha256, "pw", "n=u,r=clientnonce", &server_first);
        let last = session
            .sasl_continue(
                &doc! {"saslContinue": 1, "conversationId": id, "payload": binary(proof)},
            )
            .unwrap();
        assert_eq!(last.get_bool("done"), Ok(true));
        assert!(payload_of(&last).starts_with("v="));
        assert_eq!(session.user.as_ref().map(|u| u.name.as_str()), Some("u"));
        // An unknown user gets no speculative reply (the handshake goes on without it).
        let unknown = doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "db": "admin",
        "payload": binary(b"n,,n=who,r=x".to_vec())};
        assert!(Session::default().speculative(&users, &unknown).is_none());
    }

    #[test]
    fn without_skip_empty_exchange_the_client_sends_one_more_empty_message() {
        let users = Users::parse("u:pw").unwrap();
        let mut session = Session::default();
        let start = doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-1",
        "payload": binary(b"n,,n=u,r=abc".to_vec())};
        let first = session.sasl_start(&users, "admin", &start).unwrap();
        let id = first.get_i32("conversationId").unwrap();
        let proof = client_final(Mechanism::Sha1, "pw", "n=u,r=abc", &payload_of(&first));
        let second = session
            .sasl_continue(
                &doc! {"saslContinue": 1, "conversationId": id, "payload": binary(proof)},
            )
            .unwrap();
        assert_eq!(second.get_bool("done"), Ok(false));
        let third = session
            .sasl_continue(
                &doc! {"saslContinue": 1, "conversationId": id, "payload": binary(vec![])},
            )
            .unwrap();
        assert_eq!(third.get_bool("done"), Ok(true));
        // A wrong password: 18 with mongod's message, and no login.
        let mut other = Session::default();
        let first = other.sasl_start(&users, "admin", &start).unwrap();
        let proof = client_final(Mechanism::Sha1, "nope", "n=u,r=abc", &payload_of(&first));
        let e = other
            .sasl_continue(
                &doc! {"saslContinue": 1, "conversationId": id, "payload": binary(proof)},
            )
            .unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (18, "Authentication failed."));
        assert!(other.user.is_none());
        // Users live in admin: authSource=shop finds nobody.
        let e = Session::default()
            .sasl_start(&users, "shop", &start)
            .unwrap_err();
        assert_eq!(e.code, 18);
    }

    #[test]
    fn x509_users_are_declared_by_subject_with_roles() {
        let mut users = Users::parse("").unwrap();
        users.add_x509("CN=a,OU=sync,O=Example").unwrap();
        users
            .add_x509("CN=b,O=Example:readAnyDatabase+read@local")
            .unwrap();
        assert_eq!(
            users.external["CN=a,OU=sync,O=Example"].roles,
            vec![Role::Root]
        );
        assert_eq!(
            users.external["CN=b,O=Example"].roles,
            vec![Role::ReadAnyDatabase, Role::Read("local".into())]
        );
        assert!(users.get("admin", "CN=a,OU=sync,O=Example").is_none());
        assert!(matches!(
            users.add_x509("CN=a,OU=sync,O=Example"),
            Err(AuthSpecError::X509Duplicate(_))
        ));
        assert!(matches!(
            users.add_x509("CN=c:superuser"),
            Err(AuthSpecError::X509Role { .. })
        ));
        assert!(matches!(
            users.add_x509("nobody"),
            Err(AuthSpecError::X509Shape(_))
        ));
    }

    #[test]
    fn x509_authenticate_replies_as_mongod() {
        let mut users = Users::parse("").unwrap();
        users.add_x509("CN=a,O=Example:read@shop").unwrap();
        let x509 = doc! {"authenticate": 1, "mechanism": "MONGODB-X509", "$db": "$external"};
        let err = |r: Result<Document, CommandError>| {
            let e = r.unwrap_err();
            (e.code, e.message)
        };
        // No certificate: 18, whatever else is right.
        assert_eq!(
            err(Session::default().authenticate(Some(&users), EXTERNAL, &x509)),
            (18, "Authentication failed.".into())
        );
        let mut stranger = Session::with_certificate(Some("CN=b,O=Example".into()));
        assert_eq!(
            err(stranger.authenticate(Some(&users), EXTERNAL, &x509)),
            (
                11,
                "Could not find user \"CN=b,O=Example\" for db \"$external\"".into()
            )
        );
        let mut claimed = x509.clone();
        claimed.insert("user", "CN=a,O=Example");
        assert_eq!(
            err(stranger.authenticate(Some(&users), EXTERNAL, &claimed)).0,
            18
        );
        let mut scram = x509.clone();
        scram.insert("mechanism", "SCRAM-SHA-256");
        assert_eq!(
            err(stranger.authenticate(Some(&users), EXTERNAL, &scram)).0,
            18
        );
        // The strict IDL parse: the field is `user`, and `mechanism` is required.
        let mut username = x509.clone();
        username.insert("username", "CN=b,O=Example");
        assert_eq!(
            err(stranger.authenticate(Some(&users), EXTERNAL, &username)),
            (
                40415,
                "BSON field 'authenticate.username' is an unknown field.".into()
            )
        );
        assert_eq!(
            err(stranger.authenticate(Some(&users), EXTERNAL, &doc! {"authenticate": 1})).0,
            40414
        );
        assert!(stranger.user.is_none());

        let mut known = Session::with_certificate(Some("CN=a,O=Example".into()));
        assert_eq!(
            err(known.authenticate(Some(&users), "admin", &x509)),
            (
                17,
                "X.509 authentication must always use the $external database.".into()
            )
        );
        let reply = known
            .authenticate(Some(&users), EXTERNAL, &claimed)
            .unwrap();
        assert_eq!(
            reply,
            doc! {"dbname": "$external", "user": "CN=a,O=Example"}
        );
        let user = known.user.clone().unwrap();
        assert_eq!((user.name.as_str(), user.db), ("CN=a,O=Example", EXTERNAL));
        authorize(Some(&user), "find", "shop", &doc! {"find": "orders"}).unwrap();
        assert!(authorize(Some(&user), "insert", "shop", &doc! {"insert": "orders"}).is_err());
    }

    #[test]
    fn speculative_x509_defaults_to_external_and_fails_silently() {
        let mut users = Users::parse("").unwrap();
        users.add_x509("CN=a,O=Example").unwrap();
        // What the Rust driver and pymongo put in `hello` (no `db`).
        let spec = doc! {"authenticate": 1, "mechanism": "MONGODB-X509"};
        let mut session = Session::with_certificate(Some("CN=a,O=Example".into()));
        assert_eq!(
            session.speculative(&users, &spec),
            Some(doc! {"dbname": "$external", "user": "CN=a,O=Example"})
        );
        assert!(session.user.is_some());
        let mut stranger = Session::with_certificate(Some("CN=b".into()));
        assert_eq!(stranger.speculative(&users, &spec), None);
        let mut elsewhere = Session::with_certificate(Some("CN=a,O=Example".into()));
        let on_admin = doc! {"authenticate": 1, "mechanism": "MONGODB-X509", "db": "admin"};
        assert_eq!(elsewhere.speculative(&users, &on_admin), None);
    }

    #[test]
    fn database_roles_stay_in_their_database() {
        let shop = user("read@shop");
        authorize(Some(&shop), "find", "shop", &doc! {"find": "orders"}).unwrap();
        assert!(authorize(Some(&shop), "find", "crm", &doc! {"find": "people"}).is_err());
        let cluster_stream =
            doc! {"aggregate": 1, "pipeline": [{"$changeStream": {"allChangesForCluster": true}}]};
        assert!(authorize(Some(&shop), "aggregate", "admin", &cluster_stream).is_err());
        let db_stream = doc! {"aggregate": 1, "pipeline": [{"$changeStream": {}}]};
        authorize(Some(&shop), "aggregate", "shop", &db_stream).unwrap();
        let rw = user("readWrite@shop");
        authorize(Some(&rw), "insert", "shop", &doc! {"insert": "orders"}).unwrap();
        let rename = doc! {"renameCollection": "shop.a", "to": "crm.b"};
        assert!(authorize(Some(&rw), "renameCollection", "admin", &rename).is_err());
        let root = user("root");
        authorize(Some(&root), "renameCollection", "admin", &rename).unwrap();
        authorize(
            Some(&root),
            "serverStatus",
            "admin",
            &doc! {"serverStatus": 1},
        )
        .unwrap();
    }
}
