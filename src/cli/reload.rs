//! `tributary reload`: asks the `sync` holding the stream's lock to reload its mappings (what
//! SIGHUP does), through a request row in `<state_schema>.requests`, and waits for its answer.
//! Exit 0 when applied, 2 when the mappings were refused, 3 when no daemon runs the stream or
//! none answered in time.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;

use crate::cli::{exit, CliResult, Failure};
use crate::config::{redact_uri, Config};
use crate::lease;
use crate::pipeline::reload::{self, REQUEST_KIND};
use crate::sink::postgres::requests;

/// How often the answer is looked for.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(path: &Path, timeout_secs: u64) -> CliResult {
    // The daemon reads its own mapping files; only where to ask is needed here.
    let config = Config::load(path).map_err(Failure::usage)?;
    let stream = &config.sync.name;
    let state_schema = &config.sync.state_schema;
    let uri = redact_uri(&config.postgres.uri);
    let connector = crate::pg::Connector::from_uri(&config.postgres.uri)
        .map_err(|e| Failure::usage(anyhow!("postgres.uri cannot be used: {e}")))?;
    let client = connector.connect().await.map_err(|e| {
        Failure::runtime(anyhow!(
            "cannot connect to postgres {uri} (postgres.uri): {}",
            crate::sink::error::describe(&e)
        ))
    })?;
    let holder = lease::holder(&client, stream).await.map_err(|e| {
        Failure::runtime(anyhow!(
            "cannot look up the lock holder of stream {stream:?}: {}",
            crate::sink::error::describe(&e)
        ))
    })?;
    if holder.is_none() {
        return Err(Failure::runtime(anyhow!(
            "no running sync for stream {stream}; the new mappings apply at its next start"
        )));
    }
    let id = requests::insert(&client, state_schema, stream, REQUEST_KIND, None)
        .await
        .map_err(|e| {
            Failure::runtime(anyhow!(
                "{e}; a sync started before `tributary reload` existed does not read requests: send it SIGHUP instead"
            ))
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let answer = loop {
        if let Some(a) = requests::answer(&client, state_schema, id)
            .await
            .map_err(Failure::runtime)?
        {
            break a;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::runtime(anyhow!(
                "the running sync of stream {stream} did not answer within {timeout_secs} s (it applies a reload between batches, after a copy under way); the request stays queued as id {id} and is applied when it is read"
            )));
        }
        tokio::time::sleep(POLL).await;
    };
    let outcome = answer.outcome;
    if let Some(done) = outcome.strip_prefix(reload::APPLIED) {
        let done = done.trim_start_matches(':').trim();
        println!("stream {stream}: mappings reloaded: {done}");
        return Ok(ExitCode::from(exit::OK));
    }
    if let Some(errors) = outcome.strip_prefix(reload::INVALID) {
        return Err(Failure::usage(anyhow!(
            "stream {stream}: the new mappings were refused; the running ones stay:{errors}"
        )));
    }
    Err(Failure::runtime(anyhow!(
        "stream {stream}: the new mappings were not applied; the running ones stay: {outcome}"
    )))
}
