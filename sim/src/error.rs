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
}

impl CommandError {
    pub fn new(code: i32, code_name: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            code_name: code_name.to_string(),
            message: message.into(),
            labels: None,
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

    pub fn cursor_not_found(id: i64) -> Self {
        Self::new(43, "CursorNotFound", format!("cursor id {id} not found"))
    }

    /// The reply body, labels resolved for `command` (`is_change_stream` says
    /// whether the command is an aggregate/getMore of a change stream).
    pub fn to_reply(&self, is_change_stream: bool) -> Document {
        let mut reply = doc! {
            "ok": 0.0,
            "errmsg": self.message.clone(),
            "code": self.code,
            "codeName": self.code_name.clone(),
        };
        let labels = match &self.labels {
            Some(labels) => labels.clone(),
            None => server_labels(self.code, is_change_stream),
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

/// Codes in the RetriableError / NetworkError / NeedRetargettingError
/// categories, plus RetryChangeStream and FailedToSatisfyReadPreference:
/// mongod's `isResumableChangeStreamError`.
const RESUMABLE_CHANGE_STREAM_CODES: &[i32] = &[
    6, 7, 89, 91, 133, 134, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436,
];

/// ChangeStreamFatalError and ChangeStreamHistoryLost.
const NON_RESUMABLE_CHANGE_STREAM_CODES: &[i32] = &[280, 286];

fn server_labels(code: i32, is_change_stream: bool) -> Vec<String> {
    let mut labels = Vec::new();
    if is_change_stream && RESUMABLE_CHANGE_STREAM_CODES.contains(&code) {
        labels.push("ResumableChangeStreamError".to_string());
    }
    if NON_RESUMABLE_CHANGE_STREAM_CODES.contains(&code) {
        labels.push("NonResumableChangeStreamError".to_string());
    }
    if code == 251 || code == 112 {
        labels.push("TransientTransactionError".to_string());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_adds_resumable_label_only_for_change_streams() {
        let e = CommandError::new(10107, "NotWritablePrimary", "x");
        assert_eq!(
            e.to_reply(true).get_array("errorLabels").unwrap()[0]
                .as_str()
                .unwrap(),
            "ResumableChangeStreamError"
        );
        assert!(e.to_reply(false).get("errorLabels").is_none());
    }

    #[test]
    fn fail_point_labels_override() {
        let e = CommandError::new(10107, "NotWritablePrimary", "x").with_labels(vec![]);
        assert!(e.to_reply(true).get("errorLabels").is_none());
    }

    #[test]
    fn history_lost_is_non_resumable() {
        let e = CommandError::new(286, "ChangeStreamHistoryLost", "x");
        let reply = e.to_reply(true);
        let labels = reply.get_array("errorLabels").unwrap();
        assert_eq!(labels[0].as_str(), Some("NonResumableChangeStreamError"));
    }
}
