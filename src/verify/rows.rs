//! The Postgres side of verify: the statements it runs against one collection's tables and the
//! rows they return, read back as `PgValue`s through `sink::postgres::decode`.
//!
//! Rows are fetched by key (`key = ANY($1)`, one primary-key index scan per batch); each comes
//! with `hashtext(key::text)`, the hash the key buckets of `buckets` use, so that the same
//! function of the same value hashes both sides. Child rows are fetched by parent key.
//!
//! A fetched row stays in the driver's wire form (`FetchedRow`). A column is compared by first
//! encoding the expected value with the sink's own encoder (`ToSql for PgValue`, what a COPY
//! of that document would send) and comparing bytes; only when the bytes differ is the column
//! decoded and compared by value (`compare::same_value`), e.g. `jsonb`, which Postgres sends in
//! its own key order. Decoding every column was a tenth of a full verify's CPU.

use std::cell::RefCell;

use bytes::BytesMut;
use deadpool_postgres::{Object, Pool};
use postgres_types::{FromSql, IsNull, Type};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row as PgRow;

use super::compare::{same_value, ActualRow};
use super::error::VerifyError;
use crate::mapping::model::TableDef;
use crate::mapping::value::{PgValue, Row};
use crate::sink::postgres::ddl::{qualified, quote_ident};
use crate::sink::SinkError;

/// The statements of one table (a parent, or a child keyed by its parent key).
#[derive(Debug, Clone)]
pub struct TableQueries {
    pub name: String,
    pub qualified: String,
    /// `SELECT hashtext(k::text), <every column> … WHERE k = ANY($1)`.
    select_by_key: String,
    /// `SELECT k[, idx], xmin::text … WHERE k = ANY($1)`: which keys (child rows) are there,
    /// and which version of each row (a row the stream deleted and inserted again has
    /// another `xmin`).
    keys_by_key: String,
    /// `SELECT bucket, count(*), sum(hash) … GROUP BY bucket` for mask `$1`.
    bucket_counts: String,
    /// `SELECT k[, idx] … WHERE bucket = ANY($2)` for mask `$1` (a child's ordered by `k`).
    keys_in_buckets: String,
    count: String,
    /// `SELECT k … ORDER BY random() LIMIT $1`.
    sample_keys: String,
}

impl TableQueries {
    /// `child`: the table is a child table (keyed by `(parent_key, idx)`).
    pub fn new(schema: &str, def: &TableDef, child: bool) -> TableQueries {
        let table = qualified(schema, &def.name);
        let cols: Vec<String> = def.columns.iter().map(|(n, _)| quote_ident(n)).collect();
        let key = def
            .primary_key
            .first()
            .and_then(|&i| cols.get(i))
            .cloned()
            .unwrap_or_else(|| cols.first().cloned().unwrap_or_default());
        let hash = format!("hashtext({key}::text)");
        let key_cols = if child {
            format!("{key}, {}", quote_ident("idx"))
        } else {
            key.clone()
        };
        TableQueries {
            name: def.name.clone(),
            select_by_key: format!(
                "SELECT {hash}, {} FROM {table} WHERE {key} = ANY($1)",
                cols.join(", ")
            ),
            keys_by_key: format!(
                "SELECT {key_cols}, xmin::text FROM {table} WHERE {key} = ANY($1)"
            ),
            bucket_counts: format!(
                "SELECT h & $1::int4, count(*), sum(h::int8)::int8 \
                 FROM (SELECT {hash} AS h FROM {table}) AS t GROUP BY 1"
            ),
            keys_in_buckets: format!(
                "SELECT {key_cols} FROM {table} WHERE ({hash} & $1::int4) = ANY($2::int4[]){}",
                if child {
                    format!(" ORDER BY {key}")
                } else {
                    String::new()
                }
            ),
            count: format!("SELECT count(*) FROM {table}"),
            sample_keys: format!("SELECT {key} FROM {table} ORDER BY random() LIMIT $1"),
            qualified: table,
        }
    }

    fn decode_error(&self, e: tokio_postgres::Error) -> VerifyError {
        VerifyError::Decode {
            table: self.qualified.clone(),
            reason: e.to_string(),
        }
    }

    /// Rows whose key (parent key) is one of `keys`, each with its key's hash and its key
    /// column (`key_column`, in table order) decoded.
    pub async fn fetch(
        &self,
        client: &Object,
        keys: &[PgValue],
        key_column: usize,
    ) -> Result<Vec<(i32, PgValue, FetchedRow)>, VerifyError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .query(
                client,
                &self.select_by_key,
                &[&PgValue::Array(keys.to_vec())],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let hash: i32 = r.try_get(0).map_err(|e| self.decode_error(e))?;
                let key: PgValue = r
                    .try_get(key_column + 1)
                    .map_err(|e| self.decode_error(e))?;
                Ok((hash, key, FetchedRow { row: r, offset: 1 }))
            })
            .collect()
    }

    /// The rows whose key is one of `keys`: each its key (with `idx` for a child table), then
    /// its `xmin` as text.
    pub async fn existing(
        &self,
        client: &Object,
        keys: &[PgValue],
    ) -> Result<Vec<Row>, VerifyError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .query(client, &self.keys_by_key, &[&PgValue::Array(keys.to_vec())])
            .await?;
        rows.iter().map(|r| self.key_row(r)).collect()
    }

    /// A row of `keys_by_key`, `keys_in_buckets` or `sample_keys` as values.
    pub fn key_row(&self, r: &PgRow) -> Result<Row, VerifyError> {
        (0..r.len())
            .map(|i| r.try_get::<_, PgValue>(i))
            .collect::<Result<Row, _>>()
            .map_err(|e| self.decode_error(e))
    }

    /// Per bucket (`hash & mask`): rows and the sum of their hashes; also the total.
    pub async fn bucket_counts(
        &self,
        client: &Object,
        mask: i32,
    ) -> Result<Vec<(i32, u64, i64)>, VerifyError> {
        let rows = self.query(client, &self.bucket_counts, &[&mask]).await?;
        rows.iter()
            .map(|r| {
                let bucket: i32 = r.try_get(0).map_err(|e| self.decode_error(e))?;
                let count: i64 = r.try_get(1).map_err(|e| self.decode_error(e))?;
                let sum: i64 = r.try_get(2).map_err(|e| self.decode_error(e))?;
                Ok((bucket, u64::try_from(count).unwrap_or(0), sum))
            })
            .collect()
    }

    /// The statement listing the keys (with `idx` for a child) in some buckets: `$1` the mask,
    /// `$2` the buckets. Run it through a portal to read it in bounded batches.
    pub fn keys_in_buckets_sql(&self) -> &str {
        &self.keys_in_buckets
    }

    pub async fn count(&self, client: &Object) -> Result<u64, VerifyError> {
        let rows = self.query(client, &self.count, &[]).await?;
        let n: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| self.decode_error(e))?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `n` keys drawn at random.
    pub async fn sample_keys(&self, client: &Object, n: i64) -> Result<Vec<PgValue>, VerifyError> {
        let rows = self.query(client, &self.sample_keys, &[&n]).await?;
        rows.iter()
            .map(|r| r.try_get::<_, PgValue>(0).map_err(|e| self.decode_error(e)))
            .collect()
    }

    async fn query(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<PgRow>, VerifyError> {
        let doing = || format!("reading {}", self.qualified);
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(VerifyError::postgres(doing()))?;
        client
            .query(&stmt, params)
            .await
            .map_err(VerifyError::postgres(doing()))
    }
}

/// A row as the driver received it; column `i` of the table is column `i + offset` of the
/// query (the key's hash comes first).
#[derive(Debug)]
pub struct FetchedRow {
    row: PgRow,
    offset: usize,
}

/// A column's wire bytes (`None`: SQL NULL).
struct Wire<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Wire<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Wire(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Wire(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

thread_local! {
    /// Where expected values are encoded for comparison (reused: no allocation per value).
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(256));
}

impl FetchedRow {
    fn column(&self, i: usize) -> Option<(&Type, Option<&[u8]>)> {
        let col = i + self.offset;
        let ty = self.row.columns().get(col)?.type_();
        let Wire(raw) = self.row.try_get::<_, Wire>(col).ok()?;
        Some((ty, raw))
    }
}

impl ActualRow for FetchedRow {
    fn same(&self, i: usize, expected: &PgValue) -> bool {
        let Some((ty, raw)) = self.column(i) else {
            return matches!(expected, PgValue::Null);
        };
        let bytes_equal = SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            match (expected.to_sql(ty, &mut buf), raw) {
                (Ok(IsNull::Yes), None) => true,
                (Ok(IsNull::No), Some(raw)) => raw == &buf[..],
                _ => false,
            }
        });
        // Bytes that differ may still be one value (jsonb key order, -0.0): judged by value.
        bytes_equal || same_value(expected, &self.value(i))
    }

    fn value(&self, i: usize) -> PgValue {
        match self.column(i) {
            Some((ty, raw)) => PgValue::from_sql_nullable(ty, raw).unwrap_or(PgValue::Null),
            None => PgValue::Null,
        }
    }
}

/// A pooled connection.
pub async fn connection(pool: &Pool) -> Result<Object, VerifyError> {
    pool.get().await.map_err(|e| {
        VerifyError::Postgres(SinkError::Pool {
            detail: e.to_string(),
            retryable: true,
        })
    })
}

/// Fails with `MissingTable` unless every table exists.
pub async fn check_tables_exist(
    client: &Object,
    tables: &[TableQueries],
) -> Result<(), VerifyError> {
    for t in tables {
        let found: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&t.qualified])
            .await
            .map_err(VerifyError::postgres(format!(
                "looking for {}",
                t.qualified
            )))?
            .get(0);
        if found.is_none() {
            return Err(VerifyError::MissingTable {
                table: t.qualified.clone(),
            });
        }
    }
    Ok(())
}

/// The statements about one stream's dead letters in `<state_schema>.dead_letters`.
#[derive(Debug, Clone)]
pub struct DeadLetterQueries {
    /// `None` when the table does not exist (nothing was ever dead-lettered).
    find: Option<String>,
    /// Open (unresolved) letters per namespace; `None` without a `resolved_at` column.
    open: Option<String>,
}

impl DeadLetterQueries {
    pub async fn new(client: &Object, state_schema: &str) -> Result<Self, VerifyError> {
        let table = qualified(state_schema, "dead_letters");
        let doing = format!("looking for {table}");
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .map_err(VerifyError::postgres(doing.clone()))?
            .get(0);
        if exists.is_none() {
            return Ok(DeadLetterQueries {
                find: None,
                open: None,
            });
        }
        let resolved = client
            .query_opt(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 \
                 AND table_name = 'dead_letters' AND column_name = 'resolved_at'",
                &[&state_schema],
            )
            .await
            .map_err(VerifyError::postgres(doing))?
            .is_some();
        Ok(DeadLetterQueries {
            find: Some(format!(
                "SELECT error FROM {table} WHERE stream = $1 AND namespace = $2 \
                 AND document_key = $3::jsonb AND document = $4::jsonb ORDER BY id DESC LIMIT 1"
            )),
            open: resolved.then(|| {
                format!(
                    "SELECT count(DISTINCT document_key) FROM {table} \
                     WHERE stream = $1 AND namespace = $2 AND resolved_at IS NULL"
                )
            }),
        })
    }

    /// The error of the letter recording exactly `document` under `key`, if there is one.
    pub async fn letter_for(
        &self,
        client: &Object,
        stream: &str,
        namespace: &str,
        key: &serde_json::Value,
        document: &serde_json::Value,
    ) -> Result<Option<String>, VerifyError> {
        let Some(sql) = &self.find else {
            return Ok(None);
        };
        let doing = || format!("reading the dead letters of {namespace}");
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(VerifyError::postgres(doing()))?;
        let row = client
            .query_opt(&stmt, &[&stream, &namespace, key, document])
            .await
            .map_err(VerifyError::postgres(doing()))?;
        Ok(row.map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()))
    }

    /// Documents of `namespace` with an open letter; 0 when letters are not marked resolved.
    pub async fn open_count(
        &self,
        client: &Object,
        stream: &str,
        namespace: &str,
    ) -> Result<u64, VerifyError> {
        let Some(sql) = &self.open else {
            return Ok(0);
        };
        let n: i64 = client
            .query_one(sql.as_str(), &[&stream, &namespace])
            .await
            .map_err(VerifyError::postgres(format!(
                "counting the dead letters of {namespace}"
            )))?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
