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
