//! The pipeline: source → bounded channel → batcher → sink.

pub mod batcher;
