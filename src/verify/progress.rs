//! Progress of a verify: one bar per collection when stderr is a terminal (documents checked of
//! the estimated total, rate, ETA), a log line every `crate::progress::log_interval()`
//! otherwise. The display itself is `crate::progress`, shared with the full sync; this file
//! gives it verify's words.

pub use crate::progress::ProgressMode;

/// The progress display of one verify.
pub struct Progress(crate::progress::Progress);

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress(crate::progress::Progress::new("Verify", mode))
    }

    /// A bar (or log lines) for one collection; `total` is an estimate and may change.
    pub fn collection(&self, namespace: &str) -> CollectionProgress {
        CollectionProgress {
            inner: self.0.collection(namespace, None),
            namespace: namespace.to_owned(),
        }
    }
}

/// Progress of one collection.
pub struct CollectionProgress {
    inner: crate::progress::CollectionProgress,
    namespace: String,
}

impl CollectionProgress {
    pub fn set_total(&mut self, total: Option<u64>) {
        self.inner.set_total(total);
    }

    /// `n` more documents checked.
    pub fn inc(&mut self, n: u64) {
        self.inner.inc(n);
    }

    /// A phase that is not counted in documents (row scans, rechecks).
    pub fn phase(&self, what: &'static str) {
        self.inner.phase(what);
    }

    pub fn finish(&self, equal: bool) {
        self.inner.finish(if equal { "equal" } else { "NOT equal" });
        if self.inner.logs() {
            tracing::info!(namespace = %self.namespace, checked = self.inner.done(), seconds = self.inner.elapsed().as_secs_f64(), equal, "Verify of the collection finished.");
        }
    }
}
