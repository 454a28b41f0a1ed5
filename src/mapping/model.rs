//! The validated, in-memory form of the mapping files: what each collection becomes in Postgres.
//!
//! Everything downstream (conversion, DDL, the sink) works from these types; the YAML loader is
//! the only place that builds them.

use std::fmt;

/// A Postgres column type that a mapping may name (SPEC "Types accepted").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PgType {
    Text,
    Varchar(Option<u32>),
    SmallInt,
    Integer,
    BigInt,
    Real,
    DoublePrecision,
    /// `numeric`, `numeric(p)` or `numeric(p,s)`.
    Numeric(Option<(u32, Option<u32>)>),
    Boolean,
    Timestamptz,
    Timestamp,
    Date,
    Uuid,
    Bytea,
    Json,
    Jsonb,
    /// One-dimensional array of a scalar type (never of json/jsonb arrays of arrays).
    Array(Box<PgType>),
}

impl fmt::Display for PgType {
    /// Renders the type as DDL text, e.g. `numeric(12,2)` or `text[]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgType::Text => f.write_str("text"),
            PgType::Varchar(None) => f.write_str("varchar"),
            PgType::Varchar(Some(n)) => write!(f, "varchar({n})"),
            PgType::SmallInt => f.write_str("smallint"),
            PgType::Integer => f.write_str("integer"),
            PgType::BigInt => f.write_str("bigint"),
            PgType::Real => f.write_str("real"),
            PgType::DoublePrecision => f.write_str("double precision"),
            PgType::Numeric(None) => f.write_str("numeric"),
            PgType::Numeric(Some((p, None))) => write!(f, "numeric({p})"),
            PgType::Numeric(Some((p, Some(s)))) => write!(f, "numeric({p},{s})"),
            PgType::Boolean => f.write_str("boolean"),
            PgType::Timestamptz => f.write_str("timestamptz"),
            PgType::Timestamp => f.write_str("timestamp"),
            PgType::Date => f.write_str("date"),
            PgType::Uuid => f.write_str("uuid"),
            PgType::Bytea => f.write_str("bytea"),
            PgType::Json => f.write_str("json"),
            PgType::Jsonb => f.write_str("jsonb"),
            PgType::Array(inner) => write!(f, "{inner}[]"),
        }
    }
}

/// What to do with a value that cannot be converted losslessly (SPEC `on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    DeadLetter,
    Null,
    Fail,
}

/// What a string holding U+0000 becomes (Postgres text and JSON cannot store the character).
/// The `_id` is never altered: a key with NUL is always refused, since stripping it could make
/// two documents share a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNul {
    /// The value is refused like any unconvertible value (`on_error` decides).
    #[default]
    Refuse,
    /// Every NUL is removed from the document's strings before conversion.
    Strip,
    /// Every NUL becomes U+FFFD (the replacement character) before conversion.
    Replace,
}

/// Which `_id` types the key column accepts (`id_type:` of a collection). Every accepted type
/// has a key form no other accepted type shares, so two documents never share a row
/// (docs/mappings.md "Keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdType {
    /// The key column's SQL type decides (text: ObjectId and String, a String of 24 hex
    /// digits excepted; numeric types: numbers; ...).
    #[default]
    Auto,
    String,
    ObjectId,
    Number,
    Binary,
}

impl IdType {
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::Auto => "auto",
            IdType::String => "string",
            IdType::ObjectId => "objectId",
            IdType::Number => "number",
            IdType::Binary => "binary",
        }
    }
}

/// A dotted path into a document, split at the dots. `["."]` is never stored: the scalar
/// element of a child array is addressed by an empty path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<String>);

impl FieldPath {
    pub fn parse(dotted: &str) -> Self {
        if dotted == "." {
            return FieldPath(Vec::new());
        }
        FieldPath(dotted.split('.').map(str::to_owned).collect())
    }
    pub fn is_id(&self) -> bool {
        self.0.len() == 1 && self.0[0] == "_id"
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0.join("."))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMapping {
    pub name: String,
    pub source: FieldPath,
    pub pg_type: PgType,
}

/// An array field of the parent that becomes its own table keyed `(parent_key, idx)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildMapping {
    pub table: String,
    pub source: FieldPath,
    /// Column holding the parent's primary key; its type is the parent key column's type.
    pub parent_key: String,
    pub columns: Vec<ColumnMapping>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMapping {
    pub database: String,
    pub collection: String,
    pub table: String,
    /// Ordered as in the file; exactly one has source `_id` (the primary key).
    pub columns: Vec<ColumnMapping>,
    pub extra_props: Option<String>,
    pub on_error: OnError,
    pub on_nul: OnNul,
    pub id_type: IdType,
    pub children: Vec<ChildMapping>,
}

impl CollectionMapping {
    /// `db.collection`, the namespace string used in events, metrics and state tables.
    pub fn namespace(&self) -> String {
        format!("{}.{}", self.database, self.collection)
    }
    /// Index into `columns` of the `_id` column. Validation guarantees it exists.
    pub fn key_index(&self) -> usize {
        self.columns
            .iter()
            .position(|c| c.source.is_id())
            .unwrap_or(0)
    }
    pub fn key_column(&self) -> &ColumnMapping {
        &self.columns[self.key_index()]
    }

    /// A fingerprint of everything that decides which rows a document becomes (FNV-1a, 64
    /// bits, of the mapping's `Debug` form, which holds no file position): a copy saved under
    /// one mapping is not resumed under another (`pipeline::full_sync`). A change of Tributary
    /// that changes the form only makes an interrupted copy start over.
    pub fn fingerprint(&self) -> String {
        let hash = format!("{self:?}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("{hash:016x}")
    }
}

/// Every mapped collection of a config, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingSet {
    pub collections: Vec<CollectionMapping>,
}

/// A Postgres table as the mapping defines it: mapped tables and child tables alike.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<(String, PgType)>,
    /// Indexes into `columns`: `[key]` for a parent, `[parent_key, idx]` for a child.
    pub primary_key: Vec<usize>,
}

impl CollectionMapping {
    /// The tables this mapping writes: the parent first, then each child in order. The parent's
    /// `extra_props` column (jsonb) comes last; a child's columns are `parent_key` (typed like
    /// the parent's key column), `idx integer`, then its own columns.
    pub fn tables(&self) -> Vec<TableDef> {
        let mut parent: Vec<(String, PgType)> = self
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.pg_type.clone()))
            .collect();
        if let Some(extra) = &self.extra_props {
            parent.push((extra.clone(), PgType::Jsonb));
        }
        let key_type = self.key_column().pg_type.clone();
        let mut out = vec![TableDef {
            name: self.table.clone(),
            columns: parent,
            primary_key: vec![self.key_index()],
        }];
        for child in &self.children {
            let mut columns = vec![
                (child.parent_key.clone(), key_type.clone()),
                ("idx".to_owned(), PgType::Integer),
            ];
            columns.extend(
                child
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.pg_type.clone())),
            );
            out.push(TableDef {
                name: child.table.clone(),
                columns,
                primary_key: vec![0, 1],
            });
        }
        out
    }
}

impl MappingSet {
    /// Every table of every collection, in mapping order (each parent followed by its children).
    pub fn tables(&self) -> Vec<TableDef> {
        self.collections
            .iter()
            .flat_map(CollectionMapping::tables)
            .collect()
    }
}
