//! `--seed-demo N`: loads the `shop` demo database through the ordinary
//! insert path before the server listens, so the oplog (and therefore
//! change streams resuming from the start and oplog tailers) see it too.

use crate::node::state::Shared;
use crate::node::writes::{insert_one, LiveSink, LiveTarget};

pub fn load(shared: &Shared, orders: usize) {
    let next = {
        let mut st = shared.state();
        let st = &mut *st;
        let mut target = LiveTarget {
            catalog: &mut st.catalog,
            sink: LiveSink {
                oplog: &mut st.oplog,
                retry: None,
                // Nothing can have blocked writes before the server listens.
                writes_blocked: false,
                bypass_validation: false,
                history: &mut st.history,
                last_logged: None,
            },
        };
        let mut loaded = 0usize;
        for (db, coll, doc) in crate::seed::demo_documents(orders, 42) {
            match insert_one(&mut target, db, coll, doc) {
                Ok(()) => loaded += 1,
                Err(e) => tracing::warn!(db, coll, error = %e.errmsg, "demo document rejected"),
            }
        }
        tracing::info!(documents = loaded, "demo data loaded");
        st.oplog.next_seq()
    };
    shared.publish(next);
}
