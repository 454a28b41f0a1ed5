//! Narrowing a Postgres data error to the documents that cause it. Conversion refuses every
//! value it knows Postgres would refuse, but a live table can still differ from its mapping
//! (a column narrowed by hand, a check constraint's cast): then one document's rows fail the
//! whole batch, and replaying the batch fails again forever. Instead the batch's changes are
//! tried in halves (`Sink::probe`, rolled back) until the failing documents are found; those
//! become dead letters and the rest of the batch commits with its checkpoint, atomically as
//! before.

use crate::mapping::model::MappingSet;
use crate::sink::dead_letter::refused_rows;
use crate::sink::{Batch, Change, Sink, SinkError};

/// The batch without the changes Postgres refuses, with a dead letter for each; `None` when
/// no single change fails on its own (the error then stands). `Err` when a probe failed for
/// another reason (a lost connection: the caller retries the batch as usual).
pub async fn narrow<S: Sink>(
    sink: &mut S,
    mappings: &MappingSet,
    batch: &Batch,
) -> Result<Option<Batch>, SinkError> {
    let changes = &batch.changes;
    let mut refused: Vec<(usize, SinkError)> = Vec::new();
    let mut pending = Vec::new();
    pending.push(0..changes.len());
    while let Some(range) = pending.pop() {
        match sink.probe(&changes[range.clone()]).await {
            Ok(()) => {}
            Err(e) if e.is_data_error() && range.len() == 1 => refused.push((range.start, e)),
            Err(e) if e.is_data_error() && range.len() > 1 => {
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
            Err(e) if e.is_data_error() => {}
            Err(e) => return Err(e),
        }
    }
    if refused.is_empty() {
        return Ok(None);
    }
    let mut narrowed = Batch {
        changes: Vec::with_capacity(changes.len()),
        dead_letters: batch.dead_letters.clone(),
        checkpoint: batch.checkpoint.clone(),
    };
    let mut skip = vec![false; changes.len()];
    for (i, error) in refused {
        let (Change::Upsert {
            collection,
            key,
            rows,
        }
        | Change::UpsertParent {
            collection,
            key,
            rows,
        }) = &changes[i]
        else {
            // Only rows carry values; anything else failing on its own is not the content's
            // fault, and the error stands.
            return Ok(None);
        };
        let Some(mapping) = mappings.collections.get(*collection) else {
            return Ok(None);
        };
        let namespace = mapping.namespace();
        tracing::warn!(namespace = %namespace, error = %error, "Postgres refused a document's rows; it was written to the dead letters and the rest of the batch goes on.");
        skip[i] = true;
        narrowed
            .dead_letters
            .push(refused_rows(mapping, &namespace, key, rows, &error));
        // The document's rows stay at an older version (SPEC: the last good one).
        if !mapping.children.is_empty() {
            narrowed.changes.push(Change::Refused {
                collection: *collection,
                key: key.clone(),
            });
        }
    }
    // `Refused` first: a later good version of the same document in this batch still wins.
    narrowed.changes.extend(
        changes
            .iter()
            .zip(skip)
            .filter(|(_, skip)| !skip)
            .map(|(c, _)| c.clone()),
    );
    Ok(Some(narrowed))
}
