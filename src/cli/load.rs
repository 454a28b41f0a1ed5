//! Loading what every subcommand needs first: the config file and its mappings, reported as
//! usage errors (exit 2) before anything connects anywhere.

use std::path::Path;

use anyhow::anyhow;

use crate::cli::Failure;
use crate::config::Config;
use crate::mapping::{self, model::MappingSet};

/// Loads the config, then every mapping file it names. Invalid config values and mapping
/// errors are reported together, so one run of `check` shows every mistake.
pub fn config_and_mappings(path: &Path) -> Result<(Config, MappingSet), Failure> {
    let config = Config::load_unvalidated(path).map_err(Failure::usage)?;
    let invalid = config.validate().err();
    let mappings = mapping::load(&config.sync.mappings);
    match (invalid, mappings) {
        (None, Ok(mappings)) => Ok((config, mappings)),
        (invalid, mappings) => {
            let mut report = Vec::new();
            if let Some(e) = invalid {
                report.push(e.to_string());
            }
            if let Err(errors) = mappings {
                report.push(format!("{} mapping error(s):\n{errors}", errors.0.len()));
            }
            Err(Failure::usage(anyhow!(
                "{}\nnothing was written",
                report.join("\n")
            )))
        }
    }
}
