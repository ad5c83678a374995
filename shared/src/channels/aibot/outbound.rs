//! The AI bot's outbound delivery (`wecom_aibot`, addressed by `in_reply_to`): into the
//! message's stream while it is open, else once through its `response_url`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::channels::aibot::api::AibotApi;
use crate::channels::aibot::config::AiBot;
use crate::channels::aibot::stream::{stream_key, MAX_CONTENT_BYTES};
use crate::core::envelope::{Content, Outbound};
use crate::core::outbound::{account_of, has_account, Delivered, Delivery, Unit};
use crate::core::ports::{unix_millis, Clock, Streams, UrlClaim};
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

    /// Posts `text` once through the message's `response_url`.
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
        let body = json!({"msgtype": "markdown", "markdown": {"content": text}});
        let result = self.api.respond(&url, &body).await;
        // Single use: whatever happened, it is not POSTed again.
        if let Err(err) = self.streams.settle_url(key, true).await {
            tracing::warn!(error = %err, "could not record the response_url's use; it stays claimed");
        }
        match result {
            Ok(_) => Ok(Delivered::Sent { undelivered: Vec::new() }),
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
            _ => Some("an AI bot answers with text or markdown"),
        }
    }

    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (MAX_CONTENT_BYTES, Unit::Bytes)
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
        let Some(stream) = self.streams.read(&key).await.map_err(store)? else {
            return Err(Failure::permanent(
                "no stream for in_reply_to: not a message this bot received, or older than two hours",
            ));
        };
        if !stream.finished {
            let version = unix_millis(self.clock.now()).max(stream.version + 1);
            if self.streams.write(&key, text, version, true).await.map_err(store)? {
                return Ok(Delivered::Sent { undelivered: Vec::new() });
            }
        } else if !stream.handed_over && stream.content == *text {
            // An earlier attempt finished the stream with this part and died before recording
            // it: the user has it; the response_url must not repeat it.
            return Ok(Delivered::Sent { undelivered: Vec::new() });
        }
        self.respond(&key, text).await
    }
}
