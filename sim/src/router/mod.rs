//! `mongos`: the router of a sharded cluster (`--shards N`). It owns the cluster metadata
//! (`meta`), answers `hello` as a mongos, and runs every command by handing it in-process to
//! the shard nodes' own command handlers: targeted by shard key, or broadcast and merged here
//! (sorting, skipping and limiting at the router, dropping orphans: documents a shard holds
//! for a chunk it does not own). Chunk migrations (`migrate`) and merged change streams
//! (`stream`) have modules of their own.
//!
//! The router imports node modules; no node module imports the router.

mod hash;
mod meta;
mod migrate;
mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bson::{doc, oid::ObjectId, Bson, Document};

use crate::bson_order::OrderedBson;
use crate::error::CommandError;
use crate::front::commands::{
    as_i64, commit_together, execute, session_key, truthy, Conn, Outcome,
};
use crate::front::wire::InsertDoc;
use crate::node::clock::ClusterClock;
use crate::node::cursor::cursor_reply;
use crate::node::state::{cluster_time_doc, lock, Shared};
use crate::query::Filter;

pub use meta::Meta;
pub use migrate::spawn_balancer;

/// A cursor the router hands out.
enum RouterCursor {
    /// Merged results held here.
    Buffered {
        ns: String,
        docs: VecDeque<Document>,
    },
    /// A cursor of one shard, passed through.
    Forward {
        shard: usize,
        id: i64,
    },
    Stream(Box<stream::MergedStream>),
}

pub struct Router {
    pub shards: Vec<Arc<Shared>>,
    pub clock: Arc<ClusterClock>,
    /// Routed operations read it, migrations write it: no reader sees a document twice or not
    /// at all while a chunk moves.
    meta: tokio::sync::RwLock<Meta>,
    cursors: Mutex<HashMap<i64, RouterCursor>>,
    next_cursor: AtomicI64,
    next_connection_id: AtomicI64,
    /// Open transactions by lsid `id`: their number and the shards they have touched.
    txns: Mutex<HashMap<Vec<u8>, Participants>>,
}

type CmdResult = Result<Document, CommandError>;

/// The error `run` reports when a shard closed the in-process connection (a fail point):
/// `execute` closes the client's connection in turn.
const SHARD_CLOSED: &str = "connection to the shard was closed";

/// A transaction's number and the shards it has touched.
type Participants = (i64, BTreeSet<usize>);

impl Router {
    pub fn new(shards: Vec<Arc<Shared>>, clock: Arc<ClusterClock>, hosts: Vec<String>) -> Self {
        Self {
            shards,
            clock,
            meta: tokio::sync::RwLock::new(Meta {
                shard_hosts: hosts,
                ..Meta::default()
            }),
            cursors: Mutex::new(HashMap::new()),
            next_cursor: AtomicI64::new(1),
            next_connection_id: AtomicI64::new(1),
            txns: Mutex::new(HashMap::new()),
        }
    }

    pub fn next_connection_id(&self) -> i64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    fn new_cursor(&self, c: RouterCursor) -> i64 {
        let id = self.next_cursor.fetch_add(1, Ordering::Relaxed) + (1 << 40);
        lock(&self.cursors).insert(id, c);
        id
    }

    /// Runs one command through the router and builds the full reply.
    pub async fn execute(
        self: &Arc<Self>,
        conn: &mut Conn,
        cmd: Document,
        documents: Option<Vec<InsertDoc<'_>>>,
    ) -> Outcome {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let db = cmd.get_str("$db").unwrap_or("admin").to_string();
        let result = if db == "local" {
            Err(CommandError::new(
                20,
                "IllegalOperation",
                "Can't use 'local' database through mongos",
            ))
        } else if let Err(e) = self.authorize(conn, &name, &db, &cmd) {
            Err(e)
        } else {
            let documents = documents.map(|ds| {
                ds.into_iter()
                    .map(|d| match d {
                        InsertDoc::Raw(r) => r.to_document(),
                        InsertDoc::Decoded(d) => d,
                    })
                    .collect::<Vec<_>>()
            });
            self.dispatch(conn, &name, &db, cmd, documents).await
        };
        let mut reply = match result {
            Ok(Routed::Passed(outcome)) => return outcome,
            Ok(Routed::Own(body)) => body,
            Err(e) if e.code == 6 && e.message == SHARD_CLOSED => return Outcome::CloseConnection,
            Err(e) => {
                if crate::error::is_refusal(&e) {
                    tracing::warn!(command = %name, db = %db, code = e.code, "refused: {}", e.message);
                }
                e.to_reply(&crate::error::LabelContext::default())
            }
        };
        if !reply.contains_key("ok") {
            reply.insert("ok", 1.0);
        }
        let ts = self.clock.now();
        reply.insert("$clusterTime", cluster_time_doc(ts));
        reply.insert("operationTime", ts);
        Outcome::Reply(reply, None)
    }

    async fn dispatch(
        self: &Arc<Self>,
        conn: &mut Conn,
        name: &str,
        db: &str,
        mut cmd: Document,
        documents: Option<Vec<Document>>,
    ) -> Result<Routed, CommandError> {
        if let Some(docs) = documents {
            cmd.insert("documents", docs);
        }
        let coll = cmd.get_str(name).ok().map(str::to_string);
        let ns = coll.as_ref().map(|c| format!("{db}.{c}"));
        if db == "config" && matches!(name, "find" | "aggregate" | "count") {
            if let Some(c) = &coll {
                if matches!(
                    c.as_str(),
                    "shards" | "databases" | "collections" | "chunks"
                ) {
                    let docs = self.meta.read().await.config_docs(c);
                    return self.answer_read(name, db, c, &cmd, docs).map(Routed::Own);
                }
            }
        }
        let own = match name {
            "hello" | "isMaster" | "ismaster" => {
                let mut reply = self.hello(conn, name != "hello");
                self.add_auth_fields(conn, &cmd, &mut reply);
                Some(Ok(reply))
            }
            "enableSharding" | "enablesharding" => Some(self.enable_sharding(&cmd).await),
            "shardCollection" | "shardcollection" => Some(self.shard_collection(&cmd).await),
            "split" => Some(self.split(&cmd).await),
            "moveChunk" | "movechunk" => Some(self.move_chunk(&cmd).await),
            "getMore" => return self.get_more(conn, &cmd).await,
            "commitTransaction" => Some(self.commit(conn, &cmd).await),
            "abortTransaction" => Some(self.abort(conn, &cmd).await),
            "killCursors" => Some(self.kill_cursors(conn, &cmd).await),
            "listShards" => Some(Ok(
                doc! {"shards": self.meta.read().await.config_docs("shards")},
            )),
            "replSetGetStatus" => Some(Err(CommandError::new(
                76,
                "NoReplicationEnabled",
                "replSetGetStatus is not supported through mongos",
            ))),
            "aggregate" if is_change_stream(&cmd) => {
                Some(stream::open(self, conn, db, coll.as_deref(), &cmd).await)
            }
            _ => None,
        };
        if let Some(r) = own {
            return r.map(Routed::Own);
        }
        if name == "explain" {
            let inner = cmd.get_document("explain").ok();
            let target = inner.and_then(|c| c.values().next()).and_then(Bson::as_str);
            if let Some(c) = target {
                if self
                    .meta
                    .read()
                    .await
                    .collections
                    .contains_key(&format!("{db}.{c}"))
                {
                    return Err(CommandError::bad_value(
                        "explain of a sharded collection is not supported by mongo-sim's mongos",
                    ));
                }
            }
        }
        if let Some(ns) = &ns {
            let meta = self.meta.read().await;
            if let Some(sc) = meta.collections.get(ns).cloned() {
                refuse_on_sharded(name, &cmd, &sc)?;
                let coll = coll.as_deref().unwrap_or_default();
                let r = match name {
                    "insert" => Some(self.insert(conn, &sc, cmd.clone()).await),
                    "update" => Some(self.update(conn, &sc, &cmd).await),
                    "delete" => Some(self.delete(conn, &sc, &cmd).await),
                    "findAndModify" | "findandmodify" => {
                        Some(self.find_and_modify(conn, &sc, &cmd).await)
                    }
                    "aggregate" if starts_with_coll_stats(&cmd) => {
                        Some(self.coll_stats(conn, db, coll, &cmd).await)
                    }
                    "find" | "aggregate" | "count" | "distinct" => {
                        if cmd.get_bool("autocommit") == Ok(false) {
                            let docs = self.gather_in_txn(conn, &sc, db, coll, name, &cmd).await?;
                            Some(self.answer_read(name, db, coll, &cmd, docs))
                        } else {
                            let snapshot = snapshot_read(name, &cmd, self.clock.now())?;
                            let (docs, at) = self.gather(&sc, db, coll, name, &cmd)?;
                            Some(self.answer_read(name, db, coll, &cmd, docs).map(|mut r| {
                                if snapshot {
                                    add_cluster_time(&mut r, at);
                                }
                                r
                            }))
                        }
                    }
                    "drop" => None,
                    _ => None,
                };
                if let Some(r) = r {
                    return r.map(Routed::Own);
                }
            }
        }
        if matches!(
            name,
            "drop" | "dropDatabase" | "createIndexes" | "dropIndexes"
        ) {
            // The primary's reply is the answer. Other shards hold only sharded collections:
            // their indexes follow the primary's; their drops are logged `fromMigrate`, as a
            // MongoDB 7 cluster logs them, so a stream through mongos sees one drop.
            let sharded = match &ns {
                Some(ns) => self.meta.read().await.collections.contains_key(ns),
                None => false,
            };
            for s in 1..self.shards.len() {
                match (name, &coll) {
                    ("createIndexes" | "dropIndexes", _) if sharded => {
                        let _ = self.run(conn, s, cmd.clone()).await;
                    }
                    ("drop", Some(c)) => {
                        crate::node::migration::drop_quietly(&self.shards[s], db, c)
                    }
                    ("dropDatabase", _) => {
                        let colls: Vec<String> = self.shards[s]
                            .state()
                            .catalog
                            .dbs
                            .get(db)
                            .map(|d| d.keys().cloned().collect())
                            .unwrap_or_default();
                        for c in colls {
                            crate::node::migration::drop_quietly(&self.shards[s], db, &c);
                        }
                    }
                    _ => {}
                }
            }
            let mut meta = self.meta.write().await;
            match (name, &ns) {
                ("drop", Some(ns)) => {
                    meta.collections.remove(ns);
                }
                ("dropDatabase", _) => {
                    meta.collections
                        .retain(|k, _| !k.starts_with(&format!("{db}.")));
                    meta.databases.remove(db);
                }
                _ => {}
            }
        }
        // Unsharded collections and everything else live on the primary shard.
        self.enlist(0, &mut cmd);
        let out = execute(&self.shards[0], conn, cmd, None).await;
        Ok(Routed::Passed(self.pass_cursor(0, out)))
    }

    /// Makes a transaction's command start the transaction on a shard it has not touched yet
    /// (`startTransaction` and `readConcern` go to each participant's first command only).
    fn enlist(&self, shard: usize, cmd: &mut Document) {
        if cmd.get_bool("autocommit") != Ok(false) {
            return;
        }
        let (Some(key), Some(n)) = (session_key(cmd), as_i64(cmd.get("txnNumber"))) else {
            return;
        };
        let mut txns = lock(&self.txns);
        let entry = txns.entry(key).or_insert((n, BTreeSet::new()));
        if entry.0 != n {
            *entry = (n, BTreeSet::new());
        }
        if entry.1.insert(shard) {
            cmd.insert("startTransaction", true);
        } else {
            cmd.remove("startTransaction");
            cmd.remove("readConcern");
        }
    }

    /// The shards a session's transaction `txnNumber` has touched.
    fn participants(&self, cmd: &Document) -> Vec<usize> {
        let (Some(key), Some(n)) = (session_key(cmd), as_i64(cmd.get("txnNumber"))) else {
            return Vec::new();
        };
        match lock(&self.txns).get(&key) {
            Some((m, shards)) if *m == n => shards.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Commits on every participant; several commit together at one cluster time.
    async fn commit(&self, conn: &mut Conn, cmd: &Document) -> CmdResult {
        let parts = self.participants(cmd);
        // Held through the commit: no chunk moves between the ownership check and the writes.
        let meta = self.meta.read().await;
        if let Some(stale) = self.stale_write(&meta, &parts, cmd) {
            drop(meta);
            let mut abort = cmd.clone();
            abort.remove("commitTransaction");
            let mut a = doc! {"abortTransaction": 1};
            a.extend(abort);
            let _ = self.abort(conn, &a).await;
            return Err(CommandError::no_such_transaction(format!(
                "Transaction was aborted: a chunk it wrote to ({stale}) moved to another shard \
                 while it was open"
            ))
            .with_labels(vec!["TransientTransactionError".into()]));
        }
        match parts.as_slice() {
            [] => Ok(Document::new()),
            [one] => self.run(conn, *one, cmd.clone()).await,
            many => {
                let nodes: Vec<&Shared> = many.iter().map(|i| self.shards[*i].as_ref()).collect();
                let lsid = cmd.get_document("lsid").cloned().unwrap_or_default();
                let n = as_i64(cmd.get("txnNumber")).unwrap_or(0);
                commit_together(&nodes, &self.clock, &lsid, n)?;
                Ok(Document::new())
            }
        }
    }

    /// A document a participant's open transaction wrote whose chunk another shard owns now (a
    /// migration ran since): committing would leave it behind as an orphan. MongoDB aborts such
    /// a transaction too (its participants' shard versions went stale).
    fn stale_write(&self, meta: &Meta, parts: &[usize], cmd: &Document) -> Option<String> {
        let key = session_key(cmd)?;
        for &p in parts {
            let sessions = lock(&self.shards[p].sessions);
            let Some(t) = sessions.get(&key) else {
                continue;
            };
            for (op, _) in &t.writes.log.ops {
                let Some(sc) = meta.collections.get(&op.ns) else {
                    continue;
                };
                let doc_key = match op.op {
                    "d" => &op.o,
                    _ => match &op.o2 {
                        Some(k) => k,
                        None => &op.o,
                    },
                };
                if sc.owner(&meta::unflatten(doc_key)) != p {
                    return Some(op.ns.clone());
                }
            }
        }
        None
    }

    async fn abort(&self, conn: &mut Conn, cmd: &Document) -> CmdResult {
        let parts = self.participants(cmd);
        if parts.is_empty() {
            return Err(CommandError::no_such_transaction(
                "Transaction with no participants cannot be aborted",
            ));
        }
        let mut last = Document::new();
        for p in parts {
            last = self.run(conn, p, cmd.clone()).await?;
        }
        Ok(last)
    }

    /// Renumbers a shard's cursor in a passed-through reply as a router cursor.
    fn pass_cursor(&self, shard: usize, out: Outcome) -> Outcome {
        let Outcome::Reply(mut reply, batch) = out else {
            return out;
        };
        if let Ok(c) = reply.get_document_mut("cursor") {
            if let Some(id) = as_i64(c.get("id")).filter(|id| *id != 0) {
                let rid = self.new_cursor(RouterCursor::Forward { shard, id });
                c.insert("id", rid);
            }
        }
        Outcome::Reply(reply, batch)
    }

    /// Runs `cmd` on one shard and returns its reply with the batch folded in.
    async fn run(&self, conn: &mut Conn, shard: usize, mut cmd: Document) -> CmdResult {
        self.enlist(shard, &mut cmd);
        match execute(&self.shards[shard], conn, cmd, None).await {
            Outcome::Reply(mut reply, batch) => {
                if let Some(batch) = batch {
                    let docs: Vec<Bson> = batch
                        .iter()
                        .filter_map(|d| d.to_document().ok().map(Bson::Document))
                        .collect();
                    if let Ok(c) = reply.get_document_mut("cursor") {
                        let key = if c.contains_key("firstBatch") {
                            "firstBatch"
                        } else {
                            "nextBatch"
                        };
                        c.insert(key, docs);
                    }
                }
                if reply.get_f64("ok").unwrap_or(1.0) == 0.0 {
                    // The shard's labels are the answer's (it knew the command's context).
                    let labels = reply
                        .get_array("errorLabels")
                        .map(|a| {
                            a.iter()
                                .filter_map(|l| l.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(CommandError::new(
                        reply.get_i32("code").unwrap_or(8),
                        reply.get_str("codeName").unwrap_or("UnknownError"),
                        reply.get_str("errmsg").unwrap_or_default(),
                    )
                    .with_labels(labels));
                }
                Ok(reply)
            }
            // A shard fail point that drops the connection drops the client's.
            Outcome::CloseConnection => Err(CommandError::new(6, "HostUnreachable", SHARD_CLOSED)),
        }
    }

    /// With `--auth`, what the client may run through mongos (mongos checks its users
    /// itself: a command the router answers never reaches a shard's check).
    fn authorize(
        &self,
        conn: &Conn,
        name: &str,
        db: &str,
        cmd: &Document,
    ) -> Result<(), CommandError> {
        if self.shards[0].users.is_none() {
            return Ok(());
        }
        crate::front::auth::authorize(conn.session.user.as_deref(), name, db, cmd)
    }

    /// `hello`'s `saslSupportedMechs` and `speculativeAuthenticate`, as mongod answers them.
    pub fn add_auth_fields(&self, conn: &mut Conn, cmd: &Document, reply: &mut Document) {
        crate::front::commands::add_auth_fields(&self.shards[0], &mut conn.session, cmd, reply);
    }

    pub fn hello(&self, conn: &Conn, legacy: bool) -> Document {
        let mut d = doc! {};
        d.insert(
            if legacy {
                "ismaster"
            } else {
                "isWritablePrimary"
            },
            true,
        );
        d.insert("msg", "isdbgrid");
        d.insert(
            "topologyVersion",
            doc! {"processId": ObjectId::new(), "counter": 0i64},
        );
        d.insert("maxBsonObjectSize", 16_777_216);
        d.insert(
            "maxMessageSizeBytes",
            crate::front::wire::MAX_MESSAGE_SIZE_BYTES as i32,
        );
        d.insert("maxWriteBatchSize", 100_000);
        d.insert("localTime", bson::DateTime::now());
        d.insert("logicalSessionTimeoutMinutes", 30);
        d.insert("connectionId", conn.id as i32);
        d.insert("minWireVersion", 0);
        d.insert("maxWireVersion", self.shards[0].max_wire_version);
        d.insert("readOnly", false);
        if !legacy {
            d.insert("helloOk", true);
        }
        d
    }

    async fn enable_sharding(&self, cmd: &Document) -> CmdResult {
        let db = cmd
            .get_str("enableSharding")
            .or_else(|_| cmd.get_str("enablesharding"))
            .map_err(|_| CommandError::type_mismatch("enableSharding takes a database name"))?;
        self.meta
            .write()
            .await
            .databases
            .entry(db.to_string())
            .or_insert(0);
        Ok(Document::new())
    }

    async fn shard_collection(&self, cmd: &Document) -> CmdResult {
        let ns = cmd
            .get_str("shardCollection")
            .or_else(|_| cmd.get_str("shardcollection"))
            .map_err(|_| CommandError::type_mismatch("shardCollection takes a namespace"))?
            .to_string();
        let Some((db, coll)) = ns.split_once('.') else {
            return Err(CommandError::invalid_namespace(format!(
                "Invalid namespace {ns}"
            )));
        };
        let key = cmd
            .get_document("key")
            .map_err(|_| {
                CommandError::failed_to_parse(
                    "BSON field 'shardCollection.key' is missing but a required field",
                )
            })?
            .clone();
        let hashed = key
            .values()
            .filter(|v| v.as_str() == Some("hashed"))
            .count();
        if key.is_empty()
            || hashed > 1
            || key
                .values()
                .any(|v| v.as_str().is_some_and(|s| s != "hashed"))
        {
            return Err(CommandError::bad_value(format!(
                "Unsupported shard key pattern {key}"
            )));
        }
        let mut meta = self.meta.write().await;
        if meta.collections.contains_key(&ns) {
            return Err(CommandError::new(
                20,
                "AlreadyInitialized",
                format!("sharding already enabled for collection {ns}"),
            ));
        }
        meta.databases.entry(db.to_string()).or_insert(0);
        // The collection is created on the primary shard, whose uuid the cluster adopts.
        let uuid = {
            let mut st = self.shards[0].state();
            let st = &mut *st;
            if st.catalog.get(db, coll).is_none() {
                crate::node::writes::create_live(
                    &mut st.catalog,
                    &mut st.oplog,
                    db,
                    coll,
                    Document::new(),
                );
            }
            match st.catalog.get(db, coll) {
                Some(c) => c.uuid,
                None => bson::Uuid::new(), // not reached: created just above
            }
        };
        for s in &self.shards {
            crate::node::migration::set_shard_key(s, db, coll, uuid, &key);
        }
        let mut note = doc! {
            "shardCollection": ns.clone(),
            "shardKey": key.clone(),
            "unique": truthy(cmd.get("unique")),
            "numInitialChunks": as_i64(cmd.get("numInitialChunks")).unwrap_or(0),
            "presplitHashedZones": truthy(cmd.get("presplitHashedZones")),
        };
        if let Ok(c) = cmd.get_document("collation") {
            note.insert("collation", c.clone());
        }
        crate::node::migration::log_shard_collection(&self.shards[0], db, coll, uuid, note);
        let min: Document = key.keys().map(|k| (k.clone(), Bson::MinKey)).collect();
        let max: Document = key.keys().map(|k| (k.clone(), Bson::MaxKey)).collect();
        let n = self.shards.len();
        let chunks = if hashed == 1 && key.len() == 1 {
            // Two chunks per shard over the hash space, as MongoDB 7 creates them.
            let parts = 2 * n as i128;
            let span = (u64::MAX as i128 + 1) / parts;
            let field = key.keys().next().cloned().unwrap_or_default();
            let mut bounds = vec![Bson::MinKey];
            for i in 1..parts {
                bounds.push(Bson::Int64((i64::MIN as i128 + i * span) as i64));
            }
            bounds.push(Bson::MaxKey);
            bounds
                .windows(2)
                .enumerate()
                .map(|(i, w)| meta::Chunk {
                    id: ObjectId::new(),
                    min: doc! {field.clone(): w[0].clone()},
                    max: doc! {field.clone(): w[1].clone()},
                    shard: i / 2,
                    version: (1, i as u32),
                })
                .collect()
        } else {
            vec![meta::Chunk {
                id: ObjectId::new(),
                min,
                max,
                shard: 0,
                version: (1, 0),
            }]
        };
        let sc = meta::ShardedColl {
            uuid,
            key,
            unique: truthy(cmd.get("unique")),
            epoch: ObjectId::new(),
            timestamp: self.clock.now(),
            chunks,
        };
        // Documents already on the primary that another shard's chunk now owns move there.
        migrate::place_existing(self, db, coll, &sc);
        meta.collections.insert(ns.clone(), sc);
        Ok(doc! {"collectionsharded": ns, "collectionUUID": uuid})
    }

    async fn split(&self, cmd: &Document) -> CmdResult {
        let ns = cmd.get_str("split").unwrap_or_default().to_string();
        let mut meta = self.meta.write().await;
        let Some(sc) = meta.collections.get_mut(&ns) else {
            return Err(CommandError::new(
                61,
                "ShardKeyNotFound",
                format!("{ns} is not sharded"),
            ));
        };
        let at = match (cmd.get_document("middle"), cmd.get_document("find")) {
            (Ok(m), _) => m.clone(),
            // As MongoDB: the chunk holding `find`'s document is split at its median key.
            (_, Ok(f)) => {
                let i = sc.chunk_index(&sc.key_of(&meta::unflatten(f)));
                let Some((db, coll)) = ns.split_once('.') else {
                    return Err(CommandError::invalid_namespace(format!(
                        "Invalid namespace {ns}"
                    )));
                };
                let view = sc.clone();
                let mut keys: Vec<Document> = crate::node::migration::docs_where(
                    &self.shards[sc.chunks[i].shard],
                    db,
                    coll,
                    |d| view.chunk_index(&view.key_of(d)) == i,
                )
                .iter()
                .map(|d| sc.key_of(d))
                .collect();
                keys.sort_by(meta::cmp_key);
                keys.dedup_by(|a, b| meta::cmp_key(a, b).is_eq());
                if keys.len() < 2 {
                    return Err(CommandError::new(
                        117,
                        "ConflictingOperationInProgress",
                        format!("Unable to find median in chunk of {ns}: fewer than two keys"),
                    ));
                }
                keys.swap_remove(keys.len() / 2)
            }
            _ => return Err(CommandError::bad_value("split needs 'middle' or 'find'")),
        };
        let i = sc.chunk_index(&at);
        let c = sc.chunks[i].clone();
        if meta::cmp_key(&c.min, &at).is_eq() {
            return Err(CommandError::bad_value(format!(
                "cannot split chunk at its lower bound {at}"
            )));
        }
        let (major, _) = sc.max_version();
        let minor = sc
            .chunks
            .iter()
            .filter(|x| x.version.0 == major)
            .map(|x| x.version.1)
            .max()
            .unwrap_or(0);
        let left = meta::Chunk {
            id: ObjectId::new(),
            min: c.min.clone(),
            max: at.clone(),
            shard: c.shard,
            version: (major, minor + 1),
        };
        let right = meta::Chunk {
            id: ObjectId::new(),
            min: at,
            max: c.max.clone(),
            shard: c.shard,
            version: (major, minor + 2),
        };
        sc.chunks.splice(i..=i, [left, right]);
        Ok(Document::new())
    }

    async fn move_chunk(&self, cmd: &Document) -> CmdResult {
        let ns = cmd
            .get_str("moveChunk")
            .or_else(|_| cmd.get_str("movechunk"))
            .unwrap_or_default()
            .to_string();
        let to = cmd.get_str("to").unwrap_or_default();
        let Some(to) = to
            .strip_prefix("shard")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < self.shards.len())
        else {
            return Err(CommandError::new(
                70,
                "ShardNotFound",
                format!("Shard {to} not found"),
            ));
        };
        let mut meta = self.meta.write().await;
        let Some(sc) = meta.collections.get_mut(&ns) else {
            return Err(CommandError::new(
                61,
                "ShardKeyNotFound",
                format!("{ns} is not sharded"),
            ));
        };
        let i = match (cmd.get_document("find"), cmd.get_array("bounds")) {
            (Ok(f), _) => sc.chunk_index(&sc.key_of(&meta::unflatten(f))),
            (_, Ok(b)) => {
                let min = b
                    .first()
                    .and_then(Bson::as_document)
                    .cloned()
                    .unwrap_or_default();
                sc.chunks
                    .iter()
                    .position(|c| meta::cmp_key(&c.min, &min).is_eq())
                    .ok_or_else(|| CommandError::bad_value("no chunk with these bounds"))?
            }
            _ => {
                return Err(CommandError::bad_value(
                    "moveChunk needs 'find' or 'bounds'",
                ))
            }
        };
        migrate::move_chunk(self, &ns, sc, i, to);
        Ok(doc! {"millis": 0})
    }

    /// One balancer round: moves one chunk holding documents from the shard with the most
    /// documents to the one with the fewest.
    pub async fn balance_once(&self) -> bool {
        let mut meta = self.meta.write().await;
        for (ns, sc) in meta.collections.iter_mut() {
            let Some((db, coll)) = ns.split_once('.') else {
                continue;
            };
            let mut counts = vec![0usize; self.shards.len()];
            let mut per_chunk = vec![0usize; sc.chunks.len()];
            for (s, shard) in self.shards.iter().enumerate() {
                for d in crate::node::migration::docs_where(shard, db, coll, |_| true) {
                    let i = sc.chunk_index(&sc.key_of(&d));
                    if sc.chunks[i].shard == s {
                        counts[s] += 1;
                        per_chunk[i] += 1;
                    }
                }
            }
            let most = (0..counts.len()).max_by_key(|s| counts[*s]).unwrap_or(0);
            let least = (0..counts.len()).min_by_key(|s| counts[*s]).unwrap_or(0);
            if most == least {
                continue;
            }
            if let Some(i) =
                (0..sc.chunks.len()).find(|i| sc.chunks[*i].shard == most && per_chunk[*i] > 0)
            {
                let ns = ns.clone();
                migrate::move_chunk(self, &ns, sc, i, least);
                return true;
            }
        }
        false
    }

    /// The documents of a sharded collection the read's filter selects, from the shards that
    /// own them (orphans dropped), read under the metadata lock and every shard's lock at once,
    /// so they are the cluster's documents at ONE time, returned with them (a snapshot read's
    /// `atClusterTime`). The locks are taken in shard order, as `txn::commit_together` takes them.
    fn gather(
        &self,
        sc: &meta::ShardedColl,
        db: &str,
        coll: &str,
        name: &str,
        cmd: &Document,
    ) -> Result<(Vec<Document>, bson::Timestamp), CommandError> {
        let key = match name {
            "find" => "filter",
            _ => "query",
        };
        let filter = match cmd.get_document(key) {
            Ok(f) => Filter::parse(f).map_err(CommandError::from)?,
            Err(_) => Filter::parse(&Document::new()).map_err(CommandError::from)?,
        };
        let states: Vec<_> = self.shards.iter().map(|s| s.state()).collect();
        // No shard can log a write while its lock is held: every later one draws a later time.
        let at = self.clock.now();
        let mut out = Vec::new();
        for (i, st) in states.iter().enumerate() {
            out.extend(crate::node::migration::matching_in(
                st,
                db,
                coll,
                &filter,
                |d| sc.owner(d) == i,
            ));
        }
        Ok((out, at))
    }

    /// The current version of an update event's document, found through the router (its
    /// owning shard now, wherever it was when updated).
    async fn lookup(&self, event: &Document) -> Option<Document> {
        let ns = event.get_document("ns").ok()?;
        let (db, coll) = (ns.get_str("db").ok()?, ns.get_str("coll").ok()?);
        let id = event.get_document("documentKey").ok()?.get("_id")?.clone();
        let meta = self.meta.read().await;
        let sc = meta.collections.get(&format!("{db}.{coll}"));
        // Through each shard's `_id` index: a scan per update event made a catching-up stream
        // through mongos quadratic.
        let filter = Filter::parse(&doc! {"_id": id}).ok()?;
        for (i, s) in self.shards.iter().enumerate() {
            let found = crate::node::migration::docs_matching(s, db, coll, &filter, |d| {
                sc.is_none_or(|sc| sc.owner(d) == i)
            });
            if let Some(d) = found.into_iter().next() {
                return Some(d);
            }
        }
        None
    }

    /// `$collStats` of a sharded collection: one document per shard, each naming its `shard`,
    /// then the rest of the pipeline over them (as mongos merges them).
    async fn coll_stats(&self, conn: &mut Conn, db: &str, coll: &str, cmd: &Document) -> CmdResult {
        let mut stages: Vec<Bson> = cmd.get_array("pipeline").cloned().unwrap_or_default();
        let first = stages.remove(0);
        let mut docs = Vec::new();
        for i in 0..self.shards.len() {
            let c = doc! {"aggregate": coll, "pipeline": [first.clone()], "cursor": {}, "$db": db};
            let reply = self.run(conn, i, c).await?;
            let batch = reply
                .get_document("cursor")
                .and_then(|c| c.get_array("firstBatch"))
                .cloned()
                .unwrap_or_default();
            for d in batch {
                if let Bson::Document(mut d) = d {
                    d.insert("shard", self.shards[i].set_name.clone());
                    docs.push(d);
                }
            }
        }
        let mut rest = cmd.clone();
        rest.insert("pipeline", stages);
        self.answer_read("aggregate", db, coll, &rest, docs)
    }

    /// `gather` inside a transaction: each shard is read through its own `find` in the
    /// transaction (so the read sees the transaction's writes and enlists the shard).
    async fn gather_in_txn(
        &self,
        conn: &mut Conn,
        sc: &meta::ShardedColl,
        db: &str,
        coll: &str,
        name: &str,
        cmd: &Document,
    ) -> Result<Vec<Document>, CommandError> {
        let filter = cmd
            .get_document(if name == "find" { "filter" } else { "query" })
            .cloned()
            .unwrap_or_default();
        let mut session = Document::new();
        for k in [
            "lsid",
            "txnNumber",
            "autocommit",
            "startTransaction",
            "readConcern",
            "$db",
        ] {
            if let Some(v) = cmd.get(k) {
                session.insert(k, v.clone());
            }
        }
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            let mut c = doc! {"find": coll, "filter": filter.clone()};
            c.extend(session.clone());
            let mut reply = self.run(conn, i, c).await?;
            loop {
                let cur = reply.get_document("cursor").cloned().unwrap_or_default();
                let batch = cur
                    .get_array("firstBatch")
                    .or_else(|_| cur.get_array("nextBatch"))
                    .cloned()
                    .unwrap_or_default();
                out.extend(
                    batch
                        .into_iter()
                        .filter_map(|d| d.as_document().cloned())
                        .filter(|d| sc.owner(d) == i),
                );
                let id = as_i64(cur.get("id")).unwrap_or(0);
                if id == 0 {
                    break;
                }
                let mut g = doc! {"getMore": id, "collection": coll, "$db": db};
                for k in ["lsid", "txnNumber", "autocommit"] {
                    if let Some(v) = cmd.get(k) {
                        g.insert(k, v.clone());
                    }
                }
                reply = self.run(conn, i, g).await?;
            }
        }
        Ok(out)
    }

    /// Answers a read from documents merged at the router.
    fn answer_read(
        &self,
        name: &str,
        db: &str,
        coll: &str,
        cmd: &Document,
        docs: Vec<Document>,
    ) -> CmdResult {
        let ns = format!("{db}.{coll}");
        let q = |e: crate::query::QueryError| CommandError::from(e);
        match name {
            "find" => {
                let mut stages = Vec::new();
                if let Ok(f) = cmd.get_document("filter") {
                    stages.push(doc! {"$match": f.clone()});
                }
                if let Ok(s) = cmd.get_document("sort") {
                    if !s.is_empty() {
                        stages.push(doc! {"$sort": s.clone()});
                    }
                }
                if let Some(n) = as_i64(cmd.get("skip")).filter(|n| *n > 0) {
                    stages.push(doc! {"$skip": n});
                }
                let limit = as_i64(cmd.get("limit")).unwrap_or(0);
                if limit != 0 {
                    stages.push(doc! {"$limit": limit.abs()});
                }
                if let Ok(p) = cmd.get_document("projection") {
                    if !p.is_empty() {
                        stages.push(doc! {"$project": p.clone()});
                    }
                }
                let docs = crate::aggregate::run_stages(docs, &stages).map_err(q)?;
                let single = limit < 0 || truthy(cmd.get("singleBatch"));
                let bs = as_i64(cmd.get("batchSize"))
                    .map(|n| n as usize)
                    .unwrap_or(101);
                Ok(self.buffered_reply(ns, docs.into(), bs, single))
            }
            "aggregate" => {
                let stages: Vec<Document> = cmd
                    .get_array("pipeline")
                    .map(|p| p.iter().filter_map(|s| s.as_document().cloned()).collect())
                    .unwrap_or_default();
                let docs = crate::aggregate::run_stages(docs, &stages).map_err(q)?;
                let bs = cmd
                    .get_document("cursor")
                    .ok()
                    .and_then(|c| as_i64(c.get("batchSize")))
                    .map(|n| n as usize)
                    .unwrap_or(101);
                Ok(self.buffered_reply(ns, docs.into(), bs, false))
            }
            "count" => {
                let mut docs = docs;
                if let Ok(f) = cmd.get_document("query") {
                    docs = crate::aggregate::run_stages(docs, &[doc! {"$match": f.clone()}])
                        .map_err(q)?;
                }
                let skip = as_i64(cmd.get("skip")).unwrap_or(0).max(0) as usize;
                let mut n = docs.len().saturating_sub(skip);
                if let Some(l) = as_i64(cmd.get("limit")).filter(|l| *l != 0) {
                    n = n.min(l.unsigned_abs() as usize);
                }
                Ok(doc! {"n": n as i32})
            }
            "distinct" => {
                let key = cmd.get_str("key").unwrap_or_default();
                let mut seen = std::collections::BTreeSet::new();
                for d in &docs {
                    match crate::query::get_path(d, key) {
                        Some(Bson::Array(a)) => seen.extend(a.iter().cloned().map(OrderedBson)),
                        Some(v) => {
                            seen.insert(OrderedBson(v.clone()));
                        }
                        None => {}
                    }
                }
                Ok(doc! {"values": seen.into_iter().map(|v| v.0).collect::<Vec<_>>()})
            }
            _ => Err(CommandError::new(
                59,
                "CommandNotFound",
                format!("no such command: '{name}'"),
            )),
        }
    }

    fn buffered_reply(
        &self,
        ns: String,
        mut docs: VecDeque<Document>,
        batch: usize,
        single: bool,
    ) -> Document {
        let first = crate::node::cursor::take_batch(&mut docs, batch);
        let id = if docs.is_empty() || single {
            0
        } else {
            self.new_cursor(RouterCursor::Buffered {
                ns: ns.clone(),
                docs,
            })
        };
        cursor_reply(true, first, id, &ns, None)
    }

    async fn get_more(
        self: &Arc<Self>,
        conn: &mut Conn,
        cmd: &Document,
    ) -> Result<Routed, CommandError> {
        let id = as_i64(cmd.get("getMore")).unwrap_or(0);
        let Some(cursor) = lock(&self.cursors).remove(&id) else {
            return Err(CommandError::cursor_not_found(id));
        };
        let requested = as_i64(cmd.get("batchSize"))
            .map(|n| n as usize)
            .unwrap_or(0);
        match cursor {
            RouterCursor::Buffered { ns, mut docs } => {
                let batch = crate::node::cursor::take_batch(&mut docs, requested);
                let alive = !docs.is_empty();
                if alive {
                    lock(&self.cursors).insert(
                        id,
                        RouterCursor::Buffered {
                            ns: ns.clone(),
                            docs,
                        },
                    );
                }
                Ok(Routed::Own(cursor_reply(
                    false,
                    batch,
                    if alive { id } else { 0 },
                    &ns,
                    None,
                )))
            }
            RouterCursor::Forward { shard, id: sid } => {
                let mut c = cmd.clone();
                c.insert("getMore", sid);
                let out = execute(&self.shards[shard], conn, c, None).await;
                let out = match out {
                    Outcome::Reply(mut reply, batch) => {
                        if let Ok(cur) = reply.get_document_mut("cursor") {
                            if as_i64(cur.get("id")).is_some_and(|n| n != 0) {
                                cur.insert("id", id);
                                lock(&self.cursors)
                                    .insert(id, RouterCursor::Forward { shard, id: sid });
                            }
                        }
                        Outcome::Reply(reply, batch)
                    }
                    other => other,
                };
                Ok(Routed::Passed(out))
            }
            RouterCursor::Stream(mut s) => {
                let mut ended = false;
                let r = s.get_more(self, conn, cmd).await.map(|mut reply| {
                    if let Ok(c) = reply.get_document_mut("cursor") {
                        // After an invalidate the stream is over, as on a replica set.
                        ended = c
                            .get_array("nextBatch")
                            .ok()
                            .and_then(|b| b.last())
                            .and_then(Bson::as_document)
                            .is_some_and(|e| e.get_str("operationType") == Ok("invalidate"));
                        c.insert("id", if ended { 0 } else { id });
                    }
                    reply
                });
                if r.is_ok() && !ended {
                    lock(&self.cursors).insert(id, RouterCursor::Stream(s));
                } else {
                    s.close(self, conn).await;
                }
                r.map(Routed::Own)
            }
        }
    }

    async fn kill_cursors(self: &Arc<Self>, conn: &mut Conn, cmd: &Document) -> CmdResult {
        let ids: Vec<i64> = cmd
            .get_array("cursors")
            .map(|a| a.iter().filter_map(|v| as_i64(Some(v))).collect())
            .unwrap_or_default();
        let mut killed = Vec::new();
        let mut unknown = Vec::new();
        for id in ids {
            let c = lock(&self.cursors).remove(&id);
            match c {
                Some(RouterCursor::Forward { shard, id: sid }) => {
                    let coll = cmd.get_str("killCursors").unwrap_or_default();
                    let db = cmd.get_str("$db").unwrap_or("admin");
                    let _ = self
                        .run(
                            conn,
                            shard,
                            doc! {"killCursors": coll, "cursors": [sid], "$db": db},
                        )
                        .await;
                    killed.push(id);
                }
                Some(RouterCursor::Stream(s)) => {
                    s.close(self, conn).await;
                    killed.push(id);
                }
                Some(RouterCursor::Buffered { .. }) => killed.push(id),
                None => unknown.push(id),
            }
        }
        Ok(
            doc! {"cursorsKilled": killed, "cursorsNotFound": unknown, "cursorsAlive": [], "cursorsUnknown": []},
        )
    }

    /// The write command `cmd` with its statement list replaced by `items`.
    fn with_items(cmd: &Document, field: &str, items: Vec<Bson>) -> Document {
        let mut c = cmd.clone();
        c.insert(field, items);
        c
    }

    async fn insert(&self, conn: &mut Conn, sc: &meta::ShardedColl, cmd: Document) -> CmdResult {
        let docs: Vec<Document> = cmd
            .get_array("documents")
            .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default();
        let mut by_shard: BTreeMap<usize, Vec<(usize, Document)>> = BTreeMap::new();
        for (i, d) in docs.into_iter().enumerate() {
            let d = crate::node::writes::with_id_first(d);
            by_shard.entry(sc.owner(&d)).or_default().push((i, d));
        }
        let mut merged = Merged::default();
        for (shard, items) in by_shard {
            let index: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
            let c = Self::with_items(
                &cmd,
                "documents",
                items.into_iter().map(|(_, d)| Bson::Document(d)).collect(),
            );
            merged.add(self.run(conn, shard, c).await?, &index);
        }
        Ok(merged.finish())
    }

    async fn update(&self, conn: &mut Conn, sc: &meta::ShardedColl, cmd: &Document) -> CmdResult {
        let stmts = cmd.get_array("updates").cloned().unwrap_or_default();
        let mut merged = Merged::default();
        for (i, st) in stmts.into_iter().enumerate() {
            let d = st.as_document().cloned().unwrap_or_default();
            let q = d.get_document("q").cloned().unwrap_or_default();
            let multi = truthy(d.get("multi"));
            let c = Self::with_items(cmd, "updates", vec![Bson::Document(d.clone())]);
            match sc.target(&q) {
                Some(s) => merged.add(self.run(conn, s, c).await?, &[i]),
                None if truthy(d.get("upsert")) => {
                    return Err(CommandError::new(61, "ShardKeyNotFound", format!("Failed to target upsert by query :: could not extract exact shard key from {q}")));
                }
                None => {
                    for s in 0..self.shards.len() {
                        let r = self.run(conn, s, c.clone()).await?;
                        let n = as_i64(r.get("n")).unwrap_or(0);
                        merged.add(r, &[i]);
                        if n > 0 && !multi {
                            break;
                        }
                    }
                }
            }
        }
        Ok(merged.finish())
    }

    async fn delete(&self, conn: &mut Conn, sc: &meta::ShardedColl, cmd: &Document) -> CmdResult {
        let stmts = cmd.get_array("deletes").cloned().unwrap_or_default();
        let mut merged = Merged::default();
        for (i, st) in stmts.into_iter().enumerate() {
            let d = st.as_document().cloned().unwrap_or_default();
            let q = d.get_document("q").cloned().unwrap_or_default();
            let one = as_i64(d.get("limit")).unwrap_or(0) == 1;
            let c = Self::with_items(cmd, "deletes", vec![Bson::Document(d.clone())]);
            match sc.target(&q) {
                Some(s) => merged.add(self.run(conn, s, c).await?, &[i]),
                None => {
                    for s in 0..self.shards.len() {
                        let r = self.run(conn, s, c.clone()).await?;
                        let n = as_i64(r.get("n")).unwrap_or(0);
                        merged.add(r, &[i]);
                        if n > 0 && one {
                            break;
                        }
                    }
                }
            }
        }
        Ok(merged.finish())
    }

    async fn find_and_modify(
        &self,
        conn: &mut Conn,
        sc: &meta::ShardedColl,
        cmd: &Document,
    ) -> CmdResult {
        let q = cmd.get_document("query").cloned().unwrap_or_default();
        if let Some(s) = sc.target(&q) {
            return self.run(conn, s, cmd.clone()).await;
        }
        if truthy(cmd.get("upsert")) {
            return Err(CommandError::new(
                61,
                "ShardKeyNotFound",
                format!("Query for sharded findAndModify must contain the shard key: {q}"),
            ));
        }
        let mut last = Document::new();
        for s in 0..self.shards.len() {
            last = self.run(conn, s, cmd.clone()).await?;
            if !matches!(last.get("value"), None | Some(Bson::Null)) {
                break;
            }
        }
        Ok(last)
    }
}

/// A command's reply: built here, or a shard's passed through as it is.
enum Routed {
    Own(Document),
    Passed(Outcome),
}

/// Sums the replies of a write split over shards, statement indexes mapped back.
#[derive(Default)]
struct Merged {
    n: i64,
    n_modified: i64,
    upserted: Vec<Bson>,
    errors: Vec<(i64, Bson)>,
    has_modified: bool,
}

impl Merged {
    fn add(&mut self, r: Document, index: &[usize]) {
        self.n += as_i64(r.get("n")).unwrap_or(0);
        if let Some(m) = as_i64(r.get("nModified")) {
            self.has_modified = true;
            self.n_modified += m;
        }
        let map = |d: &Document| {
            let local = as_i64(d.get("index")).unwrap_or(0) as usize;
            index.get(local).copied().unwrap_or(local) as i64
        };
        for u in r.get_array("upserted").cloned().unwrap_or_default() {
            if let Bson::Document(mut d) = u {
                let i = map(&d);
                d.insert("index", i as i32);
                self.upserted.push(Bson::Document(d));
            }
        }
        for e in r.get_array("writeErrors").cloned().unwrap_or_default() {
            if let Bson::Document(mut d) = e {
                let i = map(&d);
                d.insert("index", i as i32);
                self.errors.push((i, Bson::Document(d)));
            }
        }
    }

    fn finish(mut self) -> Document {
        let mut d = doc! {"n": self.n as i32};
        if self.has_modified {
            d.insert("nModified", self.n_modified as i32);
        }
        if !self.upserted.is_empty() {
            d.insert("upserted", self.upserted);
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|(i, _)| *i);
            d.insert(
                "writeErrors",
                self.errors.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            );
        }
        d
    }
}

/// What the router does not do on a sharded collection, refused rather than answered
/// differently: tailable cursors, collations other than `simple` (strings compare byte-wise),
/// and updates of a shard key field (MongoDB moves such a document to its new chunk's shard;
/// here it would be left behind as an orphan).
/// Whether a read outside a transaction asks for `readConcern: {level: "snapshot"}`. One at a
/// past `atClusterTime` is refused: the router reads the shards' current documents through the
/// current chunk map, and a past read would also need the map of that time.
fn snapshot_read(name: &str, cmd: &Document, now: bson::Timestamp) -> Result<bool, CommandError> {
    crate::front::commands::check_snapshot_read_concern(name, cmd)?;
    let Ok(rc) = cmd.get_document("readConcern") else {
        return Ok(false);
    };
    if rc.get_str("level") != Ok("snapshot") {
        return Ok(false);
    }
    if let Ok(t) = rc.get_timestamp("atClusterTime") {
        if crate::node::oplog::cmp_ts(t, now).is_lt() {
            return Err(CommandError::bad_value(
                "a snapshot read of a sharded collection at a past atClusterTime is not \
                 supported by mongo-sim's mongos (read at the current time, or through a shard)",
            ));
        }
    }
    Ok(true)
}

fn starts_with_coll_stats(cmd: &Document) -> bool {
    cmd.get_array("pipeline")
        .ok()
        .and_then(|p| p.first())
        .and_then(Bson::as_document)
        .is_some_and(|s| s.contains_key("$collStats"))
}

/// Puts a snapshot read's time where mongos answers it: in `cursor`, or at the top (distinct).
fn add_cluster_time(reply: &mut Document, at: bson::Timestamp) {
    match reply.get_mut("cursor") {
        Some(Bson::Document(c)) => {
            c.insert("atClusterTime", at);
        }
        _ => {
            reply.insert("atClusterTime", at);
        }
    }
}

fn refuse_on_sharded(
    name: &str,
    cmd: &Document,
    sc: &meta::ShardedColl,
) -> Result<(), CommandError> {
    if truthy(cmd.get("tailable")) {
        return Err(CommandError::bad_value(
            "tailable cursors on a sharded collection are not supported by mongo-sim's mongos",
        ));
    }
    if let Some(Bson::Document(c)) = cmd.get("collation") {
        if !c.is_empty() && c.get_str("locale") != Ok("simple") {
            return Err(CommandError::bad_value(format!(
                "collation {c} is not supported by mongo-sim (strings compare byte-wise: only {{locale: \"simple\"}})"
            )));
        }
    }
    let updates: Vec<Bson> = match name {
        "update" => cmd
            .get_array("updates")
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_document()?.get("u").cloned())
                    .collect()
            })
            .unwrap_or_default(),
        "findAndModify" | "findandmodify" => cmd.get("update").cloned().into_iter().collect(),
        _ => Vec::new(),
    };
    for u in updates {
        let Bson::Document(u) = u else { continue };
        let touched: Vec<&str> = if u.keys().any(|k| k.starts_with('$')) {
            u.values()
                .filter_map(Bson::as_document)
                .flat_map(|spec| spec.keys().map(String::as_str))
                .collect()
        } else {
            continue;
        };
        let hits_key = touched.iter().any(|path| {
            sc.key.keys().any(|k| {
                path == k
                    || path.starts_with(&format!("{k}."))
                    || k.starts_with(&format!("{path}."))
            })
        });
        if hits_key {
            return Err(CommandError::new(
                20,
                "IllegalOperation",
                "updating a shard key field is not supported by mongo-sim's mongos (the document \
                 would have to move to another shard)",
            ));
        }
    }
    Ok(())
}

fn is_change_stream(cmd: &Document) -> bool {
    cmd.get_array("pipeline")
        .ok()
        .and_then(|p| p.first())
        .and_then(Bson::as_document)
        .is_some_and(|s| s.contains_key("$changeStream"))
}
