//! The full-sync reader: every document of one collection, in `_id` order, in chunks.
//!
//! One reader per collection, sorted by `_id` (the `_id` index, so each document is seen at
//! most once even while it is being updated), with the driver's batch size equal to the chunk
//! size. A transient error reopens the read after the last `_id` seen instead of starting
//! over. Splitting one collection into concurrent `_id` ranges was left out: split points need
//! either `$sample`/`splitVector` (not available everywhere) or a skip scan, and a single
//! ordered reader already keeps the COPY path busy; collections themselves are copied one after
//! another.

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::{Client, Cursor};

use super::{classify, reconnect_backoff, source_error, ErrorClass, SourceError};
use crate::event::Namespace;

/// Reads one collection in `_id` order.
pub struct SnapshotReader {
    client: Client,
    namespace: Namespace,
    chunk: usize,
    cursor: Option<Cursor<Document>>,
    /// The last `_id` returned: a reopened read continues after it.
    last_id: Option<Bson>,
    done: bool,
}

impl SnapshotReader {
    pub fn new(client: Client, namespace: Namespace, chunk: usize) -> Self {
        SnapshotReader {
            client,
            namespace,
            chunk: chunk.max(1),
            cursor: None,
            last_id: None,
            done: false,
        }
    }

    /// Documents in the collection, from its metadata (for progress only).
    pub async fn estimated_count(&self) -> Option<u64> {
        self.client
            .database(&self.namespace.db)
            .collection::<Document>(&self.namespace.coll)
            .estimated_document_count()
            .await
            .ok()
    }

    async fn open(&mut self) -> Result<(), mongodb::error::Error> {
        let filter = match &self.last_id {
            Some(id) => doc! {"_id": {"$gt": id.clone()}},
            None => doc! {},
        };
        let cursor = self
            .client
            .database(&self.namespace.db)
            .collection::<Document>(&self.namespace.coll)
            .find(filter)
            .sort(doc! {"_id": 1})
            .batch_size(u32::try_from(self.chunk).unwrap_or(u32::MAX))
            .await?;
        self.cursor = Some(cursor);
        Ok(())
    }

    async fn read(&mut self) -> Result<Vec<Document>, mongodb::error::Error> {
        if self.cursor.is_none() {
            self.open().await?;
        }
        let mut docs = Vec::new();
        let Some(cursor) = self.cursor.as_mut() else {
            return Ok(docs);
        };
        while docs.len() < self.chunk {
            match cursor.next().await {
                Some(d) => {
                    let d = d?;
                    self.last_id = d.get("_id").cloned();
                    docs.push(d);
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        Ok(docs)
    }

    /// The next chunk of up to `chunk` documents; `None` when the collection is exhausted.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<Document>>, SourceError> {
        let mut backoff: Option<backon::ExponentialBackoff> = None;
        let mut attempts = 0usize;
        loop {
            if self.done {
                return Ok(None);
            }
            // Documents read before an error are kept by `last_id`; re-reading starts after it.
            let before = self.last_id.clone();
            match self.read().await {
                Ok(docs) if docs.is_empty() => return Ok(None),
                Ok(docs) => return Ok(Some(docs)),
                Err(e) => {
                    attempts += 1;
                    self.cursor = None;
                    self.last_id = before;
                    if classify(&e) != ErrorClass::Transient {
                        return Err(source_error(&e, attempts));
                    }
                    let delay = backoff
                        .get_or_insert_with(|| backon::BackoffBuilder::build(reconnect_backoff()))
                        .next();
                    let Some(delay) = delay else {
                        return Err(source_error(&e, attempts));
                    };
                    tracing::warn!(namespace = %self.namespace, error = %e, attempt = attempts, "Reading the collection for the full sync failed; retrying after the last document read.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
