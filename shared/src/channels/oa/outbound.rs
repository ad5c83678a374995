//! Official Account customer-service messages (`message/custom/send`): which content they take,
//! their bodies, and delivery with the account's stable token. An account without the
//! customer-service permission (48001) gets its reply parked for the user's next message.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::channels::oa::api::{errcodes, OaApi};
use crate::channels::oa::config::OaApp;
use crate::channels::oa::service::passive;
use crate::core::envelope::{Content, Outbound};
use crate::core::outbound::{account_of, articles_json, has_account, Delivered, Delivery, Unit};
use crate::core::ports::{Clock, ParkedReplies};
use crate::core::retry::Failure;
use crate::core::tokens::Tokens;

/// The errcode of an account that may not use customer service.
pub const NO_PERMISSION: i64 = 48001;

/// `POST cgi-bin/message/custom/send`.
pub fn body(open_id: &str, content: &Content) -> Value {
    match content {
        Content::Text { text } | Content::Markdown { text } => {
            json!({"touser": open_id, "msgtype": "text", "text": {"content": text}})
        }
        Content::Image { media_id, .. } => {
            json!({"touser": open_id, "msgtype": "image", "image": {"media_id": media_id}})
        }
        Content::News { articles } => {
            json!({"touser": open_id, "msgtype": "news", "news": {"articles": articles_json(articles)}})
        }
        other => json!({"touser": open_id, "msgtype": other.kind()}),
    }
}

/// Why customer service cannot send `content`, if it cannot.
pub fn refuse(content: &Content) -> Option<&'static str> {
    match content {
        Content::Text { .. } => None,
        Content::Image { media_id: Some(_), media: None, .. } => None,
        Content::Image { media: Some(_), .. } => {
            Some("files are not uploaded to Official Accounts yet (give media_id)")
        }
        Content::Image { .. } => Some("an image needs media_id"),
        Content::News { articles } if articles.len() == 1 => None,
        Content::News { .. } => Some("a customer-service news message has exactly one article"),
        Content::Markdown { .. }
        | Content::File { .. }
        | Content::Voice { .. }
        | Content::Video { .. }
        | Content::Textcard { .. }
        | Content::TemplateCard { .. } => Some("not available on this channel"),
    }
}

/// Sends through the Official Accounts' customer-service API (`oa`; `to` is the open id).
pub struct OaDelivery {
    accounts: Vec<OaApp>,
    api: OaApi,
    tokens: Arc<Tokens>,
    parked: Arc<dyn ParkedReplies>,
    clock: Arc<dyn Clock>,
}

impl OaDelivery {
    pub fn new(
        accounts: &[OaApp],
        api: &OaApi,
        tokens: &Arc<Tokens>,
        parked: Arc<dyn ParkedReplies>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { accounts: accounts.to_vec(), api: api.clone(), tokens: tokens.clone(), parked, clock }
    }
}

#[async_trait]
impl Delivery for OaDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.accounts, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        refuse(content)
    }

    /// Customer-service text: ~2048 bytes in the field.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (2048, Unit::Bytes)
    }

    async fn deliver(&self, out: &Outbound, part: &Content, _key: &str, _retry: bool) -> Result<Delivered, Failure> {
        let oa = account_of(&self.accounts, out)?;
        let secret = oa
            .app_secret
            .clone()
            .ok_or_else(|| Failure::permanent(format!("Official Account '{}' has no app_secret configured", oa.app)))?;
        let fetch = || self.api.stable_token(&oa.app_id, &secret);
        let body = body(&out.to, part);
        let sent = self
            .tokens
            .call(&oa.token_key(), errcodes, fetch, |token| {
                let body = &body;
                async move { self.api.post("message/custom/send", &token, body).await }
            })
            .await;
        match sent {
            Ok(_) => Ok(Delivered::Sent { undelivered: Vec::new() }),
            Err(failure) if failure.errcode == Some(NO_PERMISSION) && passive(part, false).is_some() => {
                // No customer-service permission: the user gets it as the next passive reply.
                let json = serde_json::to_string(part).unwrap_or_default();
                self.parked
                    .park(&out.account, &out.to, &json, self.clock.now())
                    .await
                    .map_err(|err| Failure::transient(err.to_string()))?;
                tracing::info!(account = %out.account, "customer service not permitted (48001); reply parked for the user's next message");
                Ok(Delivered::Parked { errcode: NO_PERMISSION })
            }
            Err(failure) => Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_refuses_what_customer_service_cannot_send() {
        assert_eq!(
            body("o1", &Content::Text { text: "hi".into() }),
            json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}})
        );
        assert_eq!(refuse(&Content::Markdown { text: "**x**".into() }), Some("not available on this channel"));
        assert_eq!(
            refuse(&Content::News { articles: vec![] }),
            Some("a customer-service news message has exactly one article")
        );
        assert_eq!(
            refuse(&Content::Image { media_id: None, base64: Some("QQ==".into()), media: None }),
            Some("an image needs media_id")
        );
    }
}
