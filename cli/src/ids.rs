//! Ids and the clock as the WeChat side makes them: message ids, random hex ids, unix time.

use std::time::{SystemTime, UNIX_EPOCH};

use shared::protocol::crypto::random_prefix;

/// A random message id (WeCom's and the Official Account's MsgId, iLink's message_id): 63 bits.
pub fn message_id() -> u64 {
    u64::from_be_bytes(random_prefix()[..8].try_into().unwrap_or([1; 8])) >> 1
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// 32 random hex digits: a message id, or a made-up `response_code`.
pub fn hex_id() -> String {
    shared::protocol::hex::hex(&random_prefix())
}
