//! Loading what every subcommand needs first: the config file and its mappings, reported as
//! usage errors (exit 2) before anything connects anywhere.

use std::path::Path;

use anyhow::anyhow;

use crate::cli::Failure;
use crate::config::Config;
use crate::mapping::{self, model::MappingSet};

/// Loads the config, then every mapping file it names. Mapping errors are all listed at once.
pub fn config_and_mappings(path: &Path) -> Result<(Config, MappingSet), Failure> {
    let config = Config::load(path).map_err(Failure::usage)?;
    let mappings = mapping::load(&config.sync.mappings).map_err(|errors| {
        Failure::usage(anyhow!(
            "{} mapping error(s); nothing was written:\n{errors}",
            errors.0.len()
        ))
    })?;
    Ok((config, mappings))
}
