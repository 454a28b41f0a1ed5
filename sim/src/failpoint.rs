//! Fail points set by `configureFailPoint`: `failCommand` (errors, dropped
//! connections, blocking) and `failGetMoreAfterCursorCheckout`, with the
//! server's `mode` semantics (`alwaysOn`, `off`, `{times: n}`, `{skip: n}`).

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
}

/// What a fired fail point does to the command.
#[derive(Debug, Default)]
pub struct Injection {
    pub close_connection: bool,
    pub block_ms: Option<u64>,
    pub error: Option<CommandError>,
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

fn error_name(code: i32) -> &'static str {
    match code {
        6 => "HostUnreachable",
        7 => "HostNotFound",
        43 => "CursorNotFound",
        50 => "MaxTimeMSExpired",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        112 => "WriteConflict",
        133 => "FailedToSatisfyReadPreference",
        189 => "PrimarySteppedDown",
        216 => "ElectionInProgress",
        234 => "RetryChangeStream",
        251 => "NoSuchTransaction",
        262 => "ExceededTimeLimit",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        11600 => "InterruptedAtShutdown",
        11602 => "InterruptedDueToReplStateChange",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        _ => "UnknownError",
    }
}

fn injection(data: &Document, labels_override: bool) -> Injection {
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
        if labels_override {
            let labels = data
                .get_array("errorLabels")
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            e = e.with_labels(labels);
        } else if let Ok(a) = data.get_array("errorLabels") {
            e = e.with_labels(
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect(),
            );
        }
        inj.error = Some(e);
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
        let inj = injection(&fp.data, true);
        if fp.exhausted() {
            self.fail_command = None;
        }
        Some(inj)
    }

    /// Checks `failGetMoreAfterCursorCheckout`; its errors get the server's
    /// normal labels.
    pub fn on_get_more(&mut self) -> Option<Injection> {
        let fp = self.fail_get_more.as_mut()?;
        if !fp.fire() {
            return None;
        }
        let inj = injection(&fp.data, false);
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
        assert_eq!(err.labels, Some(vec![]));
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
