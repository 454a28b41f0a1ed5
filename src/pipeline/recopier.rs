//! The online re-copies of one streaming run (`sync`): starts a `recopy` task per collection
//! to copy (given at start, or asked for by a `tributary resync` request, polled every second),
//! marks each collection `streaming` again when its re-copy is done, and answers the requests.
//! A collection stays in phase `pending` while it is being re-copied, so a re-copy cut short
//! by a stop or a crash is started again (online) at the next start. Dropping the `Recopier`
//! stops every task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::full_sync::select_collections;
use super::recopy::{recopy, RecopyContext, RecopyItem};
use super::sync::SyncError;
use crate::sink::postgres::requests;
use crate::sink::postgres::state::{self, CollectionState, Phase};
use crate::sink::SinkError;

/// How often the running daemon looks for requests.
pub const POLL: Duration = Duration::from_secs(1);

/// Where the state tables are.
#[derive(Clone)]
pub struct StateTables {
    pub state_schema: String,
    pub stream: String,
}

/// The running re-copies; stops them when dropped.
pub struct Recopier {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recopier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recopier {
    /// Starts re-copies of `initial` at once, and answers `resync` requests from now on.
    pub fn spawn(
        ctx: RecopyContext,
        tables: StateTables,
        initial: Vec<usize>,
        tx: mpsc::Sender<RecopyItem>,
    ) -> Recopier {
        Recopier {
            task: tokio::spawn(manage(ctx, tables, initial, tx)),
        }
    }
}

type Outcome = (usize, Result<u64, SyncError>);

struct Manager {
    ctx: RecopyContext,
    tables: StateTables,
    tx: mpsc::Sender<RecopyItem>,
    tasks: JoinSet<Outcome>,
    /// The task currently copying each collection.
    running: HashMap<usize, tokio::task::Id>,
    /// Requests taken, with the collections they still wait for.
    waiting: HashMap<i64, HashSet<usize>>,
    aborts: Vec<(tokio::task::Id, tokio::task::AbortHandle)>,
}

async fn manage(
    ctx: RecopyContext,
    tables: StateTables,
    initial: Vec<usize>,
    tx: mpsc::Sender<RecopyItem>,
) {
    let mut m = Manager {
        ctx,
        tables,
        tx,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        waiting: HashMap::new(),
        aborts: Vec::new(),
    };
    for c in initial {
        m.start(c);
    }
    // Requests a stopped daemon took and never answered are taken again (this one holds the
    // stream's lock).
    if let Err(e) = m.untake().await {
        tracing::warn!(error = %e, "Could not look for unanswered resync requests.");
    }
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            Some(joined) = m.tasks.join_next_with_id() => {
                if let Ok((id, (collection, result))) = joined {
                    m.aborts.retain(|(a, _)| *a != id);
                    if m.running.get(&collection) == Some(&id) {
                        m.running.remove(&collection);
                        m.finished(collection, result).await;
                    }
                }
            }
            _ = tick.tick() => {
                if let Err(e) = m.poll().await {
                    tracing::warn!(error = %e, "Could not read the requests to the daemon; trying again.");
                }
            }
        }
    }
}

impl Manager {
    fn start(&mut self, collection: usize) {
        // The older task (if any) keeps running until it is dropped with the others; only the
        // newest one's end counts (`running`), so abort the older one now.
        if let Some(old) = self.running.get(&collection) {
            let old = *old;
            self.aborts.retain(|(id, h)| {
                if *id == old {
                    h.abort();
                    false
                } else {
                    true
                }
            });
        }
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        let handle = self.tasks.spawn(async move {
            let r = recopy(&ctx, collection, &tx).await;
            (collection, r)
        });
        // A re-copy asked for again starts over after the request.
        self.aborts.push((handle.id(), handle.clone()));
        if let Some(old) = self.running.insert(collection, handle.id()) {
            tracing::info!(namespace = %self.ctx.mappings.collections[collection].namespace(), task = %old, "A re-copy was asked for again; starting it over.");
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SinkError> {
        self.ctx.pool.get().await.map_err(|e| SinkError::Pool {
            detail: e.to_string(),
            retryable: true,
        })
    }

    async fn untake(&self) -> Result<(), SinkError> {
        let pg = self.client().await?;
        requests::untake_unanswered(
            &**pg,
            &self.tables.state_schema,
            &self.tables.stream,
            "resync",
        )
        .await?;
        Ok(())
    }

    async fn poll(&mut self) -> Result<(), SinkError> {
        loop {
            let taken = {
                let pg = self.client().await?;
                requests::take_next(
                    &**pg,
                    &self.tables.state_schema,
                    &self.tables.stream,
                    "resync",
                )
                .await?
            };
            let Some(request) = taken else {
                return Ok(());
            };
            let selected = select_collections(&self.ctx.mappings, request.collections.as_deref());
            let collections = match selected {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(request = request.id, error = %e, "Refused a resync request.");
                    self.answer(request.id, &format!("refused: {e}")).await?;
                    continue;
                }
            };
            tracing::info!(request = request.id, collections = ?request.collections, "Re-copying online on request (tributary resync).");
            for &c in &collections {
                self.set_phase(c, Phase::Pending, None).await?;
                self.start(c);
            }
            if collections.is_empty() {
                self.answer(request.id, "done").await?;
            } else {
                self.waiting
                    .insert(request.id, collections.into_iter().collect());
            }
        }
    }

    async fn finished(&mut self, collection: usize, result: Result<u64, SyncError>) {
        let namespace = self.ctx.mappings.collections[collection].namespace();
        let outcome = match result {
            Ok(documents) => {
                match self
                    .set_phase(collection, Phase::Streaming, Some(documents))
                    .await
                {
                    Ok(()) => "done".to_owned(),
                    Err(e) => format!("failed: {e}"),
                }
            }
            Err(e) => {
                tracing::error!(namespace = %namespace, error = %e, "The online re-copy failed; the collection stays pending and is copied again at the next start.");
                format!("failed: {e}")
            }
        };
        let mut answered = Vec::new();
        for (id, left) in &mut self.waiting {
            if left.remove(&collection) && (left.is_empty() || outcome != "done") {
                answered.push(*id);
            }
        }
        for id in answered {
            self.waiting.remove(&id);
            if let Err(e) = self.answer(id, &outcome).await {
                tracing::warn!(request = id, error = %e, "Could not answer a resync request.");
            }
        }
    }

    async fn answer(&self, id: i64, outcome: &str) -> Result<(), SinkError> {
        let pg = self.client().await?;
        requests::finish(&**pg, &self.tables.state_schema, id, outcome).await
    }

    async fn set_phase(
        &self,
        collection: usize,
        phase: Phase,
        documents: Option<u64>,
    ) -> Result<(), SinkError> {
        let pg = self.client().await?;
        let namespace = self.ctx.mappings.collections[collection].namespace();
        let (schema, stream) = (&self.tables.state_schema, &self.tables.stream);
        let previous = state::collection_state(&**pg, schema, stream, &namespace).await?;
        let done = documents.is_some();
        let state = CollectionState {
            namespace,
            phase,
            snapshot_started_at: previous.as_ref().and_then(|p| p.snapshot_started_at),
            snapshot_done_at: if done {
                Some(chrono::Utc::now())
            } else {
                previous.as_ref().and_then(|p| p.snapshot_done_at)
            },
            documents: match documents {
                Some(n) => i64::try_from(n).ok(),
                None => previous.and_then(|p| p.documents),
            },
        };
        state::set_collection_state(&**pg, schema, stream, &state).await
    }
}
