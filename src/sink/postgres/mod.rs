//! The Postgres sink, split by meaning: `ddl` (what tables look like), `encode` / `decode`
//! (how values travel on the wire, both ways), `copy` (binary COPY in large chunks), `state`
//! (Tributary's own tables: checkpoints, phases, dead letters), `requests` (what
//! commands ask the running daemon to do), `copy_progress` (what a
//! copy under way has committed, so it resumes), `plan` (a batch reduced to its
//! net effect per table), `owners` (which stream owns which table), `partitions` (partitioned
//! target tables), `stale` (documents whose child rows must be rewritten at their next update),
//! `requests` (what commands ask of the running daemon), `service` (one batch, one transaction)
//! and `catalog` (which DDL is still needed).

pub mod catalog;
pub mod copy;
pub mod copy_progress;
pub mod ddl;
pub mod decode;
pub mod encode;
pub mod owners;
pub mod partitions;
pub mod plan;
pub mod requests;
pub mod service;
pub mod stale;
pub mod state;
pub mod swap;

pub use service::PostgresSink;
