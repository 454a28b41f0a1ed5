//! `ChangeEvent`: everything a source emits. Each event is paired with the position *after*
//! it, so filtering or batching events can never desynchronise them from the checkpoint.

use std::fmt;

use bson::{Bson, Document, RawDocument, RawDocumentBuf, Timestamp};

use crate::position::Position;

/// A `db.collection` namespace. `coll` is empty for database-wide events (`dropDatabase`) and
/// for heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl Namespace {
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Self {
        Namespace {
            db: db.into(),
            coll: coll.into(),
        }
    }

    /// Splits `db.coll` at the first dot (collection names may contain dots, databases not).
    pub fn parse(ns: &str) -> Self {
        match ns.split_once('.') {
            Some((db, coll)) => Namespace::new(db, coll),
            None => Namespace::new(ns, ""),
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.coll.is_empty() {
            f.write_str(&self.db)
        } else {
            write!(f, "{}.{}", self.db, self.coll)
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Insert,
    Update,
    Replace,
    Delete,
    /// The collection was dropped.
    Drop,
    /// The collection was renamed to `to`; for us a drop of the old name.
    Rename {
        to: Namespace,
    },
    /// The whole database was dropped.
    DropDatabase,
    /// An event the source could not read (over 16 MB without a server that splits it):
    /// the document is dead-lettered with `reason` and its row keeps its last version.
    Unreadable {
        reason: String,
    },
    /// Nothing happened but the position moved (idle heartbeat, oplog no-op, an event for an
    /// unmapped namespace). Carries the position so checkpoints and lag stay fresh.
    Noop,
}

impl Op {
    /// Every `tributary_events_total{op}` label a counted event can have (`noop` is never
    /// counted), so each series starts at 0.
    pub const LABELS: [&'static str; 8] = [
        "insert",
        "update",
        "replace",
        "delete",
        "drop",
        "rename",
        "drop_database",
        "unreadable",
    ];

    /// Label for `tributary_events_total{op}`.
    pub fn label(&self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Replace => "replace",
            Op::Delete => "delete",
            Op::Drop => "drop",
            Op::Rename { .. } => "rename",
            Op::DropDatabase => "drop_database",
            Op::Unreadable { .. } => "unreadable",
            Op::Noop => "noop",
        }
    }
}

/// The identity of a MongoDB multi-document transaction: its session id and number.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnId {
    pub lsid: Document,
    pub txn_number: i64,
}

/// One change read from MongoDB.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub namespace: Namespace,
    /// The document's `_id` (insert, update, replace, delete).
    pub key: Option<Bson>,
    /// The full document after the change, when known, as the BSON bytes the driver received
    /// (normalisation converts them without building a `Document`). `None` for an update whose
    /// document is gone by the time it was looked up (a later delete event follows).
    pub document: Option<RawDocumentBuf>,
    /// For an update: the dotted paths it set, removed or truncated, as the source reported
    /// them. `None` when unknown (and for every other operation), which counts as "anything
    /// may have changed".
    pub updated_paths: Option<Vec<String>>,
    /// Set when the change belongs to a multi-document transaction.
    pub txn: Option<TxnId>,
    pub cluster_time: Timestamp,
    /// The position after this event.
    pub position: Position,
}

impl ChangeEvent {
    /// A heartbeat: only the position moved.
    pub fn noop(position: Position, cluster_time: Timestamp) -> Self {
        ChangeEvent {
            op: Op::Noop,
            namespace: Namespace::default(),
            key: None,
            document: None,
            updated_paths: None,
            txn: None,
            cluster_time,
            position,
        }
    }

    /// True when this event and `other` belong to the same transaction commit (same
    /// transaction id and cluster time), so they must land in one batch.
    pub fn same_transaction(&self, other: &ChangeEvent) -> bool {
        match (&self.txn, &other.txn) {
            (Some(a), Some(b)) => a == b && self.cluster_time == other.cluster_time,
            _ => false,
        }
    }
}

/// A document's `_id` read from its BSON bytes, or why it cannot be.
pub fn document_id(doc: &RawDocument) -> Result<Bson, String> {
    match doc.get("_id") {
        Ok(Some(id)) => Bson::try_from(id).map_err(|e| format!("its _id is not valid BSON: {e}")),
        Ok(None) => Err("it has no _id".to_owned()),
        Err(e) => Err(format!("it is not valid BSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_parses_at_first_dot() {
        assert_eq!(
            Namespace::parse("shop.orders.v2"),
            Namespace::new("shop", "orders.v2")
        );
        assert_eq!(Namespace::parse("shop").to_string(), "shop");
        assert_eq!(Namespace::new("a", "b").to_string(), "a.b");
    }
}
