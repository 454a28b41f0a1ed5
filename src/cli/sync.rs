//! `tributary sync` and `tributary full-sync`: load, serve metrics, run the pipeline until a
//! signal, and turn its failures into exit codes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;

use crate::cli::signal::{reload_on_sighup, shutdown_on_signal};
use crate::cli::{exit, load, CliResult, Failure, FullSyncMode};
use crate::metrics::{self, Metrics};
use crate::pipeline::full_sync::{self, FullSyncMode as Mode};
use crate::pipeline::sync::{self, SyncError, SyncOptions};

pub async fn run_sync(path: &Path, initial_sync: bool, metrics_addr: Option<String>) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    let shutdown = shutdown_on_signal();
    let sighup = reload_on_sighup();
    let metrics =
        Arc::new(Metrics::new(config.metrics.ready_max_lag_secs).map_err(Failure::runtime)?);
    let listen = metrics_addr.unwrap_or_else(|| config.metrics.listen.clone());
    if !listen.is_empty() {
        let bound = metrics::serve(metrics.clone(), &listen, shutdown.clone())
            .await
            .map_err(Failure::usage)?;
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    }
    let opts = SyncOptions {
        initial_sync,
        metrics: Some(metrics),
    };
    sync::sync_reloading(&config, Arc::new(mappings), opts, sighup, shutdown)
        .await
        .map_err(failure)?;
    tracing::info!("stopped cleanly: the last batch and its checkpoint are committed");
    Ok(ExitCode::from(exit::OK))
}

pub async fn run_full_sync(path: &Path, collections: Vec<String>, mode: FullSyncMode) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    let mode = match mode {
        FullSyncMode::Upsert => Mode::Upsert,
        FullSyncMode::Replace => Mode::Replace,
    };
    let selected = (!collections.is_empty()).then_some(collections);
    let report = full_sync::full_sync(
        &config,
        Arc::new(mappings),
        selected,
        mode,
        None,
        shutdown_on_signal(),
    )
    .await
    .map_err(failure)?;
    for c in &report.collections {
        println!(
            "{}: {} documents copied, {} dead-lettered, {:.1}s",
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

/// SPEC exit codes: config problems are 2 (nothing was written), everything else at run time is 3.
fn failure(e: SyncError) -> Failure {
    match e {
        SyncError::Config(_) | SyncError::TableOwned(_) | SyncError::Partitioned(_) => {
            Failure::usage(e)
        }
        other => Failure::runtime(other),
    }
}
