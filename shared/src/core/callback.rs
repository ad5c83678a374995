//! What every callback function shares: the HTTP request and answer as the handlers see them,
//! the one map from refusal to status, and publishing an `Inbound` once.

use std::time::Duration;

use crate::core::config::{invalid, Document};
use crate::core::ports::{Claim, Clock, Dedupe, PortError, Publisher, QueueMessage};
use crate::protocol::crypto::{CryptoError, MsgCrypt};
use crate::protocol::fields::MessageError;
use crate::protocol::query::{Query, QueryError};
use crate::protocol::xml::XmlError;

/// Bodies above this are refused before any work (WeChat's messages are a few KB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a claim on a message protects an in-flight publish ([`publish_once`]): longer than a
/// publish can take (the SQS client's operation timeout is below it), short enough that a
/// crashed poller's claim is gone by its next turn.
pub const CLAIM_LEASE: Duration = Duration::from_secs(6);

/// How long the FIFO inbound and media queues drop a message whose deduplication id (the
/// `Inbound` id) they have already taken: SQS's fixed five minutes.
pub const FIFO_DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// How far WeChat's clock may be ahead of ours without a replayed callback outliving the
/// queue's deduplication.
const CLOCK_SKEW_SECS: u64 = 60;

/// The longest replay window: a callback accepted later would be past [`FIFO_DEDUP_WINDOW`],
/// and the queue would take it as a new message.
pub const MAX_REPLAY_WINDOW_SECS: u64 = FIFO_DEDUP_WINDOW.as_secs() - CLOCK_SKEW_SECS;

/// Callbacks whose timestamp is further than this from now are refused (seconds; 0 = off).
/// WeChat retries within ~15 s and clocks drift, so minutes are safe.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = MAX_REPLAY_WINDOW_SECS;

/// The `replay_window_secs` setting of the document (shared by every callback).
/// A longer window (up to 86400, which earlier versions took) is shortened to the longest with
/// a warning, so a config written for them still starts every function.
pub fn replay_window(doc: &mut Document) -> u64 {
    let secs = doc.value::<u64>("replay_window_secs").unwrap_or(DEFAULT_REPLAY_WINDOW_SECS);
    if secs != 0 && !(60..=86_400).contains(&secs) {
        doc.problem(invalid(
            "replay_window_secs",
            format!("must be 0 (off) or 60 to {MAX_REPLAY_WINDOW_SECS} seconds"),
        ));
    }
    if secs > MAX_REPLAY_WINDOW_SECS {
        tracing::warn!(
            "replay_window_secs {secs} is shortened to {MAX_REPLAY_WINDOW_SECS}: a callback replayed later would \
             outlive the inbound queue's five-minute deduplication"
        );
        return MAX_REPLAY_WINDOW_SECS;
    }
    secs
}

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

/// The decryption failures of a request whose signature matched: the EncodingAESKey (or the
/// receive id) is not the one WeChat uses.
const CRYPTO_KINDS: [&str; 6] = [
    "bad_padding",
    "plaintext_too_short",
    "msg_len_out_of_range",
    "receive_id_mismatch",
    "invalid_utf8",
    "aes_invalid_length",
];

/// The HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Why it was refused ([`CallbackError::kind`]); none for an accepted request. The callback
    /// functions count refusals by it.
    pub refused: Option<&'static str>,
}

impl CallbackResponse {
    /// An accepted request's answer.
    pub fn ok(content_type: &'static str, body: String) -> Self {
        CallbackResponse { status: 200, content_type, body, refused: None }
    }
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
    #[error(
        "an XML body: this URL takes the JSON callbacks of a WeCom AI bot created in API mode; a self-built app's \
         callback URL is /wecom/{{app}}, and a bot not created in API mode cannot use a URL"
    )]
    NotJson,
    #[error("the request is encrypted but the account has no encoding_aes_key configured")]
    NoKey,
    #[error("signature mismatch")]
    Signature,
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("ciphertext: {0}")]
    Crypto(CryptoError),
    #[error("decrypted message: {0}")]
    Message(#[from] MessageError),
    /// The table (reply slots, streams, iLink's markers) failed.
    #[error("state store: {0}")]
    Store(PortError),
    #[error("inbound queue: {0}")]
    Publish(PortError),
}

impl CallbackError {
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownApp => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTooLarge => 413,
            Self::Query(_)
            | Self::BadTimestamp
            | Self::BodyEncoding
            | Self::Body(_)
            | Self::NoEncrypt
            | Self::NotJson
            | Self::NoKey => 400,
            Self::Signature => 401,
            Self::Stale => 403,
            // A valid signature over undecryptable data: a key or receive-id misconfiguration.
            Self::Crypto(_) | Self::Message(_) => 400,
            Self::Store(_) | Self::Publish(_) => 503,
        }
    }

    /// Whether the refusal points at the account's Token or EncodingAESKey (a signature that
    /// does not match, data that does not decrypt): a burst of them is a wrong key, and every
    /// message of the account is being lost.
    pub fn is_key_problem(kind: &str) -> bool {
        // Not `bad_message`: a body that decrypted (or came in plaintext) but is no message.
        kind == "signature_mismatch" || kind == "no_key_configured" || CRYPTO_KINDS.contains(&kind)
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
            Self::NotJson => "xml_body",
            Self::NoKey => "no_key_configured",
            Self::Signature => "signature_mismatch",
            Self::Stale => "stale_timestamp",
            Self::Crypto(err) => err.kind(),
            Self::Message(_) => "bad_message",
            Self::Store(_) => "store_unavailable",
            Self::Publish(_) => "queue_unavailable",
        }
    }

    /// Logs the refusal of a callback to `channel`'s `app` (an error when it is ours or a key
    /// problem: a valid signature over undecryptable data, or an encrypted message to an
    /// account configured without its key) and gives its answer.
    pub fn refuse(&self, channel: &'static str, app: &str) -> CallbackResponse {
        let status = self.status();
        if status >= 500 || matches!(self, Self::Crypto(_) | Self::Message(_) | Self::NoKey) {
            tracing::error!(channel, app, outcome = self.kind(), status, error = %self, "callback");
        } else {
            tracing::warn!(channel, app, outcome = self.kind(), status, error = %self, "callback refused");
        }
        self.response()
    }

    pub fn response(&self) -> CallbackResponse {
        let body = match self {
            // Dependency details stay in the logs.
            Self::Store(_) | Self::Publish(_) => "temporarily unavailable, retry".to_owned(),
            other => other.to_string(),
        };
        CallbackResponse {
            status: self.status(),
            content_type: "text/plain; charset=utf-8",
            body,
            refused: Some(self.kind()),
        }
    }
}

/// Puts `inbound` on its queue (the inbound queue, or the media queue first). Both are FIFO
/// queues that drop a message whose `Inbound` id they took in the last five minutes, so WeChat's
/// retries of a callback (4 deliveries within about 20 s) and concurrent deliveries all queue it
/// once, without a marker of our own.
pub async fn enqueue(publisher: &dyn Publisher, inbound: &crate::core::envelope::Inbound) -> Result<(), CallbackError> {
    publisher.publish(inbound_message(inbound)).await.map_err(CallbackError::Publish)
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

/// Publishes `inbound` once across a window longer than the queue's five-minute deduplication
/// (an iLink message seen again after a cursor loss, or half an hour later): claims its id (with
/// a lease) in a DynamoDB marker kept a day, publishes, then completes the marker; releases the
/// claim if publishing failed, so the marker never swallows a message that did not reach the
/// queue.
pub async fn publish_once(
    dedupe: &dyn Dedupe,
    publisher: &dyn Publisher,
    clock: &dyn Clock,
    inbound: &crate::core::envelope::Inbound,
) -> Result<Published, CallbackError> {
    let id = inbound.id.as_str();
    let token = match dedupe.claim(id, clock.now(), CLAIM_LEASE).await.map_err(CallbackError::Store)? {
        Claim::Published => return Ok(Published::Before),
        Claim::InFlight { .. } => return Ok(Published::ByAnother),
        Claim::Claimed { token, .. } => token,
    };
    if let Err(err) = publisher.publish(inbound_message(inbound)).await {
        // Free the marker so the next read publishes; if this fails too, the lease expires.
        if let Err(release) = dedupe.release(id, &token).await {
            tracing::warn!(id = %id, error = %release, "could not release dedupe claim; it expires with its lease");
        }
        return Err(CallbackError::Publish(err));
    }
    // The queue has it: the caller may go on even if the marker cannot be completed.
    if let Err(err) = dedupe.complete(id, &token, clock.now()).await {
        tracing::warn!(id = %id, error = %err, "published but could not complete dedupe marker");
    }
    Ok(Published::Now)
}

/// The queue message of an `Inbound`: its JSON, its channel and account as attributes, its
/// conversation as the FIFO message group and its id as the deduplication id, and
/// `media: fetch` when it carries media still to fetch (see [`InboundQueues`]).
pub fn inbound_message(inbound: &crate::core::envelope::Inbound) -> QueueMessage {
    let channel =
        serde_json::to_value(inbound.channel).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let mut attributes = vec![
        ("channel", channel),
        ("account", inbound.account.clone()),
        (FIFO_GROUP, conversation_group(inbound)),
        (FIFO_DEDUP, dedup_id(&inbound.id)),
    ];
    if inbound.needs_media() {
        attributes.push((MEDIA_ATTRIBUTE, MEDIA_FETCH.to_owned()));
    }
    QueueMessage { body: inbound.to_json(), attributes }
}

/// The FIFO message group of `inbound`: its conversation (channel, account, conversation id),
/// hashed to fit SQS's 128 characters. One conversation is handled one message at a time.
pub fn conversation_group(inbound: &crate::core::envelope::Inbound) -> String {
    let key = crate::core::bot::conversation_key(inbound);
    format!("{}:{}", inbound.channel.as_str(), crate::core::outbound::short_hash(&key))
}

/// The FIFO deduplication id of a message id (hashed: ids may hold characters SQS refuses, or be
/// longer than its 128).
pub fn dedup_id(id: &str) -> String {
    crate::core::outbound::short_hash(id)
}

/// The value of attribute `name` of `message`, if set.
pub fn attribute<'a>(message: &'a QueueMessage, name: &str) -> Option<&'a str> {
    message.attributes.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
}

/// The attribute that sends a message to the media queue first.
pub const MEDIA_ATTRIBUTE: &str = "media";
pub const MEDIA_FETCH: &str = "fetch";

/// Where a new `Inbound` goes: to the media queue when it has media to fetch (the media
/// function stores the files, then puts the resolved `Inbound` on the inbound queue), else
/// straight to the inbound queue.
pub struct InboundQueues {
    pub inbound: std::sync::Arc<dyn Publisher>,
    /// Without it (a set-up with no media store), media stays unfetched.
    pub media: Option<std::sync::Arc<dyn Publisher>>,
    /// The 微信客服 pull queue (FIFO, one group per kf account); without it a pull request is
    /// refused (it names a pull credential, the bots must never see it).
    pub kf: Option<std::sync::Arc<dyn Publisher>>,
}

#[async_trait::async_trait]
impl Publisher for InboundQueues {
    async fn publish(&self, message: QueueMessage) -> Result<(), PortError> {
        let has = |name: &str, value: &str| message.attributes.iter().any(|(k, v)| *k == name && v == value);
        let (wants_media, kf_pull) = (has(MEDIA_ATTRIBUTE, MEDIA_FETCH), has(QUEUE_ATTRIBUTE, KF_PULL));
        match (&self.media, &self.kf) {
            (_, Some(kf)) if kf_pull => kf.publish(message).await,
            (_, None) if kf_pull => {
                Err(PortError::new("sqs", "no 微信客服 pull queue is configured (WXBRIDGE_KF_QUEUE_URL)"))
            }
            (Some(media), _) if wants_media => media.publish(own_group(message)).await,
            _ => self.inbound.publish(message).await,
        }
    }
}

/// `message` in a FIFO group of its own (its deduplication id): on the media queue no fetch
/// waits for another; the media step puts it back in its conversation's group on the inbound
/// queue.
fn own_group(mut message: QueueMessage) -> QueueMessage {
    if let Some(dedup) = attribute(&message, FIFO_DEDUP).map(str::to_owned) {
        message.attributes.retain(|(k, _)| *k != FIFO_GROUP);
        message.attributes.push((FIFO_GROUP, dedup));
    }
    message
}

/// The attribute that names another queue than the inbound one.
pub const QUEUE_ATTRIBUTE: &str = "queue";
/// ... the 微信客服 pull queue.
pub const KF_PULL: &str = "kf_pull";
/// Attributes a FIFO queue takes as its message group and deduplication id (not sent as
/// message attributes; a standard queue ignores them).
pub const FIFO_GROUP: &str = "fifo_group";
pub const FIFO_DEDUP: &str = "fifo_dedup";

/// GET URL verification (WeCom apps and AI bots): checks the signature over the encrypted
/// `echostr` and returns its plaintext, which the console expects as the whole answer.
pub fn verify_url(crypt: &MsgCrypt, query: &Query<'_>) -> Result<String, CallbackError> {
    let msg_signature = query.require("msg_signature")?;
    let timestamp = query.require("timestamp")?;
    let nonce = query.require("nonce")?;
    let echostr = query.require("echostr")?;
    let verified = crypt.verify(msg_signature, timestamp, nonce, echostr).map_err(|_| CallbackError::Signature)?;
    crypt.decrypt(verified).map_err(CallbackError::Crypto)
}

/// A callback function's logic, whatever carries the HTTP request to it.
#[async_trait::async_trait]
pub trait CallbackService: Send + Sync {
    /// Handles one request; always answers.
    async fn serve(&self, req: CallbackRequest<'_>) -> CallbackResponse;

    /// Handles one request that API Gateway received at `received` (where known): a service
    /// that answers within the caller's deadline counts from then.
    async fn serve_received(
        &self,
        req: CallbackRequest<'_>,
        received: Option<std::time::SystemTime>,
    ) -> CallbackResponse {
        let _ = received;
        self.serve(req).await
    }
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
            (CallbackError::NotJson, 400),
            (CallbackError::NoKey, 400),
            (CallbackError::Signature, 401),
            (CallbackError::Stale, 403),
            (CallbackError::Crypto(CryptoError::BadPadding), 400),
            (CallbackError::Message(MessageError::Missing("MsgType")), 400),
            (CallbackError::Store(port()), 503),
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
