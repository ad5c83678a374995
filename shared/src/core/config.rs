//! The config document's walk: one JSON document for every account, read section by section
//! (each section's shape and checks live with its channel), plus the few environment variables
//! for resource names. Loaded once, typed, and fails fast with a message naming the field, never
//! a value.
//!
//! This is the only module that reads the process environment.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::crypto::EncodingAesKey;

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

pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

/// `{app}` is a URL path segment: keep it plain.
pub fn check_name(field: String, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(field, "must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'"))
    }
}

pub fn check_token(field: String, token: &SecretString) -> Result<(), ConfigError> {
    let t = token.expose_secret();
    if (3..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(invalid(field, "must be 3-32 letters or digits (the Token from the admin console)"))
    }
}

pub fn check_aes_key(field: String, key: &SecretString) -> Result<EncodingAesKey, ConfigError> {
    let len = key.expose_secret().len();
    EncodingAesKey::parse(key.expose_secret()).map_err(|_| {
        invalid(field, format!("must be the 43-character EncodingAESKey from the admin console (got {len} characters)"))
    })
}

pub fn check_id(field: String, id: &str) -> Result<String, ConfigError> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(id.to_owned())
    } else {
        Err(invalid(field, "must be a non-empty id without spaces"))
    }
}

pub fn check_url(field: String, url: &str) -> Result<String, ConfigError> {
    if (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > 8
        && !url.contains(char::is_whitespace)
    {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(field, "must be an http(s):// URL"))
    }
}

pub fn check_unique<'a>(section: &str, key: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(invalid(format!("{section}[{i}].{key}"), format!("'{name}' is used twice")));
        }
    }
    Ok(())
}

/// The value of a check, or `None` with its problem noted.
pub fn keep<T>(problems: &mut Vec<ConfigError>, result: Result<T, ConfigError>) -> Option<T> {
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
pub fn deserialize_at<T: serde::de::DeserializeOwned>(
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
/// type: integer `123456`, expected a string", "unknown variant `…`, expected one of …"): a
/// misplaced secret or a message's text must not reach the logs or a DLQ reason, so the value is
/// dropped and only its kind stays.
pub fn redact_serde_message(message: &str) -> String {
    // serde's own words come first; anything quoted after them may be the input.
    for mark in ["unknown variant ", "unknown field "] {
        if let Some(rest) = message.strip_prefix(mark) {
            // The name ends where serde's list of expected names begins (the last such place:
            // the name itself may hold the words).
            let tail = ["`, expected", "`, there are no"]
                .iter()
                .filter_map(|end| rest.rfind(end).map(|i| &rest[i + 1..]))
                .next()
                .unwrap_or("");
            return format!("{mark}[redacted]{tail}");
        }
    }
    for mark in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(mark) {
            let kind = rest.split([' ', '`', '"']).next().unwrap_or_default();
            let tail = rest.rfind(", expected").map(|i| &rest[i..]).unwrap_or("");
            return format!("{mark}{kind} [redacted]{tail}");
        }
    }
    message.to_owned()
}

/// One list section of the document (`wecom`, `oa`, …): the element as written and how it
/// becomes the typed form.
pub trait ListSection: Sized {
    /// The section's name in the document.
    const NAME: &'static str;
    /// The field that names an element, unique within the section.
    const KEY: &'static str;
    /// The element as written.
    type Raw: DeserializeOwned;
    /// Checks one element, noting every problem; `at("token")` names a field of it.
    fn from_raw(raw: Self::Raw, at: &dyn Fn(&str) -> String, problems: &mut Vec<ConfigError>) -> Option<Self>;
    /// The element's name (the value of [`Self::KEY`]).
    fn key(&self) -> &str;
}

/// The document being read: each section is taken once, by whoever owns it; what nobody took
/// is an unknown field. Problems of shape (types, unknown fields) come first, in the order of
/// the document's keys; then the checks of values, section by section.
pub struct Document {
    top: serde_json::Map<String, Value>,
    known: Vec<&'static str>,
    shape: Vec<(String, ConfigError)>,
    problems: Vec<ConfigError>,
}

impl Document {
    /// Parses the JSON text (which must be an object).
    pub fn parse(json: &str) -> Result<Self, Vec<ConfigError>> {
        let value: Value = serde_json::from_str(json)
            .map_err(|err| vec![invalid("(document)", redact_serde_message(&err.to_string()))])?;
        let Value::Object(top) = value else {
            return Err(vec![invalid("(document)", "must be a JSON object")]);
        };
        Ok(Self { top, known: Vec::new(), shape: Vec::new(), problems: Vec::new() })
    }

    /// Every element of list section `T`, each checked on its own (a malformed one does not
    /// hide the others), names unique.
    pub fn list<T: ListSection>(&mut self) -> Vec<T> {
        self.known.push(T::NAME);
        let Some(value) = self.top.remove(T::NAME) else { return Vec::new() };
        let mut shape = Vec::new();
        let raws: Vec<T::Raw> = elements(T::NAME, value, &mut shape);
        self.shape.extend(shape.into_iter().map(|p| (T::NAME.to_owned(), p)));
        let mut typed = Vec::new();
        for (i, raw) in raws.into_iter().enumerate() {
            let at = |field: &str| format!("{}[{i}].{field}", T::NAME);
            typed.extend(T::from_raw(raw, &at, &mut self.problems));
        }
        keep(&mut self.problems, check_unique(T::NAME, T::KEY, typed.iter().map(T::key)));
        typed
    }

    /// Section `name` as `T`, if present.
    pub fn value<T: DeserializeOwned>(&mut self, name: &'static str) -> Option<T> {
        self.known.push(name);
        let value = self.top.remove(name)?;
        let mut shape = Vec::new();
        let typed = deserialize_at(name, value, &mut shape);
        self.shape.extend(shape.into_iter().map(|p| (name.to_owned(), p)));
        typed
    }

    /// Takes `fields` out of each element of list section `section` (before the section itself is
    /// read, so its elements stay strict about unknown fields): per element that had any, its
    /// index, its name (the value of `key`, if a string) and the fields taken.
    pub fn take_fields(
        &mut self,
        section: &str,
        key: &str,
        fields: &[&str],
    ) -> Vec<(usize, String, serde_json::Map<String, Value>)> {
        let Some(Value::Array(items)) = self.top.get_mut(section) else { return Vec::new() };
        let mut taken = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            let Value::Object(object) = item else { continue };
            let mut these = serde_json::Map::new();
            for field in fields {
                if let Some(value) = object.remove(*field) {
                    these.insert((*field).to_owned(), value);
                }
            }
            if !these.is_empty() {
                let name = object.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
                taken.push((i, name, these));
            }
        }
        taken
    }

    /// Notes a problem found while checking a section.
    pub fn problem(&mut self, problem: ConfigError) {
        self.problems.push(problem);
    }

    /// The problems so far, for a section's checks to add to.
    pub fn problems(&mut self) -> &mut Vec<ConfigError> {
        &mut self.problems
    }

    /// The typed config, or every problem (unknown sections included).
    pub fn finish<T>(mut self, config: T) -> Result<T, Vec<ConfigError>> {
        let expected = match self.known.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => (*last).to_owned(),
            None => String::new(),
        };
        for key in self.top.keys() {
            self.shape.push((key.clone(), invalid(key.clone(), format!("unknown field (expected {expected})"))));
        }
        // A stable sort keeps each section's problems in their order.
        self.shape.sort_by(|a, b| a.0.cmp(&b.0));
        let mut problems: Vec<ConfigError> = self.shape.into_iter().map(|(_, p)| p).collect();
        problems.extend(self.problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
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
    /// The inbound queue's dead-letter queue: the dispatcher puts what it gives up on there,
    /// with the reason.
    pub inbound_dlq_url: Option<String>,
    /// The media queue: new messages with files to fetch go here first.
    pub media_queue_url: Option<String>,
    /// `WXBRIDGE_KF_QUEUE_URL`: the 微信客服 pull queue (FIFO).
    pub kf_queue_url: Option<String>,
    /// The media bucket.
    pub media_bucket: Option<String>,
    /// The bot queue of a `queue` bot.
    pub bot_queue_url: Option<String>,
    /// Overridden API hosts by variable (`WXBRIDGE_WECOM_API_BASE`, …); each channel names
    /// its variable.
    api_bases: BTreeMap<String, String>,
    /// `AWS_ENDPOINT_URL`: set when the AWS services are an emulator.
    pub aws_endpoint_url: Option<String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        // `vars()` would panic on a variable that is not UTF-8, wherever it is in the environment.
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Reads the given variables (tests pass a list); empty values count as unset.
    pub fn from_vars<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, v)| (k.starts_with("WXBRIDGE_") || k.starts_with("AWS_")) && !v.trim().is_empty())
            .collect();
        let get = |name: &str| vars.get(name).cloned();
        Self {
            config_file: get("WXBRIDGE_CONFIG").map(PathBuf::from),
            config_secret: get("WXBRIDGE_CONFIG_SECRET"),
            table: get("WXBRIDGE_TABLE"),
            inbound_queue_url: get("WXBRIDGE_INBOUND_QUEUE_URL"),
            outbound_queue_url: get("WXBRIDGE_OUTBOUND_QUEUE_URL"),
            dlq_url: get("WXBRIDGE_DLQ_URL"),
            inbound_dlq_url: get("WXBRIDGE_INBOUND_DLQ_URL"),
            media_queue_url: get("WXBRIDGE_MEDIA_QUEUE_URL"),
            kf_queue_url: get("WXBRIDGE_KF_QUEUE_URL"),
            media_bucket: get("WXBRIDGE_MEDIA_BUCKET"),
            bot_queue_url: get("WXBRIDGE_BOT_QUEUE_URL"),
            aws_endpoint_url: get("AWS_ENDPOINT_URL"),
            api_bases: vars
                .iter()
                .filter(|(k, _)| k.ends_with("_API_BASE") || k.ends_with("_CDN_BASE"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
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

    /// The API host named by `var` (a channel's `*_API_BASE`), or `default`: WeChat's unless
    /// overridden (tests and the sandbox point them at fakes).
    pub fn api_base<'a>(&'a self, var: &str, default: &'a str) -> &'a str {
        self.api_bases.get(var).map_or(default, String::as_str)
    }

    /// Whether `var` overrides an API host.
    pub fn api_base_set(&self, var: &str) -> Option<&str> {
        self.api_bases.get(var).map(String::as_str)
    }

    /// Points the API host of `var` at `url` (the sandbox's fakes).
    pub fn set_api_base(&mut self, var: &str, url: &str) {
        self.api_bases.insert(var.to_owned(), url.to_owned());
    }

    pub fn require_media_queue_url(&self) -> Result<&str, ConfigError> {
        self.media_queue_url
            .as_deref()
            .ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_MEDIA_QUEUE_URL", purpose: "the media SQS queue" })
    }

    pub fn require_media_bucket(&self) -> Result<&str, ConfigError> {
        self.media_bucket
            .as_deref()
            .ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_MEDIA_BUCKET", purpose: "the media S3 bucket" })
    }

    pub fn require_bot_queue_url(&self) -> Result<&str, ConfigError> {
        self.bot_queue_url.as_deref().ok_or(ConfigError::MissingEnv {
            name: "WXBRIDGE_BOT_QUEUE_URL",
            purpose: "the bot queue (bot kind \"queue\")",
        })
    }

    pub fn require_inbound_queue_url(&self) -> Result<&str, ConfigError> {
        self.inbound_queue_url
            .as_deref()
            .ok_or(ConfigError::MissingEnv { name: "WXBRIDGE_INBOUND_QUEUE_URL", purpose: "the inbound SQS queue" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_prefers_the_file_and_explains_what_is_missing() {
        let env = Env::from_vars([
            ("WXBRIDGE_CONFIG", "/tmp/c.json"),
            ("WXBRIDGE_CONFIG_SECRET", "wxbridge/config"),
            ("WXBRIDGE_TABLE", " "),
        ]);
        assert_eq!(env.config_source().unwrap(), ConfigSource::File("/tmp/c.json".into()));
        assert!(env.require_table().unwrap_err().to_string().contains("WXBRIDGE_TABLE"));
        let empty = Env::from_vars(Vec::<(String, String)>::new());
        assert!(empty.config_source().unwrap_err().to_string().contains("WXBRIDGE_CONFIG_SECRET"));
        let secret = Env::from_vars([("WXBRIDGE_CONFIG_SECRET", "arn:x")]);
        assert_eq!(secret.config_source().unwrap(), ConfigSource::Secret("arn:x".into()));
        assert!(!secret.aws_is_local());
        for (url, local) in [
            ("http://127.0.0.1:4566", true),
            ("http://localhost:4566", true),
            ("https://dynamodb.us-east-1.amazonaws.com", false),
        ] {
            let env = Env::from_vars([("AWS_ENDPOINT_URL", url)]);
            assert_eq!(env.aws_is_local(), local, "{url}");
        }
    }

    #[test]
    fn api_hosts_are_overridden_by_their_variable_only() {
        let mut env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", "http://127.0.0.1:1"), ("HOME", "/root")]);
        assert_eq!(env.api_base("WXBRIDGE_WECOM_API_BASE", "https://x"), "http://127.0.0.1:1");
        assert_eq!(env.api_base("WXBRIDGE_OA_API_BASE", "https://y"), "https://y");
        env.set_api_base("WXBRIDGE_OA_API_BASE", "http://127.0.0.1:2");
        assert_eq!(env.api_base_set("WXBRIDGE_OA_API_BASE"), Some("http://127.0.0.1:2"));
    }

    #[test]
    fn unknown_sections_are_named_with_what_is_expected() {
        let mut doc = Document::parse(r#"{"bots": {}, "a": 1}"#).unwrap();
        let _: Option<u64> = doc.value("a");
        let _: Option<u64> = doc.value("b");
        let problems = doc.finish(()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].to_string(), "config: bots: unknown field (expected a or b)");
        assert!(Document::parse("[]").is_err());
        assert!(Document::parse("not json").is_err());
    }
}
