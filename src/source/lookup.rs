//! Current versions of updated documents, read by `_id`: the oplog source's re-reads and the
//! change stream's lookups for collections without post-images. One `find({_id: {$in}})` per
//! namespace per call instead of a round trip per update; what it returns is what
//! `updateLookup` gives (the document as it is when read).
//!
//! Keys are told apart by their BSON bytes (`id_bytes`), as MongoDB tells `_id`s apart:
//! `bson::Document`'s `==` ignores field order, so `{a: 1, b: 2}` and `{b: 2, a: 1}`, two
//! documents in MongoDB, would share one read.

use std::collections::{HashMap, HashSet};

use bson::{doc, Bson, RawDocument, RawDocumentBuf};
use futures::StreamExt;
use mongodb::Client;

use crate::event::{document_id, ChangeEvent, Namespace};

/// Sets the document of each event `wanted` says (same length as `events`) to its current
/// version, or to none when it no longer exists. Several events of one document all get the
/// one current version.
pub async fn fill_documents(
    client: &Client,
    events: &mut [ChangeEvent],
    wanted: &[bool],
) -> Result<(), mongodb::error::Error> {
    let mut keys_of: HashMap<Namespace, (Vec<Bson>, HashSet<Vec<u8>>)> = HashMap::new();
    for (e, _) in events.iter().zip(wanted).filter(|(_, &w)| w) {
        if let Some(key) = &e.key {
            let (keys, seen) = keys_of.entry(e.namespace.clone()).or_default();
            if seen.insert(id_bytes(key)) {
                keys.push(key.clone());
            }
        }
    }
    if keys_of.is_empty() {
        return Ok(());
    }
    let mut found: HashMap<Namespace, HashMap<Vec<u8>, RawDocumentBuf>> = HashMap::new();
    for (ns, (keys, _)) in keys_of {
        let mut cursor = client
            .database(&ns.db)
            .collection::<RawDocumentBuf>(&ns.coll)
            .find(doc! {"_id": {"$in": keys}})
            .await?;
        let mut docs = HashMap::new();
        while let Some(d) = cursor.next().await {
            let d = d?;
            if let Some(id) = id_of(&d) {
                docs.insert(id_bytes(&id), d);
            }
        }
        found.insert(ns, docs);
    }
    for (e, _) in events.iter_mut().zip(wanted).filter(|(_, &w)| w) {
        e.document = e
            .key
            .as_ref()
            .and_then(|key| found.get(&e.namespace)?.get(&id_bytes(key)).cloned());
    }
    Ok(())
}

/// The BSON bytes of an `_id` (as the value of a one-field document): equal exactly when
/// MongoDB's `_id` index holds them as one key of one type, field order included.
fn id_bytes(id: &Bson) -> Vec<u8> {
    bson::to_vec(&doc! {"_id": id.clone()}).unwrap_or_default()
}

/// A document's `_id`, as the key events carry.
pub fn id_of(doc: &RawDocument) -> Option<Bson> {
    document_id(doc).ok()
}
