//! Multi-document transactions. A transaction's writes go to private copies
//! of the collections it touches; commit replays them onto live storage and
//! writes ONE `applyOps` oplog entry, so readers see all or nothing.

use bson::{doc, Bson, Document, Timestamp};

use super::{as_i64, truthy, CmdResult, Req};
use crate::error::CommandError;
use crate::node::cursor::MAX_BATCH_BYTES;
use crate::node::oplog::{Oplog, OplogOp, TERM};
use crate::node::state::{lock, SessionTxn, Shared, TxnPhase};
use crate::node::store::approx_size;
use crate::node::write_block;
use crate::node::writes::{replay, TxnWrites};

/// sha256 of the empty user name: the `uid` real servers put in an
/// unauthenticated session's lsid inside oplog entries.
const EMPTY_USER_UID: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The lsid as oplog entries record it: the client's `id` plus the user `uid`.
pub fn oplog_lsid(lsid: &Document) -> Document {
    let mut out = doc! {};
    if let Some(id) = lsid.get("id") {
        out.insert("id", id.clone());
    }
    out.insert(
        "uid",
        Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: EMPTY_USER_UID.to_vec(),
        }),
    );
    out
}

pub fn session_key(cmd: &Document) -> Option<Vec<u8>> {
    match cmd.get_document("lsid").ok()?.get("id")? {
        Bson::Binary(b) => Some(b.bytes.clone()),
        _ => None,
    }
}

/// Decides whether the command runs inside a transaction, starting one on
/// `startTransaction`, and rejects commands for transactions that are gone.
pub fn enter(req: &mut Req<'_>) -> Result<(), CommandError> {
    if req.cmd.get_bool("autocommit") != Ok(false) {
        return Ok(());
    }
    let key = session_key(&req.cmd).ok_or_else(|| {
        CommandError::new(
            50768,
            "Location50768",
            "Transaction requires a session (lsid)",
        )
    })?;
    let txn_number = as_i64(req.cmd.get("txnNumber")).ok_or_else(|| {
        CommandError::bad_value(
            "'autocommit' field requires a transaction number to also be specified",
        )
    })?;
    let start = truthy(req.cmd.get("startTransaction"));
    let mut sessions = lock(&req.shared.sessions);
    if start {
        if let Some(s) = sessions.get(&key) {
            if txn_number < s.txn_number {
                return Err(CommandError::transaction_too_old(txn_number, s.txn_number));
            }
        }
        sessions.insert(
            key.clone(),
            SessionTxn {
                txn_number,
                phase: TxnPhase::InProgress,
                writes: TxnWrites::default(),
            },
        );
        req.txn = Some(key);
        return Ok(());
    }
    let Some(s) = sessions.get(&key) else {
        return Err(CommandError::no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions."
        )));
    };
    if s.txn_number != txn_number {
        return Err(CommandError::no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions. \
             The active transaction number is {}",
            s.txn_number
        )));
    }
    match (s.phase, req.name.as_str()) {
        (TxnPhase::InProgress, _) => {}
        (TxnPhase::Committed, "commitTransaction") => {}
        (TxnPhase::Committed, _) => {
            return Err(CommandError::new(
                256,
                "TransactionCommitted",
                format!("Transaction {txn_number} has been committed."),
            ))
        }
        (TxnPhase::Aborted, _) => {
            return Err(CommandError::no_such_transaction(format!(
                "Transaction with {{ txnNumber: {txn_number} }} has been aborted."
            )))
        }
    }
    req.txn = Some(key);
    Ok(())
}

pub fn commit(req: &Req<'_>) -> CmdResult {
    let Some(key) = &req.txn else {
        return Err(CommandError::new(
            50768,
            "Location50768",
            "commitTransaction must be run within a transaction",
        ));
    };
    let lsid = req.cmd.get_document("lsid").cloned().unwrap_or_default();
    let mut sessions = lock(&req.shared.sessions);
    let Some(s) = sessions.get_mut(key) else {
        return Err(CommandError::no_such_transaction("transaction is gone"));
    };
    if s.phase == TxnPhase::Committed {
        return Ok(Document::new());
    }
    let next = {
        let mut st = req.shared.state();
        let st = &mut *st;
        // Writes blocked since the transaction wrote: it may not land (see
        // `write_block` for how this differs from mongod). It is aborted.
        let user_writes = s
            .writes
            .log
            .ops
            .iter()
            .any(|(op, _)| !write_block::is_internal_db(write_block::db_of(&op.ns)));
        if user_writes && write_block::blocked(&st.catalog) {
            s.phase = TxnPhase::Aborted;
            s.writes = TxnWrites::default();
            return Err(write_block::error());
        }
        let writes = std::mem::take(&mut s.writes);
        s.phase = TxnPhase::Committed;
        let txn_number = s.txn_number;
        if !writes.log.ops.is_empty() {
            let changes = replay(&mut st.catalog, &writes.log.ops, &writes);
            log_transaction(&mut st.oplog, &writes, &oplog_lsid(&lsid), txn_number);
            let at = st.oplog.last_entry_ts();
            for (uuid, change) in changes {
                st.history.record(uuid, at, change);
            }
        }
        st.oplog.next_seq()
    };
    drop(sessions);
    req.shared.publish(next);
    Ok(Document::new())
}

/// Commits one session's transaction on several nodes (a router's participants, in shard
/// order) at ONE cluster time: every participant's session and state locks are taken first, in
/// order, then one time is drawn from the cluster clock and each node's applyOps is logged at
/// it. No participant has an entry after that time yet (their locks are held), and every
/// later entry anywhere draws a later time.
pub fn commit_together(
    nodes: &[&Shared],
    clock: &crate::node::clock::ClusterClock,
    lsid: &Document,
    txn_number: i64,
) -> Result<(), CommandError> {
    let Some(Bson::Binary(id)) = lsid.get("id") else {
        return Err(CommandError::no_such_transaction(
            "transaction requires a session",
        ));
    };
    let mut sessions: Vec<_> = nodes.iter().map(|n| lock(&n.sessions)).collect();
    for s in &sessions {
        match s.get(&id.bytes) {
            Some(t) if t.txn_number == txn_number && t.phase != TxnPhase::Aborted => {}
            _ => {
                return Err(CommandError::no_such_transaction(format!(
                    "Transaction with {{ txnNumber: {txn_number} }} has been aborted."
                )))
            }
        }
    }
    let mut states: Vec<_> = nodes.iter().map(|n| n.state()).collect();
    if states.iter().any(|st| write_block::blocked(&st.catalog)) {
        return Err(write_block::error());
    }
    let at = clock.tick();
    let logged = oplog_lsid(lsid);
    for (s, st) in sessions.iter_mut().zip(states.iter_mut()) {
        let Some(t) = s.get_mut(&id.bytes) else {
            continue;
        };
        if t.phase == TxnPhase::Committed {
            continue;
        }
        let writes = std::mem::take(&mut t.writes);
        t.phase = TxnPhase::Committed;
        if !writes.log.ops.is_empty() {
            let st = &mut **st;
            let changes = replay(&mut st.catalog, &writes.log.ops, &writes);
            st.oplog.pin(Some(at));
            log_transaction(&mut st.oplog, &writes, &logged, txn_number);
            st.oplog.pin(None);
            for (uuid, change) in changes {
                st.history.record(uuid, at, change);
            }
        }
    }
    let next: Vec<u64> = states.iter().map(|st| st.oplog.next_seq()).collect();
    drop(states);
    drop(sessions);
    for (n, seq) in nodes.iter().zip(next) {
        n.publish(seq);
    }
    Ok(())
}

/// Writes a committed transaction as applyOps entries: one, or for a
/// transaction over 16 MB several chained by `prevOpTime`, all but the last
/// marked `partialTxn` (as mongod does since 4.2).
fn log_transaction(oplog: &mut Oplog, writes: &TxnWrites, lsid: &Document, txn_number: i64) {
    let mut chunks: Vec<Vec<usize>> = vec![Vec::new()];
    let mut bytes = 0;
    let inner: Vec<Document> = writes
        .log
        .ops
        .iter()
        .map(|(op, _)| op.to_inner_document())
        .collect();
    for (i, d) in inner.iter().enumerate() {
        let size = approx_size(d);
        let current = chunks.last().map(Vec::len).unwrap_or(0);
        if current > 0 && bytes + size > MAX_BATCH_BYTES {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(last) = chunks.last_mut() {
            last.push(i);
        }
    }
    let mut prev: Option<Timestamp> = None;
    let n = chunks.len();
    for (k, chunk) in chunks.into_iter().enumerate() {
        let ops: Vec<Bson> = chunk
            .iter()
            .map(|&i| Bson::Document(inner[i].clone()))
            .collect();
        let images = chunk
            .iter()
            .map(|&i| writes.log.ops[i].0.images.clone())
            .collect();
        let mut o = doc! {"applyOps": ops};
        if k + 1 < n {
            o.insert("partialTxn", true);
        }
        let prev_op_time = match prev {
            Some(ts) => doc! {"ts": ts, "t": TERM},
            None => doc! {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64},
        };
        let extra = doc! {
            "lsid": lsid.clone(),
            "txnNumber": txn_number,
            "prevOpTime": prev_op_time,
        };
        let entry = oplog.append_with_images(
            OplogOp {
                op: "c",
                ns: "admin.$cmd".into(),
                ui: None,
                o,
                o2: None,
                images: None,
            },
            Some(extra),
            images,
        );
        prev = Some(entry.ts);
    }
}

pub fn abort(req: &Req<'_>) -> CmdResult {
    let Some(key) = &req.txn else {
        return Err(CommandError::no_such_transaction(
            "abortTransaction must be run within a transaction",
        ));
    };
    let mut sessions = lock(&req.shared.sessions);
    if let Some(s) = sessions.get_mut(key) {
        s.phase = TxnPhase::Aborted;
        s.writes = TxnWrites::default();
    }
    Ok(Document::new())
}

/// endSessions / killSessions / killAllSessions: open transactions die.
pub fn end_sessions(req: &Req<'_>) -> CmdResult {
    let mut sessions = lock(&req.shared.sessions);
    let mut seen = lock(&req.shared.seen_sessions);
    match req.cmd.get(&req.name) {
        Some(Bson::Array(ids)) if req.name != "killAllSessions" => {
            for lsid in ids {
                if let Some(Bson::Binary(b)) = lsid.as_document().and_then(|d| d.get("id")) {
                    sessions.remove(&b.bytes);
                    seen.remove(&b.bytes);
                }
            }
        }
        _ => {
            sessions.clear();
            seen.clear();
        }
    }
    Ok(Document::new())
}
