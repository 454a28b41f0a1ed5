//! A node's side of sharding: the `shardCollection` note in its oplog, and of a chunk migration the documents of a key range copied in as inserts and
//! removed from the donor as deletes, each entry marked `fromMigrate: true` as MongoDB's oplog
//! shows them, so change streams on the node leave them out (as they leave out the drops of a
//! sharded collection on shards other than the primary).

use bson::{doc, Bson, Document};

use crate::bson_order::OrderedBson;
use crate::node::history::{Change, Version};
use crate::node::oplog::OplogOp;
use crate::node::state::{Shared, State};
use crate::node::store::{Collection, StoredDoc};

/// The node's documents of `db.coll` that `keep` selects.
pub fn docs_where(
    shared: &Shared,
    db: &str,
    coll: &str,
    keep: impl Fn(&Document) -> bool,
) -> Vec<Document> {
    let st = shared.state();
    let Some(c) = st.catalog.get(db, coll) else {
        return Vec::new();
    };
    c.docs
        .values()
        .filter(|d| keep(&d.doc()))
        .map(|d| d.doc().into_owned())
        .collect()
}

/// The node's documents of `db.coll` matching `filter` (found through the `_id` index when the
/// filter names `_id`) that `keep` selects, in `_id` order.
pub fn docs_matching(
    shared: &Shared,
    db: &str,
    coll: &str,
    filter: &crate::query::Filter,
    keep: impl Fn(&Document) -> bool,
) -> Vec<Document> {
    matching_in(&shared.state(), db, coll, filter, keep)
}

/// `docs_matching` on a node whose lock the caller holds (a read of every shard at one time).
pub fn matching_in(
    st: &State,
    db: &str,
    coll: &str,
    filter: &crate::query::Filter,
    keep: impl Fn(&Document) -> bool,
) -> Vec<Document> {
    let Some(c) = st.catalog.get(db, coll) else {
        return Vec::new();
    };
    c.candidates(filter.id_keys())
        .filter(|(_, d)| {
            let d = d.doc();
            filter.matches(d.as_ref()) && keep(&d)
        })
        .map(|(_, d)| d.doc().into_owned())
        .collect()
}

/// Marks `db.coll` sharded by `key` (created with `uuid` if missing), so its oplog entries name
/// documents by shard key and `_id`.
pub fn set_shard_key(shared: &Shared, db: &str, coll: &str, uuid: bson::Uuid, key: &Document) {
    let mut st = shared.state();
    let st = &mut *st;
    if st.catalog.get(db, coll).is_none() {
        let mut c = Collection::new(Document::new());
        c.uuid = uuid;
        let mut o = doc! {"create": coll};
        o.insert("idIndex", doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"});
        st.oplog.append(
            OplogOp {
                op: "c",
                ns: format!("{db}.$cmd"),
                ui: Some(uuid),
                o,
                o2: None,
                images: None,
            },
            Some(doc! {"fromMigrate": true}),
        );
        st.catalog
            .dbs
            .entry(db.to_string())
            .or_default()
            .insert(coll.to_string(), c);
    }
    if let Some(c) = st.catalog.get_mut(db, coll) {
        c.shard_key = Some(key.clone());
    }
}

/// The recipient's half: inserts `docs` (already known to be absent).
pub fn receive(shared: &Shared, db: &str, coll: &str, docs: Vec<Document>) {
    let next = {
        let mut st = shared.state();
        let st = &mut *st;
        let Some(c) = st.catalog.get_mut(db, coll) else {
            return;
        };
        for d in docs {
            let id = d.get("_id").cloned().unwrap_or(Bson::Null);
            let key = c.document_key(&d, id.clone());
            let entry = st.oplog.append(
                OplogOp {
                    op: "i",
                    ns: format!("{db}.{coll}"),
                    ui: Some(c.uuid),
                    o: d,
                    o2: Some(key),
                    images: None,
                },
                Some(doc! {"fromMigrate": true}),
            );
            let ts = entry.ts;
            c.put_new(OrderedBson(id.clone()), StoredDoc::Inserted(entry));
            st.history
                .record(c.uuid, ts, Change::inserted(OrderedBson(id)));
        }
        st.oplog.next_seq()
    };
    shared.publish(next);
}

/// The donor's half: deletes the documents with these `_id`s.
pub fn release(shared: &Shared, db: &str, coll: &str, ids: Vec<Bson>) {
    let next = {
        let mut st = shared.state();
        let st = &mut *st;
        let Some(c) = st.catalog.get_mut(db, coll) else {
            return;
        };
        for id in ids {
            let key = OrderedBson(id.clone());
            let rid = c.record_id(&key).unwrap_or_default();
            let Some(gone) = c.remove(&key) else {
                continue;
            };
            let o = c.document_key(&gone.doc(), id);
            let entry = st.oplog.append(
                OplogOp {
                    op: "d",
                    ns: format!("{db}.{coll}"),
                    ui: Some(c.uuid),
                    o,
                    o2: None,
                    images: None,
                },
                Some(doc! {"fromMigrate": true}),
            );
            let before = Version {
                key,
                doc: gone,
                rid,
            };
            st.history.record(c.uuid, entry.ts, Change::deleted(before));
        }
        st.oplog.next_seq()
    };
    shared.publish(next);
}

/// The primary shard's no-op entry for `shardCollection` (what a `showExpandedEvents` stream
/// reports as a `shardCollection` event); `note` is its `o2`.
pub fn log_shard_collection(
    shared: &Shared,
    db: &str,
    coll: &str,
    uuid: bson::Uuid,
    note: Document,
) {
    let next = {
        let mut st = shared.state();
        let ns = format!("{db}.{coll}");
        st.oplog.append(
            OplogOp {
                op: "n",
                ns: ns.clone(),
                ui: Some(uuid),
                o: doc! {"msg": {"shardCollection": ns}},
                o2: Some(note),
                images: None,
            },
            None,
        );
        st.oplog.next_seq()
    };
    shared.publish(next);
}

/// Drops `db.coll` on a shard other than the primary, logged `fromMigrate`.
pub fn drop_quietly(shared: &Shared, db: &str, coll: &str) {
    let next = {
        let mut st = shared.state();
        let st = &mut *st;
        let Some(c) = st.catalog.dbs.get_mut(db).and_then(|d| d.remove(coll)) else {
            return;
        };
        st.oplog.append(
            OplogOp {
                op: "c",
                ns: format!("{db}.$cmd"),
                ui: Some(c.uuid),
                o: doc! {"drop": coll},
                o2: Some(doc! {"numRecords": c.docs.len() as i64}),
                images: None,
            },
            Some(doc! {"fromMigrate": true}),
        );
        st.oplog.next_seq()
    };
    shared.publish(next);
}
