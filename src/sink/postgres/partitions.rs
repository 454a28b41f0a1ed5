//! Mapped tables that a user pre-created as declaratively partitioned tables (`PARTITION BY
//! RANGE/LIST/HASH`, docs/scaling.md): what Tributary needs of them, and how `full-sync --mode
//! replace` rebuilds their partitioning under shadow names instead of flattening them.
//!
//! - **What the writes need.** The sink deletes by the mapping's key and COPYs the new rows
//!   (`service`); Postgres routes each row to its partition, and a row whose partition key
//!   changed moves. No `ON CONFLICT` is involved, so no unique index has to match the key
//!   exactly; but the table must have a primary key that holds the mapping's key columns (an
//!   index for the deletes, and uniqueness per document), which Postgres only allows when it
//!   also holds every partition-key column. Every partition-key column must be a mapped column:
//!   a column Tributary never writes is NULL in every row it inserts.
//! - **Recreating.** `read_tree` reads the partition tree (`pg_partitioned_table` through
//!   `pg_get_partkeydef`, each partition's bound through `pg_get_expr(relpartbound)`, nested
//!   partitioning included); `shadow_ddl` creates the shadow with the same partition key and
//!   primary key, and one shadow partition per live one with the same bound, each named
//!   `swap::shadow_name` of its live name in its own schema.

use tokio_postgres::GenericClient;

use super::ddl::{qualified, quote_ident};
use crate::mapping::model::TableDef;

/// One partitioned table (the mapped one, or a partition partitioned in turn) or partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub schema: String,
    pub name: String,
    /// Index in `Tree::nodes` of the table this one is a partition of; `None` for the root.
    pub parent: Option<usize>,
    /// `FOR VALUES …` or `DEFAULT`; `None` for the root.
    pub bound: Option<String>,
    /// `RANGE (placed_at)` etc. when this node is itself partitioned.
    pub partition_by: Option<String>,
    /// Name of its primary-key constraint.
    pub primary_key_name: Option<String>,
}

/// A partitioned mapped table: the root first, then its partitions, every parent before its
/// partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Columns of the root's primary key, in order (empty without one).
    pub primary_key: Vec<String>,
    /// Columns the root's partition key names directly (an expression's columns are not
    /// listed).
    pub key_columns: Vec<String>,
}

/// Why a partitioned mapped table cannot be written as it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("table {table} is partitioned ({partition_by}) {problem}; nothing was written (docs/scaling.md, \"Partitioned targets\")")]
pub struct Unfit {
    pub table: String,
    pub partition_by: String,
    pub problem: String,
}

/// The partition tree of `schema.table`, or `None` when it is not a partitioned table (or does
/// not exist).
pub async fn read_tree(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<Tree>, tokio_postgres::Error> {
    let root = qualified(schema, table);
    let rows = client
        .query(
            "WITH RECURSIVE tree AS ( \
               SELECT c.oid, NULL::oid AS parent, 0 AS depth FROM pg_catalog.pg_class c \
               WHERE c.oid = to_regclass($1) AND c.relkind = 'p' \
               UNION ALL \
               SELECT i.inhrelid, i.inhparent, t.depth + 1 FROM pg_catalog.pg_inherits i \
               JOIN tree t ON i.inhparent = t.oid \
               JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid AND p.relispartition) \
             SELECT t.oid::text, t.parent::text, n.nspname::text, c.relname::text, \
                    pg_catalog.pg_get_expr(c.relpartbound, c.oid), \
                    CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END, \
                    (SELECT conname::text FROM pg_catalog.pg_constraint \
                     WHERE conrelid = c.oid AND contype = 'p') \
             FROM tree t JOIN pg_catalog.pg_class c ON c.oid = t.oid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY t.depth, n.nspname, c.relname",
            &[&root],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let oids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let nodes = rows
        .iter()
        .map(|r| Node {
            parent: r
                .get::<_, Option<String>>(1)
                .and_then(|p| oids.iter().position(|o| *o == p)),
            schema: r.get(2),
            name: r.get(3),
            bound: r.get(4),
            partition_by: r.get(5),
            primary_key_name: r.get(6),
        })
        .collect();
    let columns = |sql: &str| {
        let root = root.clone();
        let sql = sql.to_owned();
        async move {
            client.query(&sql, &[&root]).await.map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
        }
    };
    let primary_key = columns(
        "SELECT a.attname::text FROM pg_catalog.pg_constraint k \
         CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, n) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum \
         WHERE k.conrelid = to_regclass($1) AND k.contype = 'p' ORDER BY u.n",
    )
    .await?;
    let key_columns = columns(
        "SELECT a.attname::text FROM pg_catalog.pg_partitioned_table p \
         CROSS JOIN LATERAL unnest(p.partattrs::int2[]) WITH ORDINALITY AS u(attnum, n) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = u.attnum \
         WHERE p.partrelid = to_regclass($1) AND u.attnum > 0 ORDER BY u.n",
    )
    .await?;
    Ok(Some(Tree {
        nodes,
        primary_key,
        key_columns,
    }))
}

/// Whether `schema.table` is a Citus-distributed table (`pg_dist_partition`, present only
/// where the extension is installed). `full-sync --mode replace` refuses those: its shadow
/// tables would be plain local tables, and the swap would quietly un-distribute the table.
pub async fn citus_distributed(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<bool, tokio_postgres::Error> {
    let citus: bool = client
        .query_one(
            "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !citus {
        return Ok(false);
    }
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
             WHERE logicalrelid = to_regclass($1))",
            &[&qualified(schema, table)],
        )
        .await?
        .get(0))
}

impl Tree {
    /// The root's partition key as `pg_get_partkeydef` spells it.
    pub fn partition_by(&self) -> &str {
        self.nodes
            .first()
            .and_then(|n| n.partition_by.as_deref())
            .unwrap_or("")
    }
}

/// Whether Tributary can write `def`'s rows into the partitioned table `tree` (module doc).
pub fn check(schema: &str, def: &TableDef, tree: &Tree) -> Result<(), Unfit> {
    let table = qualified(schema, &def.name);
    let unfit = |problem: String| Unfit {
        table: table.clone(),
        partition_by: tree.partition_by().to_owned(),
        problem,
    };
    let key: Vec<&str> = def
        .primary_key
        .iter()
        .filter_map(|&i| def.columns.get(i).map(|(n, _)| n.as_str()))
        .collect();
    let mut wanted: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    for c in &tree.key_columns {
        if !key.contains(&c.as_str()) {
            wanted.push(quote_ident(c));
        }
    }
    if let Some(c) = tree
        .key_columns
        .iter()
        .find(|c| !def.columns.iter().any(|(n, _)| n == *c))
    {
        return Err(unfit(format!(
            "by column {}, which no column of the mapping writes: every row Tributary inserts \
             would hold NULL there. Map a field to column {} or partition by a mapped column",
            quote_ident(c),
            quote_ident(c)
        )));
    }
    if tree.primary_key.is_empty() {
        return Err(unfit(format!(
            "but has no primary key; Tributary needs one that holds the mapping's key and the \
             partition key: ALTER TABLE {table} ADD PRIMARY KEY ({})",
            wanted.join(", ")
        )));
    }
    if let Some(k) = key
        .iter()
        .find(|k| !tree.primary_key.iter().any(|p| p == *k))
    {
        return Err(unfit(format!(
            "and its primary key ({}) lacks column {} of the mapping's key; give it a primary \
             key that holds the mapping's key and the partition key, e.g. ({})",
            tree.primary_key
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(k),
            wanted.join(", ")
        )));
    }
    Ok(())
}

/// The statements that create `shadow` (the shadow of the partitioned table `tree`, with
/// `shadow`'s columns) partitioned as `tree` is, and its partitions; `shadow_name` names the
/// shadow of a live partition.
pub fn shadow_ddl(
    schema: &str,
    shadow: &TableDef,
    tree: &Tree,
    shadow_name: impl Fn(&str) -> String,
) -> Vec<String> {
    let cols: Vec<String> = shadow
        .columns
        .iter()
        .map(|(n, ty)| format!("{} {}", quote_ident(n), ty))
        .collect();
    let pk: Vec<String> = tree.primary_key.iter().map(|c| quote_ident(c)).collect();
    let names: Vec<String> = tree
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i == 0 {
                qualified(schema, &shadow.name)
            } else {
                qualified(&n.schema, &shadow_name(&n.name))
            }
        })
        .collect();
    let mut out = vec![format!(
        "CREATE TABLE {} ({}, PRIMARY KEY ({})) PARTITION BY {}",
        names[0],
        cols.join(", "),
        pk.join(", "),
        tree.partition_by()
    )];
    for (i, n) in tree.nodes.iter().enumerate().skip(1) {
        let (Some(parent), Some(bound)) = (n.parent, &n.bound) else {
            continue;
        };
        let mut sql = format!(
            "CREATE TABLE {} PARTITION OF {} {bound}",
            names[i], names[parent]
        );
        if let Some(by) = &n.partition_by {
            sql.push_str(&format!(" PARTITION BY {by}"));
        }
        out.push(sql);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::model::PgType;

    fn def() -> TableDef {
        TableDef {
            name: "events".into(),
            columns: vec![
                ("id".into(), PgType::Text),
                ("at".into(), PgType::Timestamptz),
            ],
            primary_key: vec![0],
        }
    }

    fn tree(pk: &[&str], key: &[&str]) -> Tree {
        let node = |name: &str, parent, bound: Option<&str>, by: Option<&str>| Node {
            schema: "public".into(),
            name: name.into(),
            parent,
            bound: bound.map(Into::into),
            partition_by: by.map(Into::into),
            primary_key_name: None,
        };
        Tree {
            nodes: vec![
                node("events", None, None, Some("RANGE (at)")),
                node(
                    "events_2026",
                    Some(0),
                    Some("FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"),
                    Some("HASH (id)"),
                ),
                node(
                    "events_2026_h0",
                    Some(1),
                    Some("FOR VALUES WITH (modulus 2, remainder 0)"),
                    None,
                ),
                node("events_rest", Some(0), Some("DEFAULT"), None),
            ],
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            key_columns: key.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_primary_key_with_the_mapping_key_and_partition_key_fits() {
        assert!(check("public", &def(), &tree(&["id", "at"], &["at"])).is_ok());
    }

    #[test]
    fn unfit_keys_are_refused_with_the_fix() {
        let e = check("public", &def(), &tree(&[], &["at"])).unwrap_err();
        assert!(e
            .to_string()
            .contains("ALTER TABLE \"public\".\"events\" ADD PRIMARY KEY (\"id\", \"at\")"));
        let e = check("public", &def(), &tree(&["at", "other"], &["at"])).unwrap_err();
        assert!(e.to_string().contains("lacks column \"id\""), "{e}");
        let e = check("public", &def(), &tree(&["id", "tenant"], &["tenant"])).unwrap_err();
        assert!(e.to_string().contains("by column \"tenant\""), "{e}");
    }

    #[test]
    fn the_shadow_is_partitioned_like_the_live_table() {
        let shadow = TableDef {
            name: "events__tributary_new".into(),
            ..def()
        };
        let ddl = shadow_ddl("public", &shadow, &tree(&["id", "at"], &["at"]), |n| {
            format!("{n}__s")
        });
        assert_eq!(
            ddl,
            vec![
                "CREATE TABLE \"public\".\"events__tributary_new\" (\"id\" text, \"at\" timestamptz, PRIMARY KEY (\"id\", \"at\")) PARTITION BY RANGE (at)",
                "CREATE TABLE \"public\".\"events_2026__s\" PARTITION OF \"public\".\"events__tributary_new\" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01') PARTITION BY HASH (id)",
                "CREATE TABLE \"public\".\"events_2026_h0__s\" PARTITION OF \"public\".\"events_2026__s\" FOR VALUES WITH (modulus 2, remainder 0)",
                "CREATE TABLE \"public\".\"events_rest__s\" PARTITION OF \"public\".\"events__tributary_new\" DEFAULT",
            ]
        );
    }
}
