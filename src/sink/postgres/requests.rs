//! `<state_schema>.requests`: what a command asks of the daemon holding a stream's lock
//! (`tributary reload`: kind `reload`; `tributary resync`: kind `resync`). The command inserts a
//! row; the daemon polls for rows of its stream, marks one taken, and writes `done_at` and
//! `outcome` when it has acted; the command waits for those. Postgres is the only channel both
//! always reach, wherever they run. A daemon that stops before answering leaves the row taken
//! but not done; the next one (holding the stream's lock) may take such rows again.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::ddl::qualified;
use crate::sink::SinkError;

/// The request table, created with the other state tables (`ddl::state_ddl`).
pub fn table_ddl(state_schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         id bigserial primary key, \
         stream text not null, \
         kind text not null, \
         collections text[], \
         requested_at timestamptz not null default now(), \
         taken_at timestamptz, \
         done_at timestamptz, \
         outcome text)",
        qualified(state_schema, "requests")
    )
}

/// A request the daemon took.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: i64,
    pub collections: Option<Vec<String>>,
}

/// A request's answer, once the daemon wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub done_at: DateTime<Utc>,
    pub outcome: String,
}

fn sql_error(doing: &str, e: tokio_postgres::Error) -> SinkError {
    SinkError::postgres(doing.to_owned(), e)
}

/// Queues a request of `kind` for `stream`; its id.
pub async fn insert(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    kind: &str,
    collections: Option<&[String]>,
) -> Result<i64, SinkError> {
    let sql = format!(
        "INSERT INTO {} (stream, kind, collections) VALUES ($1, $2, $3) RETURNING id",
        qualified(state_schema, "requests")
    );
    let row = client
        .query_one(&sql, &[&stream, &kind, &collections])
        .await
        .map_err(|e| sql_error("queueing a request for the daemon", e))?;
    Ok(row.get(0))
}

/// Marks the oldest untaken request of `kind` for `stream` taken, and returns it. Requests of
/// other kinds are left to whoever handles them.
pub async fn take_next(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    kind: &str,
) -> Result<Option<Request>, SinkError> {
    let table = qualified(state_schema, "requests");
    let sql = format!(
        "UPDATE {table} SET taken_at = now() WHERE id = (\
         SELECT id FROM {table} WHERE stream = $1 AND kind = $2 AND taken_at IS NULL \
         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, collections"
    );
    let row = client
        .query_opt(&sql, &[&stream, &kind])
        .await
        .map_err(|e| sql_error("reading the requests queued for this stream", e))?;
    Ok(row.map(|r| Request {
        id: r.get(0),
        collections: r.get(1),
    }))
}

/// Makes the requests of `kind` that were taken but never answered (their daemon stopped)
/// takeable again. Call while holding the stream's lock.
pub async fn untake_unanswered(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    kind: &str,
) -> Result<u64, SinkError> {
    let sql = format!(
        "UPDATE {} SET taken_at = NULL WHERE stream = $1 AND kind = $2 AND done_at IS NULL",
        qualified(state_schema, "requests")
    );
    client
        .execute(&sql, &[&stream, &kind])
        .await
        .map_err(|e| sql_error("releasing requests a stopped daemon had taken", e))
}

/// Answers request `id`.
pub async fn finish(
    client: &impl GenericClient,
    state_schema: &str,
    id: i64,
    outcome: &str,
) -> Result<(), SinkError> {
    let sql = format!(
        "UPDATE {} SET done_at = now(), outcome = $2 WHERE id = $1",
        qualified(state_schema, "requests")
    );
    client
        .execute(&sql, &[&id, &outcome])
        .await
        .map_err(|e| sql_error("answering a request", e))?;
    Ok(())
}

/// Request `id`'s answer, `None` while the daemon has not written it.
pub async fn answer(
    client: &impl GenericClient,
    state_schema: &str,
    id: i64,
) -> Result<Option<Answer>, SinkError> {
    let sql = format!(
        "SELECT done_at, outcome FROM {} WHERE id = $1 AND done_at IS NOT NULL",
        qualified(state_schema, "requests")
    );
    let row = client
        .query_opt(&sql, &[&id])
        .await
        .map_err(|e| sql_error("reading the daemon's answer", e))?;
    Ok(row.map(|r| Answer {
        done_at: r.get(0),
        outcome: r.get::<_, Option<String>>(1).unwrap_or_default(),
    }))
}
