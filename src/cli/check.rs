//! `tributary check`: every config and mapping error at once (exit 2), then a ping of both ends
//! (exit 3 when one is unreachable).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::cli::{exit, load, CliResult, Failure};
use crate::config::{redact_uri, Config};

/// How long each end gets to answer: long enough for a slow network, short enough for a human.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(path: &Path) -> CliResult {
    let (config, mappings) = load::config_and_mappings(path)?;
    let tables: usize = mappings
        .collections
        .iter()
        .map(|c| 1 + c.children.len())
        .sum();
    println!(
        "config {}: ok ({} mapped collection(s), {} table(s))",
        path.display(),
        mappings.collections.len(),
        tables
    );

    for warning in mappings
        .collections
        .iter()
        .filter_map(crate::mapping::key::collision_warning)
    {
        println!("warning: {warning}");
    }

    let mut unreachable = Vec::new();
    match ping_postgres(&config).await {
        Ok(version) => println!(
            "postgres {}: ok ({version})",
            redact_uri(&config.postgres.uri)
        ),
        Err(e) => unreachable.push(format!("{e:#}")),
    }
    match ping_mongo(&config).await {
        Ok(()) => println!("mongodb {}: ok", redact_uri(&config.mongo.uri)),
        Err(e) => unreachable.push(format!("{e:#}")),
    }
    if unreachable.is_empty() {
        return Ok(ExitCode::from(exit::OK));
    }
    Err(Failure::runtime(anyhow!(unreachable.join("\n"))))
}

async fn ping_postgres(config: &Config) -> anyhow::Result<String> {
    let uri = redact_uri(&config.postgres.uri);
    let attempt = async {
        let connector = crate::pg::Connector::from_uri(&config.postgres.uri)
            .map_err(|e| anyhow!("postgres.uri cannot be used: {e}"))?;
        let client = connector.connect().await.map_err(|e| {
            anyhow!(
                "cannot connect to postgres {uri} (postgres.uri): {}",
                crate::sink::error::describe(&e)
            )
        })?;
        let row = client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .with_context(|| format!("postgres {uri} did not answer a query"))?;
        Ok::<_, anyhow::Error>(format!(
            "server {}, sslmode={}",
            row.get::<_, String>(0),
            connector.mode().as_str()
        ))
    };
    tokio::time::timeout(PING_TIMEOUT, attempt)
        .await
        .map_err(|_| {
            anyhow!("postgres {uri} did not answer within {PING_TIMEOUT:?} (postgres.uri)")
        })?
}

async fn ping_mongo(config: &Config) -> anyhow::Result<()> {
    let uri = redact_uri(&config.mongo.uri);
    let mut options = mongodb::options::ClientOptions::parse(&config.mongo.uri)
        .await
        .with_context(|| format!("mongo.uri {uri} is not a valid MongoDB connection string"))?;
    // The URI's own timeouts win; otherwise a human should not wait the driver's 30 s default.
    options.server_selection_timeout.get_or_insert(PING_TIMEOUT);
    options.connect_timeout.get_or_insert(PING_TIMEOUT);
    let client = mongodb::Client::with_options(options)
        .with_context(|| format!("cannot create a MongoDB client for {uri}"))?;
    let ping = client
        .database("admin")
        .run_command(bson::doc! { "ping": 1 })
        .await
        .with_context(|| format!("cannot reach mongodb {uri} (mongo.uri)"));
    // Dropping a client while its background tasks still check out connections makes the
    // driver panic at runtime shutdown; an explicit shutdown stops them first.
    client.shutdown().await;
    ping.map(|_| ())
}
