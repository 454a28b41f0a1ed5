//! mongo-sim: an in-memory MongoDB replica-set simulator speaking the wire protocol.
//!
//! Layout (data flows top to bottom, imports run one way): `front/` (`server`, `wire`,
//! `commands`, `auth`, ...) over `router/` (with `--shards`) over `node/` (`state`, `writes`,
//! `store`, `oplog`, `stream`, `tail`, `cursor`, `scan`, ...: one replica-set member each) over
//! the pure modules at the top (`codec`, `bson_order`, `query`, ...). No node module imports
//! the front or the router (the one exception: a node's `state` keeps its `auth::Users`).
//! - `server`: TCP listener, one task per connection, `SimOptions`/`SimHandle`; a listener
//!   serves a node's commands, or with `--shards` the router's;
//! - `router`: `mongos` over N in-process shard nodes (metadata, routing, merged reads and
//!   change streams, migrations, cross-shard commits); it imports node modules, never the
//!   reverse. `migration`: a node's side of a chunk migration; `clock`: the cluster clock
//!   every node's oplog draws times from.
//!   `tls`: `--tls-cert`/`--tls-key` (requireTLS on the one port), `--tls-ca-file` (client
//!   certificates and their subjects).
//! - `auth`: `--auth` and `--x509-user` users and roles, the SASL commands and MONGODB-X509's
//!   `authenticate`, the 13 Unauthorized check;
//!   `scram`: the SCRAM-SHA-1/SHA-256 server exchange (pure).
//! - `wire`: OP_MSG / OP_QUERY framing, OP_MSG / OP_REPLY encoding.
//! - `codec`: BSON bytes decoded and encoded without `bson`'s serde path (what the wire, the
//!   oplog, scans and change events share); `codec::canonical` spots inserted documents that
//!   can be kept as sent.
//! - `commands`: dispatch plus one file per command family.
//! - `state`: storage + oplog behind one lock, cursors, sessions, fail points.
//! - `writes`: the write engine over live storage or a transaction's copy.
//! - `store`, `oplog`: collections and the capped `local.oplog.rs`.
//! - `tail`, `capped`, `stream`, `scan`, `cursor`: oplog tail cursors, tailable cursors on
//!   capped user collections, change streams,
//!   batch-at-a-time collection scans, cursor table; `split`: the 16 MB
//!   limits on documents and events, `$changeStreamSplitLargeEvent`.
//! - `failpoint`, `error`, `demo`: fail points, command errors, `--seed-demo`.
//! - `lookups`: the per-namespace count of change streams' `updateLookup` reads.
//! - `retry`: retryable writes deduplicated by `lsid` + `txnNumber` + `stmtId`.
//! - `validation`: collection validators (`validator`, `bypassDocumentValidation`).
//! - `write_block`: `setUserWriteBlockMode` state and the 371 check writes make.
//! - Pure modules (no I/O): `bson_order`, `query`, `update`, `diff`, `token`,
//!   `change_event`, `aggregate`, `seed`.
pub mod aggregate;
pub mod bson_order;
pub mod change_event;
pub mod diff;
pub mod query;
pub mod seed;
pub mod token;
pub mod update;

mod codec;
mod error;
mod front;
mod node;
mod router;

pub use error::CommandError;
pub use front::server::{start, SimHandle, SimOptions, TlsFiles};
