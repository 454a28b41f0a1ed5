//! Fail points set by `configureFailPoint`: `failCommand` (errors, dropped
//! connections, blocking, `writeConcernError`), `failGetMoreAfterCursorCheckout` and
//! `onPrimaryTransactionalWrite` (retryable writes: drop the connection after a statement
//! commits, or fail it before) and `maxTimeAlwaysTimeOut`, with the server's `mode` semantics (`alwaysOn`, `off`,
//! `{times: n}`, `{skip: n}`). Any other name is refused, as mongod refuses a fail point it
//! does not have.

use bson::{Bson, Document};

use crate::error::CommandError;

#[derive(Debug, Clone)]
enum Mode {
    AlwaysOn,
    Times(i64),
    Skip(i64),
}

#[derive(Debug, Clone)]
struct FailPoint {
    mode: Mode,
    data: Document,
}

impl FailPoint {
    /// Consumes one activation if the fail point fires now.
    fn fire(&mut self) -> bool {
        match &mut self.mode {
            Mode::AlwaysOn => true,
            Mode::Times(n) if *n > 0 => {
                *n -= 1;
                true
            }
            Mode::Times(_) => false,
            Mode::Skip(n) if *n > 0 => {
                *n -= 1;
                false
            }
            Mode::Skip(_) => true,
        }
    }

    fn exhausted(&self) -> bool {
        matches!(self.mode, Mode::Times(0))
    }
}

#[derive(Debug, Default)]
pub struct FailPoints {
    fail_command: Option<FailPoint>,
    fail_get_more: Option<FailPoint>,
    /// Fires for each statement of a retryable write that is about to commit.
    transactional_write: Option<FailPoint>,
    /// Every operation with a time limit exceeds it (mongod's `maxTimeAlwaysTimeOut`).
    max_time_always: Option<FailPoint>,
}

/// What a fired fail point does to the command.
#[derive(Debug, Default)]
pub struct Injection {
    pub close_connection: bool,
    pub block_ms: Option<u64>,
    pub error: Option<CommandError>,
    /// `failCommand`'s `writeConcernError` (the command still runs), with the fail point's
    /// `errorLabels` when it names them.
    pub write_concern_error: Option<(Document, Option<Vec<String>>)>,
}

/// What `onPrimaryTransactionalWrite` does to one retryable-write statement.
#[derive(Debug, Default, Clone, Copy)]
pub struct TransactionalWrite {
    /// Drop the connection (after the statement committed, unless `fail_code`).
    pub close_connection: bool,
    /// Fail the statement before it commits, with this code.
    pub fail_code: Option<i32>,
}

fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

fn parse_mode(mode: &Bson) -> Result<Option<Mode>, CommandError> {
    match mode {
        Bson::String(s) if s == "alwaysOn" => Ok(Some(Mode::AlwaysOn)),
        Bson::String(s) if s == "off" => Ok(None),
        Bson::Document(d) => {
            if let Some(n) = int(d.get("times")) {
                Ok(Some(Mode::Times(n)))
            } else if let Some(n) = int(d.get("skip")) {
                Ok(Some(Mode::Skip(n)))
            } else {
                Err(CommandError::bad_value(format!(
                    "unsupported fail point mode {d}"
                )))
            }
        }
        other => Err(CommandError::bad_value(format!(
            "unsupported fail point mode {other}"
        ))),
    }
}

/// The server's name for an error code (error_codes.yml), for the codes drivers' tests and
/// fail points use; others are reported as `UnknownError`, as the code says nothing more.
pub fn error_name(code: i32) -> &'static str {
    match code {
        1 => "InternalError",
        2 => "BadValue",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        8 => "UnknownError",
        9 => "FailedToParse",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        18 => "AuthenticationFailed",
        20 => "IllegalOperation",
        24 => "LockTimeout",
        26 => "NamespaceNotFound",
        43 => "CursorNotFound",
        48 => "NamespaceExists",
        50 => "MaxTimeMSExpired",
        59 => "CommandNotFound",
        64 => "WriteConcernTimeout",
        72 => "InvalidOptions",
        73 => "InvalidNamespace",
        79 => "UnknownReplWriteConcern",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        100 => "UnsatisfiableWriteConcern",
        112 => "WriteConflict",
        121 => "DocumentValidationFailure",
        133 => "FailedToSatisfyReadPreference",
        134 => "ReadConcernMajorityNotAvailableYet",
        136 => "CappedPositionLost",
        150 => "StaleEpoch",
        175 => "QueryPlanKilled",
        189 => "PrimarySteppedDown",
        216 => "ElectionInProgress",
        225 => "TransactionTooOld",
        234 => "RetryChangeStream",
        237 => "CursorKilled",
        239 => "SnapshotTooOld",
        244 => "NOT_YET_AVAILABLE_TransactionAborted",
        246 => "SnapshotUnavailable",
        249 => "StaleDbVersion",
        250 => "StaleChunkHistory",
        251 => "NoSuchTransaction",
        256 => "TransactionCommitted",
        257 => "TransactionTooLarge",
        260 => "InvalidResumeToken",
        262 => "ExceededTimeLimit",
        263 => "OperationNotSupportedInTransaction",
        267 => "PreparedTransactionInProgress",
        272 => "MigrationConflict",
        279 => "ClientDisconnect",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        290 => "TransactionExceededLifetimeLimitSeconds",
        343 => "ShardCannotRefreshDueToLocksHeld",
        358 => "InternalTransactionNotSupported",
        371 => "UserWritesBlocked",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        10334 => "BSONObjectTooLarge",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11601 => "Interrupted",
        11602 => "InterruptedDueToReplStateChange",
        13388 => "StaleConfig",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        50915 => "BackupCursorOpenConflictWithCheckpoint",
        _ => "UnknownError",
    }
}

fn labels_of(data: &Document) -> Option<Vec<String>> {
    data.get_array("errorLabels").ok().map(|a| {
        a.iter()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect()
    })
}

/// `failCommand`'s (and `failGetMoreAfterCursorCheckout`'s) effect. The error's labels are
/// the fail point's `errorLabels` when it names them (mongod's `errorLabelsOverride`, also
/// an empty list), else the server computes them as for a real error.
fn injection(data: &Document) -> Injection {
    let mut inj = Injection {
        close_connection: data.get_bool("closeConnection").unwrap_or(false),
        ..Injection::default()
    };
    if data.get_bool("blockConnection").unwrap_or(false) {
        inj.block_ms = Some(int(data.get("blockTimeMS")).unwrap_or(0).max(0) as u64);
    }
    if let Some(code) = int(data.get("errorCode")) {
        let code = code as i32;
        let mut e = CommandError::new(
            code,
            error_name(code),
            "Failing command via 'failCommand' failpoint",
        );
        if let Some(labels) = labels_of(data) {
            e = e.with_labels(labels);
        }
        inj.error = Some(e);
    } else if let Ok(wce) = data.get_document("writeConcernError") {
        // Reported verbatim, as mongod appends the fail point's document.
        inj.write_concern_error = Some((wce.clone(), labels_of(data)));
    }
    inj
}

impl FailPoints {
    /// `configureFailPoint`: returns the reply's `count` (times it was set).
    pub fn configure(&mut self, cmd: &Document) -> Result<(), CommandError> {
        let name = cmd.get_str("configureFailPoint").unwrap_or_default();
        let mode = cmd
            .get("mode")
            .ok_or_else(|| CommandError::bad_value("missing mode"))?;
        let mode = parse_mode(mode)?;
        let data = cmd.get_document("data").cloned().unwrap_or_default();
        let fp = mode.map(|mode| FailPoint { mode, data });
        match name {
            "failCommand" => self.fail_command = fp,
            "failGetMoreAfterCursorCheckout" => self.fail_get_more = fp,
            "onPrimaryTransactionalWrite" => self.transactional_write = fp,
            "maxTimeAlwaysTimeOut" => self.max_time_always = fp,
            other => {
                return Err(CommandError::bad_value(format!(
                    "unknown fail point: {other}"
                )))
            }
        }
        Ok(())
    }

    /// Checks `failCommand` for a command about to run.
    /// `namespace` is the command's target (`db.collection`), which `data.namespace`, when
    /// given, must equal, as on the server.
    pub fn on_command(
        &mut self,
        command: &str,
        app_name: Option<&str>,
        namespace: &str,
    ) -> Option<Injection> {
        let fp = self.fail_command.as_mut()?;
        let listed = fp
            .data
            .get_array("failCommands")
            .map(|a| a.iter().any(|c| c.as_str() == Some(command)))
            .unwrap_or(false);
        if !listed {
            return None;
        }
        if let Ok(app) = fp.data.get_str("appName") {
            if app_name != Some(app) {
                return None;
            }
        }
        if fp.data.get_str("namespace").is_ok_and(|ns| ns != namespace) {
            return None;
        }
        if !fp.fire() {
            return None;
        }
        let inj = injection(&fp.data);
        if fp.exhausted() {
            self.fail_command = None;
        }
        Some(inj)
    }

    /// Checks `maxTimeAlwaysTimeOut` for a command that carries a `maxTimeMS`: the error
    /// mongod gives when the operation's deadline passes (50 MaxTimeMSExpired).
    pub fn on_time_limited(&mut self) -> Option<CommandError> {
        let fp = self.max_time_always.as_mut()?;
        if !fp.fire() {
            return None;
        }
        if fp.exhausted() {
            self.max_time_always = None;
        }
        Some(CommandError::new(
            50,
            "MaxTimeMSExpired",
            "operation exceeded time limit",
        ))
    }

    /// Checks `onPrimaryTransactionalWrite` for a retryable-write statement about to commit
    /// (an insert command's documents commit together, as on mongod).
    pub fn on_transactional_write(&mut self) -> Option<TransactionalWrite> {
        let fp = self.transactional_write.as_mut()?;
        if !fp.fire() {
            return None;
        }
        let out = TransactionalWrite {
            close_connection: fp.data.get_bool("closeConnection").unwrap_or(true),
            fail_code: int(fp.data.get("failBeforeCommitExceptionCode")).map(|c| c as i32),
        };
        if fp.exhausted() {
            self.transactional_write = None;
        }
        Some(out)
    }

    /// Checks `failGetMoreAfterCursorCheckout`; its errors get the server's
    /// normal labels.
    pub fn on_get_more(&mut self) -> Option<Injection> {
        let fp = self.fail_get_more.as_mut()?;
        if !fp.fire() {
            return None;
        }
        let inj = injection(&fp.data);
        if fp.exhausted() {
            self.fail_get_more = None;
        }
        Some(inj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn times_mode_fires_n_times_for_listed_commands_only() {
        let mut fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["getMore"], "errorCode": 6},
        })
        .unwrap();
        assert!(fps.on_command("find", None, "db.c").is_none());
        let inj = fps.on_command("getMore", None, "db.c").unwrap();
        let err = inj.error.unwrap();
        assert_eq!(err.code, 6);
        // No `errorLabels` in the fail point: the server's own rule labels it.
        assert_eq!(err.labels, None);
        assert_eq!(err.code_name, "HostUnreachable");
        assert!(fps.on_command("getMore", None, "db.c").is_some());
        assert!(fps.on_command("getMore", None, "db.c").is_none());
    }

    #[test]
    fn namespace_restricts() {
        let mut fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["find"], "errorCode": 2, "namespace": "shop.orders"},
        })
        .unwrap();
        assert!(fps.on_command("find", None, "local.oplog.rs").is_none());
        assert_eq!(
            fps.on_command("find", None, "shop.orders")
                .and_then(|i| i.error)
                .map(|e| e.code),
            Some(2)
        );
        assert!(fps.on_command("find", None, "shop.orders").is_none());
    }

    #[test]
    fn app_name_restricts_and_skip_mode_skips() {
        let mut fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"skip": 1},
            "data": {"failCommands": ["insert"], "closeConnection": true, "appName": "x"},
        })
        .unwrap();
        assert!(fps.on_command("insert", Some("y"), "db.c").is_none());
        assert!(fps.on_command("insert", Some("x"), "db.c").is_none());
        assert!(
            fps.on_command("insert", Some("x"), "db.c")
                .unwrap()
                .close_connection
        );
    }
}
