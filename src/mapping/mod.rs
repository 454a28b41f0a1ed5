//! Mappings: loaded from YAML and validated; documents turned into rows; BSON turned into
//! Postgres values. Pure: no I/O besides reading the mapping files.

pub mod model;
pub mod value;
