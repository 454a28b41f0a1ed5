//! One case end to end: mongo-sim in-process and a fresh database, the mapping and config
//! written to a temp dir, the documents inserted through the official driver, the copy
//! (`full_sync` or `sync`'s own), the streamed writes while `sync` runs, and the property
//! checked after the copy and after the stream: every document in MongoDB is exactly the
//! rows the oracle predicts or a dead letter with a reason, no row lacks its document, and
//! `sync` never stops on its own.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::TryStreamExt;
use mongo_sim::SimOptions;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::config::Config;
use tributary::mapping::model::MappingSet;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};
use tributary::pipeline::sync::{sync, SyncError, SyncOptions};

use super::forms::{document_json, json_form, json_has_nul};
use super::gen::{Case, Copy, Write, INVALID_UTF8};
use super::keys::{key_cell, same_key};
use super::oracle::{cell_mentions, predict, Cell, Outcome, Rules};
use super::pg::{compare, json_diff, json_eq, read_table, Read};
use super::spec::{ident, Mapping, SqlType, COLLECTION, DATABASE, MARKERS};
use crate::support::{fresh_database, wait_until, TestDb};

/// Documents checked, by outcome (rows, dead letters), over every case of the process.
pub static CHECKED_ROWS: AtomicUsize = AtomicUsize::new(0);
pub static CHECKED_LETTERS: AtomicUsize = AtomicUsize::new(0);
/// Dead letters found holding a document with NUL (`{"bson_base64", "json"}`).
pub static CHECKED_NUL_LETTERS: AtomicUsize = AtomicUsize::new(0);
/// Documents read back with strings that are not UTF-8.
pub static CHECKED_UNREADABLE: AtomicUsize = AtomicUsize::new(0);
/// Dead letters found holding rows Postgres refused (`{"refused_rows"}`).
pub static CHECKED_NARROWED: AtomicUsize = AtomicUsize::new(0);

/// How long a phase may take before the case fails.
const PATIENCE_SECS: u64 = 90;

struct World {
    mongo: mongodb::Client,
    db: TestDb,
    config: Config,
    mappings: Arc<MappingSet>,
    _dir: tempfile::TempDir,
}

type SyncTask = JoinHandle<Result<(), SyncError>>;

/// Runs `case`; `Err` describes every way the property failed.
pub async fn run(case: &Case, rules: Rules) -> Result<(), String> {
    let sim = mongo_sim::start(SimOptions::default())
        .await
        .map_err(|e| format!("mongo-sim did not start: {e}"))?;
    let result = run_on(&sim.uri(), case, rules).await;
    sim.shutdown().await;
    if result.is_err() {
        dump(case);
    }
    result.map_err(|e| format!("{e}\n--- mapping ---\n{}", case.mapping.yaml()))
}

/// A document whose strings `raw_of` made invalid, with them restored.
fn restored(raw: &RawDocumentBuf) -> bson::de::Result<Document> {
    let mut bytes = raw.as_bytes().to_vec();
    let patched = [0xC3, 0x28, 0xFF, b'B', b'A', b'D'];
    let mut i = 0;
    while i + patched.len() <= bytes.len() {
        if bytes[i..i + patched.len()] == patched {
            bytes[i..i + patched.len()].copy_from_slice(INVALID_UTF8.as_bytes());
            i += patched.len();
        } else {
            i += 1;
        }
    }
    Document::from_reader(&bytes[..])
}

/// The document's BSON, with every `INVALID_UTF8` string made bytes that are not UTF-8.
fn raw_of(d: &Document) -> RawDocumentBuf {
    let mut bytes = bson::to_vec(d).expect("a generated document serializes");
    let needle = INVALID_UTF8.as_bytes();
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i..i + 3].copy_from_slice(&[0xC3, 0x28, 0xFF]);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    RawDocumentBuf::from_bytes(bytes).expect("patching strings keeps the frame")
}

/// With `TRIBUTARY_FUZZ_DUMP=FILE`, a failing case is written there as Extended JSON (to turn
/// into a regression case).
fn dump(case: &Case) {
    let Ok(file) = std::env::var("TRIBUTARY_FUZZ_DUMP") else {
        return;
    };
    let ext = |d: &Document| Bson::Document(d.clone()).into_relaxed_extjson().to_string();
    let mut out = format!(
        "{:?} oplog={} rows={} narrow={:?}\n",
        case.copy, case.oplog, case.batch_max_rows, case.narrow
    );
    out.push_str(&case.mapping.yaml());
    out.push_str("--- initial\n");
    for d in &case.initial {
        out.push_str(&ext(d));
        out.push('\n');
    }
    out.push_str("--- writes\n");
    for w in &case.writes {
        let line = match w {
            Write::Insert(d) => format!("insert {}", ext(d)),
            Write::Replace(t, d) => format!("replace #{t} {}", ext(d)),
            Write::Set(t, p, v) => format!("set #{t} {p} = {}", v.clone().into_relaxed_extjson()),
            Write::Unset(t, p) => format!("unset #{t} {p}"),
            Write::Delete(t) => format!("delete #{t}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let _ = std::fs::write(file, out);
}

async fn run_on(uri: &str, case: &Case, rules: Rules) -> Result<(), String> {
    let w = World::new(uri, case).await?;
    if let Some(c) = case.narrow {
        w.narrow(&case.mapping, c).await?;
    }
    if !case.initial.is_empty() {
        // Unordered: a document MongoDB refuses (a duplicate `_id`) does not stop the others.
        let raws: Vec<RawDocumentBuf> = case.initial.iter().map(raw_of).collect();
        let _ = w.raw_docs().insert_many(raws).ordered(false).await;
    }
    let (stop, task) = match case.copy {
        Copy::FullSyncReplace | Copy::FullSyncUpsert => {
            let mode = if case.copy == Copy::FullSyncReplace {
                FullSyncMode::Replace
            } else {
                FullSyncMode::Upsert
            };
            full_sync(
                &w.config,
                w.mappings.clone(),
                None,
                mode,
                None,
                std::future::pending(),
            )
            .await
            .map_err(|e| format!("full-sync stopped: {e}"))?;
            w.check(case, rules, false)
                .await
                .map_err(|e| format!("after full-sync ({:?}):\n{e}", case.copy))?;
            w.start_sync()
        }
        Copy::SyncInitial => {
            let (stop, task) = w.start_sync();
            w.sync_point(&task, 0).await?;
            w.check(case, rules, false)
                .await
                .map_err(|e| format!("after sync's initial copy:\n{e}"))?;
            (stop, task)
        }
    };
    w.apply_writes(case).await;
    w.sync_point(&task, 1).await?;
    w.check(case, rules, true)
        .await
        .map_err(|e| format!("after streaming ({} writes):\n{e}", case.writes.len()))?;
    let _ = stop.send(());
    match tokio::time::timeout(std::time::Duration::from_secs(PATIENCE_SECS), task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("sync stopped with an error at shutdown: {e}")),
        Ok(Err(panic)) => Err(format!("sync panicked: {panic}")),
        Err(_) => Err("sync did not stop after shutdown".into()),
    }
}

impl World {
    async fn new(uri: &str, case: &Case) -> Result<World, String> {
        let mongo = mongodb::Client::with_uri_str(uri)
            .await
            .map_err(|e| e.to_string())?;
        let db = fresh_database().await;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("mappings.yml"), case.mapping.yaml())
            .map_err(|e| e.to_string())?;
        let text = format!(
            r#"
[mongo]
uri = "{uri}"
source = "{}"
[postgres]
uri = "{}"
pool_size = 4
[sync]
name = "fuzz"
mappings = "mappings.yml"
batch_max_rows = {}
batch_max_wait_ms = 20
[metrics]
listen = ""
"#,
            if case.oplog { "oplog" } else { "change_stream" },
            db.url,
            case.batch_max_rows,
        );
        let path = dir.path().join("tributary.toml");
        let config = Config::from_str_at(&text, &path).map_err(|e| e.to_string())?;
        let mappings = tributary::mapping::load(Path::new(&config.sync.mappings))
            .map_err(|e| format!("the generated mapping was refused: {e}"))?;
        Ok(World {
            mongo,
            db,
            config,
            mappings: Arc::new(mappings),
            _dir: dir,
        })
    }

    fn docs(&self) -> mongodb::Collection<Document> {
        self.mongo.database(DATABASE).collection(COLLECTION)
    }

    fn raw_docs(&self) -> mongodb::Collection<RawDocumentBuf> {
        self.mongo.database(DATABASE).collection(COLLECTION)
    }

    fn start_sync(&self) -> (oneshot::Sender<()>, SyncTask) {
        let (tx, rx) = oneshot::channel::<()>();
        let config = self.config.clone();
        let mappings = self.mappings.clone();
        let task = tokio::spawn(async move {
            let opts = SyncOptions {
                initial_sync: true,
                metrics: None,
            };
            sync(&config, mappings, opts, async {
                let _ = rx.await;
            })
            .await
        });
        (tx, task)
    }

    /// Waits for `cond`, failing as soon as `sync` has stopped (it must never stop on its own).
    async fn wait<F, Fut>(&self, task: &SyncTask, what: &str, mut cond: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        wait_until(PATIENCE_SECS, what, || {
            let done = task.is_finished();
            let c = cond();
            async move { done || c.await }
        })
        .await;
        if task.is_finished() {
            return Err(format!("sync stopped while waiting for {what}"));
        }
        Ok(())
    }

    /// Everything written to MongoDB so far has been applied once a marker written now is in
    /// Postgres (one stream, applied in order; no copy running).
    async fn sync_point(&self, task: &SyncTask, n: u32) -> Result<(), String> {
        let copied =
            "SELECT count(*) = 2 AND bool_and(phase = 'streaming') FROM tributary.collections";
        self.wait(task, "both collections streaming", || async {
            matches!(self.db.client.query_one(copied, &[]).await, Ok(r) if r.get::<_, Option<bool>>(0) == Some(true))
        })
        .await?;
        let id = format!("m{n}");
        self.mongo
            .database(DATABASE)
            .collection::<Document>(MARKERS)
            .insert_one(doc! {"_id": &id})
            .await
            .map_err(|e| format!("inserting marker {id}: {e}"))?;
        let sql = format!("SELECT 1 FROM public.{MARKERS} WHERE id = $1");
        self.wait(task, &format!("marker {id}"), || async {
            matches!(self.db.client.query(&sql, &[&id]).await, Ok(r) if !r.is_empty())
        })
        .await
    }

    /// The streamed writes, through the driver; MongoDB may refuse some (a `$set` through a
    /// scalar, a duplicate `_id`), which is fine: the check compares against what it holds.
    /// Writes pick their document among the `_id`s of every insert, refused ones too: an
    /// `_id` MongoDB refused as a duplicate (`1` beside a stored `1.0`) names the stored one.
    async fn apply_writes(&self, case: &Case) {
        let coll = self.docs();
        let mut ids: Vec<Bson> = case
            .initial
            .iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        for w in &case.writes {
            let pick = |t: &usize| ids.get(t % ids.len().max(1)).cloned();
            match w {
                Write::Insert(d) => {
                    let _ = self.raw_docs().insert_one(raw_of(d)).await;
                    ids.extend(d.get("_id").cloned());
                }
                Write::Replace(t, body) => {
                    if let Some(id) = pick(t) {
                        let _ = self
                            .raw_docs()
                            .replace_one(doc! {"_id": id}, raw_of(body))
                            .await;
                    }
                }
                Write::Set(t, path, v) => {
                    if let Some(id) = pick(t) {
                        let mut set = Document::new();
                        set.insert(path.clone(), v.clone());
                        let _ = coll.update_one(doc! {"_id": id}, doc! {"$set": set}).await;
                    }
                }
                Write::Unset(t, path) => {
                    if let Some(id) = pick(t) {
                        let mut unset = Document::new();
                        unset.insert(path.clone(), "");
                        let _ = coll
                            .update_one(doc! {"_id": id}, doc! {"$unset": unset})
                            .await;
                    }
                }
                Write::Delete(t) => {
                    if let Some(id) = pick(t) {
                        let _ = coll.delete_one(doc! {"_id": id}).await;
                    }
                }
            }
        }
    }

    /// The property, on what MongoDB holds now. `stale_ok`: a document whose current version
    /// is refused may keep the row of an earlier version (after streaming).
    /// Creates the parent table as the mapping would, but with parent column `c` as
    /// `varchar(3)` (`Case::narrow`).
    async fn narrow(&self, m: &Mapping, c: usize) -> Result<(), String> {
        let mut cols: Vec<String> = m
            .parent_columns()
            .iter()
            .enumerate()
            .map(|(i, col)| {
                let ty = if i == c {
                    "varchar(3)".to_owned()
                } else {
                    col.ty.spelled(0)
                };
                format!("{} {ty}", ident(&col.name))
            })
            .collect();
        if let Some(extra) = &m.extra_props {
            cols.push(format!("{} jsonb", ident(extra)));
        }
        let sql = format!(
            "CREATE TABLE public.{} ({}, PRIMARY KEY ({}))",
            ident(&m.table),
            cols.join(", "),
            ident(&m.key.name)
        );
        self.db
            .client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))
    }

    async fn check(&self, case: &Case, rules: Rules, stale_ok: bool) -> Result<(), String> {
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
            .map(|(i, d)| match predict(m, rules, d) {
                // The live column is narrower than the mapping: Postgres refuses the rows, or,
                // when the excess characters are all spaces, silently drops them (as varchar
                // does for any store).
                Outcome::Rows {
                    key,
                    mut parent,
                    children,
                } if case.narrow.is_some_and(
                    |c| matches!(&parent[c], Cell::Text(s) if s.chars().count() > 3),
                ) =>
                {
                    let c = case.narrow.unwrap_or_default();
                    let Cell::Text(s) = &parent[c] else {
                        unreachable!()
                    };
                    if s.chars().skip(3).all(|ch| ch == ' ') {
                        parent[c] = Cell::Text(s.chars().take(3).collect());
                        Outcome::Rows {
                            key,
                            parent,
                            children,
                        }
                    } else {
                        Outcome::Refused("Postgres refuses a value of the varchar(3) column".into())
                    }
                }
                Outcome::Rows {
                    parent, children, ..
                } if unreadable[i]
                    && parent
                        .iter()
                        .chain(children.iter().flatten().flatten())
                        .any(|c| cell_mentions(c, INVALID_UTF8)) =>
                {
                    Outcome::Refused("a value the mapping reads is not UTF-8".into())
                }
                other => {
                    lenient[i] = unreadable[i];
                    other
                }
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

    async fn dead_letters(&self) -> Result<Vec<Letter>, String> {
        let rows = self
            .db
            .client
            .query(
                "SELECT document_key::text, document::text, coalesce(error, '') \
                 FROM tributary.dead_letters WHERE namespace = $1",
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
                })
            })
            .collect()
    }
}

struct Letter {
    key: Value,
    document: Value,
    error: String,
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
