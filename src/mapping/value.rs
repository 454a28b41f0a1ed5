//! `PgValue`: a converted, typed value ready for Postgres; the only currency between the
//! mapping (which produces it) and the sink (which encodes it for COPY and parameters).

/// One SQL value. The variant always matches the column's `PgType` it was converted for.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    Null,
    Text(String),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// Canonical decimal text (`-12.50`, `1E+3` is never produced: always plain digits),
    /// exact, never rounded; encoded to Postgres numeric by the sink.
    Numeric(String),
    Bool(bool),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamptz(i64),
    /// Microseconds since 1970-01-01T00:00:00 (UTC wall clock, no zone).
    Timestamp(i64),
    /// Days since 1970-01-01.
    Date(i32),
    Uuid([u8; 16]),
    Bytea(Vec<u8>),
    /// `json` and `jsonb` columns, and `extra_props`.
    Json(serde_json::Value),
    /// Elements all have the array's element type (or are `Null`).
    Array(Vec<PgValue>),
}

/// A row: values in the order of the table's columns (see `TableDef`).
pub type Row = Vec<PgValue>;

/// Rows produced from one document: the parent row, then for each `ChildMapping` (same order as
/// `CollectionMapping::children`) its rows, each laid out `[parent_key, idx, columns...]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentRows {
    pub parent: Row,
    pub children: Vec<Vec<Row>>,
    /// The document's `_id` in plain JSON (SPEC), so that a dead letter for rows Postgres
    /// refuses names its document: the key column's value may not (`id_type: number` keys
    /// `2` as the text "2"). Null where rows are built without a document (tests).
    pub id: serde_json::Value,
}
