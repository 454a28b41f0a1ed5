//! The cluster clock: the one source of oplog optimes for every node of a sharded cluster, so
//! cluster times are consistent across shards and events merge by time into one total order.
//! A lone replica set owns a clock of its own.
//!
//! Nodes draw a time while holding their own state lock: once a reader holds that lock, every
//! time the node drew before is in its oplog, and every later one is above `now()`.

use std::sync::Mutex;

use bson::Timestamp;

#[derive(Debug)]
pub struct ClusterClock {
    last: Mutex<Timestamp>,
}

impl Default for ClusterClock {
    fn default() -> Self {
        Self {
            last: Mutex::new(Timestamp {
                time: 0,
                increment: 0,
            }),
        }
    }
}

impl ClusterClock {
    /// The next optime: wall-clock seconds, increment restarting each second.
    pub fn tick(&self) -> Timestamp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let mut last = crate::node::state::lock(&self.last);
        *last = if now > last.time {
            Timestamp {
                time: now,
                increment: 1,
            }
        } else {
            Timestamp {
                time: last.time,
                increment: last.increment + 1,
            }
        };
        *last
    }

    /// The latest time drawn.
    pub fn now(&self) -> Timestamp {
        *crate::node::state::lock(&self.last)
    }
}
