//! `SinkError`: everything that can go wrong while writing to Postgres, and the one place that
//! decides whether retrying can help (`is_retryable`).

use std::error::Error as _;

use tokio_postgres::error::SqlState;

/// A failure of the sink. Every message names what was being done and where (table, schema or
/// server), so an operator can act on it without reading code.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `postgres.uri` could not be parsed. Never retryable.
    #[error("postgres.uri is not a valid connection string ({reason}); fix it in the config file")]
    InvalidUri { reason: String },

    /// The server could not be reached or refused the login.
    #[error(
        "cannot connect to Postgres at {target}: {detail}; check postgres.uri and that the server is up"
    )]
    Connect {
        target: String,
        detail: String,
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// A statement failed; `doing` says which step and which table.
    #[error("Postgres failed while {doing}: {detail}")]
    Postgres {
        doing: String,
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// Waiting for a pooled connection failed (timeout or closed pool).
    #[error("no Postgres connection available from the pool: {detail}")]
    Pool { detail: String, retryable: bool },

    /// A value does not fit its column (wrong variant, out of range): the batch is refused.
    #[error("cannot write a value to column {column} of {table}: {reason}")]
    Value {
        table: String,
        column: String,
        reason: String,
    },

    /// Schemas, tables, columns or indexes the mappings need do not exist, and the role may not
    /// create them (SQLSTATE 42501). Never retryable: someone has to create or grant them.
    #[error(
        "Postgres lacks what the mappings need ({missing}), and role {role:?} may not create it \
         ({detail}). Create it by running `tributary schema --apply` with this config as a role \
         that may (the owner of the schema or tables), or let role {role:?} create it: {grants}"
    )]
    MissingObjects {
        missing: String,
        role: String,
        detail: String,
        grants: String,
    },

    /// A batch does not fit the mapping it claims to follow: a programming error upstream.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),

    /// The stream's advisory lock (`crate::lease`) was lost: another process may be writing,
    /// so this one must not commit. Not retryable here: `sync` stands by and takes it again.
    #[error("the lock of stream {stream:?} was lost (its lock connection to Postgres ended), so this batch was not committed")]
    LeaseLost { stream: String },

    /// The stored checkpoint is not the one this sink committed last: Postgres took back
    /// recent commits (a crash while batches commit with `synchronous_commit = off`), so the
    /// stream must resume from the stored checkpoint rather than carry on from memory. Not
    /// retryable here: `sync` re-reads the checkpoint and replays from it.
    #[error("the stored checkpoint of stream {stream:?} is older than the last one committed (Postgres lost its most recent commits, e.g. in a crash); resuming from the stored checkpoint")]
    CheckpointRewound { stream: String },
}

/// `tributary_errors_total{kind}` of a checkpoint found older than the last commit.
pub const CHECKPOINT_REWOUND_KIND: &str = "checkpoint_rewound";

/// `tributary_errors_total{kind}` of a lost stream lock: a refused commit, or the lock
/// connection found dead by its keep-alive.
pub const LEASE_LOST_KIND: &str = "lease_lost";

impl SinkError {
    /// Wraps a driver error with the step that was running, e.g. `"upserting into \"public\".\"orders\""`.
    pub fn postgres(doing: impl Into<String>, source: tokio_postgres::Error) -> Self {
        SinkError::Postgres {
            doing: doing.into(),
            detail: describe(&source),
            source,
        }
    }

    /// True when the same batch may succeed if applied again later: the connection was lost,
    /// the server is shutting down or starting, or the transaction lost a serialization or
    /// deadlock race. Constraint, type and data errors are fatal: replaying cannot fix them.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::InvalidUri { .. }
            | SinkError::MissingObjects { .. }
            | SinkError::InvalidBatch(_)
            | SinkError::Value { .. }
            | SinkError::LeaseLost { .. }
            | SinkError::CheckpointRewound { .. } => false,
            SinkError::Connect { source, .. } => match source {
                // A server that answers but refuses the login (bad password, unknown database)
                // will refuse it again, and so will one whose certificate was refused.
                Some(e) => {
                    !crate::pg::is_tls_rejection(e) && e.code().is_none_or(is_transient_code)
                }
                None => true,
            },
            SinkError::Postgres { source, .. } => is_transient(source),
            SinkError::Pool { retryable, .. } => *retryable,
        }
    }

    /// True when Postgres refused a value (SQLSTATE class 22, "data exception", or a value
    /// that did not fit its column's wire type): the fault lies with one document's content,
    /// so the batch is narrowed to the documents that cause it (`pipeline::narrow`). So is a
    /// NULL in a `NOT NULL` column (23502) and a row no partition takes or a check refuses
    /// (23514): with a pre-created table (a partition key in the primary key, docs/scaling.md)
    /// a document missing that field, or outside every partition, is refused alone. A unique
    /// violation is not: it means a second writer, never one document's content.
    pub fn is_data_error(&self) -> bool {
        matches!(self, SinkError::Value { .. })
            || self
                .code()
                .is_some_and(|c| c.starts_with("22") || c == "23502" || c == "23514")
    }

    /// The short class of this error for `tributary_errors_total{kind}` (see
    /// `docs/operations.md`): `postgres_connection`, `postgres_shutdown`,
    /// `postgres_serialization`, `postgres_deadlock`, `postgres_busy`, `postgres_pool`,
    /// `postgres_value`, `postgres_config`, `lease_lost`, `checkpoint_rewound`, or
    /// `postgres_fatal`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::InvalidUri { .. } => "postgres_config",
            SinkError::InvalidBatch(_) | SinkError::Value { .. } => "postgres_value",
            _ if self.is_data_error() => "postgres_value",
            SinkError::LeaseLost { .. } => LEASE_LOST_KIND,
            SinkError::CheckpointRewound { .. } => CHECKPOINT_REWOUND_KIND,
            SinkError::Pool { .. } => "postgres_pool",
            SinkError::MissingObjects { .. } => "postgres_fatal",
            SinkError::Connect { .. } | SinkError::Postgres { .. } => match self.code() {
                Some(c) if c.starts_with("08") => "postgres_connection",
                Some("57P01" | "57P02" | "57P03") => "postgres_shutdown",
                Some("40001") => "postgres_serialization",
                Some("40P01") => "postgres_deadlock",
                Some("53300" | "55P03") => "postgres_busy",
                Some(_) => "postgres_fatal",
                None if self.is_retryable() => "postgres_connection",
                None => "postgres_fatal",
            },
        }
    }

    /// The SQLSTATE code, when the server reported one.
    pub fn code(&self) -> Option<&str> {
        match self {
            SinkError::Postgres { source, .. } => source.code().map(SqlState::code),
            SinkError::Connect {
                source: Some(source),
                ..
            } => source.code().map(SqlState::code),
            _ => None,
        }
    }
}

/// Whether a driver error is a lost connection or a transient server condition.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    // A refused certificate arrives as an I/O error, but trying again cannot fix it.
    if crate::pg::is_tls_rejection(e) {
        return false;
    }
    if let Some(code) = e.code() {
        return is_transient_code(code);
    }
    if e.is_closed() {
        return true;
    }
    // Without a SQLSTATE the driver failed below SQL: I/O, connect or timeout. Encoding
    // failures (a value that does not fit its column) also land here but carry no io::Error.
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    let text = e.to_string();
    text.starts_with("error connecting") || text.starts_with("timeout")
}

fn is_transient_code(code: &SqlState) -> bool {
    let c = code.code();
    // Class 08: connection exceptions. 57P01..57P03: admin/crash shutdown, cannot connect now.
    // 40001/40P01: serialization failure and deadlock; 53300: too many connections.
    c.starts_with("08")
        || matches!(
            c,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300" | "55P03"
        )
}

/// The useful part of a driver error: the server's message with code, detail and hint, or the
/// underlying I/O cause (the driver's own `Display` omits both).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(tls) = crate::pg::tls_problem(e) {
        return tls;
    }
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str("; detail: ");
            s.push_str(d);
        }
        if let Some(h) = db.hint() {
            s.push_str("; hint: ");
            s.push_str(h);
        }
        return s;
    }
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
