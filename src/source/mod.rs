//! Sources: where change events come from. The `Source` trait is the seam between MongoDB and
//! the pipeline; `change_stream` (default) and `oplog` are the two real implementations, and
//! `snapshot` reads whole collections for the full sync.

pub mod change_stream;
pub mod health;
pub mod large_events;
pub mod lookup;
pub mod oplog;
pub mod paths;
pub mod snapshot;
pub mod split_points;

use std::future::Future;

use crate::event::{ChangeEvent, Namespace};
use crate::mapping::model::MappingSet;
pub use health::SourceHealth;

/// A stream of change events.
///
/// Contract:
/// - `next_batch` returns at least one event, in source order, each carrying the position
///   *after* it; resuming at an event's position replays nothing before it.
/// - The events of one MongoDB transaction (same `TxnId` and cluster time) are never split
///   across two calls, so the pipeline can keep them in one Postgres transaction.
/// - When nothing happens for about a second, it returns a single `Op::Noop` event whose
///   position is the newest the server reported (post-batch resume token, or the last oplog
///   entry read), so checkpoints and lag stay fresh on idle streams.
/// - Events for namespaces nobody mapped may be filtered out or passed on as `Noop`s; the
///   position advances either way.
/// - Transient errors (network, step-down) are retried inside the source from the last
///   position it returned; an error returned here is final for this source.
/// - The idle heartbeat is the server's own word (an empty awaited batch: a change stream's
///   post-batch resume token, the oplog cursor's empty `getMore`), never a local timer, so a
///   heartbeat means "nothing newer exists", and a server that does not answer produces none.
/// - `health` records every server answer and failed request (`SourceHealth`), including
///   those inside retries that `next_batch` does not return from: lag rises while MongoDB is
///   silent.
pub trait Source: Send {
    fn next_batch(&mut self) -> impl Future<Output = Result<Vec<ChangeEvent>, SourceError>> + Send;

    /// The handle this source records what it hears from MongoDB in; `None` for a source
    /// that does not talk to a server (test sources).
    fn health(&self) -> Option<SourceHealth> {
        None
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The resume point has fallen off the oplog (server code 286 or 136): the changes since
    /// the checkpoint can no longer be read.
    #[error("the resume point is no longer in the oplog (code {code}): {message}; run a full sync (or set sync.resync_on_history_lost = true)")]
    HistoryLost { code: i32, message: String },
    /// The server refused a read (the stream, a copy, a login) for a reason retrying cannot
    /// fix.
    #[error("MongoDB refused the read: {0}")]
    Fatal(String),
    /// MongoDB stayed unreachable through every retry.
    #[error("MongoDB stayed unreachable after {attempts} attempts: {message}")]
    Unavailable { attempts: usize, message: String },
}

/// How the pipeline should treat a MongoDB driver error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    HistoryLost,
    Transient,
    Fatal,
}

/// Server codes that mean "retry later": network, step-down and shutdown states (SDAM's
/// state-change codes plus the resumable change-stream codes).
/// 50 (MaxTimeMSExpired) is here too: a getMore or aggregate that ran out of time is retried
/// by reopening from the last position, which is always safe for a tailing reader.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 43, 50, 89, 91, 133, 134, 189, 234, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Codes of a primary stepping down or shutting down (SDAM's "not writable primary" and
/// "node is recovering" families).
const STEP_DOWN_CODES: &[i32] = &[91, 189, 10107, 11600, 11602, 13435, 13436];

/// The short class of a driver error for `tributary_errors_total{kind}`: `mongo_network`,
/// `mongo_step_down`, `mongo_timeout`, `mongo_resumable` (other retryable server errors),
/// `history_lost`, or `mongo_fatal`. Agrees with `classify`.
pub fn error_kind(err: &mongodb::error::Error) -> &'static str {
    use mongodb::error::ErrorKind;
    match (classify(err), err.kind.as_ref()) {
        (ErrorClass::HistoryLost, _) => "history_lost",
        (ErrorClass::Fatal, _) => "mongo_fatal",
        (ErrorClass::Transient, ErrorKind::Command(c)) if STEP_DOWN_CODES.contains(&c.code) => {
            "mongo_step_down"
        }
        (ErrorClass::Transient, ErrorKind::Command(c)) if c.code == 50 => "mongo_timeout",
        (ErrorClass::Transient, ErrorKind::Command(_)) => "mongo_resumable",
        (ErrorClass::Transient, _) => "mongo_network",
    }
}

impl SourceError {
    /// This error with `what` the failed read was for (`"the full-sync read of shop.orders"`)
    /// in front of its message, so a refusal names the namespace it concerns.
    pub fn reading(self, what: impl std::fmt::Display) -> SourceError {
        match self {
            SourceError::Fatal(message) => SourceError::Fatal(format!("{what}: {message}")),
            SourceError::Unavailable { attempts, message } => SourceError::Unavailable {
                attempts,
                message: format!("{what}: {message}"),
            },
            history_lost @ SourceError::HistoryLost { .. } => history_lost,
        }
    }
}
/// The one place that decides retry vs fail for MongoDB errors.
pub fn classify(err: &mongodb::error::Error) -> ErrorClass {
    use mongodb::error::ErrorKind;
    match err.kind.as_ref() {
        ErrorKind::Command(c) if c.code == 286 || c.code == 136 => ErrorClass::HistoryLost,
        ErrorKind::Command(c) if TRANSIENT_CODES.contains(&c.code) => ErrorClass::Transient,
        ErrorKind::Command(_) => {
            if err.contains_label("ResumableChangeStreamError")
                || err.contains_label("RetryableWriteError")
                || err.contains_label("TransientTransactionError")
            {
                ErrorClass::Transient
            } else {
                ErrorClass::Fatal
            }
        }
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    }
}

/// What to check after a failed login, from the driver's message (which names the mechanism).
pub fn authentication_hint(message: &str) -> &'static str {
    if message.contains("MONGODB-X509") {
        // No user name or password: the server logs in the certificate's subject, which must
        // be a user in $external (drivers do not pass the server's reason on).
        "check that the subject of the client certificate (tlsCertificateKeyFile), in RFC 2253 \
         form, is a user of the $external database and that tlsCAFile trusts the server"
    } else {
        "check the user name, the password and the authSource and authMechanism options of \
         mongo.uri"
    }
}

/// Turns a final driver error into a `SourceError`.
pub fn source_error(err: &mongodb::error::Error, attempts: usize) -> SourceError {
    use mongodb::error::ErrorKind;
    match (classify(err), err.kind.as_ref()) {
        (ErrorClass::HistoryLost, ErrorKind::Command(c)) => SourceError::HistoryLost {
            code: c.code,
            message: c.message.clone(),
        },
        (ErrorClass::Transient, _) => SourceError::Unavailable {
            attempts,
            message: err.to_string(),
        },
        (_, ErrorKind::Authentication { message, .. }) => SourceError::Fatal(format!(
            "authentication failed ({message}); {}",
            authentication_hint(message)
        )),
        // 13 Unauthorized: the server's message names the database and the command; the
        // operator needs to know which privileges to grant.
        (_, ErrorKind::Command(c)) if c.code == 13 => SourceError::Fatal(format!(
            "{} (error 13 Unauthorized); the MongoDB user needs read access \
             to every mapped namespace: the built-in readAnyDatabase role (a deployment-wide \
             change stream needs it, or a custom role with find and changeStream on all \
             databases), plus read on the local database for mongo.source = \"oplog\" \
             (docs/privileges.md)",
            c.message
        )),
        _ => SourceError::Fatal(err.to_string()),
    }
}

/// The namespaces a source must deliver: every mapped collection.
pub fn mapped_namespaces(mappings: &MappingSet) -> Vec<Namespace> {
    mappings
        .collections
        .iter()
        .map(|c| Namespace::new(&c.database, &c.collection))
        .collect()
}

/// Backoff for reconnecting to MongoDB: 100 ms doubling to 10 s, with jitter, for about
/// three minutes in all before the source gives up ("a connection that stayed down").
pub fn reconnect_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(10))
        .with_max_times(24)
        .with_jitter()
}

/// Retry bookkeeping shared by the sources: counts attempts and hands out capped, jittered
/// delays (`reconnect_backoff`) for transient errors; anything else, or a backoff that ran out,
/// ends the read with the error to report.
#[derive(Default)]
pub struct Retry {
    attempts: usize,
    backoff: Option<backon::ExponentialBackoff>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Retry {
    /// A `Retry` that counts every error it is given in `tributary_errors_total{kind}`,
    /// except the kinds `count_driver_failures` already counted (network, step-down).
    pub fn counting(metrics: Option<std::sync::Arc<crate::metrics::Metrics>>) -> Self {
        Retry {
            metrics,
            ..Retry::default()
        }
    }

    /// The wait before the next attempt after `error`, or the `SourceError` to give up with.
    pub fn after(
        &mut self,
        error: &mongodb::error::Error,
    ) -> Result<std::time::Duration, SourceError> {
        self.attempts += 1;
        if let Some(m) = &self.metrics {
            let kind = error_kind(error);
            if !matches!(kind, "mongo_network" | "mongo_step_down") {
                m.errors_total.with_label_values(&[kind]).inc();
            }
        }
        if classify(error) != ErrorClass::Transient {
            return Err(source_error(error, self.attempts));
        }
        self.backoff
            .get_or_insert_with(|| backon::BackoffBuilder::build(reconnect_backoff()))
            .next()
            .ok_or_else(|| source_error(error, self.attempts))
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> usize {
        self.attempts
    }
}

/// A driver event handler that counts, in `tributary_errors_total{kind}`, the MongoDB
/// failures the driver recovers from on its own (a change stream resumes after a network
/// error or a step-down without telling the source): each one marks the server unknown with
/// the error that did it.
///
/// Not a command event handler: with one installed the driver copies and parses every reply
/// into a `Document` for it, which was a fifth of a streaming `sync`'s CPU. Server errors the
/// driver resumes past without marking the server unknown (a `ResumableChangeStreamError`
/// label, code 50 on a change stream's `getMore`) are therefore not counted; errors the
/// streaming sources retry themselves are (`Retry::counting`).
pub fn count_driver_failures(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> mongodb::event::EventHandler<mongodb::event::sdam::SdamEvent> {
    mongodb::event::EventHandler::callback(move |event| {
        if let mongodb::event::sdam::SdamEvent::ServerDescriptionChanged(changed) = event {
            let before = changed.previous_description.error().map(|e| e.to_string());
            if let Some(error) = changed.new_description.error() {
                if before.as_deref() != Some(error.to_string().as_str()) {
                    metrics
                        .errors_total
                        .with_label_values(&[error_kind(error)])
                        .inc();
                }
            }
        }
    })
}
