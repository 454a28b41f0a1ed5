//! Atomic replace for `full-sync --mode replace`: a collection is loaded into fresh shadow
//! tables (`<table>__tributary_new`, same definition as `ddl::table_ddl` gives the live ones)
//! and swapped in by one transaction, so readers of the live tables see either the old rows or
//! the new ones, never an empty or half-loaded table.
//!
//! Steps (driven by `pipeline::full_sync`): `create_shadows` (drops leftovers of an earlier
//! run first) — or, when the load resumes, `shadows_exist` — `copy_rows_into` per chunk (binary
//! COPY with the chunk's progress, one short transaction each; nobody reads a shadow table),
//! then `swap_in`: lock the live tables `ACCESS EXCLUSIVE`, drop them,
//! rename the shadows (and their primary-key constraints, so names match what `schema` creates)
//! to the live names, store the collection's phase row, commit. Readers queued on the lock
//! resolve the name again once it is released and read the new table.
//!
//! A partitioned live table is rebuilt partitioned: its shadow gets the same partition key,
//! primary key and partitions (with their bounds, nested ones included), and the swap renames
//! the shadow partitions and their primary keys to the live names (`partitions`).
//!
//! What the swap does not carry over: anything added to a live table by hand (grants, extra
//! indexes, triggers, columns no longer mapped). A view or foreign key that depends on a live
//! table makes the `DROP` fail; the transaction then rolls back and the live tables are
//! untouched.

use std::pin::pin;

use deadpool_postgres::Object;
use tokio_postgres::types::Type;

use super::copy::{self, CopyError};
use super::copy_progress::{self, ChunkDone};
use super::ddl::{self, qualified, quote_ident};
use super::partitions;
use super::plan;
use super::state::{self, CollectionState};
use super::PostgresSink;
use crate::lease::LeaseFlag;
use crate::mapping::model::TableDef;
use crate::mapping::value::{PgValue, Row};
use crate::sink::{Change, DocumentRows, SinkError};

/// Appended to a live table's name to name its shadow.
pub const SHADOW_SUFFIX: &str = "__tributary_new";

/// Longest identifier Postgres keeps (`NAMEDATALEN - 1` bytes); longer ones are truncated.
const MAX_IDENT: usize = 63;

/// The shadow table of `table`: `<table>__tributary_new`, or, when that would exceed 63 bytes
/// (Postgres would silently truncate it), a prefix of `table`, a hash of the whole name and the
/// suffix, so two long names never share a shadow.
pub fn shadow_name(table: &str) -> String {
    if table.len() + SHADOW_SUFFIX.len() <= MAX_IDENT {
        return format!("{table}{SHADOW_SUFFIX}");
    }
    // FNV-1a: stable across Rust versions, so a later run finds an earlier run's leftovers.
    let hash = table.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut keep = MAX_IDENT - SHADOW_SUFFIX.len() - 9;
    while !table.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{hash:08x}{SHADOW_SUFFIX}", &table[..keep])
}

/// The live tables of `collection` (parent first, then children).
fn live_defs(sink: &PostgresSink, collection: usize) -> Result<Vec<TableDef>, SinkError> {
    sink.mappings()
        .collections
        .get(collection)
        .map(ddl::collection_tables)
        .ok_or_else(|| SinkError::InvalidBatch(format!("collection #{collection} is not mapped")))
}

/// The same tables under their shadow names.
fn shadow_defs(live: &[TableDef]) -> Vec<TableDef> {
    live.iter()
        .map(|t| TableDef {
            name: shadow_name(&t.name),
            ..t.clone()
        })
        .collect()
}

async fn connection(sink: &PostgresSink) -> Result<Object, SinkError> {
    sink.pool().get().await.map_err(|e| SinkError::Pool {
        detail: e.to_string(),
        retryable: true,
    })
}

/// Drops the shadow tables of `collection` if they exist (an interrupted or failed load).
pub async fn drop_shadows(sink: &PostgresSink, collection: usize) -> Result<(), SinkError> {
    let shadows = shadow_defs(&live_defs(sink, collection)?);
    let names: Vec<String> = shadows
        .iter()
        .map(|t| qualified(sink.schema(), &t.name))
        .collect();
    let client = connection(sink).await?;
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {}", names.join(", ")))
        .await
        .map_err(|e| SinkError::postgres(format!("dropping {}", names.join(", ")), e))
}

/// Creates empty shadow tables for `collection`, first dropping any left by an earlier run. A
/// live table that is partitioned gets a shadow partitioned the same way, with the same
/// partitions (`partitions::shadow_ddl`).
pub async fn create_shadows(sink: &PostgresSink, collection: usize) -> Result<(), SinkError> {
    drop_shadows(sink, collection).await?;
    let live = live_defs(sink, collection)?;
    let client = connection(sink).await?;
    let mut statements = Vec::new();
    for (l, s) in live.iter().zip(shadow_defs(&live)) {
        let tree = partitions::read_tree(&**client, sink.schema(), &l.name)
            .await
            .map_err(|e| SinkError::postgres(format!("reading the partitions of {}", l.name), e))?;
        match tree {
            Some(tree) => statements.extend(partitions::shadow_ddl(
                sink.schema(),
                &s,
                &tree,
                shadow_name,
            )),
            None => statements.extend(ddl::table_ddl(sink.schema(), &s)),
        }
    }
    ddl::apply_ddl(&client, &statements).await
}

/// Whether every shadow table of `collection` exists (a resumed load continues in them).
pub async fn shadows_exist(sink: &PostgresSink, collection: usize) -> Result<bool, SinkError> {
    let shadows = shadow_defs(&live_defs(sink, collection)?);
    let client = connection(sink).await?;
    for t in &shadows {
        let name = qualified(sink.schema(), &t.name);
        let row = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await
            .map_err(|e| SinkError::postgres(format!("looking up {name}"), e))?;
        if !row.get::<_, bool>(0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes one chunk of converted documents into the shadow tables of `collection` (one
/// transaction, which also records `done`, the chunk's progress) and returns how many parent
/// rows were written. A document repeated in `rows` keeps its last occurrence, as with
/// `PostgresSink::copy_rows`, and `rows` is handed back after a data or retryable error.
///
/// `rewrite`: the shadow tables may already hold some of these documents (a resumed load, or a
/// retry whose commit may have gone through), so their rows are deleted first; a plain COPY
/// would fail on the primary key.
pub async fn copy_rows_into(
    sink: &PostgresSink,
    collection: usize,
    rows: &mut Vec<DocumentRows>,
    done: Option<&ChunkDone>,
    rewrite: bool,
) -> Result<u64, SinkError> {
    let shadows = shadow_defs(&live_defs(sink, collection)?);
    let key_index = shadows[0].primary_key[0];
    // Before the rows are taken: a connection that cannot be had leaves them to the caller.
    let mut client = connection(sink).await?;
    let changes: Vec<Change> = std::mem::take(rows)
        .into_iter()
        .map(|rows| Change::Upsert {
            collection: 0,
            key: rows.parent.get(key_index).cloned().unwrap_or(PgValue::Null),
            rows,
        })
        .collect();
    let plans = plan::plan(&changes, std::slice::from_ref(&shadows))?;
    let docs: Vec<&DocumentRows> = plans
        .into_iter()
        .flat_map(|p| p.upserts)
        .map(|(_, rows)| rows)
        .collect();
    let result = async {
        let tx = client
            .transaction()
            .await
            .map_err(|e| SinkError::postgres("starting a transaction", e))?;
        if rewrite && !docs.is_empty() {
            let keys = PgValue::Array(
                docs.iter()
                    .map(|d| d.parent.get(key_index).cloned().unwrap_or(PgValue::Null))
                    .collect(),
            );
            // Children first: their first key column holds the parent's key.
            for table in shadows.iter().rev() {
                let first = table.primary_key.first().copied().unwrap_or(0);
                let column = table
                    .columns
                    .get(first)
                    .map(|(n, _)| n.as_str())
                    .unwrap_or("");
                let name = qualified(sink.schema(), &table.name);
                tx.execute(
                    &format!("DELETE FROM {name} WHERE {} = ANY($1)", quote_ident(column)),
                    &[&keys],
                )
                .await
                .map_err(|e| SinkError::postgres(format!("deleting from {name}"), e))?;
            }
        }
        for (i, table) in shadows.iter().enumerate() {
            let rows: Vec<&Row> = if i == 0 {
                docs.iter().map(|d| &d.parent).collect()
            } else {
                docs.iter()
                    .flat_map(|d| d.children.get(i - 1).into_iter().flatten())
                    .collect()
            };
            copy_in(&tx, sink.schema(), table, &rows).await?;
        }
        if let Some(done) = done {
            copy_progress::record_chunk(&*tx, sink.state_schema(), sink.stream(), done).await?;
        }
        tx.commit()
            .await
            .map_err(|e| SinkError::postgres("committing a chunk of the replace load", e))
    }
    .await;
    let written = docs.len() as u64;
    drop(docs);
    match result {
        Ok(()) => Ok(written),
        Err(e) => {
            // The connection's state is uncertain after a failed COPY: do not reuse it.
            drop(Object::take(client));
            if e.is_data_error() || e.is_retryable() {
                // Handed back, so the caller can narrow the error or write the chunk again.
                rows.extend(changes.into_iter().filter_map(|c| match c {
                    Change::Upsert { rows, .. } => Some(rows),
                    _ => None,
                }));
            }
            Err(e)
        }
    }
}

/// Binary COPY of `rows` into `table`; nothing is sent when there are no rows.
async fn copy_in(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &str,
    table: &TableDef,
    rows: &[&Row],
) -> Result<(), SinkError> {
    if rows.is_empty() {
        return Ok(());
    }
    let name = qualified(schema, &table.name);
    let columns: Vec<String> = table.columns.iter().map(|(n, _)| quote_ident(n)).collect();
    let types: Vec<Type> = table
        .columns
        .iter()
        .map(|(_, t)| ddl::wire_type(t))
        .collect();
    let doing = || format!("copying rows into {name}");
    let sql = format!(
        "COPY {name} ({}) FROM STDIN (FORMAT binary)",
        columns.join(", ")
    );
    let sink = tx
        .copy_in(&sql)
        .await
        .map_err(|e| SinkError::postgres(doing(), e))?;
    let sink = pin!(sink);
    copy::copy_rows(sink, &types, rows)
        .await
        .map(drop)
        .map_err(|e| match e {
            CopyError::Postgres(e) => SinkError::postgres(doing(), e),
            CopyError::Encode(_, column, reason) => SinkError::Value {
                table: name.clone(),
                column: table
                    .columns
                    .get(column)
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default(),
                reason,
            },
        })
}

/// The name of `table`'s primary-key constraint, if the table and the constraint exist.
async fn primary_key_name(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
) -> Result<Option<String>, SinkError> {
    let row = tx
        .query_opt(
            "SELECT conname::text FROM pg_catalog.pg_constraint \
             WHERE conrelid = to_regclass($1) AND contype = 'p'",
            &[&table],
        )
        .await
        .map_err(|e| SinkError::postgres(format!("reading the primary key of {table}"), e))?;
    Ok(row.map(|r| r.get(0)))
}

/// How often `swap_in` tries again when Postgres chose it as a deadlock victim.
const SWAP_ATTEMPTS: usize = 3;

/// In one transaction: locks the live tables of `collection`, drops them, renames the shadow
/// tables (and their primary keys) to the live names and stores `phase` for the collection;
/// then commits, after checking `lease` is still held. Readers see the old tables until the
/// commit and the new ones after it.
///
/// A reader that locks a child table before its parent can deadlock with the swap's locks
/// (parent first); Postgres then aborts one of the two, and when that is the swap it is tried
/// again (nothing was changed).
pub async fn swap_in(
    sink: &PostgresSink,
    collection: usize,
    phase: &CollectionState,
    lease: Option<&LeaseFlag>,
) -> Result<(), SinkError> {
    let mut attempt = 1;
    loop {
        match try_swap_in(sink, collection, phase, lease).await {
            Err(SinkError::Postgres { source, .. })
                if attempt < SWAP_ATTEMPTS
                    && source.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                tracing::warn!(table = %sink.schema(), attempt, "The swap of the freshly loaded tables was chosen as a deadlock victim; trying again.");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn try_swap_in(
    sink: &PostgresSink,
    collection: usize,
    phase: &CollectionState,
    lease: Option<&LeaseFlag>,
) -> Result<(), SinkError> {
    let live = live_defs(sink, collection)?;
    let shadows = shadow_defs(&live);
    let schema = sink.schema();
    let mut client = connection(sink).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| SinkError::postgres("starting the swap transaction", e))?;
    let live_names: Vec<String> = live.iter().map(|t| qualified(schema, &t.name)).collect();
    let doing = |what: &str| format!("{what} (replacing {})", live_names.join(", "));

    // Only tables that exist can be locked (`schema` normally created them at start).
    let mut existing = Vec::new();
    for name in &live_names {
        let row = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[name])
            .await
            .map_err(|e| SinkError::postgres(doing("looking up the live tables"), e))?;
        if row.get::<_, bool>(0) {
            existing.push(name.as_str());
        }
    }
    if !existing.is_empty() {
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            existing.join(", ")
        ))
        .await
        .map_err(|e| SinkError::postgres(doing("locking the live tables"), e))?;
    }
    let mut renames = Vec::with_capacity(live.len());
    // The partitions of partitioned live tables, renamed like the tables themselves.
    let mut partition_renames = Vec::new();
    for (l, s) in live.iter().zip(&shadows) {
        let live_pk = primary_key_name(&tx, &qualified(schema, &l.name)).await?;
        let shadow_pk = primary_key_name(&tx, &qualified(schema, &s.name)).await?;
        renames.push((live_pk, shadow_pk));
        let tree = partitions::read_tree(&*tx, schema, &l.name)
            .await
            .map_err(|e| {
                SinkError::postgres(doing("reading the partitions of the live tables"), e)
            })?;
        for node in tree.into_iter().flat_map(|t| t.nodes).skip(1) {
            let shadow = qualified(&node.schema, &shadow_name(&node.name));
            let shadow_pk = primary_key_name(&tx, &shadow).await?;
            partition_renames.push((node, shadow, shadow_pk));
        }
    }
    if !existing.is_empty() {
        tx.batch_execute(&format!("DROP TABLE {}", existing.join(", ")))
            .await
            .map_err(|e| SinkError::postgres(doing("dropping the live tables"), e))?;
    }
    for ((l, s), (live_pk, shadow_pk)) in live.iter().zip(&shadows).zip(renames) {
        let mut sql = format!(
            "ALTER TABLE {} RENAME TO {}",
            qualified(schema, &s.name),
            quote_ident(&l.name)
        );
        if let (Some(live_pk), Some(shadow_pk)) = (live_pk, shadow_pk) {
            if live_pk != shadow_pk {
                sql.push_str(&format!(
                    "; ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                    qualified(schema, &l.name),
                    quote_ident(&shadow_pk),
                    quote_ident(&live_pk)
                ));
            }
        }
        tx.batch_execute(&sql)
            .await
            .map_err(|e| SinkError::postgres(doing("renaming the shadow tables"), e))?;
    }
    for (node, shadow, shadow_pk) in partition_renames {
        let row = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&shadow])
            .await
            .map_err(|e| SinkError::postgres(doing("looking up the shadow partitions"), e))?;
        // A partition added to the live table after the load started has no shadow; its
        // rows, if any, were refused by the shadow while loading.
        if !row.get::<_, bool>(0) {
            continue;
        }
        let mut sql = format!("ALTER TABLE {shadow} RENAME TO {}", quote_ident(&node.name));
        if let (Some(live_pk), Some(shadow_pk)) = (node.primary_key_name, shadow_pk) {
            if live_pk != shadow_pk {
                sql.push_str(&format!(
                    "; ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                    qualified(&node.schema, &node.name),
                    quote_ident(&shadow_pk),
                    quote_ident(&live_pk)
                ));
            }
        }
        tx.batch_execute(&sql)
            .await
            .map_err(|e| SinkError::postgres(doing("renaming the shadow partitions"), e))?;
    }
    state::set_collection_state(&*tx, sink.state_schema(), sink.stream(), phase).await?;
    // The load is complete: nothing is left to resume.
    copy_progress::clear(&*tx, sink.state_schema(), sink.stream(), &phase.namespace).await?;
    if let Some(lease) = lease {
        lease.ensure_held()?;
    }
    tx.commit()
        .await
        .map_err(|e| SinkError::postgres(doing("committing the swap"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names_fit_postgres_identifiers() {
        assert_eq!(shadow_name("orders"), "orders__tributary_new");
        let long = "x".repeat(60);
        let other = format!("{}y", "x".repeat(59));
        let (a, b) = (shadow_name(&long), shadow_name(&other));
        assert!(a.len() <= MAX_IDENT && b.len() <= MAX_IDENT);
        assert!(a.ends_with(SHADOW_SUFFIX));
        assert_ne!(a, b);
        let accented = "é".repeat(40);
        assert!(shadow_name(&accented).len() <= MAX_IDENT);
    }
}
