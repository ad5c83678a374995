//! Helpers for tests, benchmarks and the CLI's sandbox (the `test-util` feature): never in a
//! Lambda.

pub mod fixtures;
pub mod oa_window;
