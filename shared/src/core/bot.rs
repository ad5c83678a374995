//! The bot port: what answers an `Inbound`, and the `bot` config section that picks one.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use std::collections::BTreeMap;

use crate::core::config::{check_name, check_url, deserialize_at, invalid, keep, ConfigError, Document};
use crate::core::envelope::{Content, Inbound};

/// Why a bot gave no answer this time (retried through SQS, never dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bot: {0}")]
pub struct BotError(pub String);

/// How long a bot may take unless `bot.timeout_s` says otherwise; SQS retries after it.
pub const DEFAULT_BOT_TIMEOUT: Duration = Duration::from_secs(45);
/// The longest `bot.timeout_s` (14 minutes): a Lambda runs at most 15.
pub const MAX_BOT_TIMEOUT: Duration = Duration::from_secs(840);

/// Something that answers messages.
#[async_trait]
pub trait Bot: Send + Sync {
    /// The replies to `inbound`, in order; none is a fine answer.
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError>;

    /// Like [`Bot::answer`], showing the answer to `sink` as it grows where the bot streams.
    async fn answer_streaming(&self, inbound: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let _ = sink;
        self.answer(inbound).await
    }

    /// Whether the bot answers later on its own, as `Outbound` messages (a queue bot): the
    /// dispatcher then hands the message over and routes no replies (no passive reply, no
    /// stream finished for it).
    fn replies_later(&self, inbound: &Inbound) -> bool {
        let _ = inbound;
        false
    }
}

/// The OpenClaw session a conversation key names for `model`: `agent:<id>:<key>` when the model
/// names an agent (`openclaw/<id>`, `openclaw:<id>`, `agent:<id>`), since a bare explicit session
/// key is the default agent's on the gateway; the key itself for the default agent.
pub fn gateway_session(model: &str, key: &str) -> String {
    let agent = ["openclaw/", "openclaw:", "agent:"].iter().find_map(|prefix| model.strip_prefix(prefix));
    match agent.filter(|id| !id.is_empty() && *id != "default") {
        Some(agent) => format!("agent:{agent}:{key}"),
        None => key.to_owned(),
    }
}

/// The stable key of `inbound`'s conversation: `wxbridge:<channel>:<account>:<conversation>`
/// (a group chat is one conversation, shared by its members).
pub fn conversation_key(inbound: &Inbound) -> String {
    format!("wxbridge:{}:{}:{}", inbound.channel.as_str(), inbound.account, inbound.conversation.id)
}

/// Where a streaming bot shows its answer while it grows (the WeCom AI bot's stream).
#[async_trait]
pub trait AnswerSink: Send + Sync {
    /// The whole answer so far (not a delta); called as it grows. Implementations throttle.
    async fn grow(&self, text: &str);
}

/// The longest an echo may take to stream its answer.
const MAX_ECHO_STREAM_MS: u64 = 10_000;

/// Which bot answers inbound messages.
#[derive(Debug, Clone, Default)]
pub enum BotConfig {
    #[default]
    Echo,
    /// The echo bot, answering over `stream_ms` a few characters at a time (a streaming demo).
    EchoStreaming { over: Duration },
    Http {
        url: String,
        secret: SecretString,
        /// Per call (`bot.timeout_s`).
        timeout: Duration,
    },
    OpenAi {
        base_url: String,
        api_key: SecretString,
        model: String,
        system_prompt: Option<String>,
        /// Per call (`bot.timeout_s`), the whole stream included.
        timeout: Duration,
        /// Ask for server-sent events and show the answer as it grows (`bot.stream`).
        stream: bool,
        /// Who keeps the conversation's earlier turns.
        history: History,
        /// What clears the conversation.
        reset: Reset,
    },
    /// A Dify chat app (`chat-messages`, streamed): Dify keeps the conversation under the id it
    /// gives the first answer, which the bridge keeps per conversation.
    Dify {
        /// The API's base without its `/v1`.
        base_url: String,
        api_key: SecretString,
        /// The app's input variables, sent with every message.
        inputs: serde_json::Map<String, serde_json::Value>,
        timeout: Duration,
        reset: Reset,
    },
    /// Each resolved `Inbound` goes on the bot queue, for a consumer in any language that
    /// answers with `Outbound` messages on the outbound queue.
    Queue,
}

/// Who keeps a conversation's earlier turns for the `openai` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// Nobody: each message stands alone.
    None,
    /// The endpoint, by the stable `user` key (and `x-openclaw-session-key`): OpenClaw. A reset
    /// moves the conversation to a new key.
    Server,
    /// The bridge: the last `turns` turns, at most `bytes` of text, forgotten after `ttl` idle.
    Bridge { turns: usize, bytes: usize, ttl: Duration },
}

/// Bridge history defaults: 20 turns, 32 KiB, a week idle.
pub const HISTORY_TURNS: usize = 20;
pub const HISTORY_BYTES: usize = 32 * 1024;
pub const HISTORY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest bridge history: inside DynamoDB's 400 KB item even when JSON escaping grows the
/// text (quotes, backslashes and newlines double).
const MAX_HISTORY_BYTES: usize = 160 * 1024;

/// The message that clears a conversation, and what the bridge answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    pub command: String,
    pub reply: String,
}

impl Default for Reset {
    fn default() -> Self {
        Self { command: "/new".to_owned(), reply: "好的，我们重新开始吧。".to_owned() }
    }
}

impl Reset {
    /// Whether `text` is the reset command alone (surrounding space and `@mentions` before it
    /// allowed).
    pub fn matches(&self, text: &str) -> bool {
        let mut words = text.split_whitespace().skip_while(|word| word.starts_with('@') && *word != self.command);
        words.next() == Some(self.command.as_str()) && words.next().is_none()
    }
}

/// The highest limit: each window's counter keeps the ids of the messages it counted.
pub const MAX_LIMIT: u32 = 1_000;

/// How often one user or one conversation may reach a bot: messages per minute and per day.
/// Over a limit the bot is not called; the sender is told `notice` once per window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub user_per_minute: Option<u32>,
    #[serde(default)]
    pub user_per_day: Option<u32>,
    #[serde(default)]
    pub conversation_per_minute: Option<u32>,
    #[serde(default)]
    pub conversation_per_day: Option<u32>,
    /// What an over-limit sender is told, once per window; absent: nothing.
    #[serde(default)]
    pub notice: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawBot {
    Echo {
        #[serde(default)]
        stream_ms: Option<u64>,
    },
    Http {
        url: String,
        secret: SecretString,
        #[serde(default)]
        timeout_s: Option<u64>,
    },
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
        api_key: SecretString,
        model: String,
        #[serde(default)]
        system_prompt: Option<String>,
        #[serde(default)]
        timeout_s: Option<u64>,
        #[serde(default)]
        stream: bool,
        #[serde(default)]
        history: Option<RawHistory>,
        #[serde(default)]
        history_turns: Option<usize>,
        #[serde(default)]
        history_bytes: Option<usize>,
        #[serde(default)]
        history_ttl_s: Option<u64>,
        #[serde(default)]
        reset_command: Option<String>,
        #[serde(default)]
        reset_reply: Option<String>,
    },
    Dify {
        base_url: String,
        api_key: SecretString,
        #[serde(default)]
        inputs: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        timeout_s: Option<u64>,
        #[serde(default)]
        reset_command: Option<String>,
        #[serde(default)]
        reset_reply: Option<String>,
    },
    Queue,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawHistory {
    None,
    Server,
    Bridge,
}

fn reset(at: &str, command: Option<String>, reply: Option<String>, problems: &mut Vec<ConfigError>) -> Reset {
    let default = Reset::default();
    let command = command.unwrap_or(default.command);
    if command.trim().is_empty() || command.contains(char::is_whitespace) || command.len() > 64 {
        problems.push(invalid(format!("{at}.reset_command"), "must be one word of at most 64 bytes"));
    }
    Reset { command, reply: reply.unwrap_or(default.reply) }
}

/// `timeout_s` as a duration: [`DEFAULT_BOT_TIMEOUT`] when absent, 1 s to [`MAX_BOT_TIMEOUT`].
fn timeout(at: &str, timeout_s: Option<u64>, problems: &mut Vec<ConfigError>) -> Duration {
    let Some(secs) = timeout_s else { return DEFAULT_BOT_TIMEOUT };
    if (1..=MAX_BOT_TIMEOUT.as_secs()).contains(&secs) {
        Duration::from_secs(secs)
    } else {
        problems.push(invalid(
            format!("{at}.timeout_s"),
            format!("must be 1-{} seconds (14 minutes)", MAX_BOT_TIMEOUT.as_secs()),
        ));
        DEFAULT_BOT_TIMEOUT
    }
}

impl BotConfig {
    /// The `bot` section (the echo bot when absent).
    pub fn from_document(doc: &mut Document) -> Self {
        let raw = doc.value::<RawBot>("bot");
        let mut problems = Vec::new();
        let bot = raw.map_or(BotConfig::Echo, |raw| Self::from_raw("bot", raw, &mut problems));
        for problem in problems {
            doc.problem(problem);
        }
        bot
    }

    fn from_raw(at: &str, raw: RawBot, p: &mut Vec<ConfigError>) -> Self {
        match raw {
            RawBot::Echo { stream_ms: None | Some(0) } => BotConfig::Echo,
            RawBot::Echo { stream_ms: Some(ms) } if ms > MAX_ECHO_STREAM_MS => {
                p.push(invalid(
                    format!("{at}.stream_ms"),
                    format!("at most {MAX_ECHO_STREAM_MS} (the answer must fit a WeChat window)"),
                ));
                BotConfig::Echo
            }
            RawBot::Echo { stream_ms: Some(ms) } => BotConfig::EchoStreaming { over: Duration::from_millis(ms) },
            RawBot::Queue => BotConfig::Queue,
            RawBot::Http { url, secret, timeout_s } => {
                // The bot checks each call's signature with it: an empty one signs nothing.
                if secret.expose_secret().trim().is_empty() {
                    p.push(invalid(format!("{at}.secret"), "must not be empty (the bot verifies each call with it)"));
                }
                BotConfig::Http {
                    url: keep(p, check_url(format!("{at}.url"), &url)).unwrap_or_default(),
                    secret,
                    timeout: timeout(at, timeout_s, p),
                }
            }
            RawBot::OpenAi {
                base_url,
                api_key,
                model,
                system_prompt,
                timeout_s,
                stream,
                history,
                history_turns,
                history_bytes,
                history_ttl_s,
                reset_command,
                reset_reply,
            } => {
                if model.is_empty() {
                    p.push(invalid(format!("{at}.model"), "must not be empty"));
                }
                // OpenClaw keeps sessions itself: sending history too would make the agent see
                // it twice. Plain LLM endpoints keep nothing.
                let gateway = model.starts_with("openclaw") || model.starts_with("agent:");
                let mode = history.unwrap_or(if gateway { RawHistory::Server } else { RawHistory::Bridge });
                let history = match mode {
                    RawHistory::None => History::None,
                    RawHistory::Server => History::Server,
                    RawHistory::Bridge => {
                        let turns = history_turns.unwrap_or(HISTORY_TURNS);
                        let bytes = history_bytes.unwrap_or(HISTORY_BYTES);
                        if !(1..=200).contains(&turns) {
                            p.push(invalid(format!("{at}.history_turns"), "must be 1-200"));
                        }
                        if !(1024..=MAX_HISTORY_BYTES).contains(&bytes) {
                            p.push(invalid(format!("{at}.history_bytes"), "must be 1024-163840 (160 KiB)"));
                        }
                        let ttl = history_ttl_s.map_or(HISTORY_TTL, Duration::from_secs);
                        if ttl.is_zero() || ttl > Duration::from_secs(365 * 24 * 3600) {
                            p.push(invalid(format!("{at}.history_ttl_s"), "must be 1 s to a year"));
                        }
                        History::Bridge { turns, bytes, ttl }
                    }
                };
                if gateway && matches!(history, History::Bridge { .. }) {
                    tracing::warn!("{at}: bridge history with an OpenClaw model: the agent sees the history twice");
                }
                BotConfig::OpenAi {
                    base_url: keep(p, check_url(format!("{at}.base_url"), &base_url)).unwrap_or_default(),
                    api_key,
                    model,
                    system_prompt,
                    timeout: timeout(at, timeout_s, p),
                    stream,
                    history,
                    reset: reset(at, reset_command, reset_reply, p),
                }
            }
            RawBot::Dify { base_url, api_key, inputs, timeout_s, reset_command, reset_reply } => BotConfig::Dify {
                // Dify's console shows the API base with its `/v1`; the bot adds it, so both forms work.
                base_url: keep(p, check_url(format!("{at}.base_url"), &base_url))
                    .map(|url| url.strip_suffix("/v1").map(str::to_owned).unwrap_or(url))
                    .unwrap_or_default(),
                api_key,
                inputs,
                timeout: timeout(at, timeout_s, p),
                reset: reset(at, reset_command, reset_reply, p),
            },
        }
    }

    /// How long one call of the bot may take.
    pub fn timeout(&self) -> Duration {
        match self {
            BotConfig::Echo | BotConfig::EchoStreaming { .. } | BotConfig::Queue => DEFAULT_BOT_TIMEOUT,
            BotConfig::Http { timeout, .. } | BotConfig::OpenAi { timeout, .. } | BotConfig::Dify { timeout, .. } => {
                *timeout
            }
        }
    }

    /// The reset command of a bot that keeps conversations.
    pub fn reset(&self) -> Option<&Reset> {
        match self {
            BotConfig::OpenAi { reset, history: History::Server | History::Bridge { .. }, .. } => Some(reset),
            BotConfig::Dify { reset, .. } => Some(reset),
            _ => None,
        }
    }
}

/// The name of the bot that answers accounts that name none.
pub const DEFAULT_BOT: &str = "default";

/// Every configured bot by name (`default` among them) and each one's limits: the `bots`
/// section, and the older single `bot` section, which is the default.
#[derive(Debug, Clone, Default)]
pub struct Bots {
    pub named: BTreeMap<String, BotConfig>,
    pub limits: BTreeMap<String, Limits>,
}

impl Bots {
    /// The bots reached over plain `http://`, by field (`bots.<name>.url`): fine for `wxbridge
    /// dev` and a bot on the same machine, refused by the deployed functions, where the message
    /// and the bot's key would cross the network in the clear.
    pub fn plain_http(&self) -> Vec<String> {
        self.named
            .iter()
            .filter_map(|(name, bot)| {
                let (field, url) = match bot {
                    BotConfig::Http { url, .. } => ("url", url),
                    BotConfig::OpenAi { base_url, .. } | BotConfig::Dify { base_url, .. } => ("base_url", base_url),
                    BotConfig::Echo | BotConfig::EchoStreaming { .. } | BotConfig::Queue => return None,
                };
                url.starts_with("http://").then(|| format!("bots.{name}.{field}"))
            })
            .collect()
    }

    /// Reads `bots` (a map of names to bots, each with optional `limits`) and `bot`.
    pub fn from_document(doc: &mut Document) -> Self {
        let single = doc.value::<serde_json::Value>("bot");
        let map = doc.value::<serde_json::Map<String, serde_json::Value>>("bots");
        let mut problems = Vec::new();
        let mut bots = Bots::default();
        let mut entries: Vec<(String, String, serde_json::Value)> =
            single.map(|v| ("bot".to_owned(), DEFAULT_BOT.to_owned(), v)).into_iter().collect();
        if let Some(map) = map {
            if entries.len() == 1 && map.contains_key(DEFAULT_BOT) {
                problems.push(invalid("bots.default", "the default bot is given twice: as bot and as bots.default"));
            }
            entries.extend(map.into_iter().map(|(name, v)| (format!("bots.{name}"), name, v)));
        }
        for (at, name, mut value) in entries {
            if keep(&mut problems, check_name(at.clone(), &name)).is_none() {
                continue;
            }
            let limits = value.as_object_mut().and_then(|o| o.remove("limits"));
            if let Some(limits) = limits {
                if let Some(limits) = deserialize_at::<Limits>(&format!("{at}.limits"), limits, &mut problems) {
                    check_limits(&at, &limits, &mut problems);
                    bots.limits.insert(name.clone(), limits);
                }
            }
            if let Some(raw) = deserialize_at::<RawBot>(&at, value, &mut problems) {
                let bot = BotConfig::from_raw(&at, raw, &mut problems);
                bots.named.entry(name).or_insert(bot);
            }
        }
        bots.named.entry(DEFAULT_BOT.to_owned()).or_insert(BotConfig::Echo);
        for problem in problems {
            doc.problem(problem);
        }
        bots
    }

    /// The default bot.
    pub fn default_bot(&self) -> &BotConfig {
        self.named.get(DEFAULT_BOT).unwrap_or(&BotConfig::Echo)
    }

    /// The longest any bot may take.
    pub fn timeout(&self) -> Duration {
        self.named.values().map(BotConfig::timeout).max().unwrap_or(DEFAULT_BOT_TIMEOUT)
    }
}

fn check_limits(at: &str, limits: &Limits, problems: &mut Vec<ConfigError>) {
    let all = [
        ("user_per_minute", limits.user_per_minute),
        ("user_per_day", limits.user_per_day),
        ("conversation_per_minute", limits.conversation_per_minute),
        ("conversation_per_day", limits.conversation_per_day),
    ];
    for (field, value) in all {
        if !(1..=MAX_LIMIT).contains(&value.unwrap_or(1)) {
            problems.push(invalid(
                format!("{at}.limits.{field}"),
                format!("must be 1-{MAX_LIMIT} (leave it out for no limit)"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_command_is_a_message_of_its_own_after_any_mentions() {
        let reset = Reset::default();
        for yes in ["/new", "  /new ", "@DeployBot /new", "@a @b /new"] {
            assert!(reset.matches(yes), "{yes}");
        }
        for no in ["/news", "please /new", "@bot what does /new do? try /new", "/new please", ""] {
            assert!(!reset.matches(no), "{no}");
        }
    }

    /// A signed webhook with an empty secret signs nothing: refused, naming the field.
    #[test]
    fn a_webhook_needs_a_secret() {
        for secret in ["", "   "] {
            let json = format!(
                r#"{{"bots": {{"hook": {{"kind": "http", "url": "https://bot.example/hook", "secret": "{secret}"}}}}}}"#
            );
            let problems = crate::channels::Config::check(&json).err().unwrap_or_default();
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert!(shown.iter().any(|p| p.contains("bots.hook.secret")), "{secret:?}: {shown:?}");
        }
        let fine = r#"{"bots": {"hook": {"kind": "http", "url": "http://127.0.0.1:9000/hook", "secret": "s3"}}}"#;
        let config = crate::channels::Config::parse(fine).unwrap();
        assert_eq!(config.bots.plain_http(), ["bots.hook.url"], "allowed here, named for the deployed check");
    }

    #[test]
    fn a_gateway_session_belongs_to_the_agent_the_model_names() {
        let key = "wxbridge:wecom:hr:u1";
        assert_eq!(gateway_session("openclaw/ops", key), "agent:ops:wxbridge:wecom:hr:u1");
        assert_eq!(gateway_session("openclaw:ops", key), "agent:ops:wxbridge:wecom:hr:u1");
        assert_eq!(gateway_session("agent:ops", key), "agent:ops:wxbridge:wecom:hr:u1");
        assert_eq!(gateway_session("openclaw/default", key), key);
        assert_eq!(gateway_session("openclaw", key), key);
        assert_eq!(gateway_session("gpt-4o", key), key);
    }
}
