//! A sharded cluster (issue 16): the `tributary` binary streams through a 2-shard mongo-sim
//! `mongos` while its balancer moves chunks of a hashed-key collection (`orders`) and a
//! range-key one (`customers`) all the time, under a random workload with cross-shard
//! transactions, and is SIGKILLed and restarted in the middle; the restarted daemon re-copies
//! `orders` online (`tributary resync`) meanwhile. At the end the tables equal the
//! documents; an audit trigger shows that no row of a live document was ever deleted (a chunk
//! migration's delete on the donor never reaches Postgres); every cross-shard transaction
//! landed in one Postgres transaction; the initial copy split the range-key collection by its
//! chunks; and a `full-sync --mode replace` through mongos ends equal too.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use mongo_sim::SimOptions;
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tributary::config::SourceKind;

use super::{wait_until, ConfigFile, Daemon};
use crate::stream::recopy::MAPPING;
use crate::stream::{order, World};

const ORDERS: usize = 1500;
const CUSTOMERS: usize = 2400;

/// A 2-shard cluster, its balancer moving a chunk every 40 ms: `orders` hashed on `_id`,
/// `customers` on `_id` ranges split in 8 chunks (all on the primary shard at first).
async fn sharded_world() -> World {
    let sim = SimOptions {
        shards: 2,
        balancer_interval_ms: Some(40),
        ..SimOptions::default()
    };
    let w = World::with_mapping(SourceKind::ChangeStream, 100, sim, "", MAPPING).await;
    let admin = w.mongo.database("admin");
    admin
        .run_command(doc! {"enableSharding": "shop"})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "shop.orders", "key": {"_id": "hashed"}})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "shop.customers", "key": {"_id": 1}})
        .await
        .unwrap();
    for i in 1..8 {
        let at = format!("c{:05}", i * CUSTOMERS / 8);
        admin
            .run_command(doc! {"split": "shop.customers", "middle": {"_id": at}})
            .await
            .unwrap();
    }
    w.orders()
        .insert_many((0..ORDERS).map(|i| order(&format!("o{i:05}"), i as i32, &["a", "b"])))
        .await
        .unwrap();
    customers(&w)
        .insert_many((0..CUSTOMERS).map(|i| doc! {"_id": format!("c{i:05}"), "seq": 0i64}))
        .await
        .unwrap();
    w
}

fn customers(w: &World) -> mongodb::Collection<Document> {
    w.mongo.database("shop").collection("customers")
}

/// What the workload did that the end state is checked against.
#[derive(Default)]
struct Done {
    /// Ids it deleted (never inserted again): the only rows Postgres may delete.
    deleted: HashSet<String>,
    /// The two orders each cross-shard transaction inserted (never written again).
    pairs: Vec<(String, String)>,
}

/// Inserts, updates, deletes and transactions over both collections until `stop`.
async fn workload(
    w_orders: mongodb::Collection<Document>,
    w_customers: mongodb::Collection<Document>,
    client: mongodb::Client,
    ops: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Done {
    let mut rng = StdRng::seed_from_u64(16);
    let mut done = Done::default();
    let mut orders: Vec<String> = (0..ORDERS).map(|i| format!("o{i:05}")).collect();
    let mut custs: Vec<String> = (0..CUSTOMERS).map(|i| format!("c{i:05}")).collect();
    let mut n = 0usize;
    while !*stop.borrow() {
        n += 1;
        match rng.gen_range(0..8) {
            0 => {
                let id = format!("w{n:06}");
                w_orders
                    .insert_one(order(&id, n as i32, &["x"]))
                    .await
                    .unwrap();
                orders.push(id);
            }
            1 | 2 => {
                let id = &orders[rng.gen_range(0..orders.len())];
                w_orders
                    .update_one(doc! {"_id": id}, doc! {"$set": {"qty": n as i32}})
                    .await
                    .unwrap();
            }
            3 if orders.len() > 10 => {
                let id = orders.swap_remove(rng.gen_range(0..orders.len()));
                w_orders.delete_one(doc! {"_id": &id}).await.unwrap();
                done.deleted.insert(id);
            }
            4 => {
                let id = &custs[rng.gen_range(0..custs.len())];
                w_customers
                    .update_one(doc! {"_id": id}, doc! {"$inc": {"seq": 1i64}})
                    .await
                    .unwrap();
            }
            5 if custs.len() > 10 => {
                let id = custs.swap_remove(rng.gen_range(0..custs.len()));
                w_customers.delete_one(doc! {"_id": &id}).await.unwrap();
                done.deleted.insert(id);
            }
            6 => {
                // Two orders (hashed: most often on two shards) and a customer in one
                // transaction: one Postgres transaction must hold all three. A chunk the
                // transaction wrote to may move before it commits: MongoDB then aborts it with
                // TransientTransactionError, and the application runs it again.
                let (a, b) = (format!("t{n:06}a"), format!("t{n:06}b"));
                let c = custs[rng.gen_range(0..custs.len())].clone();
                let mut session = client.start_session().await.unwrap();
                loop {
                    session.start_transaction().await.unwrap();
                    match cross_shard(&w_orders, &w_customers, &mut session, &a, &b, &c).await {
                        Ok(()) => break,
                        Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                            let _ = session.abort_transaction().await;
                        }
                        Err(e) => panic!("cross-shard transaction: {e}"),
                    }
                }
                done.pairs.push((a, b));
            }
            _ => {
                let id = format!("nc{n:06}");
                w_customers
                    .insert_one(doc! {"_id": &id, "seq": 1i64})
                    .await
                    .unwrap();
                custs.push(id);
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(20) {
            let _ = tokio::time::timeout(Duration::from_millis(5), stop.changed()).await;
        }
    }
    done
}

/// The writes of one cross-shard transaction, committed; an error leaves it to the caller.
async fn cross_shard(
    orders: &mongodb::Collection<Document>,
    customers: &mongodb::Collection<Document>,
    session: &mut mongodb::ClientSession,
    a: &str,
    b: &str,
    c: &str,
) -> mongodb::error::Result<()> {
    for id in [a, b] {
        orders
            .insert_one(order(id, 1, &["t"]))
            .session(&mut *session)
            .await?;
    }
    customers
        .update_one(doc! {"_id": c}, doc! {"$inc": {"seq": 1i64}})
        .session(&mut *session)
        .await?;
    session.commit_transaction().await
}

async fn streaming_everywhere(w: &World) -> bool {
    w.db.client
        .query_one(
            "SELECT count(*) FILTER (WHERE phase = 'streaming') FROM tributary.collections \
             WHERE stream = 'test'",
            &[],
        )
        .await
        .is_ok_and(|r| r.get::<_, i64>(0) == 2)
}

async fn customers_equal(w: &World) -> bool {
    let (expected, actual) = crate::stream::recopy::customers_rows(w).await;
    actual == expected
}

async fn all_equal(w: &World) -> bool {
    w.expected().await == w.actual().await && customers_equal(w).await
}

async fn wait_ops(ops: &AtomicUsize, at_least: usize) {
    wait_until(180, &format!("{at_least} workload operations"), || async {
        ops.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

/// The shards holding chunks of `ns` (from `config.chunks`, through mongos).
async fn shards_of(w: &World, ns: &str) -> HashSet<String> {
    let config = w.mongo.database("config");
    let uuid = config
        .collection::<Document>("collections")
        .find_one(doc! {"_id": ns})
        .await
        .unwrap()
        .unwrap()
        .get("uuid")
        .cloned()
        .unwrap();
    let mut cursor = config
        .collection::<Document>("chunks")
        .find(doc! {"uuid": uuid})
        .await
        .unwrap();
    let mut shards = HashSet::new();
    while let Some(c) = futures::StreamExt::next(&mut cursor).await {
        shards.insert(c.unwrap().get_str("shard").unwrap().to_owned());
    }
    shards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_through_mongos_across_migrations_and_a_sigkill_never_deletes_a_live_row() {
    let w = sharded_world().await;
    let cfg = ConfigFile::new(&w, "test", "public", "change_stream", 100);
    let first = Daemon::spawn(&cfg.path, cfg.dir.path().join("first.log"));
    wait_until(180, "the initial copy through mongos", || {
        streaming_everywhere(&w)
    })
    .await;
    let copy_log = first.log_text();
    assert!(
        copy_log
            .lines()
            .any(|l| l.contains("Split points of the copy found.")
                && l.contains("shop.customers")
                && l.contains("split=chunks")),
        "the range-key collection was not split by its chunks:\n{copy_log}"
    );
    // Deletes of parent rows from now on, by id.
    w.db.client
        .batch_execute(
            // The sink replaces a changed row by a delete and a COPY in one transaction, so
            // a delete counts only if the row is still gone at COMMIT (a deferred trigger).
            "CREATE TABLE public.deleted (id text); \
             CREATE FUNCTION public.record_delete() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF TG_TABLE_NAME = 'orders' THEN PERFORM 1 FROM public.orders WHERE id = OLD.id; \
               ELSE PERFORM 1 FROM public.customers WHERE id = OLD.id; END IF; \
               IF NOT FOUND THEN INSERT INTO public.deleted VALUES (OLD.id); END IF; \
               RETURN NULL; \
             END $$; \
             CREATE CONSTRAINT TRIGGER record_delete AFTER DELETE ON public.orders \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.record_delete(); \
             CREATE CONSTRAINT TRIGGER record_delete AFTER DELETE ON public.customers \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.record_delete();",
        )
        .await
        .unwrap();

    let ops = Arc::new(AtomicUsize::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let load = tokio::spawn(workload(
        w.orders(),
        customers(&w),
        w.mongo.clone(),
        ops.clone(),
        stop_rx,
    ));
    wait_ops(&ops, 300).await;
    first.kill().await;
    wait_ops(&ops, 600).await;
    let second = Daemon::spawn(&cfg.path, cfg.dir.path().join("second.log"));
    wait_until(120, "the second daemon to stream", || {
        let streaming = second.log_text().contains("Streaming changes.");
        async move { streaming }
    })
    .await;
    // An online re-copy through mongos, answered by the daemon while the workload and the
    // balancer go on: its snapshot reads must see every shard at one cluster time.
    let resync = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["resync", "--config"])
        .arg(&cfg.path)
        .args(["--collections", "shop.orders"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), resync)
        .await
        .expect("resync did not end within 300 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "resync through mongos failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("re-copied online by the running daemon"),
        "{stdout}"
    );
    wait_ops(&ops, 900).await;
    stop.send(true).unwrap();
    let done = load.await.unwrap();
    wait_until(180, "the tables to equal the documents", || all_equal(&w)).await;
    w.assert_equal().await;

    assert_eq!(
        shards_of(&w, "shop.customers").await.len(),
        2,
        "the balancer never moved a customers chunk"
    );
    let deleted: Vec<String> =
        w.db.client
            .query("SELECT id FROM public.deleted", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let live: Vec<&String> = deleted
        .iter()
        .filter(|id| !done.deleted.contains(*id))
        .collect();
    assert!(
        live.is_empty(),
        "rows of live documents were deleted (chunk migrations reached Postgres): {live:?}"
    );
    assert!(!done.pairs.is_empty(), "the workload ran no transaction");
    for (a, b) in &done.pairs {
        let xmins: Vec<String> =
            w.db.client
                .query(
                    "SELECT xmin::text FROM public.orders WHERE id = $1 OR id = $2",
                    &[a, b],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
        assert!(
            xmins.len() == 2 && xmins[0] == xmins[1],
            "transaction {a}/{b} was split across Postgres transactions: {xmins:?}"
        );
    }
    assert_eq!(second.terminate().await, Some(0), "SIGTERM is a clean stop");

    let replace = Daemon::spawn_args(
        &["full-sync", "--mode", "replace"],
        &cfg.path,
        cfg.dir.path().join("replace.log"),
    );
    let log_path = replace.log.clone();
    assert_eq!(
        replace.wait(180).await,
        Some(0),
        "full-sync through mongos failed:\n{}",
        std::fs::read_to_string(log_path).unwrap_or_default()
    );
    assert!(all_equal(&w).await, "full-sync through mongos differs");
}

/// `mongo.source = "oplog"` through mongos: refused before anything is written, with what to
/// set instead (a mongos has no oplog; docs/scaling.md says why Tributary does not tail the
/// shards' own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_mode_through_mongos_is_refused_with_the_source_to_use() {
    let sim = SimOptions {
        shards: 2,
        ..SimOptions::default()
    };
    let w = World::with_mapping(SourceKind::Oplog, 100, sim, "", MAPPING).await;
    let cfg = ConfigFile::new(&w, "test", "public", "oplog", 100);
    let daemon = Daemon::spawn(&cfg.path, cfg.dir.path().join("oplog.log"));
    let log_path = daemon.log.clone();
    let code = daemon.wait(60).await;
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert_eq!(code, Some(2), "a config error (nothing written):\n{log}");
    assert!(
        log.contains("is a mongos") && log.contains("mongo.source = \"change_stream\""),
        "{log}"
    );
    let tables: i64 =
        w.db.client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(tables, 0, "tables were created before the refusal");
}
