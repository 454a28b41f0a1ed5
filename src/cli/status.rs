//! `tributary status [--json]`: checkpoints, phases, lag and dead letters read from the state
//! tables, and which process (if any) holds each stream's lock (`crate::lease`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{exit, load, CliResult, Failure};
use crate::config::redact_uri;
use crate::lease::{self, Holder};
use crate::sink::postgres::state::{self, Status, StreamStatus};

/// What `status --json` prints: the stored status of every stream plus its writer and lag.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    initialized: bool,
    streams: Vec<StreamReport<'a>>,
}

#[derive(Debug, serde::Serialize)]
struct StreamReport<'a> {
    #[serde(flatten)]
    status: &'a StreamStatus,
    /// The session holding the stream's advisory lock: a running `sync`; `null` when none.
    writer: Option<Holder>,
    /// Seconds between now and the checkpoint's cluster time; `null` without one.
    lag_seconds: Option<f64>,
    /// Open dead letters of the stream (resolved ones are not counted).
    open_dead_letters: i64,
    /// Seconds since the oldest open dead letter was written; `null` when none is open.
    oldest_open_dead_letter_seconds: Option<f64>,
}

fn lag_seconds(stream: &StreamStatus, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let t = stream.checkpoint.as_ref()?.cluster_time?;
    Some((now - t).num_milliseconds().max(0) as f64 / 1000.0)
}

pub async fn run(path: &Path, json: bool) -> CliResult {
    let (config, _mappings) = load::config_and_mappings(path)?;
    let uri = redact_uri(&config.postgres.uri);
    let connector = crate::pg::Connector::from_uri(&config.postgres.uri)
        .map_err(|e| Failure::usage(anyhow::anyhow!("postgres.uri cannot be used: {e}")))?;
    let client = connector.connect().await.map_err(|e| {
        Failure::runtime(anyhow::anyhow!(
            "cannot connect to postgres {uri} (postgres.uri): {}",
            crate::sink::error::describe(&e)
        ))
    })?;
    let status = state::read_status(&client, &config.sync.state_schema, None)
        .await
        .map_err(Failure::runtime)?;
    let mut writers = Vec::with_capacity(status.streams.len());
    for s in &status.streams {
        let writer = lease::holder(&client, &s.stream)
            .await
            .with_context(|| format!("cannot look up the lock holder of stream {:?}", s.stream))
            .map_err(Failure::runtime)?;
        writers.push(writer);
    }
    let now = chrono::Utc::now();
    if json {
        let report = Report {
            initialized: status.initialized,
            streams: status
                .streams
                .iter()
                .zip(writers)
                .map(|(s, writer)| StreamReport {
                    status: s,
                    writer,
                    lag_seconds: lag_seconds(s, now),
                    open_dead_letters: s.dead_letters.iter().map(|d| d.count).sum(),
                    oldest_open_dead_letter_seconds: s
                        .dead_letters
                        .iter()
                        .filter_map(|d| d.oldest_at)
                        .min()
                        .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&report)
            .context("cannot render the status as JSON")
            .map_err(Failure::runtime)?;
        println!("{text}");
    } else {
        print!("{}", render_text(&status, &writers, now));
    }
    Ok(ExitCode::from(exit::OK))
}

/// `3d 4h`, `2h 5m`, `4m 10s` or `12s`: how long ago `then` was, to the two largest units.
fn age(now: chrono::DateTime<chrono::Utc>, then: chrono::DateTime<chrono::Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// The human form of `status`: one block per stream, one line per collection.
fn render_text(
    status: &Status,
    writers: &[Option<Holder>],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !status.initialized {
        out.push_str("no state tables yet: nothing has run against this database (run `tributary schema --apply` or `sync`)\n");
        return out;
    }
    if status.streams.is_empty() {
        out.push_str("state tables exist but no stream has written anything yet\n");
    }
    for (i, stream) in status.streams.iter().enumerate() {
        let _ = writeln!(out, "stream {}", stream.stream);
        match writers.get(i).and_then(Option::as_ref) {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "  writer: Postgres backend pid {} from {} ({:?}), holding the lock since {}",
                    h.pid,
                    match (&h.client_addr, h.client_port) {
                        (Some(a), Some(p)) => format!("{a}:{p}"),
                        (Some(a), None) => a.clone(),
                        _ => "a local socket".to_owned(),
                    },
                    h.application_name,
                    h.since
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into())
                );
            }
            None => out.push_str("  writer: none (no `sync` holds the stream's lock)\n"),
        }
        match &stream.checkpoint {
            Some(cp) => {
                let lag = lag_seconds(stream, now)
                    .map(|l| format!("{l:.1}s"))
                    .unwrap_or_else(|| "unknown".into());
                let _ = writeln!(
                    out,
                    "  checkpoint: source {}, cluster time {}, written {}, lag {}",
                    cp.source.as_deref().unwrap_or("?"),
                    cp.cluster_time
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into()),
                    cp.updated_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into()),
                    lag
                );
            }
            None => out.push_str("  checkpoint: none yet\n"),
        }
        for c in &stream.collections {
            let _ = writeln!(
                out,
                "  {:<40} {:<10} documents copied {}",
                c.namespace,
                c.phase.as_str(),
                c.documents
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into())
            );
        }
        let total: i64 = stream.dead_letters.iter().map(|d| d.count).sum();
        match stream.dead_letters.iter().filter_map(|d| d.oldest_at).min() {
            Some(oldest) => {
                let _ = writeln!(
                    out,
                    "  dead letters: {total} open, the oldest {} old (`tributary dead-letters` lists them)",
                    age(now, oldest)
                );
            }
            None => {
                let _ = writeln!(out, "  dead letters: {total} open");
            }
        }
        for d in &stream.dead_letters {
            let _ = writeln!(out, "    {:<38} {}", d.namespace, d.count);
        }
    }
    out
}
