//! Integration tests: the official `mongodb` driver against the simulator over TCP.

#[path = "driver/support.rs"]
mod support;

#[path = "driver/pki.rs"]
mod pki;

#[path = "driver/crud.rs"]
mod crud;

#[path = "driver/oplog.rs"]
mod oplog;

#[path = "driver/streams.rs"]
mod streams;

#[path = "driver/txn.rs"]
mod txn;

#[path = "driver/wire.rs"]
mod wire;

#[path = "driver/ids.rs"]
mod ids;

#[path = "driver/sample.rs"]
mod sample;

#[path = "driver/write_block.rs"]
mod write_block;

#[path = "driver/security.rs"]
mod security;

#[path = "driver/large.rs"]
mod large;

#[path = "driver/snapshot.rs"]
mod snapshot;

#[path = "driver/sharded.rs"]
mod sharded;

#[path = "driver/lookups.rs"]
mod lookups;

#[path = "driver/txn_ddl.rs"]
mod txn_ddl;

#[path = "driver/coll_stats.rs"]
mod coll_stats;
