//! Normalisation: change events become sink `Change`s through the mappings. This is where a
//! document that cannot be converted turns into a dead letter (or, with `on_error: fail`,
//! stops the stream), and where DDL events become truncations.
//!
//! Choices worth knowing:
//! - An update whose full document is missing (`updateLookup` found nothing, or the oplog
//!   re-read found nothing) means the document was deleted after the update; its delete event
//!   follows later in the same history, so the update is skipped rather than turned into a
//!   delete now (which would be the same net effect, only earlier than the source said).
//! - A delete whose `_id` cannot be converted cannot have a row either (the insert would have
//!   been refused the same way), so it is skipped with a dead letter for the record.
//! - An update that names what it changed (`ChangeEvent::updated_paths`) and changed nothing a
//!   child table reads becomes `Change::UpsertParent`: the sink may keep its child rows. A
//!   refused upsert of a collection with child tables also emits `Change::Refused`, so the
//!   sink knows those rows are now older than the document.
//! - `rename` truncates the old name's tables and, when the new name is mapped, asks for a
//!   full sync of it (`Normalized::resync`), because the renamed documents never produce
//!   insert events of their own.

use bson::{Bson, RawDocument};

use crate::event::{document_id, ChangeEvent, Namespace, Op};
use crate::mapping::convert::{convert_key, convert_raw_document};
use crate::mapping::json::to_json;
use crate::mapping::model::{CollectionMapping, MappingSet, OnError};
use crate::mapping::value::PgValue;
use crate::position::timestamp_to_utc;
use crate::sink::{Change, DeadLetter};
use crate::source::paths::overlaps;

/// The sink's view of a run of events.
#[derive(Debug, Default, PartialEq)]
pub struct Normalized {
    pub changes: Vec<Change>,
    pub dead_letters: Vec<DeadLetter>,
    /// Collections (indexes into `MappingSet::collections`) that need a full sync after this
    /// batch commits: the target of a rename.
    pub resync: Vec<usize>,
    /// Values stored as NULL under `on_error: null`, as `(namespace, column)`, for
    /// `tributary_nulled_values_total` (each was logged with its reason).
    pub nulled: Vec<(String, String)>,
}

/// A document refused under `on_error: fail`: the stream must stop.
#[derive(Debug, thiserror::Error)]
#[error("{namespace} document {key} cannot be converted ({reason}) and the mapping says on_error: fail; fix the document or the mapping, then restart")]
pub struct FatalConversion {
    pub namespace: String,
    pub key: String,
    pub reason: String,
}

fn collection_index(mappings: &MappingSet, ns: &Namespace) -> Option<usize> {
    mappings
        .collections
        .iter()
        .position(|c| c.database == ns.db && c.collection == ns.coll)
}

/// Converts events (in source order) into changes, appending to `out`.
pub fn normalize(
    mappings: &MappingSet,
    events: &[ChangeEvent],
    out: &mut Normalized,
) -> Result<(), FatalConversion> {
    for event in events {
        normalize_one(mappings, event, out)?;
    }
    Ok(())
}

fn normalize_one(
    mappings: &MappingSet,
    event: &ChangeEvent,
    out: &mut Normalized,
) -> Result<(), FatalConversion> {
    let cluster_time = timestamp_to_utc(event.cluster_time);
    match &event.op {
        Op::Noop => {}
        Op::Insert | Op::Update | Op::Replace => {
            let Some(collection) = collection_index(mappings, &event.namespace) else {
                return Ok(());
            };
            let Some(doc) = &event.document else {
                // Deleted after the update; its delete event follows (module doc).
                return Ok(());
            };
            let mapping = &mappings.collections[collection];
            match convert_raw_document(mapping, doc) {
                Ok(converted) => {
                    if !converted.nulled.is_empty() {
                        log_nulled(&event.namespace, &converted, out);
                    }
                    let (key, rows) = (converted.key, converted.rows);
                    out.changes.push(if keeps_children(mapping, event) {
                        Change::UpsertParent {
                            collection,
                            key,
                            rows,
                        }
                    } else {
                        Change::Upsert {
                            collection,
                            key,
                            rows,
                        }
                    });
                }
                Err(e) => {
                    let key = event.key.clone().or_else(|| document_id(doc).ok());
                    let row_key = key.as_ref().and_then(|id| convert_key(mapping, id).ok());
                    // The rows stay at an older version: the sink must know, or a later update
                    // that keeps the child rows would keep out-of-date ones.
                    if let Some(key) = row_key.clone().filter(|_| !mapping.children.is_empty()) {
                        out.changes.push(Change::Refused { collection, key });
                    }
                    refuse(
                        mapping.on_error,
                        e.fatal,
                        &event.namespace,
                        (key, row_key.as_ref()),
                        Some(doc),
                        e.to_string(),
                        cluster_time,
                        out,
                    )?;
                }
            }
        }
        Op::Delete => {
            let Some(collection) = collection_index(mappings, &event.namespace) else {
                return Ok(());
            };
            let mapping = &mappings.collections[collection];
            let Some(id) = &event.key else {
                return Ok(());
            };
            match convert_key(mapping, id) {
                Ok(key) => out.changes.push(Change::Delete { collection, key }),
                Err(e) => {
                    // Never fatal: there is no row to delete (module doc).
                    refuse(
                        OnError::DeadLetter,
                        false,
                        &event.namespace,
                        (Some(id.clone()), None),
                        None,
                        e.to_string(),
                        cluster_time,
                        out,
                    )?;
                }
            }
        }
        Op::Unreadable { reason } => {
            let Some(collection) = collection_index(mappings, &event.namespace) else {
                if event.namespace.db.is_empty() {
                    // Not even its namespace could be read: the letter names the position.
                    tracing::error!(position = %event.position.to_json(), reason = %reason, "A change event could not be read; it is written to the dead letters without namespace.");
                    out.dead_letters.push(DeadLetter::new(
                        "",
                        None,
                        None,
                        &format!("{reason} (resume token {})", event.position.to_json()),
                        cluster_time,
                    ));
                }
                return Ok(());
            };
            let mapping = &mappings.collections[collection];
            let row_key = event
                .key
                .as_ref()
                .and_then(|id| convert_key(mapping, id).ok());
            if let Some(key) = row_key.clone().filter(|_| !mapping.children.is_empty()) {
                out.changes.push(Change::Refused { collection, key });
            }
            refuse(
                OnError::DeadLetter,
                false,
                &event.namespace,
                (event.key.clone(), row_key.as_ref()),
                None,
                reason.clone(),
                cluster_time,
                out,
            )?;
        }
        Op::Drop => {
            if let Some(collection) = collection_index(mappings, &event.namespace) {
                tracing::warn!(namespace = %event.namespace, "The collection was dropped in MongoDB; its tables are truncated with this batch and streaming continues.");
                out.changes.push(Change::Truncate { collection });
            }
        }
        Op::Rename { to } => {
            if let Some(collection) = collection_index(mappings, &event.namespace) {
                tracing::warn!(namespace = %event.namespace, to = %to, "The collection was renamed in MongoDB; the old name's tables are truncated with this batch and streaming continues.");
                out.changes.push(Change::Truncate { collection });
            }
            if let Some(target) = collection_index(mappings, to) {
                tracing::warn!(namespace = %to, "A collection was renamed onto a mapped name; its tables are truncated and the collection is copied in full, then streamed.");
                out.changes.push(Change::Truncate { collection: target });
                if !out.resync.contains(&target) {
                    out.resync.push(target);
                }
            }
        }
        Op::DropDatabase => {
            for (collection, m) in mappings.collections.iter().enumerate() {
                if m.database == event.namespace.db {
                    tracing::warn!(namespace = %m.namespace(), "The database was dropped in MongoDB; the collection's tables are truncated with this batch and streaming continues.");
                    out.changes.push(Change::Truncate { collection });
                }
            }
        }
    }
    Ok(())
}

/// Logs each value `on_error: null` replaced (the operator learns why a column is NULL
/// without reading the document) and records it for the counter.
fn log_nulled(
    namespace: &Namespace,
    converted: &crate::mapping::convert::Converted,
    out: &mut Normalized,
) {
    let key = &converted.rows.id;
    for n in &converted.nulled {
        tracing::warn!(namespace = %namespace, key = %key, column = %n.column, source = %n.path, reason = %n.reason, "A value could not be converted; NULL is stored in its column (on_error: null) and the row is written.");
        out.nulled.push((namespace.to_string(), n.column.clone()));
    }
}

/// True for an update that says what it changed and changed nothing a child table reads.
fn keeps_children(mapping: &CollectionMapping, event: &ChangeEvent) -> bool {
    let Some(paths) = &event.updated_paths else {
        return false;
    };
    event.op == Op::Update
        && !mapping.children.is_empty()
        && paths.iter().all(|p| {
            mapping
                .children
                .iter()
                .all(|child| !overlaps(p, &child.source.0))
        })
}

#[allow(clippy::too_many_arguments)]
fn refuse(
    policy: OnError,
    fatal: bool,
    namespace: &Namespace,
    (key, row_key): (Option<Bson>, Option<&PgValue>),
    doc: Option<&RawDocument>,
    reason: String,
    cluster_time: Option<chrono::DateTime<chrono::Utc>>,
    out: &mut Normalized,
) -> Result<(), FatalConversion> {
    let key_json = key.as_ref().map(to_json).unwrap_or(serde_json::Value::Null);
    if fatal || policy == OnError::Fail {
        return Err(FatalConversion {
            namespace: namespace.to_string(),
            key: key_json.to_string(),
            reason,
        });
    }
    tracing::warn!(namespace = %namespace, key = %key_json, reason = %reason, "A document could not be converted; it is written to the dead letters and the rest of the batch goes on (fix the mapping and restart: open letters are retried at start).");
    out.dead_letters.push(
        DeadLetter::new(
            &namespace.to_string(),
            key.as_ref(),
            doc,
            &reason,
            cluster_time,
        )
        .with_row_key(row_key),
    );
    Ok(())
}
