//! Post-images: with `changeStreamPreAndPostImages` on the mapped collection, updates read in
//! one backlog carry the document as each update left it (`fullDocument: whenAvailable`),
//! where `updateLookup` would give every one of them the version at read time.

use bson::doc;
use tributary::config::SourceKind;

use super::{stop_sync, World};

/// A trigger records every version `public.orders` is given.
async fn record_versions(w: &World) {
    w.db.client
        .batch_execute(
            "CREATE TABLE public.versions (id text, qty integer); \
             CREATE FUNCTION public.record_version() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO public.versions VALUES (NEW.id, NEW.qty); RETURN NEW; END $$; \
             CREATE TRIGGER record_version AFTER INSERT OR UPDATE ON public.orders \
             FOR EACH ROW EXECUTE FUNCTION public.record_version();",
        )
        .await
        .unwrap();
}

/// The `qty` of every version document `v` was given, in order.
async fn versions(w: &World) -> Vec<i32> {
    w.db.client
        .query(
            "SELECT qty FROM public.versions WHERE id = 'v' ORDER BY qty",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_read_together_yield_each_version_through_post_images() {
    // One event per batch: nothing coalesces, each event's document reaches the table.
    let w = World::new(SourceKind::ChangeStream, 1).await;
    w.mongo
        .database("shop")
        .run_command(doc! {"create": "orders", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    stop_sync(stop, task).await;
    record_versions(&w).await;
    // Written while nothing streams: read later in one backlog.
    w.orders()
        .insert_one(doc! {"_id": "v", "qty": 1})
        .await
        .unwrap();
    for qty in 2..=5 {
        w.orders()
            .update_one(doc! {"_id": "v"}, doc! {"$set": {"qty": qty}})
            .await
            .unwrap();
    }
    let (stop, task) = w.start_sync();
    w.sync_point("end").await;
    assert_eq!(versions(&w).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        w.sim.update_lookups("shop.orders"),
        0,
        "read with updateLookup"
    );
    stop_sync(stop, task).await;
}

const TWO_COLLECTIONS: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,  source: _id, type: text }
      - { name: qty, source: qty, type: integer }
  customers:
    columns:
      - { name: id,  source: _id, type: text }
      - { name: seq, source: seq, type: bigint }
"#;

/// Post-images on one mapped collection only: its updates still yield each version, and the
/// updates of the other (no images, so no document in its events under `whenAvailable`) are
/// looked up by `_id`: its rows end at the current documents, none left without its fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_images_on_one_collection_and_lookups_for_the_other() {
    let w = World::with_mapping(
        SourceKind::ChangeStream,
        1,
        mongo_sim::SimOptions::default(),
        "",
        TWO_COLLECTIONS,
    )
    .await;
    let shop = w.mongo.database("shop");
    shop.run_command(doc! {"create": "orders", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    shop.run_command(doc! {"create": "customers"})
        .await
        .unwrap();
    let customers = shop.collection::<bson::Document>("customers");
    let (stop, task) = w.start_sync();
    w.sync_point("start").await;
    stop_sync(stop, task).await;
    record_versions(&w).await;
    w.orders()
        .insert_one(doc! {"_id": "v", "qty": 1})
        .await
        .unwrap();
    customers
        .insert_many((0..5).map(|i| doc! {"_id": format!("c{i}"), "seq": 0i64}))
        .await
        .unwrap();
    for qty in 2..=5 {
        w.orders()
            .update_one(doc! {"_id": "v"}, doc! {"$set": {"qty": qty}})
            .await
            .unwrap();
        customers
            .update_many(doc! {}, doc! {"$set": {"seq": qty as i64}})
            .await
            .unwrap();
    }
    customers.delete_one(doc! {"_id": "c4"}).await.unwrap();
    let (stop, task) = w.start_sync();
    w.sync_point("end").await;
    assert_eq!(versions(&w).await, vec![1, 2, 3, 4, 5]);
    let rows: Vec<(String, Option<i64>)> =
        w.db.client
            .query("SELECT id, seq FROM public.customers ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let expected: Vec<(String, Option<i64>)> = (0..4).map(|i| (format!("c{i}"), Some(5))).collect();
    assert_eq!(rows, expected);
    assert_eq!(
        w.sim.update_lookups("shop.orders"),
        0,
        "the collection with post-images was read with updateLookup"
    );
    stop_sync(stop, task).await;
}
