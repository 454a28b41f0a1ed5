//! `<state_schema>.requests`: what a command asks the running daemon of a stream to do
//! (`tributary resync`: kind `resync`; `tributary reload`: kind `reload`). The command inserts a
//! row; the daemon polls for rows it has not taken, takes one (`taken_at`), and answers it
//! (`done_at`, `outcome`). A daemon that stops before answering leaves the row taken but not
//! done; the next one (holding the stream's lock) takes such rows again.

use tokio_postgres::GenericClient;

use super::ddl::qualified;
use crate::sink::SinkError;

const TABLE: &str = "requests";

/// `CREATE TABLE IF NOT EXISTS` of the table, for `ddl::state_ddl`.
pub fn table_ddl(state_schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}(id bigserial primary key, stream text not null, kind text not null, collections text[], requested_at timestamptz not null default now(), taken_at timestamptz, done_at timestamptz, outcome text)",
        qualified(state_schema, TABLE)
    )
}

/// A request taken by the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: i64,
    pub collections: Vec<String>,
}

fn failed(e: tokio_postgres::Error) -> SinkError {
    SinkError::postgres("reading or writing the requests to the daemon", e)
}

/// Inserts a request; returns its id.
pub async fn insert(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    kind: &str,
    collections: &[String],
) -> Result<i64, SinkError> {
    let sql = format!(
        "INSERT INTO {} (stream, kind, collections) VALUES ($1, $2, $3) RETURNING id",
        qualified(state_schema, TABLE)
    );
    let row = client
        .query_one(sql.as_str(), &[&stream, &kind, &collections])
        .await
        .map_err(failed)?;
    Ok(row.get(0))
}

/// Takes the oldest request of `kind` nobody took yet.
pub async fn take(
    client: &impl GenericClient,
    state_schema: &str,
    stream: &str,
    kind: &str,
) -> Result<Option<Request>, SinkError> {
    let t = qualified(state_schema, TABLE);
    let sql = format!(
        "UPDATE {t} SET taken_at = now() WHERE id = (SELECT id FROM {t} \
         WHERE stream = $1 AND kind = $2 AND taken_at IS NULL ORDER BY id LIMIT 1 \
         FOR UPDATE SKIP LOCKED) RETURNING id, coalesce(collections, '{{}}')"
    );
    let row = client
        .query_opt(sql.as_str(), &[&stream, &kind])
        .await
        .map_err(failed)?;
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
        qualified(state_schema, TABLE)
    );
    client
        .execute(sql.as_str(), &[&stream, &kind])
        .await
        .map_err(failed)
}

/// Answers request `id`.
pub async fn answer(
    client: &impl GenericClient,
    state_schema: &str,
    id: i64,
    outcome: &str,
) -> Result<(), SinkError> {
    let sql = format!(
        "UPDATE {} SET done_at = now(), outcome = $2 WHERE id = $1",
        qualified(state_schema, TABLE)
    );
    client
        .execute(sql.as_str(), &[&id, &outcome])
        .await
        .map_err(failed)?;
    Ok(())
}

/// When request `id` was answered, and how (`None` while unanswered).
pub async fn outcome(
    client: &impl GenericClient,
    state_schema: &str,
    id: i64,
) -> Result<Option<String>, SinkError> {
    let sql = format!(
        "SELECT coalesce(outcome, '') FROM {} WHERE id = $1 AND done_at IS NOT NULL",
        qualified(state_schema, TABLE)
    );
    let row = client
        .query_opt(sql.as_str(), &[&id])
        .await
        .map_err(failed)?;
    Ok(row.map(|r| r.get(0)))
}
