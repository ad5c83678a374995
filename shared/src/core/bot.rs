//! The bot port: what answers an `Inbound`, and the `bot` config section that picks one.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use crate::core::config::{check_url, invalid, keep, Document};
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
    fn replies_later(&self) -> bool {
        false
    }
}

/// Where a streaming bot shows its answer while it grows (the WeCom AI bot's stream).
#[async_trait]
pub trait AnswerSink: Send + Sync {
    /// The whole answer so far (not a delta); called as it grows. Implementations throttle.
    async fn grow(&self, text: &str);
}

/// Which bot answers inbound messages.
#[derive(Debug, Clone, Default)]
pub enum BotConfig {
    #[default]
    Echo,
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
    },
    /// Each resolved `Inbound` goes on the bot queue, for a consumer in any language that
    /// answers with `Outbound` messages on the outbound queue.
    Queue,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawBot {
    Echo,
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
    },
    Queue,
}

/// `bot.timeout_s` as a duration: [`DEFAULT_BOT_TIMEOUT`] when absent, 1 s to [`MAX_BOT_TIMEOUT`].
fn timeout(doc: &mut Document, timeout_s: Option<u64>) -> Duration {
    let Some(secs) = timeout_s else { return DEFAULT_BOT_TIMEOUT };
    if (1..=MAX_BOT_TIMEOUT.as_secs()).contains(&secs) {
        Duration::from_secs(secs)
    } else {
        doc.problem(invalid("bot.timeout_s", format!("must be 1-{} seconds (14 minutes)", MAX_BOT_TIMEOUT.as_secs())));
        DEFAULT_BOT_TIMEOUT
    }
}

impl BotConfig {
    /// The `bot` section (the echo bot when absent).
    pub fn from_document(doc: &mut Document) -> Self {
        match doc.value::<RawBot>("bot") {
            None | Some(RawBot::Echo) => BotConfig::Echo,
            Some(RawBot::Queue) => BotConfig::Queue,
            Some(RawBot::Http { url, secret, timeout_s }) => BotConfig::Http {
                url: keep(doc.problems(), check_url("bot.url".into(), &url)).unwrap_or_default(),
                secret,
                timeout: timeout(doc, timeout_s),
            },
            Some(RawBot::OpenAi { base_url, api_key, model, system_prompt, timeout_s, stream }) => {
                if model.is_empty() {
                    doc.problem(invalid("bot.model", "must not be empty"));
                }
                BotConfig::OpenAi {
                    base_url: keep(doc.problems(), check_url("bot.base_url".into(), &base_url)).unwrap_or_default(),
                    api_key,
                    model,
                    system_prompt,
                    timeout: timeout(doc, timeout_s),
                    stream,
                }
            }
        }
    }

    /// How long one call of the bot may take.
    pub fn timeout(&self) -> Duration {
        match self {
            BotConfig::Echo | BotConfig::Queue => DEFAULT_BOT_TIMEOUT,
            BotConfig::Http { timeout, .. } | BotConfig::OpenAi { timeout, .. } => *timeout,
        }
    }
}
