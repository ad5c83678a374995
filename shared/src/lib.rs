//! wxbridge's core: WeChat protocols, the message contract with bots, the ports the functions
//! need and their adapters.
//!
//! Layers, each importing only the ones before it:
//! [`protocol`] (pure crypto, XML, query strings) ← [`core`] (the envelope, ports, retry verdicts,
//! tokens, config walk, callback frame, HTTP client) ← [`channels`] (one folder per WeChat
//! product, and the registry) ← [`services`] (dispatcher, sender, bots) ← [`adapters`]
//! (DynamoDB, SQS, Secrets Manager, in-memory twins, Lambda glue, metrics).

// One audited exception: `protocol::crypto::into_string` after SIMD UTF-8 validation.
#![deny(unsafe_code)]

pub mod protocol;

pub mod core;

pub mod channels;

pub mod services;

pub mod adapters;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;
