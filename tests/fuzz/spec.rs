//! The fuzzer's own description of a mapping: SQL types, columns, children, `on_error`, and its
//! rendering as a mapping file (with the type aliases and quoted names docs/mappings.md
//! allows). The oracle reads these, never `tributary::mapping::model`.

use std::fmt::Write as _;

/// A column type of SPEC "Types accepted".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlType {
    Text,
    Varchar(Option<u32>),
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    /// `numeric`, `numeric(p)` (`Some((p, None))`) or `numeric(p,s)`.
    Numeric(Option<(u32, Option<u32>)>),
    Boolean,
    Timestamptz,
    Timestamp,
    Date,
    Uuid,
    Bytea,
    Json,
    Jsonb,
    /// One dimension, of any type above but json/jsonb.
    Array(Box<SqlType>),
}

impl SqlType {
    /// Every scalar type (arrays are built from these), with a few parameters.
    pub fn scalars() -> Vec<SqlType> {
        vec![
            SqlType::Text,
            SqlType::Varchar(None),
            SqlType::Varchar(Some(1)),
            SqlType::Varchar(Some(6)),
            SqlType::SmallInt,
            SqlType::Integer,
            SqlType::BigInt,
            SqlType::Real,
            SqlType::Double,
            SqlType::Numeric(None),
            SqlType::Numeric(Some((12, Some(2)))),
            SqlType::Numeric(Some((5, None))),
            SqlType::Numeric(Some((3, Some(3)))),
            SqlType::Numeric(Some((40, Some(10)))),
            SqlType::Boolean,
            SqlType::Timestamptz,
            SqlType::Timestamp,
            SqlType::Date,
            SqlType::Uuid,
            SqlType::Bytea,
            SqlType::Json,
            SqlType::Jsonb,
        ]
    }

    /// The types a key column may have (`json` is refused by `tributary check`).
    pub fn keys() -> Vec<SqlType> {
        SqlType::scalars()
            .into_iter()
            .filter(|t| *t != SqlType::Json)
            .collect()
    }

    /// The type as a mapping file may spell it; `variant` picks among the aliases.
    pub fn spelled(&self, variant: usize) -> String {
        let pick = |names: &[&str]| names[variant % names.len()].to_owned();
        match self {
            SqlType::Text => pick(&["text", "TEXT"]),
            SqlType::Varchar(None) => pick(&["varchar", "character varying"]),
            SqlType::Varchar(Some(n)) => match variant % 3 {
                0 => format!("varchar({n})"),
                1 => format!("character varying({n})"),
                _ => format!("VARCHAR( {n} )"),
            },
            SqlType::SmallInt => pick(&["smallint", "int2"]),
            SqlType::Integer => pick(&["integer", "int", "int4"]),
            SqlType::BigInt => pick(&["bigint", "int8"]),
            SqlType::Real => pick(&["real", "float4"]),
            SqlType::Double => pick(&["double precision", "float8", "Double  Precision"]),
            SqlType::Numeric(spec) => {
                let base = pick(&["numeric", "decimal"]);
                match spec {
                    None => base,
                    Some((p, None)) => format!("{base}({p})"),
                    Some((p, Some(s))) => format!("{base}({p},{s})"),
                }
            }
            SqlType::Boolean => pick(&["boolean", "bool"]),
            SqlType::Timestamptz => pick(&["timestamptz", "timestamp with time zone"]),
            SqlType::Timestamp => pick(&["timestamp", "timestamp without time zone"]),
            SqlType::Date => "date".to_owned(),
            SqlType::Uuid => "uuid".to_owned(),
            SqlType::Bytea => "bytea".to_owned(),
            SqlType::Json => "json".to_owned(),
            SqlType::Jsonb => "jsonb".to_owned(),
            SqlType::Array(inner) => format!("{}[]", inner.spelled(variant)),
        }
    }
}

/// What `_id`s a key column takes beside its type's own (the `id_type` of the new key rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    Auto,
    String,
    ObjectId,
    Number,
    Binary,
}

impl IdType {
    pub fn spelled(self) -> &'static str {
        match self {
            IdType::Auto => "auto",
            IdType::String => "string",
            IdType::ObjectId => "objectId",
            IdType::Number => "number",
            IdType::Binary => "binary",
        }
    }
}

/// What a string holding U+0000 becomes (`on_nul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNul {
    Refuse,
    Strip,
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    DeadLetter,
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// Path segments; empty for a child's `.`.
    pub source: Vec<String>,
    pub ty: SqlType,
    /// Which alias `SqlType::spelled` writes.
    pub spelling: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub table: String,
    pub source: Vec<String>,
    pub parent_key: String,
    pub columns: Vec<Column>,
}

/// One generated collection mapping. `key` reads `_id`; it sits at `key_position` among the
/// parent columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub table: String,
    pub key: Column,
    pub key_position: usize,
    pub columns: Vec<Column>,
    pub extra_props: Option<String>,
    pub on_error: OnError,
    /// Written only when `Some` (the `id_type` key of the new `_id` rules).
    pub id_type: Option<IdType>,
    /// Written only when `Some`.
    pub on_nul: Option<OnNul>,
    pub children: Vec<Child>,
}

/// Database and collection the fuzzed documents live in.
pub const DATABASE: &str = "fuzz";
pub const COLLECTION: &str = "docs";
/// The collection (and table) of the sync markers, mapped beside the fuzzed one.
pub const MARKERS: &str = "fuzz_markers";

impl Mapping {
    /// Parent columns in table order (the key at `key_position`), without `extra_props`.
    pub fn parent_columns(&self) -> Vec<&Column> {
        let mut all: Vec<&Column> = self.columns.iter().collect();
        all.insert(self.key_position.min(all.len()), &self.key);
        all
    }

    /// Index of the key among `parent_columns`.
    pub fn key_index(&self) -> usize {
        self.key_position.min(self.columns.len())
    }

    /// The mapping file: the fuzzed collection and the markers collection.
    pub fn yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "database: {DATABASE}\ncollections:\n  {COLLECTION}:");
        let _ = writeln!(y, "    table: {}", quoted(&self.table));
        let _ = writeln!(y, "    columns:");
        for c in self.parent_columns() {
            column_yaml(&mut y, "      ", c);
        }
        if let Some(extra) = &self.extra_props {
            let _ = writeln!(y, "    extra_props: {}", quoted(extra));
        }
        let _ = writeln!(
            y,
            "    on_error: {}",
            match self.on_error {
                OnError::DeadLetter => "dead_letter",
                OnError::Null => "null",
            }
        );
        if let Some(on_nul) = self.on_nul {
            let _ = writeln!(
                y,
                "    on_nul: {}",
                match on_nul {
                    OnNul::Refuse => "refuse",
                    OnNul::Strip => "strip",
                    OnNul::Replace => "replace",
                }
            );
        }
        if let Some(id_type) = self.id_type {
            let _ = writeln!(y, "    id_type: {}", id_type.spelled());
        }
        if !self.children.is_empty() {
            let _ = writeln!(y, "    children:");
            for child in &self.children {
                let _ = writeln!(y, "      - table: {}", quoted(&child.table));
                let _ = writeln!(y, "        source: {}", quoted(&child.source.join(".")));
                let _ = writeln!(y, "        parent_key: {}", quoted(&child.parent_key));
                let _ = writeln!(y, "        columns:");
                for c in &child.columns {
                    column_yaml(&mut y, "          ", c);
                }
            }
        }
        let _ = writeln!(
            y,
            "  {MARKERS}:\n    columns:\n      - {{ name: id, source: _id, type: text }}"
        );
        y
    }
}

fn column_yaml(y: &mut String, indent: &str, c: &Column) {
    let source = if c.source.is_empty() {
        ".".to_owned()
    } else {
        c.source.join(".")
    };
    let _ = writeln!(y, "{indent}- name: {}", quoted(&c.name));
    let _ = writeln!(y, "{indent}  source: {}", quoted(&source));
    let _ = writeln!(y, "{indent}  type: {}", quoted(&c.ty.spelled(c.spelling)));
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// A Postgres identifier, quoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
