//! The `oa` config section (Official Accounts) and `oa_window` (how the 5-second window is
//! stretched).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::config::{
    check_aes_key, check_id, check_name, check_token, invalid, keep, ConfigError, Document, ListSection,
};
use crate::protocol::crypto::{EncodingAesKey, MsgCrypt};

/// An Official Account.
#[derive(Debug, Clone)]
pub struct OaApp {
    pub app: String,
    pub app_id: String,
    pub token: SecretString,
    /// Absent for accounts in plaintext mode.
    pub encoding_aes_key: Option<EncodingAesKey>,
    pub app_secret: Option<SecretString>,
}

impl OaApp {
    /// The callback crypto of this account (receive id = AppID), when it has an EncodingAESKey.
    pub fn msg_crypt(&self) -> Option<MsgCrypt> {
        self.encoding_aes_key.as_ref().map(|key| MsgCrypt::new(self.token.expose_secret(), key, &self.app_id))
    }

    /// The key of this account's shared access token.
    pub fn token_key(&self) -> String {
        format!("token#oa:{}", self.app_id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOaApp {
    app: String,
    app_id: String,
    token: SecretString,
    #[serde(default)]
    encoding_aes_key: Option<SecretString>,
    #[serde(default)]
    app_secret: Option<SecretString>,
}

impl ListSection for OaApp {
    const NAME: &'static str = "oa";
    const KEY: &'static str = "app";
    type Raw = RawOaApp;

    fn from_raw(raw: RawOaApp, at: &dyn Fn(&str) -> String, p: &mut Vec<ConfigError>) -> Option<Self> {
        let token = keep(p, check_token(at("token"), &raw.token));
        let key = match &raw.encoding_aes_key {
            Some(key) => keep(p, check_aes_key(at("encoding_aes_key"), key)).map(Some),
            None => Some(None),
        };
        let name = keep(p, check_name(at("app"), &raw.app));
        let app_id = keep(p, check_id(at("app_id"), &raw.app_id));
        let (Some(()), Some(encoding_aes_key), Some(app), Some(app_id)) = (token, key, name, app_id) else {
            return None;
        };
        Some(OaApp { app, app_id, token: raw.token, encoding_aes_key, app_secret: raw.app_secret })
    }

    fn key(&self) -> &str {
        &self.app
    }
}

/// How the Official Account's 5-second window is stretched across WeChat's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OaWindow {
    pub hold_ms: u64,
    pub answer_by_ms: u64,
    pub deliveries: u32,
}

impl Default for OaWindow {
    fn default() -> Self {
        Self { hold_ms: 5500, answer_by_ms: 4500, deliveries: 3 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOaWindow {
    #[serde(default)]
    hold_ms: Option<u64>,
    #[serde(default)]
    answer_by_ms: Option<u64>,
    #[serde(default)]
    deliveries: Option<u32>,
}

impl OaWindow {
    /// The `oa_window` section, defaults for what it leaves out.
    pub fn from_document(doc: &mut Document) -> Self {
        let Some(window) = doc.value::<RawOaWindow>("oa_window") else { return Self::default() };
        let defaults = Self::default();
        let w = Self {
            hold_ms: window.hold_ms.unwrap_or(defaults.hold_ms),
            answer_by_ms: window.answer_by_ms.unwrap_or(defaults.answer_by_ms),
            deliveries: window.deliveries.unwrap_or(defaults.deliveries),
        };
        if !(1..=4).contains(&w.deliveries) {
            doc.problem(invalid("oa_window.deliveries", "must be 1 to 4 (WeChat delivers a message at most 4 times)"));
        }
        if !(5001..=8000).contains(&w.hold_ms) {
            doc.problem(invalid(
                "oa_window.hold_ms",
                "must be 5001 to 8000: past WeChat's 5 s, so WeChat gives up on the held delivery, and well inside the function's 10 s",
            ));
        }
        if w.answer_by_ms >= 5000 {
            doc.problem(invalid("oa_window.answer_by_ms", "must be under 5000 (WeChat stops waiting after 5 s)"));
        }
        w
    }
}
