//! `tributary check`'s pre-flight: what a stream needs from each end, found before it runs.
//! MongoDB's topology, version, mapped collections (present, readable), oplog window and the
//! stream's checkpoint against that window; Postgres's version, TLS, and the privileges
//! `sync` will use. Each finding is ok, a warning (the stream runs, but an operator should
//! know) or an error (the stream cannot run as configured). Probing never writes: DDL that
//! would be needed is tried in a transaction that is rolled back.

mod mongo;
mod postgres;
mod window;

use serde::Serialize;

use crate::config::Config;
use crate::mapping::model::MappingSet;

pub use window::{judge_checkpoint, judge_window, OplogWindow};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One line of the pre-flight.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub level: Level,
    /// `config`, `mongodb`, `postgres` or `checkpoint`.
    pub area: &'static str,
    /// What was checked, a stable name for scripts (`topology`, `oplog_window`, …).
    pub check: &'static str,
    /// What was found and, for a warning or an error, what to do.
    pub message: String,
}

impl Finding {
    pub fn new(level: Level, area: &'static str, check: &'static str, message: String) -> Self {
        Finding {
            level,
            area,
            check,
            message,
        }
    }
}

/// What the Postgres half found of the stream's checkpoint, for the MongoDB half to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCheckpoint {
    /// No state table, no row, or a checkpoint without a cluster time.
    Absent,
    At(bson::Timestamp),
    /// Postgres could not be asked, or the row cannot be used; the Postgres half says which.
    Unknown,
}

/// Both ends, Postgres first: the stream's checkpoint lives there, and the MongoDB half judges
/// it against the oplog.
pub async fn run(config: &Config, mappings: &MappingSet) -> Vec<Finding> {
    let (mut findings, checkpoint) = postgres::check(config, mappings).await;
    findings.extend(mongo::check(config, mappings, checkpoint).await);
    findings
}
