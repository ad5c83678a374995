//! Helpers for tests, benchmarks and the CLI's sandbox: compiled for the crate's own unit tests
//! and with the `test-util` feature, which no function crate enables.

pub mod fixtures;
pub mod oa_window;
