//! `tributary verify`: compare Postgres with MongoDB through the mappings, print the report
//! (human, or SPEC's JSON object with `--json`), exit 0 when equal and 1 when not.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{exit, load, CliResult, Failure, VerifyMode};
use crate::verify::{self, Mode, VerifyError, VerifyOptions};

pub async fn run(path: &Path, mode: VerifyMode, sample_size: usize, json: bool) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    let opts = VerifyOptions {
        mode: mode_of(mode),
        sample_size,
        ..VerifyOptions::default()
    };
    let report = verify::verify(&config, Arc::new(mappings), opts)
        .await
        .map_err(failure)?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .context("cannot render the report as JSON")
            .map_err(Failure::runtime)?;
        println!("{text}");
    } else {
        print!("{}", verify::render_text(&report));
    }
    Ok(ExitCode::from(if report.equal {
        exit::OK
    } else {
        exit::DIFFERENT
    }))
}

/// The library's mode for the command line's.
pub fn mode_of(mode: VerifyMode) -> Mode {
    match mode {
        VerifyMode::Counts => Mode::Counts,
        VerifyMode::Sample => Mode::Sample,
        VerifyMode::Full => Mode::Full,
    }
}

/// SPEC exit codes: option and config problems are 2, everything else at run time is 3.
fn failure(e: VerifyError) -> Failure {
    if e.is_config() {
        Failure::usage(e)
    } else {
        Failure::runtime(e)
    }
}
