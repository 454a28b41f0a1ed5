//! DDL: the statements that create mapped tables, child tables and Tributary's state tables.
//!
//! Everything here is additive and idempotent (`IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`):
//! running it twice is a no-op and it never drops or alters existing data. Every identifier goes
//! through `quote_ident`, so a mapping may use any name Postgres accepts.

use crate::mapping::model::{CollectionMapping, MappingSet, PgType, TableDef};

/// Quotes an identifier for SQL text: wrapped in `"`, inner `"` doubled. The only way a name
/// from a mapping reaches SQL.
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for ch in name.chars() {
        if ch == '"' {
            s.push('"');
        }
        s.push(ch);
    }
    s.push('"');
    s
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The tables of one collection: the parent first, then one per child mapping (same order as
/// `CollectionMapping::children`).
pub fn collection_tables(c: &CollectionMapping) -> Vec<TableDef> {
    c.tables()
}

/// Every statement `tributary schema` prints and `--apply` runs, in order: schemas, state
/// tables, then for each mapped table a `CREATE TABLE IF NOT EXISTS` followed by one
/// `ADD COLUMN IF NOT EXISTS` per column (so tables created by an older mapping gain new
/// columns).
pub fn schema_ddl(mappings: &MappingSet, schema: &str, state_schema: &str) -> Vec<String> {
    let mut out = vec![format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(schema)
    )];
    if state_schema != schema {
        out.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(state_schema)
        ));
    }
    out.extend(state_ddl(state_schema));
    for c in &mappings.collections {
        for t in collection_tables(c) {
            out.extend(table_ddl(schema, &t));
        }
    }
    out
}

/// `CREATE TABLE IF NOT EXISTS` with its primary key, then `ADD COLUMN IF NOT EXISTS` for every
/// column.
pub fn table_ddl(schema: &str, t: &TableDef) -> Vec<String> {
    let name = qualified(schema, &t.name);
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|(n, ty)| format!("{} {}", quote_ident(n), ty))
        .collect();
    let pk: Vec<String> = t
        .primary_key
        .iter()
        .map(|&i| quote_ident(&t.columns[i].0))
        .collect();
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {name} ({}, PRIMARY KEY ({}))",
        cols.join(", "),
        pk.join(", ")
    )];
    for (n, ty) in &t.columns {
        out.push(format!(
            "ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {} {ty}",
            quote_ident(n)
        ));
    }
    out
}

/// The state tables of SPEC "What is written where", exactly as named there (`cutovers`
/// holds every cutover's verdict), the sink's own `stale_children` (`stale`), the registry of
/// table owners (`owners`), and the progress
/// of copies, `copies` and `copy_chunks` (`copy_progress`).
pub fn state_ddl(state_schema: &str) -> Vec<String> {
    let checkpoints = qualified(state_schema, "checkpoints");
    let collections = qualified(state_schema, "collections");
    let dead_letters = qualified(state_schema, "dead_letters");
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {checkpoints} (\
             stream text PRIMARY KEY, \
             source text, \
             resume_token jsonb, \
             cluster_time timestamptz, \
             updated_at timestamptz)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {collections} (\
             stream text NOT NULL, \
             namespace text NOT NULL, \
             phase text NOT NULL DEFAULT 'pending' \
             CHECK (phase IN ('pending', 'snapshot', 'streaming')), \
             snapshot_started_at timestamptz, \
             snapshot_done_at timestamptz, \
             documents bigint, \
             PRIMARY KEY (stream, namespace))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {dead_letters} (\
             id bigserial PRIMARY KEY, \
             stream text NOT NULL, \
             namespace text NOT NULL, \
             document_key jsonb, \
             document jsonb, \
             error text, \
             cluster_time timestamptz, \
             at timestamptz NOT NULL DEFAULT now())"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {dead_letters} (stream, namespace)",
            quote_ident("dead_letters_stream_namespace")
        ),
        // The dead-letter lifecycle (docs/operations.md, "Dead letters"), added in place to
        // tables created before it: a letter is open until `resolved_at` is set; `row_key`
        // is the key of the document's rows (`plan::key_text`), so a write of that key can
        // resolve it in the same transaction.
        format!("ALTER TABLE {dead_letters} ADD COLUMN IF NOT EXISTS resolved_at timestamptz"),
        format!("ALTER TABLE {dead_letters} ADD COLUMN IF NOT EXISTS row_key text"),
        // The `_id` exactly (BSON of `{_id: …}`), for the retry's lookup by `_id`.
        format!("ALTER TABLE {dead_letters} ADD COLUMN IF NOT EXISTS id_bson bytea"),
        // Dedupe of a version (`state::insert_dead_letters`) and the rows of an open
        // document (`state::resolve_written`) by index, not by comparing jsonb against every
        // earlier letter. The hash is an expression, so old rows are covered without a rewrite.
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {dead_letters} \
             (stream, namespace, {DEAD_LETTER_VERSION_HASH}) WHERE resolved_at IS NULL",
            quote_ident("dead_letters_open_version")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {dead_letters} (stream, namespace, row_key) \
             WHERE resolved_at IS NULL",
            quote_ident("dead_letters_open_row_key")
        ),
        super::stale::table_ddl(state_schema),
        // Which stream owns which mapped table (`owners`).
        super::owners::table_ddl(state_schema),
        // The progress of copies, so a killed copy resumes (`copy_progress`).
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             stream text NOT NULL, \
             namespace text NOT NULL, \
             load text NOT NULL, \
             mapping text NOT NULL, \
             bounds bytea NOT NULL, \
             ranges integer NOT NULL, \
             started_at timestamptz NOT NULL, \
             PRIMARY KEY (stream, namespace))",
            qualified(state_schema, "copies")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             stream text NOT NULL, \
             namespace text NOT NULL, \
             range_no integer NOT NULL, \
             seq bigint NOT NULL, \
             last_id bytea, \
             documents bigint NOT NULL, \
             range_done boolean NOT NULL, \
             at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (stream, namespace, range_no, seq))",
            qualified(state_schema, "copy_chunks")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             id bigserial PRIMARY KEY, \
             stream text NOT NULL, \
             started_at timestamptz NOT NULL, \
             finished_at timestamptz NOT NULL, \
             ready boolean NOT NULL, \
             report jsonb NOT NULL)",
            qualified(state_schema, "cutovers")
        ),
        // Requests to the running daemon (`tributary resync`, `tributary reload`), polled by
        // it and answered in place (`requests`).
        super::requests::table_ddl(state_schema),
    ]
}

/// The hash of one dead letter's version (its key and document) that the open-version index
/// of `<state_schema>.dead_letters` holds; a query uses the same expression to use the index.
/// (Either may be NULL: a refused delete has no document.)
pub const DEAD_LETTER_VERSION_HASH: &str =
    "md5(coalesce(document_key::text, '') || coalesce(document::text, ''))";

/// Key of the transaction-level advisory lock that serializes `apply_ddl` across sessions
/// (distinct from every stream's `tributary.stream:<name>` key).
pub const DDL_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended('tributary.ddl', 0))";

/// Runs `schema_ddl` in one transaction that first takes a transaction-level advisory lock, so
/// concurrent runs (two `sync` processes, or two streams of one process, starting at once) take
/// turns: concurrent `CREATE ... IF NOT EXISTS` of the same object otherwise fails with a
/// unique violation on the catalog (e.g. `pg_type_typname_nsp_index`), and a single retry did
/// not always win the next race. The lock ends with the transaction, also on error. A catalog
/// race with a session that does not take the lock (DDL run by hand) is retried once.
pub async fn apply_ddl(
    client: &tokio_postgres::Client,
    statements: &[String],
) -> Result<(), super::super::SinkError> {
    let mut attempt = 0;
    loop {
        let mut failed = None;
        // `client_min_messages`: an `ADD COLUMN IF NOT EXISTS` after its own `CREATE TABLE`
        // would log a NOTICE per column at INFO, which reads like something went wrong.
        for s in [
            "BEGIN",
            "SET LOCAL client_min_messages = warning",
            DDL_LOCK_SQL,
        ]
        .into_iter()
        .chain(statements.iter().map(String::as_str))
        .chain(["COMMIT"])
        {
            if let Err(e) = client.batch_execute(s).await {
                failed = Some((s.to_owned(), e));
                break;
            }
        }
        match failed {
            None => return Ok(()),
            Some((stmt, e)) => {
                // Best effort: a broken connection is discarded by the pool anyway.
                let _ = client.batch_execute("ROLLBACK").await;
                let catalog_race = e
                    .code()
                    .is_some_and(|c| matches!(c.code(), "23505" | "42P07" | "42710" | "42701"));
                if attempt == 0 && catalog_race {
                    attempt += 1;
                    continue;
                }
                return Err(super::super::SinkError::postgres(
                    format!("creating schema objects ({stmt})"),
                    e,
                ));
            }
        }
    }
}

/// The wire type Postgres uses for a mapped column, for binary COPY.
pub fn wire_type(t: &PgType) -> tokio_postgres::types::Type {
    use tokio_postgres::types::Type;
    match t {
        PgType::Text => Type::TEXT,
        PgType::Varchar(_) => Type::VARCHAR,
        PgType::SmallInt => Type::INT2,
        PgType::Integer => Type::INT4,
        PgType::BigInt => Type::INT8,
        PgType::Real => Type::FLOAT4,
        PgType::DoublePrecision => Type::FLOAT8,
        PgType::Numeric(_) => Type::NUMERIC,
        PgType::Boolean => Type::BOOL,
        PgType::Timestamptz => Type::TIMESTAMPTZ,
        PgType::Timestamp => Type::TIMESTAMP,
        PgType::Date => Type::DATE,
        PgType::Uuid => Type::UUID,
        PgType::Bytea => Type::BYTEA,
        PgType::Json => Type::JSON,
        PgType::Jsonb => Type::JSONB,
        PgType::Array(inner) => match **inner {
            PgType::Text => Type::TEXT_ARRAY,
            PgType::Varchar(_) => Type::VARCHAR_ARRAY,
            PgType::SmallInt => Type::INT2_ARRAY,
            PgType::Integer => Type::INT4_ARRAY,
            PgType::BigInt => Type::INT8_ARRAY,
            PgType::Real => Type::FLOAT4_ARRAY,
            PgType::DoublePrecision => Type::FLOAT8_ARRAY,
            PgType::Numeric(_) => Type::NUMERIC_ARRAY,
            PgType::Boolean => Type::BOOL_ARRAY,
            PgType::Timestamptz => Type::TIMESTAMPTZ_ARRAY,
            PgType::Timestamp => Type::TIMESTAMP_ARRAY,
            PgType::Date => Type::DATE_ARRAY,
            PgType::Uuid => Type::UUID_ARRAY,
            PgType::Bytea => Type::BYTEA_ARRAY,
            PgType::Json => Type::JSON_ARRAY,
            PgType::Jsonb => Type::JSONB_ARRAY,
            // Validation refuses arrays of arrays; text is the closest honest fallback.
            PgType::Array(_) => Type::TEXT_ARRAY,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("weird \"name"), "\"weird \"\"name\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn state_tables_are_named_as_in_spec() {
        let ddl = state_ddl("tributary").join("\n");
        assert!(ddl.contains("\"tributary\".\"checkpoints\""));
        assert!(ddl.contains("\"tributary\".\"collections\""));
        assert!(ddl.contains("\"tributary\".\"dead_letters\""));
        assert!(ddl.contains("'pending', 'snapshot', 'streaming'"));
    }

    #[test]
    fn dead_letters_gain_their_lifecycle_columns_in_place() {
        let ddl = state_ddl("tributary");
        let create = ddl
            .iter()
            .position(|s| {
                s.starts_with("CREATE TABLE IF NOT EXISTS \"tributary\".\"dead_letters\"")
            })
            .unwrap();
        let resolved = ddl
            .iter()
            .position(|s| s.contains("ADD COLUMN IF NOT EXISTS resolved_at timestamptz"))
            .unwrap();
        let index = ddl
            .iter()
            .position(|s| s.contains("dead_letters_open_version"))
            .unwrap();
        assert!(create < resolved && resolved < index);
    }
}
