//! Unit tests of the pipeline with a scripted source and an in-memory sink.
