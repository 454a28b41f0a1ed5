//! `tributary verify`: mongo-sim over TCP with the real driver, a full sync into a fresh
//! Postgres database, then drift injected straight into Postgres (or a writer and `sync`
//! running), and the report checked field by field.

mod cli;
mod drift;
mod live;

use std::path::Path;
use std::sync::Arc;

use bson::{doc, Bson, DateTime, Document};
use mongo_sim::{SimHandle, SimOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::config::Config;
use tributary::mapping::model::MappingSet;
use tributary::pipeline::full_sync::{full_sync, FullSyncMode};
use tributary::pipeline::sync::{sync, SyncError, SyncOptions};
use tributary::verify::{
    verify, CollectionReport, Difference, Kind, Mode, ProgressMode, VerifyOptions, VerifyReport,
};

use crate::support::{fresh_database, TestDb};

/// Two collections: orders (children, extra_props, a numeric and a date) and customers.
pub const MAPPING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,        source: _id,      type: text }
      - { name: qty,       source: qty,      type: integer }
      - { name: total,     source: total,    type: "numeric(12,2)" }
      - { name: placed_at, source: placedAt, type: timestamptz }
      - { name: tags,      source: tags,     type: "text[]" }
    extra_props: extra
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
          - { name: n,   source: n,   type: integer }
  customers:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: name, source: name, type: text }
"#;

pub struct World {
    pub sim: SimHandle,
    pub mongo: mongodb::Client,
    pub db: TestDb,
    pub config: Config,
    pub mappings: Arc<MappingSet>,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        let sim = mongo_sim::start(SimOptions::default()).await.unwrap();
        let mongo = mongodb::Client::with_uri_str(sim.uri()).await.unwrap();
        let db = fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mappings.yml"), MAPPING).unwrap();
        let text = format!(
            "[mongo]\nuri = \"{}\"\n[postgres]\nuri = \"{}\"\npool_size = 4\n\
             [sync]\nname = \"test\"\nmappings = \"mappings.yml\"\nbatch_max_rows = 500\n\
             batch_max_wait_ms = 20\n[metrics]\nlisten = \"\"\n",
            sim.uri(),
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
            dir,
        }
    }

    pub fn config_path(&self) -> String {
        self.dir.path().join("tributary.toml").display().to_string()
    }

    pub fn orders(&self) -> mongodb::Collection<Document> {
        self.mongo.database("shop").collection("orders")
    }

    pub fn customers(&self) -> mongodb::Collection<Document> {
        self.mongo.database("shop").collection("customers")
    }

    /// `orders` orders `o0000`, … with three items each and `customers` customers `c000`, ….
    pub async fn seed(&self, orders: usize, customers: usize) {
        let docs: Vec<Document> = (0..orders).map(order).collect();
        for chunk in docs.chunks(1000) {
            self.orders().insert_many(chunk.to_vec()).await.unwrap();
        }
        let docs: Vec<Document> = (0..customers)
            .map(|i| doc! {"_id": format!("c{i:03}"), "name": format!("customer {i}")})
            .collect();
        if !docs.is_empty() {
            self.customers().insert_many(docs).await.unwrap();
        }
    }

    /// `tributary full-sync` of every mapped collection.
    pub async fn full_sync(&self) {
        full_sync(
            &self.config,
            self.mappings.clone(),
            None,
            FullSyncMode::Replace,
            None,
            std::future::pending(),
        )
        .await
        .unwrap();
    }

    pub async fn verify(&self, mode: Mode) -> VerifyReport {
        self.verify_with(VerifyOptions {
            mode,
            ..VerifyOptions::default()
        })
        .await
    }

    pub async fn verify_with(&self, opts: VerifyOptions) -> VerifyReport {
        let opts = VerifyOptions {
            progress: ProgressMode::Off,
            // Small chunks: several chunks, rechecks and bucket scans per collection.
            chunk: opts.chunk.or(Some(200)),
            ..opts
        };
        verify(&self.config, self.mappings.clone(), opts)
            .await
            .unwrap()
    }

    pub async fn sql(&self, statement: &str) {
        self.db
            .client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
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
}

/// Order `i`: qty, a total, a date, tags, three items and one unmapped field.
pub fn order(i: usize) -> Document {
    let items: Vec<Bson> = (0..3i32)
        .map(|k| Bson::Document(doc! {"sku": format!("sku-{i}-{k}"), "n": k}))
        .collect();
    doc! {
        "_id": format!("o{i:04}"),
        "qty": (i % 7) as i32,
        "total": format!("{i}.25").parse::<bson::Decimal128>().unwrap(),
        "placedAt": DateTime::from_millis(1_700_000_000_123 + i as i64 * 1000),
        "tags": ["a", format!("t{}", i % 3)],
        "items": items,
        "note": format!("note {i}"),
    }
}

pub fn collection<'a>(r: &'a VerifyReport, ns: &str) -> &'a CollectionReport {
    r.collections
        .iter()
        .find(|c| c.namespace == ns)
        .unwrap_or_else(|| panic!("no {ns} in {r:#?}"))
}

/// The listed differences of `kind` in `table`.
pub fn listed<'a>(c: &'a CollectionReport, kind: Kind, table: &str) -> Vec<&'a Difference> {
    c.differences
        .iter()
        .filter(|d| d.kind == kind && d.table == table)
        .collect()
}
