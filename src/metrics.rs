//! Every metric of SPEC "Metrics and health", by name, with its type and labels, and the HTTP
//! endpoint that serves them (`/metrics`, `/healthz`, `/readyz`).
//!
//! One `Metrics` value is created per process and shared (`Arc`) by the source, the pipeline and
//! the sink; each owns the updates of the metrics it is the authority for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::mapping::model::{CollectionMapping, MappingSet, OnError};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Gauge, no labels: 1 while the stream is healthy, 0 after a fatal error (e.g. lost history).
pub const UP: &str = "tributary_up";
/// Gauge, no labels: how far Postgres is behind MongoDB, in seconds (SPEC "Metrics"): 0 while
/// the source confirmed at its last answer that nothing newer than the committed position
/// exists; else the age of the oldest change read but not committed; while the source does
/// not answer, at least the time since it last did (`pipeline::lag`).
pub const LAG_SECONDS: &str = "tributary_lag_seconds";
/// Gauge, no labels: 1 while the streaming source's last request to MongoDB was answered
/// recently; 0 before streaming, after a failed request, or once MongoDB stays silent.
pub const SOURCE_CONNECTED: &str = "tributary_source_connected";
/// Gauge, no labels: seconds of history in `local.oplog.rs` (newest − oldest entry time); NaN
/// until read, and for good when the oplog cannot be read (no privilege, a `mongos`).
pub const OPLOG_WINDOW_SECONDS: &str = "tributary_oplog_window_seconds";
/// Gauge, no labels: seconds until the committed checkpoint falls off the oplog at the current
/// rate (docs/operations.md gives the formula); NaN when the oplog cannot be read, +Inf while
/// nothing falls off it.
pub const CHECKPOINT_HEADROOM_SECONDS: &str = "tributary_checkpoint_headroom_seconds";
/// Gauge, no labels: cluster time (Unix seconds) of the last committed position.
pub const LAST_APPLIED_CLUSTER_TIME_SECONDS: &str = "tributary_last_applied_cluster_time_seconds";
/// Counter, labels `namespace`, `op`: change events read from the source.
pub const EVENTS_TOTAL: &str = "tributary_events_total";
/// Counter, label `table`: rows written (upserted or deleted) per Postgres table.
pub const ROWS_WRITTEN_TOTAL: &str = "tributary_rows_written_total";
/// Counter, no labels: batches committed.
pub const BATCHES_TOTAL: &str = "tributary_batches_total";
/// Histogram, no labels: seconds from a batch's first write to its commit.
pub const BATCH_DURATION_SECONDS: &str = "tributary_batch_duration_seconds";
/// Histogram, no labels: changes per committed batch.
pub const BATCH_ROWS: &str = "tributary_batch_rows";
/// Gauge, no labels: events waiting in the bounded queues between source, batcher and sink.
pub const QUEUE_DEPTH: &str = "tributary_queue_depth";
/// Counter, label `namespace`: documents written to the dead-letter table.
pub const DEAD_LETTERS_TOTAL: &str = "tributary_dead_letters_total";
/// Counter, label `kind`: errors seen, retried or fatal (`kind` is a short class such as
/// `mongo_network`, `postgres_connection`, `history_lost`).
pub const ERRORS_TOTAL: &str = "tributary_errors_total";
/// Counter, label `namespace`: documents copied by full syncs.
pub const FULL_SYNC_DOCUMENTS_TOTAL: &str = "tributary_full_sync_documents_total";
/// Counter, labels `namespace`, `column`: values stored as NULL because they could not be
/// converted and the mapping says `on_error: null` (`column` is `table.column` for a child
/// table's column, the child table for a whole array, the `extra_props` column for it).
pub const NULLED_VALUES_TOTAL: &str = "tributary_nulled_values_total";
/// Counter, label `outcome` (`RELOAD_OUTCOMES`): mapping reloads asked by SIGHUP or
/// `tributary reload`.
pub const RELOADS_TOTAL: &str = "tributary_reloads_total";

/// Label keys (low cardinality only: namespaces and tables, never document ids).
pub const LABEL_NAMESPACE: &str = "namespace";
pub const LABEL_OP: &str = "op";
pub const LABEL_TABLE: &str = "table";
pub const LABEL_KIND: &str = "kind";
pub const LABEL_COLUMN: &str = "column";
pub const LABEL_OUTCOME: &str = "outcome";

/// Every `tributary_reloads_total{outcome}` value, each started at 0: the new mappings were
/// applied, or refused (invalid, or their tables could not be created) and the running ones kept.
pub const RELOAD_OUTCOMES: [&str; 2] = ["applied", "refused"];

/// Every `tributary_errors_total{kind}` value (docs/operations.md, "Error kinds"): each starts
/// at 0, so an alert on `increase(...)` or a dashboard panel has a series before the first
/// error. `SinkError::kind`, `source::error_kind` and `SyncError::uncounted_kind` return only
/// values listed here.
pub const ERROR_KINDS: [&str; 21] = [
    "mongo_network",
    "mongo_step_down",
    "mongo_timeout",
    "mongo_resumable",
    "history_lost",
    "mongo_fatal",
    "postgres_connection",
    "postgres_shutdown",
    "postgres_serialization",
    "postgres_deadlock",
    "postgres_busy",
    "postgres_pool",
    "postgres_value",
    "postgres_fatal",
    "postgres_config",
    "checkpoint_rewound",
    "lease_lost",
    "lease",
    "conversion",
    "config",
    "shutdown",
];

/// Every metric name served (the SPEC's and the health gauges), for tests and docs.
pub const ALL: [&str; 17] = [
    UP,
    LAG_SECONDS,
    SOURCE_CONNECTED,
    OPLOG_WINDOW_SECONDS,
    CHECKPOINT_HEADROOM_SECONDS,
    LAST_APPLIED_CLUSTER_TIME_SECONDS,
    EVENTS_TOTAL,
    ROWS_WRITTEN_TOTAL,
    BATCHES_TOTAL,
    BATCH_DURATION_SECONDS,
    BATCH_ROWS,
    QUEUE_DEPTH,
    DEAD_LETTERS_TOTAL,
    ERRORS_TOTAL,
    FULL_SYNC_DOCUMENTS_TOTAL,
    NULLED_VALUES_TOTAL,
    RELOADS_TOTAL,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("cannot listen for metrics on {addr} (metrics.listen / --metrics-addr): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The process's metrics. Cheap to clone handles; share it in an `Arc`.
pub struct Metrics {
    registry: Registry,
    pub up: IntGauge,
    pub lag_seconds: Gauge,
    pub source_connected: IntGauge,
    pub oplog_window_seconds: Gauge,
    pub checkpoint_headroom_seconds: Gauge,
    pub last_applied_cluster_time_seconds: Gauge,
    pub events_total: IntCounterVec,
    pub rows_written_total: IntCounterVec,
    pub batches_total: IntCounter,
    pub batch_duration_seconds: Histogram,
    pub batch_rows: Histogram,
    pub queue_depth: IntGauge,
    pub dead_letters_total: IntCounterVec,
    pub errors_total: IntCounterVec,
    pub full_sync_documents_total: IntCounterVec,
    pub nulled_values_total: IntCounterVec,
    /// Mapping reloads (SIGHUP, `tributary reload`), by `outcome`: `applied` or `refused`.
    pub reloads_total: IntCounterVec,
    /// True while streaming (not during full sync or after a fatal error); `/readyz` needs it.
    streaming: AtomicBool,
    ready_max_lag_secs: f64,
}

impl Metrics {
    pub fn new(ready_max_lag_secs: u64) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let up = IntGauge::new(UP, "1 while the stream is healthy, 0 after a fatal error")?;
        let lag_seconds = Gauge::new(
            LAG_SECONDS,
            "Seconds Postgres is behind MongoDB: 0 when the source confirmed nothing newer, else the age of the oldest uncommitted change, or the time since the source last answered",
        )?;
        let source_connected = IntGauge::new(
            SOURCE_CONNECTED,
            "1 while the streaming source's last request to MongoDB was answered recently",
        )?;
        let oplog_window_seconds = Gauge::new(
            OPLOG_WINDOW_SECONDS,
            "Seconds of history in local.oplog.rs (newest minus oldest entry); NaN when unreadable",
        )?;
        let checkpoint_headroom_seconds = Gauge::new(
            CHECKPOINT_HEADROOM_SECONDS,
            "Seconds until the committed checkpoint falls off the oplog at the current rate; NaN when unknown",
        )?;
        let last_applied = Gauge::new(
            LAST_APPLIED_CLUSTER_TIME_SECONDS,
            "Cluster time (Unix seconds) of the last committed position",
        )?;
        let events_total = IntCounterVec::new(
            Opts::new(EVENTS_TOTAL, "Change events read from the source"),
            &[LABEL_NAMESPACE, LABEL_OP],
        )?;
        let rows_written_total = IntCounterVec::new(
            Opts::new(ROWS_WRITTEN_TOTAL, "Rows written per Postgres table"),
            &[LABEL_TABLE],
        )?;
        let batches_total = IntCounter::new(BATCHES_TOTAL, "Batches committed")?;
        let batch_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                BATCH_DURATION_SECONDS,
                "Seconds to write and commit a batch",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new(BATCH_ROWS, "Changes per committed batch").buckets(vec![
                1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0,
            ]),
        )?;
        let queue_depth = IntGauge::new(QUEUE_DEPTH, "Events waiting in the pipeline's queues")?;
        let dead_letters_total = IntCounterVec::new(
            Opts::new(
                DEAD_LETTERS_TOTAL,
                "Documents written to the dead-letter table",
            ),
            &[LABEL_NAMESPACE],
        )?;
        let errors_total = IntCounterVec::new(
            Opts::new(ERRORS_TOTAL, "Errors seen, by kind (retried or fatal)"),
            &[LABEL_KIND],
        )?;
        let full_sync_documents_total = IntCounterVec::new(
            Opts::new(FULL_SYNC_DOCUMENTS_TOTAL, "Documents copied by full syncs"),
            &[LABEL_NAMESPACE],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(lag_seconds.clone()))?;
        registry.register(Box::new(source_connected.clone()))?;
        registry.register(Box::new(oplog_window_seconds.clone()))?;
        registry.register(Box::new(checkpoint_headroom_seconds.clone()))?;
        registry.register(Box::new(last_applied.clone()))?;
        registry.register(Box::new(events_total.clone()))?;
        registry.register(Box::new(rows_written_total.clone()))?;
        registry.register(Box::new(batches_total.clone()))?;
        registry.register(Box::new(batch_duration_seconds.clone()))?;
        registry.register(Box::new(batch_rows.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(dead_letters_total.clone()))?;
        registry.register(Box::new(errors_total.clone()))?;
        let nulled_values_total = IntCounterVec::new(
            Opts::new(
                NULLED_VALUES_TOTAL,
                "Values stored as NULL under on_error: null, by namespace and column",
            ),
            &[LABEL_NAMESPACE, LABEL_COLUMN],
        )?;
        registry.register(Box::new(full_sync_documents_total.clone()))?;
        registry.register(Box::new(nulled_values_total.clone()))?;
        let reloads_total = IntCounterVec::new(
            Opts::new(
                RELOADS_TOTAL,
                "Mapping reloads (SIGHUP or tributary reload), by outcome: applied or refused",
            ),
            &[LABEL_OUTCOME],
        )?;
        registry.register(Box::new(reloads_total.clone()))?;
        for outcome in RELOAD_OUTCOMES {
            reloads_total.with_label_values(&[outcome]);
        }
        for kind in ERROR_KINDS {
            errors_total.with_label_values(&[kind]);
        }
        up.set(1);
        // Unknown until the first read of the oplog: NaN compares false in PromQL, so an alert
        // on a small headroom cannot fire on a value never measured (0 would).
        oplog_window_seconds.set(f64::NAN);
        checkpoint_headroom_seconds.set(f64::NAN);
        Ok(Metrics {
            registry,
            up,
            lag_seconds,
            source_connected,
            oplog_window_seconds,
            checkpoint_headroom_seconds,
            last_applied_cluster_time_seconds: last_applied,
            events_total,
            rows_written_total,
            batches_total,
            batch_duration_seconds,
            batch_rows,
            queue_depth,
            dead_letters_total,
            errors_total,
            full_sync_documents_total,
            nulled_values_total,
            reloads_total,
            streaming: AtomicBool::new(false),
            ready_max_lag_secs: ready_max_lag_secs as f64,
        })
    }

    /// Creates every labelled series the mappings make known (Prometheus's advice: initialise
    /// known label values), at 0 unless already counted: events per namespace and operation,
    /// rows per table, dead letters, full-sync documents per namespace, and nulled values per
    /// column of the collections that say `on_error: null`. Error kinds start in `new`.
    pub fn start_labels(&self, mappings: &MappingSet) {
        for c in &mappings.collections {
            let ns = c.namespace();
            for op in crate::event::Op::LABELS {
                self.events_total.with_label_values(&[&ns, op]);
            }
            self.dead_letters_total.with_label_values(&[&ns]);
            self.full_sync_documents_total.with_label_values(&[&ns]);
            self.rows_written_total.with_label_values(&[&c.table]);
            for child in &c.children {
                self.rows_written_total.with_label_values(&[&child.table]);
            }
            if c.on_error == OnError::Null {
                for column in nullable_columns(c) {
                    self.nulled_values_total.with_label_values(&[&ns, &column]);
                }
            }
        }
    }

    /// Marks whether the process is in the streaming phase (vs full sync, or stopped).
    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Relaxed);
    }

    /// `/readyz`: streaming, healthy, and lag under `metrics.ready_max_lag_secs`.
    pub fn is_ready(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
            && self.up.get() == 1
            && self.lag_seconds.get() <= self.ready_max_lag_secs
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format; an error would only drop output.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The `column` labels a collection under `on_error: null` can count (the names
/// `Converted::nulled` uses): its columns but the key, the `extra_props` column, each child
/// table (a value that is not an array) and its columns as `table.column`.
fn nullable_columns(c: &CollectionMapping) -> Vec<String> {
    let key = c.key_index();
    let mut out: Vec<String> = c
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != key)
        .map(|(_, col)| col.name.clone())
        .collect();
    out.extend(c.extra_props.iter().cloned());
    for child in &c.children {
        out.push(child.table.clone());
        out.extend(
            child
                .columns
                .iter()
                .map(|col| format!("{}.{}", child.table, col.name)),
        );
    }
    out
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` resolves. Returns the
/// bound address (useful with port 0) once listening.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind {
        addr: addr.to_owned(),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn ready_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_spec_metric_once_labels_are_used() {
        let m = Metrics::new(30).unwrap();
        m.events_total
            .with_label_values(&["shop.orders", "insert"])
            .inc();
        m.rows_written_total.with_label_values(&["orders"]).inc();
        m.dead_letters_total
            .with_label_values(&["shop.orders"])
            .inc();
        m.errors_total.with_label_values(&["mongo_network"]).inc();
        m.full_sync_documents_total
            .with_label_values(&["shop.orders"])
            .inc();
        m.nulled_values_total
            .with_label_values(&["shop.orders", "qty"])
            .inc();
        let text = m.render();
        for name in ALL {
            assert!(text.contains(name), "{name} missing from /metrics output");
        }
    }

    #[test]
    fn health_gauges_start_disconnected_and_unknown() {
        let text = Metrics::new(30).unwrap().render();
        for line in [
            "tributary_source_connected 0",
            "tributary_oplog_window_seconds NaN",
            "tributary_checkpoint_headroom_seconds NaN",
            "tributary_lag_seconds 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn every_error_kind_starts_at_zero() {
        let text = Metrics::new(30).unwrap().render();
        for kind in ERROR_KINDS {
            let line = format!("{ERRORS_TOTAL}{{kind=\"{kind}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        for kind in [
            crate::sink::error::CHECKPOINT_REWOUND_KIND,
            crate::sink::error::LEASE_LOST_KIND,
        ] {
            assert!(ERROR_KINDS.contains(&kind), "{kind}");
        }
    }

    #[test]
    fn known_label_values_start_at_zero() {
        let yaml = "database: shop\ncollections:\n  orders:\n    on_error: \"null\"\n    columns:\n      - { name: id, source: _id, type: text }\n      - { name: qty, source: qty, type: integer }\n";
        let mappings = crate::mapping::load::load_str(yaml, std::path::Path::new("m.yml")).unwrap();
        let m = Metrics::new(30).unwrap();
        m.start_labels(&mappings);
        let text = m.render();
        for expected in [
            "tributary_events_total{namespace=\"shop.orders\",op=\"drop_database\"} 0",
            "tributary_rows_written_total{table=\"orders\"} 0",
            "tributary_dead_letters_total{namespace=\"shop.orders\"} 0",
            "tributary_nulled_values_total{column=\"qty\",namespace=\"shop.orders\"} 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}:\n{text}");
        }
    }

    #[test]
    fn ready_needs_streaming_up_and_small_lag() {
        let m = Metrics::new(30).unwrap();
        assert!(!m.is_ready(), "not ready before streaming starts");
        m.set_streaming(true);
        assert!(m.is_ready());
        m.lag_seconds.set(31.0);
        assert!(!m.is_ready(), "lag above the threshold");
        m.lag_seconds.set(0.0);
        m.up.set(0);
        assert!(!m.is_ready(), "down after a fatal error");
    }
}
