//! Tributary's own tables in `<state_schema>`: the checkpoint per stream, the lifecycle phase of
//! each collection, and dead letters (written, resolved, listed). Everything `tributary status`
//! and `tributary dead-letters` show is read here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::ddl::{qualified, DEAD_LETTER_VERSION_HASH};
use crate::sink::{Checkpoint, DeadLetter, SinkError};

/// A collection's lifecycle (SPEC: `pending → snapshot → streaming`), stored, never inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Mapped, never copied.
    Pending,
    /// The full copy is running (or was interrupted: it restarts).
    Snapshot,
    /// Copied; changes flow from the stream.
    Streaming,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Snapshot => "snapshot",
            Phase::Streaming => "streaming",
        }
    }
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "pending" => Some(Phase::Pending),
            "snapshot" => Some(Phase::Snapshot),
            "streaming" => Some(Phase::Streaming),
            _ => None,
        }
    }
}

/// One row of `<state_schema>.collections`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionState {
    pub namespace: String,
    pub phase: Phase,
    pub snapshot_started_at: Option<DateTime<Utc>>,
    pub snapshot_done_at: Option<DateTime<Utc>>,
    /// Documents copied by the last full sync.
    pub documents: Option<i64>,
}

impl CollectionState {
    /// A copy of `namespace` under way since `started_at`.
    pub fn copying(namespace: String, started_at: DateTime<Utc>) -> Self {
        CollectionState {
            namespace,
            phase: Phase::Snapshot,
            snapshot_started_at: Some(started_at),
            snapshot_done_at: None,
            documents: None,
        }
    }
}

/// The checkpoint row of a stream, with when it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointStatus {
    pub source: Option<String>,
    pub resume_token: Option<serde_json::Value>,
    pub cluster_time: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Open dead letters of one namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterCount {
    pub namespace: String,
    /// Open letters (resolved ones are not counted).
    pub count: i64,
    /// When the oldest open letter was written.
    pub oldest_at: Option<DateTime<Utc>>,
}

/// What is known about one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamStatus {
    pub stream: String,
    pub checkpoint: Option<CheckpointStatus>,
    pub collections: Vec<CollectionState>,
    pub dead_letters: Vec<DeadLetterCount>,
}

/// Everything `tributary status` prints. `initialized` is false when the state tables do not
/// exist yet (nothing ever ran against this database).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub initialized: bool,
    pub streams: Vec<StreamStatus>,
}

fn pg(doing: &str) -> impl FnOnce(tokio_postgres::Error) -> SinkError + '_ {
    move |e| SinkError::postgres(doing, e)
}

/// The statement that upserts a checkpoint: `$1` stream, `$2` source, `$3` resume token
/// (jsonb), `$4` cluster time; `updated_at` is the transaction time. The sink runs it inside
/// the transaction that writes the rows it covers: that is the whole durability argument.
pub fn checkpoint_upsert_sql(state_schema: &str) -> String {
    format!(
        "INSERT INTO {} (stream, source, resume_token, cluster_time, updated_at) \
         VALUES ($1, $2, $3, $4, now()) \
         ON CONFLICT (stream) DO UPDATE SET source = EXCLUDED.source, \
         resume_token = EXCLUDED.resume_token, cluster_time = EXCLUDED.cluster_time, \
         updated_at = EXCLUDED.updated_at",
        qualified(state_schema, "checkpoints")
    )
}

/// Moves the stream's checkpoint from `$5` (the resume token the writer committed last) to the
/// new one; no row is updated when the stored token is another one.
pub fn checkpoint_advance_sql(state_schema: &str) -> String {
    format!(
        "UPDATE {} SET source = $2, resume_token = $3, cluster_time = $4, updated_at = now() \
         WHERE stream = $1 AND resume_token = $5",
        qualified(state_schema, "checkpoints")
    )
}

/// The last committed checkpoint of `stream`, if any.
pub async fn read_checkpoint(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
) -> Result<Option<Checkpoint>, SinkError> {
    let sql = format!(
        "SELECT source, resume_token, cluster_time FROM {} WHERE stream = $1",
        qualified(state_schema, "checkpoints")
    );
    let doing = format!("reading the checkpoint of stream {stream:?}");
    let row = client
        .query_opt(&sql, &[&stream])
        .await
        .map_err(pg(&doing))?;
    Ok(row.map(|r| Checkpoint {
        stream: stream.to_owned(),
        source: r.get::<_, Option<String>>(0).unwrap_or_default(),
        resume_token: r
            .get::<_, Option<serde_json::Value>>(1)
            .unwrap_or(serde_json::Value::Null),
        cluster_time: r.get(2),
    }))
}

/// Inserts dead letters of `stream`; `at` is the transaction time.
pub async fn insert_dead_letters(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    letters: &[DeadLetter],
) -> Result<(), SinkError> {
    if letters.is_empty() {
        return Ok(());
    }
    // A version with an open letter is not recorded again: a batch replayed after a crash, or
    // a copy restarted after an interrupted full sync, meets the same versions again (SPEC
    // "Delivery: effectively once"; the ops crash test checks it). A version whose letter was
    // resolved is recorded anew: the document went back to content that is refused. The hash
    // finds the candidates through the open-version index; the equalities rule out a
    // collision.
    let sql = format!(
        "INSERT INTO {dl} (stream, namespace, document_key, document, error, cluster_time, at, \
                           row_key, id_bson) \
         SELECT $1::text, $2::text, $3::jsonb, $4::jsonb, $5::text, $6::timestamptz, now(), \
                $7::text, $8::bytea \
         WHERE NOT EXISTS (SELECT 1 FROM {dl} WHERE stream = $1::text AND namespace = $2::text \
                           AND resolved_at IS NULL AND {hash} = {new_hash} \
                           AND document_key IS NOT DISTINCT FROM $3::jsonb \
                           AND document IS NOT DISTINCT FROM $4::jsonb)",
        dl = qualified(state_schema, "dead_letters"),
        hash = DEAD_LETTER_VERSION_HASH,
        new_hash = "md5(coalesce($3::jsonb::text, '') || coalesce($4::jsonb::text, ''))",
    );
    let doing = "writing dead letters";
    let stmt = client.prepare(&sql).await.map_err(pg(doing))?;
    // Sent together (the driver pipelines concurrent statements): a burst of dead letters
    // costs one round trip, not one each.
    let inserts = letters.iter().map(|d| {
        let stmt = &stmt;
        async move {
            client
                .execute(
                    stmt,
                    &[
                        &stream,
                        &d.namespace,
                        &d.document_key,
                        &d.document,
                        &d.error,
                        &d.cluster_time,
                        &d.row_key,
                        &d.id_bson,
                    ],
                )
                .await
        }
    });
    futures::future::try_join_all(inserts)
        .await
        .map_err(pg(doing))?;
    Ok(())
}

/// `$1` stream, `$2` namespace, `$3` row keys (`text[]`): resolves the open letters of
/// documents whose rows a transaction writes or deletes.
pub fn resolve_written_sql(state_schema: &str) -> String {
    format!(
        "UPDATE {} SET resolved_at = now() WHERE stream = $1 AND namespace = $2 \
         AND resolved_at IS NULL AND row_key = ANY($3)",
        qualified(state_schema, "dead_letters")
    )
}

/// Resolves the letters `ids` (the retry at start: their document's current version was
/// written, or it is gone).
pub async fn resolve_ids(
    client: &impl GenericClient,
    state_schema: &str,
    ids: &[i64],
) -> Result<u64, SinkError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "UPDATE {} SET resolved_at = now() WHERE id = ANY($1) AND resolved_at IS NULL",
        qualified(state_schema, "dead_letters")
    );
    client
        .execute(&sql, &[&ids])
        .await
        .map_err(pg("resolving dead letters"))
}

/// One document with open dead letters: what `tributary dead-letters` lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenDeadLetter {
    pub namespace: String,
    /// The document's `_id` as plain JSON.
    #[serde(rename = "_id")]
    pub document_key: serde_json::Value,
    /// The reason of the newest open letter.
    pub error: String,
    /// When the oldest open letter was written.
    pub first_seen: DateTime<Utc>,
    /// When the newest was.
    pub last_seen: DateTime<Utc>,
    /// Open letters (refused versions) of the document.
    pub versions: i64,
    /// The letters' ids, oldest first.
    pub ids: Vec<i64>,
    /// The `_id`s exactly (`DeadLetter::id_bson`) of the letters that recorded one: several
    /// when documents whose `_id`s differ in type only share the plain JSON.
    #[serde(skip)]
    pub id_bson: Vec<Vec<u8>>,
}

/// The open letters of `stream`, one entry per document, oldest first (of `namespace` only
/// when given). Reads through the open-letter indexes; resolved letters are history.
pub async fn open_dead_letters(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    namespace: Option<&str>,
) -> Result<Vec<OpenDeadLetter>, SinkError> {
    let sql = format!(
        "SELECT namespace, document_key, (array_agg(error ORDER BY id DESC))[1], min(at), \
                max(at), count(*), array_agg(id ORDER BY id), \
                coalesce(array_agg(DISTINCT id_bson) FILTER (WHERE id_bson IS NOT NULL), '{{}}') \
         FROM {} WHERE stream = $1 AND resolved_at IS NULL \
           AND ($2::text IS NULL OR namespace = $2::text) \
         GROUP BY namespace, document_key ORDER BY min(at), min(id)",
        qualified(state_schema, "dead_letters")
    );
    let rows = client
        .query(&sql, &[&stream, &namespace])
        .await
        .map_err(pg("reading open dead letters"))?;
    Ok(rows
        .iter()
        .map(|r| OpenDeadLetter {
            namespace: r.get(0),
            document_key: r
                .get::<_, Option<serde_json::Value>>(1)
                .unwrap_or(serde_json::Value::Null),
            error: r.get::<_, Option<String>>(2).unwrap_or_default(),
            first_seen: r.get(3),
            last_seen: r.get(4),
            versions: r.get(5),
            ids: r.get(6),
            id_bson: r.get(7),
        })
        .collect())
}

/// Stores the whole state row of one collection (insert or replace).
pub async fn set_collection_state(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    state: &CollectionState,
) -> Result<(), SinkError> {
    let sql = format!(
        "INSERT INTO {} (stream, namespace, phase, snapshot_started_at, snapshot_done_at, documents) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (stream, namespace) DO UPDATE SET phase = EXCLUDED.phase, \
         snapshot_started_at = EXCLUDED.snapshot_started_at, \
         snapshot_done_at = EXCLUDED.snapshot_done_at, documents = EXCLUDED.documents",
        qualified(state_schema, "collections")
    );
    let doing = format!("recording the phase of {}", state.namespace);
    client
        .execute(
            &sql,
            &[
                &stream,
                &state.namespace,
                &state.phase.as_str(),
                &state.snapshot_started_at,
                &state.snapshot_done_at,
                &state.documents,
            ],
        )
        .await
        .map_err(pg(&doing))?;
    Ok(())
}

/// Every collection row of `stream`, ordered by namespace.
pub async fn collection_states(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
) -> Result<Vec<CollectionState>, SinkError> {
    let sql = format!(
        "SELECT namespace, phase, snapshot_started_at, snapshot_done_at, documents \
         FROM {} WHERE stream = $1 ORDER BY namespace",
        qualified(state_schema, "collections")
    );
    let rows = client
        .query(&sql, &[&stream])
        .await
        .map_err(pg("reading collection phases"))?;
    rows.iter()
        .map(|r| {
            let phase: String = r.get(1);
            Ok(CollectionState {
                namespace: r.get(0),
                phase: Phase::parse(&phase).ok_or_else(|| {
                    SinkError::InvalidBatch(format!(
                        "unknown phase {phase:?} in {}.collections",
                        state_schema
                    ))
                })?,
                snapshot_started_at: r.get(2),
                snapshot_done_at: r.get(3),
                documents: r.get(4),
            })
        })
        .collect()
}

/// The phase of one collection; `None` when it has no row yet (treat as `Pending`).
pub async fn collection_state(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    namespace: &str,
) -> Result<Option<CollectionState>, SinkError> {
    Ok(collection_states(client, state_schema, stream)
        .await?
        .into_iter()
        .find(|s| s.namespace == namespace))
}

/// Checkpoints, phases and dead-letter counts of every stream (or of `stream` only). A stream
/// appears when it has a checkpoint, a collection row or a dead letter.
pub async fn read_status(
    client: &tokio_postgres::Client,
    state_schema: &str,
    stream: Option<&str>,
) -> Result<Status, SinkError> {
    let exists: Option<String> = client
        .query_one(
            "SELECT to_regclass($1)::text",
            &[&qualified(state_schema, "checkpoints")],
        )
        .await
        .map_err(pg("looking for the state tables"))?
        .get(0);
    if exists.is_none() {
        return Ok(Status {
            initialized: false,
            streams: Vec::new(),
        });
    }

    let names_sql = format!(
        "SELECT stream FROM {cp} UNION SELECT stream FROM {co} UNION SELECT stream FROM {dl} \
         ORDER BY 1",
        cp = qualified(state_schema, "checkpoints"),
        co = qualified(state_schema, "collections"),
        dl = qualified(state_schema, "dead_letters"),
    );
    let names: Vec<String> = match stream {
        Some(s) => vec![s.to_owned()],
        None => client
            .query(&names_sql, &[])
            .await
            .map_err(pg("listing streams"))?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };

    let cp_sql = format!(
        "SELECT source, resume_token, cluster_time, updated_at FROM {} WHERE stream = $1",
        qualified(state_schema, "checkpoints")
    );
    // Open letters only. A table from before the lifecycle (no `resolved_at` until a `sync`
    // or `schema --apply` adds it; `status` writes nothing) counts every letter as open.
    let lifecycle: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 \
             AND table_name = 'dead_letters' AND column_name = 'resolved_at')",
            &[&state_schema],
        )
        .await
        .map_err(pg("looking for dead_letters.resolved_at"))?
        .get(0);
    let dl_sql = format!(
        "SELECT namespace, count(*), min(at) FROM {} WHERE stream = $1 {} \
         GROUP BY namespace ORDER BY namespace",
        qualified(state_schema, "dead_letters"),
        if lifecycle {
            "AND resolved_at IS NULL"
        } else {
            ""
        }
    );
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        let checkpoint = client
            .query_opt(&cp_sql, &[&name])
            .await
            .map_err(pg("reading checkpoints"))?
            .map(|r| CheckpointStatus {
                source: r.get(0),
                resume_token: r.get(1),
                cluster_time: r.get(2),
                updated_at: r.get(3),
            });
        let collections = collection_states(client, state_schema, &name).await?;
        let dead_letters = client
            .query(&dl_sql, &[&name])
            .await
            .map_err(pg("counting dead letters"))?
            .iter()
            .map(|r| DeadLetterCount {
                namespace: r.get(0),
                count: r.get(1),
                oldest_at: r.get(2),
            })
            .collect();
        streams.push(StreamStatus {
            stream: name,
            checkpoint,
            collections,
            dead_letters,
        });
    }
    Ok(Status {
        initialized: true,
        streams,
    })
}
