//! `tributary status [--json]`: checkpoints, phases, lag and dead letters read from the state
//! tables.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{exit, load, CliResult, Failure};
use crate::config::redact_uri;
use crate::sink::postgres::state::{self, Status};

pub async fn run(path: &Path, json: bool) -> CliResult {
    let (config, _mappings) = load::config_and_mappings(path)?;
    let uri = redact_uri(&config.postgres.uri);
    let (client, connection) = tokio_postgres::connect(&config.postgres.uri, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to postgres {uri} (postgres.uri)"))
        .map_err(Failure::runtime)?;
    tokio::spawn(connection);
    let status = state::read_status(&client, &config.sync.state_schema, None)
        .await
        .map_err(Failure::runtime)?;
    if json {
        let text = serde_json::to_string_pretty(&status)
            .context("cannot render the status as JSON")
            .map_err(Failure::runtime)?;
        println!("{text}");
    } else {
        print!("{}", render_text(&status, chrono::Utc::now()));
    }
    Ok(ExitCode::from(exit::OK))
}

/// The human form of `status`: one block per stream, one line per collection.
fn render_text(status: &Status, now: chrono::DateTime<chrono::Utc>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !status.initialized {
        out.push_str("no state tables yet: nothing has run against this database (run `tributary schema --apply` or `sync`)\n");
        return out;
    }
    if status.streams.is_empty() {
        out.push_str("state tables exist but no stream has written anything yet\n");
    }
    for stream in &status.streams {
        let _ = writeln!(out, "stream {}", stream.stream);
        match &stream.checkpoint {
            Some(cp) => {
                let lag = cp
                    .cluster_time
                    .map(|t| {
                        format!(
                            "{:.1}s",
                            (now - t).num_milliseconds().max(0) as f64 / 1000.0
                        )
                    })
                    .unwrap_or_else(|| "unknown".into());
                let _ = writeln!(
                    out,
                    "  checkpoint: source {}, cluster time {}, written {}, age of last applied change {}",
                    cp.source.as_deref().unwrap_or("?"),
                    cp.cluster_time.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
                    cp.updated_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
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
        let _ = writeln!(out, "  dead letters: {total}");
        for d in &stream.dead_letters {
            let _ = writeln!(out, "    {:<38} {}", d.namespace, d.count);
        }
    }
    out
}
