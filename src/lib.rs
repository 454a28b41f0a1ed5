//! Tributary streams a MongoDB replica set into PostgreSQL.
//!
//! Layout (data flows top to bottom):
//! - `config`: the TOML config file, `${VAR}` interpolation, validation with field paths.
//! - `mapping`: YAML mappings, validation, document → rows, BSON → Postgres values.
//! - `pg`: the one way to open a Postgres connection: the URI, libpq's TLS modes, keep-alives.
//! - `lease`: the stream's advisory lock: one writer per stream, hot standby, who holds it.
//! - `sink`: applies batches of changes, dead letters and the checkpoint in one transaction.
//! - `verify`: compares Postgres with MongoDB through the mappings (`verify`, `cutover`).

pub mod cli;
pub mod config;
pub mod event;
pub mod lease;
pub mod mapping;
pub mod metrics;
pub mod pg;
pub mod pipeline;
pub mod position;
pub mod sink;
pub mod source;
pub mod verify;
