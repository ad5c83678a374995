//! The `ilink` config section: iLink bots (personal WeChat), as `wxbridge ilink login` writes them.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::config::{check_id, check_url, invalid, keep, ConfigError, ListSection};

/// An iLink bot (personal WeChat).
#[derive(Debug, Clone)]
pub struct IlinkAccount {
    pub account: String,
    pub bot_token: SecretString,
    pub base_url: String,
    /// The WeChat user who logged the bot in, when known.
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIlink {
    account: String,
    bot_token: SecretString,
    base_url: String,
    /// The WeChat user who logged the bot in (written by `wxbridge ilink login`).
    #[serde(default)]
    user_id: Option<String>,
}

impl ListSection for IlinkAccount {
    const NAME: &'static str = "ilink";
    const KEY: &'static str = "account";
    type Raw = RawIlink;

    fn from_raw(raw: RawIlink, at: &dyn Fn(&str) -> String, p: &mut Vec<ConfigError>) -> Option<Self> {
        let token = if raw.bot_token.expose_secret().is_empty() {
            p.push(invalid(at("bot_token"), "must not be empty"));
            None
        } else {
            Some(())
        };
        let id = keep(p, check_id(at("account"), &raw.account));
        let base_url = keep(p, check_url(at("base_url"), &raw.base_url));
        let (Some(()), Some(account), Some(base_url)) = (token, id, base_url) else { return None };
        Some(IlinkAccount { account, base_url, bot_token: raw.bot_token, user_id: raw.user_id })
    }

    fn key(&self) -> &str {
        &self.account
    }
}
