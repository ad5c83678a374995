//! The `aibots` config section (WeCom AI bots in API mode) and `aibot_stream` (the polling window).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::config::{check_aes_key, check_name, check_token, invalid, keep, ConfigError, Document, ListSection};
use crate::protocol::crypto::{EncodingAesKey, MsgCrypt};

/// A WeCom AI bot created in API mode ("URL" connection).
#[derive(Debug, Clone)]
pub struct AiBot {
    /// The `{bot}` path segment of the callback URL.
    pub name: String,
    pub token: SecretString,
    pub encoding_aes_key: EncodingAesKey,
    /// The display name members @-mention; the mention is removed from the text.
    pub bot_name: String,
    /// The answer to `enter_chat` (a user opening the chat for the first time that day).
    pub welcome: Option<String>,
    /// The stream's content until the bot's first words (empty by default).
    pub placeholder: String,
}

impl AiBot {
    /// The callback crypto of this bot: an AI bot's receive id is empty.
    pub fn msg_crypt(&self) -> MsgCrypt {
        MsgCrypt::new(self.token.expose_secret(), &self.encoding_aes_key, "")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAiBot {
    name: String,
    token: SecretString,
    encoding_aes_key: SecretString,
    bot_name: String,
    #[serde(default)]
    welcome: Option<String>,
    #[serde(default)]
    placeholder: Option<String>,
}

/// A welcome or placeholder must fit one stream answer.
const MAX_TEXT_BYTES: usize = 2048;

impl ListSection for AiBot {
    const NAME: &'static str = "aibots";
    const KEY: &'static str = "name";
    type Raw = RawAiBot;

    fn from_raw(raw: RawAiBot, at: &dyn Fn(&str) -> String, p: &mut Vec<ConfigError>) -> Option<Self> {
        let token = keep(p, check_token(at("token"), &raw.token));
        let name = keep(p, check_name(at("name"), &raw.name));
        let key = keep(p, check_aes_key(at("encoding_aes_key"), &raw.encoding_aes_key));
        let bot_name = raw.bot_name.trim().trim_start_matches('@').to_owned();
        let mut ok = true;
        if bot_name.is_empty() {
            p.push(invalid(at("bot_name"), "must be the bot's display name (members @-mention it)"));
            ok = false;
        }
        for (field, text) in [("welcome", &raw.welcome), ("placeholder", &raw.placeholder)] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
                p.push(invalid(at(field), format!("must be at most {MAX_TEXT_BYTES} bytes")));
                ok = false;
            }
        }
        let (Some(()), Some(name), Some(encoding_aes_key), true) = (token, name, key, ok) else { return None };
        Some(AiBot {
            name,
            token: raw.token,
            encoding_aes_key,
            bot_name,
            welcome: raw.welcome.filter(|w| !w.is_empty()),
            placeholder: raw.placeholder.unwrap_or_default(),
        })
    }

    fn key(&self) -> &str {
        &self.name
    }
}

/// How long WeCom polls a stream, and how early the bridge finishes it and hands the rest of the
/// answer to the message's `response_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamWindow {
    /// WeCom stops polling this long after the user's message (documented: 6 minutes).
    pub window_s: u64,
    /// The stream is finished (handed over) this long before the window ends.
    pub margin_s: u64,
}

impl Default for StreamWindow {
    fn default() -> Self {
        Self { window_s: 360, margin_s: 30 }
    }
}

impl StreamWindow {
    /// From the message's arrival until the hand-over.
    pub fn hand_over_after(&self) -> Duration {
        Duration::from_secs(self.window_s.saturating_sub(self.margin_s))
    }

    /// The `aibot_stream` section, defaults for what it leaves out.
    pub fn from_document(doc: &mut Document) -> Self {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            window_s: Option<u64>,
            #[serde(default)]
            margin_s: Option<u64>,
        }
        let Some(raw) = doc.value::<Raw>("aibot_stream") else { return Self::default() };
        let defaults = Self::default();
        let w = Self {
            window_s: raw.window_s.unwrap_or(defaults.window_s),
            margin_s: raw.margin_s.unwrap_or(defaults.margin_s),
        };
        if !(2..=360).contains(&w.window_s) {
            doc.problem(invalid("aibot_stream.window_s", "must be 2 to 360 (WeCom polls a stream for 6 minutes)"));
        }
        if w.margin_s == 0 || w.margin_s >= w.window_s {
            doc.problem(invalid("aibot_stream.margin_s", "must be at least 1 and less than window_s"));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use crate::channels::Config;
    use crate::core::config::ConfigError;
    use crate::testing::fixtures::{WECOM_AES_KEY as KEY, WECOM_TOKEN as TOKEN};

    fn fields(json: &str) -> Vec<String> {
        Config::check(json)
            .unwrap_err()
            .into_iter()
            .map(|p| match p {
                ConfigError::Invalid { field, .. } => field,
                other => panic!("{other}"),
            })
            .collect()
    }

    #[test]
    fn reads_the_section_with_defaults() {
        let config = Config::parse(&format!(
            r#"{{"aibots": [{{"name": "ops", "token": "{TOKEN}", "encoding_aes_key": "{KEY}", "bot_name": "@DeployBot "}},
                            {{"name": "hr", "token": "{TOKEN}", "encoding_aes_key": "{KEY}", "bot_name": "HR 助手",
                              "welcome": "你好", "placeholder": "思考中…"}}]}}"#
        ))
        .unwrap();
        let (ops, hr) = (&config.aibots[0], &config.aibots[1]);
        assert_eq!((ops.name.as_str(), ops.bot_name.as_str()), ("ops", "DeployBot"));
        assert_eq!((ops.welcome.as_deref(), ops.placeholder.as_str()), (None, ""));
        assert_eq!((hr.welcome.as_deref(), hr.placeholder.as_str()), (Some("你好"), "思考中…"));
        assert_eq!(ops.msg_crypt().receive_id(), "", "an AI bot's receive id is empty");
        assert_eq!((config.aibot_stream.window_s, config.aibot_stream.margin_s), (360, 30));
        assert_eq!(config.aibot_stream.hand_over_after().as_secs(), 330);
    }

    #[test]
    fn names_each_broken_field_and_never_shows_secrets() {
        let json = format!(
            r#"{{"aibots": [{{"name": "a/b", "token": "x", "encoding_aes_key": "short-SECRETKEY", "bot_name": " @ "}},
                            {{"name": "ok", "token": "{TOKEN}", "encoding_aes_key": "{KEY}", "bot_name": "B", "placeholder": "{long}"}},
                            {{"name": "ok", "token": "{TOKEN}", "encoding_aes_key": "{KEY}", "bot_name": "B"}}],
                 "aibot_stream": {{"window_s": 400, "margin_s": 0}}}}"#,
            long = "x".repeat(3000)
        );
        let found = fields(&json);
        for want in [
            "aibots[0].name",
            "aibots[0].token",
            "aibots[0].encoding_aes_key",
            "aibots[0].bot_name",
            "aibots[1].placeholder",
            "aibot_stream.window_s",
            "aibot_stream.margin_s",
        ] {
            assert!(found.iter().any(|f| f == want), "{want} missing from {found:?}");
        }
        let message = Config::parse(&json).unwrap_err().to_string();
        assert!(!message.contains("SECRETKEY"), "{message}");
        assert!(
            fields(r#"{"aibot_stream": {"window_s": 60, "margin_s": 60}}"#).contains(&"aibot_stream.margin_s".into())
        );
        assert!(fields(r#"{"aibots": [{"name": "x"}]}"#).iter().any(|f| f.starts_with("aibots[0]")));
    }
}
