//! `tributary check`: every config and mapping error at once (exit 2, nothing contacted), then
//! the pre-flight of both ends (`preflight`): each finding a line `ok` / `warning` / `error`,
//! or one JSON document with `--json`. Exit 3 when an end is unreachable or refuses what the
//! stream needs; warnings do not fail.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::cli::{exit, load, CliResult, Failure};
use crate::preflight::{self, Finding, Level};

#[derive(Serialize)]
struct Report<'a> {
    config: String,
    /// No finding is an error.
    ok: bool,
    errors: usize,
    warnings: usize,
    findings: &'a [Finding],
}

pub async fn run(path: &Path, json: bool) -> CliResult {
    let (config, mappings) = match load::config_and_mappings(path) {
        Ok(loaded) => loaded,
        Err(failure) if json => {
            let finding = Finding::new(
                Level::Error,
                "config",
                "config",
                format!("{:#}", failure.error),
            );
            print_json(path, &[finding]);
            return Ok(ExitCode::from(failure.code));
        }
        Err(failure) => return Err(failure),
    };
    let tables: usize = mappings
        .collections
        .iter()
        .map(|c| 1 + c.children.len())
        .sum();
    let mut findings = vec![Finding::new(
        Level::Ok,
        "config",
        "config",
        format!(
            "config {}: {} mapped collection(s), {} table(s)",
            path.display(),
            mappings.collections.len(),
            tables
        ),
    )];
    findings.extend(
        mappings
            .collections
            .iter()
            .filter_map(crate::mapping::key::collision_warning)
            .map(|w| Finding::new(Level::Warning, "config", "key_types", w)),
    );
    findings.extend(preflight::run(&config, &mappings).await);

    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    if json {
        print_json(path, &findings);
    } else {
        for f in &findings {
            println!("{:<7} {}", f.level.as_str(), f.message);
        }
    }
    if errors == 0 {
        return Ok(ExitCode::from(exit::OK));
    }
    if json {
        return Ok(ExitCode::from(exit::RUNTIME));
    }
    let summary: Vec<String> = findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .map(|f| f.message.clone())
        .collect();
    Err(Failure::runtime(anyhow::anyhow!(
        "{errors} pre-flight error(s):\n{}",
        summary.join("\n")
    )))
}

fn print_json(path: &Path, findings: &[Finding]) {
    let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
    let report = Report {
        config: path.display().to_string(),
        ok: count(Level::Error) == 0,
        errors: count(Level::Error),
        warnings: count(Level::Warning),
        findings,
    };
    match serde_json::to_string_pretty(&report) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("cannot render the report as JSON: {e}"),
    }
}
