//! The WeCom app callback, independent of how HTTP arrives (Lambda, `wxbridge dev`, tests).
//!
//! GET verifies the URL; POST verifies, decrypts, parses, dedupes and publishes an `Inbound`.
//! A POST is answered 200 only after the inbound queue has the message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, WecomApp};
use crate::crypto::{CryptoError, MsgCrypt};
use crate::ports::{Claim, Clock, Dedupe, PortError, Publisher, QueueMessage};
use crate::query::{Query, QueryError};
use crate::wecom::message::{MessageError, WecomCallbackMessage};
use crate::xml::{self, XmlError};

/// Bodies above this are refused before any work (WeChat's messages are a few KB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a claim on a message protects an in-flight publish. Shorter than WeChat's ~5 s
/// retry interval times its retries, so a crashed handler's claim expires before WeChat gives up;
/// longer than a publish can take (the SQS client's operation timeout is below it).
pub const CLAIM_LEASE: Duration = Duration::from_secs(6);

/// An HTTP request as the callback sees it.
#[derive(Debug, Clone, Copy)]
pub struct CallbackRequest<'a> {
    pub method: &'a str,
    /// The `{app}` path segment.
    pub app: &'a str,
    /// The query string exactly as received (percent-encoded).
    pub raw_query: &'a str,
    pub body: &'a [u8],
}

/// The HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Why a callback was not accepted. [`CallbackError::status`] is the one place that maps
/// these to HTTP: the client's faults are 4xx, ours are 503 so WeChat retries.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("unknown app")]
    UnknownApp,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("body is not UTF-8")]
    BodyEncoding,
    #[error("body: {0}")]
    Body(XmlError),
    #[error("body has no Encrypt element")]
    NoEncrypt,
    #[error("signature mismatch")]
    Signature,
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("ciphertext: {0}")]
    Crypto(CryptoError),
    #[error("decrypted message: {0}")]
    Message(#[from] MessageError),
    #[error("message is being published by another request")]
    InFlight,
    #[error("dedupe store: {0}")]
    Dedupe(PortError),
    #[error("inbound queue: {0}")]
    Publish(PortError),
}

impl CallbackError {
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownApp => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTooLarge => 413,
            Self::Query(_) | Self::BadTimestamp | Self::BodyEncoding | Self::Body(_) | Self::NoEncrypt => 400,
            Self::Signature => 401,
            Self::Stale => 403,
            // A valid signature over undecryptable data: a key or receive-id misconfiguration.
            Self::Crypto(_) | Self::Message(_) => 400,
            Self::InFlight | Self::Dedupe(_) | Self::Publish(_) => 503,
        }
    }

    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownApp => "unknown_app",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::Query(_) => "bad_query",
            Self::BadTimestamp => "bad_timestamp",
            Self::BodyEncoding | Self::Body(_) | Self::NoEncrypt => "bad_body",
            Self::Signature => "signature_mismatch",
            Self::Stale => "stale_timestamp",
            Self::Crypto(err) => err.kind(),
            Self::Message(_) => "bad_message",
            Self::InFlight => "in_flight",
            Self::Dedupe(_) => "dedupe_unavailable",
            Self::Publish(_) => "queue_unavailable",
        }
    }

    fn response(&self) -> CallbackResponse {
        let body = match self {
            // Dependency details stay in the logs.
            Self::Dedupe(_) | Self::Publish(_) => "temporarily unavailable, retry".to_owned(),
            other => other.to_string(),
        };
        CallbackResponse { status: self.status(), content_type: "text/plain; charset=utf-8", body }
    }
}

/// What an accepted callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// URL verification: the decrypted echostr to answer.
    Verified(String),
    /// Published to the inbound queue.
    Published { id: String },
    /// Already published by an earlier delivery.
    Duplicate { id: String },
}

/// The WeCom callback service: per-app crypto plus the ports it publishes through.
pub struct WecomCallback {
    apps: HashMap<String, MsgCrypt>,
    publisher: Arc<dyn Publisher>,
    dedupe: Arc<dyn Dedupe>,
    clock: Arc<dyn Clock>,
    replay_window_secs: u64,
}

impl WecomCallback {
    pub fn new(config: &Config, publisher: Arc<dyn Publisher>, dedupe: Arc<dyn Dedupe>, clock: Arc<dyn Clock>) -> Self {
        Self {
            apps: config.wecom.iter().map(|app: &WecomApp| (app.app.clone(), app.msg_crypt())).collect(),
            publisher,
            dedupe,
            clock,
            replay_window_secs: config.replay_window_secs,
        }
    }

    /// Handles one request; always answers.
    pub async fn handle(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        match self.accept(req).await {
            Ok(Accepted::Verified(echo)) => {
                tracing::info!(app = req.app, outcome = "verified", "wecom url verification");
                CallbackResponse { status: 200, content_type: "text/plain; charset=utf-8", body: echo }
            }
            Ok(Accepted::Published { id }) => {
                tracing::info!(app = req.app, outcome = "published", id = %id, "wecom callback");
                CallbackResponse { status: 200, content_type: "text/plain; charset=utf-8", body: String::new() }
            }
            Ok(Accepted::Duplicate { id }) => {
                tracing::info!(app = req.app, outcome = "duplicate", id = %id, "wecom callback");
                CallbackResponse { status: 200, content_type: "text/plain; charset=utf-8", body: String::new() }
            }
            Err(err) => {
                let status = err.status();
                // A valid signature over undecryptable data means a key or corp id mismatch.
                if status >= 500 || matches!(err, CallbackError::Crypto(_) | CallbackError::Message(_)) {
                    tracing::error!(app = req.app, outcome = err.kind(), status, error = %err, "wecom callback");
                } else {
                    tracing::warn!(app = req.app, outcome = err.kind(), status, error = %err, "wecom callback refused");
                }
                err.response()
            }
        }
    }

    /// The callback's logic, with errors as values.
    pub async fn accept(&self, req: CallbackRequest<'_>) -> Result<Accepted, CallbackError> {
        let crypt = self.apps.get(req.app).ok_or(CallbackError::UnknownApp)?;
        let query = Query::parse(req.raw_query)?;
        match req.method {
            "GET" => verify_url(crypt, &query),
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
        let inbound = message.to_inbound(app, now);
        let id = inbound.id.clone();

        match publish_once(self.dedupe.as_ref(), self.publisher.as_ref(), self.clock.as_ref(), &inbound).await? {
            Published::Now => Ok(Accepted::Published { id }),
            Published::Before => Ok(Accepted::Duplicate { id }),
            Published::ByAnother => Err(CallbackError::InFlight),
        }
    }
}

/// GET: answer the decrypted echostr, so the admin console can save the URL.
fn verify_url(crypt: &MsgCrypt, query: &Query<'_>) -> Result<Accepted, CallbackError> {
    let msg_signature = query.require("msg_signature")?;
    let timestamp = query.require("timestamp")?;
    let nonce = query.require("nonce")?;
    let echostr = query.require("echostr")?;
    let verified = crypt.verify(msg_signature, timestamp, nonce, echostr).map_err(|_| CallbackError::Signature)?;
    Ok(Accepted::Verified(crypt.decrypt(verified).map_err(CallbackError::Crypto)?))
}

/// How [`publish_once`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// This call put the message on the queue.
    Now,
    /// An earlier delivery did.
    Before,
    /// Another request holds the claim and may be publishing right now.
    ByAnother,
}

/// Publishes `inbound` once however often WeChat delivers it: claims its id (with a lease),
/// publishes, then completes the marker; releases the claim if publishing failed, so the marker
/// never swallows a message that did not reach the queue.
pub async fn publish_once(
    dedupe: &dyn Dedupe,
    publisher: &dyn Publisher,
    clock: &dyn Clock,
    inbound: &crate::envelope::Inbound,
) -> Result<Published, CallbackError> {
    let id = &inbound.id;
    let token = match dedupe.claim(id, clock.now(), CLAIM_LEASE).await.map_err(CallbackError::Dedupe)? {
        Claim::Published => return Ok(Published::Before),
        Claim::InFlight => return Ok(Published::ByAnother),
        Claim::Claimed { token } => token,
    };
    let channel =
        serde_json::to_value(inbound.channel).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let queued = QueueMessage {
        body: inbound.to_json(),
        attributes: vec![("channel", channel), ("account", inbound.account.clone())],
    };
    if let Err(err) = publisher.publish(queued).await {
        // Free the marker so WeChat's retry publishes; if this fails too, the lease expires.
        if let Err(release) = dedupe.release(id, &token).await {
            tracing::warn!(id = %id, error = %release, "could not release dedupe claim; it expires with its lease");
        }
        return Err(CallbackError::Publish(err));
    }
    // The queue has it: the caller may acknowledge even if the marker cannot be completed.
    if let Err(err) = dedupe.complete(id, &token, clock.now()).await {
        tracing::warn!(id = %id, error = %err, "published but could not complete dedupe marker");
    }
    Ok(Published::Now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_one_status() {
        let port = || PortError::new("x", "y");
        let cases: Vec<(CallbackError, u16)> = vec![
            (CallbackError::UnknownApp, 404),
            (CallbackError::MethodNotAllowed, 405),
            (CallbackError::BodyTooLarge, 413),
            (CallbackError::Query(QueryError::Missing("nonce")), 400),
            (CallbackError::BadTimestamp, 400),
            (CallbackError::BodyEncoding, 400),
            (CallbackError::Body(XmlError::Dtd), 400),
            (CallbackError::NoEncrypt, 400),
            (CallbackError::Signature, 401),
            (CallbackError::Stale, 403),
            (CallbackError::Crypto(CryptoError::BadPadding), 400),
            (CallbackError::Message(MessageError::Missing("MsgType")), 400),
            (CallbackError::InFlight, 503),
            (CallbackError::Dedupe(port()), 503),
            (CallbackError::Publish(port()), 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.response().status, status);
            assert!(!err.kind().is_empty());
        }
    }

    #[test]
    fn dependency_failures_do_not_leak_details_to_the_caller() {
        let response =
            CallbackError::Publish(PortError::new("sqs", "https://sqs.internal/123/queue refused")).response();
        assert!(!response.body.contains("sqs.internal"));
    }
}
