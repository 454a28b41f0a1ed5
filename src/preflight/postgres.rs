//! The Postgres half of the pre-flight: reachable, version, TLS, the privileges `sync` uses
//! (docs/privileges.md), and the stream's checkpoint for the MongoDB half to judge.

use std::time::Duration;

use tokio_postgres::Client;

use super::{Finding, Level, StoredCheckpoint};
use crate::config::{redact_uri, Config};
use crate::mapping::model::MappingSet;
use crate::position::Position;
use crate::sink::postgres::catalog::{self, Object};
use crate::sink::postgres::ddl::{self, qualified, quote_ident};
use crate::sink::postgres::owners;
use crate::sink::postgres::state;

/// How long Postgres gets to answer: long enough for a slow network, short enough for a human.
const TIMEOUT: Duration = Duration::from_secs(10);
/// What every table needs (`TRUNCATE`: a dropped collection empties its tables).
const TABLE_PRIVILEGES: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"];

const AREA: &str = "postgres";

/// The findings, and what the stream's checkpoint is.
pub async fn check(config: &Config, mappings: &MappingSet) -> (Vec<Finding>, StoredCheckpoint) {
    let uri = redact_uri(&config.postgres.uri);
    let connector = match crate::pg::Connector::from_uri(&config.postgres.uri) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("postgres.uri cannot be used: {e}");
            return (
                vec![Finding::new(Level::Error, AREA, "reachable", msg)],
                StoredCheckpoint::Unknown,
            );
        }
    };
    let client = match tokio::time::timeout(TIMEOUT, connector.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let msg = format!(
                "cannot connect to postgres {uri} (postgres.uri): {}",
                crate::sink::error::describe(&e)
            );
            return (
                vec![Finding::new(Level::Error, AREA, "reachable", msg)],
                StoredCheckpoint::Unknown,
            );
        }
        Err(_) => {
            let msg = format!("postgres {uri} did not answer within {TIMEOUT:?} (postgres.uri)");
            return (
                vec![Finding::new(Level::Error, AREA, "reachable", msg)],
                StoredCheckpoint::Unknown,
            );
        }
    };
    let probe = async {
        let mut out = vec![server(&client, &uri, connector.mode().as_str()).await?];
        out.extend(privileges(&client, config, mappings).await?);
        out.push(ownership(&client, config, mappings).await?);
        let (checkpoint, unreadable) = checkpoint(&client, config).await?;
        out.extend(unreadable);
        Ok::<_, tokio_postgres::Error>((out, checkpoint))
    };
    match tokio::time::timeout(TIMEOUT * 3, probe).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            let msg = format!(
                "postgres {uri} refused a catalog query: {}; check that the role of postgres.uri may read the system catalogs and the state schema ({})",
                crate::sink::error::describe(&e),
                config.sync.state_schema
            );
            (
                vec![Finding::new(Level::Error, AREA, "reachable", msg)],
                StoredCheckpoint::Unknown,
            )
        }
        Err(_) => {
            let msg = format!(
                "postgres {uri} did not answer the catalog queries within {:?}",
                TIMEOUT * 3
            );
            (
                vec![Finding::new(Level::Error, AREA, "reachable", msg)],
                StoredCheckpoint::Unknown,
            )
        }
    }
}

/// Version and whether this connection is encrypted.
async fn server(client: &Client, uri: &str, mode: &str) -> Result<Finding, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), \
             coalesce((SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()), false), \
             (SELECT version FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()), \
             current_user::text",
            &[],
        )
        .await?;
    let version: String = row.get(0);
    let tls: bool = row.get(1);
    let tls_version: Option<String> = row.get(2);
    let user: String = row.get(3);
    let tls = if tls {
        format!("TLS on ({})", tls_version.unwrap_or_default())
    } else {
        "TLS off".to_owned()
    };
    Ok(Finding::new(
        Level::Ok,
        AREA,
        "server",
        format!("postgres {uri}: server {version}, {tls} (sslmode={mode}), role {user:?}"),
    ))
}

/// What `sync` would create (tried, then rolled back) and what it needs on what exists.
async fn privileges(
    client: &Client,
    config: &Config,
    mappings: &MappingSet,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let statements = ddl::schema_ddl(mappings, &config.postgres.schema, &config.sync.state_schema);
    let missing = catalog::missing(client, &statements).await?;
    let missing_tables: Vec<&Object> = missing
        .iter()
        .filter_map(|m| m.object.as_ref())
        .filter(|o| matches!(o, Object::Schema(_) | Object::Table { .. }))
        .collect();
    let mut out = Vec::new();
    if missing.is_empty() {
        out.push(Finding::new(
            Level::Ok,
            AREA,
            "objects",
            "every mapped table, column and state table exists: sync runs no DDL".into(),
        ));
    } else {
        let what = catalog::summary(&missing).join(", ");
        let todo: Vec<String> = missing.iter().map(|m| m.statement.clone()).collect();
        out.push(match try_ddl(client, &todo).await? {
            None => Finding::new(
                Level::Ok,
                AREA,
                "objects",
                format!("sync will create what is missing: {what}"),
            ),
            Some(denied) => {
                let role: String = client
                    .query_one("SELECT current_user::text", &[])
                    .await?
                    .get(0);
                let grants = catalog::grants_for(client, &missing, &role).await?;
                let grants = if grants.is_empty() {
                    "run `tributary schema --apply` as the tables' owner".to_owned()
                } else {
                    format!(
                        "{} or run `tributary schema --apply` as a role that may",
                        grants.join(" ")
                    )
                };
                Finding::new(
                    Level::Error,
                    AREA,
                    "objects",
                    format!(
                        "missing: {what}; role {role:?} may not create it ({denied}); {grants}"
                    ),
                )
            }
        });
    }
    // Privileges on what exists; a table still to be created will be the role's own.
    for statement in &statements {
        let Some(Object::Table { schema, table }) = catalog::object_of(statement) else {
            continue;
        };
        if missing_tables.iter().any(|o| match o {
            Object::Schema(s) => *s == schema,
            Object::Table {
                schema: s,
                table: t,
            } => *s == schema && *t == table,
            _ => false,
        }) {
            continue;
        }
        if let Some(f) = table_privileges(client, &schema, &table).await? {
            out.push(f);
        }
    }
    Ok(out)
}

/// Runs `statements` in a transaction that is always rolled back: `None` when they would
/// succeed, else Postgres's reason. A short lock timeout: a probe must not queue behind a
/// running sync's writes.
async fn try_ddl(
    client: &Client,
    statements: &[String],
) -> Result<Option<String>, tokio_postgres::Error> {
    client
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '5s'")
        .await?;
    let mut refused = None;
    for s in statements {
        if let Err(e) = client.batch_execute(s).await {
            refused = Some(crate::sink::error::describe(&e));
            break;
        }
    }
    client.batch_execute("ROLLBACK").await?;
    Ok(refused)
}

/// An error naming the privileges the role lacks on one existing table (and its sequence).
async fn table_privileges(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<Finding>, tokio_postgres::Error> {
    let name = qualified(schema, table);
    let privileges: Vec<String> = TABLE_PRIVILEGES.iter().map(|p| (*p).to_owned()).collect();
    let row = client
        .query_one(
            "SELECT has_schema_privilege($1, 'USAGE'), \
             ARRAY(SELECT p FROM unnest($3::text[]) AS p WHERE NOT has_table_privilege($2, p)), \
             ARRAY(SELECT s.relname::text FROM pg_catalog.pg_depend d \
                   JOIN pg_catalog.pg_class s ON s.oid = d.objid \
                   WHERE d.refobjid = $2::regclass AND d.deptype IN ('a', 'i') \
                     AND CASE WHEN s.relkind = 'S' \
                         THEN NOT has_sequence_privilege(s.oid, 'USAGE') ELSE false END), \
             current_user::text",
            &[&schema, &name, &privileges],
        )
        .await?;
    let usage: bool = row.get(0);
    let lacking: Vec<String> = row.get(1);
    let sequences: Vec<String> = row.get(2);
    let role = quote_ident(&row.get::<_, String>(3));
    let mut grants = Vec::new();
    if !usage {
        grants.push(format!(
            "GRANT USAGE ON SCHEMA {} TO {role};",
            quote_ident(schema)
        ));
    }
    if !lacking.is_empty() {
        grants.push(format!("GRANT {} ON {name} TO {role};", lacking.join(", ")));
    }
    for s in &sequences {
        grants.push(format!(
            "GRANT USAGE ON SEQUENCE {} TO {role};",
            qualified(schema, s)
        ));
    }
    if grants.is_empty() {
        return Ok(None);
    }
    Ok(Some(Finding::new(
        Level::Error,
        AREA,
        "privileges",
        format!(
            "role {role} cannot write table {name} as sync does; run: {}",
            grants.join(" ")
        ),
    )))
}

/// Whether another stream owns a mapped table (`sync` and `full-sync` would refuse to start).
async fn ownership(
    client: &Client,
    config: &Config,
    mappings: &MappingSet,
) -> Result<Finding, tokio_postgres::Error> {
    let stream = &config.sync.name;
    let tables = owners::mapped_tables(mappings);
    let taken = owners::conflicts(
        client,
        &config.sync.state_schema,
        &config.postgres.schema,
        stream,
        &tables,
    )
    .await?;
    if taken.is_empty() {
        return Ok(Finding::new(
            Level::Ok,
            AREA,
            "table_owners",
            format!(
                "no other stream owns the {} mapped table(s) of stream {stream:?}",
                tables.len()
            ),
        ));
    }
    let refusal = owners::TableOwned {
        stream: stream.clone(),
        state_schema: config.sync.state_schema.clone(),
        tables: taken,
    };
    Ok(Finding::new(
        Level::Error,
        AREA,
        "table_owners",
        refusal.to_string(),
    ))
}

/// The stream's checkpoint, with the finding when it exists but cannot be used (`sync` would
/// refuse it at start too).
async fn checkpoint(
    client: &Client,
    config: &Config,
) -> Result<(StoredCheckpoint, Option<Finding>), tokio_postgres::Error> {
    let table = qualified(&config.sync.state_schema, "checkpoints");
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok((StoredCheckpoint::Absent, None));
    }
    let stream = &config.sync.name;
    let unreadable = |why: String| {
        let message = format!("stream {stream:?}'s checkpoint in {table} cannot be used: {why}; `tributary sync` would refuse to resume from it: run `tributary full-sync` to start the stream over");
        let finding = Finding::new(Level::Error, "checkpoint", "checkpoint", message);
        (StoredCheckpoint::Unknown, Some(finding))
    };
    let cp = match state::read_checkpoint(client, &config.sync.state_schema, stream).await {
        Ok(Some(cp)) => cp,
        Ok(None) => return Ok((StoredCheckpoint::Absent, None)),
        Err(e) => return Ok(unreadable(e.to_string())),
    };
    Ok(match Position::from_checkpoint(&cp) {
        Ok(p) => match p.cluster_time() {
            Some(t) => (StoredCheckpoint::At(t), None),
            None => (StoredCheckpoint::Absent, None),
        },
        Err(e) => unreadable(e.to_string()),
    })
}
