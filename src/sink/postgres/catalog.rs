//! Which of the DDL statements (`ddl::schema_ddl`, the single list of what Tributary needs)
//! would change anything, read from the catalogs, so that `sync` and `full-sync` run no DDL at
//! all when every schema, table, column and index exists. Postgres checks the privilege of
//! `CREATE … IF NOT EXISTS` / `ADD COLUMN IF NOT EXISTS` before it looks whether the object
//! exists, so a least-privilege role (no `CREATE`, not the owner) could not even run the no-op.
//!
//! Each statement names its object; `object_of` reads it back from the statement text (the
//! forms `ddl` writes, with identifiers quoted by `quote_ident`). A statement of another form is
//! treated as always needed, and a unit test keeps every statement of `schema_ddl` recognised.
//! The catalogs (`pg_namespace`, `pg_class`, `pg_attribute`) are readable by every role.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use super::ddl::quote_ident;
use crate::mapping::model::PgType;

/// The object a DDL statement creates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    Schema(String),
    /// A table (or any relation of that name: `IF NOT EXISTS` skips those too).
    Table {
        schema: String,
        table: String,
    },
    Column {
        schema: String,
        table: String,
        column: String,
    },
    /// An index, which lives in its table's schema.
    Index {
        schema: String,
        name: String,
        table: String,
    },
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = |s: &str| quote_ident(s);
        match self {
            Object::Schema(s) => write!(f, "schema {}", q(s)),
            Object::Table { schema, table } => write!(f, "table {}.{}", q(schema), q(table)),
            Object::Column {
                schema,
                table,
                column,
            } => write!(
                f,
                "column {} of table {}.{}",
                q(column),
                q(schema),
                q(table)
            ),
            Object::Index {
                schema,
                name,
                table,
            } => write!(f, "index {} on table {}.{}", q(name), q(schema), q(table)),
        }
    }
}

/// A statement whose object does not exist yet.
#[derive(Debug, Clone)]
pub struct Missing {
    pub statement: String,
    /// `None` for a statement of a form `object_of` does not know (always run).
    pub object: Option<Object>,
}

/// The object `statement` creates, for the forms `ddl` writes: `CREATE SCHEMA IF NOT EXISTS`,
/// `CREATE TABLE IF NOT EXISTS`, `ALTER TABLE … ADD COLUMN IF NOT EXISTS` and
/// `CREATE [UNIQUE] INDEX IF NOT EXISTS … ON` (identifiers quoted or bare).
pub fn object_of(statement: &str) -> Option<Object> {
    if let Some(rest) = statement.strip_prefix("CREATE SCHEMA IF NOT EXISTS ") {
        let (schema, _) = ident(rest)?;
        return Some(Object::Schema(schema));
    }
    if let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        let (schema, table, _) = qualified(rest)?;
        return Some(Object::Table { schema, table });
    }
    if let Some(rest) = statement.strip_prefix("ALTER TABLE ") {
        let (schema, table, rest) = qualified(rest)?;
        let rest = rest.strip_prefix(" ADD COLUMN IF NOT EXISTS ")?;
        let (column, _) = ident(rest)?;
        return Some(Object::Column {
            schema,
            table,
            column,
        });
    }
    let rest = statement
        .strip_prefix("CREATE INDEX IF NOT EXISTS ")
        .or_else(|| statement.strip_prefix("CREATE UNIQUE INDEX IF NOT EXISTS "))?;
    let (name, rest) = ident(rest)?;
    let (schema, table, _) = qualified(rest.strip_prefix(" ON ")?)?;
    Some(Object::Index {
        schema,
        name,
        table,
    })
}

/// An identifier at the start of `s`, and the text after it: quoted (`""` inside is a `"`),
/// or bare (`resolved_at`), which Postgres folds to lower case.
fn ident(s: &str) -> Option<(String, &str)> {
    let Some(body) = s.strip_prefix('"') else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        return (end > 0).then(|| (s[..end].to_lowercase(), &s[end..]));
    };
    let mut name = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if chars.peek().is_some_and(|&(_, n)| n == '"') {
                chars.next();
                name.push('"');
            } else {
                return Some((name, &body[i + 1..]));
            }
        } else {
            name.push(c);
        }
    }
    None
}

/// `"schema"."name"` at the start of `s`.
fn qualified(s: &str) -> Option<(String, String, &str)> {
    let (schema, rest) = ident(s)?;
    let (name, rest) = ident(rest.strip_prefix('.')?)?;
    Some((schema, name, rest))
}

/// The statements of `statements` whose object is missing, in order. A statement whose
/// schema or table is itself missing is missing too.
pub async fn missing(
    client: &Client,
    statements: &[String],
) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let objects: Vec<Option<Object>> = statements.iter().map(|s| object_of(s)).collect();
    let mut schemas = HashSet::new();
    let mut relations = HashSet::new();
    for o in objects.iter().flatten() {
        match o {
            Object::Schema(s) => {
                schemas.insert(s.clone());
            }
            Object::Table { schema, table } | Object::Column { schema, table, .. } => {
                schemas.insert(schema.clone());
                relations.insert(table.clone());
            }
            Object::Index { schema, name, .. } => {
                schemas.insert(schema.clone());
                relations.insert(name.clone());
            }
        }
    }
    let schemas: Vec<String> = schemas.into_iter().collect();
    let relations: Vec<String> = relations.into_iter().collect();
    let existing_schemas: HashSet<String> = client
        .query(
            "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)",
            &[&schemas],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let existing_relations: HashSet<(String, String)> = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relname = ANY($2)",
            &[&schemas, &relations],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let existing_columns: HashSet<(String, String, String)> = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relname = ANY($2) \
               AND a.attnum > 0 AND NOT a.attisdropped",
            &[&schemas, &relations],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let exists = |o: &Object| match o {
        Object::Schema(s) => existing_schemas.contains(s),
        Object::Table { schema, table } => {
            existing_relations.contains(&(schema.clone(), table.clone()))
        }
        Object::Column {
            schema,
            table,
            column,
        } => existing_columns.contains(&(schema.clone(), table.clone(), column.clone())),
        Object::Index { schema, name, .. } => {
            existing_relations.contains(&(schema.clone(), name.clone()))
        }
    };
    Ok(statements
        .iter()
        .zip(objects)
        .filter(|(_, o)| !o.as_ref().is_some_and(exists))
        .map(|(s, object)| Missing {
            statement: s.clone(),
            object,
        })
        .collect())
}

/// The missing objects for a message: a column or index of a missing table is not named again
/// (creating the table creates it).
pub fn summary(missing: &[Missing]) -> Vec<String> {
    let tables: HashSet<(&str, &str)> = missing
        .iter()
        .filter_map(|m| match &m.object {
            Some(Object::Table { schema, table }) => Some((schema.as_str(), table.as_str())),
            _ => None,
        })
        .collect();
    missing
        .iter()
        .filter_map(|m| match &m.object {
            Some(Object::Column { schema, table, .. } | Object::Index { schema, table, .. })
                if tables.contains(&(schema.as_str(), table.as_str())) =>
            {
                None
            }
            Some(o) => Some(o.to_string()),
            None => Some(m.statement.clone()),
        })
        .collect()
}

/// What a role that may not create `missing` can do about it: the `GRANT`s that would let it
/// (one per schema or owner), for the error of `PostgresSink::ensure_schema`.
pub async fn grants_for(
    client: &Client,
    missing: &[Missing],
    role: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut grants: Vec<String> = Vec::new();
    let mut push = |g: String| {
        if !grants.contains(&g) {
            grants.push(g);
        }
    };
    let role_q = quote_ident(role);
    for m in missing {
        match &m.object {
            Some(Object::Schema(_)) => {
                let db: String = client
                    .query_one("SELECT current_database()::text", &[])
                    .await?
                    .get(0);
                push(format!(
                    "GRANT CREATE ON DATABASE {} TO {role_q};",
                    quote_ident(&db)
                ));
            }
            Some(Object::Table { schema, .. }) => push(format!(
                "GRANT CREATE ON SCHEMA {} TO {role_q};",
                quote_ident(schema)
            )),
            // Adding a column or an index needs the table's owner (no GRANT gives it, except
            // membership in the owning role); a table still to be created will be ours.
            Some(Object::Column { schema, table, .. } | Object::Index { schema, table, .. }) => {
                let owner = client
                    .query_opt(
                        "SELECT pg_catalog.pg_get_userbyid(c.relowner)::text \
                         FROM pg_catalog.pg_class c \
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2",
                        &[schema, table],
                    )
                    .await?
                    .map(|r| r.get::<_, String>(0));
                match owner {
                    Some(owner) if owner != role => push(format!(
                        "GRANT {} TO {role_q};  -- the owner of {}.{}",
                        quote_ident(&owner),
                        quote_ident(schema),
                        quote_ident(table)
                    )),
                    Some(_) => {}
                    None => push(format!(
                        "GRANT CREATE ON SCHEMA {} TO {role_q};",
                        quote_ident(schema)
                    )),
                }
            }
            None => {}
        }
    }
    Ok(grants)
}

/// How `format_type` names a mapped type, i.e. what the catalog says of a column created from
/// it, so a mapping can be compared with a live column.
pub fn catalog_type(t: &PgType) -> String {
    match t {
        PgType::Varchar(None) => "character varying".to_owned(),
        PgType::Varchar(Some(n)) => format!("character varying({n})"),
        PgType::Numeric(Some((p, None))) => format!("numeric({p},0)"),
        PgType::Timestamptz => "timestamp with time zone".to_owned(),
        PgType::Timestamp => "timestamp without time zone".to_owned(),
        PgType::Array(inner) => format!("{}[]", catalog_type(inner)),
        other => other.to_string(),
    }
}

/// The type of every column of the tables `tables` of `schema` that exist, as `format_type`
/// writes it, keyed by `(table, column)`.
pub async fn column_types(
    client: &Client,
    schema: &str,
    tables: &[String],
) -> Result<HashMap<(String, String), String>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind IN ('r', 'p') \
               AND a.attnum > 0 AND NOT a.attisdropped",
            &[&schema, &tables],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::model::MappingSet;
    use crate::sink::postgres::ddl::schema_ddl;

    #[test]
    fn every_statement_of_the_ddl_names_its_object() {
        let mapping = crate::mapping::load::load_str(
            r#"
database: shop
collections:
  orders:
    table: 'we"ird'
    columns:
      - { name: id, source: _id, type: text }
      - { name: "q.ty", source: qty, type: integer }
    children:
      - table: items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
"#,
            std::path::Path::new("m.yml"),
        );
        let mapping: MappingSet = mapping.unwrap();
        for s in schema_ddl(&mapping, "app", "tributary") {
            assert!(object_of(&s).is_some(), "not recognised: {s}");
        }
        assert_eq!(
            object_of(
                "ALTER TABLE \"app\".\"we\"\"ird\" ADD COLUMN IF NOT EXISTS \"q.ty\" integer"
            ),
            Some(Object::Column {
                schema: "app".into(),
                table: "we\"ird".into(),
                column: "q.ty".into()
            })
        );
        assert_eq!(
            object_of("CREATE INDEX IF NOT EXISTS \"i\" ON \"s\".\"t\" (a, b)"),
            Some(Object::Index {
                schema: "s".into(),
                name: "i".into(),
                table: "t".into()
            })
        );
    }
}
