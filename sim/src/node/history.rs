//! Point-in-time versions of collections, for snapshot reads at a past `atClusterTime`.
//!
//! mongod keeps `minSnapshotHistoryWindowInSeconds` (300 by default) of history in the storage
//! engine and answers a read at any cluster time inside that window; older reads fail with 239
//! SnapshotTooOld. Here every live write leaves an undo record stamped with its oplog time:
//! which `_id` it put in place and which version it took away. A read at time T copies the
//! collection and undoes, newest first, every record of that collection after T. The replaced
//! versions are moved here rather than dropped, so keeping them costs no copy. Records go when
//! they leave the window, or when more than [`MAX_RECORDS`] are kept: like WiredTiger's oldest
//! timestamp, the history's start is one time for every collection.

use std::collections::VecDeque;

use bson::Timestamp;

use crate::bson_order::OrderedBson;
use crate::error::CommandError;
use crate::node::oplog::cmp_ts;
use crate::node::store::{Collection, StoredDoc};

/// mongod's default `minSnapshotHistoryWindowInSeconds`.
pub const WINDOW_SECS: u32 = 300;

/// The most undo records kept, whatever their age: a benchmark rewriting 1 KB documents at
/// 30,000 a second would otherwise hold gigabytes of old versions (mongod, too, cuts its
/// history short under cache pressure).
pub const MAX_RECORDS: usize = 200_000;

/// What one write changed in one collection.
#[derive(Debug, Clone)]
pub struct Change {
    /// The key the write put in place (insert, update), if any.
    pub now: Option<OrderedBson>,
    /// The version it took away (update, delete), if any.
    pub before: Option<Version>,
}

/// A document as it was, with its record id (its place in `$natural` order).
#[derive(Debug, Clone)]
pub struct Version {
    pub key: OrderedBson,
    pub doc: StoredDoc,
    pub rid: u64,
}

impl Change {
    pub fn inserted(key: OrderedBson) -> Self {
        Self {
            now: Some(key),
            before: None,
        }
    }

    /// `before` (stored under `key`, record `rid`) replaced by the document now under `now`.
    pub fn updated(now: OrderedBson, before: Version) -> Self {
        Self {
            now: Some(now),
            before: Some(before),
        }
    }

    pub fn deleted(before: Version) -> Self {
        Self {
            now: None,
            before: Some(before),
        }
    }
}

/// Every live write's undo record, oldest first.
#[derive(Debug)]
pub struct History {
    records: VecDeque<Record>,
    /// The newest time whose record is gone: no read before it can be rebuilt.
    horizon: Option<Timestamp>,
    window_secs: u32,
    max_records: usize,
}

#[derive(Debug)]
struct Record {
    ts: Timestamp,
    /// The collection's uuid (a dropped and recreated collection is another one).
    uuid: bson::Uuid,
    change: Change,
}

impl Default for History {
    fn default() -> Self {
        Self {
            records: VecDeque::new(),
            horizon: None,
            window_secs: WINDOW_SECS,
            max_records: MAX_RECORDS,
        }
    }
}

impl History {
    /// Remembers `change` to the collection `uuid`, made by the oplog entry at `ts`.
    pub fn record(&mut self, uuid: bson::Uuid, ts: Timestamp, change: Change) {
        let oldest = self.oldest_readable(ts);
        while let Some(first) = self.records.front() {
            if cmp_ts(first.ts, oldest).is_ge() && self.records.len() < self.max_records {
                break;
            }
            self.horizon = Some(first.ts);
            self.records.pop_front();
        }
        self.records.push_back(Record { ts, uuid, change });
    }

    /// The oldest cluster time a read may ask for when the newest is `now`: the window's start.
    fn oldest_readable(&self, now: Timestamp) -> Timestamp {
        Timestamp {
            time: now.time.saturating_sub(self.window_secs),
            increment: 0,
        }
    }

    /// `c` (collection `ns`) as it was at `at`, or 239 SnapshotTooOld when the history no
    /// longer reaches back that far.
    pub fn view_at(
        &self,
        ns: &str,
        c: &Collection,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<Collection, CommandError> {
        if cmp_ts(at, self.oldest_readable(now)).is_lt()
            || self.horizon.is_some_and(|h| cmp_ts(at, h).is_lt())
        {
            return Err(too_old(at, ns));
        }
        let mut view = c.clone();
        for r in self.records.iter().rev() {
            if cmp_ts(r.ts, at).is_le() {
                break;
            }
            if r.uuid != c.uuid {
                continue;
            }
            if let Some(key) = &r.change.now {
                view.remove(key);
            }
            if let Some(v) = &r.change.before {
                view.restore(v.key.clone(), v.doc.clone(), v.rid);
            }
        }
        Ok(view)
    }
}

/// mongod's refusal of a read older than its history window.
pub fn too_old(at: Timestamp, ns: &str) -> CommandError {
    CommandError::new(
        239,
        "SnapshotTooOld",
        format!(
            "Read timestamp Timestamp({}, {}) is older than the oldest available timestamp for {ns}",
            at.time, at.increment
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Bson};

    fn ts(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    fn key(i: i32) -> OrderedBson {
        OrderedBson(Bson::Int32(i))
    }

    fn ids(c: &Collection) -> Vec<(i32, i32)> {
        c.in_natural_order(false)
            .map(|(k, d)| {
                let x = d.doc().get_i32("x").unwrap_or(-1);
                (k.0.as_i32().unwrap_or(-1), x)
            })
            .collect()
    }

    /// Inserts 1, 2, 3 at t=100.1..3, updates 2 at 100.4, deletes 1 at 100.5, and checks
    /// each time in between against what was live then.
    #[test]
    fn a_view_undoes_every_write_after_its_time() {
        let mut h = History::default();
        let mut c = Collection::new(doc! {});
        for i in 1..=3 {
            c.put_new(key(i), doc! {"_id": i, "x": i * 10}.into());
            h.record(c.uuid, ts(100, i as u32), Change::inserted(key(i)));
        }
        let rid = c.record_id(&key(2)).unwrap();
        let old = c.replace(&key(2), key(2), doc! {"_id": 2, "x": 21}.into());
        let before = Version {
            key: key(2),
            doc: old.unwrap(),
            rid,
        };
        h.record(c.uuid, ts(100, 4), Change::updated(key(2), before));
        let rid = c.record_id(&key(1)).unwrap();
        let gone = c.remove(&key(1)).unwrap();
        let before = Version {
            key: key(1),
            doc: gone,
            rid,
        };
        h.record(c.uuid, ts(100, 5), Change::deleted(before));

        let now = ts(100, 5);
        let at = |t| ids(&h.view_at("d.c", &c, t, now).unwrap());
        assert_eq!(at(ts(100, 5)), vec![(2, 21), (3, 30)]);
        assert_eq!(at(ts(100, 4)), vec![(1, 10), (2, 21), (3, 30)]);
        assert_eq!(at(ts(100, 3)), vec![(1, 10), (2, 20), (3, 30)]);
        assert_eq!(at(ts(100, 1)), vec![(1, 10)]);
        assert_eq!(at(ts(99, 9)), Vec::<(i32, i32)>::new());
        // The live collection is untouched.
        assert_eq!(ids(&c), vec![(2, 21), (3, 30)]);
    }

    #[test]
    fn reads_before_the_window_or_a_pruned_record_are_too_old() {
        let mut h = History::default();
        let c = Collection::new(doc! {});
        h.record(c.uuid, ts(1000, 1), Change::inserted(key(1)));
        h.record(
            c.uuid,
            ts(1000 + WINDOW_SECS + 5, 1),
            Change::inserted(key(2)),
        );
        let now = ts(1000 + WINDOW_SECS + 5, 1);
        let err = h.view_at("d.c", &c, ts(1000, 1), now).unwrap_err();
        assert_eq!(err.code, 239);
        // Inside the window, after the pruned record: fine.
        assert!(h.view_at("d.c", &c, ts(1010, 0), now).is_ok());
    }

    #[test]
    fn past_the_record_cap_the_oldest_times_go() {
        let mut h = History {
            max_records: 3,
            ..History::default()
        };
        let c = Collection::new(doc! {});
        for i in 1..=5 {
            h.record(c.uuid, ts(100, i), Change::inserted(key(i as i32)));
        }
        let now = ts(100, 5);
        assert_eq!(h.view_at("d.c", &c, ts(100, 1), now).unwrap_err().code, 239);
        assert!(h.view_at("d.c", &c, ts(100, 2), now).is_ok());
    }
}
