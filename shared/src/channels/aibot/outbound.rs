//! The AI bot's outbound delivery (`wecom_aibot`, addressed by `in_reply_to`): into the
//! message's stream while it is open, else once through its `response_url`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::channels::aibot::api::AibotApi;
use crate::channels::aibot::config::AiBot;
use crate::channels::aibot::stream::{fit, stream_key, MAX_CONTENT_BYTES};
use crate::core::envelope::{Content, Outbound};
use crate::core::outbound::{account_of, has_account, Delivered, Delivery, Unit};
use crate::core::ports::{cut_utf8, unix_millis, Clock, Streams, UrlClaim};
use crate::core::retry::Failure;

/// Answers AI-bot messages.
pub struct AibotDelivery {
    bots: Vec<AiBot>,
    api: AibotApi,
    streams: Arc<dyn Streams>,
    clock: Arc<dyn Clock>,
}

impl AibotDelivery {
    pub fn new(bots: &[AiBot], api: &AibotApi, streams: Arc<dyn Streams>, clock: Arc<dyn Clock>) -> Self {
        Self { bots: bots.to_vec(), api: api.clone(), streams, clock }
    }

    /// What the stream could not show goes by the `response_url`.
    async fn rest(&self, key: &str, beyond: &str) -> Result<Delivered, Failure> {
        if beyond.is_empty() {
            return Ok(Delivered::Sent { undelivered: Vec::new() });
        }
        self.respond(key, beyond).await.map_err(|failure| Failure {
            message: format!("the stream shows the first 20 480 bytes; the rest: {}", failure.message),
            ..failure
        })
    }

    /// Posts `text` (cut with a note past 20 480 bytes) once through the message's `response_url`.
    async fn respond(&self, key: &str, text: &str) -> Result<Delivered, Failure> {
        let store = |err: crate::core::ports::PortError| Failure::transient(err.to_string());
        let url =
            match self.streams.claim_url(key, self.clock.now()).await.map_err(store)? {
                UrlClaim::Claimed(url) => url,
                UrlClaim::Used => {
                    return Err(Failure::permanent(
                        "the message's stream is finished and its response_url, which takes one answer, was used \
                     (or claimed by an attempt whose outcome is unknown)",
                    ))
                }
                UrlClaim::Expired => return Err(Failure::permanent(
                    "the message's stream is finished and its response_url expired (valid one hour after the message)",
                )),
                UrlClaim::Missing => {
                    return Err(Failure::permanent("the message's stream is finished and it has no response_url"))
                }
            };
        if !self.api.trusts(&url) {
            self.streams.settle_url(key, true).await.map_err(store)?;
            return Err(Failure::permanent("the message's response_url is not on WeCom's API host"));
        }
        let body = json!({"msgtype": "markdown", "markdown": {"content": fit(text)}});
        let result = self.api.respond(&url, &body).await;
        // Single use: unless the POST certainly never reached WeCom, it is not made again.
        let used = !matches!(&result, Err(err) if err.not_sent());
        if let Err(err) = self.streams.settle_url(key, used).await {
            tracing::warn!(error = %err, "could not record the response_url's use; it stays claimed");
        }
        match result {
            Ok(_) => Ok(Delivered::Sent { undelivered: Vec::new() }),
            Err(err) if !used => Err(Failure::transient(format!("response_url not reached: {err}"))),
            Err(err) => Err(Failure::permanent(format!("response_url (single use, not retried): {err}"))),
        }
    }
}

#[async_trait]
impl Delivery for AibotDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.bots, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        match content {
            Content::Text { .. } | Content::Markdown { .. } => None,
            Content::Image { .. } => Some(
                "an AI bot shows images only in the stream the bot's answer finishes (JPG or PNG, \
                 at most 10 and 3 MB together); this one did not fit there or came after the stream ended",
            ),
            _ => Some("an AI bot answers with text or markdown"),
        }
    }

    /// Not split: one answer is one message (the stream, and the `response_url` that takes one
    /// POST). Past 20 480 bytes, the stream shows the beginning and the `response_url` the rest.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (usize::MAX, Unit::Bytes)
    }

    async fn deliver(&self, out: &Outbound, part: &Content, _key: &str, _retry: bool) -> Result<Delivered, Failure> {
        account_of(&self.bots, out)?;
        let Some(inbound_id) = out.in_reply_to.as_deref() else {
            return Err(Failure::permanent("wecom_aibot needs in_reply_to: the id of the Inbound it answers"));
        };
        let (Content::Text { text } | Content::Markdown { text }) = part else {
            return Err(Failure::permanent("an AI bot answers with text or markdown"));
        };
        let (key, _) = stream_key(&out.account, inbound_id);
        let store = |err: crate::core::ports::PortError| Failure::transient(err.to_string());
        let missing = || {
            Failure::permanent("no stream for in_reply_to: not a message this bot received, or older than two hours")
        };
        let mut stream = self.streams.read(&key).await.map_err(store)?.ok_or_else(missing)?;
        let visible = cut_utf8(text, MAX_CONTENT_BYTES);
        let beyond = &text[visible.len()..];
        // Into the open stream; a snapshot written meanwhile has a newer version: read again.
        for _ in 0..3 {
            if stream.finished {
                break;
            }
            let version = unix_millis(self.clock.now()).max(stream.version + 1);
            if self.streams.write(&key, visible, version, true).await.map_err(store)? {
                return self.rest(&key, beyond).await;
            }
            stream = self.streams.read(&key).await.map_err(store)?.ok_or_else(missing)?;
        }
        // (Not for the rest of a recorded answer, which never goes into the stream.)
        if stream.finished && !stream.handed_over && stream.answer.is_none() && stream.content == visible {
            // An earlier attempt finished the stream with this text and died before recording
            // it: the user has it; the response_url must not repeat it.
            return self.rest(&key, beyond).await;
        }
        self.respond(&key, text).await
    }
}
