//! Server-wide shared state: storage plus oplog behind one lock (so a write
//! and its oplog entry are atomic), the cursor table, open transactions and
//! fail points, and the `watch` channel that wakes awaitData cursors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bson::{doc, Bson, Document, Timestamp};
use tokio::sync::watch;

use crate::node::cursor::CursorTable;
use crate::node::failpoint::FailPoints;
use crate::node::history::History;
use crate::node::oplog::Oplog;
use crate::node::store::Catalog;
use crate::node::writes::TxnWrites;

pub struct State {
    pub catalog: Catalog,
    pub oplog: Oplog,
    /// What live writes replaced, for snapshot reads at an earlier time.
    pub history: History,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnPhase {
    InProgress,
    Committed,
    Aborted,
}

/// The transaction state of one logical session.
#[derive(Debug)]
pub struct SessionTxn {
    pub txn_number: i64,
    pub phase: TxnPhase,
    pub writes: TxnWrites,
}

pub struct Shared {
    state: Mutex<State>,
    /// The oplog's `next_seq` after the latest append; awaitData waits on it.
    oplog_seq: watch::Sender<u64>,
    pub cursors: Mutex<CursorTable>,
    /// Keyed by the lsid's `id` bytes.
    pub sessions: Mutex<HashMap<Vec<u8>, SessionTxn>>,
    pub failpoints: Mutex<FailPoints>,
    /// Retryable writes already executed, per session (see `retry`).
    pub retries: Mutex<crate::node::retry::RetryCatalog>,
    /// Every session a command named, as `{id, uid}` with its last use (`$listLocalSessions`).
    pub seen_sessions: Mutex<HashMap<Vec<u8>, (Document, bson::DateTime)>>,
    next_connection_id: AtomicI64,
    /// `--auth`'s users; `None` when the server runs without access control.
    pub users: Option<crate::front::auth::Users>,
    /// What `hello` reports as `maxWireVersion` (`SimOptions::max_wire_version`).
    pub max_wire_version: i32,
    /// The replica set's name in `hello` (`rs0`; `shardK` for a shard).
    pub set_name: String,
    /// Change streams' `updateLookup` reads, per namespace.
    pub update_lookups: crate::node::lookups::UpdateLookups,
}

/// MongoDB 7.0's wire version, what the simulator presents itself as by default.
pub const MAX_WIRE_VERSION: i32 = 21;

/// Locks a mutex, ignoring poisoning: a panicking handler must not take the
/// whole simulator down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(oplog_max_entries: usize, users: Option<crate::front::auth::Users>) -> Self {
        Self::with_clock(oplog_max_entries, users, Arc::default())
    }

    /// A node whose optimes come from `clock` (shared by a cluster's shards).
    pub fn with_clock(
        oplog_max_entries: usize,
        users: Option<crate::front::auth::Users>,
        clock: Arc<crate::node::clock::ClusterClock>,
    ) -> Self {
        let oplog = Oplog::with_clock(oplog_max_entries, clock);
        let (tx, _) = watch::channel(oplog.next_seq());
        Self {
            state: Mutex::new(State {
                catalog: Catalog::default(),
                oplog,
                history: History::default(),
            }),
            oplog_seq: tx,
            cursors: Mutex::new(CursorTable::default()),
            sessions: Mutex::new(HashMap::new()),
            failpoints: Mutex::new(FailPoints::default()),
            retries: Mutex::new(crate::node::retry::RetryCatalog::default()),
            seen_sessions: Mutex::new(HashMap::new()),
            next_connection_id: AtomicI64::new(1),
            users,
            max_wire_version: MAX_WIRE_VERSION,
            set_name: "rs0".into(),
            update_lookups: Default::default(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Wakes awaitData cursors if the oplog grew; call after releasing a write.
    pub fn publish(&self, next_seq: u64) {
        self.oplog_seq.send_if_modified(|v| {
            if *v != next_seq {
                *v = next_seq;
                true
            } else {
                false
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.oplog_seq.subscribe()
    }

    pub fn next_connection_id(&self) -> i64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn cluster_time(&self) -> Timestamp {
        self.state().oplog.last_ts()
    }
}

/// `$clusterTime` as an unauthenticated server sends it (zero signature).
pub fn cluster_time_doc(ts: Timestamp) -> Document {
    doc! {
        "clusterTime": ts,
        "signature": {
            "hash": Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![0u8; 20],
            }),
            "keyId": 0i64,
        },
    }
}
