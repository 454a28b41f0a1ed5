//! Progress of a verify: one indicatif bar per collection when stderr is a terminal (documents
//! checked of the estimated total, rate, ETA), a log line every ten seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    Bars,
    Log,
    /// Nothing (library callers with their own reporting, tests).
    Off,
}

/// How often a log line reports progress when there are no bars.
const LOG_EVERY: Duration = Duration::from_secs(10);

const TEMPLATE: &str = "{prefix:<28} [{bar:30}] {pos}/{len} documents, {per_sec}, ETA {eta} {msg}";

/// The progress display of one verify.
pub struct Progress {
    bars: Option<MultiProgress>,
    log: bool,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bars = match mode {
            ProgressMode::Bars => true,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Log | ProgressMode::Off => false,
        };
        Progress {
            bars: bars.then(MultiProgress::new),
            log: !bars && mode != ProgressMode::Off,
        }
    }

    /// A bar (or log lines) for one collection; `total` is an estimate and may change.
    pub fn collection(&self, namespace: &str) -> CollectionProgress {
        let bar = self.bars.as_ref().map(|m| {
            let style = ProgressStyle::with_template(TEMPLATE)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = m.add(ProgressBar::new(0).with_style(style));
            bar.set_prefix(namespace.to_owned());
            bar
        });
        CollectionProgress {
            bar,
            log: self.log,
            namespace: namespace.to_owned(),
            checked: 0,
            total: None,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }
}

/// Progress of one collection.
pub struct CollectionProgress {
    bar: Option<ProgressBar>,
    log: bool,
    namespace: String,
    checked: u64,
    total: Option<u64>,
    started: Instant,
    last_log: Instant,
}

impl CollectionProgress {
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        if let (Some(bar), Some(t)) = (&self.bar, total) {
            bar.set_length(t);
        }
    }

    /// `n` more documents checked.
    pub fn inc(&mut self, n: u64) {
        self.checked += n;
        if let Some(bar) = &self.bar {
            if self.total.is_some_and(|t| self.checked > t) {
                bar.set_length(self.checked);
            }
            bar.inc(n);
        }
        if self.log && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = self.checked as f64 / secs;
            let eta = self
                .total
                .filter(|&t| rate > 0.0 && t > self.checked)
                .map(|t| ((t - self.checked) as f64 / rate).round());
            tracing::info!(namespace = %self.namespace, checked = self.checked, estimated_total = self.total, documents_per_second = rate.round(), eta_seconds = eta, "Verify in progress.");
        }
    }

    /// A phase that is not counted in documents (row scans, rechecks).
    pub fn phase(&self, what: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what);
        }
        if self.log {
            tracing::debug!(namespace = %self.namespace, phase = what, "Verify phase.");
        }
    }

    pub fn finish(&self, equal: bool) {
        let verdict = if equal { "equal" } else { "NOT equal" };
        if let Some(bar) = &self.bar {
            bar.finish_with_message(verdict);
        }
        if self.log {
            tracing::info!(namespace = %self.namespace, checked = self.checked, seconds = self.started.elapsed().as_secs_f64(), equal, "Verify of the collection finished.");
        }
    }
}
