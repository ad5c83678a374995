//! The WeCom app callback, independent of how HTTP arrives (Lambda, `wxbridge dev`, tests).
//!
//! GET verifies the URL; POST verifies, decrypts, parses and publishes an `Inbound`. A POST is
//! answered 200 only after the inbound queue has the message. WeCom retries a callback 3 times,
//! 5 s apart: the queue's deduplication by `Inbound` id (five minutes) keeps one copy.

use std::collections::HashMap;
use std::sync::Arc;

use crate::channels::wecom::config::WecomApp;
use crate::channels::wecom::message::WecomCallbackMessage;
use crate::core::callback::{enqueue, verify_url, CallbackError, CallbackRequest, CallbackResponse, MAX_BODY_BYTES};
use crate::core::ports::{Clock, Metrics, Publisher, QueueMessage};
use crate::protocol::crypto::MsgCrypt;
use crate::protocol::query::Query;
use crate::protocol::xml;

/// What an accepted callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// URL verification: the decrypted echostr to answer.
    Verified(String),
    /// On the inbound queue (a retry's copy is dropped by the queue).
    Published { id: String },
    /// Logged and counted, nothing queued: a 微信客服 account was granted to or taken from the
    /// app (`kf_account_auth_change`).
    Noted { event: &'static str },
}

/// The WeCom callback service: per-app crypto plus the ports it publishes through.
pub struct WecomCallback {
    apps: HashMap<String, MsgCrypt>,
    publisher: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    replay_window_secs: u64,
    metrics: Option<Arc<dyn Metrics>>,
}

impl WecomCallback {
    /// Serves `apps`, refusing callbacks older than `replay_window_secs` (0 = off).
    pub fn new(
        apps: &[WecomApp],
        replay_window_secs: u64,
        publisher: Arc<dyn Publisher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            apps: apps.iter().map(|app| (app.app.clone(), app.msg_crypt())).collect(),
            publisher,
            clock,
            replay_window_secs,
            metrics: None,
        }
    }

    /// Counts the events it only notes (`KfAccountAuthChange`) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Handles one request; always answers.
    pub async fn handle(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        match self.accept(req).await {
            Ok(Accepted::Verified(echo)) => {
                tracing::info!(app = req.app, outcome = "verified", "wecom url verification");
                CallbackResponse::ok("text/plain; charset=utf-8", echo)
            }
            Ok(Accepted::Published { id }) => {
                tracing::info!(app = req.app, outcome = "published", id = %id, "wecom callback");
                CallbackResponse::ok("text/plain; charset=utf-8", String::new())
            }
            Ok(Accepted::Noted { event }) => {
                tracing::info!(app = req.app, outcome = "noted", event, "wecom callback");
                CallbackResponse::ok("text/plain; charset=utf-8", String::new())
            }
            Err(err) => err.refuse("wecom", req.app),
        }
    }

    /// The callback's logic, with errors as values.
    pub async fn accept(&self, req: CallbackRequest<'_>) -> Result<Accepted, CallbackError> {
        let crypt = self.apps.get(req.app).ok_or(CallbackError::UnknownApp)?;
        let query = Query::parse(req.raw_query)?;
        match req.method {
            "GET" => verify_url(crypt, &query).map(Accepted::Verified),
            "POST" => self.receive(req.app, crypt, &query, req.body).await,
            _ => Err(CallbackError::MethodNotAllowed),
        }
    }

    async fn receive(
        &self,
        app: &str,
        crypt: &MsgCrypt,
        query: &Query<'_>,
        body: &[u8],
    ) -> Result<Accepted, CallbackError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(CallbackError::BodyTooLarge);
        }
        let msg_signature = query.require("msg_signature")?;
        let timestamp = query.require("timestamp")?;
        let nonce = query.require("nonce")?;
        let sent: u64 = timestamp.parse().map_err(|_| CallbackError::BadTimestamp)?;

        let body = std::str::from_utf8(body).map_err(|_| CallbackError::BodyEncoding)?;
        let encrypt =
            xml::top_level_text(body, "Encrypt").map_err(CallbackError::Body)?.ok_or(CallbackError::NoEncrypt)?;
        // Base64 never contains whitespace; WeChat may indent a non-CDATA Encrypt.
        let verified =
            crypt.verify(msg_signature, timestamp, nonce, encrypt.trim()).map_err(|_| CallbackError::Signature)?;

        let now = self.clock.unix();
        if self.replay_window_secs > 0 && now.abs_diff(sent) > self.replay_window_secs {
            return Err(CallbackError::Stale);
        }
        let plaintext = crypt.decrypt(verified).map_err(CallbackError::Crypto)?;
        let message = WecomCallbackMessage::parse(&plaintext)?;
        if message.fields.text("Event") == Some(KF_AUTH_CHANGE) {
            self.kf_auth_changed(app, &message);
            return Ok(Accepted::Noted { event: KF_AUTH_CHANGE });
        }
        if message.fields.text("Event") == Some(KF_MSG) && message.fields.non_empty("OpenKfId").is_none() {
            // Nothing to pull for, and its Token must not reach the bots.
            tracing::warn!(app, "a kf_msg_or_event without OpenKfId; nothing to pull");
            return Ok(Accepted::Noted { event: KF_MSG });
        }
        let inbound = message.to_inbound(app, now);
        let id = inbound.id.clone();
        match kf_pull(&message, &inbound) {
            // A 微信客服 account has news: a pull, queued once per callback Token (the pull
            // queue's deduplication).
            Some(pull) => self.publisher.publish(pull).await.map_err(CallbackError::Publish)?,
            None => enqueue(self.publisher.as_ref(), &inbound).await?,
        }
        Ok(Accepted::Published { id })
    }
}

/// A 微信客服 account granted to or taken from an app's API management.
const KF_AUTH_CHANGE: &str = "kf_account_auth_change";
/// A 微信客服 account has news to pull.
const KF_MSG: &str = "kf_msg_or_event";

impl WecomCallback {
    /// Logs and counts a `kf_account_auth_change`: which kf accounts the app now serves or no
    /// longer serves (the config must follow).
    fn kf_auth_changed(&self, app: &str, message: &WecomCallbackMessage) {
        let added = message.fields.text("AuthAddOpenKfId").unwrap_or_default();
        let removed = message.fields.text("AuthDelOpenKfId").unwrap_or_default();
        tracing::warn!(app, added, removed, "a 微信客服 account's API management changed; check the kf config");
        if let Some(metrics) = &self.metrics {
            metrics.count("KfAccountAuthChange", &[("app", app), ("added", added), ("removed", removed)]);
        }
    }
}

/// The pull a `kf_msg_or_event` asks for: the event's `Inbound` (its `raw` has `Token` and
/// `OpenKfId`), bound for the 微信客服 pull queue, grouped per kf account there and
/// deduplicated by the event's id.
fn kf_pull(message: &WecomCallbackMessage, inbound: &crate::core::envelope::Inbound) -> Option<QueueMessage> {
    let fields = &message.fields;
    if fields.text("Event") != Some(KF_MSG) {
        return None;
    }
    let open_kfid = fields.non_empty("OpenKfId")?;
    let mut pull = crate::core::callback::inbound_message(inbound);
    pull.attributes.retain(|(name, _)| *name != crate::core::callback::FIFO_GROUP);
    pull.attributes.extend([
        (crate::core::callback::QUEUE_ATTRIBUTE, crate::core::callback::KF_PULL.to_owned()),
        (crate::core::callback::FIFO_GROUP, format!("{}:{open_kfid}", message.header.to)),
    ]);
    Some(pull)
}

#[async_trait::async_trait]
impl crate::core::callback::CallbackService for WecomCallback {
    async fn serve(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        self.handle(req).await
    }
}
