//! The `wecom` config section: WeCom self-built apps.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::config::{check_aes_key, check_id, check_name, check_token, keep, ConfigError, ListSection};
use crate::protocol::crypto::{EncodingAesKey, MsgCrypt};

/// A WeCom self-built app.
#[derive(Debug, Clone)]
pub struct WecomApp {
    /// The `{app}` path segment of the callback URL.
    pub app: String,
    pub corp_id: String,
    pub agent_id: u32,
    pub token: SecretString,
    pub encoding_aes_key: EncodingAesKey,
    /// The app's secret, for sending; absent means receive-only.
    pub secret: Option<SecretString>,
}

impl WecomApp {
    /// The callback crypto of this app (receive id = CorpID).
    pub fn msg_crypt(&self) -> MsgCrypt {
        MsgCrypt::new(self.token.expose_secret(), &self.encoding_aes_key, &self.corp_id)
    }

    /// The key of this app's shared access token.
    pub fn token_key(&self) -> String {
        format!("token#wecom:{}:{}", self.corp_id, self.agent_id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWecomApp {
    app: String,
    corp_id: String,
    agent_id: u32,
    token: SecretString,
    encoding_aes_key: SecretString,
    #[serde(default)]
    secret: Option<SecretString>,
}

impl ListSection for WecomApp {
    const NAME: &'static str = "wecom";
    const KEY: &'static str = "app";
    type Raw = RawWecomApp;

    fn from_raw(raw: RawWecomApp, at: &dyn Fn(&str) -> String, p: &mut Vec<ConfigError>) -> Option<Self> {
        let token = keep(p, check_token(at("token"), &raw.token));
        let name = keep(p, check_name(at("app"), &raw.app));
        let corp_id = keep(p, check_id(at("corp_id"), &raw.corp_id));
        let key = keep(p, check_aes_key(at("encoding_aes_key"), &raw.encoding_aes_key));
        let (Some(()), Some(app), Some(corp_id), Some(encoding_aes_key)) = (token, name, corp_id, key) else {
            return None;
        };
        Some(WecomApp { app, corp_id, agent_id: raw.agent_id, token: raw.token, encoding_aes_key, secret: raw.secret })
    }

    fn key(&self) -> &str {
        &self.app
    }
}
