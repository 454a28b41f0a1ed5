//! mongo-sim: an in-memory MongoDB replica-set simulator speaking the wire protocol.
pub mod aggregate;
pub mod bson_order;
pub mod query;
pub mod update;
