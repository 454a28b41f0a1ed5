//! The one integration-test binary: one `mod` per area, shared infrastructure in `support`.

mod support;

mod cli;
mod cutover;
mod e2e;
mod fuzz;
mod ops;
mod security;
mod sink;
mod stream;
mod verify;
