//! One replica-set member: storage, the oplog, cursors, change streams, transactions' writes
//! and what the server keeps per node (sessions, fail points, retryable writes). Nothing here
//! imports the front or the router.

pub(crate) mod capped;
pub(crate) mod clock;
pub(crate) mod cursor;
pub(crate) mod failpoint;
pub(crate) mod history;
pub(crate) mod lookups;
pub(crate) mod migration;
pub(crate) mod oplog;
pub(crate) mod retry;
pub(crate) mod scan;
pub(crate) mod split;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod stream;
pub(crate) mod tail;
pub(crate) mod validation;
pub(crate) mod write_block;
pub(crate) mod writes;
