//! `VerifyError`: why a verify could not give a verdict. A verify that ran and found
//! differences is not an error: that is `VerifyReport::equal == false`.

use crate::sink::SinkError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The options or the config cannot be used (exit 2: nothing was read).
    #[error("{0}")]
    Config(String),
    /// Postgres could not be reached, or a query failed.
    #[error(transparent)]
    Postgres(#[from] SinkError),
    /// A MongoDB command failed.
    #[error("MongoDB failed while {doing}: {source}")]
    Mongo {
        doing: String,
        #[source]
        source: mongodb::error::Error,
    },
    /// A collection could not be read (after the reader's retries).
    #[error("reading {namespace} failed: {source}")]
    Read {
        namespace: String,
        #[source]
        source: SourceError,
    },
    /// A mapped table is not there: nothing has created it yet.
    #[error("table {table} does not exist in Postgres; run `tributary schema --apply` or `tributary sync` first")]
    MissingTable { table: String },
    /// A row Postgres returned cannot be read back as a mapped value.
    #[error("cannot read a row of {table}: {reason}")]
    Decode { table: String, reason: String },
    /// A verify task panicked or was cancelled.
    #[error("a verify task of {namespace} stopped unexpectedly: {reason}")]
    Task { namespace: String, reason: String },
}

impl VerifyError {
    /// Whether this is a usage or config problem (SPEC exit 2) rather than a runtime one (3).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            VerifyError::Config(_) | VerifyError::Postgres(SinkError::InvalidUri { .. })
        )
    }

    pub(super) fn mongo(doing: impl Into<String>) -> impl FnOnce(mongodb::error::Error) -> Self {
        let doing = doing.into();
        move |source| VerifyError::Mongo { doing, source }
    }

    pub(super) fn postgres(doing: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let doing = doing.into();
        move |source| VerifyError::Postgres(SinkError::postgres(doing, source))
    }
}
