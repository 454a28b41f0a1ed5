//! Progress of `sync`'s catch-up after a (re)start: when the stream resumes from a checkpoint
//! that is well behind MongoDB, a spinner on a terminal (lag falling, changes/s) or a log line
//! every `progress::log_interval()`, then one line once it has caught up. A stream that starts
//! (nearly) caught up shows nothing.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::lag::Pending;
use crate::progress::{self, ProgressMode};

/// A stream less than this far behind (seconds) is not worth a progress display.
const BEHIND_SECS: f64 = 10.0;
/// At or under this lag (seconds), for `CAUGHT_UP_FOR`, the catch-up is over. Held for a
/// while because lag dips between two reads of the backlog, when all that was read is
/// committed and the next batch is still on its way.
const CAUGHT_UP_SECS: f64 = 2.0;
const CAUGHT_UP_FOR: Duration = Duration::from_secs(2);
/// The backlog's first changes arrive within this long of the start, or there is no backlog.
const LOOK_FOR: Duration = Duration::from_secs(30);
/// Short, so that a backlog applied within a second or two is still seen behind.
const EVERY: Duration = Duration::from_millis(100);

/// What a catch-up display shows at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub lag_seconds: f64,
    /// How long the lag has been at or under `CAUGHT_UP_SECS` without a break.
    pub low_for: Duration,
    /// Changes (event groups) committed since the stream started.
    pub changes: u64,
    pub elapsed: Duration,
}

impl Reading {
    pub fn changes_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.changes as f64 / secs
        } else {
            0.0
        }
    }

    fn message(&self) -> String {
        format!(
            "lag {:.0} s, {} changes applied, {:.0} changes/s",
            self.lag_seconds,
            self.changes,
            self.changes_per_second()
        )
    }
}

/// What the display does next, given whether it is showing and the newest reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not behind (yet): keep looking, until `LOOK_FOR` has passed.
    Wait,
    /// Behind: start the display (or keep it going).
    Show,
    /// Caught up after showing: say so and stop.
    Done,
    /// Never behind in the first `LOOK_FOR`: stop without a word.
    Quit,
}

pub fn step(showing: bool, r: &Reading) -> Step {
    match (showing, r.lag_seconds) {
        (true, lag) if lag <= CAUGHT_UP_SECS && r.low_for >= CAUGHT_UP_FOR => Step::Done,
        (true, _) => Step::Show,
        (false, lag) if lag >= BEHIND_SECS => Step::Show,
        (false, _) if r.elapsed >= LOOK_FOR => Step::Quit,
        (false, _) => Step::Wait,
    }
}

/// Watches the stream's lag until it has caught up, `stop` turns true, or there is nothing to
/// catch up.
pub async fn report(pending: Pending, mode: ProgressMode, mut stop: watch::Receiver<bool>) {
    let bars = match mode {
        ProgressMode::Off => return,
        ProgressMode::Bars => true,
        ProgressMode::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ProgressMode::Log => false,
    };
    let started = Instant::now();
    let first = pending.committed_changes();
    let mut bar: Option<ProgressBar> = None;
    let mut showing = false;
    let mut last_log: Option<Instant> = None;
    let mut low_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(EVERY) => {}
        }
        let lag = pending.lag_seconds(chrono::Utc::now().timestamp(), tokio::time::Instant::now());
        if lag > CAUGHT_UP_SECS {
            low_since = None;
        } else if low_since.is_none() {
            low_since = Some(Instant::now());
        }
        let reading = Reading {
            lag_seconds: lag,
            low_for: low_since.map_or(Duration::ZERO, |t| t.elapsed()),
            changes: pending.committed_changes().saturating_sub(first),
            elapsed: started.elapsed(),
        };
        match step(showing, &reading) {
            Step::Wait => continue,
            Step::Quit => return,
            Step::Show => {
                if !showing {
                    showing = true;
                    tracing::info!(lag_seconds = reading.lag_seconds.round(), "Catching up with MongoDB from the checkpoint; progress follows until the lag is under {CAUGHT_UP_SECS} s.");
                    if bars {
                        let b = progress::register(ProgressBar::new_spinner());
                        b.set_style(
                            ProgressStyle::with_template("{spinner} catching up: {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        b.enable_steady_tick(Duration::from_millis(200));
                        bar = Some(b);
                    }
                }
                match &bar {
                    Some(b) => b.set_message(reading.message()),
                    None if last_log.is_none_or(|t| t.elapsed() >= progress::log_interval()) => {
                        last_log = Some(Instant::now());
                        tracing::info!(
                            lag_seconds = reading.lag_seconds.round(),
                            changes = reading.changes,
                            changes_per_second = reading.changes_per_second().round(),
                            "Catching up."
                        );
                    }
                    None => {}
                }
            }
            Step::Done => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                tracing::info!(
                    seconds = reading.elapsed.as_secs(),
                    changes = reading.changes,
                    changes_per_second = reading.changes_per_second().round(),
                    "Caught up with MongoDB; streaming live."
                );
                return;
            }
        }
    }
    if let Some(b) = bar {
        b.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lag: f64, secs: u64) -> Reading {
        Reading {
            lag_seconds: lag,
            low_for: Duration::from_secs(3),
            changes: 100,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn shows_only_a_real_backlog_and_stops_once_caught_up() {
        assert_eq!(step(false, &at(0.0, 1)), Step::Wait);
        assert_eq!(step(false, &at(5.0, 1)), Step::Wait);
        assert_eq!(step(false, &at(0.0, 31)), Step::Quit);
        assert_eq!(step(false, &at(300.0, 2)), Step::Show);
        assert_eq!(step(true, &at(50.0, 20)), Step::Show);
        assert_eq!(step(true, &at(1.0, 40)), Step::Done);
        let dip = Reading {
            low_for: Duration::from_millis(300),
            ..at(0.0, 20)
        };
        assert_eq!(
            step(true, &dip),
            Step::Show,
            "a dip between two reads is not the end"
        );
    }

    #[test]
    fn rate_is_changes_over_elapsed() {
        let r = at(10.0, 4);
        assert_eq!(r.changes_per_second(), 25.0);
        assert!(r.message().contains("25 changes/s"), "{}", r.message());
    }
}
