//! The sender: delivers queued `Outbound` messages once, through the channel each names.
//!
//! Per record: an invalid envelope or unsupported content is permanent (DLQ with the reason);
//! each part of a message is sent at most once per idempotency key (a marker claimed before the
//! call, completed after it); the one errcode table ([`crate::core::http::classify`]) decides between
//! success, a token refresh and one retry, a later retry with a growing backoff, and the DLQ.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::core::config::Config;
use crate::core::envelope::{Content, OutChannel, Outbound};
use crate::core::http::{classify, ApiError, Family, Verdict, WechatApi};
use crate::core::outbound::{self, part_key};
use crate::core::ports::{
    Claim, Clock, ContextTokens, Dedupe, Metrics, OutboundQueue, ParkedReplies, PortError, SendMetric,
};
use crate::core::tokens::{TokenError, Tokens};

/// How long a claim on a part protects an in-flight send: longer than one API call can take
/// (15 s), twice over for the token refresh and retry.
pub const SEND_LEASE: Duration = Duration::from_secs(60);
/// The longest backoff before a retry (SQS allows 12 h; WeChat's limits reset within minutes).
pub const MAX_BACKOFF_S: u32 = 900;

/// One SQS record, as the Lambda event gives it.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// SQS's ApproximateReceiveCount: 1 on the first delivery.
    pub receive_count: u32,
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every part was sent (now, or already by an earlier delivery).
    Sent { parts: usize, already_sent: usize },
    /// Try again later; the record is reported as a batch item failure.
    Retry { reason: String, errcode: Option<i64>, min_backoff_s: u32 },
    /// Never retried: dead-lettered with the reason, then deleted.
    Permanent { reason: String, errcode: Option<i64>, errmsg: String },
}

impl Outcome {
    fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent { reason: reason.into(), errcode: None, errmsg: String::new() }
    }
}

/// A failed part: the verdict of the errcode table and what WeChat said.
struct Failure {
    verdict: Verdict,
    errcode: Option<i64>,
    message: String,
}

impl Failure {
    fn from_api(family: Family, err: &ApiError) -> Self {
        Self { verdict: classify(family, err), errcode: err.errcode(), message: err.to_string() }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self { verdict: Verdict::Permanent, errcode: None, message: message.into() }
    }

    fn transient(message: impl Into<String>) -> Self {
        Self { verdict: Verdict::Transient { min_backoff_s: 0 }, errcode: None, message: message.into() }
    }

    fn from_token(family: Family, err: TokenError) -> Self {
        match err {
            TokenError::Fetch(api) => {
                // A token call that fails on credentials is a configuration error, not a retry.
                let mut failure = Self::from_api(family, &api);
                if failure.verdict == Verdict::RefreshToken {
                    failure.verdict = Verdict::Permanent;
                }
                failure.message = format!("token call: {}", failure.message);
                failure
            }
            other => Self::transient(other.to_string()),
        }
    }
}

/// The sender's dependencies, built once per process.
pub struct Sender {
    pub config: Arc<Config>,
    pub api: WechatApi,
    pub tokens: Tokens,
    /// Idempotency markers of sent parts.
    pub sent: Arc<dyn Dedupe>,
    pub queue: Arc<dyn OutboundQueue>,
    pub contexts: Arc<dyn ContextTokens>,
    /// Official Account replies kept for the user's next message when the account may not use
    /// the customer-service API (48001).
    pub parked: Arc<dyn ParkedReplies>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
}

/// The backoff before retry number `receive_count`: 10 s, 20 s, 40 s, … up to 15 min, never less
/// than what the error asks for, with a little jitter so a burst does not return as a burst.
pub fn backoff_s(receive_count: u32, min_backoff_s: u32) -> u32 {
    let exponential = 10u32.saturating_mul(1 << receive_count.saturating_sub(1).min(10));
    let jitter = u32::from(crate::protocol::crypto::random_prefix()[0] % 5);
    exponential.max(min_backoff_s).min(MAX_BACKOFF_S) + jitter
}

impl Sender {
    /// Handles a batch; returns the message ids to report as batch item failures.
    ///
    /// Records to different recipients are sent concurrently; records to one recipient keep
    /// their order within the batch.
    pub async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        let mut groups: Vec<(String, Vec<&Record>)> = Vec::new();
        for record in records {
            let recipient = recipient_of(&record.body);
            match groups.iter_mut().find(|(r, _)| *r == recipient) {
                Some((_, group)) => group.push(record),
                None => groups.push((recipient, vec![record])),
            }
        }
        let sends = groups.into_iter().map(|(_, group)| async move {
            let mut failed = Vec::new();
            for record in group {
                // Once one fails, the later ones to the same recipient wait for it.
                if !failed.is_empty() || !self.handle(record).await {
                    failed.push(record.message_id.clone());
                }
            }
            failed
        });
        futures_util::future::join_all(sends).await.into_iter().flatten().collect()
    }

    /// Handles one record; false when it must be reported as failed (SQS delivers it again).
    pub async fn handle(&self, record: &Record) -> bool {
        let (channel, outcome) = self.send_record(record).await;
        let channel = channel.map(OutChannel::as_str).unwrap_or("unknown");
        match &outcome {
            Outcome::Sent { parts, already_sent } => {
                tracing::info!(channel, outcome = "sent", parts, already_sent, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "sent", errcode: None });
                true
            }
            Outcome::Retry { reason, errcode, min_backoff_s } => {
                let delay = backoff_s(record.receive_count, *min_backoff_s);
                tracing::warn!(channel, outcome = "retry", errcode, reason = %reason, delay_s = delay, receive_count = record.receive_count, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "retry", errcode: *errcode });
                if let Err(err) = self.queue.retry_later(&record.receipt_handle, delay).await {
                    // The message still comes back after the queue's visibility timeout.
                    tracing::warn!(error = %err, "could not set the retry delay");
                }
                false
            }
            Outcome::Permanent { reason, errcode, errmsg } => {
                tracing::error!(channel, outcome = "dead_letter", errcode, reason = %reason, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "dead_letter", errcode: *errcode });
                let attributes = [
                    ("channel", channel.to_owned()),
                    ("errcode", errcode.map(|c| c.to_string()).unwrap_or_else(|| "none".to_owned())),
                    ("errmsg", attribute_value(errmsg)),
                    ("reason", attribute_value(reason)),
                ];
                match self.queue.dead_letter(&record.body, &attributes).await {
                    Ok(()) => true,
                    Err(err) => {
                        // Never drop it: let SQS deliver it again (its redrive policy ends in the DLQ too).
                        tracing::error!(error = %err, "could not dead-letter; the message stays on the queue");
                        false
                    }
                }
            }
        }
    }

    /// Sends every part of one record.
    pub async fn send_record(&self, record: &Record) -> (Option<OutChannel>, Outcome) {
        let out = match Outbound::parse(&record.body) {
            Ok(out) => out,
            Err(err) => return (None, Outcome::permanent(format!("invalid envelope: {err}"))),
        };
        let parts = match outbound::parts(&out) {
            Ok(parts) => parts,
            Err(err) => return (Some(out.channel), Outcome::permanent(err.to_string())),
        };
        if !self.has_account(&out) {
            let reason = format!("no {} account named '{}' in the config", out.channel.as_str(), out.account);
            return (Some(out.channel), Outcome::permanent(reason));
        }
        let total = parts.len();
        let mut already_sent = 0;
        let mut undelivered = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let key = format!(
                "sent:{}:{}:{}",
                out.channel.as_str(),
                out.account,
                part_key(&out.idempotency_key, index, total)
            );
            let token = match self.sent.claim(&key, self.clock.now(), SEND_LEASE).await {
                Err(err) => return (Some(out.channel), store_unavailable(err)),
                Ok(Claim::Published) => {
                    already_sent += 1;
                    continue;
                }
                Ok(Claim::InFlight) => {
                    let reason = "another sender is sending this part".to_owned();
                    return (
                        Some(out.channel),
                        Outcome::Retry { reason, errcode: None, min_backoff_s: SEND_LEASE.as_secs() as u32 },
                    );
                }
                Ok(Claim::Claimed { token }) => token,
            };
            match self.deliver(&out, part, &key, record.receive_count).await {
                Ok(missed) => {
                    undelivered.extend(missed);
                    if !self.complete_with_retries(&key, &token).await {
                        // Sent but not recorded: stop here; the claim's lease keeps the part from
                        // being sent again while the store recovers.
                        let reason = "sent a part but could not record it; later parts wait".to_owned();
                        return (
                            Some(out.channel),
                            Outcome::Retry { reason, errcode: None, min_backoff_s: SEND_LEASE.as_secs() as u32 },
                        );
                    }
                }
                Err(failure)
                    if out.channel == OutChannel::Oa
                        && failure.errcode == Some(48001)
                        && crate::channels::oa::service::passive(part, false).is_some() =>
                {
                    // No customer-service permission: the user gets it as the next passive reply.
                    let json = serde_json::to_string(part).unwrap_or_default();
                    if let Err(err) = self.parked.park(&out.account, &out.to, &json, self.clock.now()).await {
                        let _ = self.sent.release(&key, &token).await;
                        return (Some(out.channel), store_unavailable(err));
                    }
                    tracing::info!(account = %out.account, "customer service not permitted (48001); reply parked for the user's next message");
                    self.metrics.record(&SendMetric { channel: "oa", outcome: "parked", errcode: Some(48001) });
                    if !self.complete_with_retries(&key, &token).await {
                        let reason = "parked a part but could not record it".to_owned();
                        return (
                            Some(out.channel),
                            Outcome::Retry { reason, errcode: None, min_backoff_s: SEND_LEASE.as_secs() as u32 },
                        );
                    }
                }
                Err(failure) => {
                    if let Err(err) = self.sent.release(&key, &token).await {
                        tracing::warn!(error = %err, "could not release the send claim; it expires with its lease");
                    }
                    let outcome = match failure.verdict {
                        Verdict::Permanent => Outcome::Permanent {
                            reason: format!("part {} of {total}: {}", index + 1, failure.message),
                            errcode: failure.errcode,
                            errmsg: failure.message,
                        },
                        Verdict::Transient { min_backoff_s } => {
                            Outcome::Retry { reason: failure.message, errcode: failure.errcode, min_backoff_s }
                        }
                        // A second token rejection right after a refresh: retry later.
                        Verdict::RefreshToken => {
                            Outcome::Retry { reason: failure.message, errcode: failure.errcode, min_backoff_s: 0 }
                        }
                    };
                    return (Some(out.channel), outcome);
                }
            }
        }
        if !undelivered.is_empty() {
            // Sent (and recorded, so never resent), but not to everyone: the operator should know.
            let reason = format!("WeCom did not deliver to {}", undelivered.join("; "));
            return (
                Some(out.channel),
                Outcome::Permanent { reason, errcode: None, errmsg: "partial delivery".to_owned() },
            );
        }
        (Some(out.channel), Outcome::Sent { parts: total, already_sent })
    }

    fn has_account(&self, out: &Outbound) -> bool {
        let config = &self.config;
        match out.channel {
            OutChannel::WecomApp | OutChannel::WecomAppchat => config.wecom_app(&out.account).is_some(),
            OutChannel::WecomWebhook => config.robots.iter().any(|r| r.name == out.account),
            OutChannel::Oa => config.oa.iter().any(|a| a.app == out.account),
            OutChannel::Ilink => config.ilink.iter().any(|a| a.account == out.account),
        }
    }

    /// Records a sent part, trying a few times: a lost record could mean a second send.
    async fn complete_with_retries(&self, key: &str, token: &str) -> bool {
        for attempt in 0..3u64 {
            match self.sent.complete(key, token, self.clock.now()).await {
                Ok(()) => return true,
                Err(err) => {
                    tracing::error!(error = %err, attempt, "sent but could not record it");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        false
    }

    /// One part through the channel's API; returns the recipients WeCom reported it could not
    /// deliver to (a partial failure still answers errcode 0).
    async fn deliver(
        &self,
        out: &Outbound,
        part: &Content,
        key: &str,
        receive_count: u32,
    ) -> Result<Vec<String>, Failure> {
        let config = &self.config;
        match out.channel {
            OutChannel::WecomApp | OutChannel::WecomAppchat => {
                let app = config.wecom_app(&out.account).ok_or_else(|| no_account(out))?;
                let secret = app
                    .secret
                    .clone()
                    .ok_or_else(|| Failure::permanent(format!("WeCom app '{}' has no secret configured", app.app)))?;
                let (path, mut body) = if out.channel == OutChannel::WecomApp {
                    ("message/send", outbound::wecom_app_body(app.agent_id, &out.to, part))
                } else {
                    ("appchat/send", outbound::appchat_body(&out.to, part))
                };
                if receive_count > 1 && out.channel == OutChannel::WecomApp {
                    // A retry after an unknown outcome: let WeCom drop an identical repeat.
                    body["enable_duplicate_check"] = 1.into();
                    body["duplicate_check_interval"] = 1800.into();
                }
                let token_key = format!("token#wecom:{}:{}", app.corp_id, app.agent_id);
                let fetch = || self.api.wecom_token(&app.corp_id, &secret);
                let answer = self
                    .with_token(Family::Wecom, &token_key, fetch, |token| {
                        let body = &body;
                        async move { self.api.wecom_post(path, &token, body).await }
                    })
                    .await?;
                // Partial failure is errcode 0 with the bad recipients listed.
                Ok(["invaliduser", "invalidparty", "invalidtag", "unlicenseduser"]
                    .into_iter()
                    .filter_map(|field| {
                        answer
                            .get(field)
                            .and_then(Value::as_str)
                            .filter(|v| !v.is_empty())
                            .map(|v| format!("{field}={v}"))
                    })
                    .collect())
            }
            OutChannel::WecomWebhook => {
                let robot = config.robots.iter().find(|r| r.name == out.account).ok_or_else(|| no_account(out))?;
                self.api
                    .webhook_send(&robot.key, &outbound::webhook_body(part))
                    .await
                    .map(|_| Vec::new())
                    .map_err(|e| Failure::from_api(Family::Wecom, &e))
            }
            OutChannel::Oa => {
                let oa = config.oa.iter().find(|a| a.app == out.account).ok_or_else(|| no_account(out))?;
                let secret = oa.app_secret.clone().ok_or_else(|| {
                    Failure::permanent(format!("Official Account '{}' has no app_secret configured", oa.app))
                })?;
                let token_key = format!("token#oa:{}", oa.app_id);
                let fetch = || self.api.oa_stable_token(&oa.app_id, &secret);
                let body = outbound::oa_body(&out.to, part);
                self.with_token(Family::Oa, &token_key, fetch, |token| {
                    let body = &body;
                    async move { self.api.oa_post("message/custom/send", &token, body).await }
                })
                .await
                .map(|_| Vec::new())
            }
            OutChannel::Ilink => {
                let account = config.ilink.iter().find(|a| a.account == out.account).ok_or_else(|| no_account(out))?;
                let Content::Text { text } = part else {
                    return Err(Failure::permanent("iLink sends text only"));
                };
                let context = self
                    .contexts
                    .latest(&account.account, &out.to)
                    .await
                    .map_err(|e| Failure::transient(e.to_string()))?;
                let context = context.ok_or_else(|| {
                    Failure::permanent("no context_token for this user: the user must write to the bot first")
                })?;
                // The same part keeps its client_id across retries.
                let client_id = format!("wxbridge:{}", short_hash(key));
                let body = serde_json::json!({"msg": outbound::ilink_text_msg(&out.to, &context, &client_id, text)});
                self.api
                    .ilink_post(&account.base_url, &account.bot_token, "sendmessage", body)
                    .await
                    .map(|_| Vec::new())
                    .map_err(|e| Failure::from_api(Family::Ilink, &e))
            }
        }
    }

    /// Calls with the shared token; on a token error, drops that token (if still current),
    /// refreshes and retries once.
    async fn with_token<F, Fut, C, CFut>(
        &self,
        family: Family,
        token_key: &str,
        fetch: F,
        call: C,
    ) -> Result<Value, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<crate::core::http::IssuedToken, ApiError>>,
        C: Fn(SecretString) -> CFut,
        CFut: std::future::Future<Output = Result<Value, ApiError>>,
    {
        let token = self.tokens.get(token_key, &fetch).await.map_err(|e| Failure::from_token(family, e))?;
        match call(token.clone()).await {
            Ok(answer) => Ok(answer),
            Err(err) if classify(family, &err) == Verdict::RefreshToken => {
                tracing::info!(errcode = err.errcode(), "access token rejected; refreshing once");
                self.tokens.invalidate(token_key, &token).await.map_err(|e| Failure::transient(e.to_string()))?;
                let fresh = self.tokens.get(token_key, &fetch).await.map_err(|e| Failure::from_token(family, e))?;
                call(fresh).await.map_err(|e| Failure::from_api(family, &e))
            }
            Err(err) => Err(Failure::from_api(family, &err)),
        }
    }
}

/// Who a queued message goes to, for ordering; unreadable bodies each get their own group.
fn recipient_of(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => format!(
            "{}|{}|{}",
            v["channel"].as_str().unwrap_or("?"),
            v["account"].as_str().unwrap_or("?"),
            v["to"].as_str().unwrap_or("")
        ),
        Err(_) => format!("unreadable|{}", short_hash(body)),
    }
}

fn no_account(out: &Outbound) -> Failure {
    Failure::permanent(format!("no {} account named '{}' in the config", out.channel.as_str(), out.account))
}

fn store_unavailable(err: PortError) -> Outcome {
    Outcome::Retry { reason: err.to_string(), errcode: None, min_backoff_s: 0 }
}

/// SQS refuses empty attribute values and control characters.
fn attribute_value(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = truncate(clean.trim(), 256);
    if clean.is_empty() {
        "none".to_owned()
    } else {
        clean
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn short_hash(text: &str) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The secret's text, for building per-channel fetches in tests.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_receives_and_honours_the_minimum() {
        let base = |n| backoff_s(n, 0) / 5 * 5;
        assert!(backoff_s(1, 0) >= 10 && backoff_s(1, 0) < 15);
        assert!(base(3) >= 40 && base(3) < 45);
        assert!(backoff_s(2, 60) >= 60);
        assert!(backoff_s(30, 0) <= MAX_BACKOFF_S + 4);
    }

    #[test]
    fn attribute_values_are_never_empty_or_control_characters() {
        assert_eq!(attribute_value(""), "none");
        assert_eq!(attribute_value("a\nb\u{0}"), "a b");
        assert_eq!(attribute_value(&"x".repeat(300)).len(), 256);
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("你好", 4), "你");
        assert_eq!(truncate("ok", 10), "ok");
    }
}
