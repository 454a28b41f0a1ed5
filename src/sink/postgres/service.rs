//! `PostgresSink`: one batch, one transaction. Parent rows go through binary COPY into a
//! per-connection TEMP staging table and one `INSERT … SELECT … ON CONFLICT` per table; deletes
//! are one `DELETE … = ANY($1)` per table; child rows are deleted per touched parent and
//! re-COPYed; then dead letters and the checkpoint; then `COMMIT`.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use super::ddl::{self, qualified, quote_ident};
use super::plan::{self, CollectionPlan};
use super::state;
use crate::mapping::model::{MappingSet, TableDef};
use crate::mapping::value::{PgValue, Row};
use crate::sink::error::describe;
use crate::sink::{Batch, Change, DocumentRows, Sink, SinkError};

/// How long `apply` waits for a pooled connection before reporting a (retryable) error.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The SQL of one table, built once from the mapping.
#[derive(Debug)]
struct TableSql {
    /// Wire types of the columns, in order, for binary COPY.
    types: Vec<Type>,
    /// Parent tables only: `CREATE TEMP TABLE` of the staging table (run once per connection).
    create_stage: Option<String>,
    copy_stage: String,
    upsert_from_stage: String,
    copy_direct: String,
    /// `DELETE … WHERE <first key column> = ANY($1)`: by key for a parent, by parent key for a
    /// child.
    delete_by_key: String,
    qualified: String,
}

impl TableSql {
    fn new(schema: &str, def: &TableDef, stage: Option<String>) -> TableSql {
        let qualified_name = qualified(schema, &def.name);
        let cols: Vec<String> = def.columns.iter().map(|(n, _)| quote_ident(n)).collect();
        let col_list = cols.join(", ");
        let pk: Vec<&String> = def.primary_key.iter().map(|&i| &cols[i]).collect();
        let pk_list = pk.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        let updates: Vec<String> = cols
            .iter()
            .enumerate()
            .filter(|(i, _)| !def.primary_key.contains(i))
            .map(|(_, c)| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let (create_stage, copy_stage, upsert_from_stage) = match &stage {
            Some(stage) => {
                let typed: Vec<String> = def
                    .columns
                    .iter()
                    .map(|(n, ty)| format!("{} {ty}", quote_ident(n)))
                    .collect();
                (
                    // ON COMMIT DELETE ROWS empties it at every commit without a TRUNCATE.
                    Some(format!(
                        "CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS",
                        typed.join(", ")
                    )),
                    format!("COPY pg_temp.{stage} ({col_list}) FROM STDIN (FORMAT binary)"),
                    format!(
                        "INSERT INTO {qualified_name} ({col_list}) SELECT {col_list} FROM pg_temp.{stage} \
                         ON CONFLICT ({pk_list}) {on_conflict}"
                    ),
                )
            }
            None => (None, String::new(), String::new()),
        };
        TableSql {
            types: def.columns.iter().map(|(_, t)| ddl::wire_type(t)).collect(),
            create_stage,
            copy_stage,
            upsert_from_stage,
            copy_direct: format!("COPY {qualified_name} ({col_list}) FROM STDIN (FORMAT binary)"),
            delete_by_key: format!("DELETE FROM {qualified_name} WHERE {} = ANY($1)", pk[0]),
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
    tables: Arc<Vec<Vec<TableSql>>>,
    table_defs: Vec<Vec<TableDef>>,
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
        let mut config: tokio_postgres::Config =
            uri.parse()
                .map_err(|e: tokio_postgres::Error| SinkError::InvalidUri {
                    // The driver's message never echoes the URI, so no secret leaks here.
                    reason: describe(&e),
                })?;
        if config.get_application_name().is_none() {
            config.application_name("tributary");
        }
        let target = describe_target(&config);

        let table_defs: Vec<Vec<TableDef>> = mappings
            .collections
            .iter()
            .map(ddl::collection_tables)
            .collect();
        let tables: Vec<Vec<TableSql>> = table_defs
            .iter()
            .enumerate()
            .map(|(c, defs)| {
                defs.iter()
                    .enumerate()
                    .map(|(t, def)| {
                        let stage = (t == 0).then(|| quote_ident(&format!("tributary_stage_{c}")));
                        TableSql::new(schema, def, stage)
                    })
                    .collect()
            })
            .collect();
        let tables = Arc::new(tables);

        let hook_tables = Arc::clone(&tables);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            // LIFO keeps `apply` on the same warm connection (prepared statements, staging).
            .queue_mode(QueueMode::Lifo)
            .post_create(Hook::async_fn(move |client, _| {
                let tables = Arc::clone(&hook_tables);
                Box::pin(async move {
                    // Staging tables live as long as the session; created here so that a
                    // batch never pays for (or logs a notice about) them.
                    let ddl: Vec<&str> = tables
                        .iter()
                        .filter_map(|t| t.first()?.create_stage.as_deref())
                        .collect();
                    if !ddl.is_empty() {
                        client
                            .batch_execute(&ddl.join(";\n"))
                            .await
                            .map_err(HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| SinkError::InvalidUri {
                reason: e.to_string(),
            })?;

        let sink = PostgresSink {
            pool,
            schema: schema.to_owned(),
            state_schema: state_schema.to_owned(),
            stream: stream.to_owned(),
            mappings,
            tables,
            table_defs,
        };
        // Fail fast (and say where) instead of at the first batch.
        drop(sink.connection(&target).await?);
        Ok(sink)
    }

    pub fn stream(&self) -> &str {
        &self.stream
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

    async fn connection(&self, target: &str) -> Result<Object, SinkError> {
        self.pool.get().await.map_err(|e| pool_error(target, e))
    }

    /// Creates missing schemas, tables, columns, child tables and state tables. Never drops or
    /// alters existing ones; safe to run at every start and concurrently.
    pub async fn ensure_schema(&self) -> Result<(), SinkError> {
        let client = self.connection("the sink pool").await?;
        let statements = ddl::schema_ddl(&self.mappings, &self.schema, &self.state_schema);
        ddl::apply_ddl(&client, &statements).await
    }

    /// Bulk path for full sync: writes documents of one collection in one transaction (no
    /// checkpoint) and returns how many parent rows were written.
    ///
    /// Semantics are those of `apply` with one `Upsert` per document: a row with the same key
    /// is overwritten and its child rows replaced; documents repeated in `rows` keep the last.
    /// It never deletes rows that are not in `rows`.
    ///
    /// Hand-off guarantee: a snapshot row overwrites whatever is there, so the snapshot must not
    /// race the stream on the same collection. The safe order (SPEC "Full sync → streaming") is:
    /// record the stream position, copy with `copy_rows`, then stream from the recorded
    /// position. Every change made during the copy is replayed afterwards and wins, because
    /// replay is an upsert/delete by key; a document the snapshot read before it was changed
    /// is corrected by the replay, and one it read before it was deleted is deleted by the
    /// replay. No stale row survives the catch-up. Runs on its own pooled connection, so
    /// several collections may be copied concurrently.
    pub async fn copy_rows(
        &self,
        collection: usize,
        rows: Vec<DocumentRows>,
    ) -> Result<u64, SinkError> {
        let tables = self.table_defs.get(collection).ok_or_else(|| {
            SinkError::InvalidBatch(format!("collection #{collection} is not mapped"))
        })?;
        let key_index = tables[0].primary_key[0];
        let changes = rows
            .into_iter()
            .map(|rows| Change::Upsert {
                collection,
                key: rows.parent.get(key_index).cloned().unwrap_or(PgValue::Null),
                rows,
            })
            .collect();
        let plans = plan::plan(changes, &self.table_defs)?;
        let written = plans[collection].upserts.len() as u64;
        let mut client = self.connection("the sink pool").await?;
        match self.write(&mut client, plans, &[], None).await {
            Ok(()) => Ok(written),
            Err(e) => {
                discard(client);
                Err(e)
            }
        }
    }

    async fn write(
        &self,
        client: &mut Object,
        plans: Vec<CollectionPlan>,
        dead_letters: &[crate::sink::DeadLetter],
        checkpoint: Option<&crate::sink::Checkpoint>,
    ) -> Result<(), SinkError> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| SinkError::postgres("starting a transaction", e))?;
        for (c, p) in plans.into_iter().enumerate() {
            if !p.is_empty() {
                write_collection(&tx, &self.tables[c], p).await?;
            }
        }
        state::insert_dead_letters(&*tx, &self.state_schema, &self.stream, dead_letters).await?;
        if let Some(cp) = checkpoint {
            state::write_checkpoint(&*tx, &self.state_schema, cp).await?;
        }
        tx.commit()
            .await
            .map_err(|e| SinkError::postgres("committing the batch", e))
    }
}

impl Sink for PostgresSink {
    async fn apply(&mut self, batch: Batch) -> Result<(), SinkError> {
        let plans = plan::plan(batch.changes, &self.table_defs)?;
        let mut client = self.connection("the sink pool").await?;
        let result = self
            .write(
                &mut client,
                plans,
                &batch.dead_letters,
                batch.checkpoint.as_ref(),
            )
            .await;
        if result.is_err() {
            discard(client);
        }
        result
    }
}

/// Closes a connection whose state is uncertain (a failed COPY, a broken socket) instead of
/// returning it to the pool; the pool opens a fresh one when needed.
fn discard(client: Object) {
    drop(Object::take(client));
}

async fn write_collection(
    tx: &deadpool_postgres::Transaction<'_>,
    tables: &[TableSql],
    p: CollectionPlan,
) -> Result<(), SinkError> {
    let Some((parent, children)) = tables.split_first() else {
        return Ok(());
    };
    if p.truncate {
        let names: Vec<&str> = tables.iter().map(|t| t.qualified.as_str()).collect();
        tx.batch_execute(&format!("TRUNCATE {}", names.join(", ")))
            .await
            .map_err(|e| SinkError::postgres(format!("truncating {}", names.join(", ")), e))?;
    }

    // After a truncate in this batch the tables are empty: nothing to delete.
    if !p.truncate {
        let touched: Vec<PgValue> = p
            .deletes
            .iter()
            .cloned()
            .chain(p.upserts.iter().map(|(k, _)| k.clone()))
            .collect();
        if !touched.is_empty() {
            let touched = PgValue::Array(touched);
            for child in children {
                delete_keys(tx, child, &touched).await?;
            }
        }
        if !p.deletes.is_empty() {
            delete_keys(tx, parent, &PgValue::Array(p.deletes)).await?;
        }
    }

    if p.upserts.is_empty() {
        return Ok(());
    }
    let parents: Vec<&Row> = p.upserts.iter().map(|(_, r)| &r.parent).collect();
    if p.truncate {
        // Empty table and unique keys: COPY straight in.
        copy_rows_in(tx, parent, &parent.copy_direct, &parents).await?;
    } else {
        copy_rows_in(tx, parent, &parent.copy_stage, &parents).await?;
        let stmt = tx
            .prepare_cached(&parent.upsert_from_stage)
            .await
            .map_err(|e| {
                SinkError::postgres(format!("preparing the upsert into {}", parent.qualified), e)
            })?;
        tx.execute(&stmt, &[])
            .await
            .map_err(|e| SinkError::postgres(format!("upserting into {}", parent.qualified), e))?;
    }
    for (i, child) in children.iter().enumerate() {
        let mut rows: Vec<&Row> = Vec::new();
        for (_, r) in &p.upserts {
            rows.extend(r.children.get(i).into_iter().flatten());
        }
        copy_rows_in(tx, child, &child.copy_direct, &rows).await?;
    }
    Ok(())
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

/// Binary COPY of `rows` with `copy_sql`; skips the round trips when there is nothing to copy.
async fn copy_rows_in(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &TableSql,
    copy_sql: &str,
    rows: &[&Row],
) -> Result<u64, SinkError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let doing = || format!("copying rows into {}", table.qualified);
    let stmt = tx
        .prepare_cached(copy_sql)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    let sink = tx
        .copy_in(&stmt)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &table.types));
    for row in rows {
        writer
            .as_mut()
            .write_raw(row.iter())
            .await
            .map_err(|e| SinkError::postgres(doing(), e))?;
    }
    writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| SinkError::postgres(doing(), e))
}

/// `host:port/dbname` (never user or password) for error messages.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}:{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default database)")
    )
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
