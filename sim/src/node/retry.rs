//! Retryable writes deduplicated as mongod's session catalog does it: per logical session,
//! the newest `txnNumber` and the statements (`stmtId`s) of it already executed with their
//! outcome. A retry (same `lsid` + `txnNumber`) skips those statements and reports the first
//! attempt's outcome instead of applying them again: a retried `$inc` counts once, a retried
//! insert is not a duplicate key. A `txnNumber` older than the session's is refused with 225
//! TransactionTooOld. Failed statements are not recorded (a retry runs them again), as on
//! mongod.

use std::collections::HashMap;

use bson::{Bson, Document};

use crate::error::CommandError;

/// What one executed statement did, enough to rebuild its part of the reply.
#[derive(Debug, Clone)]
pub enum StmtOutcome {
    Inserted,
    Updated {
        n: i64,
        modified: i64,
        upserted: Option<Bson>,
    },
    Deleted {
        n: i64,
    },
    /// A findAndModify's whole reply (`lastErrorObject`, `value`).
    FindAndModify(Document),
}

#[derive(Debug, Default)]
struct Session {
    txn_number: i64,
    done: HashMap<i32, StmtOutcome>,
}

/// The retryable-write state of every session that made one.
#[derive(Debug, Default)]
pub struct RetryCatalog {
    sessions: HashMap<Vec<u8>, Session>,
}

impl RetryCatalog {
    /// Makes `txn_number` the session's current one (forgetting an older one's statements);
    /// an older number than the session's is 225 TransactionTooOld.
    pub fn begin(&mut self, key: &[u8], txn_number: i64) -> Result<(), CommandError> {
        let s = self.sessions.entry(key.to_vec()).or_default();
        if txn_number < s.txn_number {
            return Err(CommandError::transaction_too_old(txn_number, s.txn_number));
        }
        if txn_number > s.txn_number || s.done.is_empty() {
            s.txn_number = txn_number;
            s.done.clear();
        }
        Ok(())
    }

    /// The outcome of statement `stmt` of the session's current `txn_number`, if it ran.
    pub fn executed(&self, key: &[u8], txn_number: i64, stmt: i32) -> Option<&StmtOutcome> {
        let s = self.sessions.get(key)?;
        (s.txn_number == txn_number)
            .then(|| s.done.get(&stmt))
            .flatten()
    }

    pub fn record(&mut self, key: &[u8], txn_number: i64, stmt: i32, outcome: StmtOutcome) {
        let s = self.sessions.entry(key.to_vec()).or_default();
        if s.txn_number == txn_number {
            s.done.insert(stmt, outcome);
        }
    }
}

/// The retryable-write identity of a write command: its session, `txnNumber`, and the
/// `stmtId` of each statement (`stmtIds[i]`, else `stmtId + i`, else `i`, as mongod's
/// `getStmtIdForWriteAt`).
#[derive(Debug, Clone)]
pub struct RetryableWrite {
    pub key: Vec<u8>,
    pub txn_number: i64,
    first_stmt: i32,
    stmt_ids: Option<Vec<i32>>,
}

impl RetryableWrite {
    /// `Some` for a write with `lsid` and `txnNumber` that is not part of a transaction.
    pub fn of(cmd: &Document, in_transaction: bool) -> Option<Self> {
        if in_transaction || cmd.contains_key("autocommit") {
            return None;
        }
        let txn_number = match cmd.get("txnNumber")? {
            Bson::Int64(n) => *n,
            Bson::Int32(n) => i64::from(*n),
            _ => return None,
        };
        let key = match cmd.get_document("lsid").ok()?.get("id")? {
            Bson::Binary(b) => b.bytes.clone(),
            _ => return None,
        };
        let stmt_ids = cmd.get_array("stmtIds").ok().map(|a| {
            a.iter()
                .filter_map(|v| match v {
                    Bson::Int32(n) => Some(*n),
                    Bson::Int64(n) => i32::try_from(*n).ok(),
                    _ => None,
                })
                .collect()
        });
        let first_stmt = cmd.get_i32("stmtId").unwrap_or(0);
        Some(Self {
            key,
            txn_number,
            first_stmt,
            stmt_ids,
        })
    }

    pub fn stmt(&self, index: usize) -> i32 {
        match &self.stmt_ids {
            Some(ids) => ids.get(index).copied().unwrap_or(-1),
            None => self.first_stmt + index as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_sees_the_first_outcome_and_a_new_txn_number_forgets_it() {
        let mut c = RetryCatalog::default();
        let k = b"s".to_vec();
        c.begin(&k, 1).unwrap();
        c.record(&k, 1, 0, StmtOutcome::Deleted { n: 1 });
        c.begin(&k, 1).unwrap();
        assert!(matches!(
            c.executed(&k, 1, 0),
            Some(StmtOutcome::Deleted { n: 1 })
        ));
        assert!(c.executed(&k, 1, 1).is_none());
        c.begin(&k, 2).unwrap();
        assert!(c.executed(&k, 2, 0).is_none());
        assert_eq!(c.begin(&k, 1).unwrap_err().code, 225);
    }

    #[test]
    fn statement_ids_follow_the_command() {
        let lsid = bson::doc! {"id": bson::Binary {
        subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16] }};
        let w = RetryableWrite::of(
            &bson::doc! {"insert": "c", "lsid": lsid.clone(),
            "txnNumber": 3i64},
            false,
        )
        .unwrap();
        assert_eq!((w.stmt(0), w.stmt(4)), (0, 4));
        let w = RetryableWrite::of(
            &bson::doc! {"insert": "c", "lsid": lsid.clone(),
            "txnNumber": 3i64, "stmtIds": [7, 9]},
            false,
        )
        .unwrap();
        assert_eq!((w.stmt(0), w.stmt(1)), (7, 9));
        assert!(RetryableWrite::of(
            &bson::doc! {"insert": "c", "lsid": lsid,
            "txnNumber": 3i64, "autocommit": false},
            false
        )
        .is_none());
    }
}
