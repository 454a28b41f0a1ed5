//! The streamer end to end: mongo-sim over TCP with the real driver → `sync` → a fresh
//! Postgres database. Both sources run the same scenarios.

mod ddl;
mod failures;
mod handoff;
mod hostile;
mod images;
mod large;
mod measure;
mod owners;
mod partitions;
mod preflight;
pub mod recopy;
mod replace;
mod snapshot_ranges;
mod streaming;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongo_sim::{SimHandle, SimOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::config::{Config, SourceKind};
use tributary::mapping::model::MappingSet;
use tributary::pipeline::sync::{sync, SyncError, SyncOptions};

use crate::support::{fresh_database, wait_until, TestDb};

const MAPPING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
"#;

/// One scenario's world: a simulator, a database, a config and its mappings.
pub struct World {
    pub sim: SimHandle,
    pub mongo: mongodb::Client,
    pub db: TestDb,
    pub config: Config,
    pub mappings: Arc<MappingSet>,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn new(source: SourceKind, batch_max_rows: usize) -> World {
        World::with(source, batch_max_rows, SimOptions::default(), "").await
    }

    /// `sync_extra` is appended to the `[sync]` table (e.g. `resync_on_history_lost = true`).
    pub async fn with(
        source: SourceKind,
        batch_max_rows: usize,
        sim_options: SimOptions,
        sync_extra: &str,
    ) -> World {
        World::with_mapping(source, batch_max_rows, sim_options, sync_extra, MAPPING).await
    }

    /// `with`, for a mapping of the caller's (which must map `shop.orders` with a text `id`
    /// for `sync_point` to work).
    pub async fn with_mapping(
        source: SourceKind,
        batch_max_rows: usize,
        sim_options: SimOptions,
        sync_extra: &str,
        mapping: &str,
    ) -> World {
        let sim = mongo_sim::start(sim_options).await.unwrap();
        let mongo = mongodb::Client::with_uri_str(sim.uri()).await.unwrap();
        let db = fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mappings.yml"), mapping).unwrap();
        let text = format!(
            r#"
[mongo]
uri = "{}"
source = "{}"
[postgres]
uri = "{}"
pool_size = 4
[sync]
name = "test"
mappings = "mappings.yml"
batch_max_rows = {batch_max_rows}
batch_max_wait_ms = 20
{sync_extra}
[metrics]
listen = ""
"#,
            sim.uri(),
            source.as_str(),
            db.url
        );
        let path = dir.path().join("tributary.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::from_str_at(&text, &path).unwrap();
        let mappings =
            Arc::new(tributary::mapping::load(Path::new(&config.sync.mappings)).unwrap());
        World {
            sim,
            mongo,
            db,
            config,
            mappings,
            _dir: dir,
        }
    }

    /// The config file `config` was read from (for running the binary).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("tributary.toml")
    }

    pub fn orders(&self) -> mongodb::Collection<Document> {
        self.mongo.database("shop").collection("orders")
    }

    /// Starts `sync` in a task; the returned sender stops it.
    pub fn start_sync(&self) -> (oneshot::Sender<()>, JoinHandle<Result<(), SyncError>>) {
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

    /// Inserts a marker document and waits until its row is in Postgres: everything written
    /// to MongoDB before it has then been applied (order is preserved, batches are atomic).
    pub async fn sync_point(&self, name: &str) {
        self.sync_point_in("public", name).await;
    }

    /// `sync_point` for the stream writing `schema.orders`. It first waits until no copy of
    /// `shop.orders` is running: a marker written during a copy can reach Postgres through the
    /// copy, before the stream has replayed the changes made while copying.
    pub async fn sync_point_in(&self, schema: &str, name: &str) {
        let copied = "SELECT count(*) > 0 AND bool_and(phase = 'streaming') FROM tributary.collections WHERE namespace = 'shop.orders'";
        wait_until(60, &format!("the copy of shop.orders before marker {name}"), || async {
            matches!(self.db.client.query_one(copied, &[]).await, Ok(r) if r.get::<_, Option<bool>>(0) == Some(true))
        })
        .await;
        let id = format!("~marker-{name}");
        self.orders()
            .insert_one(doc! {"_id": &id, "qty": 0})
            .await
            .unwrap();
        self.wait_for_marker_in(schema, name).await;
    }

    /// Waits until the marker `sync_point_in` wrote under `name` is in `schema.orders`.
    pub async fn wait_for_marker_in(&self, schema: &str, name: &str) {
        let id = format!("~marker-{name}");
        let sql = format!("SELECT 1 FROM \"{schema}\".orders WHERE id = $1");
        wait_until(60, &format!("marker {name} in {schema}.orders"), || async {
            matches!(self.db.client.query(&sql, &[&id]).await, Ok(r) if !r.is_empty())
        })
        .await;
    }

    /// The mapping applied to every document in MongoDB: `(id, qty, name)` parent rows and
    /// `(order_id, idx, sku)` child rows, sorted.
    pub async fn expected(
        &self,
    ) -> (
        Vec<(String, Option<i32>, Option<String>)>,
        Vec<(String, i32, Option<String>)>,
    ) {
        let mut parents = Vec::new();
        let mut children = Vec::new();
        let mut cursor = self.orders().find(doc! {}).await.unwrap();
        while let Some(d) = cursor.next().await {
            let d = d.unwrap();
            let id = d.get_str("_id").unwrap().to_owned();
            let qty = match d.get("qty") {
                Some(Bson::Int32(q)) => Some(*q),
                Some(Bson::Int64(q)) => Some(*q as i32),
                _ => None,
            };
            let name = d.get_str("name").ok().map(str::to_owned);
            if let Ok(items) = d.get_array("items") {
                for (i, item) in items.iter().enumerate() {
                    let sku = item
                        .as_document()
                        .and_then(|it| it.get_str("sku").ok())
                        .map(str::to_owned);
                    children.push((id.clone(), i as i32, sku));
                }
            }
            parents.push((id, qty, name));
        }
        parents.sort();
        children.sort();
        (parents, children)
    }

    /// What Postgres holds, in the same shape as `expected`.
    pub async fn actual(
        &self,
    ) -> (
        Vec<(String, Option<i32>, Option<String>)>,
        Vec<(String, i32, Option<String>)>,
    ) {
        let parents = self
            .db
            .client
            .query("SELECT id, qty, name FROM public.orders ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect::<Vec<_>>();
        let children = self
            .db
            .client
            .query(
                "SELECT order_id, idx, sku FROM public.order_items ORDER BY order_id, idx",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get::<_, i32>(1), r.get(2)))
            .collect::<Vec<_>>();
        let mut parents = parents;
        parents.sort();
        let mut children = children;
        children.sort();
        (parents, children)
    }

    pub async fn assert_equal(&self) {
        let expected = self.expected().await;
        let actual = self.actual().await;
        assert_eq!(
            actual.0, expected.0,
            "parent rows differ from the mapped documents"
        );
        assert_eq!(
            actual.1, expected.1,
            "child rows differ from the mapped documents"
        );
    }

    /// Waits until `shop.orders` is in `phase` (polling the state table).
    pub async fn wait_for_phase(&self, phase: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = self
                .db
                .client
                .query_opt(
                    "SELECT phase FROM tributary.collections WHERE stream = 'test' AND namespace = 'shop.orders'",
                    &[],
                )
                .await;
            if let Ok(Some(r)) = row {
                if r.get::<_, String>(0) == phase {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "shop.orders never reached phase {phase}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Postgres's clock now, for `wait_for_copy_since`.
    pub async fn pg_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.db
            .client
            .query_one("SELECT now()", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Waits until a copy of `namespace` finished after `since` (an online re-copy runs while
    /// the stream goes on, so a marker can arrive before it is done).
    pub async fn wait_for_copy_since(&self, namespace: &str, since: chrono::DateTime<chrono::Utc>) {
        let sql = "SELECT 1 FROM tributary.collections WHERE stream = 'test' AND namespace = $1 \
                   AND phase = 'streaming' AND snapshot_done_at > $2";
        wait_until(120, &format!("a copy of {namespace} after {since}"), || async {
            matches!(self.db.client.query(sql, &[&namespace, &since]).await, Ok(r) if !r.is_empty())
        })
        .await;
    }

    pub async fn checkpoint(&self) -> Option<serde_json::Value> {
        self.db
            .client
            .query_opt(
                "SELECT resume_token FROM tributary.checkpoints WHERE stream = 'test'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }

    pub async fn stop(self) {
        self.sim.shutdown().await;
    }
}

pub async fn stop_sync(stop: oneshot::Sender<()>, task: JoinHandle<Result<(), SyncError>>) {
    let _ = stop.send(());
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("sync did not stop within 30 s of shutdown")
        .unwrap();
    assert!(r.is_ok(), "sync failed: {r:?}");
}

pub fn order(id: &str, qty: i32, skus: &[&str]) -> Document {
    let items: Vec<Bson> = skus
        .iter()
        .map(|s| Bson::Document(doc! {"sku": *s}))
        .collect();
    doc! {"_id": id, "qty": qty, "name": format!("order {id}"), "items": items}
}
