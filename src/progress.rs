//! Progress of long work (full sync, verify): indicatif bars when stderr is a terminal,
//! periodic structured log lines otherwise (SPEC "Command line": "Long work ... shows progress
//! bars when stderr is a terminal and periodic log lines otherwise").
//!
//! - **One set of bars per process.** Every bar is added to one `MultiProgress`, created the
//!   first time a bar is shown; the binary's log writer (`LogWriter`) prints each log line
//!   through it (`MultiProgress::suspend`), so a line written while bars are drawn lands above
//!   them instead of being torn through a half-drawn bar.
//! - **Log lines.** Without a terminal, one line per collection every `log_interval()` (10 s;
//!   `TRIBUTARY_PROGRESS_INTERVAL` seconds overrides it, docs/config.md) with the count, the
//!   estimated total, the percentage, the rate and the ETA, plus the whole job's figures.
//! - **Totals are estimates** (collection metadata, `estimatedDocumentCount`): a bar whose count
//!   passes its total grows the total rather than showing more than 100 %.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};

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

/// Seconds between two progress log lines of one collection, unless
/// `TRIBUTARY_PROGRESS_INTERVAL` says otherwise.
const DEFAULT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The environment variable that sets the log interval in seconds (decimals allowed; `0` logs
/// after every chunk, which tests use to see lines without waiting).
pub const INTERVAL_ENV: &str = "TRIBUTARY_PROGRESS_INTERVAL";

const COLLECTION_TEMPLATE: &str =
    "{prefix:<28} [{bar:30}] {pos}/{len} documents, {rate}, ETA {eta} {msg}";
const OVERALL_TEMPLATE: &str =
    "{prefix:<28} [{bar:30}] {pos}/{len} documents, {rate}, elapsed {elapsed}, ETA {eta} {msg}";

/// The process's bars, once any bar was shown.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(MultiProgress::new)
}

/// Adds a bar made elsewhere (a spinner, a countdown) to the process's bars, so log lines are
/// printed above it too. A bar drawn on its own is unknown to `LogWriter` and a log line can
/// land in the middle of it.
pub fn register(bar: ProgressBar) -> ProgressBar {
    bars().add(bar)
}

/// How often a collection logs its progress when there are no bars.
pub fn log_interval() -> Duration {
    static INTERVAL: OnceLock<Duration> = OnceLock::new();
    *INTERVAL.get_or_init(|| match std::env::var(INTERVAL_ENV) {
        Err(_) => DEFAULT_LOG_EVERY,
        Ok(text) => parse_interval(&text).unwrap_or_else(|| {
            tracing::warn!(variable = INTERVAL_ENV, value = %text, default_seconds = DEFAULT_LOG_EVERY.as_secs(), "The progress interval is not a number of seconds; using the default.");
            DEFAULT_LOG_EVERY
        }),
    })
}

/// Seconds (decimals allowed) as a duration; `None` for anything else, including a negative,
/// infinite or absurdly large number (`try_from`: refused, not a panic).
fn parse_interval(text: &str) -> Option<Duration> {
    let secs = text.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// The binary's log writer: stderr, above the bars while any are drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// For `tracing_subscriber::fmt().with_writer(progress::log_writer)`.
pub fn log_writer() -> LogWriter {
    LogWriter
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over one whole line per call; writing it in one piece while the
        // bars are cleared keeps the two from mixing.
        match BARS.get() {
            Some(bars) => bars.suspend(|| io::stderr().lock().write_all(buf))?,
            None => io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
        // Whole documents per second: indicatif's `{per_sec}` shows four decimals.
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} documents/s", state.per_sec());
            },
        )
}

/// Percentage of `done` in `total`, at most 100 (the total is an estimate).
fn percent(done: u64, total: Option<u64>) -> Option<f64> {
    let total = total.filter(|&t| t > 0)?;
    Some(((done as f64 * 1000.0 / total as f64).round() / 10.0).min(100.0))
}

/// Seconds left at `rate` documents per second, when a total is known.
fn eta_seconds(done: u64, total: Option<u64>, rate: f64) -> Option<f64> {
    total
        .filter(|&t| rate > 0.0 && t > done)
        .map(|t| ((t - done) as f64 / rate).round())
}

/// The progress display of one job (a full sync, a verify): what it is called in log lines,
/// and the whole job's count when a total is known for it.
pub struct Progress {
    job: &'static str,
    bars: bool,
    log: bool,
    overall: Option<Overall>,
}

/// The whole job: documents done of the sum of the collections' estimates.
#[derive(Clone)]
struct Overall {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    started: Instant,
}

impl Progress {
    /// `job` names the work in log lines ("Full sync", "Verify").
    pub fn new(job: &'static str, mode: ProgressMode) -> Progress {
        let bars = match mode {
            ProgressMode::Bars => true,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Log | ProgressMode::Off => false,
        };
        Progress {
            job,
            bars,
            log: !bars && mode != ProgressMode::Off,
            overall: None,
        }
    }

    /// Adds a bar (or log fields) for the whole job, of `total` documents (an estimate).
    pub fn with_overall(mut self, total: u64) -> Progress {
        let bar = self.bars.then(|| {
            let bar = bars().add(ProgressBar::new(total).with_style(style(OVERALL_TEMPLATE)));
            bar.set_prefix("overall");
            bar
        });
        self.overall = Some(Overall {
            bar,
            done: Arc::new(AtomicU64::new(0)),
            total: Arc::new(AtomicU64::new(total)),
            started: Instant::now(),
        });
        self
    }

    /// A bar (or log lines) for one collection of `total` documents (an estimate; `None` when
    /// unknown yet: `set_total` sets it later).
    pub fn collection(&self, namespace: &str, total: Option<u64>) -> CollectionProgress {
        let bar = self.bars.then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0)).with_style(style(COLLECTION_TEMPLATE));
            // Collections above the overall bar, in the order they start.
            let bar = match self.overall.as_ref().and_then(|o| o.bar.as_ref()) {
                Some(overall) => bars().insert_before(overall, bar),
                None => bars().add(bar),
            };
            bar.set_prefix(namespace.to_owned());
            bar
        });
        CollectionProgress {
            job: self.job,
            bar,
            log: self.log,
            overall: self.overall.clone(),
            namespace: namespace.to_owned(),
            done: 0,
            total,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    /// The whole job ended (finished or interrupted): the overall bar stops at its count.
    pub fn finish(&self) {
        if let Some(bar) = self.overall.as_ref().and_then(|o| o.bar.as_ref()) {
            bar.abandon();
        }
    }
}

/// Progress of one collection.
pub struct CollectionProgress {
    job: &'static str,
    bar: Option<ProgressBar>,
    log: bool,
    overall: Option<Overall>,
    namespace: String,
    done: u64,
    total: Option<u64>,
    started: Instant,
    last_log: Instant,
}

impl CollectionProgress {
    /// The collection's estimated document count (`None`: unknown, no percentage or ETA).
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        if let (Some(bar), Some(t)) = (&self.bar, total) {
            bar.set_length(t);
        }
    }

    /// Documents done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Time since the collection's progress began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// `n` more documents done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if self.total.is_some_and(|t| self.done > t) {
            // The estimate was low: grow the total (and the job's) rather than pass 100 %.
            let extra = self.done - self.total.unwrap_or(0);
            self.total = Some(self.done);
            if let Some(o) = &self.overall {
                let total = o.total.fetch_add(extra, Ordering::Relaxed) + extra;
                if let Some(bar) = &o.bar {
                    bar.set_length(total);
                }
            }
            if let Some(bar) = &self.bar {
                bar.set_length(self.done);
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
        if let Some(o) = &self.overall {
            o.done.fetch_add(n, Ordering::Relaxed);
            if let Some(bar) = &o.bar {
                bar.inc(n);
            }
        }
        if self.log && self.last_log.elapsed() >= log_interval() {
            self.last_log = Instant::now();
            self.log_line();
        }
    }

    fn log_line(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let (overall_documents, overall_total, overall_percent, overall_eta) = match &self.overall {
            Some(o) => {
                let done = o.done.load(Ordering::Relaxed);
                let total = Some(o.total.load(Ordering::Relaxed));
                let rate = done as f64 / o.started.elapsed().as_secs_f64().max(0.001);
                (
                    Some(done),
                    total,
                    percent(done, total),
                    eta_seconds(done, total, rate),
                )
            }
            None => (None, None, None, None),
        };
        tracing::info!(
            namespace = %self.namespace,
            documents = self.done,
            estimated_total = self.total,
            percent = percent(self.done, self.total),
            documents_per_second = rate.round(),
            eta_seconds = eta_seconds(self.done, self.total, rate),
            overall_documents,
            overall_estimated_total = overall_total,
            overall_percent,
            overall_eta_seconds = overall_eta,
            "{} in progress.",
            self.job
        );
    }

    /// A phase that is not counted in documents (row scans, rechecks).
    pub fn phase(&self, what: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what);
        }
        if self.log {
            tracing::debug!(namespace = %self.namespace, phase = what, "{} phase.", self.job);
        }
    }

    /// The collection is done; the bar stays with `verdict` next to it. The caller logs its
    /// own summary line.
    pub fn finish(&self, verdict: &'static str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(verdict);
        }
    }

    /// The collection stopped before its end; the bar stays where it stopped.
    pub fn abandon(&self, why: &'static str) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message(why);
        }
    }

    /// Whether this collection reports through log lines (no terminal).
    pub fn logs(&self) -> bool {
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_capped_and_absent_without_a_total() {
        assert_eq!(percent(50, Some(200)), Some(25.0));
        assert_eq!(percent(1, Some(3)), Some(33.3));
        assert_eq!(percent(300, Some(200)), Some(100.0));
        assert_eq!(percent(5, None), None);
        assert_eq!(percent(5, Some(0)), None);
    }

    #[test]
    fn the_interval_is_seconds_or_nothing() {
        assert_eq!(parse_interval("0"), Some(Duration::ZERO));
        assert_eq!(parse_interval(" 2.5 "), Some(Duration::from_millis(2500)));
        assert_eq!(parse_interval("-1"), None);
        assert_eq!(parse_interval("1e30"), None);
        assert_eq!(parse_interval("inf"), None);
        assert_eq!(parse_interval("10s"), None);
    }

    #[test]
    fn eta_needs_a_rate_and_work_left() {
        assert_eq!(eta_seconds(100, Some(300), 50.0), Some(4.0));
        assert_eq!(eta_seconds(300, Some(300), 50.0), None);
        assert_eq!(eta_seconds(100, Some(300), 0.0), None);
        assert_eq!(eta_seconds(100, None, 50.0), None);
    }

    #[test]
    fn a_low_estimate_grows_the_totals() {
        let progress = Progress::new("Test", ProgressMode::Off).with_overall(10);
        let mut c = progress.collection("db.c", Some(10));
        c.inc(8);
        c.inc(7);
        assert_eq!(c.done(), 15);
        assert_eq!(c.total, Some(15));
        let o = progress.overall.as_ref().map(|o| {
            (
                o.done.load(Ordering::Relaxed),
                o.total.load(Ordering::Relaxed),
            )
        });
        assert_eq!(o, Some((15, 15)));
    }
}
