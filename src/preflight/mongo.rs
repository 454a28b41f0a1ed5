//! The MongoDB half of the pre-flight: reachable (and logged in), topology, server version,
//! each mapped collection present and readable, the oplog window, and the stream's checkpoint
//! inside that window (`window`).

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{doc, Document};
use mongodb::error::{Error, ErrorKind};
use mongodb::Client;

use super::window::{judge_checkpoint, judge_window, OplogWindow};
use super::StoredCheckpoint;
use super::{Finding, Level};
use crate::config::{redact_uri, Config, SourceKind};
use crate::mapping::model::MappingSet;

/// How long MongoDB gets to answer: the URI's own timeouts win.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The oldest major version Tributary is tested against.
const OLDEST_TESTED_MAJOR: u32 = 6;

const AREA: &str = "mongodb";

enum Topology {
    ReplicaSet(String),
    Mongos,
    Standalone,
}

pub async fn check(
    config: &Config,
    mappings: &MappingSet,
    checkpoint: StoredCheckpoint,
) -> Vec<Finding> {
    let uri = redact_uri(&config.mongo.uri);
    let mut options = match mongodb::options::ClientOptions::parse(&config.mongo.uri).await {
        Ok(o) => o,
        Err(e) => {
            let msg = format!(
                "mongo.uri {uri} cannot be used: {}",
                redact_uri(&e.to_string())
            );
            return vec![Finding::new(Level::Error, AREA, "reachable", msg)];
        }
    };
    options.server_selection_timeout.get_or_insert(TIMEOUT);
    options.connect_timeout.get_or_insert(TIMEOUT);
    let client = match Client::with_options(options) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "cannot create a MongoDB client for {uri}: {}",
                redact_uri(&e.to_string())
            );
            return vec![Finding::new(Level::Error, AREA, "reachable", msg)];
        }
    };
    let findings = inspect(&client, &uri, config, mappings, checkpoint).await;
    // Dropping a client while its background tasks still check out connections makes the
    // driver panic at runtime shutdown; an explicit shutdown stops them first.
    client.shutdown().await;
    findings
}

async fn inspect(
    client: &Client,
    uri: &str,
    config: &Config,
    mappings: &MappingSet,
    checkpoint: StoredCheckpoint,
) -> Vec<Finding> {
    let admin = client.database("admin");
    let hello = match admin.run_command(doc! {"hello": 1}).await {
        Ok(h) => h,
        Err(e) => {
            let msg = format!("cannot reach mongodb {uri} (mongo.uri): {}", describe(&e));
            return vec![Finding::new(Level::Error, AREA, "reachable", msg)];
        }
    };
    let mut out = Vec::new();
    let topology = if hello.get_str("msg") == Ok("isdbgrid") {
        Topology::Mongos
    } else if let Ok(set) = hello.get_str("setName") {
        Topology::ReplicaSet(set.to_owned())
    } else {
        Topology::Standalone
    };
    out.push(match (&topology, config.mongo.source) {
        (Topology::Standalone, _) => Finding::new(
            Level::Error,
            AREA,
            "topology",
            format!("mongodb {uri} is a standalone server, which has neither change streams nor an oplog: run it as a replica set (even of one member: mongod --replSet rs0, then rs.initiate())"),
        ),
        (Topology::Mongos, SourceKind::Oplog) => Finding::new(
            Level::Error,
            AREA,
            "topology",
            format!("mongodb {uri} is a mongos (sharded cluster), which has no oplog to tail: set mongo.source = \"change_stream\""),
        ),
        (Topology::Mongos, SourceKind::ChangeStream) => Finding::new(
            Level::Ok,
            AREA,
            "topology",
            format!("mongodb {uri}: mongos of a sharded cluster"),
        ),
        (Topology::ReplicaSet(name), _) => Finding::new(
            Level::Ok,
            AREA,
            "topology",
            format!("mongodb {uri}: replica set {name:?}"),
        ),
    });
    out.push(version(client).await);
    out.extend(collections(client, config, mappings).await);
    let window = match topology {
        Topology::ReplicaSet(_) => {
            let (finding, window) = oplog_window(client, config.mongo.source).await;
            out.push(finding);
            window
        }
        Topology::Mongos => {
            out.push(Finding::new(
                Level::Warning,
                AREA,
                "oplog_window",
                "not checked through mongos: check each shard's (rs.printReplicationInfo() on its primary)".into(),
            ));
            None
        }
        Topology::Standalone => None,
    };
    let stream = &config.sync.name;
    out.push(match (checkpoint, window) {
        // The Postgres half said why.
        (StoredCheckpoint::Unknown, _) => return out,
        (StoredCheckpoint::Absent, _) => Finding::new(
            Level::Ok,
            "checkpoint",
            "checkpoint",
            format!("stream {stream:?} has no checkpoint yet: sync starts with a full copy"),
        ),
        (StoredCheckpoint::At(cp), Some(w)) => {
            let (level, message) =
                judge_checkpoint(stream, cp, &w, config.sync.resync_on_history_lost);
            Finding::new(level, "checkpoint", "checkpoint", message)
        }
        (StoredCheckpoint::At(_), None) => Finding::new(
            Level::Warning,
            "checkpoint",
            "checkpoint",
            format!("stream {stream:?} has a checkpoint, but without the oplog window nobody can tell whether its history is still there"),
        ),
    });
    out
}

async fn version(client: &Client) -> Finding {
    match client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
    {
        Ok(info) => {
            let v = info.get_str("version").unwrap_or("unknown").to_owned();
            let major: Option<u32> = v.split('.').next().and_then(|m| m.parse().ok());
            if major.is_some_and(|m| m < OLDEST_TESTED_MAJOR) {
                Finding::new(
                    Level::Warning,
                    AREA,
                    "version",
                    format!("server {v}: Tributary is tested against MongoDB 6, 7 and 8"),
                )
            } else {
                Finding::new(Level::Ok, AREA, "version", format!("server {v}"))
            }
        }
        Err(e) => Finding::new(
            Level::Warning,
            AREA,
            "version",
            format!("buildInfo failed, version unknown: {}", describe(&e)),
        ),
    }
}

/// Per mapped collection: present (a warning when not: it streams once created) and readable
/// by this user (`find`, and for change streams `changeStream`).
async fn collections(client: &Client, config: &Config, mappings: &MappingSet) -> Vec<Finding> {
    let mut by_db: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in &mappings.collections {
        by_db.entry(&m.database).or_default().push(&m.collection);
    }
    let mut out = Vec::new();
    for (db, colls) in by_db {
        let database = client.database(db);
        let names = match database
            .list_collection_names()
            .authorized_collections(true)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                out.push(Finding::new(
                    Level::Error,
                    AREA,
                    "collections",
                    format!("cannot list the collections of database {db:?}: {} (the role needs listCollections on it)", describe(&e)),
                ));
                continue;
            }
        };
        for coll in colls {
            let ns = format!("{db}.{coll}");
            let collection = database.collection::<Document>(coll);
            let read = collection
                .find_one(doc! {})
                .projection(doc! {"_id": 1})
                .await;
            let finding = match read {
                Err(e) => Finding::new(
                    Level::Error,
                    AREA,
                    "collections",
                    format!(
                        "cannot read {ns}: {} (the role needs find on it)",
                        describe(&e)
                    ),
                ),
                Ok(_) if config.mongo.source == SourceKind::ChangeStream => {
                    match collection.watch().await {
                        Ok(_) => present(&ns, names.iter().any(|n| n == coll)),
                        Err(e) => Finding::new(
                            Level::Error,
                            AREA,
                            "collections",
                            format!("cannot open a change stream on {ns}: {} (the role needs changeStream on it)", describe(&e)),
                        ),
                    }
                }
                Ok(_) => present(&ns, names.iter().any(|n| n == coll)),
            };
            out.push(finding);
        }
    }
    out
}

fn present(ns: &str, exists: bool) -> Finding {
    if exists {
        Finding::new(
            Level::Ok,
            AREA,
            "collections",
            format!("{ns}: present and readable"),
        )
    } else {
        Finding::new(
            Level::Warning,
            AREA,
            "collections",
            format!("{ns} does not exist (yet): nothing to copy; it streams once created (check the mapping's database and collection names)"),
        )
    }
}

async fn oplog_window(client: &Client, source: SourceKind) -> (Finding, Option<OplogWindow>) {
    let bounds = crate::source::oplog::oplog_bounds(client).await;
    match bounds.map(|b| b.map(|(oldest, newest)| OplogWindow { oldest, newest })) {
        Ok(Some(w)) => {
            let (level, message) = judge_window(&w);
            (Finding::new(level, AREA, "oplog_window", message), Some(w))
        }
        Ok(None) => (
            Finding::new(
                Level::Warning,
                AREA,
                "oplog_window",
                "local.oplog.rs is empty".into(),
            ),
            None,
        ),
        Err(e) => {
            let (level, what) = match source {
                SourceKind::Oplog => (Level::Error, "the oplog source tails it: grant read on the local database"),
                SourceKind::ChangeStream => (Level::Warning, "the oplog window and the checkpoint's headroom are not checked (grant read on local.oplog.rs to check them)"),
            };
            (
                Finding::new(
                    level,
                    AREA,
                    "oplog_window",
                    format!("cannot read local.oplog.rs: {}; {what}", describe(&e)),
                ),
                None,
            )
        }
    }
}

/// A driver error in one line, without the URI's secrets.
fn describe(e: &Error) -> String {
    let text = match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} (code {} {})", c.message, c.code, c.code_name),
        ErrorKind::Authentication { message, .. } => format!(
            "authentication failed: {message}; {}",
            crate::source::authentication_hint(message)
        ),
        _ => e.to_string(),
    };
    redact_uri(&text)
}
