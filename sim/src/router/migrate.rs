//! Chunk migrations (`moveChunk`, the balancer): the chunk's documents are copied to the
//! recipient as `fromMigrate` inserts, deleted from the donor as `fromMigrate` deletes, and the
//! chunk's version is bumped, all while the router's metadata lock is held for writing, so no
//! routed operation sees the chunk half moved.

use std::sync::Arc;

use bson::Bson;

use super::meta::ShardedColl;
use super::Router;
use crate::node::migration;

/// Moves chunk `i` of `ns` to shard `to` (the caller holds the metadata write lock).
pub fn move_chunk(router: &Router, ns: &str, sc: &mut ShardedColl, i: usize, to: usize) {
    let from = sc.chunks[i].shard;
    if from == to {
        return;
    }
    let Some((db, coll)) = ns.split_once('.') else {
        return;
    };
    let view = sc.clone();
    let docs = migration::docs_where(&router.shards[from], db, coll, |d| {
        view.chunk_index(&view.key_of(d)) == i
    });
    transfer(router, db, coll, from, to, docs);
    let major = sc.max_version().0 + 1;
    sc.chunks[i].shard = to;
    sc.chunks[i].version = (major, 0);
    tracing::debug!(ns, from, to, "chunk moved");
}

fn transfer(
    router: &Router,
    db: &str,
    coll: &str,
    from: usize,
    to: usize,
    docs: Vec<bson::Document>,
) {
    if docs.is_empty() {
        return;
    }
    let ids: Vec<Bson> = docs.iter().filter_map(|d| d.get("_id").cloned()).collect();
    migration::receive(&router.shards[to], db, coll, docs);
    migration::release(&router.shards[from], db, coll, ids);
}

/// At `shardCollection`: documents already on the primary shard whose chunk another shard
/// owns move there.
pub fn place_existing(router: &Router, db: &str, coll: &str, sc: &ShardedColl) {
    for to in 1..router.shards.len() {
        let docs = migration::docs_where(&router.shards[0], db, coll, |d| sc.owner(d) == to);
        transfer(router, db, coll, 0, to, docs);
    }
}

/// The background balancer: one round every `interval`, until the router is dropped.
pub fn spawn_balancer(router: &Arc<Router>, interval: std::time::Duration) {
    let weak = Arc::downgrade(router);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(router) = weak.upgrade() else {
                return;
            };
            router.balance_once().await;
        }
    });
}
