//! Shared test infrastructure: a process-wide Postgres server with a fresh database per test
//! (`postgres`), and a throwaway PKI for the TLS and X.509 tests (`pki`). Other areas add their
//! own modules here (e.g. a mongo-sim launcher).

#![allow(dead_code)]

// mongo-sim's driver tests own the module; this crate's tests use the same file.
#[path = "../../sim/tests/driver/pki.rs"]
pub mod pki;
pub mod postgres;

pub use postgres::{fresh_database, TestDb};

use std::time::Duration;

/// Polls `cond` every 20 ms until it holds; panics with `what` after `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
