//! Command errors as the server reports them: `{ok: 0, errmsg, code, codeName,
//! errorLabels}`, plus the rule that decides which labels the server adds.

use bson::{doc, Document};

use crate::query::QueryError;

/// A failed command. `labels` is `None` when the server's own labelling rule
/// applies, `Some` when a fail point dictated the labels exactly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code_name} ({code}): {message}")]
pub struct CommandError {
    pub code: i32,
    pub code_name: String,
    pub message: String,
    pub labels: Option<Vec<String>>,
    /// Fields the reply carries beside the code (a DuplicateKey's `keyPattern`/`keyValue`).
    pub extra: Option<Box<Document>>,
}

impl CommandError {
    pub fn new(code: i32, code_name: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            code_name: code_name.to_string(),
            message: message.into(),
            labels: None,
            extra: None,
        }
    }

    pub fn with_labels(mut self, labels: Vec<String>) -> Self {
        self.labels = Some(labels);
        self
    }

    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, "BadValue", message)
    }

    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(14, "TypeMismatch", message)
    }

    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, "FailedToParse", message)
    }

    pub fn namespace_not_found(message: impl Into<String>) -> Self {
        Self::new(26, "NamespaceNotFound", message)
    }

    pub fn invalid_namespace(message: impl Into<String>) -> Self {
        Self::new(73, "InvalidNamespace", message)
    }

    pub fn illegal_operation(message: impl Into<String>) -> Self {
        Self::new(20, "IllegalOperation", message)
    }

    pub fn no_such_transaction(message: impl Into<String>) -> Self {
        Self::new(251, "NoSuchTransaction", message)
            .with_labels(vec!["TransientTransactionError".into()])
    }

    /// 225: `txn_number` is older than the session's `current` one (a retryable write or a
    /// transaction, as mongod's session catalog refuses both).
    pub fn transaction_too_old(txn_number: i64, current: i64) -> Self {
        Self::new(
            225,
            "TransactionTooOld",
            format!(
                "Cannot start transaction {txn_number} on session because a newer \
                 transaction {current} has already started"
            ),
        )
    }

    pub fn cursor_not_found(id: i64) -> Self {
        Self::new(43, "CursorNotFound", format!("cursor id {id} not found"))
    }

    /// The reply body, labels resolved as the server resolves them for the command (`ctx`).
    pub fn to_reply(&self, ctx: &LabelContext) -> Document {
        let mut reply = doc! {
            "ok": 0.0,
            "errmsg": self.message.clone(),
            "code": self.code,
            "codeName": self.code_name.clone(),
        };
        for (k, v) in self.extra.iter().flat_map(|e| e.iter()) {
            reply.insert(k.clone(), v.clone());
        }
        let labels = match &self.labels {
            Some(labels) => labels.clone(),
            None => server_labels(Some(self.code), None, ctx),
        };
        if !labels.is_empty() {
            reply.insert("errorLabels", labels);
        }
        reply
    }
}

impl From<QueryError> for CommandError {
    fn from(e: QueryError) -> Self {
        Self::new(e.code, e.code_name, e.message)
    }
}

/// Whether `e` refuses something the client asked for that this server does not implement
/// or does not know (an unknown command, stage, expression, operator, field or fail point):
/// those are logged, one line each, so a test author sees what was asked for in vain
/// (sim/README.md, "refuse, never answer differently").
pub fn is_refusal(e: &CommandError) -> bool {
    // CommandNotFound, unknown field (IDL), unknown stage, unknown expression.
    matches!(e.code, 59 | 40415 | 40324 | 168)
        || e.message.starts_with("unknown operator")
        || e.message.starts_with("unknown top level operator")
        || e.message.starts_with("unknown fail point")
        || e.message.contains("not supported by mongo-sim")
        || e.message.contains("not implemented by mongo-sim")
}

/// What the server's error labels depend on besides the code (mongod's `ErrorLabelBuilder`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LabelContext {
    /// An aggregate/getMore of a change stream.
    pub change_stream: bool,
    /// The command carries `txnNumber` and `autocommit` (runs in a transaction).
    pub in_transaction: bool,
    /// The command carries `txnNumber` without `autocommit` (a retryable write).
    pub retryable_write: bool,
    /// `commitTransaction` or `abortTransaction`.
    pub commit_or_abort: bool,
}

/// mongod's RetriableError category (error_codes.yml): the errors a retryable write or read
/// may be retried after.
const RETRIABLE_CODES: &[i32] = &[
    6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50915,
];

/// NeedRetargettingError (StaleEpoch, StaleConfig) and SnapshotError (SnapshotTooOld,
/// SnapshotUnavailable, StaleChunkHistory, MigrationConflict).
const RETARGET_AND_SNAPSHOT_CODES: &[i32] = &[150, 13388, 239, 246, 250, 272];

/// Codes in the RetriableError / NetworkError / NeedRetargettingError
/// categories, plus RetryChangeStream and FailedToSatisfyReadPreference:
/// mongod's `isResumableChangeStreamError`.
const RESUMABLE_CHANGE_STREAM_CODES: &[i32] = &[
    6, 7, 89, 91, 133, 134, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436,
];

/// ChangeStreamFatalError and ChangeStreamHistoryLost.
const NON_RESUMABLE_CHANGE_STREAM_CODES: &[i32] = &[280, 286];

/// mongod's `isTransientTransactionError`: a failure that left nothing behind, so the whole
/// transaction may be retried.
fn transient_transaction_error(code: i32, has_wc_error: bool, commit_or_abort: bool) -> bool {
    // WriteConflict, LockTimeout, PreparedTransactionInProgress, ShardCannotRefreshDueToLocksHeld,
    // StaleDbVersion.
    if matches!(code, 112 | 24 | 267 | 343 | 249) || RETARGET_AND_SNAPSHOT_CODES.contains(&code) {
        return true;
    }
    if commit_or_abort {
        // After a commit attempt NoSuchTransaction is safe to retry only if nothing could
        // have been majority-committed.
        code == 251 && !has_wc_error
    } else {
        RETRIABLE_CODES.contains(&code) || code == 251
    }
}

/// The labels mongod adds to an error (`ErrorLabelBuilder::build`): TransientTransactionError
/// inside transactions, else RetryableWriteError for retryable writes and commit/abort,
/// else the change-stream labels. `code` is the command's error, `wc_code` a write concern
/// error's code.
pub fn server_labels(code: Option<i32>, wc_code: Option<i32>, ctx: &LabelContext) -> Vec<String> {
    let mut labels = Vec::new();
    let transient = ctx.in_transaction
        && code.is_some_and(|c| {
            transient_transaction_error(c, wc_code.is_some(), ctx.commit_or_abort)
        });
    if transient {
        labels.push("TransientTransactionError".to_string());
    } else if (ctx.retryable_write || (ctx.in_transaction && ctx.commit_or_abort))
        && (code.is_some_and(|c| RETRIABLE_CODES.contains(&c))
            || wc_code.is_some_and(|c| RETRIABLE_CODES.contains(&c)))
    {
        labels.push("RetryableWriteError".to_string());
    } else if let Some(code) = code {
        if ctx.change_stream && wc_code.is_none() && RESUMABLE_CHANGE_STREAM_CODES.contains(&code) {
            labels.push("ResumableChangeStreamError".to_string());
        } else if NON_RESUMABLE_CHANGE_STREAM_CODES.contains(&code) {
            labels.push("NonResumableChangeStreamError".to_string());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs() -> LabelContext {
        LabelContext {
            change_stream: true,
            ..LabelContext::default()
        }
    }

    #[test]
    fn transaction_and_retryable_write_labels() {
        let txn = LabelContext {
            in_transaction: true,
            ..LabelContext::default()
        };
        let commit = LabelContext {
            commit_or_abort: true,
            ..txn
        };
        let retry = LabelContext {
            retryable_write: true,
            ..LabelContext::default()
        };
        let l = |code, wc, ctx: &LabelContext| server_labels(code, wc, ctx);
        assert_eq!(l(Some(251), None, &txn), ["TransientTransactionError"]);
        assert_eq!(l(Some(24), None, &txn), ["TransientTransactionError"]);
        assert_eq!(l(Some(10107), None, &txn), ["TransientTransactionError"]);
        // On commit, a retriable error means "unknown result": retry the commit, not the txn.
        assert_eq!(l(Some(10107), None, &commit), ["RetryableWriteError"]);
        assert_eq!(l(Some(251), Some(64), &commit), Vec::<String>::new());
        assert_eq!(l(Some(91), None, &retry), ["RetryableWriteError"]);
        assert_eq!(l(None, Some(91), &retry), ["RetryableWriteError"]);
        assert_eq!(l(Some(11000), None, &retry), Vec::<String>::new());
        // Outside a transaction a WriteConflict is not transient.
        assert_eq!(
            l(Some(112), None, &LabelContext::default()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn server_adds_resumable_label_only_for_change_streams() {
        let e = CommandError::new(10107, "NotWritablePrimary", "x");
        assert_eq!(
            e.to_reply(&cs()).get_array("errorLabels").unwrap()[0]
                .as_str()
                .unwrap(),
            "ResumableChangeStreamError"
        );
        assert!(e
            .to_reply(&LabelContext::default())
            .get("errorLabels")
            .is_none());
    }

    #[test]
    fn fail_point_labels_override() {
        let e = CommandError::new(10107, "NotWritablePrimary", "x").with_labels(vec![]);
        assert!(e.to_reply(&cs()).get("errorLabels").is_none());
    }

    #[test]
    fn history_lost_is_non_resumable() {
        let e = CommandError::new(286, "ChangeStreamHistoryLost", "x");
        let reply = e.to_reply(&cs());
        let labels = reply.get_array("errorLabels").unwrap();
        assert_eq!(labels[0].as_str(), Some("NonResumableChangeStreamError"));
    }
}
