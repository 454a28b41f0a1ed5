//! `tributary schema [--apply]`: print the DDL of the mapped tables and state tables, or apply it.
//! Needs only Postgres.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{exit, load, CliResult, Failure};
use crate::sink::postgres::{ddl, PostgresSink};

pub async fn run(path: &Path, apply: bool) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    if !apply {
        for statement in ddl::schema_ddl(
            &mappings,
            &config.postgres.schema,
            &config.sync.state_schema,
        ) {
            println!("{statement};");
        }
        return Ok(ExitCode::from(exit::OK));
    }
    let sink = PostgresSink::connect(
        &config.postgres.uri,
        config.postgres.pool_size,
        &config.postgres.schema,
        &config.sync.state_schema,
        &config.sync.name,
        Arc::new(mappings),
    )
    .await
    .map_err(Failure::runtime)?;
    sink.ensure_schema().await.map_err(Failure::runtime)?;
    println!("schema applied");
    Ok(ExitCode::from(exit::OK))
}
