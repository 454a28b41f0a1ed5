//! Checking documents against their rows, the step every mode shares: fetch the rows of a
//! batch of documents by key, convert each document with the sink's own conversion
//! (`mapping::convert_raw_document`), and judge it: equal, unequal, refused (Postgres cannot
//! hold this version), or gone from MongoDB while its rows remain.

use std::collections::HashMap;
use std::sync::Arc;

use bson::{Bson, RawDocumentBuf};
use deadpool_postgres::Pool;
use mongodb::Collection;

use super::compare::{actual_idx, compare_document, DocDiff};
use super::error::VerifyError;
use super::report::Finding;
use super::rows::{connection, DeadLetterQueries, FetchedRow, TableQueries};
use crate::event::document_id;
use crate::mapping::convert::{convert_key, convert_raw_document};
use crate::mapping::json::to_json;
use crate::mapping::model::{CollectionMapping, TableDef};
use crate::mapping::value::PgValue;
use crate::sink::postgres::plan::key_text;

/// Everything about one collection that the checks need, shared by its tasks.
pub struct Target {
    pub mapping: Arc<CollectionMapping>,
    /// `db.collection`.
    pub namespace: String,
    /// `mapping.tables()`: parent first, then the children.
    pub tables: Vec<TableDef>,
    pub parent: TableQueries,
    pub children: Vec<TableQueries>,
    pub pool: Pool,
    pub coll: Collection<RawDocumentBuf>,
    /// `sync.name`, whose dead letters are looked up.
    pub stream: String,
    pub dead_letters: DeadLetterQueries,
}

impl Target {
    pub fn new(
        mapping: Arc<CollectionMapping>,
        schema: &str,
        pool: Pool,
        mongo: &mongodb::Client,
        stream: &str,
        dead_letters: DeadLetterQueries,
    ) -> Target {
        let tables = mapping.tables();
        let parent = TableQueries::new(schema, &tables[0], false);
        let children = tables[1..]
            .iter()
            .map(|t| TableQueries::new(schema, t, true))
            .collect();
        Target {
            namespace: mapping.namespace(),
            coll: mongo
                .database(&mapping.database)
                .collection::<RawDocumentBuf>(&mapping.collection),
            mapping,
            tables,
            parent,
            children,
            pool,
            stream: stream.to_owned(),
            dead_letters,
        }
    }

    /// Every table's statements, parent first.
    pub fn all_tables(&self) -> impl Iterator<Item = &TableQueries> {
        std::iter::once(&self.parent).chain(&self.children)
    }

    fn key_index(&self) -> usize {
        self.tables[0].primary_key.first().copied().unwrap_or(0)
    }
}

/// The rows Postgres holds for a batch of keys, by `key_text`.
#[derive(Debug, Default)]
pub struct FetchedRows {
    parent: HashMap<String, FetchedRow>,
    /// Per child table: parent key → its rows.
    children: Vec<HashMap<String, Vec<FetchedRow>>>,
    /// `hashtext` of every parent row fetched (for key buckets).
    pub parent_hashes: Vec<i32>,
    /// Per child table: `hashtext` of the parent key of every child row fetched.
    pub child_hashes: Vec<Vec<i32>>,
}

impl FetchedRows {
    pub fn child_rows(&self) -> Vec<u64> {
        self.child_hashes.iter().map(|h| h.len() as u64).collect()
    }
}

/// The rows of `keys` (parent and child rows), on one pooled connection.
pub async fn fetch_rows(target: &Target, keys: &[PgValue]) -> Result<FetchedRows, VerifyError> {
    let client = connection(&target.pool).await?;
    let mut out = FetchedRows::default();
    let key_index = target.key_index();
    // One connection, all tables at once: the driver pipelines the statements.
    let (parent, children) = futures::try_join!(
        target.parent.fetch(&client, keys, key_index),
        futures::future::try_join_all(target.children.iter().map(|c| c.fetch(&client, keys, 0))),
    )?;
    out.parent.reserve(parent.len());
    for (hash, key, row) in parent {
        out.parent_hashes.push(hash);
        out.parent.insert(key_string(key), row);
    }
    for rows in children {
        let mut by_key: HashMap<String, Vec<FetchedRow>> = HashMap::new();
        let mut hashes = Vec::with_capacity(rows.len());
        for (hash, key, row) in rows {
            hashes.push(hash);
            by_key.entry(key_string(key)).or_default().push(row);
        }
        out.children.push(by_key);
        out.child_hashes.push(hashes);
    }
    Ok(out)
}

/// `key_text` of a key that is not needed any more (a text key's string is moved, not copied).
fn key_string(key: PgValue) -> String {
    match key {
        PgValue::Text(s) => s,
        other => key_text(&other),
    }
}

/// The key a document's rows have, when its `_id` converts.
pub fn key_of(target: &Target, id: &Bson) -> Option<PgValue> {
    convert_key(&target.mapping, id).ok()
}

/// The keys of `ids` that convert (duplicates are harmless: `= ANY` returns a row once).
pub fn keys_of(target: &Target, ids: &[Bson]) -> Vec<PgValue> {
    ids.iter().filter_map(|id| key_of(target, id)).collect()
}

/// The `_id` of a document read from MongoDB.
pub fn id_of(doc: &RawDocumentBuf) -> Option<Bson> {
    document_id(doc).ok()
}

/// How one version of a document (or its absence) compares with the rows fetched.
#[derive(Debug, Clone)]
pub enum Judgement {
    Equal,
    Unequal(DocDiff),
    /// The document does not convert; `String` says why.
    Refused(String),
    /// No document, but rows: the parent row (if any) and child row `idx`s per child table.
    Orphaned {
        parent: bool,
        children: Vec<Vec<i32>>,
    },
}

impl Judgement {
    pub fn is_equal(&self) -> bool {
        matches!(self, Judgement::Equal)
    }
}

/// Judges the document with `id` (`None`: it does not exist) against `rows`. Also returns how
/// many elements it has per child table (empty when it does not convert).
pub fn judge(
    target: &Target,
    id: &Bson,
    doc: Option<&RawDocumentBuf>,
    rows: &FetchedRows,
) -> (Judgement, Vec<u64>) {
    let Some(doc) = doc else {
        let Some(key) = key_of(target, id) else {
            return (Judgement::Equal, Vec::new());
        };
        let k = key_text(&key);
        let parent = rows.parent.contains_key(&k);
        let children: Vec<Vec<i32>> = rows
            .children
            .iter()
            .map(|c| {
                let mut idx: Vec<i32> = c
                    .get(&k)
                    .map(|rs| rs.iter().filter_map(actual_idx).collect())
                    .unwrap_or_default();
                idx.sort_unstable();
                idx
            })
            .collect();
        if !parent && children.iter().all(Vec::is_empty) {
            return (Judgement::Equal, Vec::new());
        }
        return (Judgement::Orphaned { parent, children }, Vec::new());
    };
    match convert_raw_document(&target.mapping, doc) {
        Err(e) => (Judgement::Refused(e.to_string()), Vec::new()),
        Ok(c) => {
            let k = key_text(&c.key);
            let children: Vec<&[FetchedRow]> = rows
                .children
                .iter()
                .map(|m| m.get(&k).map_or(&[][..], Vec::as_slice))
                .collect();
            let elements = c.rows.children.iter().map(|r| r.len() as u64).collect();
            let diff = compare_document(&target.tables, &c.rows, rows.parent.get(&k), &children);
            if diff.is_equal() {
                (Judgement::Equal, elements)
            } else {
                (Judgement::Unequal(diff), elements)
            }
        }
    }
}

/// The findings for a difference that persisted. A document whose current version sits in the
/// dead-letter table (same stream, namespace, `_id` and document), or does not convert at all,
/// is a `dead_letter` rather than `missing` or `different`.
pub async fn findings(
    target: &Target,
    id: &Bson,
    doc: Option<&RawDocumentBuf>,
    judgement: Judgement,
) -> Result<Vec<Finding>, VerifyError> {
    let id_json = to_json(id);
    Ok(match judgement {
        Judgement::Equal => Vec::new(),
        Judgement::Refused(error) => vec![Finding::DeadLetter { id: id_json, error }],
        Judgement::Orphaned { parent, children } => match key_of(target, id) {
            None => Vec::new(),
            Some(key) if parent => vec![Finding::ExtraRow { key, children }],
            // Only child rows are left: each child table's rows are extra.
            Some(key) => children
                .into_iter()
                .enumerate()
                .filter(|(_, idx)| !idx.is_empty())
                .map(|(child, idx)| Finding::OrphanRows {
                    child,
                    key: key.clone(),
                    idx,
                })
                .collect(),
        },
        Judgement::Unequal(diff) => {
            let letter = match doc.map(|d| bson::Document::try_from(d.as_ref())) {
                Some(Ok(parsed)) => {
                    let client = connection(&target.pool).await?;
                    target
                        .dead_letters
                        .letter_for(
                            &client,
                            &target.stream,
                            &target.namespace,
                            &id_json,
                            &to_json(&Bson::Document(parsed)),
                        )
                        .await?
                }
                _ => None,
            };
            vec![match letter {
                Some(error) => Finding::DeadLetter { id: id_json, error },
                None => Finding::Unequal { id: id_json, diff },
            }]
        }
    })
}
