//! End-to-end equivalence: a seeded random workload runs against MongoDB while `sync` streams it;
//! afterwards every mapped table equals the mapping applied to the documents, row by row, and
//! every dead letter is explained.
//!
//! MongoDB is `mongo-sim` in-process, or a real replica set when `TRIBUTARY_TEST_MONGO_URI` is set
//! (`make test-real`); each test then uses a database of its own name there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, DateTime, Decimal128, Document};
use mongodb::Collection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary::config::{Config, SourceKind};
use tributary::mapping::model::{CollectionMapping, MappingSet};
use tributary::mapping::value::{PgValue, Row};
use tributary::pipeline::sync::{sync, SyncOptions};

use crate::support::{fresh_database, wait_until};

fn mapping(database: &str) -> String {
    format!(
        r#"
database: {database}
collections:
  orders:
    columns:
      - {{ name: id,          source: _id,            type: text }}
      - {{ name: customer_id, source: customer._id,   type: text }}
      - {{ name: email,       source: customer.email, type: text }}
      - {{ name: total,       source: total,          type: "numeric(12,2)" }}
      - {{ name: qty,         source: qty,            type: integer }}
      - {{ name: placed_at,   source: placedAt,       type: timestamptz }}
      - {{ name: tags,        source: tags,           type: "text[]" }}
    extra_props: extra
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - {{ name: sku, source: sku, type: text }}
          - {{ name: qty, source: qty, type: integer }}
"#
    )
}

/// Where MongoDB is: the real one named by the environment, or a fresh simulator.
async fn mongo() -> (String, Option<mongo_sim::SimHandle>) {
    match std::env::var("TRIBUTARY_TEST_MONGO_URI") {
        Ok(uri) if !uri.is_empty() => (uri, None),
        _ => {
            let sim = mongo_sim::start(mongo_sim::SimOptions::default())
                .await
                .expect("start mongo-sim");
            (sim.uri(), Some(sim))
        }
    }
}

fn decimal(cents: i64, places: u32) -> Decimal128 {
    let text = if places == 2 {
        format!("{}.{:02}", cents / 100, cents % 100)
    } else {
        // Three decimals cannot go into numeric(12,2) without rounding: refused, dead-lettered.
        format!("{}.{:03}", cents / 100, (cents % 100) * 10 + 5)
    };
    text.parse().expect("valid decimal text")
}

/// A random order; about one in twelve carries a value the mapping must refuse.
fn random_order(rng: &mut StdRng, id: &str) -> Document {
    let bad = rng.gen_ratio(1, 12);
    let bad_kind = rng.gen_range(0..3);
    let items: Vec<Bson> = (0..rng.gen_range(0..4))
        .map(|i| {
            let qty = if bad && bad_kind == 2 && i == 0 {
                Bson::Double(1.5)
            } else {
                Bson::Int32(rng.gen_range(1..9))
            };
            Bson::Document(doc! {"sku": format!("SKU-{}", rng.gen_range(0..50)), "qty": qty})
        })
        .collect();
    let tags: Vec<Bson> = ["a", "b", "c"]
        .iter()
        .filter(|_| rng.gen_bool(0.5))
        .map(|t| Bson::String((*t).into()))
        .collect();
    let mut d = doc! {
        "_id": id,
        "customer": {"_id": format!("C{}", rng.gen_range(0..40)), "email": format!("u{}@example.com", rng.gen_range(0..999))},
        "total": decimal(rng.gen_range(100..100_000), if bad && bad_kind == 0 { 3 } else { 2 }),
        "qty": if bad && bad_kind == 1 { Bson::String("lots".into()) } else { Bson::Int32(rng.gen_range(0..100)) },
        "placedAt": DateTime::from_millis(1_700_000_000_000 + rng.gen_range(0..10_000_000_000i64)),
        "tags": tags,
        "items": items,
    };
    if rng.gen_bool(0.5) {
        d.insert("note", format!("note {}", rng.gen_range(0..100)));
    }
    if rng.gen_bool(0.3) {
        d.insert(
            "meta",
            doc! {"a": {"b": rng.gen_range(0..5)}, "source": "web"},
        );
    }
    d
}

/// One random write (or a small transaction of them). Returns the ids it may have touched.
async fn random_write(
    rng: &mut StdRng,
    client: &mongodb::Client,
    orders: &Collection<Document>,
    ids: &mut Vec<String>,
    next_id: &mut usize,
) -> Vec<String> {
    let roll = rng.gen_range(0..100);
    if roll >= 93 && ids.len() >= 3 {
        // A multi-document transaction: an insert, an update and maybe a delete, atomically.
        let mut session = client.start_session().await.expect("session");
        session.start_transaction().await.expect("start txn");
        let new_id = format!("o{}", *next_id);
        *next_id += 1;
        let a = ids[rng.gen_range(0..ids.len())].clone();
        orders
            .insert_one(random_order(rng, &new_id))
            .session(&mut session)
            .await
            .expect("txn insert");
        orders
            .update_one(
                doc! {"_id": &a},
                doc! {"$set": {"customer.email": "txn@example.com"}},
            )
            .session(&mut session)
            .await
            .expect("txn update");
        let mut touched = vec![new_id.clone(), a];
        if rng.gen_bool(0.5) {
            let b = ids[rng.gen_range(0..ids.len())].clone();
            orders
                .delete_one(doc! {"_id": &b})
                .session(&mut session)
                .await
                .expect("txn delete");
            touched.push(b);
        }
        session.commit_transaction().await.expect("commit");
        ids.push(new_id);
        return touched;
    }
    if roll < 25 || ids.is_empty() {
        let id = format!("o{}", *next_id);
        *next_id += 1;
        orders
            .insert_one(random_order(rng, &id))
            .await
            .expect("insert");
        ids.push(id.clone());
        return vec![id];
    }
    let id = ids[rng.gen_range(0..ids.len())].clone();
    let filter = doc! {"_id": &id};
    let update = match roll {
        25..=34 => {
            orders
                .replace_one(filter, random_order(rng, &id))
                .await
                .expect("replace");
            return vec![id];
        }
        35..=49 => match rng.gen_range(0..4) {
            0 => doc! {"$set": {"qty": rng.gen_range(0..100)}},
            1 => {
                doc! {"$set": {"customer.email": format!("n{}@example.com", rng.gen_range(0..99))}}
            }
            2 => {
                doc! {"$set": {"meta.a.b": rng.gen_range(0..9), "total": decimal(rng.gen_range(1..9999), 2)}}
            }
            _ => doc! {"$set": {"qty": "many"}},
        },
        50..=59 => match rng.gen_range(0..3) {
            0 => doc! {"$unset": {"tags": ""}},
            1 => doc! {"$unset": {"customer.email": ""}},
            _ => doc! {"$unset": {"note": "", "meta": ""}},
        },
        60..=69 => doc! {"$inc": {"qty": 1}},
        70..=77 => {
            doc! {"$push": {"items": {"sku": format!("SKU-{}", rng.gen_range(0..50)), "qty": rng.gen_range(1..5)}}}
        }
        78..=84 => doc! {"$pull": {"items": {"sku": format!("SKU-{}", rng.gen_range(0..50))}}},
        _ => {
            orders.delete_one(filter).await.expect("delete");
            ids.retain(|i| *i != id);
            return vec![id];
        }
    };
    // `$inc` on a refused string value fails in MongoDB itself; that write simply did not happen.
    let _ = orders.update_one(filter, update).await;
    vec![id]
}

/// Every version each document had, as read back after each write.
#[derive(Default)]
struct History {
    versions: BTreeMap<String, Vec<Option<Document>>>,
}

impl History {
    async fn record(&mut self, orders: &Collection<Document>, ids: &[String]) {
        for id in ids {
            let now = orders.find_one(doc! {"_id": id}).await.expect("find_one");
            self.versions.entry(id.clone()).or_default().push(now);
        }
    }
}

async fn table_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Row> {
    client
        .query(sql, &[])
        .await
        .expect("read table")
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, PgValue>(i)).collect())
        .collect()
}

fn text_key(v: &PgValue) -> String {
    match v {
        PgValue::Text(s) => s.clone(),
        other => panic!("unexpected key value {other:?}"),
    }
}

async fn equivalence(source: SourceKind, seed: u64) {
    let (uri, sim) = mongo().await;
    let database = format!("e2e_{:x}", rand::random::<u32>());
    let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
    let orders: Collection<Document> = client.database(&database).collection("orders");
    let pg = fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mappings.yml"), mapping(&database)).expect("mapping");
    let text = format!(
        "[mongo]\nuri = \"{uri}\"\nsource = \"{}\"\n[postgres]\nuri = \"{}\"\npool_size = 4\n[sync]\nname = \"e2e\"\nmappings = \"mappings.yml\"\nbatch_max_rows = 64\nbatch_max_wait_ms = 20\n[metrics]\nlisten = \"\"\n",
        source.as_str(),
        pg.url
    );
    let config = Config::from_str_at(&text, &dir.path().join("tributary.toml")).expect("config");
    let mappings: Arc<MappingSet> =
        Arc::new(tributary::mapping::load(Path::new(&config.sync.mappings)).expect("mappings"));

    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = Vec::new();
    let mut next_id = 0usize;
    let mut history = History::default();
    // Documents that exist before the first sync: they arrive through the full sync.
    for _ in 0..60 {
        let touched = random_write(&mut rng, &client, &orders, &mut ids, &mut next_id).await;
        history.record(&orders, &touched).await;
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (config, mappings) = (config.clone(), mappings.clone());
        tokio::spawn(async move {
            let opts = SyncOptions {
                initial_sync: true,
                metrics: None,
            };
            sync(&config, mappings, opts, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    for _ in 0..600 {
        let touched = random_write(&mut rng, &client, &orders, &mut ids, &mut next_id).await;
        history.record(&orders, &touched).await;
    }

    // A marker written last: once its row is in Postgres, everything before it was applied;
    // but only when it came through the stream, so it is written after the initial copy (a
    // copy can read it before the stream replays the writes made during the copy).
    let copied = "SELECT count(*) > 0 AND bool_and(phase = 'streaming') FROM tributary.collections";
    wait_until(60, "the initial copy", || async {
        matches!(pg.client.query_one(copied, &[]).await, Ok(r) if r.get::<_, Option<bool>>(0) == Some(true))
    })
    .await;
    orders
        .insert_one(doc! {"_id": "~marker", "qty": 0})
        .await
        .expect("marker");
    history.record(&orders, &["~marker".to_owned()]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = pg
            .client
            .query("SELECT 1 FROM public.orders WHERE id = '~marker'", &[])
            .await
            .map(|r| !r.is_empty())
            .unwrap_or(false);
        if seen {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the marker never reached Postgres; sync: {:?}",
            task.is_finished()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("sync stops within 30 s")
        .expect("sync task");
    assert!(result.is_ok(), "sync failed: {result:?}");

    let m: &CollectionMapping = &mappings.collections[0];
    let parents: BTreeMap<String, Row> = table_rows(&pg.client, "SELECT * FROM public.orders")
        .await
        .into_iter()
        .map(|r| (text_key(&r[0]), r))
        .collect();
    let mut children: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in table_rows(
        &pg.client,
        "SELECT * FROM public.order_items ORDER BY order_id, idx",
    )
    .await
    {
        children.entry(text_key(&r[0])).or_default().push(r);
    }
    let dead: Vec<(String, String)> = pg
        .client
        .query(
            "SELECT document_key #>> '{}', error FROM tributary.dead_letters WHERE stream = 'e2e'",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let dead_ids: BTreeSet<&str> = dead.iter().map(|(id, _)| id.as_str()).collect();

    let mut refused_ids = BTreeSet::new();
    let mut checked_good = 0;
    let mut checked_bad = 0;
    for (id, versions) in &history.versions {
        let converted: Vec<Option<Result<_, _>>> = versions
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|d| tributary::mapping::convert_document(m, d))
            })
            .collect();
        if converted.iter().flatten().any(|c| c.is_err()) {
            refused_ids.insert(id.clone());
        }
        let actual = parents.get(id);
        let actual_children = children.get(id).cloned().unwrap_or_default();
        match converted.last().expect("at least one version") {
            None => {
                assert!(
                    actual.is_none(),
                    "{id} was deleted in MongoDB but has a row"
                );
                assert!(
                    actual_children.is_empty(),
                    "{id} was deleted but has child rows"
                );
            }
            Some(Ok(c)) => {
                checked_good += 1;
                assert_eq!(actual, Some(&c.rows.parent), "row of {id} differs");
                assert_eq!(
                    actual_children, c.rows.children[0],
                    "child rows of {id} differ"
                );
            }
            Some(Err(e)) => {
                checked_bad += 1;
                assert!(
                    dead_ids.contains(id.as_str()),
                    "{id} is unconvertible now ({e:?}) but has no dead letter"
                );
                // The row stays at a good version it had (or absent if it never had one).
                if let Some(row) = actual {
                    let was_good = converted
                        .iter()
                        .flatten()
                        .filter_map(|c| c.as_ref().ok())
                        .any(|c| &c.rows.parent == row && c.rows.children[0] == actual_children);
                    assert!(was_good, "{id}: the row is not one of its good versions");
                }
            }
        }
    }
    for (id, error) in &dead {
        assert!(
            refused_ids.contains(id),
            "dead letter for {id} ({error}) but no version of it was ever refused"
        );
        assert!(!error.is_empty());
    }
    for id in parents.keys() {
        assert!(
            history.versions.contains_key(id),
            "row {id} was never written"
        );
    }
    assert!(
        checked_good > 50,
        "too few documents to mean anything: {checked_good}"
    );
    assert!(
        checked_bad > 0,
        "the workload produced no refused document (seed {seed})"
    );
    if let Some(sim) = sim {
        sim.shutdown().await;
    } else {
        let _ = client.database(&database).drop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_change_stream_random_workload_equals_the_documents() {
    equivalence(SourceKind::ChangeStream, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_oplog_random_workload_equals_the_documents() {
    equivalence(SourceKind::Oplog, 23).await;
}
