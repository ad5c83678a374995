//! Channel-neutral building blocks: the envelope (the contract with bots), the ports, retry
//! verdicts, shared access tokens, the config document walk, the callback frame and the one
//! HTTP client.

pub mod bot;
pub mod callback;
pub mod config;
pub mod envelope;
pub mod http;
pub mod media;
pub mod outbound;
pub mod policy;
pub mod ports;
pub mod retry;
pub mod tokens;
