//! Counts the document lookups change streams make for `fullDocument: updateLookup`, per
//! namespace. Each is a read of the source collection that MongoDB makes too (one per update
//! event); tests read the count (`SimHandle::update_lookups`) to prove that a client asking for
//! post-images (`whenAvailable`/`required` on a collection with `changeStreamPreAndPostImages`)
//! costs the source no lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::node::state::lock;

/// Lookups per namespace (`db.coll`), since the simulator started.
#[derive(Debug, Default)]
pub struct UpdateLookups {
    by_ns: Mutex<HashMap<String, u64>>,
}

impl UpdateLookups {
    /// Records one lookup of a document of `ns`.
    pub fn record(&self, ns: &str) {
        let mut by_ns = lock(&self.by_ns);
        let n = match by_ns.get_mut(ns) {
            Some(n) => n,
            None => by_ns.entry(ns.to_string()).or_insert(0),
        };
        *n += 1;
        tracing::debug!(ns, lookups = *n, "change stream updateLookup");
    }

    /// How many lookups of `ns` were made so far.
    pub fn count(&self, ns: &str) -> u64 {
        lock(&self.by_ns).get(ns).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_namespace() {
        let l = UpdateLookups::default();
        l.record("a.b");
        l.record("a.b");
        l.record("a.c");
        assert_eq!(l.count("a.b"), 2);
        assert_eq!(l.count("a.c"), 1);
        assert_eq!(l.count("x.y"), 0);
    }
}
