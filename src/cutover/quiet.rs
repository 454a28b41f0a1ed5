//! The quiet period: a change stream from the target cluster time T over the mapped
//! namespaces counts every write MongoDB applied after T, by namespace. Any write means the
//! application has not stopped writing, so the verdict is "not ready".

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Document, Timestamp};
use futures::StreamExt;
use mongodb::Client;
use tokio::task::JoinHandle;

use super::CutoverError;
use crate::mapping::model::MappingSet;
use crate::position::ts_cmp;

/// Writes per namespace (`db.coll`), in name order.
pub type Writes = BTreeMap<String, u64>;

/// The running count of writes since T.
pub struct Watcher {
    counts: Arc<Mutex<Writes>>,
    task: JoinHandle<Result<(), mongodb::error::Error>>,
}

impl Watcher {
    /// Opens the change stream at T (so nothing written between reading T and now escapes)
    /// and counts in a task until `finish`.
    pub async fn start(
        client: &Client,
        mappings: &MappingSet,
        target: Timestamp,
    ) -> Result<Watcher, CutoverError> {
        let namespaces: HashSet<(String, String)> = mappings
            .collections
            .iter()
            .map(|m| (m.database.clone(), m.collection.clone()))
            .collect();
        let or: Vec<Document> = namespaces
            .iter()
            .map(|(db, coll)| doc! {"ns.db": db, "ns.coll": coll})
            .collect();
        let mut stream = client
            .watch()
            .pipeline([doc! {"$match": {"$or": or}}])
            .start_at_operation_time(target)
            .await
            .map_err(CutoverError::mongo(
                "opening a change stream to watch the quiet period",
            ))?;
        let counts = Arc::new(Mutex::new(Writes::new()));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let event = event?;
                // The write that set T happened before it: only later ones count.
                let after = event.cluster_time.is_none_or(|t| ts_cmp(t, target).is_gt());
                if let (true, Some(ns)) = (after, event.ns) {
                    let name = format!("{}.{}", ns.db, ns.coll.unwrap_or_default());
                    if let Ok(mut counts) = shared.lock() {
                        *counts.entry(name).or_default() += 1;
                    }
                }
            }
            Ok(())
        });
        Ok(Watcher { counts, task })
    }

    /// Stops watching and returns the writes counted.
    pub async fn finish(self) -> Result<Writes, CutoverError> {
        if self.task.is_finished() {
            if let Ok(Err(e)) = self.task.await {
                return Err(CutoverError::Mongo {
                    doing: "watching the quiet period".to_owned(),
                    error: e,
                });
            }
        } else {
            self.task.abort();
        }
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        Ok(counts)
    }
}

/// Waits out the rest of the quiet period: a countdown bar on a terminal, a log line
/// otherwise.
pub async fn countdown(left: Duration, progress: bool) {
    if left.is_zero() {
        return;
    }
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(left.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template("quiet period [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    if bar.is_none() {
        tracing::info!(
            seconds = left.as_secs_f64(),
            "Quiet period: watching MongoDB for writes to the mapped collections."
        );
    }
    let end = tokio::time::Instant::now() + left;
    while tokio::time::Instant::now() < end {
        let remaining = end - tokio::time::Instant::now();
        if let Some(bar) = &bar {
            bar.set_position(left.as_secs().saturating_sub(remaining.as_secs()));
            bar.set_message(format!("{} s left", remaining.as_secs() + 1));
        }
        tokio::time::sleep(remaining.min(Duration::from_millis(250))).await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
