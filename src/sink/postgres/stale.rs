//! Documents whose child rows may be older than their parent row: `<state_schema>.stale_children`.
//!
//! An update that leaves every child array alone (`Change::UpsertParent`) rewrites only the
//! parent row. That is only right while the child rows match the version the update started
//! from, which stops being true when a version of the document was refused (SPEC: a refused
//! version leaves the rows at the last good one, so a later good version must replace them
//! all). The sink therefore records every refused document here, in the batch's transaction,
//! and rewrites the child rows of any document found here; a full rewrite or a delete removes
//! it again. Keys are stored as text (`plan::key_text`), one key type per collection.

use std::collections::HashSet;

use tokio_postgres::types::ToSql;

use super::ddl::qualified;
use crate::sink::SinkError;

const TABLE: &str = "stale_children";

/// `CREATE TABLE IF NOT EXISTS` of the table, for `ddl::state_ddl`.
pub fn table_ddl(state_schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (stream text NOT NULL, namespace text NOT NULL, \
         document_key text NOT NULL, PRIMARY KEY (stream, namespace, document_key))",
        qualified(state_schema, TABLE)
    )
}

/// The statements on the table, built once per sink.
#[derive(Debug)]
pub struct StaleSql {
    select: String,
    remove: String,
    insert: String,
    clear: String,
}

impl StaleSql {
    pub fn new(state_schema: &str) -> StaleSql {
        let t = qualified(state_schema, TABLE);
        StaleSql {
            select: format!(
                "SELECT document_key FROM {t} \
                 WHERE stream = $1 AND namespace = $2 AND document_key = ANY($3)"
            ),
            remove: format!(
                "DELETE FROM {t} WHERE stream = $1 AND namespace = $2 AND document_key = ANY($3)"
            ),
            insert: format!(
                "INSERT INTO {t} (stream, namespace, document_key) \
                 SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING"
            ),
            clear: format!("DELETE FROM {t} WHERE stream = $1 AND namespace = $2"),
        }
    }

    /// The records of one collection of `stream`.
    pub fn of<'a>(&'a self, stream: &'a str, namespace: &'a str) -> StaleRecords<'a> {
        StaleRecords {
            sql: self,
            stream,
            namespace,
        }
    }
}

/// The records of one collection (`namespace` is `db.coll`) of one stream, read and written
/// inside the batch's transaction.
pub struct StaleRecords<'a> {
    sql: &'a StaleSql,
    stream: &'a str,
    namespace: &'a str,
}

impl StaleRecords<'_> {
    /// Which of `keys` are recorded.
    pub async fn recorded(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: &[String],
    ) -> Result<HashSet<String>, SinkError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let doing = || format!("reading {TABLE} of {}", self.namespace);
        let stmt = tx
            .prepare_cached(&self.sql.select)
            .await
            .map_err(|e| SinkError::postgres(doing(), e))?;
        let rows = tx
            .query(&stmt, &[&self.stream, &self.namespace, &keys])
            .await
            .map_err(|e| SinkError::postgres(doing(), e))?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(|e| SinkError::postgres(doing(), e))
    }

    /// Records `keys` (already recorded ones stay).
    pub async fn record(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: &[String],
    ) -> Result<(), SinkError> {
        self.run(tx, &self.sql.insert, Some(keys)).await
    }

    /// Forgets `keys`: their rows were rewritten or deleted.
    pub async fn forget(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: &[String],
    ) -> Result<(), SinkError> {
        self.run(tx, &self.sql.remove, Some(keys)).await
    }

    /// Forgets every document of the collection: its tables were truncated.
    pub async fn clear(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), SinkError> {
        self.run(tx, &self.sql.clear, None).await
    }

    async fn run(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        sql: &str,
        keys: Option<&[String]>,
    ) -> Result<(), SinkError> {
        if keys.is_some_and(<[String]>::is_empty) {
            return Ok(());
        }
        let doing = || format!("updating {TABLE} of {}", self.namespace);
        let stmt = tx
            .prepare_cached(sql)
            .await
            .map_err(|e| SinkError::postgres(doing(), e))?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.stream, &self.namespace];
        if let Some(keys) = &keys {
            params.push(keys);
        }
        tx.execute(&stmt, &params)
            .await
            .map_err(|e| SinkError::postgres(doing(), e))?;
        Ok(())
    }
}
