//! Configuration: one JSON document for every account, plus a few environment variables for
//! resource names. Loaded once, typed, and fails fast with a message naming the field.
//!
//! This is the only module that reads the process environment.

use std::collections::HashSet;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::protocol::crypto::{EncodingAesKey, MsgCrypt};

/// Why the configuration cannot be used. The message names the field or variable, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("config: cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("environment: {name} is not set ({purpose})")]
    MissingEnv { name: &'static str, purpose: &'static str },
    #[error("environment: set {file} (a config file) or {secret} (a Secrets Manager secret)")]
    NoSource { file: &'static str, secret: &'static str },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

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
}

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
}

/// An iLink bot (personal WeChat).
#[derive(Debug, Clone)]
pub struct IlinkAccount {
    pub account: String,
    pub bot_token: SecretString,
    pub base_url: String,
    /// The WeChat user who logged the bot in, when known.
    pub user_id: Option<String>,
}

/// A WeCom group robot (webhook).
#[derive(Debug, Clone)]
pub struct Robot {
    pub name: String,
    pub key: SecretString,
}

/// Which bot answers inbound messages.
#[derive(Debug, Clone, Default)]
pub enum BotConfig {
    #[default]
    Echo,
    Http {
        url: String,
        secret: SecretString,
    },
    OpenAi {
        base_url: String,
        api_key: SecretString,
        model: String,
        system_prompt: Option<String>,
    },
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

/// Callbacks whose timestamp is further than this from now are refused (seconds; 0 = off).
/// WeChat retries within ~15 s and clocks drift, so minutes are safe.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub wecom: Vec<WecomApp>,
    pub oa: Vec<OaApp>,
    pub ilink: Vec<IlinkAccount>,
    pub robots: Vec<Robot>,
    pub bot: BotConfig,
    pub oa_window: OaWindow,
    pub replay_window_secs: u64,
}

// The document as written, section by section (`Config::check` reads each on its own, so that
// a problem in one does not hide the others); `from_raw` turns it into the typed form.
#[derive(Default)]
struct RawConfig {
    wecom: Vec<RawWecomApp>,
    oa: Vec<RawOaApp>,
    ilink: Vec<RawIlink>,
    robots: Vec<RawRobot>,
    bot: Option<RawBot>,
    oa_window: Option<RawOaWindow>,
    replay_window_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWecomApp {
    app: String,
    corp_id: String,
    agent_id: u32,
    token: SecretString,
    encoding_aes_key: SecretString,
    #[serde(default)]
    secret: Option<SecretString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOaApp {
    app: String,
    app_id: String,
    token: SecretString,
    #[serde(default)]
    encoding_aes_key: Option<SecretString>,
    #[serde(default)]
    app_secret: Option<SecretString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIlink {
    account: String,
    bot_token: SecretString,
    base_url: String,
    /// The WeChat user who logged the bot in (written by `wxbridge ilink login`).
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRobot {
    name: String,
    key: SecretString,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawBot {
    Echo,
    Http {
        url: String,
        secret: SecretString,
    },
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
        api_key: SecretString,
        model: String,
        #[serde(default)]
        system_prompt: Option<String>,
    },
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

/// `{app}` is a URL path segment: keep it plain.
fn check_name(field: String, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(field, "must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'"))
    }
}

fn check_token(field: String, token: &SecretString) -> Result<(), ConfigError> {
    let t = token.expose_secret();
    if (3..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(invalid(field, "must be 3-32 letters or digits (the Token from the admin console)"))
    }
}

fn check_aes_key(field: String, key: &SecretString) -> Result<EncodingAesKey, ConfigError> {
    let len = key.expose_secret().len();
    EncodingAesKey::parse(key.expose_secret()).map_err(|_| {
        invalid(field, format!("must be the 43-character EncodingAESKey from the admin console (got {len} characters)"))
    })
}

fn check_id(field: String, id: &str) -> Result<String, ConfigError> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(id.to_owned())
    } else {
        Err(invalid(field, "must be a non-empty id without spaces"))
    }
}

fn check_url(field: String, url: &str) -> Result<String, ConfigError> {
    if (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > 8
        && !url.contains(char::is_whitespace)
    {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(field, "must be an http(s):// URL"))
    }
}

fn check_unique<'a>(section: &str, key: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(invalid(format!("{section}[{i}].{key}"), format!("'{name}' is used twice")));
        }
    }
    Ok(())
}

impl Config {
    /// Parses and validates the JSON document; the first problem is the error.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        Self::check(json).map_err(|mut problems| problems.remove(0))
    }

    /// Parses and validates the JSON document, naming every problem (never an empty list).
    pub fn check(json: &str) -> Result<Self, Vec<ConfigError>> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|err| vec![invalid("(document)", redact_serde_message(&err.to_string()))])?;
        let serde_json::Value::Object(top) = value else {
            return Err(vec![invalid("(document)", "must be a JSON object")]);
        };
        let mut problems = Vec::new();
        let p = &mut problems;
        let mut raw = RawConfig::default();
        for (key, value) in top {
            match key.as_str() {
                "wecom" => raw.wecom = elements(&key, value, p),
                "oa" => raw.oa = elements(&key, value, p),
                "ilink" => raw.ilink = elements(&key, value, p),
                "robots" => raw.robots = elements(&key, value, p),
                "bot" => raw.bot = deserialize_at(&key, value, p),
                "oa_window" => raw.oa_window = deserialize_at(&key, value, p),
                "replay_window_secs" => raw.replay_window_secs = deserialize_at(&key, value, p),
                _ => p.push(invalid(
                    key,
                    "unknown field (expected wecom, oa, ilink, robots, bot, oa_window or replay_window_secs)",
                )),
            }
        }
        let config = Self::from_raw(raw, p);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::Read { path: path.display().to_string(), reason: err.to_string() })?;
        Self::parse(&text)
    }

    fn from_raw(raw: RawConfig, p: &mut Vec<ConfigError>) -> Config {
        let replay_window_secs = raw.replay_window_secs.unwrap_or(DEFAULT_REPLAY_WINDOW_SECS);
        // Beyond the dedupe markers' lifetime a replayed callback would be published again.
        let dedupe_ttl = crate::core::ports::DEDUPE_TTL.as_secs();
        if replay_window_secs != 0 && !(60..=dedupe_ttl).contains(&replay_window_secs) {
            p.push(invalid("replay_window_secs", format!("must be 0 (off) or 60 to {dedupe_ttl} seconds")));
        }
        let mut config = Config { replay_window_secs, ..Config::default() };
        for (i, app) in raw.wecom.into_iter().enumerate() {
            let at = |field: &str| format!("wecom[{i}].{field}");
            let token = keep(p, check_token(at("token"), &app.token));
            let name = keep(p, check_name(at("app"), &app.app));
            let corp_id = keep(p, check_id(at("corp_id"), &app.corp_id));
            let key = keep(p, check_aes_key(at("encoding_aes_key"), &app.encoding_aes_key));
            if let (Some(()), Some(app_name), Some(corp_id), Some(encoding_aes_key)) = (token, name, corp_id, key) {
                config.wecom.push(WecomApp {
                    app: app_name,
                    corp_id,
                    agent_id: app.agent_id,
                    encoding_aes_key,
                    token: app.token,
                    secret: app.secret,
                });
            }
        }
        keep(p, check_unique("wecom", "app", config.wecom.iter().map(|a| a.app.as_str())));
        for (i, app) in raw.oa.into_iter().enumerate() {
            let at = |field: &str| format!("oa[{i}].{field}");
            let token = keep(p, check_token(at("token"), &app.token));
            let key = match &app.encoding_aes_key {
                Some(key) => keep(p, check_aes_key(at("encoding_aes_key"), key)).map(Some),
                None => Some(None),
            };
            let name = keep(p, check_name(at("app"), &app.app));
            let app_id = keep(p, check_id(at("app_id"), &app.app_id));
            if let (Some(()), Some(encoding_aes_key), Some(app_name), Some(app_id)) = (token, key, name, app_id) {
                config.oa.push(OaApp {
                    app: app_name,
                    app_id,
                    token: app.token,
                    encoding_aes_key,
                    app_secret: app.app_secret,
                });
            }
        }
        keep(p, check_unique("oa", "app", config.oa.iter().map(|a| a.app.as_str())));
        for (i, account) in raw.ilink.into_iter().enumerate() {
            let at = |field: &str| format!("ilink[{i}].{field}");
            let token = if account.bot_token.expose_secret().is_empty() {
                p.push(invalid(at("bot_token"), "must not be empty"));
                None
            } else {
                Some(())
            };
            let id = keep(p, check_id(at("account"), &account.account));
            let base_url = keep(p, check_url(at("base_url"), &account.base_url));
            if let (Some(()), Some(id), Some(base_url)) = (token, id, base_url) {
                config.ilink.push(IlinkAccount {
                    account: id,
                    base_url,
                    bot_token: account.bot_token,
                    user_id: account.user_id,
                });
            }
        }
        keep(p, check_unique("ilink", "account", config.ilink.iter().map(|a| a.account.as_str())));
        for (i, robot) in raw.robots.into_iter().enumerate() {
            let at = |field: &str| format!("robots[{i}].{field}");
            if robot.key.expose_secret().is_empty() {
                p.push(invalid(at("key"), "must not be empty"));
            }
            if let Some(name) = keep(p, check_name(at("name"), &robot.name)) {
                config.robots.push(Robot { name, key: robot.key });
            }
        }
        keep(p, check_unique("robots", "name", config.robots.iter().map(|r| r.name.as_str())));
        config.bot = match raw.bot {
            None | Some(RawBot::Echo) => BotConfig::Echo,
            Some(RawBot::Http { url, secret }) => {
                BotConfig::Http { url: keep(p, check_url("bot.url".into(), &url)).unwrap_or_default(), secret }
            }
            Some(RawBot::OpenAi { base_url, api_key, model, system_prompt }) => {
                if model.is_empty() {
                    p.push(invalid("bot.model", "must not be empty"));
                }
                BotConfig::OpenAi {
                    base_url: keep(p, check_url("bot.base_url".into(), &base_url)).unwrap_or_default(),
                    api_key,
                    model,
                    system_prompt,
                }
            }
        };
        if let Some(window) = raw.oa_window {
            let defaults = OaWindow::default();
            let w = OaWindow {
                hold_ms: window.hold_ms.unwrap_or(defaults.hold_ms),
                answer_by_ms: window.answer_by_ms.unwrap_or(defaults.answer_by_ms),
                deliveries: window.deliveries.unwrap_or(defaults.deliveries),
            };
            if !(1..=4).contains(&w.deliveries) {
                p.push(invalid("oa_window.deliveries", "must be 1 to 4 (WeChat delivers a message at most 4 times)"));
            }
            if !(5001..=8000).contains(&w.hold_ms) {
                p.push(invalid(
                    "oa_window.hold_ms",
                    "must be 5001 to 8000: past WeChat's 5 s, so WeChat gives up on the held delivery, and well inside the function's 10 s",
                ));
            }
            if w.answer_by_ms >= 5000 {
                p.push(invalid("oa_window.answer_by_ms", "must be under 5000 (WeChat stops waiting after 5 s)"));
            }
            config.oa_window = w;
        }
        config
    }

    /// The WeCom app served at `/wecom/{app}`.
    pub fn wecom_app(&self, app: &str) -> Option<&WecomApp> {
        self.wecom.iter().find(|a| a.app == app)
    }
}

/// The value of a check, or `None` with its problem noted.
fn keep<T>(problems: &mut Vec<ConfigError>, result: Result<T, ConfigError>) -> Option<T> {
    result.map_err(|err| problems.push(err)).ok()
}

/// A list section, element by element: a malformed element is a problem of its own and does
/// not hide the others.
fn elements<T: serde::de::DeserializeOwned>(
    section: &str,
    value: serde_json::Value,
    problems: &mut Vec<ConfigError>,
) -> Vec<T> {
    match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| deserialize_at(&format!("{section}[{i}]"), item, problems))
            .collect(),
        _ => {
            problems.push(invalid(section, "must be a list"));
            Vec::new()
        }
    }
}

/// Deserializes `value`, naming a problem by its path under `prefix`.
fn deserialize_at<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: serde_json::Value,
    problems: &mut Vec<ConfigError>,
) -> Option<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." { prefix.to_owned() } else { format!("{prefix}.{path}") };
            // serde's messages name types and fields; the value itself is dropped.
            problems.push(invalid(field, redact_serde_message(&err.into_inner().to_string())));
        })
        .ok()
}

/// serde_json quotes the offending value ("invalid type: string \"…\", expected u32", "invalid
/// type: integer `123456`, expected a string"): a misplaced secret must not reach the logs, so the
/// value is dropped and only its kind stays.
fn redact_serde_message(message: &str) -> String {
    for mark in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(start) = message.find(mark) {
            let rest = &message[start + mark.len()..];
            let kind = rest.split([' ', '`', '"']).next().unwrap_or_default();
            let tail = rest.rfind(", expected").map(|i| &rest[i..]).unwrap_or("");
            return format!("{}{mark}{kind} [redacted]{tail}", &message[..start]);
        }
    }
    message.to_owned()
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A JSON file (`WXBRIDGE_CONFIG`), for local runs.
    File(PathBuf),
    /// A Secrets Manager secret name or ARN (`WXBRIDGE_CONFIG_SECRET`), on Lambda.
    Secret(String),
}

/// The environment variables wxbridge reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub config_file: Option<PathBuf>,
    pub config_secret: Option<String>,
    pub table: Option<String>,
    pub inbound_queue_url: Option<String>,
    pub outbound_queue_url: Option<String>,
    pub dlq_url: Option<String>,
    pub wecom_api_base: Option<String>,
    pub oa_api_base: Option<String>,
    /// `AWS_ENDPOINT_URL`: set when the AWS services are an emulator.
    pub aws_endpoint_url: Option<String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            config_file: get("WXBRIDGE_CONFIG").map(PathBuf::from),
            config_secret: get("WXBRIDGE_CONFIG_SECRET"),
            table: get("WXBRIDGE_TABLE"),
            inbound_queue_url: get("WXBRIDGE_INBOUND_QUEUE_URL"),
            outbound_queue_url: get("WXBRIDGE_OUTBOUND_QUEUE_URL"),
            dlq_url: get("WXBRIDGE_DLQ_URL"),
            wecom_api_base: get("WXBRIDGE_WECOM_API_BASE"),
            oa_api_base: get("WXBRIDGE_OA_API_BASE"),
            aws_endpoint_url: get("AWS_ENDPOINT_URL"),
        }
    }

    /// The config file wins over the secret, so a local run never reaches AWS by accident.
    pub fn config_source(&self) -> Result<ConfigSource, ConfigError> {
        match (&self.config_file, &self.config_secret) {
            (Some(path), _) => Ok(ConfigSource::File(path.clone())),
            (None, Some(secret)) => Ok(ConfigSource::Secret(secret.clone())),
            (None, None) => Err(ConfigError::NoSource { file: "WXBRIDGE_CONFIG", secret: "WXBRIDGE_CONFIG_SECRET" }),
        }
    }

    /// True when `AWS_ENDPOINT_URL` points at this machine (the local emulator).
    pub fn aws_is_local(&self) -> bool {
        self.aws_endpoint_url.as_deref().is_some_and(|url| {
            let host = url.split("://").nth(1).unwrap_or(url);
            host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
        })
    }

    pub fn require_table(&self) -> Result<&str, ConfigError> {
        self.table.as_deref().ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_TABLE", purpose: "the DynamoDB table" })
    }

    pub fn require_outbound_queue_url(&self) -> Result<&str, ConfigError> {
        self.outbound_queue_url
            .as_deref()
            .ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_OUTBOUND_QUEUE_URL", purpose: "the outbound SQS queue" })
    }

    pub fn require_dlq_url(&self) -> Result<&str, ConfigError> {
        self.dlq_url
            .as_deref()
            .ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_DLQ_URL", purpose: "the outbound dead-letter queue" })
    }

    /// API base URLs: WeChat's unless overridden (tests point them at fakes).
    pub fn api_settings(&self) -> crate::core::http::ApiSettings {
        let defaults = crate::core::http::ApiSettings::default();
        crate::core::http::ApiSettings {
            wecom_base: self.wecom_api_base.clone().unwrap_or(defaults.wecom_base),
            oa_base: self.oa_api_base.clone().unwrap_or(defaults.oa_base),
            ..defaults
        }
    }

    pub fn require_inbound_queue_url(&self) -> Result<&str, ConfigError> {
        self.inbound_queue_url
            .as_deref()
            .ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_INBOUND_QUEUE_URL", purpose: "the inbound SQS queue" })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_names_every_problem_not_just_the_first() {
        let document = r#"{
            "wecom": [{"app": "bad name", "corp_id": "ww1", "agent_id": 1, "token": "t", "encoding_aes_key": "short"},
                      {"app": "ok", "corp_id": "ww1", "agent_id": "seven", "token": "abcdef", "encoding_aes_key": "x"}],
            "oa": [{"app": "news", "app_id": "wx1", "token": "abcdef", "extra": 1}],
            "ilink": [{"account": "b@im.bot", "bot_token": "", "base_url": "ftp://x"}],
            "replay_window_secs": 5,
            "bots": {}
        }"#;
        let problems = Config::check(document).unwrap_err();
        let fields: Vec<String> = problems
            .iter()
            .map(|p| match p {
                ConfigError::Invalid { field, .. } => field.clone(),
                other => panic!("{other}"),
            })
            .collect();
        for want in [
            "wecom[0].token",
            "wecom[0].app",
            "wecom[0].encoding_aes_key",
            "wecom[1].agent_id",
            "oa[0].extra",
            "ilink[0].bot_token",
            "ilink[0].base_url",
            "replay_window_secs",
            "bots",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} missing from {fields:?}");
        }
        // parse reports the first of them.
        assert!(matches!(Config::parse(document), Err(ConfigError::Invalid { .. })));
    }

    use super::*;

    const KEY: &str = "HIu2lVPN96GQjSpUjTfRQ7zdxNAM4i9RKwPU7LosXnv";

    fn doc(wecom_app: &str) -> String {
        format!(r#"{{"wecom": [{wecom_app}]}}"#)
    }

    fn app(overrides: &[(&str, &str)]) -> String {
        let mut fields = vec![
            ("app", "\"hr\"".to_owned()),
            ("corp_id", "\"ww5f2d8c1a9e3b7046\"".to_owned()),
            ("agent_id", "1000002".to_owned()),
            ("token", "\"Wx8r1dgeT0ken\"".to_owned()),
            ("encoding_aes_key", format!("\"{KEY}\"")),
            ("secret", "\"s3cr3t-value\"".to_owned()),
        ];
        for (k, v) in overrides {
            match fields.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => fields.push((k, v.to_string())),
            }
        }
        let body: Vec<String> =
            fields.iter().filter(|(_, v)| v != "<drop>").map(|(k, v)| format!("\"{k}\": {v}")).collect();
        format!("{{{}}}", body.join(", "))
    }

    fn error_of(json: &str) -> String {
        Config::parse(json).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let config = Config::parse(&format!(
            r#"{{"wecom": [{}, {}], "oa": [{{"app": "news", "app_id": "wx6d1c9e8f2a3b4c57", "token": "oaTok", "encoding_aes_key": "{KEY}"}}],
                 "ilink": [{{"account": "b@im.bot", "bot_token": "t", "base_url": "https://ilink.example/"}}],
                 "robots": [{{"name": "ops", "key": "k"}}], "bot": {{"kind": "openai", "base_url": "http://127.0.0.1:1", "api_key": "sk", "model": "m"}}}}"#,
            app(&[]),
            app(&[("app", "\"sales\"")])
        ))
        .unwrap();
        assert_eq!(config.wecom.len(), 2);
        assert_eq!(config.wecom_app("sales").unwrap().agent_id, 1000002);
        assert!(config.wecom_app("nope").is_none());
        assert_eq!(config.ilink[0].base_url, "https://ilink.example");
        assert_eq!(config.oa_window, OaWindow::default());
        assert_eq!(config.replay_window_secs, DEFAULT_REPLAY_WINDOW_SECS);
        assert!(matches!(config.bot, BotConfig::OpenAi { .. }));
    }

    #[test]
    fn names_the_broken_field() {
        let cases = [
            (doc(&app(&[("encoding_aes_key", "\"short\"")])), "wecom[0].encoding_aes_key"),
            (doc(&app(&[("token", "\"a b\"")])), "wecom[0].token"),
            (doc(&app(&[("app", "\"h/r\"")])), "wecom[0].app"),
            (doc(&app(&[("agent_id", "\"1000002\"")])), "wecom[0].agent_id"),
            (doc(&app(&[("corp_id", "<drop>")])), "wecom[0]"),
            (doc(&app(&[("crop_id", "\"x\"")])), "wecom[0]"),
            (format!(r#"{{"wecom": [{}, {}]}}"#, app(&[]), app(&[])), "wecom[1].app"),
            (r#"{"bot": {"kind": "telepathy"}}"#.to_owned(), "bot"),
            (r#"{"oa_window": {"deliveries": 9}}"#.to_owned(), "oa_window.deliveries"),
            (r#"{"oa_window": {"answer_by_ms": 6000}}"#.to_owned(), "oa_window.answer_by_ms"),
            (r#"{"oa_window": {"hold_ms": 4000}}"#.to_owned(), "oa_window.hold_ms"),
            (
                r#"{"ilink": [{"account": "a", "bot_token": "t", "base_url": "ftp://x"}]}"#.to_owned(),
                "ilink[0].base_url",
            ),
            (r#"{"wecom": {}}"#.to_owned(), "wecom"),
            (r#"{"replay_window_secs": 5}"#.to_owned(), "replay_window_secs"),
            (r#"{"replay_window_secs": 604800}"#.to_owned(), "replay_window_secs"),
            ("not json".to_owned(), "(document)"),
        ];
        for (json, field) in cases {
            let message = error_of(&json);
            assert!(message.starts_with(&format!("config: {field}")), "{json} → {message}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let message = error_of(&doc(&app(&[("encoding_aes_key", "\"SECRETKEYSECRETKEY\"")])));
        assert!(!message.contains("SECRETKEY"), "{message}");
        let message = error_of(&doc(&app(&[("agent_id", "\"SECRETAGENT\"")])));
        assert!(!message.contains("SECRETAGENT"), "{message}");
        let message = error_of(&doc(&app(&[("token", "987654321")])));
        assert!(!message.contains("987654321") && message.contains("wecom[0].token"), "{message}");
        let message = error_of(&doc(&app(&[("token", "987654321")])));
        assert!(!message.contains("987654321") && message.contains("wecom[0].token"), "{message}");
        let config = Config::parse(&doc(&app(&[]))).unwrap();
        let shown = format!("{config:?}");
        for secret in ["Wx8r1dgeT0ken", KEY, "s3cr3t-value"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
    }

    #[test]
    fn env_prefers_the_file_and_explains_what_is_missing() {
        let env = Env::from_lookup(|name| match name {
            "WXBRIDGE_CONFIG" => Some("/tmp/c.json".into()),
            "WXBRIDGE_CONFIG_SECRET" => Some("wxbridge/config".into()),
            "WXBRIDGE_TABLE" => Some(" ".into()),
            _ => None,
        });
        assert_eq!(env.config_source().unwrap(), ConfigSource::File("/tmp/c.json".into()));
        assert!(env.require_table().unwrap_err().to_string().contains("WXBRIDGE_TABLE"));
        let empty = Env::from_lookup(|_| None);
        assert!(empty.config_source().unwrap_err().to_string().contains("WXBRIDGE_CONFIG_SECRET"));
        let secret = Env::from_lookup(|name| (name == "WXBRIDGE_CONFIG_SECRET").then(|| "arn:x".to_owned()));
        assert_eq!(secret.config_source().unwrap(), ConfigSource::Secret("arn:x".into()));
        assert!(!secret.aws_is_local());
        for (url, local) in [
            ("http://127.0.0.1:4566", true),
            ("http://localhost:4566", true),
            ("https://dynamodb.us-east-1.amazonaws.com", false),
        ] {
            let env = Env::from_lookup(|name| (name == "AWS_ENDPOINT_URL").then(|| url.to_owned()));
            assert_eq!(env.aws_is_local(), local, "{url}");
        }
    }
}
