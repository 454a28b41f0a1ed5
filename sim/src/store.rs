//! In-memory storage: databases of collections of documents ordered by `_id`,
//! plus the namespace rules (which names are valid, which are internal).

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};

use crate::bson_order::OrderedBson;
use crate::error::CommandError;

#[derive(Debug, Clone)]
pub struct Collection {
    pub uuid: bson::Uuid,
    pub docs: BTreeMap<OrderedBson, Document>,
    /// The `create` options (capped, changeStreamPreAndPostImages, ...).
    pub options: Document,
    /// Index specs as listIndexes reports them; only `_id` is enforced.
    pub indexes: Vec<Document>,
}

impl Collection {
    pub fn new(options: Document) -> Self {
        Self {
            uuid: bson::Uuid::new(),
            docs: BTreeMap::new(),
            options,
            indexes: vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}],
        }
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub dbs: BTreeMap<String, BTreeMap<String, Collection>>,
}

impl Catalog {
    pub fn get(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.dbs.get(db).and_then(|d| d.get(coll))
    }

    pub fn get_mut(&mut self, db: &str, coll: &str) -> Option<&mut Collection> {
        self.dbs.get_mut(db).and_then(|d| d.get_mut(coll))
    }
}

/// Rejects names the server would reject with 73 InvalidNamespace.
pub fn check_collection_name(db: &str, coll: &str) -> Result<(), CommandError> {
    if db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid database name: '{db}'"
        )));
    }
    if coll.is_empty() || coll.contains('\0') || coll.starts_with('.') || coll.contains('$') {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid collection name: {coll}"
        )));
    }
    Ok(())
}

/// The duplicate-key write error exactly as mongod words it.
pub fn duplicate_key_error(db: &str, coll: &str, id: &Bson) -> (i32, Document) {
    let shown = Bson::Document(doc! {"_id": id.clone()}).to_string();
    (
        11000,
        doc! {
            "code": 11000,
            "errmsg": format!(
                "E11000 duplicate key error collection: {db}.{coll} index: _id_ dup key: {shown}"
            ),
            "keyPattern": {"_id": 1},
            "keyValue": {"_id": id.clone()},
        },
    )
}

/// Approximate encoded size of a document, used to cap batches near 16 MiB
/// without serialising twice.
pub fn approx_size(doc: &Document) -> usize {
    doc.iter()
        .map(|(k, v)| k.len() + 2 + approx_value(v))
        .sum::<usize>()
        + 5
}

fn approx_value(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => approx_size(d),
        Bson::Array(a) => a.iter().map(|x| approx_value(x) + 4).sum::<usize>() + 5,
        Bson::String(s) => s.len() + 5,
        Bson::Binary(b) => b.bytes.len() + 5,
        Bson::ObjectId(_) => 12,
        Bson::Int32(_) => 4,
        _ => 8,
    }
}
