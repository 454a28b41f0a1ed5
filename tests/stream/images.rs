//! Post-images: with `changeStreamPreAndPostImages` on the mapped collection, updates read in
//! one backlog carry the document as each update left it (`fullDocument: whenAvailable`),
//! where `updateLookup` would give every one of them the version at read time.

use bson::doc;
use tributary::config::SourceKind;

use super::{stop_sync, World};

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
    // A trigger records every version the table is given.
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
    let versions: Vec<i32> =
        w.db.client
            .query(
                "SELECT qty FROM public.versions WHERE id = 'v' ORDER BY qty",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    stop_sync(stop, task).await;
}
