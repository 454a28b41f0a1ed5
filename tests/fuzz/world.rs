//! One case end to end: mongo-sim in-process and a fresh database, the mapping and config
//! written to a temp dir, the documents inserted through the official driver, the copy
//! (`full_sync` or `sync`'s own), the streamed writes while `sync` runs, and the property
//! checked (`check`) after the copy, after the stream and after a restart; neither command may
//! stop on its own.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocumentBuf};
use mongo_sim::SimOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::config::Config;
use tributary::mapping::model::MappingSet;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};
use tributary::pipeline::sync::{sync, SyncError, SyncOptions};

use super::gen::{Case, Copy, Write, INVALID_UTF8};
use super::oracle::Rules;
use super::spec::{ident, Mapping, COLLECTION, DATABASE, MARKERS};
use crate::support::{fresh_database, wait_until, TestDb};

/// How long a phase may take before the case fails.
const PATIENCE_SECS: u64 = 90;

pub(super) struct World {
    pub(super) mongo: mongodb::Client,
    pub(super) db: TestDb,
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
pub(super) fn restored(raw: &RawDocumentBuf) -> bson::de::Result<Document> {
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
    stop_sync(stop, task).await?;
    // A restart retries every open letter: then no letter stays open for a document whose
    // rows are written or that is gone.
    let (stop, task) = w.start_sync();
    w.sync_point(&task, 2).await?;
    w.check(case, rules, true)
        .await
        .map_err(|e| format!("after a restart:\n{e}"))?;
    w.check_letters_settled(case, rules)
        .await
        .map_err(|e| format!("after a restart:\n{e}"))?;
    stop_sync(stop, task).await
}

async fn stop_sync(stop: oneshot::Sender<()>, task: SyncTask) -> Result<(), String> {
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

    pub(super) fn docs(&self) -> mongodb::Collection<Document> {
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
}
