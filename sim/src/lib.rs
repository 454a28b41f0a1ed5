//! mongo-sim: an in-memory MongoDB replica-set simulator speaking the wire protocol.
pub mod bson_order;
