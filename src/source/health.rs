//! What a streaming source last heard from MongoDB, shared with whoever measures lag.
//!
//! A source only records facts here (the server answered; a request failed); the pipeline
//! decides what they mean (`pipeline::lag`). Lag needs this beside the events themselves:
//! while MongoDB does not answer, the source returns nothing at all (a `getMore` to a stopped
//! server simply hangs, and errors are retried inside the source), so silence can only be
//! seen as the age of the last answer.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// A cheap, cloneable handle: the source writes, the pipeline reads.
#[derive(Clone, Debug)]
pub struct SourceHealth(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    /// When the handle was created: a source that never answered has been silent since.
    created: Instant,
    /// When the server last answered a request of this source (a batch, empty or not).
    last_answer: Option<Instant>,
    /// The last request failed and no answer came since.
    failing: bool,
}

/// A snapshot of `SourceHealth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// The last answer, or when the source was created if it never answered.
    pub since: Instant,
    /// The server has answered at least once and the last request did not fail.
    pub answering: bool,
}

impl Default for SourceHealth {
    fn default() -> Self {
        SourceHealth(Arc::new(Mutex::new(State {
            created: Instant::now(),
            last_answer: None,
            failing: false,
        })))
    }
}

impl SourceHealth {
    /// The server answered a request (an empty awaited batch counts: it is the server saying
    /// "nothing newer").
    pub fn answered(&self) {
        let mut s = self.lock();
        s.last_answer = Some(Instant::now());
        s.failing = false;
    }

    /// A request failed (the source retries it); the last answer stays what it was.
    pub fn failed(&self) {
        self.lock().failing = true;
    }

    /// What was heard so far.
    pub fn heard(&self) -> Heard {
        let s = self.lock();
        Heard {
            since: s.last_answer.unwrap_or(s.created),
            answering: s.last_answer.is_some() && !s.failing,
        }
    }

    /// The state; a panic while it was held cannot leave it half-written (plain fields), so a
    /// poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
