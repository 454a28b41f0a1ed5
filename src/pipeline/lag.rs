//! The health gauges of a streaming `sync`: `tributary_lag_seconds`,
//! `tributary_source_connected`, and the oplog's `tributary_oplog_window_seconds` and
//! `tributary_checkpoint_headroom_seconds`.
//!
//! Lag as SPEC defines it: 0 while the source confirmed, at its last answer, that nothing newer
//! than the committed position exists; otherwise the age of the oldest change read but not yet
//! committed; while the source does not answer, the time since it last did. Three inputs:
//! - the cluster times of event groups read but not committed (`Pending`: the source task
//!   records each group, each commit forgets the groups it covered);
//! - the source's heartbeats, which are the server's own "nothing newer" (an empty awaited
//!   batch) and reach the writer after everything read before them, so a heartbeat at the
//!   writer means every change the server has shown us is committed;
//! - when the server last answered at all (`SourceHealth`, recorded by the source itself,
//!   also inside its retries), so a stopped or unreachable MongoDB makes lag rise instead of
//!   freezing at its last value.
//!
//! A ticker publishes the result, so lag rises while a batch is stuck or the source is silent,
//! not only when something commits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::source::health::Heard;
use crate::source::SourceHealth;

/// How often the gauges are refreshed between commits.
const TICK: Duration = Duration::from_millis(250);

/// A source silent for longer than this "does not answer". An awaited `getMore` answers within
/// a second even when nothing happens (both sources ask for 1 s), so 3 s leaves room for a
/// busy server without reporting the ordinary wait as lag.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);

/// Cluster times (Unix seconds) of event groups read but not yet committed, oldest first, and
/// what the source last heard from MongoDB.
#[derive(Clone, Default)]
pub struct Pending {
    groups: Arc<Mutex<VecDeque<bson::Timestamp>>>,
    /// Groups committed so far (the catch-up display's rate).
    committed: Arc<std::sync::atomic::AtomicU64>,
    /// `None` for a source that talks to no server (tests): silence is then never lag.
    health: Option<SourceHealth>,
}

impl Pending {
    /// Lag for a source that reports what it hears in `health` (`Source::health`).
    pub fn watching(health: Option<SourceHealth>) -> Self {
        Pending {
            groups: Arc::default(),
            committed: Arc::default(),
            health,
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, VecDeque<bson::Timestamp>> {
        // Plain data: a panic while it was held cannot leave it half-written.
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A group with cluster time `t` was read.
    pub fn read(&self, t: bson::Timestamp) {
        self.groups().push_back(t);
    }

    /// Everything up to cluster time `t` is committed. Cluster times only grow in source
    /// order, so the committed groups are exactly the front ones at or before `t`. Compared
    /// with the increment, not by the second: a backlog written within one second is thousands
    /// of groups, and forgetting them all at the first commit made lag read 0 while most of
    /// the backlog was still to come.
    pub fn committed_through(&self, t: bson::Timestamp) {
        let mut q = self.groups();
        let mut done = 0;
        while q
            .front()
            .is_some_and(|&front| crate::position::ts_cmp(front, t).is_le())
        {
            q.pop_front();
            done += 1;
        }
        self.count_committed(done);
    }

    fn count_committed(&self, n: u64) {
        self.committed
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Groups committed since this `Pending` was made.
    pub fn committed_changes(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The source had nothing newer than what was committed: nothing is pending.
    pub fn caught_up(&self) {
        let mut q = self.groups();
        let n = q.len() as u64;
        q.clear();
        drop(q);
        self.count_committed(n);
    }

    /// The lag at `now_unix` (wall clock, for cluster times) and `now` (monotonic, for the
    /// source's silence).
    pub fn lag_seconds(&self, now_unix: i64, now: Instant) -> f64 {
        let oldest = self.groups().front().map(|t| t.time);
        let silent = self
            .health
            .as_ref()
            .map(|h| now.saturating_duration_since(h.heard().since));
        lag_seconds(oldest, now_unix, silent)
    }

    /// Publishes lag and `tributary_source_connected` now.
    pub fn publish(&self, metrics: &Metrics) {
        let now = Instant::now();
        metrics
            .lag_seconds
            .set(self.lag_seconds(chrono::Utc::now().timestamp(), now));
        if let Some(h) = &self.health {
            metrics
                .source_connected
                .set(i64::from(connected(h.heard(), now)));
        }
    }
}

/// SPEC's lag from its inputs: `oldest_uncommitted`, the cluster time (Unix seconds) of the
/// oldest change read but not committed; `silent_for`, how long ago the source last answered
/// (`None`: not known, never counted).
///
/// The age of the oldest uncommitted change is never less than the source's silence (the
/// change was read at or before the last answer), so the larger of the two is the lag in every
/// case: 0 when nothing is pending and the source answers, the change's age when one is, and
/// the silence while the source does not answer and nothing is pending (whatever it would
/// have said since is at most that old). A silence up to `SILENT_AFTER` is the ordinary wait
/// of an awaited `getMore`, not lag. A clock behind the cluster gives 0, never a negative lag.
pub fn lag_seconds(
    oldest_uncommitted: Option<u32>,
    now_unix: i64,
    silent_for: Option<Duration>,
) -> f64 {
    let behind = oldest_uncommitted.map_or(0.0, |t| (now_unix - i64::from(t)).max(0) as f64);
    let silent = silent_for
        .filter(|d| *d > SILENT_AFTER)
        .map_or(0.0, |d| d.as_secs_f64());
    behind.max(silent)
}

/// `tributary_source_connected`: the server has answered, the last request did not fail, and
/// the last answer is recent (`SILENT_AFTER`).
pub fn connected(heard: Heard, now: Instant) -> bool {
    heard.answering && now.saturating_duration_since(heard.since) <= SILENT_AFTER
}

/// Refreshes the gauges every `TICK` until `stop` turns true; then the source is no longer
/// connected (streaming stopped).
pub async fn tick(pending: Pending, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(TICK) => pending.publish(&metrics),
        }
    }
    metrics.source_connected.set(0);
}

/// How often `local.oplog.rs`'s oldest and newest entries are read.
const WINDOW_EVERY: Duration = Duration::from_secs(30);
/// The oldest entry's advance (the rate history falls off) is measured over up to this long.
const RATE_SPAN: Duration = Duration::from_secs(600);
/// Below this span of samples the rate is not measured yet and taken as 1 (a full oplog in
/// steady state loses one second of history per second).
const RATE_MIN_SPAN: Duration = Duration::from_secs(60);

/// Samples of the oplog's oldest entry time, for the rate history falls off at.
#[derive(Default)]
pub struct OplogSamples(VecDeque<(Instant, u32)>);

impl OplogSamples {
    /// Records the oldest entry's time (Unix seconds) seen at `at`, dropping samples older
    /// than `RATE_SPAN`.
    pub fn record(&mut self, at: Instant, first: u32) {
        self.0.push_back((at, first));
        while self
            .0
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > RATE_SPAN)
        {
            self.0.pop_front();
        }
    }

    /// Seconds of history lost per second of wall time over the samples kept; `None` while
    /// they span less than `RATE_MIN_SPAN`.
    pub fn falloff_rate(&self) -> Option<f64> {
        let (t0, f0) = *self.0.front()?;
        let (t1, f1) = *self.0.back()?;
        let span = t1.saturating_duration_since(t0);
        if span < RATE_MIN_SPAN {
            return None;
        }
        Some((f64::from(f1) - f64::from(f0)) / span.as_secs_f64())
    }
}

/// `tributary_checkpoint_headroom_seconds`: how long until the entry at the committed
/// checkpoint (`checkpoint`, Unix seconds) falls off the oplog whose oldest entry is at
/// `first`, if history keeps falling off at `rate` seconds per second (`None`: not measured,
/// taken as 1). The checkpoint is `checkpoint − first` seconds of history ahead of the oldest
/// entry, and that distance shrinks at `rate`: headroom = (checkpoint − first) / rate. Nothing
/// falling off (rate 0: the oplog is not full yet, or nothing is written) gives +Inf; a
/// checkpoint already behind the oldest entry gives that negative distance (history is lost).
pub fn headroom_seconds(checkpoint: u32, first: u32, rate: Option<f64>) -> f64 {
    let ahead = f64::from(checkpoint) - f64::from(first);
    if ahead < 0.0 {
        return ahead;
    }
    match rate.unwrap_or(1.0) {
        r if r <= 0.0 => f64::INFINITY,
        r => ahead / r,
    }
}

/// Reads the oplog's bounds every `WINDOW_EVERY` and publishes the window and the headroom of
/// the committed checkpoint (`tributary_last_applied_cluster_time_seconds`), until dropped.
/// Both stay NaN when the oplog cannot be read (a role without read on `local`, a `mongos`),
/// said once at WARN; other failures (MongoDB unreachable) keep the last values.
pub fn watch_oplog(client: mongodb::Client, metrics: Arc<Metrics>) -> OplogWatch {
    OplogWatch(tokio::spawn(async move {
        let mut samples = OplogSamples::default();
        let mut warned = false;
        loop {
            match crate::source::oplog::oplog_bounds(&client).await {
                Ok(Some((first, last))) => {
                    let now = Instant::now();
                    samples.record(now, first.time);
                    metrics
                        .oplog_window_seconds
                        .set(f64::from(last.time) - f64::from(first.time));
                    let checkpoint = metrics.last_applied_cluster_time_seconds.get();
                    metrics
                        .checkpoint_headroom_seconds
                        .set(if checkpoint > 0.0 {
                            headroom_seconds(checkpoint as u32, first.time, samples.falloff_rate())
                        } else {
                            f64::NAN
                        });
                }
                Ok(None) => {}
                Err(error)
                    if crate::source::classify(&error) == crate::source::ErrorClass::Fatal =>
                {
                    metrics.oplog_window_seconds.set(f64::NAN);
                    metrics.checkpoint_headroom_seconds.set(f64::NAN);
                    if !warned {
                        warned = true;
                        tracing::warn!(%error, "Cannot read local.oplog.rs, so tributary_oplog_window_seconds and tributary_checkpoint_headroom_seconds stay NaN; streaming is not affected. Grant read on the local database (or ignore this on a mongos).");
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "Reading the oplog's bounds failed; trying again later.");
                }
            }
            tokio::time::sleep(WINDOW_EVERY).await;
        }
    }))
}

/// The task of `watch_oplog`; dropping it stops the task.
pub struct OplogWatch(tokio::task::JoinHandle<()>);

impl Drop for OplogWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_uncommitted_group() {
        let p = Pending::default();
        let now = Instant::now();
        assert_eq!(p.lag_seconds(100, now), 0.0, "nothing read: caught up");
        let ts = |time, increment| bson::Timestamp { time, increment };
        p.read(ts(90, 1));
        p.read(ts(95, 1));
        assert_eq!(p.lag_seconds(100, now), 10.0);
        p.committed_through(ts(90, 1));
        assert_eq!(p.lag_seconds(100, now), 5.0);
        p.committed_through(ts(95, 1));
        assert_eq!(p.lag_seconds(100, now), 0.0);
        p.read(ts(99, 1));
        p.caught_up();
        assert_eq!(p.lag_seconds(100, now), 0.0);
        assert_eq!(p.committed_changes(), 3);
    }

    #[test]
    fn a_backlog_within_one_second_stays_lag_until_its_last_group_commits() {
        let p = Pending::default();
        let now = Instant::now();
        let ts = |increment| bson::Timestamp {
            time: 80,
            increment,
        };
        for i in 1..=1000 {
            p.read(ts(i));
        }
        p.committed_through(ts(50));
        assert_eq!(
            p.lag_seconds(100, now),
            20.0,
            "950 groups of that second are pending"
        );
        p.committed_through(ts(1000));
        assert_eq!(p.lag_seconds(100, now), 0.0);
        assert_eq!(p.committed_changes(), 1000);
    }

    #[test]
    fn a_silent_source_is_lag_and_a_waiting_one_is_not() {
        // Caught up, the source answered 1 s ago (an awaited getMore in flight): 0.
        assert_eq!(lag_seconds(None, 100, secs(1)), 0.0);
        assert_eq!(lag_seconds(None, 100, Some(SILENT_AFTER)), 0.0);
        // Silent for 12 s with nothing pending: the silence is the lag.
        assert_eq!(lag_seconds(None, 100, secs(12)), 12.0);
        // A change 20 s old is pending while the source is silent for 12 s: the change's age.
        assert_eq!(lag_seconds(Some(80), 100, secs(12)), 20.0);
        // A change 2 s old, the source silent for 7 s (it was read, then MongoDB stopped
        // answering before the next answer; the clocks differ): the larger.
        assert_eq!(lag_seconds(Some(98), 100, secs(7)), 7.0);
        // Unknown silence (no health handle) never counts.
        assert_eq!(lag_seconds(Some(95), 100, None), 5.0);
        // A clock behind the cluster never gives negative lag.
        assert_eq!(lag_seconds(Some(200), 100, secs(0)), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn lag_rises_while_the_source_is_silent_and_drops_when_it_answers() {
        let health = SourceHealth::default();
        let p = Pending::watching(Some(health.clone()));
        let metrics = Metrics::new(10).unwrap();
        metrics.set_streaming(true);
        health.answered();
        p.publish(&metrics);
        assert_eq!(metrics.lag_seconds.get(), 0.0);
        assert_eq!(metrics.source_connected.get(), 1);
        assert!(metrics.is_ready());

        tokio::time::advance(Duration::from_secs(2)).await;
        p.publish(&metrics);
        assert_eq!(
            metrics.lag_seconds.get(),
            0.0,
            "an awaited getMore is not lag"
        );
        assert_eq!(metrics.source_connected.get(), 1);

        tokio::time::advance(Duration::from_secs(13)).await;
        p.publish(&metrics);
        assert_eq!(metrics.lag_seconds.get(), 15.0, "silent for 15 s");
        assert_eq!(metrics.source_connected.get(), 0);
        assert!(!metrics.is_ready(), "lag above metrics.ready_max_lag_secs");

        health.answered();
        p.publish(&metrics);
        assert_eq!(metrics.lag_seconds.get(), 0.0);
        assert_eq!(metrics.source_connected.get(), 1);
        assert!(metrics.is_ready());

        health.failed();
        p.publish(&metrics);
        assert_eq!(metrics.source_connected.get(), 0, "the last request failed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_never_answered_is_silent_since_it_was_created() {
        let health = SourceHealth::default();
        let p = Pending::watching(Some(health));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(p.lag_seconds(0, Instant::now()), 5.0);
        assert!(!connected(
            p.health.as_ref().unwrap().heard(),
            Instant::now()
        ));
    }

    #[test]
    fn headroom_is_the_checkpoints_distance_from_the_oldest_entry_over_the_falloff_rate() {
        // Checkpoint 2 h ahead of the oldest entry, rate not measured yet (taken as 1).
        assert_eq!(headroom_seconds(10_000 + 7_200, 10_000, None), 7_200.0);
        // History falling off twice as fast as time passes (writes doubled): half.
        assert_eq!(headroom_seconds(17_200, 10_000, Some(2.0)), 3_600.0);
        // Nothing falls off (the oplog is not full): never.
        assert_eq!(headroom_seconds(17_200, 10_000, Some(0.0)), f64::INFINITY);
        // Already fell off: the negative distance, whatever the rate.
        assert_eq!(headroom_seconds(9_000, 10_000, Some(0.0)), -1_000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_falloff_rate_is_measured_over_the_samples_kept() {
        let mut s = OplogSamples::default();
        s.record(Instant::now(), 1_000);
        tokio::time::advance(Duration::from_secs(30)).await;
        s.record(Instant::now(), 1_030);
        assert_eq!(s.falloff_rate(), None, "30 s of samples: too short");
        tokio::time::advance(Duration::from_secs(90)).await;
        s.record(Instant::now(), 1_240);
        assert_eq!(
            s.falloff_rate(),
            Some(2.0),
            "240 s of history lost in 120 s"
        );
        // Samples older than RATE_SPAN are dropped: the rate follows the recent past.
        tokio::time::advance(Duration::from_secs(600)).await;
        s.record(Instant::now(), 1_240);
        tokio::time::advance(Duration::from_secs(60)).await;
        s.record(Instant::now(), 1_240);
        assert_eq!(s.falloff_rate(), Some(0.0));
    }
}
