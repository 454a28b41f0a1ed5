//! `PostgresSink`: one batch, one transaction. Per collection: `TRUNCATE` if the batch holds
//! one; one `DELETE … WHERE key = ANY($1)` per table for every key the batch touches (children
//! by parent key); one binary `COPY` per table of the new rows; then dead letters and the
//! checkpoint; then `COMMIT`. Documents whose child rows may stay (`Change::UpsertParent`)
//! lose and regain only their parent row, unless `stale` or a missing parent row says their
//! child rows are out of date.
//!
//! Why delete-then-COPY rather than COPY into a TEMP staging table followed by
//! `INSERT … SELECT … ON CONFLICT DO UPDATE`: both leave the same rows, but staging writes and
//! reads every row twice and speculative insertion costs more than a plain insert; measured on
//! 5000-row batches the staged upsert took about 1.6× the server time of delete + COPY
//! (BENCHMARKS.md, "Sink"). Delete-then-insert is only safe with one writer per table, which the
//! stream's advisory lock provides (SPEC "Exclusion and fail-over"); a second writer racing on
//! the same key fails with a unique violation rather than leaving a wrong row.

use std::collections::HashSet;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::types::Type;

use super::catalog;
use super::copy::{self, CopyError};
use super::copy_progress::{self, ChunkDone};
use super::ddl::{self, qualified, quote_ident};
use super::plan::{self, CollectionPlan};
use super::stale::{StaleRecords, StaleSql};
use super::state;
use crate::config::SynchronousCommit;
use crate::mapping::model::{MappingSet, TableDef};
use crate::mapping::value::{PgValue, Row};
use crate::sink::error::describe;
use crate::sink::{Batch, Change, Checkpoint, DeadLetter, DocumentRows, Sink, SinkError};

/// How long `apply` waits for a pooled connection before reporting a (retryable) error.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The SQL of one table, built once from the mapping.
#[derive(Debug)]
struct TableSql {
    /// Wire types of the columns, in order, for binary COPY.
    types: Vec<Type>,
    columns: Vec<String>,
    copy: String,
    /// `DELETE … WHERE <first key column> = ANY($1)`: by key for a parent, by parent key for a
    /// child.
    delete_by_key: String,
    /// The same, returning the keys of the rows it deleted.
    delete_returning_key: String,
    qualified: String,
}

impl TableSql {
    fn new(schema: &str, def: &TableDef) -> TableSql {
        let qualified_name = qualified(schema, &def.name);
        let cols: Vec<String> = def.columns.iter().map(|(n, _)| quote_ident(n)).collect();
        let first_key = def.primary_key.first().map_or(&cols[0], |&i| &cols[i]);
        TableSql {
            types: def.columns.iter().map(|(_, t)| ddl::wire_type(t)).collect(),
            copy: format!(
                "COPY {qualified_name} ({}) FROM STDIN (FORMAT binary)",
                cols.join(", ")
            ),
            delete_by_key: format!("DELETE FROM {qualified_name} WHERE {first_key} = ANY($1)"),
            delete_returning_key: format!(
                "DELETE FROM {qualified_name} WHERE {first_key} = ANY($1) RETURNING {first_key}"
            ),
            columns: def.columns.iter().map(|(n, _)| n.clone()).collect(),
            qualified: qualified_name,
        }
    }
}

/// Writes batches to Postgres. See `Sink` for the contract; this type keeps it by running each
/// batch in a single transaction on one pooled connection.
pub struct PostgresSink {
    pool: Pool,
    schema: String,
    state_schema: String,
    stream: String,
    mappings: Arc<MappingSet>,
    /// Per collection: parent first, then children.
    tables: Vec<Vec<TableSql>>,
    /// Per collection: `db.coll`, as `stale_children` names it.
    namespaces: Vec<String>,
    stale: StaleSql,
    table_defs: Vec<Vec<TableDef>>,
    checkpoint_sql: String,
    /// `host:port/dbname`, for error messages (never credentials).
    target: String,
    /// The stream's lock (`crate::lease`): when set, nothing commits unless it is still held.
    lease: Option<crate::lease::LeaseFlag>,
    /// `SET LOCAL synchronous_commit = …`, the first statement of every batch that carries a
    /// checkpoint.
    synchronous_commit_sql: String,
    checkpoint_advance_sql: String,
    /// The resume token this sink committed last (or was told is stored): the next checkpoint
    /// only replaces that one, so commits Postgres took back are noticed (`CheckpointRewound`).
    last_checkpoint: Option<serde_json::Value>,
    /// `state::resolve_written_sql`: resolves the open dead letters of the keys a transaction
    /// writes or deletes (a later version written, or the document deleted).
    resolve_written_sql: String,
    /// Per collection: whether it may have open dead letters. True until the retry at start
    /// says otherwise (`set_open_letters`), and again once a letter is written, so a stream
    /// without letters spends no statement per batch on resolving them.
    open_letters: Vec<AtomicBool>,
}

impl PostgresSink {
    /// Builds the pool from `postgres.uri` and checks that one connection can be opened.
    /// `pool_size` is the most connections the sink opens (`apply` uses one at a time; the
    /// rest serve `copy_rows` and `ensure_schema`).
    pub async fn connect(
        uri: &str,
        pool_size: usize,
        schema: &str,
        state_schema: &str,
        stream: &str,
        mappings: Arc<MappingSet>,
    ) -> Result<Self, SinkError> {
        let connector = crate::pg::Connector::from_uri(uri).map_err(|e| SinkError::InvalidUri {
            // `pg` errors name the parameter or file, never a value of the URI.
            reason: e.to_string(),
        })?;
        let target = connector.target().to_owned();

        let manager = connector.manager(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            // LIFO keeps `apply` on the same warm connection and its prepared statements.
            .queue_mode(QueueMode::Lifo)
            .build()
            .map_err(|e| SinkError::InvalidUri {
                reason: e.to_string(),
            })?;

        let mut sink = PostgresSink {
            pool,
            schema: schema.to_owned(),
            state_schema: state_schema.to_owned(),
            stream: stream.to_owned(),
            mappings: Arc::new(MappingSet::default()),
            tables: Vec::new(),
            namespaces: Vec::new(),
            stale: StaleSql::new(state_schema),
            table_defs: Vec::new(),
            checkpoint_sql: state::checkpoint_upsert_sql(state_schema),
            target,
            lease: None,
            synchronous_commit_sql: synchronous_commit_sql(SynchronousCommit::default()),
            checkpoint_advance_sql: state::checkpoint_advance_sql(state_schema),
            last_checkpoint: None,
            resolve_written_sql: state::resolve_written_sql(state_schema),
            open_letters: Vec::new(),
        };
        sink.set_mappings(mappings);
        // Fail fast (and say where) instead of at the first batch.
        drop(sink.connection().await?);
        Ok(sink)
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }
    /// Writes by `mappings` from now on (a reload between batches): everything the sink derives
    /// from the mappings is derived again. Every collection may have open dead letters until the
    /// next `set_open_letters`.
    pub fn set_mappings(&mut self, mappings: Arc<MappingSet>) {
        self.table_defs = mappings
            .collections
            .iter()
            .map(ddl::collection_tables)
            .collect();
        self.tables = self
            .table_defs
            .iter()
            .map(|defs| {
                defs.iter()
                    .map(|d| TableSql::new(&self.schema, d))
                    .collect()
            })
            .collect();
        self.namespaces = mappings.collections.iter().map(|c| c.namespace()).collect();
        self.open_letters = mappings
            .collections
            .iter()
            .map(|_| AtomicBool::new(true))
            .collect();
        self.mappings = mappings;
    }
    /// From now on every commit first checks that `lease` is still held.
    pub fn set_lease(&mut self, lease: crate::lease::LeaseFlag) {
        self.lease = Some(lease);
    }
    /// How batches with a checkpoint commit (`postgres.synchronous_commit`; default `off`, see
    /// `SynchronousCommit`). Everything else commits as the server and role say.
    pub fn set_synchronous_commit(&mut self, mode: SynchronousCommit) {
        self.synchronous_commit_sql = synchronous_commit_sql(mode);
    }
    /// The checkpoint the stream resumes from, as just read from the state table: the next
    /// batch's checkpoint must replace exactly that one.
    pub fn expect_checkpoint(&mut self, stored: Option<&Checkpoint>) {
        self.last_checkpoint = stored.map(|c| c.resume_token.clone());
    }
    /// The collections (indexes into the mappings) that have open dead letters, as just read
    /// from the state table: the others skip resolving until they get a letter.
    pub fn set_open_letters(&self, open: &[usize]) {
        for (c, flag) in self.open_letters.iter().enumerate() {
            flag.store(open.contains(&c), Ordering::Relaxed);
        }
    }
    pub fn schema(&self) -> &str {
        &self.schema
    }
    pub fn state_schema(&self) -> &str {
        &self.state_schema
    }
    pub fn mappings(&self) -> &Arc<MappingSet> {
        &self.mappings
    }
    /// The pool, for callers that read state (`state::read_checkpoint`, phases) with the same
    /// connection settings.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn connection(&self) -> Result<Object, SinkError> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_error(&self.target, e))
    }

    /// Creates missing schemas, tables, columns, child tables and state tables. Never drops or
    /// alters existing ones; safe to run at every start and concurrently. Runs only the
    /// statements whose object the catalog lacks (`catalog::missing`), so when everything
    /// exists no DDL runs at all and a role without `CREATE` or ownership can stream; when
    /// something is missing and the role may not create it, the error names each object and
    /// the `GRANT`s or `tributary schema --apply` that fix it.
    pub async fn ensure_schema(&self) -> Result<(), SinkError> {
        let client = self.connection().await?;
        let statements = ddl::schema_ddl(&self.mappings, &self.schema, &self.state_schema);
        let missing = catalog::missing(&client, &statements)
            .await
            .map_err(|e| SinkError::postgres("reading the catalog for missing tables", e))?;
        if missing.is_empty() {
            return Ok(());
        }
        let todo: Vec<String> = missing.iter().map(|m| m.statement.clone()).collect();
        match ddl::apply_ddl(&client, &todo).await {
            Err(e) if e.code() == Some("42501") => Err(missing_objects(&client, &missing, e).await),
            other => other,
        }
    }

    /// Bulk path for full sync: writes documents of one collection in one transaction (no
    /// checkpoint) and returns how many parent rows were written.
    ///
    /// Semantics are those of `apply` with one `Upsert` per document: a row with the same key
    /// is replaced and its child rows with it; a document repeated in `rows` keeps its last
    /// occurrence. Rows whose keys are not in `rows` are never touched.
    ///
    /// Hand-off guarantee: a snapshot row overwrites whatever is there, so the snapshot must not
    /// race the stream on the same collection. The safe order (SPEC "Full sync → streaming") is:
    /// record the stream position, copy with `copy_rows`, then stream from the recorded
    /// position. Every change made during the copy is replayed afterwards and wins, because
    /// replay is by key: a document the snapshot read before it changed is rewritten by the
    /// replay, one it read before it was deleted is deleted by the replay. No stale row survives
    /// the catch-up. Each call takes its own pooled connection, so different collections may
    /// be copied concurrently (one writer per table, as for `apply`).
    ///
    /// `rows` is emptied, except after a data error (`SinkError::is_data_error`): then it
    /// holds the rows again, so the caller can narrow the error to the documents that cause
    /// it (the full sync does).
    pub async fn copy_rows(
        &self,
        collection: usize,
        rows: &mut Vec<DocumentRows>,
    ) -> Result<u64, SinkError> {
        self.copy_chunk(collection, rows, None).await
    }

    /// `copy_rows`, recording `done` (the chunk's progress, `copy_progress`) in the same
    /// transaction, so a resumed copy knows exactly which chunks are in the tables. `rows` is
    /// also handed back after a retryable error, so the caller can write the same chunk again.
    pub async fn copy_chunk(
        &self,
        collection: usize,
        rows: &mut Vec<DocumentRows>,
        done: Option<&ChunkDone>,
    ) -> Result<u64, SinkError> {
        let tables = self.table_defs.get(collection).ok_or_else(|| {
            SinkError::InvalidBatch(format!("collection #{collection} is not mapped"))
        })?;
        let key_index = tables[0].primary_key[0];
        // Before the rows are taken: a connection that cannot be had leaves them to the caller.
        let mut client = self.connection().await?;
        let changes: Vec<Change> = std::mem::take(rows)
            .into_iter()
            .map(|rows| Change::Upsert {
                collection,
                key: rows.parent.get(key_index).cloned().unwrap_or(PgValue::Null),
                rows,
            })
            .collect();
        let plans = plan::plan(&changes, &self.table_defs)?;
        let written = plans[collection].upserts.len() as u64;
        let result = self
            .write_then(&mut client, plans, &[], None, None, &[], done, true)
            .await;
        if result
            .as_ref()
            .is_err_and(|e| e.is_data_error() || e.is_retryable())
        {
            rows.extend(changes.into_iter().filter_map(|c| match c {
                Change::Upsert { rows, .. } => Some(rows),
                _ => None,
            }));
        } else {
            // Freeing a chunk's rows takes real time; the other core can do it meanwhile.
            crate::sink::free_later::free_later(changes);
        }
        match result {
            Ok(()) => Ok(written),
            Err(e) => {
                discard(client);
                Err(e)
            }
        }
    }

    /// Applies a batch that carries no checkpoint (dead letters found by a full sync, with
    /// their `Change::Refused`), like `apply` but through a shared reference, so it can run
    /// beside `copy_rows` calls.
    pub async fn apply_uncheckpointed(&self, batch: &Batch) -> Result<(), SinkError> {
        self.apply_with_progress(batch, None).await
    }

    /// `apply_uncheckpointed`, recording a copy's chunk `done` in the same transaction (the
    /// last step of a chunk whose rows Postgres partly refused: its dead letters and progress).
    pub async fn apply_with_progress(
        &self,
        batch: &Batch,
        done: Option<&ChunkDone>,
    ) -> Result<(), SinkError> {
        if batch.checkpoint.is_some() {
            return Err(SinkError::InvalidBatch(
                "apply_uncheckpointed was given a checkpoint; use Sink::apply".into(),
            ));
        }
        let plans = plan::plan(&batch.changes, &self.table_defs)?;
        let mut client = self.connection().await?;
        let result = self
            .write_then(
                &mut client,
                plans,
                &batch.dead_letters,
                None,
                None,
                &[],
                done,
                true,
            )
            .await;
        if result.is_err() {
            discard(client);
        }
        result
    }

    /// The retry of open dead letters at start (`pipeline::dead_letters`): writes the current
    /// versions of their documents (`changes`, no checkpoint) and resolves the letters `ids`
    /// in the same transaction, so a letter is never resolved without its rows.
    pub async fn apply_retried(&self, changes: &[Change], ids: &[i64]) -> Result<(), SinkError> {
        let plans = plan::plan(changes, &self.table_defs)?;
        let mut client = self.connection().await?;
        let result = self
            .write_then(&mut client, plans, &[], None, None, ids, None, true)
            .await;
        if result.is_err() {
            discard(client);
        }
        result
    }

    async fn write(
        &self,
        client: &mut Object,
        plans: Vec<CollectionPlan<'_>>,
        dead_letters: &[DeadLetter],
        checkpoint: Option<&Checkpoint>,
        previous: Option<&serde_json::Value>,
    ) -> Result<(), SinkError> {
        self.write_then(
            client,
            plans,
            dead_letters,
            checkpoint,
            previous,
            &[],
            None,
            true,
        )
        .await
    }

    /// `write`, also resolving the dead letters `resolve` (by id) and recording a copy's
    /// `chunk`, ending in `COMMIT` or (for `probe`) `ROLLBACK`.
    #[allow(clippy::too_many_arguments)]
    async fn write_then(
        &self,
        client: &mut Object,
        plans: Vec<CollectionPlan<'_>>,
        dead_letters: &[DeadLetter],
        checkpoint: Option<&Checkpoint>,
        previous: Option<&serde_json::Value>,
        resolve: &[i64],
        chunk: Option<&ChunkDone>,
        commit: bool,
    ) -> Result<(), SinkError> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| SinkError::postgres("starting a transaction", e))?;
        if checkpoint.is_some() {
            // Asynchronous commit by default: each batch would otherwise wait for its own WAL
            // flush (~45 ms on an ordinary disk, about as long as writing 5,000 rows). A crash
            // can then take back the last batches, but only with their checkpoints and only a
            // suffix of them (the WAL is one sequence): the next checkpoint write notices
            // (`previous`) and the stream replays from the stored one.
            tx.batch_execute(&self.synchronous_commit_sql)
                .await
                .map_err(|e| SinkError::postgres("setting synchronous_commit", e))?;
        }
        // Documents whose rows this transaction writes or deletes: their open letters are
        // resolved (a later version was written, or the document is gone). Resolved before
        // this batch's own letters are written, because the batch does not say whether a
        // letter's version came before or after the write of its key: a letter is left open
        // rather than resolved wrongly, and the retry at the next start settles it.
        let written: Vec<(usize, Vec<String>)> = if commit {
            plans
                .iter()
                .enumerate()
                .filter(|(c, _)| self.open_letters[*c].load(Ordering::Relaxed))
                .map(|(c, p)| (c, plan::written_keys(p)))
                .filter(|(_, keys)| !keys.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        for (c, p) in plans.into_iter().enumerate() {
            if !p.is_empty() {
                let stale = self.stale.of(&self.stream, &self.namespaces[c]);
                write_collection(&tx, &self.tables[c], &stale, p).await?;
            }
        }
        for (c, keys) in &written {
            let stmt = tx
                .prepare_cached(&self.resolve_written_sql)
                .await
                .map_err(|e| SinkError::postgres("resolving dead letters", e))?;
            tx.execute(&stmt, &[&self.stream, &self.namespaces[*c], keys])
                .await
                .map_err(|e| SinkError::postgres("resolving dead letters", e))?;
        }
        state::resolve_ids(&*tx, &self.state_schema, resolve).await?;
        for d in dead_letters {
            if let Some(c) = self.namespaces.iter().position(|n| *n == d.namespace) {
                self.open_letters[c].store(true, Ordering::Relaxed);
            }
        }
        state::insert_dead_letters(&*tx, &self.state_schema, &self.stream, dead_letters).await?;
        if let Some(chunk) = chunk {
            copy_progress::record_chunk(&*tx, &self.state_schema, &self.stream, chunk).await?;
        }
        if let Some(cp) = checkpoint {
            let doing = || format!("writing the checkpoint of stream {:?}", cp.stream);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&cp.stream, &cp.source, &cp.resume_token, &cp.cluster_time];
            match previous {
                None => {
                    let stmt = tx
                        .prepare_cached(&self.checkpoint_sql)
                        .await
                        .map_err(|e| SinkError::postgres(doing(), e))?;
                    tx.execute(&stmt, &params)
                        .await
                        .map_err(|e| SinkError::postgres(doing(), e))?;
                }
                Some(previous) => {
                    let stmt = tx
                        .prepare_cached(&self.checkpoint_advance_sql)
                        .await
                        .map_err(|e| SinkError::postgres(doing(), e))?;
                    let mut with_previous = params.to_vec();
                    with_previous.push(previous);
                    let moved = tx
                        .execute(&stmt, &with_previous)
                        .await
                        .map_err(|e| SinkError::postgres(doing(), e))?;
                    if moved == 0 {
                        return Err(SinkError::CheckpointRewound {
                            stream: cp.stream.clone(),
                        });
                    }
                }
            }
        }
        if !commit {
            return tx
                .rollback()
                .await
                .map_err(|e| SinkError::postgres("rolling back a trial write", e));
        }
        // Only the stream's writer may commit (exclusive writer, SPEC "Exclusion and fail-over").
        if let Some(lease) = &self.lease {
            lease.ensure_held()?;
        }
        tx.commit()
            .await
            .map_err(|e| SinkError::postgres("committing the batch", e))
    }
}

impl Sink for PostgresSink {
    async fn probe(&mut self, changes: &[Change]) -> Result<(), SinkError> {
        let plans = plan::plan(changes, &self.table_defs)?;
        let mut client = self.connection().await?;
        let result = self
            .write_then(&mut client, plans, &[], None, None, &[], None, false)
            .await;
        if result.is_err() {
            discard(client);
        }
        result
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let plans = plan::plan(&batch.changes, &self.table_defs)?;
        let mut client = self.connection().await?;
        let result = self
            .write(
                &mut client,
                plans,
                &batch.dead_letters,
                batch.checkpoint.as_ref(),
                self.last_checkpoint.as_ref(),
            )
            .await;
        match (&result, &batch.checkpoint) {
            (Ok(()), Some(cp)) => self.last_checkpoint = Some(cp.resume_token.clone()),
            (Ok(()), None) => {}
            (Err(_), _) => discard(client),
        }
        result
    }
}

/// Closes a connection whose state is uncertain (a failed COPY, a broken socket) instead of
/// returning it to the pool; the pool opens a fresh one when needed.
fn discard(client: Object) {
    drop(Object::take(client));
}

/// Applies one collection's plan.
async fn write_collection(
    tx: &deadpool_postgres::Transaction<'_>,
    tables: &[TableSql],
    stale: &StaleRecords<'_>,
    p: CollectionPlan<'_>,
) -> Result<(), SinkError> {
    let Some((parent, children)) = tables.split_first() else {
        return Ok(());
    };
    if p.truncate {
        let names: Vec<&str> = tables.iter().map(|t| t.qualified.as_str()).collect();
        tx.batch_execute(&format!("TRUNCATE {}", names.join(", ")))
            .await
            .map_err(|e| SinkError::postgres(format!("truncating {}", names.join(", ")), e))?;
        if !children.is_empty() {
            stale.clear(tx).await?;
        }
    }

    // Documents recorded as stale among those this batch touches (none after a truncate).
    let recorded = if children.is_empty() || p.truncate {
        HashSet::new()
    } else {
        let touched: Vec<String> = p
            .deletes
            .iter()
            .copied()
            .chain(p.upserts.iter().map(|(key, _)| *key))
            .chain(p.parent_upserts.iter().map(|(key, _)| *key))
            .map(plan::key_text)
            .collect();
        stale.recorded(tx, &touched).await?
    };

    // An `UpsertParent` keeps its child rows only when they are current: its parent row is
    // there (deleting it tells) and it is not recorded as stale. Otherwise it is a full upsert.
    let mut upserts = p.upserts;
    let mut kept = Vec::new();
    let (fresh, out_of_date): (Vec<_>, Vec<_>) = p
        .parent_upserts
        .into_iter()
        .partition(|(key, _)| !recorded.contains(&plan::key_text(key)));
    upserts.extend(out_of_date);
    if !fresh.is_empty() {
        let keys = PgValue::Array(fresh.iter().map(|(key, _)| (*key).clone()).collect());
        let existing = delete_returning_keys(tx, parent, &keys).await?;
        for (key, rows) in fresh {
            if existing.contains(&plan::key_text(key)) {
                kept.push((key, rows));
            } else {
                upserts.push((key, rows));
            }
        }
    }

    // After a truncate in this batch the tables are empty: nothing to delete. Otherwise every
    // other touched key loses its old parent row and all its child rows; upserts are re-inserted.
    let touched = !p.deletes.is_empty() || !upserts.is_empty();
    if !p.truncate && touched {
        let keys = PgValue::Array(
            p.deletes
                .iter()
                .chain(upserts.iter().map(|(key, _)| key))
                .map(|&key| key.clone())
                .collect(),
        );
        for table in children.iter().chain(std::iter::once(parent)) {
            delete_keys(tx, table, &keys).await?;
        }
    }

    let parents: Vec<&Row> = upserts
        .iter()
        .chain(&kept)
        .map(|(_, d)| &d.parent)
        .collect();
    copy_in(tx, parent, &parents).await?;
    for (i, child) in children.iter().enumerate() {
        let rows: Vec<&Row> = upserts
            .iter()
            .flat_map(|(_, d)| d.children.get(i).into_iter().flatten())
            .collect();
        copy_in(tx, child, &rows).await?;
    }

    if !children.is_empty() {
        // Every recorded document touched here was rewritten or deleted, unless refused again.
        let refused: HashSet<String> = p.refused.iter().map(|k| plan::key_text(k)).collect();
        let forget: Vec<String> = recorded
            .iter()
            .filter(|k| !refused.contains(*k))
            .cloned()
            .collect();
        let record: Vec<String> = refused
            .into_iter()
            .filter(|k| !recorded.contains(k))
            .collect();
        stale.forget(tx, &forget).await?;
        stale.record(tx, &record).await?;
    }
    Ok(())
}

/// Deletes the parent rows of `keys` and returns the keys (`plan::key_text`) that had one.
async fn delete_returning_keys(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &TableSql,
    keys: &PgValue,
) -> Result<HashSet<String>, SinkError> {
    let doing = || format!("deleting from {}", table.qualified);
    let stmt = tx
        .prepare_cached(&table.delete_returning_key)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    let rows = tx
        .query(&stmt, &[keys])
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    rows.iter()
        .map(|r| r.try_get::<_, PgValue>(0).map(|k| plan::key_text(&k)))
        .collect::<Result<_, _>>()
        .map_err(|e| SinkError::postgres(doing(), e))
}

async fn delete_keys(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &TableSql,
    keys: &PgValue,
) -> Result<(), SinkError> {
    let doing = || format!("deleting from {}", table.qualified);
    let stmt = tx
        .prepare_cached(&table.delete_by_key)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    tx.execute(&stmt, &[keys])
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    Ok(())
}

/// Binary COPY of `rows` into `table`; no round trip when there is nothing to copy.
async fn copy_in(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &TableSql,
    rows: &[&Row],
) -> Result<u64, SinkError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let doing = || format!("copying rows into {}", table.qualified);
    let stmt = tx
        .prepare_cached(&table.copy)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    let sink = tx
        .copy_in(&stmt)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    let sink = pin!(sink);
    copy::copy_rows(sink, &table.types, rows)
        .await
        .map_err(|e| match e {
            CopyError::Postgres(e) => SinkError::postgres(doing(), e),
            CopyError::Encode(_, column, reason) => SinkError::Value {
                table: table.qualified.clone(),
                column: table.columns.get(column).cloned().unwrap_or_default(),
                reason,
            },
        })
}

fn synchronous_commit_sql(mode: SynchronousCommit) -> String {
    format!("SET LOCAL synchronous_commit = {}", mode.as_str())
}

/// `host:port/dbname` (never user or password) for error messages.
/// The error of `ensure_schema` when the role may not create what is missing: every missing
/// object and the grants that would let this role create it.
async fn missing_objects(
    client: &tokio_postgres::Client,
    missing: &[catalog::Missing],
    denied: SinkError,
) -> SinkError {
    let detail = match &denied {
        SinkError::Postgres { detail, .. } => detail.clone(),
        other => other.to_string(),
    };
    let role = match client.query_one("SELECT current_user::text", &[]).await {
        Ok(row) => row.get::<_, String>(0),
        Err(_) => return denied,
    };
    let grants = match catalog::grants_for(client, missing, &role).await {
        Ok(g) if !g.is_empty() => g.join(" "),
        _ => "(no GRANT suffices: run it as the owner)".to_owned(),
    };
    SinkError::MissingObjects {
        missing: catalog::summary(missing).join(", "),
        role,
        detail,
        grants,
    }
}

fn pool_error(target: &str, e: deadpool_postgres::PoolError) -> SinkError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(source) => SinkError::Connect {
            target: target.to_owned(),
            detail: describe(&source),
            source: Some(source),
        },
        PoolError::PostCreateHook(h) => SinkError::Connect {
            target: target.to_owned(),
            detail: format!("preparing the new connection failed: {h}"),
            source: None,
        },
        PoolError::Timeout(t) => SinkError::Pool {
            detail: format!("timed out ({t:?}) after {}s", POOL_WAIT.as_secs()),
            retryable: true,
        },
        PoolError::Closed => SinkError::Pool {
            detail: "the pool was closed".into(),
            retryable: false,
        },
        PoolError::NoRuntimeSpecified => SinkError::Pool {
            detail: "no async runtime configured".into(),
            retryable: false,
        },
    }
}
