//! `tributary resync`: asks the running daemon of the stream to re-copy collections online,
//! through a row of `<state_schema>.requests` that the daemon polls (`recopier`), and waits for
//! its answer. With no daemon holding the stream's lock, it copies them itself the way
//! `full-sync --mode replace` does (fresh tables swapped in by one transaction: readers see
//! the old rows or the new ones), and the next `sync` replays the changes since its checkpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::full_sync::{full_sync, select_collections, FullSyncMode, FullSyncReport};
use super::sync::{connect, state_client, SyncError};
use crate::config::Config;
use crate::mapping::model::MappingSet;
use crate::sink::postgres::requests;

/// How often `resync` looks for the daemon's answer.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// How a `resync` ended.
#[derive(Debug)]
pub enum ResyncOutcome {
    /// The daemon answered request `id` with `outcome` (`done`, `failed: …`, `refused: …`).
    Answered { id: i64, outcome: String },
    /// No daemon held the lock: this process copied the collections.
    CopiedHere(FullSyncReport),
    /// The daemon stopped (or the command was interrupted) before answering: the request stays
    /// queued and the next `sync` answers it.
    Queued { id: i64 },
}

/// `tributary resync --collections …` (module doc).
pub async fn resync(
    config: &Config,
    mappings: Arc<MappingSet>,
    collections: Vec<String>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ResyncOutcome, SyncError> {
    if collections.is_empty() {
        return Err(SyncError::Config(
            "--collections names no collection; give db.collection names as in the mapping files"
                .into(),
        ));
    }
    select_collections(&mappings, Some(&collections))?;
    let collections: Vec<String> = collections.iter().map(|c| c.trim().to_owned()).collect();
    let shutdown = shutdown.boxed().shared();
    if let Some(lease) =
        crate::lease::Lease::try_take(&config.postgres.uri, &config.sync.name).await?
    {
        lease.release().await;
        tracing::info!(stream = %config.sync.name, "No daemon holds the stream's lock; copying here.");
        let report = full_sync(
            config,
            mappings,
            Some(collections),
            FullSyncMode::Replace,
            None,
            shutdown,
        )
        .await?;
        return Ok(ResyncOutcome::CopiedHere(report));
    }
    let (_client, sink) = connect(config, &mappings).await?;
    let (schema, stream) = (&config.sync.state_schema, &config.sync.name);
    let id = {
        let pg = state_client(&sink).await?;
        requests::insert(&**pg, schema, stream, "resync", Some(&collections)).await?
    };
    tracing::info!(
        request = id,
        "Asked the running daemon to re-copy online; waiting for its answer."
    );
    loop {
        let answered = {
            let pg = state_client(&sink).await?;
            requests::answer(&**pg, schema, id)
                .await?
                .map(|a| a.outcome)
        };
        if let Some(outcome) = answered {
            return Ok(ResyncOutcome::Answered { id, outcome });
        }
        if let Some(lease) = crate::lease::Lease::try_take(&config.postgres.uri, stream).await? {
            lease.release().await;
            return Ok(ResyncOutcome::Queued { id });
        }
        tokio::select! {
            () = shutdown.clone() => return Ok(ResyncOutcome::Queued { id }),
            () = tokio::time::sleep(WAIT_POLL) => {}
        }
    }
}
