//! `tributary dead-letters [--namespace NS] [--json]`: the open dead letters of the config's
//! stream, one line per document (namespace, `_id`, the newest reason, first seen, refused
//! versions). Resolved letters are history and not listed. Reads only; needs no daemon.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{exit, load, CliResult, Failure};
use crate::sink::postgres::state::{self, OpenDeadLetter};
use crate::sink::postgres::PostgresSink;
use crate::sink::SinkError;

/// What `dead-letters --json` prints.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    stream: &'a str,
    /// Documents with open letters.
    open: usize,
    letters: &'a [OpenDeadLetter],
}

pub async fn run(path: &Path, namespace: Option<String>, json: bool) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    // The sink's pool, so this command connects exactly as `sync` does (TLS and all); it runs
    // no DDL and writes nothing.
    let sink = PostgresSink::connect(
        &config.postgres.uri,
        1,
        &config.postgres.schema,
        &config.sync.state_schema,
        &config.sync.name,
        Arc::new(mappings),
    )
    .await
    .map_err(|e| match e {
        SinkError::InvalidUri { .. } => Failure::usage(e),
        e => Failure::runtime(e),
    })?;
    let client = sink
        .pool()
        .get()
        .await
        .context("cannot take a Postgres connection (postgres.uri)")
        .map_err(Failure::runtime)?;
    let table: Option<String> = client
        .query_one(
            "SELECT to_regclass($1)::text",
            &[&crate::sink::postgres::ddl::qualified(
                &config.sync.state_schema,
                "dead_letters",
            )],
        )
        .await
        .context("cannot look for the dead-letter table")
        .map_err(Failure::runtime)?
        .get(0);
    let letters = if table.is_some() {
        state::open_dead_letters(
            &**client,
            &config.sync.state_schema,
            &config.sync.name,
            namespace.as_deref(),
        )
        .await
        .context("cannot read the dead letters (run `tributary schema --apply` or `sync` once to add the lifecycle columns)")
        .map_err(Failure::runtime)?
    } else {
        Vec::new()
    };
    if json {
        let report = Report {
            stream: &config.sync.name,
            open: letters.len(),
            letters: &letters,
        };
        let text = serde_json::to_string_pretty(&report)
            .context("cannot render the dead letters as JSON")
            .map_err(Failure::runtime)?;
        println!("{text}");
    } else {
        print!("{}", render_text(&config.sync.name, &letters));
    }
    Ok(ExitCode::from(exit::OK))
}

fn render_text(stream: &str, letters: &[OpenDeadLetter]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "stream {stream}: {} documents with open dead letters",
        letters.len()
    );
    for l in letters {
        let _ = writeln!(
            out,
            "  {}  _id {}  first seen {}  versions {}\n    {}",
            l.namespace,
            l.document_key,
            l.first_seen.to_rfc3339(),
            l.versions,
            l.error
        );
    }
    out
}
