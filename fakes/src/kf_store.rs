//! The fake's 微信客服 records (kf.rs serves them; the state holds them).

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

/// One kf account of the fake.
#[derive(Debug, Default)]
pub(crate) struct KfAccount {
    pub corp_id: String,
    /// Every item, oldest first.
    pub items: Vec<Value>,
    /// Callback tokens → when they expire.
    pub tokens: HashMap<String, Instant>,
    /// Welcome codes → (when they expire, used).
    pub welcome_codes: HashMap<String, (Instant, bool)>,
    /// Per customer: the last message's time and the sends since.
    pub customers: HashMap<String, (u64, u32)>,
    /// Empty pages with `has_more` 1 the next pulls answer first.
    pub empty_pages: usize,
    /// Session state per customer (absent: 0, new).
    pub states: HashMap<String, i64>,
    /// The msgids `send_msg` accepted (unique per account).
    pub msgids: std::collections::HashSet<String>,
}

/// The fake's 微信客服 state.
#[derive(Debug)]
pub(crate) struct KfState {
    pub accounts: HashMap<String, KfAccount>,
    pub page_size: usize,
    pub tokenless_pulls: usize,
}

impl Default for KfState {
    fn default() -> Self {
        Self { accounts: HashMap::new(), page_size: 1000, tokenless_pulls: 0 }
    }
}
