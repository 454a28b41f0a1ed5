//! Which stream owns which mapped table (SPEC "Sharded clusters": a table belongs to one
//! stream). Several `sync` streams may share one Postgres, each writing its own tables under its
//! own advisory lock; the lock says nothing about tables, so two streams whose mappings name the
//! same table would both delete-then-COPY into it and undo each other's rows. The registry
//! `<state_schema>.table_owners(table_name, stream, claimed_at)` closes that gap:
//!
//! - **Claim.** `sync` and `full-sync` claim every table of their mappings (parents and
//!   children, `schema.table` as `format('%I.%I')` spells it) when they start, under the
//!   stream's lock, before writing a row. The claim is one transaction: `INSERT … ON CONFLICT
//!   DO NOTHING`, then a look at who owns the tables. The primary key makes it race-free: of two
//!   streams inserting the same name at once, the second waits for the first to commit and then
//!   inserts nothing, and sees the first as the owner.
//! - **Refusal before any write.** `conflicts` reads the registry without writing (nothing when
//!   it does not exist yet), so a stream that would touch another's table stops before even
//!   its `CREATE TABLE IF NOT EXISTS`; the claim after the DDL catches the race.
//! - **Release.** A claim lasts until an operator deletes its row (docs/scaling.md): a stream
//!   that stops mapping a table leaves its rows there, and another stream must not take them
//!   over silently.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::ddl::qualified;
use crate::mapping::model::MappingSet;

/// A table of this stream's mappings that another stream owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    /// `schema.table`, quoted where Postgres would need it (`format('%I.%I')`).
    pub table: String,
    pub owner: String,
    pub claimed_at: Option<DateTime<Utc>>,
}

/// A stream refused to start because another stream owns some of its tables.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", refusal(.stream, .state_schema, .tables))]
pub struct TableOwned {
    pub stream: String,
    pub state_schema: String,
    pub tables: Vec<Owned>,
}

fn refusal(stream: &str, state_schema: &str, tables: &[Owned]) -> String {
    let named: Vec<String> = tables
        .iter()
        .map(|t| {
            let since = t
                .claimed_at
                .map(|s| format!(" since {}", s.to_rfc3339()))
                .unwrap_or_default();
            format!("table {} belongs to stream {:?}{since}", t.table, t.owner)
        })
        .collect();
    let names: Vec<String> = tables
        .iter()
        .map(|t| format!("'{}'", t.table.replace('\'', "''")))
        .collect();
    format!(
        "stream {stream:?} refuses to start, nothing was written: {}. A table belongs to one \
         stream. Map the collection to another table name in this stream's mappings, or, if \
         the owning stream no longer writes the table, release it with \
         `DELETE FROM {} WHERE table_name IN ({})` (docs/scaling.md)",
        named.join("; "),
        qualified(state_schema, "table_owners"),
        names.join(", ")
    )
}

/// The registry's `CREATE TABLE`, for `ddl::state_ddl`.
pub fn table_ddl(state_schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         table_name text PRIMARY KEY, \
         stream text NOT NULL, \
         claimed_at timestamptz NOT NULL DEFAULT now())",
        qualified(state_schema, "table_owners")
    )
}

/// The bare names of every table the mappings write (parents, then children), in `schema`.
pub fn mapped_tables(mappings: &MappingSet) -> Vec<String> {
    mappings
        .collections
        .iter()
        .flat_map(|c| c.tables().into_iter().map(|t| t.name))
        .collect()
}

/// The owned tables among `tables` (bare names in `schema`) whose owner is not `stream`;
/// empty when the registry does not exist. Never writes.
pub async fn conflicts(
    client: &impl GenericClient,
    state_schema: &str,
    schema: &str,
    stream: &str,
    tables: &[String],
) -> Result<Vec<Owned>, tokio_postgres::Error> {
    let registry = qualified(state_schema, "table_owners");
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&registry])
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT o.table_name, o.stream, o.claimed_at FROM {registry} o \
         WHERE o.stream <> $1 \
           AND o.table_name IN (SELECT format('%I.%I', $2::text, t) FROM unnest($3::text[]) t) \
         ORDER BY o.table_name"
    );
    let rows = client.query(&sql, &[&stream, &schema, &tables]).await?;
    Ok(rows
        .iter()
        .map(|r| Owned {
            table: r.get(0),
            owner: r.get(1),
            claimed_at: r.get(2),
        })
        .collect())
}

/// Claims `tables` (bare names in `schema`) for `stream` in one transaction: tables nobody owns
/// become `stream`'s; the tables another stream owns are returned, and then nothing was
/// claimed (rolled back). The registry must exist (`ddl::state_ddl`).
pub async fn claim(
    client: &mut tokio_postgres::Client,
    state_schema: &str,
    schema: &str,
    stream: &str,
    tables: &[String],
) -> Result<Vec<Owned>, tokio_postgres::Error> {
    let registry = qualified(state_schema, "table_owners");
    let tx = client.transaction().await?;
    // In name order, so two streams claiming overlapping sets wait for each other instead of
    // deadlocking.
    tx.execute(
        &format!(
            "INSERT INTO {registry} (table_name, stream) \
             SELECT DISTINCT format('%I.%I', $2::text, t), $1::text FROM unnest($3::text[]) t \
             ORDER BY 1 ON CONFLICT (table_name) DO NOTHING"
        ),
        &[&stream, &schema, &tables],
    )
    .await?;
    // Read Committed: this statement sees every claim committed before it started, including
    // the one this transaction's INSERT waited for.
    let taken = conflicts(&tx, state_schema, schema, stream, tables).await?;
    if taken.is_empty() {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_table_owner_and_the_release() {
        let e = TableOwned {
            stream: "billing".into(),
            state_schema: "tributary".into(),
            tables: vec![Owned {
                table: "public.orders".into(),
                owner: "shop".into(),
                claimed_at: None,
            }],
        };
        let msg = e.to_string();
        assert!(msg.contains("table public.orders belongs to stream \"shop\""));
        assert!(msg.contains("stream \"billing\" refuses to start"));
        assert!(msg.contains(
            "DELETE FROM \"tributary\".\"table_owners\" WHERE table_name IN ('public.orders')"
        ));
    }
}
