//! The oplog window and a checkpoint's place in it: pure judgements, so their thresholds are
//! unit-tested without a server.
//!
//! The oplog is a capped collection: at a steady write rate it holds the last `window`
//! seconds, and an entry written at time `t` is removed once the newest entry reaches
//! `t + window`. A checkpoint at time `c` therefore falls off in `c − oldest` seconds (its
//! headroom), whatever the window; a stopped stream loses that much every second.

use bson::Timestamp;

use super::Level;
use crate::position::{timestamp_to_utc, ts_cmp};

/// Under this the window is too short for an operator to notice a stopped stream in time
/// (MongoDB's own advice for the oplog is at least a day).
pub const MIN_WINDOW_SECS: u32 = 24 * 3600;
/// Under this much headroom the checkpoint is about to fall off (the alert rule's bound).
pub const MIN_HEADROOM_SECS: u32 = 6 * 3600;

/// The oldest and newest entries of `local.oplog.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OplogWindow {
    pub oldest: Timestamp,
    pub newest: Timestamp,
}

impl OplogWindow {
    pub fn seconds(&self) -> u32 {
        self.newest.time.saturating_sub(self.oldest.time)
    }
}

/// The window's finding: a warning under a day.
pub fn judge_window(w: &OplogWindow) -> (Level, String) {
    let span = format!(
        "{} (oldest entry {}, newest {})",
        duration(w.seconds()),
        iso(w.oldest),
        iso(w.newest)
    );
    if w.seconds() < MIN_WINDOW_SECS {
        (
            Level::Warning,
            format!(
                "the oplog holds only {span}: a stream stopped for longer must copy everything again; size it for at least 24 h (replSetResizeOplog, or storage.oplogMinRetentionHours)"
            ),
        )
    } else {
        (Level::Ok, format!("the oplog holds {span}"))
    }
}

/// The checkpoint's finding: an error once its entry has left the oplog (a warning when the
/// stream copies again by itself), a warning when it is about to.
pub fn judge_checkpoint(
    stream: &str,
    checkpoint: Timestamp,
    w: &OplogWindow,
    resync_on_history_lost: bool,
) -> (Level, String) {
    if ts_cmp(checkpoint, w.oldest).is_lt() {
        let level = if resync_on_history_lost {
            Level::Warning
        } else {
            Level::Error
        };
        let next = if resync_on_history_lost {
            "sync will copy every collection again (sync.resync_on_history_lost = true)"
        } else {
            "sync will stop with ChangeStreamHistoryLost; run `tributary full-sync` (or set sync.resync_on_history_lost = true)"
        };
        return (
            level,
            format!(
                "history is lost: stream {stream:?}'s checkpoint ({}) is older than the oldest oplog entry ({}); {next}",
                iso(checkpoint),
                iso(w.oldest)
            ),
        );
    }
    let headroom = checkpoint.time.saturating_sub(w.oldest.time);
    let behind = w.newest.time.saturating_sub(checkpoint.time);
    if headroom < MIN_HEADROOM_SECS {
        (
            Level::Warning,
            format!(
                "history is about to be lost: stream {stream:?}'s checkpoint ({}, {} behind the newest entry) leaves the oplog in about {} at the current rate; start `tributary sync` now so it catches up, or enlarge the oplog",
                iso(checkpoint),
                duration(behind),
                duration(headroom)
            ),
        )
    } else {
        (
            Level::Ok,
            format!(
                "stream {stream:?}'s checkpoint ({}, {} behind the newest entry) stays in the oplog for about {} more at the current rate",
                iso(checkpoint),
                duration(behind),
                duration(headroom)
            ),
        )
    }
}

fn iso(ts: Timestamp) -> String {
    timestamp_to_utc(ts).map_or_else(
        || format!("{}:{}", ts.time, ts.increment),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn duration(secs: u32) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{:.1} h", f64::from(s) / 3600.0),
        s => format!("{:.1} days", f64::from(s) / 86400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    const DAY: u32 = 86_400;

    #[test]
    fn a_window_under_a_day_warns() {
        let base = 1_700_000_000;
        let short = OplogWindow {
            oldest: ts(base, 1),
            newest: ts(base + 3600, 1),
        };
        assert_eq!(judge_window(&short).0, Level::Warning);
        let long = OplogWindow {
            oldest: ts(base, 1),
            newest: ts(base + 3 * DAY, 1),
        };
        assert_eq!(judge_window(&long).0, Level::Ok);
    }

    #[test]
    fn a_checkpoint_is_lost_before_the_oldest_entry_and_at_risk_near_it() {
        let base = 1_700_000_000;
        let w = OplogWindow {
            oldest: ts(base, 5),
            newest: ts(base + 3 * DAY, 1),
        };
        // The oldest entry itself is still there to resume from.
        assert_ne!(
            judge_checkpoint("s", ts(base, 5), &w, false).0,
            Level::Error
        );
        let (lost, msg) = judge_checkpoint("s", ts(base, 4), &w, false);
        assert_eq!(lost, Level::Error);
        assert!(msg.contains("history is lost"), "{msg}");
        assert_eq!(
            judge_checkpoint("s", ts(base, 4), &w, true).0,
            Level::Warning
        );
        let (soon, msg) = judge_checkpoint("s", ts(base + 3600, 1), &w, false);
        assert_eq!(soon, Level::Warning);
        assert!(
            msg.contains("about to be lost") && msg.contains("60 min"),
            "{msg}"
        );
        assert_eq!(
            judge_checkpoint("s", ts(base + DAY, 1), &w, false).0,
            Level::Ok
        );
    }
}
