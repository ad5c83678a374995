//! The bots the dispatcher can call: an HTTP webhook signed with a shared secret, and any
//! OpenAI-compatible chat completions endpoint (e.g. an OpenClaw gateway).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::core::bot::{Bot, BotConfig, BotError};
use crate::core::envelope::{Content, Inbound};
use crate::core::http::{ApiError, Http, HttpSettings};

/// How long a bot may take; SQS retries after it (the dispatcher's timeout is 60 s).
pub const BOT_TIMEOUT: Duration = Duration::from_secs(45);
/// Headers of the webhook call.
pub const TIMESTAMP_HEADER: &str = "X-Wxbridge-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Wxbridge-Signature";

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: what a webhook checks.
pub fn webhook_signature(secret: &SecretString, timestamp: &str, body: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Answers text with the same text (and a voice message with its transcript).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoBot;

#[async_trait]
impl Bot for EchoBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        Ok(inbound.text.iter().filter(|t| !t.is_empty()).map(|text| Content::Text { text: text.clone() }).collect())
    }
}

/// POSTs the `Inbound` JSON; `200 {"replies": [content, …]}` or `204` for no reply.
pub struct HttpBot {
    http: reqwest::Client,
    url: String,
    secret: SecretString,
}

fn transport(err: reqwest::Error) -> BotError {
    BotError(err.without_url().to_string())
}

#[async_trait]
impl Bot for HttpBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let body = inbound.to_json();
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).to_string();
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, webhook_signature(&self.secret, &timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(BotError(format!("webhook answered HTTP {status}")));
        }
        let answer: Value = response.json().await.map_err(transport)?; // Only 204 or an explicit list says "no reply"; anything else is an error to retry.
        let replies =
            answer.get("replies").cloned().ok_or_else(|| BotError("webhook answer has no \"replies\" list".into()))?;
        serde_json::from_value(replies).map_err(|e| BotError(format!("webhook replies are not Outbound contents: {e}")))
    }
}

/// Chat completions: the message text in, the first choice's text out. `user` is a stable
/// conversation key, so gateways that keep sessions (OpenClaw) keep one per conversation.
pub struct OpenAiBot {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    model: String,
    system_prompt: Option<String>,
}

impl OpenAiBot {
    /// The request for `inbound`, or none when it carries no text.
    pub fn request(&self, inbound: &Inbound) -> Option<Value> {
        let text = inbound.text.as_deref().filter(|t| !t.trim().is_empty())?;
        let mut messages = Vec::new();
        if let Some(prompt) = &self.system_prompt {
            messages.push(json!({"role": "system", "content": prompt}));
        }
        messages.push(json!({"role": "user", "content": text}));
        let user = format!(
            "wxbridge:{}:{}:{}",
            serde_json::to_value(inbound.channel).ok()?.as_str()?,
            inbound.account,
            inbound.conversation.id
        );
        Some(json!({"model": self.model, "messages": messages, "user": user}))
    }
}

#[async_trait]
impl Bot for OpenAiBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let Some(request) = self.request(inbound) else { return Ok(Vec::new()) };
        let response = self
            .http
            .post(format!("{}/v1/chat/completions", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .json(&request)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BotError(format!("chat completions answered HTTP {status}")));
        }
        let answer: Value = response.json().await.map_err(transport)?; // A missing answer (an error body, tool calls, null content) is retried, not taken as silence.
        let text = answer["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| BotError("chat completions answer has no text in choices[0].message.content".into()))?
            .trim()
            .to_owned();
        Ok(if text.is_empty() { Vec::new() } else { vec![Content::Text { text }] })
    }
}

/// The bot the configuration names.
pub fn from_config(config: &BotConfig, http: &Http) -> Arc<dyn Bot> {
    let http = http.client().clone();
    match config {
        BotConfig::Echo => Arc::new(EchoBot),
        BotConfig::Http { url, secret } => Arc::new(HttpBot { http, url: url.clone(), secret: secret.clone() }),
        BotConfig::OpenAi { base_url, api_key, model, system_prompt } => Arc::new(OpenAiBot {
            http,
            base_url: base_url.clone(),
            api_key: api_key.clone(),
            model: model.clone(),
            system_prompt: system_prompt.clone(),
        }),
    }
}

/// The dispatcher's HTTP client: bots may take up to [`BOT_TIMEOUT`]; the platform calls made
/// on it (typing) set shorter timeouts of their own.
pub fn http_client() -> Result<Http, ApiError> {
    // A bot may also be slow to accept the connection: the whole call has BOT_TIMEOUT.
    Http::new(&HttpSettings { timeout: BOT_TIMEOUT, connect_timeout: BOT_TIMEOUT })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = webhook_signature(&SecretString::from("Jefe".to_owned()), "what do ya want ", "for nothing?");
        assert_ne!(sig, webhook_signature(&SecretString::from("Jefe".to_owned()), "what do ya want", " for nothing?"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want .for nothing?");
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, format!("sha256={expected}"));
    }
}
