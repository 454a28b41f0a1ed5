//! `tributary_lag_seconds` as SPEC defines it: the age of the oldest event read but not yet
//! committed, 0 when caught up. The source task records the cluster time of every real event
//! group it reads; each commit forgets the groups it covered; a ticker publishes the age of the
//! oldest one left, so lag rises while a batch is stuck (Postgres blocked, retries) instead of
//! only being known once it commits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often the gauge is refreshed between commits.
const TICK: Duration = Duration::from_millis(250);

/// Cluster times (Unix seconds) of event groups read but not yet committed, oldest first.
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<VecDeque<u32>>>);

impl Pending {
    /// A group with cluster time `t` (seconds) was read.
    pub fn read(&self, t: u32) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(t);
        }
    }

    /// Everything up to cluster time `t` is committed. Cluster times only grow in source
    /// order, so the committed groups are exactly the front ones with a time ≤ `t` (a later
    /// group within the same second is forgotten early: lag has one-second resolution anyway).
    pub fn committed_through(&self, t: u32) {
        if let Ok(mut q) = self.0.lock() {
            while q.front().is_some_and(|&front| front <= t) {
                q.pop_front();
            }
        }
    }

    /// The source had nothing newer than what was committed: nothing is pending.
    pub fn caught_up(&self) {
        if let Ok(mut q) = self.0.lock() {
            q.clear();
        }
    }

    /// Seconds since the oldest pending group's cluster time, or 0 when none is pending.
    pub fn lag_seconds(&self, now_unix: i64) -> f64 {
        let oldest = self.0.lock().ok().and_then(|q| q.front().copied());
        oldest.map_or(0.0, |t| (now_unix - i64::from(t)).max(0) as f64)
    }

    /// Publishes the lag now.
    pub fn publish(&self, metrics: &Metrics) {
        metrics
            .lag_seconds
            .set(self.lag_seconds(chrono::Utc::now().timestamp()));
    }
}

/// Refreshes the gauge every `TICK` until `stop` turns true.
pub async fn tick(pending: Pending, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(TICK) => pending.publish(&metrics),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_uncommitted_group() {
        let p = Pending::default();
        assert_eq!(p.lag_seconds(100), 0.0, "nothing read: caught up");
        p.read(90);
        p.read(95);
        assert_eq!(p.lag_seconds(100), 10.0);
        p.committed_through(90);
        assert_eq!(p.lag_seconds(100), 5.0);
        p.committed_through(95);
        assert_eq!(p.lag_seconds(100), 0.0);
        p.read(99);
        p.caught_up();
        assert_eq!(p.lag_seconds(100), 0.0);
    }

    #[test]
    fn a_clock_behind_the_cluster_never_gives_negative_lag() {
        let p = Pending::default();
        p.read(200);
        assert_eq!(p.lag_seconds(100), 0.0);
    }
}
