//! The cutover verdict: SPEC's `cutover --json` object, its human rendering, and its durable
//! record in `<state_schema>.cutovers`.

use std::fmt::Write as _;

use bson::Timestamp;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::catch_up::AppliedBy;
use super::quiet::Writes;
use super::CutoverError;
use crate::pipeline::sync::{state_client, SyncError};
use crate::sink::postgres::ddl::qualified;
use crate::sink::postgres::PostgresSink;
use crate::verify::VerifyReport;

/// One cutover's verdict. Field names and meanings are SPEC's; `started_at` and
/// `finished_at` are additions.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    /// Caught up, quiet and equal.
    pub ready: bool,
    pub stream: String,
    #[serde(serialize_with = "cluster_time")]
    pub target_cluster_time: Timestamp,
    pub caught_up: bool,
    pub lag_seconds: f64,
    pub applied_by: AppliedBy,
    pub quiet: bool,
    pub writes: Writes,
    /// MongoDB still refuses user writes (`--block-writes` and ready).
    pub writes_blocked: bool,
    pub verify: Option<VerifyReport>,
    /// Every reason the verdict is not ready; empty when ready.
    pub reasons: Vec<String>,
    #[serde(serialize_with = "instant")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "instant")]
    pub finished_at: DateTime<Utc>,
}

/// A cluster time as SPEC's ISO-8601 UTC text with milliseconds (the increment orders writes
/// within a second and has no wall-clock meaning).
pub fn time_text(t: Timestamp) -> String {
    DateTime::from_timestamp(i64::from(t.time), 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn cluster_time<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time_text(*t))
}

fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// The reason line of a verification that found differences.
pub fn verify_reason(v: &VerifyReport) -> String {
    let mut parts = Vec::new();
    for c in &v.collections {
        let mut kinds = Vec::new();
        for (n, kind) in [
            (c.missing, "missing"),
            (c.extra, "extra"),
            (c.different, "different"),
            (c.dead_letter, "dead-lettered"),
        ] {
            if n > 0 {
                kinds.push(format!("{n} {kind}"));
            }
        }
        for child in &c.children {
            let n = child.missing + child.extra + child.different;
            if n > 0 {
                kinds.push(format!("{n} differing rows in {}", child.table));
            }
        }
        if !kinds.is_empty() {
            parts.push(format!("{}: {}", c.namespace, kinds.join(", ")));
        }
    }
    format!(
        "verify --mode {} found differences ({})",
        v.mode,
        parts.join("; ")
    )
}

impl CutoverReport {
    /// The report for a terminal or a log.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let verdict = if self.ready { "READY" } else { "NOT READY" };
        let _ = writeln!(out, "cutover of stream {:?}: {verdict}", self.stream);
        let _ = writeln!(
            out,
            "  target cluster time {}: {} (applied by {})",
            time_text(self.target_cluster_time),
            if self.caught_up {
                "caught up".to_owned()
            } else {
                format!("{:.1} s behind", self.lag_seconds)
            },
            match self.applied_by {
                AppliedBy::Daemon => "the running sync",
                AppliedBy::Cutover => "this cutover",
            }
        );
        if self.quiet {
            let _ = writeln!(out, "  quiet: no writes to mapped collections");
        } else {
            for (ns, n) in &self.writes {
                let _ = writeln!(out, "  writes during the quiet period: {ns}: {n}");
            }
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(
                out,
                "  verify --mode {}: {}",
                v.mode,
                if v.equal {
                    "equal"
                } else {
                    "differences found"
                }
            );
        }
        let _ = writeln!(
            out,
            "  MongoDB user writes: {}",
            if self.writes_blocked {
                "blocked (lift with `tributary cutover --unblock-writes`)"
            } else {
                "accepted"
            }
        );
        for r in &self.reasons {
            let _ = writeln!(out, "  not ready: {r}");
        }
        out
    }
}

/// Stores the report in `<state_schema>.cutovers` in a transaction committed with
/// `synchronous_commit = on`: its commit waits until the WAL is flushed up to it, so every
/// earlier commit (the stream's last checkpoint among them) is durable before the verdict is
/// printed.
pub async fn store_durably(
    sink: &PostgresSink,
    state_schema: &str,
    report: &CutoverReport,
) -> Result<(), CutoverError> {
    let postgres = |doing: &'static str| {
        move |error| CutoverError::Postgres {
            doing: doing.to_owned(),
            error,
        }
    };
    let json = serde_json::to_value(report).map_err(|e| {
        CutoverError::Sync(SyncError::Config(format!(
            "the cutover report cannot be written as JSON: {e}"
        )))
    })?;
    let mut pg = state_client(sink).await?;
    let tx = pg
        .transaction()
        .await
        .map_err(postgres("starting the transaction of the cutover report"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(postgres("setting synchronous_commit"))?;
    let sql = format!(
        "INSERT INTO {} (stream, started_at, finished_at, ready, report) VALUES ($1, $2, $3, $4, $5)",
        qualified(state_schema, "cutovers")
    );
    tx.execute(
        &sql,
        &[
            &report.stream,
            &report.started_at,
            &report.finished_at,
            &report.ready,
            &json,
        ],
    )
    .await
    .map_err(postgres("storing the cutover report"))?;
    tx.commit()
        .await
        .map_err(postgres("committing the cutover report"))
}
