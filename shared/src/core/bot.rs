//! The bot port: what answers an `Inbound`, and the `bot` config section that picks one.

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use crate::core::config::{check_url, invalid, keep, Document};
use crate::core::envelope::{Content, Inbound};

/// Why a bot gave no answer this time (retried through SQS, never dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bot: {0}")]
pub struct BotError(pub String);

/// Something that answers messages.
#[async_trait]
pub trait Bot: Send + Sync {
    /// The replies to `inbound`, in order; none is a fine answer.
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError>;
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

impl BotConfig {
    /// The `bot` section (the echo bot when absent).
    pub fn from_document(doc: &mut Document) -> Self {
        match doc.value::<RawBot>("bot") {
            None | Some(RawBot::Echo) => BotConfig::Echo,
            Some(RawBot::Http { url, secret }) => BotConfig::Http {
                url: keep(doc.problems(), check_url("bot.url".into(), &url)).unwrap_or_default(),
                secret,
            },
            Some(RawBot::OpenAi { base_url, api_key, model, system_prompt }) => {
                if model.is_empty() {
                    doc.problem(invalid("bot.model", "must not be empty"));
                }
                BotConfig::OpenAi {
                    base_url: keep(doc.problems(), check_url("bot.base_url".into(), &base_url)).unwrap_or_default(),
                    api_key,
                    model,
                    system_prompt,
                }
            }
        }
    }
}
