//! A sharded simulator (`shards: 2`) through the driver: mongos's hello, the config metadata,
//! routing by shard key, merged reads while chunks move, merged change streams, refusals.

use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongo_sim::SimOptions;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;
use mongodb::Client;

use crate::support::{sim_with, Sim};

type Events = ChangeStream<ChangeStreamEvent<Document>>;

async fn cluster(balancer_ms: Option<u64>) -> Sim {
    sim_with(SimOptions {
        shards: 2,
        balancer_interval_ms: balancer_ms,
        ..SimOptions::default()
    })
    .await
}

/// A direct connection to shard `k`'s own port.
async fn shard(s: &Sim, k: usize) -> Client {
    let addr = s.handle.shard_addrs()[k];
    Client::with_uri_str(format!("mongodb://{addr}/?directConnection=true"))
        .await
        .expect("shard client")
}

async fn admin(s: &Sim, cmd: Document) -> Document {
    s.client
        .database("admin")
        .run_command(cmd)
        .await
        .expect("admin command")
}

async fn next(stream: &mut Events) -> ChangeStreamEvent<Document> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event arrives")
        .expect("stream still open")
        .expect("no error")
}

async fn ids_on(c: &Client, db: &str, coll: &str) -> Vec<i32> {
    let mut cur = c
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(d) = cur.next().await {
        out.push(d.unwrap().get_i32("_id").unwrap());
    }
    out.sort();
    out
}

async fn chunks(s: &Sim) -> Vec<Document> {
    let mut cur = s
        .client
        .database("config")
        .collection::<Document>("chunks")
        .find(doc! {})
        .sort(doc! {"min": 1})
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(d) = cur.next().await {
        out.push(d.unwrap());
    }
    out
}

#[tokio::test]
async fn hello_through_mongos_is_a_mongos() {
    let s = cluster(None).await;
    let hello = admin(&s, doc! {"hello": 1}).await;
    assert_eq!(hello.get_str("msg").unwrap(), "isdbgrid");
    assert!(!hello.contains_key("setName"));
    assert!(!hello.contains_key("hosts"));
    // Each shard answers as its own replica set.
    let direct = shard(&s, 1).await;
    let h = direct
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert_eq!(h.get_str("setName").unwrap(), "shard1");
    s.stop().await;
}

#[tokio::test]
async fn config_chunks_follow_shard_collection_split_and_move_chunk() {
    let s = cluster(None).await;
    admin(&s, doc! {"enableSharding": "d"}).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    let c = chunks(&s).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].get_document("min").unwrap(), &doc! {"k": Bson::MinKey});
    assert_eq!(c[0].get_document("max").unwrap(), &doc! {"k": Bson::MaxKey});
    assert_eq!(c[0].get_str("shard").unwrap(), "shard0");
    let colls = s
        .client
        .database("config")
        .collection::<Document>("collections")
        .find_one(doc! {"_id": "d.r"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c[0].get("uuid"), colls.get("uuid"));
    assert_eq!(colls.get_document("key").unwrap(), &doc! {"k": 1});

    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 150}, "to": "shard1"},
    )
    .await;
    let c = chunks(&s).await;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].get_document("max").unwrap(), &doc! {"k": 100});
    assert_eq!(c[1].get_document("min").unwrap(), &doc! {"k": 100});
    assert_eq!(c[0].get_str("shard").unwrap(), "shard0");
    assert_eq!(c[1].get_str("shard").unwrap(), "shard1");
    let v0 = c[0].get_timestamp("lastmod").unwrap();
    let v1 = c[1].get_timestamp("lastmod").unwrap();
    assert!(
        v1.time > v0.time,
        "the moved chunk's major version is bumped"
    );

    // The hashed key: two chunks per shard.
    admin(
        &s,
        doc! {"shardCollection": "d.h", "key": {"_id": "hashed"}},
    )
    .await;
    let h: Vec<_> = chunks(&s)
        .await
        .into_iter()
        .filter(|c| c.get_document("min").unwrap().contains_key("_id"))
        .collect();
    assert_eq!(h.len(), 4);
    assert_eq!(
        h.iter()
            .filter(|c| c.get_str("shard").unwrap() == "shard1")
            .count(),
        2
    );
    s.stop().await;
}

#[tokio::test]
async fn routing_puts_documents_on_their_chunks_shard() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let docs: Vec<Document> = (0..20).map(|i| doc! {"_id": i, "k": i * 10}).collect();
    coll.insert_many(docs).await.unwrap();
    let (s0, s1) = (shard(&s, 0).await, shard(&s, 1).await);
    assert_eq!(ids_on(&s0, "d", "r").await, (0..10).collect::<Vec<_>>());
    assert_eq!(ids_on(&s1, "d", "r").await, (10..20).collect::<Vec<_>>());
    // Targeted and broadcast writes, merged reads.
    coll.update_one(doc! {"k": 150}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    let r = coll
        .update_many(doc! {}, doc! {"$inc": {"y": 1}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 20);
    let d = coll.find_one(doc! {"_id": 15}).await.unwrap().unwrap();
    assert_eq!(d.get_i32("x").unwrap(), 1);
    let mut sorted = coll
        .find(doc! {})
        .sort(doc! {"k": -1})
        .limit(3)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(d) = sorted.next().await {
        got.push(d.unwrap().get_i32("_id").unwrap());
    }
    assert_eq!(got, vec![19, 18, 17]);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 20);
    let del = coll.delete_many(doc! {"k": {"$gte": 50}}).await.unwrap();
    assert_eq!(del.deleted_count, 15);
    s.stop().await;
}

#[tokio::test]
async fn broadcast_find_with_the_balancer_running_sees_each_document_once() {
    let s = cluster(Some(1)).await;
    admin(
        &s,
        doc! {"shardCollection": "d.h", "key": {"_id": "hashed"}},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("h");
    let docs: Vec<Document> = (0..300).map(|i| doc! {"_id": i, "v": i}).collect();
    coll.insert_many(docs).await.unwrap();
    let before = chunks(&s).await;
    let mut moved = false;
    for _ in 0..60 {
        let mut ids = ids_on(&s.client, "d", "h").await;
        ids.dedup();
        assert_eq!(ids, (0..300).collect::<Vec<_>>());
        moved |= chunks(&s).await != before;
    }
    assert!(moved, "the balancer moved chunks during the rounds");
    s.stop().await;
}

#[tokio::test]
async fn change_stream_through_mongos_merges_shards_in_order_with_shard_keys() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let mut stream = coll.watch().await.unwrap();
    for i in 0..10 {
        // Alternating shards.
        let k = if i % 2 == 0 { i } else { 100 + i };
        coll.insert_one(doc! {"_id": i, "k": k}).await.unwrap();
    }
    coll.delete_one(doc! {"_id": 3}).await.unwrap();
    let mut last = None;
    for i in 0..10 {
        let e = next(&mut stream).await;
        assert_eq!(e.operation_type, OperationType::Insert);
        let key = e.document_key.clone().unwrap();
        let k = if i % 2 == 0 { i } else { 100 + i };
        assert_eq!(key, doc! {"k": k, "_id": i});
        let t = e.cluster_time.unwrap();
        if let Some(prev) = last {
            assert!((t.time, t.increment) > prev);
        }
        last = Some((t.time, t.increment));
    }
    let e = next(&mut stream).await;
    assert_eq!(e.operation_type, OperationType::Delete);
    assert_eq!(e.document_key.unwrap(), doc! {"k": 103, "_id": 3});
    s.stop().await;
}

#[tokio::test]
async fn change_stream_shows_no_migration_and_resumes_across_one() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    let coll = s.client.database("d").collection::<Document>("r");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "k": 150}).await.unwrap();
    let first = next(&mut stream).await;
    let token = first.id.clone();
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 150}, "to": "shard1"},
    )
    .await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 150}, "to": "shard0"},
    )
    .await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 150}, "to": "shard1"},
    )
    .await;
    coll.update_one(doc! {"k": 150}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    let e = next(&mut stream).await;
    assert_eq!(
        e.operation_type,
        OperationType::Update,
        "no migration event"
    );
    assert_eq!(e.document_key.unwrap(), doc! {"k": 150, "_id": 1});
    // The shard's own oplog has the migration, marked fromMigrate.
    let s1 = shard(&s, 1).await;
    let migrated = s1
        .database("local")
        .collection::<Document>("oplog.rs")
        .count_documents(doc! {"ns": "d.r", "fromMigrate": true})
        .await
        .unwrap();
    assert!(migrated >= 2);
    // Resuming from the first event's token, after the migrations, sees the update only.
    let mut resumed = coll.watch().resume_after(token).await.unwrap();
    let e = next(&mut resumed).await;
    assert_eq!(e.operation_type, OperationType::Update);
    s.stop().await;
}

#[tokio::test]
async fn local_oplog_through_mongos_is_refused() {
    let s = cluster(None).await;
    let err = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => {
            assert_eq!(c.code, 20);
            assert_eq!(c.message, "Can't use 'local' database through mongos");
        }
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn cross_shard_transaction_events_share_lsid_txn_number_and_cluster_time() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "k": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2, "k": 200})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    let mut events = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event arrives")
            .expect("open")
            .expect("no error");
        events.push(e);
    }
    let keys: Vec<_> = events
        .iter()
        .map(|e| e.get_document("documentKey").unwrap().clone())
        .collect();
    assert!(keys.contains(&doc! {"k": 1, "_id": 1}));
    assert!(keys.contains(&doc! {"k": 200, "_id": 2}));
    for field in ["lsid", "txnNumber", "clusterTime"] {
        assert!(events[0].get(field).is_some(), "{field} present");
        assert_eq!(events[0].get(field), events[1].get(field), "one {field}");
    }
    // Each shard committed its own part.
    assert_eq!(ids_on(&shard(&s, 0).await, "d", "r").await, vec![1]);
    assert_eq!(ids_on(&shard(&s, 1).await, "d", "r").await, vec![2]);
    s.stop().await;
}

#[tokio::test]
async fn aborting_a_cross_shard_transaction_leaves_no_document() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    for (id, k) in [(1, 1), (2, 200)] {
        coll.insert_one(doc! {"_id": id, "k": k})
            .session(&mut session)
            .await
            .unwrap();
    }
    session.abort_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
    s.stop().await;
}

#[tokio::test]
async fn update_lookup_through_mongos_finds_a_document_that_moved() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    let coll = s.client.database("d").collection::<Document>("r");
    coll.insert_one(doc! {"_id": 1, "k": 150}).await.unwrap();
    let mut stream = coll
        .watch()
        .full_document(mongodb::options::FullDocumentType::UpdateLookup)
        .await
        .unwrap();
    coll.update_one(doc! {"k": 150}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    // The document moves to shard1 before the event is read.
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 150}, "to": "shard1"},
    )
    .await;
    let e = next(&mut stream).await;
    assert_eq!(e.operation_type, OperationType::Update);
    assert_eq!(e.full_document, Some(doc! {"_id": 1, "k": 150, "a": 1}));
    s.stop().await;
}

#[tokio::test]
async fn start_at_operation_time_through_mongos_and_history_lost_286() {
    let s = sim_with(SimOptions {
        shards: 2,
        oplog_max_entries: 8,
        ..SimOptions::default()
    })
    .await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let start = admin(&s, doc! {"ping": 1})
        .await
        .get_timestamp("operationTime")
        .unwrap();
    coll.insert_one(doc! {"_id": 1, "k": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 2, "k": 200}).await.unwrap();
    let mut stream = coll
        .watch()
        .start_at_operation_time(bson::Timestamp {
            time: start.time,
            increment: start.increment + 1,
        })
        .await
        .unwrap();
    assert_eq!(
        next(&mut stream).await.document_key.unwrap(),
        doc! {"k": 1, "_id": 1}
    );
    assert_eq!(
        next(&mut stream).await.document_key.unwrap(),
        doc! {"k": 200, "_id": 2}
    );
    // Shard0's oplog (8 entries) forgets `start`.
    for i in 10..30 {
        coll.insert_one(doc! {"_id": i, "k": i}).await.unwrap();
    }
    let err = coll
        .watch()
        .start_at_operation_time(start)
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 286),
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn post_batch_resume_token_through_mongos_never_skips_a_slower_shard() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let mut stream = coll.watch().await.unwrap();
    let mut seen = Vec::new();
    // Writers on both shards while the stream is read and resumed from its tokens.
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let k = if i % 3 == 0 { 200 + i } else { i };
                coll.insert_one(doc! {"_id": i, "k": k}).await.unwrap();
            }
        })
    };
    while seen.len() < 200 {
        let e = next(&mut stream).await;
        seen.push(e.document_key.unwrap().get_i32("_id").unwrap());
        if seen.len() % 25 == 0 {
            // Resume from the latest resume token (the driver's, which follows PBRTs).
            let token = stream.resume_token().unwrap();
            stream = coll.watch().resume_after(token).await.unwrap();
        }
    }
    writer.await.unwrap();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "each event once");
    s.stop().await;
}

#[tokio::test]
async fn a_transaction_reads_its_own_writes_on_every_shard() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    admin(&s, doc! {"split": "d.r", "middle": {"k": 100}}).await;
    admin(
        &s,
        doc! {"moveChunk": "d.r", "find": {"k": 100}, "to": "shard1"},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("r");
    let mut session = s.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    for (id, k) in [(1, 1), (2, 200)] {
        coll.insert_one(doc! {"_id": id, "k": k})
            .session(&mut session)
            .await
            .unwrap();
    }
    let inside = coll
        .count_documents(doc! {})
        .session(&mut session)
        .await
        .unwrap();
    assert_eq!(inside, 2);
    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        0,
        "not before commit"
    );
    session.commit_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    s.stop().await;
}

#[tokio::test]
async fn show_migration_events_is_refused() {
    let s = cluster(None).await;
    let err = s
        .client
        .database("d")
        .run_command(doc! {
            "aggregate": "r",
            "pipeline": [{"$changeStream": {"showMigrationEvents": true}}],
            "cursor": {},
        })
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 2),
        ref other => panic!("unexpected error {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn what_the_router_does_not_do_is_refused() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    let db = s.client.database("d");
    let code = |r: mongodb::error::Result<Document>| match *r.unwrap_err().kind {
        mongodb::error::ErrorKind::Command(ref c) => c.code,
        ref other => panic!("unexpected error {other:?}"),
    };
    let shard_key_update = db
        .run_command(doc! {"update": "r", "updates": [{"q": {"k": 1}, "u": {"$set": {"k": 2}}}]})
        .await;
    assert_eq!(code(shard_key_update), 20);
    let explain = db
        .run_command(doc! {"explain": {"find": "r", "filter": {}}})
        .await;
    assert_eq!(code(explain), 2);
    let collation = db
        .run_command(doc! {"find": "r", "collation": {"locale": "fr"}})
        .await;
    assert_eq!(code(collation), 2);
    s.stop().await;
}

/// A snapshot read of a sharded collection through mongos reads every shard at one cluster
/// time, said in the reply (an online re-copy through mongos depends on it), even while the
/// balancer moves chunks; a past `atClusterTime` is refused rather than answered from today's
/// chunk map, and `count` refuses snapshot as mongod does (72).
#[tokio::test]
async fn snapshot_reads_through_mongos_read_all_shards_at_one_time() {
    let s = cluster(Some(1)).await;
    admin(
        &s,
        doc! {"shardCollection": "d.snap", "key": {"_id": "hashed"}},
    )
    .await;
    let db = s.client.database("d");
    let coll = db.collection::<Document>("snap");
    coll.insert_many((0..200).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let find = doc! {"find": "snap", "batchSize": 1000, "readConcern": {"level": "snapshot"}};
    let mut last = None;
    for round in 0..20 {
        let reply = db.run_command(find.clone()).await.unwrap();
        let cursor = reply.get_document("cursor").unwrap();
        let t = cursor
            .get_timestamp("atClusterTime")
            .expect("a snapshot read through mongos says its time");
        assert!(last.is_none_or(|l| t >= l), "times never go back");
        last = Some(t);
        assert_eq!(
            cursor.get_array("firstBatch").unwrap().len(),
            200,
            "round {round}"
        );
    }
    let distinct = db
        .run_command(doc! {"distinct": "snap", "key": "_id", "readConcern": {"level": "snapshot"}})
        .await
        .unwrap();
    assert!(
        distinct.get_timestamp("atClusterTime").is_ok(),
        "{distinct}"
    );

    let code = |r: mongodb::error::Result<Document>| match *r.unwrap_err().kind {
        mongodb::error::ErrorKind::Command(ref c) => c.code,
        ref other => panic!("unexpected error {other:?}"),
    };
    coll.insert_one(doc! {"_id": 1000}).await.unwrap();
    let past = doc! {"find": "snap",
    "readConcern": {"level": "snapshot", "atClusterTime": Bson::Timestamp(last.unwrap())}};
    assert_eq!(code(db.run_command(past).await), 2);
    let count = doc! {"count": "snap", "readConcern": {"level": "snapshot"}};
    assert_eq!(code(db.run_command(count).await), 72);
    s.stop().await;
}

/// A random workload (inserts, replacements, deletes, two-document transactions) while the
/// balancer moves chunks: replaying the change stream through mongos rebuilds exactly the
/// documents mongos holds at the end (a migration event would delete or duplicate one).
#[tokio::test]
async fn replaying_the_stream_under_a_running_balancer_rebuilds_the_collection() {
    use std::collections::BTreeMap;
    let s = cluster(Some(2)).await;
    admin(
        &s,
        doc! {"shardCollection": "d.h", "key": {"_id": "hashed"}},
    )
    .await;
    let coll = s.client.database("d").collection::<Document>("h");
    let mut stream = coll.watch().await.unwrap();
    let before = chunks(&s).await;
    let client = s.client.clone();
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            let mut next_id = 0i32;
            let mut live: Vec<i32> = Vec::new();
            let mut ops = 0usize;
            let mut aborted = 0usize;
            for round in 0..400i32 {
                match round % 5 {
                    0 | 1 => {
                        coll.insert_one(doc! {"_id": next_id, "v": round})
                            .await
                            .unwrap();
                        live.push(next_id);
                        next_id += 1;
                        ops += 1;
                    }
                    2 if !live.is_empty() => {
                        let id = live[(round as usize * 7) % live.len()];
                        coll.replace_one(doc! {"_id": id}, doc! {"_id": id, "v": round})
                            .await
                            .unwrap();
                        ops += 1;
                    }
                    3 if live.len() > 3 => {
                        let id = live.remove((round as usize * 3) % live.len());
                        coll.delete_one(doc! {"_id": id}).await.unwrap();
                        ops += 1;
                    }
                    _ => {
                        // Retried as `with_transaction` does when a migration aborted it.
                        let mut session = client.start_session().await.unwrap();
                        loop {
                            session.start_transaction().await.unwrap();
                            for k in 0..2 {
                                coll.insert_one(doc! {"_id": next_id + k, "v": round})
                                    .session(&mut session)
                                    .await
                                    .unwrap();
                            }
                            match session.commit_transaction().await {
                                Ok(()) => break,
                                Err(e) if e.contains_label("TransientTransactionError") => {
                                    aborted += 1
                                }
                                Err(e) => panic!("commit failed: {e}"),
                            }
                        }
                        for _ in 0..2 {
                            live.push(next_id);
                            next_id += 1;
                            ops += 1;
                        }
                    }
                }
            }
            (ops, aborted)
        })
    };
    let (ops, aborted) = writer.await.unwrap();
    eprintln!("transactions aborted by a migration and retried: {aborted}");
    let mut model: BTreeMap<i32, Document> = BTreeMap::new();
    for _ in 0..ops {
        let e = next(&mut stream).await;
        let id = e.document_key.unwrap().get_i32("_id").unwrap();
        match e.operation_type {
            OperationType::Insert | OperationType::Replace => {
                model.insert(id, e.full_document.unwrap());
            }
            OperationType::Delete => {
                assert!(
                    model.remove(&id).is_some(),
                    "delete of a live document {id}"
                );
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    let mut cur = coll.find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
    let mut actual = BTreeMap::new();
    while let Some(d) = cur.next().await {
        let d = d.unwrap();
        actual.insert(d.get_i32("_id").unwrap(), d);
    }
    assert_eq!(model, actual);
    assert_ne!(chunks(&s).await, before, "the balancer moved chunks");
    s.stop().await;
}

#[tokio::test]
async fn split_with_find_divides_the_chunk_at_its_median_key() {
    let s = cluster(None).await;
    admin(&s, doc! {"shardCollection": "d.r", "key": {"k": 1}}).await;
    let coll = s.client.database("d").collection::<Document>("r");
    let docs: Vec<Document> = (0..10).map(|i| doc! {"_id": i, "k": i}).collect();
    coll.insert_many(docs).await.unwrap();
    admin(&s, doc! {"split": "d.r", "find": {"k": 3}}).await;
    let c = chunks(&s).await;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].get_document("max").unwrap(), &doc! {"k": 5});
    s.stop().await;
}
