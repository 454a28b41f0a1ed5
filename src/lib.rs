//! Tributary streams a MongoDB replica set into PostgreSQL.
//!
//! Layout (data flows top to bottom: source → normalize → batch → sink, checkpoints owned by
//! the sink; the commands at the bottom drive it):
//! - `config`: the TOML config file, `${VAR}` interpolation, validation with field paths.
//! - `bson_order`: MongoDB's sort order of `_id`s, across types.
//! - `event`, `position`: what a source emits, and where in MongoDB's history it stands.
//! - `mapping`: YAML mappings, validation, document → rows, BSON → Postgres values, `_id` keys.
//! - `source`: change streams, the oplog, and the full sync's range reads.
//! - `pg`: the one way to open a Postgres connection: the URI, libpq's TLS modes, keep-alives.
//! - `lease`: the stream's advisory lock: one writer per stream, hot standby, who holds it.
//! - `sink`: applies batches of changes, dead letters and the checkpoint in one transaction.
//! - `pipeline`: `sync` and `full-sync`: normalisation, batching, retries, narrowing, and
//!   mapping reloads between batches.
//! - `metrics`: every metric name, `/metrics`, `/healthz`, `/readyz`.
//! - `progress`: bars on a terminal or periodic log lines for long work; the log writer that
//!   keeps log lines above the bars.
//! - `verify`: compares Postgres with MongoDB through the mappings (`verify`, `cutover`).
//! - `cutover`: catch up, quiet period, verify, durable verdict.
//! - `preflight`: `check`'s findings about both ends: topology, oplog window, privileges.
//! - `cli`: one file per subcommand, exit codes.

pub mod bson_order;
pub mod cli;
pub mod config;
pub mod cutover;
pub mod event;
pub mod lease;
pub mod mapping;
pub mod metrics;
pub mod pg;
pub mod pipeline;
pub mod position;
pub mod preflight;
pub mod progress;
pub mod sink;
pub mod source;
pub mod verify;
