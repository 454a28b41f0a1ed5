//! `tributary resync`: re-copy collections online; the running daemon does it (the command
//! waits for its answer), or this process when no daemon holds the stream's lock.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;

use crate::cli::signal::shutdown_on_signal;
use crate::cli::{exit, load, CliResult, Failure};
use crate::pipeline::resync::{resync, ResyncOutcome};
use crate::pipeline::sync::SyncError;

pub async fn run(path: &Path, collections: Vec<String>) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    let outcome = resync(
        &config,
        Arc::new(mappings),
        collections,
        shutdown_on_signal(),
    )
    .await
    .map_err(|e| match e {
        SyncError::Config(_) => Failure::usage(e),
        other => Failure::runtime(other),
    })?;
    match outcome {
        ResyncOutcome::Answered { id, outcome } if outcome == "done" => {
            println!("request {id}: re-copied online by the running daemon");
            Ok(ExitCode::from(exit::OK))
        }
        ResyncOutcome::Answered { id, outcome } if outcome.starts_with("refused") => Err(
            Failure::usage(anyhow!("request {id}: the running daemon {outcome}")),
        ),
        ResyncOutcome::Answered { id, outcome } => Err(Failure::runtime(anyhow!(
            "request {id}: the running daemon's re-copy {outcome}; the collection is copied again at its next start"
        ))),
        ResyncOutcome::Queued { id } => {
            println!(
                "request {id} is queued: the daemon stopped before answering; the next `tributary sync` of this stream re-copies the collections"
            );
            Ok(ExitCode::from(exit::OK))
        }
        ResyncOutcome::CopiedHere(report) => {
            for c in &report.collections {
                println!(
                    "{}: {} documents copied, {} dead-lettered, {:.1}s (no daemon was running)",
                    c.namespace,
                    c.documents,
                    c.dead_letters,
                    c.elapsed.as_secs_f64()
                );
            }
            if report.interrupted {
                return Err(Failure::runtime(anyhow!(
                    "interrupted: the unfinished collection stays in phase `snapshot` and is copied again by the next full-sync or sync"
                )));
            }
            Ok(ExitCode::from(exit::OK))
        }
    }
}
