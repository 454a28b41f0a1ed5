//! Unit tests of the pipeline with a scripted source and an in-memory sink.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bson::{doc, Bson, Document, Timestamp};
use tokio::sync::oneshot;

use super::normalize::{normalize, Normalized};
use super::*;
use crate::event::{ChangeEvent, Namespace, Op, TxnId};
use crate::mapping::model::{CollectionMapping, ColumnMapping, FieldPath, OnError, PgType};
use crate::mapping::value::PgValue;
use crate::sink::Change;

fn mappings(on_error: OnError) -> Arc<MappingSet> {
    let col = |name: &str, source: &str, pg_type: PgType| ColumnMapping {
        name: name.into(),
        source: FieldPath::parse(source),
        pg_type,
    };
    let orders = CollectionMapping {
        database: "shop".into(),
        collection: "orders".into(),
        table: "orders".into(),
        columns: vec![
            col("id", "_id", PgType::Text),
            col("qty", "qty", PgType::Integer),
        ],
        extra_props: None,
        on_error,
        on_nul: crate::mapping::model::OnNul::default(),
        id_type: crate::mapping::model::IdType::default(),
        children: vec![],
    };
    let mut users = orders.clone();
    users.collection = "users".into();
    users.table = "users".into();
    Arc::new(MappingSet {
        collections: vec![orders, users],
    })
}

fn at(i: u32) -> Position {
    Position::Oplog {
        ts: Timestamp {
            time: 1000,
            increment: i,
        },
    }
}

fn ev(i: u32, op: Op, coll: &str, id: &str, doc: Option<Document>) -> ChangeEvent {
    ChangeEvent {
        op,
        namespace: Namespace::new("shop", coll),
        key: Some(Bson::String(id.into())),
        document: doc.map(|d| bson::RawDocumentBuf::from_document(&d).unwrap()),
        updated_paths: None,
        txn: None,
        cluster_time: Timestamp {
            time: 1000,
            increment: i,
        },
        position: at(i),
    }
}

fn upsert(i: u32, id: &str, qty: i32) -> ChangeEvent {
    ev(
        i,
        Op::Insert,
        "orders",
        id,
        Some(doc! {"_id": id, "qty": qty}),
    )
}

/// Serves scripted batches, then tells the test it has nothing more and waits forever.
struct ScriptedSource {
    batches: VecDeque<Result<Vec<ChangeEvent>, SourceError>>,
    drained: Option<oneshot::Sender<()>>,
}

impl ScriptedSource {
    fn new(batches: Vec<Vec<ChangeEvent>>) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            ScriptedSource {
                batches: batches.into_iter().map(Ok).collect(),
                drained: Some(tx),
            },
            rx,
        )
    }
}

impl Source for ScriptedSource {
    async fn next_batch(&mut self) -> Result<Vec<ChangeEvent>, SourceError> {
        if let Some(b) = self.batches.pop_front() {
            return b;
        }
        if let Some(tx) = self.drained.take() {
            let _ = tx.send(());
        }
        std::future::pending().await
    }
}

#[derive(Default)]
struct Recorded {
    batches: Vec<Batch>,
    failures_left: usize,
    fatal: bool,
}

/// Records applied batches; can fail the first `failures_left` applies (retryably).
#[derive(Clone, Default)]
struct MemorySink(Arc<Mutex<Recorded>>);

impl MemorySink {
    fn batches(&self) -> Vec<Batch> {
        self.0.lock().unwrap().batches.clone()
    }
}

impl Sink for MemorySink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut r = self.0.lock().unwrap();
        if r.fatal {
            return Err(SinkError::InvalidBatch("refused".into()));
        }
        if r.failures_left > 0 {
            r.failures_left -= 1;
            return Err(SinkError::Pool {
                detail: "connection lost".into(),
                retryable: true,
            });
        }
        r.batches.push(batch.clone());
        Ok(())
    }
}

fn config(rows: usize, wait_ms: u64) -> PipelineConfig {
    PipelineConfig::new("test", rows, wait_ms)
}

async fn after(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

fn upserted_keys(batch: &Batch) -> Vec<String> {
    batch
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert {
                key: PgValue::Text(k),
                ..
            } => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn shutdown_commits_everything_already_read_with_its_checkpoint() {
    let (source, drained) = ScriptedSource::new(vec![
        vec![upsert(1, "a", 1)],
        vec![upsert(2, "b", 2), upsert(3, "c", 3)],
    ]);
    let mut sink = MemorySink::default();
    // A long wait: only the shutdown can close the batch.
    let outcome = run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(100, 3_600_000),
        after(drained),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Shutdown {
            position: Some(at(3))
        }
    );
    let batches = sink.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(upserted_keys(&batches[0]), vec!["a", "b", "c"]);
    let cp = batches[0].checkpoint.as_ref().unwrap();
    assert_eq!(Position::from_checkpoint(cp).unwrap(), at(3));
    assert_eq!(cp.stream, "test");
}

#[tokio::test(start_paused = true)]
async fn batches_close_on_rows_and_each_checkpoints_its_last_event() {
    let events: Vec<Vec<ChangeEvent>> = (1..=5)
        .map(|i| vec![upsert(i, &format!("k{i}"), 1)])
        .collect();
    let (source, drained) = ScriptedSource::new(events);
    let mut sink = MemorySink::default();
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(2, 3_600_000),
        after(drained),
    )
    .await
    .unwrap();
    let batches = sink.batches();
    let sizes: Vec<usize> = batches.iter().map(|b| b.changes.len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let positions: Vec<Position> = batches
        .iter()
        .map(|b| Position::from_checkpoint(b.checkpoint.as_ref().unwrap()).unwrap())
        .collect();
    assert_eq!(positions, vec![at(2), at(4), at(5)]);
}

#[tokio::test(start_paused = true)]
async fn a_transaction_is_never_split_across_batches() {
    let txn = TxnId {
        lsid: doc! {"id": 1},
        txn_number: 7,
    };
    let mut t: Vec<ChangeEvent> = (2..=5).map(|i| upsert(i, &format!("t{i}"), 1)).collect();
    for e in &mut t {
        e.txn = Some(txn.clone());
        e.cluster_time = Timestamp {
            time: 1000,
            increment: 9,
        };
    }
    let (source, drained) =
        ScriptedSource::new(vec![vec![upsert(1, "x", 1)], t, vec![upsert(6, "y", 1)]]);
    let mut sink = MemorySink::default();
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(2, 3_600_000),
        after(drained),
    )
    .await
    .unwrap();
    let batches: Vec<Vec<String>> = sink.batches().iter().map(upserted_keys).collect();
    assert_eq!(batches, vec![vec!["x", "t2", "t3", "t4", "t5"], vec!["y"]]);
}

#[tokio::test(start_paused = true)]
async fn retryable_sink_errors_are_retried_with_the_same_batch() {
    let (source, drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1), upsert(2, "b", 1)]]);
    let mut sink = MemorySink::default();
    sink.0.lock().unwrap().failures_left = 3;
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(2, 10),
        after(drained),
    )
    .await
    .unwrap();
    let batches = sink.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(upserted_keys(&batches[0]), vec!["a", "b"]);
    assert_eq!(sink.0.lock().unwrap().failures_left, 0);
}

#[tokio::test(start_paused = true)]
async fn fatal_sink_errors_stop_the_pipeline() {
    let (source, _drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1)]]);
    let mut sink = MemorySink::default();
    sink.0.lock().unwrap().fatal = true;
    let r = run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(1, 10),
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(r, Err(PipelineError::Sink(SinkError::InvalidBatch(_)))),
        "{r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn source_errors_stop_the_pipeline_after_committing_what_was_read() {
    let (mut source, _drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1)]]);
    source.batches.push_back(Err(SourceError::HistoryLost {
        code: 286,
        message: "gone".into(),
    }));
    let mut sink = MemorySink::default();
    let r = run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(100, 3_600_000),
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(
            r,
            Err(PipelineError::Source(SourceError::HistoryLost {
                code: 286,
                ..
            }))
        ),
        "{r:?}"
    );
    assert_eq!(upserted_keys(&sink.batches()[0]), vec!["a"]);
}

/// Streams `bad` then a good insert under `on_error: dead_letter`; the one batch, whose only
/// upsert must be the good one.
async fn refused_then_good(bad: ChangeEvent) -> Batch {
    let (source, drained) = ScriptedSource::new(vec![vec![bad, upsert(2, "ok", 1)]]);
    let mut sink = MemorySink::default();
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(100, 10),
        after(drained),
    )
    .await
    .unwrap();
    let batch = sink.batches().remove(0);
    assert_eq!(upserted_keys(&batch), vec!["ok"]);
    batch
}

#[tokio::test(start_paused = true)]
async fn refused_documents_become_dead_letters_and_the_rest_proceeds() {
    let bad = ev(
        1,
        Op::Insert,
        "orders",
        "bad",
        Some(doc! {"_id": "bad", "qty": "many"}),
    );
    let batch = &refused_then_good(bad).await;
    assert_eq!(batch.dead_letters.len(), 1);
    let dl = &batch.dead_letters[0];
    assert_eq!(dl.namespace, "shop.orders");
    assert_eq!(dl.document_key, serde_json::json!("bad"));
    assert_eq!(
        dl.document,
        serde_json::json!({"_id": "bad", "qty": "many"})
    );
    assert!(dl.error.contains("qty"), "{}", dl.error);
    assert!(dl.cluster_time.is_some());
}

#[tokio::test(start_paused = true)]
async fn on_error_fail_stops_the_stream() {
    let bad = ev(
        1,
        Op::Insert,
        "orders",
        "bad",
        Some(doc! {"_id": "bad", "qty": "many"}),
    );
    let (source, _drained) = ScriptedSource::new(vec![vec![bad]]);
    let mut sink = MemorySink::default();
    let r = run(
        source,
        &mut sink,
        mappings(OnError::Fail),
        &config(100, 10),
        std::future::pending(),
    )
    .await;
    assert!(matches!(r, Err(PipelineError::Conversion(_))), "{r:?}");
    assert!(sink.batches().is_empty());
}

#[tokio::test(start_paused = true)]
async fn rename_onto_a_mapped_collection_asks_for_a_resync_after_committing() {
    let rename = ChangeEvent {
        op: Op::Rename {
            to: Namespace::new("shop", "users"),
        },
        key: None,
        document: None,
        updated_paths: None,
        ..ev(2, Op::Noop, "tmp", "", None)
    };
    let (source, _drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1)], vec![rename]]);
    let mut sink = MemorySink::default();
    let r = run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(100, 10),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(
        r,
        RunOutcome::Resync {
            collections: vec![1],
            position: Some(at(2))
        }
    );
    let changes: Vec<Change> = sink.batches().into_iter().flat_map(|b| b.changes).collect();
    assert_eq!(changes.last(), Some(&Change::Truncate { collection: 1 }));
}

#[tokio::test(start_paused = true)]
async fn idle_heartbeats_advance_the_checkpoint_without_changes() {
    let hb = |i| {
        ChangeEvent::noop(
            at(i),
            Timestamp {
                time: 1000,
                increment: i,
            },
        )
    };
    let (source, drained) = ScriptedSource::new(vec![vec![hb(1)], vec![hb(2)]]);
    let mut sink = MemorySink::default();
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(100, 3_600_000),
        after(drained),
    )
    .await
    .unwrap();
    let batches = sink.batches();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].changes.is_empty());
    assert_eq!(
        Position::from_checkpoint(batches[0].checkpoint.as_ref().unwrap()).unwrap(),
        at(2)
    );
}

#[test]
fn normalize_maps_each_operation() {
    let m = mappings(OnError::DeadLetter);
    let events = vec![
        upsert(1, "a", 1),
        // Deleted since: no document, and no change (its delete follows).
        ev(2, Op::Update, "orders", "gone", None),
        ev(3, Op::Delete, "orders", "a", None),
        ev(4, Op::Drop, "orders", "", None),
        // Unmapped namespace: ignored.
        ev(5, Op::Insert, "other", "z", Some(doc! {"_id": "z"})),
        ChangeEvent {
            op: Op::DropDatabase,
            namespace: Namespace::new("shop", ""),
            ..ev(6, Op::Noop, "", "", None)
        },
    ];
    let mut out = Normalized::default();
    normalize(&m, &events, &mut out).unwrap();
    assert_eq!(
        out.changes,
        vec![
            Change::Upsert {
                collection: 0,
                key: PgValue::Text("a".into()),
                rows: crate::sink::DocumentRows {
                    parent: vec![PgValue::Text("a".into()), PgValue::Int4(1)],
                    children: vec![],
                    id: serde_json::json!("a"),
                },
            },
            Change::Delete {
                collection: 0,
                key: PgValue::Text("a".into())
            },
            Change::Truncate { collection: 0 },
            Change::Truncate { collection: 0 },
            Change::Truncate { collection: 1 },
        ]
    );
    assert!(out.dead_letters.is_empty());
}

#[test]
fn updates_that_leave_child_arrays_alone_keep_their_child_rows() {
    let mut m = (*mappings(OnError::DeadLetter)).clone();
    m.collections[0].children = vec![crate::mapping::model::ChildMapping {
        table: "order_items".into(),
        source: FieldPath::parse("items"),
        parent_key: "order_id".into(),
        columns: vec![],
    }];
    let update = |i: u32, qty: Bson, paths: Option<Vec<&str>>| ChangeEvent {
        updated_paths: paths.map(|p| p.into_iter().map(str::to_owned).collect()),
        ..ev(
            i,
            Op::Update,
            "orders",
            "a",
            Some(doc! {"_id": "a", "qty": qty, "items": []}),
        )
    };
    let events = [
        update(1, Bson::Int32(1), Some(vec!["qty"])),
        update(2, Bson::Int32(2), Some(vec!["items.0"])),
        update(3, Bson::Int32(3), None),
        // Refused: the sink must learn that a's rows stay at an older version.
        update(4, Bson::String("many".into()), Some(vec!["qty"])),
    ];
    let mut out = Normalized::default();
    normalize(&m, &events, &mut out).unwrap();
    let kinds: Vec<&str> = out
        .changes
        .iter()
        .map(|c| match c {
            Change::UpsertParent { .. } => "parent",
            Change::Upsert { .. } => "full",
            Change::Refused { .. } => "refused",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["parent", "full", "full", "refused"]);
    assert_eq!(out.dead_letters.len(), 1);
}

#[test]
fn groups_keep_consecutive_transaction_events_together() {
    let txn = TxnId {
        lsid: doc! {"id": 1},
        txn_number: 1,
    };
    let mut a = upsert(1, "a", 1);
    let mut b = upsert(2, "b", 1);
    a.txn = Some(txn.clone());
    b.txn = Some(txn);
    b.cluster_time = a.cluster_time;
    let groups = group_transactions(vec![upsert(0, "x", 1), a, b, upsert(3, "y", 1)]);
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn metrics_report_lag_batches_and_events() {
    let metrics = Arc::new(crate::metrics::Metrics::new(30).unwrap());
    // An event from 1970: far behind until it is committed.
    let (source, drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1)]]);
    let mut sink = MemorySink::default();
    let mut cfg = config(100, 10);
    cfg.metrics = Some(metrics.clone());
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &cfg,
        after(drained),
    )
    .await
    .unwrap();
    // Lag counts only what is read but not committed (pipeline::lag): the 1970 event was
    // committed, so nothing is behind any more.
    assert_eq!(metrics.lag_seconds.get(), 0.0);
    assert_eq!(metrics.batches_total.get(), 1);
    assert_eq!(
        metrics
            .events_total
            .with_label_values(&["shop.orders", "insert"])
            .get(),
        1
    );
    assert_eq!(metrics.last_applied_cluster_time_seconds.get(), 1000.0);

    // Then only heartbeats: caught up.
    let hb = |i| {
        ChangeEvent::noop(
            at(i),
            Timestamp {
                time: 1000,
                increment: i,
            },
        )
    };
    let (source, drained) = ScriptedSource::new(vec![vec![hb(2)]]);
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &cfg,
        after(drained),
    )
    .await
    .unwrap();
    assert_eq!(metrics.lag_seconds.get(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_after_the_drain_deadline_when_postgres_keeps_failing() {
    let (source, drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1)]]);
    let mut sink = MemorySink::default();
    sink.0.lock().unwrap().failures_left = usize::MAX;
    let r = run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &config(100, 3_600_000),
        after(drained),
    )
    .await;
    assert!(
        matches!(r, Err(PipelineError::DrainTimeout(d)) if d == DRAIN_DEADLINE),
        "{r:?}"
    );
    assert!(sink.batches().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_document_that_is_not_valid_bson_is_dead_lettered_with_its_bytes() {
    let mut bytes = bson::to_vec(&doc! {"_id": "bad", "qty": "xy"}).unwrap();
    // The string length of `qty` ("xy" + NUL = 3) now runs past the document's end.
    let at = bytes.windows(4).position(|w| w == [3, 0, 0, 0]).unwrap();
    bytes[at] = 100;
    let mut bad = ev(1, Op::Insert, "orders", "bad", None);
    bad.document = Some(bson::RawDocumentBuf::from_bytes(bytes.clone()).unwrap());
    let batch = &refused_then_good(bad).await;
    let dl = &batch.dead_letters[0];
    assert_eq!(dl.document_key, serde_json::json!("bad"));
    use base64::Engine as _;
    assert_eq!(
        dl.document["bson_base64"],
        serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&bytes))
    );
    assert!(
        dl.document["unreadable_bson"].is_string(),
        "{}",
        dl.document
    );
    assert!(dl.error.contains("qty"), "{}", dl.error);
}

#[tokio::test(start_paused = true)]
async fn postgres_back_after_many_failures_is_written_to_within_a_second() {
    // Twelve failures in a row: on a backoff doubling from 100 ms the next try would come
    // about 25 s after Postgres is back (and the drain deadline would pass first); tried every
    // RETRY_EVERY, the batch goes in at the first try after the twelfth failure.
    let metrics = Arc::new(crate::metrics::Metrics::new(30).unwrap());
    let (source, drained) = ScriptedSource::new(vec![vec![upsert(1, "a", 1)]]);
    let mut sink = MemorySink::default();
    sink.0.lock().unwrap().failures_left = 12;
    let mut cfg = config(100, 10);
    cfg.metrics = Some(metrics.clone());
    let started = tokio::time::Instant::now();
    run(
        source,
        &mut sink,
        mappings(OnError::DeadLetter),
        &cfg,
        after(drained),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(sink.batches().len(), 1);
    assert!(
        took <= RETRY_EVERY * 12 + Duration::from_secs(1),
        "written {took:?} after the first failure"
    );
    // Reported (WARN and counted) on the backoff's schedule, not at every try.
    let counted = metrics
        .errors_total
        .with_label_values(&["postgres_pool"])
        .get();
    assert!((1..12).contains(&counted), "{counted} failures counted");
}

#[test]
fn an_unreadable_event_is_a_dead_letter_without_document() {
    let m = mappings(OnError::Fail);
    let reason = "the change event is over 16 MB".to_owned();
    let events = [
        ev(
            1,
            Op::Unreadable {
                reason: reason.clone(),
            },
            "orders",
            "a",
            None,
        ),
        // Not mapped: nothing.
        ev(
            2,
            Op::Unreadable {
                reason: reason.clone(),
            },
            "other",
            "b",
            None,
        ),
    ];
    let mut out = Normalized::default();
    // `on_error: fail` concerns conversions; an event nobody can read never stops the stream.
    normalize(&m, &events, &mut out).unwrap();
    assert!(out.changes.is_empty());
    assert_eq!(out.dead_letters.len(), 1);
}
