//! `tributary cutover`: the migration verdict (exit 0 ready, 1 not ready, 2 config, 3 runtime),
//! and `cutover --unblock-writes` (a rollback of `--block-writes`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use crate::cli::{exit, load, CliResult, Failure};
use crate::cutover::{self, CutoverError, CutoverOptions};
use crate::verify::VerifyOptions;

pub async fn run(path: &Path, opts: CutoverOptions, json: bool) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    let report = cutover::cutover(&config, Arc::new(mappings), opts)
        .await
        .map_err(failure)?;
    if json {
        let text = serde_json::to_string(&report)
            .map_err(|e| Failure::runtime(anyhow!("cannot print the report as JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.human());
    }
    Ok(ExitCode::from(if report.ready {
        exit::OK
    } else {
        exit::DIFFERENT
    }))
}

/// `cutover --unblock-writes`: MongoDB accepts user writes again.
pub async fn unblock(path: &Path) -> CliResult {
    let (config, _mappings) = load::config_and_mappings(path)?;
    let client = mongodb::Client::with_uri_str(&config.mongo.uri)
        .await
        .map_err(|e| {
            Failure::usage(anyhow!(
                "mongo.uri cannot be used ({}); fix it in the config file",
                crate::config::redact_uri(&e.to_string())
            ))
        })?;
    cutover::unblock_writes(&client).await.map_err(failure)?;
    println!("MongoDB accepts user writes again.");
    Ok(ExitCode::from(exit::OK))
}

/// Options from the command line.
pub fn options(
    timeout: u64,
    quiet_period: u64,
    verify: VerifyOptions,
    block_writes: bool,
) -> CutoverOptions {
    CutoverOptions {
        timeout: Duration::from_secs(timeout),
        quiet_period: Duration::from_secs(quiet_period),
        verify,
        block_writes,
        progress: true,
    }
}

fn failure(e: CutoverError) -> Failure {
    if e.is_config() {
        Failure::usage(e)
    } else {
        Failure::runtime(e)
    }
}
