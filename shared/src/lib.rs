//! wxbridge's core: WeChat protocols, the message contract with bots, the ports the functions
//! need and their adapters. Protocol code is pure; I/O lives behind the traits in [`ports`].

// One audited exception: `crypto::into_string` after SIMD UTF-8 validation.
#![deny(unsafe_code)]

pub mod api;
pub mod bots;
pub mod callback;
pub mod config;
pub mod crypto;
pub mod dispatcher;
pub mod envelope;
pub mod fields;
pub mod ilink;
pub mod memory;
pub mod oa;
pub mod outbound;
pub mod ports;
pub mod query;
pub mod sender;
pub mod tokens;
pub mod wecom;
pub mod xml;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "lambda")]
pub mod lambda;
