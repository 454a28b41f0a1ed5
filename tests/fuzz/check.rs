//! The property, on what MongoDB holds when it is checked: every document is exactly the rows
//! the oracle predicts or a dead letter holding that version with a reason; no row lacks its
//! document, no child row its parent row; no two documents get one key; and, after a restart,
//! no letter stays open for a document whose rows are written or that is gone.

use std::sync::atomic::{AtomicUsize, Ordering};

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::TryStreamExt;
use serde_json::Value;

use super::forms::{document_json, json_form, json_has_nul};
use super::gen::{Case, INVALID_UTF8};
use super::keys::{key_cell, same_key};
use super::known_bug;
use super::oracle::{cell_mentions, predict, Cell, Outcome, Rules};
use super::pg::{compare, json_diff, json_eq, read_table, Read};
use super::spec::{SqlType, COLLECTION, DATABASE};
use super::world::{restored, World};

/// Documents checked, by outcome (rows, dead letters), over every case of the process.
pub static CHECKED_ROWS: AtomicUsize = AtomicUsize::new(0);
pub static CHECKED_LETTERS: AtomicUsize = AtomicUsize::new(0);
/// Dead letters found holding a document with NUL (`{"bson_base64", "json"}`).
pub static CHECKED_NUL_LETTERS: AtomicUsize = AtomicUsize::new(0);
/// Documents read back with strings that are not UTF-8.
pub static CHECKED_UNREADABLE: AtomicUsize = AtomicUsize::new(0);
/// Dead letters found holding rows Postgres refused (`{"refused_rows"}`).
pub static CHECKED_NARROWED: AtomicUsize = AtomicUsize::new(0);

impl World {
    pub(super) async fn check(
        &self,
        case: &Case,
        rules: Rules,
        stale_ok: bool,
    ) -> Result<(), String> {
        let m = &case.mapping;
        let raws: Vec<RawDocumentBuf> = self
            .mongo
            .database(DATABASE)
            .collection::<RawDocumentBuf>(COLLECTION)
            .find(doc! {})
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        // A document with strings that are not UTF-8 (`INVALID_UTF8`, patched at insertion) is
        // read with them restored; `unreadable[i]` marks it.
        let mut unreadable = Vec::with_capacity(raws.len());
        let docs: Vec<Document> = raws
            .iter()
            .map(|r| {
                let valid = Document::try_from(r.as_ref());
                unreadable.push(valid.is_err());
                valid.or_else(|_| restored(r)).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        CHECKED_UNREADABLE.fetch_add(unreadable.iter().filter(|u| **u).count(), Ordering::Relaxed);
        // Whether a dead letter is as good as the predicted rows: a document whose only
        // unreadable strings are in fields the mapping drops may be copied or refused.
        let mut lenient = vec![false; docs.len()];
        let outcomes: Vec<Outcome> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (outcome, either) = expected(case, rules, d, unreadable[i]);
                lenient[i] = either;
                outcome
            })
            .collect();
        let rows = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Rows { .. }))
            .count();
        CHECKED_ROWS.fetch_add(rows, Ordering::Relaxed);
        CHECKED_LETTERS.fetch_add(outcomes.len() - rows, Ordering::Relaxed);
        let keys: Vec<Option<Cell>> = docs
            .iter()
            .map(|d| d.get("_id").and_then(|id| key_cell(m, rules, id).ok()))
            .collect();
        let mut failures = Vec::new();
        own_keys_are_distinct(&docs, &keys, &mut failures);

        let client = &self.db.client;
        let key_ty = m.key.ty.clone();
        let mut parent_cols: Vec<(String, SqlType)> = m
            .parent_columns()
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect();
        if let Some(extra) = &m.extra_props {
            parent_cols.push((extra.clone(), SqlType::Jsonb));
        }
        let parents = read_table(client, "public", &m.table, &parent_cols).await;
        let mut children = Vec::new();
        for child in &m.children {
            let mut cols = vec![
                (child.parent_key.clone(), key_ty.clone()),
                ("idx".to_owned(), SqlType::Integer),
            ];
            cols.extend(child.columns.iter().map(|c| (c.name.clone(), c.ty.clone())));
            children.push((
                cols.clone(),
                read_table(client, "public", &child.table, &cols).await,
            ));
        }
        let letters = self.dead_letters().await?;
        let ki = m.key_index();

        for (i, (doc, outcome)) in docs.iter().zip(&outcomes).enumerate() {
            let shown = || {
                format!(
                    "document {}",
                    Bson::Document(doc.clone()).into_relaxed_extjson()
                )
            };
            match outcome {
                Outcome::Rows {
                    key,
                    parent,
                    children: want_children,
                } => {
                    let rows: Vec<&Vec<Read>> = parents
                        .iter()
                        .filter(|r| compare(key, &key_ty, &r[ki]).is_ok())
                        .collect();
                    if lenient[i] && letters.iter().any(|l| l.holds(&raws[i], doc)) {
                        continue;
                    }
                    let [row] = rows.as_slice() else {
                        let why = letters
                            .iter()
                            .find(|l| l.holds(&raws[i], doc))
                            .map(|l| format!("; it was dead-lettered: {}", l.error))
                            .unwrap_or_default();
                        failures.push(format!(
                            "{}: expected one row with key {key:?}, found {}{why}",
                            shown(),
                            rows.len()
                        ));
                        continue;
                    };
                    for (c, (want, (name, ty))) in parent.iter().zip(&parent_cols).enumerate() {
                        if let Err(e) = compare(want, ty, &row[c]) {
                            failures.push(format!("{}: column {name:?}: {e}", shown()));
                        }
                    }
                    for (j, ((cols, rows), want)) in children.iter().zip(want_children).enumerate()
                    {
                        let mut got: Vec<&Vec<Read>> = rows
                            .iter()
                            .filter(|r| compare(key, &key_ty, &r[0]).is_ok())
                            .collect();
                        got.sort_by_key(|r| match &r[1] {
                            Read::Scalar(Some(s)) => s.parse::<i64>().unwrap_or(-1),
                            _ => -1,
                        });
                        if got.len() != want.len() {
                            failures.push(format!(
                                "{}: child table {:?}: expected {} rows, found {}",
                                shown(),
                                m.children[j].table,
                                want.len(),
                                got.len()
                            ));
                            continue;
                        }
                        for (g, w) in got.iter().zip(want) {
                            for (c, (cell, (name, ty))) in w.iter().zip(cols).enumerate() {
                                if let Err(e) = compare(cell, ty, &g[c]) {
                                    failures.push(format!(
                                        "{}: child table {:?} column {name:?}: {e}",
                                        shown(),
                                        m.children[j].table
                                    ));
                                }
                            }
                        }
                    }
                }
                Outcome::Refused(reason) => {
                    if !letters.iter().any(|l| l.holds(&raws[i], doc)) {
                        let id = doc.get("_id").map(json_form).unwrap_or(Value::Null);
                        let json = document_json(doc);
                        let near: Vec<String> = letters
                            .iter()
                            .filter(|l| {
                                json_eq(&l.key, &id, false) || json_eq(&l.document, &json, false)
                            })
                            .map(|l| {
                                let diff = json_diff(&json, &l.document, false);
                                format!("{} (key {}; document differs at {diff:?})", l.error, l.key)
                            })
                            .collect();
                        let row = keys[i].as_ref().is_some_and(|key| {
                            parents
                                .iter()
                                .any(|r| compare(key, &key_ty, &r[ki]).is_ok())
                        });
                        failures.push(format!(
                            "{}: expected a dead letter ({reason}); none holds this version; \
                             letters for its _id: {near:?}; a row with its key: {row}",
                            shown()
                        ));
                    }
                    if !stale_ok {
                        if let Some(key) = &keys[i] {
                            if parents
                                .iter()
                                .any(|r| compare(key, &key_ty, &r[ki]).is_ok())
                            {
                                failures.push(format!(
                                    "{}: refused ({reason}) but a row with its key exists",
                                    shown()
                                ));
                            }
                        }
                    }
                }
            }
        }
        // No row without a document (rows read back as keys, compared with every `_id`).
        for row in &parents {
            if !keys
                .iter()
                .flatten()
                .any(|k| compare(k, &key_ty, &row[ki]).is_ok())
            {
                failures.push(format!("a row without a document in MongoDB: {row:?}"));
            }
        }
        for (j, (_, rows)) in children.iter().enumerate() {
            for row in rows {
                if !parents.iter().any(|p| p[ki] == row[0]) {
                    failures.push(format!(
                        "child table {:?}: a row without its parent row: {row:?}",
                        m.children[j].table
                    ));
                }
            }
        }
        for l in &letters {
            if l.error.trim().is_empty() {
                failures.push(format!("a dead letter without a reason: {:?}", l.document));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let total = failures.len();
        failures.truncate(12);
        Err(format!(
            "{total} failures in {} documents:\n{}",
            docs.len(),
            failures.join("\n")
        ))
    }

    /// The letters' lifecycle (docs/operations.md "Dead letters"), once a start has retried
    /// them: an open letter names a document MongoDB still holds, and a document whose rows
    /// the oracle predicts has none open (when no other document has its `_id`'s plain JSON).
    pub(super) async fn check_letters_settled(
        &self,
        case: &Case,
        rules: Rules,
    ) -> Result<(), String> {
        let docs: Vec<Document> = self
            .docs()
            .find(doc! {})
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<Value> = docs
            .iter()
            .map(|d| d.get("_id").map(json_form).unwrap_or(Value::Null))
            .collect();
        let letters = self.dead_letters().await?;
        // A `$` field in a letter's key fails the whole retry (KNOWN_BUGS).
        let dollar = |v: &Value| {
            v.as_object()
                .is_some_and(|o| o.keys().any(|k| k.starts_with('$')))
        };
        if known_bug("retry_at_start_survives_dollar_ids") && letters.iter().any(|l| dollar(&l.key))
        {
            return Ok(());
        }
        let open: Vec<Letter> = letters.into_iter().filter(|l| l.open).collect();
        let mut failures = Vec::new();
        for l in &open {
            if !ids.iter().any(|id| json_eq(&l.key, id, false)) {
                failures.push(format!(
                    "an open letter for _id {} that MongoDB no longer holds: {}",
                    l.key, l.error
                ));
            }
        }
        for (d, id) in docs.iter().zip(&ids) {
            let unique = ids.iter().filter(|other| json_eq(other, id, false)).count() == 1;
            let rows = matches!(expected(case, rules, d, false).0, Outcome::Rows { .. });
            if unique && rows {
                if let Some(l) = open.iter().find(|l| json_eq(&l.key, id, false)) {
                    failures.push(format!(
                        "_id {id}: its rows are written but a letter is open: {}",
                        l.error
                    ));
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let total = failures.len();
        failures.truncate(12);
        Err(format!("{total} failures:\n{}", failures.join("\n")))
    }

    async fn dead_letters(&self) -> Result<Vec<Letter>, String> {
        let rows = self
            .db
            .client
            .query(
                "SELECT document_key::text, document::text, coalesce(error, ''), \
                 resolved_at IS NULL FROM tributary.dead_letters WHERE namespace = $1",
                &[&format!("{DATABASE}.{COLLECTION}")],
            )
            .await
            .map_err(|e| format!("reading dead letters: {e}"))?;
        rows.iter()
            .map(|r| {
                let parse = |i: usize| {
                    r.get::<_, Option<String>>(i)
                        .map(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
                        .transpose()
                        .map(|v| v.unwrap_or(Value::Null))
                };
                Ok(Letter {
                    key: parse(0)?,
                    document: parse(1)?,
                    error: r.get(2),
                    open: r.get(3),
                })
            })
            .collect()
    }
}

struct Letter {
    key: Value,
    document: Value,
    error: String,
    /// `resolved_at` is not set.
    open: bool,
}

impl Letter {
    /// Whether this letter records exactly this version of the document: its BSON bytes, or
    /// its plain JSON (and its `_id` as plain JSON).
    fn holds(&self, raw: &RawDocumentBuf, doc: &Document) -> bool {
        use base64::Engine as _;
        if let Some(b64) = self.document.get("bson_base64").and_then(Value::as_str) {
            // A document holding NUL: its bytes, and its JSON with each NUL written `\u0000`.
            let same = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|bytes| bytes == raw.as_bytes())
                && self
                    .document
                    .get("json")
                    .is_some_and(|json| json_eq(json, &escape_nul(document_json(doc)), false));
            if same {
                CHECKED_NUL_LETTERS.fetch_add(1, Ordering::Relaxed);
            }
            return same;
        }
        let id = doc.get("_id").map(json_form).unwrap_or(Value::Null);
        let same_key = json_has_nul(&id) || json_eq(&self.key, &id, false);
        // Rows Postgres refused (a data error narrowed to this document): the letter keeps
        // the rows, not the version, so only the key can be matched.
        if self.document.get("refused_rows").is_some() {
            if same_key {
                CHECKED_NARROWED.fetch_add(1, Ordering::Relaxed);
            }
            return same_key;
        }
        same_key && json_eq(&self.document, &document_json(doc), false)
    }
}

/// What `doc` must become: the oracle's prediction, adjusted for the live table when the case
/// narrowed a column, and for strings that are not UTF-8 (`unreadable`). The flag says that a
/// dead letter is as good as the rows: a document whose unreadable strings are all in fields
/// the mapping drops may be copied or refused.
fn expected(case: &Case, rules: Rules, doc: &Document, unreadable: bool) -> (Outcome, bool) {
    match predict(&case.mapping, rules, doc) {
        // The live column is narrower than the mapping: Postgres refuses the rows, or, when the
        // excess characters are all spaces, silently drops them (as varchar does for any store).
        Outcome::Rows {
            key,
            mut parent,
            children,
        } if case
            .narrow
            .is_some_and(|c| matches!(&parent[c], Cell::Text(s) if s.chars().count() > 3)) =>
        {
            let c = case.narrow.unwrap_or_default();
            let Cell::Text(s) = &parent[c] else {
                unreachable!()
            };
            if s.chars().skip(3).all(|ch| ch == ' ') {
                parent[c] = Cell::Text(s.chars().take(3).collect());
                let rows = Outcome::Rows {
                    key,
                    parent,
                    children,
                };
                (rows, false)
            } else {
                let why = "Postgres refuses a value of the varchar(3) column";
                (Outcome::Refused(why.into()), false)
            }
        }
        Outcome::Rows {
            parent, children, ..
        } if unreadable
            && parent
                .iter()
                .chain(children.iter().flatten().flatten())
                .any(|c| cell_mentions(c, INVALID_UTF8)) =>
        {
            let why = "a value the mapping reads is not UTF-8";
            (Outcome::Refused(why.into()), false)
        }
        other => (other, unreadable),
    }
}

/// NUL written as the six characters `\u0000`, in strings and keys (docs/operations.md).
fn escape_nul(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('\0', "\\u0000")),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_nul).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.replace('\0', "\\u0000"), escape_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The oracle's own check of the key rules: two documents MongoDB keeps apart must not get
/// one key (else the rules themselves let them share a row).
fn own_keys_are_distinct(docs: &[Document], keys: &[Option<Cell>], failures: &mut Vec<String>) {
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            if let (Some(a), Some(b)) = (&keys[i], &keys[j]) {
                if same_key(a, b) {
                    failures.push(format!(
                        "the key rules give _ids {} and {} one key {a:?}",
                        json_form(docs[i].get("_id").unwrap()),
                        json_form(docs[j].get("_id").unwrap())
                    ));
                }
            }
        }
    }
}
