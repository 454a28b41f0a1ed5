//! `tributary status [--json]`: checkpoints, phases, lag and dead letters read from the state
//! tables.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{exit, load, CliResult, Failure};
use crate::config::redact_uri;
use crate::sink::postgres::state;

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
        print!("{status}");
    }
    Ok(ExitCode::from(exit::OK))
}
