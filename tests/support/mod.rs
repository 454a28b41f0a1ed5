//! Shared test infrastructure: a process-wide Postgres server with a fresh database per test
//! (`postgres`). Other areas add their own modules here (e.g. a mongo-sim launcher).

#![allow(dead_code)]

pub mod postgres;

pub use postgres::{fresh_database, TestDb};
