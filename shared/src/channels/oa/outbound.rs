//! Official Account customer-service messages (`message/custom/send`): which content they take,
//! their bodies, temporary media uploads, and delivery with the account's stable token. An
//! account without the customer-service permission (48001) gets its reply parked for the user's
//! next message.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::channels::oa::api::{errcodes, OaApi};
use crate::channels::oa::config::OaApp;
use crate::channels::oa::service::passive;
use crate::core::envelope::{Content, MediaType, Outbound};
use crate::core::outbound::{account_of, articles_json, has_account, Delivered, Delivery, OutFile, Unit};
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
        Content::Voice { media_id, .. } => {
            json!({"touser": open_id, "msgtype": "voice", "voice": {"media_id": media_id}})
        }
        Content::Video { media_id, title, description, .. } => {
            // No thumb_media_id: reported to make the send fail (media.md §3.5).
            let mut video = json!({"media_id": media_id});
            for (key, value) in [("title", title), ("description", description)] {
                if let Some(value) = value {
                    video[key] = value.as_str().into();
                }
            }
            json!({"touser": open_id, "msgtype": "video", "video": video})
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
        // Markdown goes as its plain text (`Delivery::markdown_as_text`).
        Content::Text { .. } | Content::Markdown { .. } => None,
        Content::Image { media_id: None, media: None, .. }
        | Content::Voice { media_id: None, media: None }
        | Content::Video { media_id: None, media: None, .. } => Some("a media message needs media_id or media"),
        Content::Image { .. } | Content::Voice { .. } | Content::Video { .. } => None,
        Content::News { articles } if articles.len() == 1 => None,
        Content::News { .. } => Some("a customer-service news message has exactly one article"),
        Content::File { .. } => Some("Official Accounts send no files (send a link)"),
        Content::Textcard { .. } | Content::TemplateCard { .. } => Some("not available on this channel"),
    }
}

const MB: u64 = 1024 * 1024;

/// Why the Official Account would refuse `file` on upload (media.md §3.3), said before
/// uploading: images JPG, PNG or GIF, voice AMR or MP3, video MP4, each more than 5 bytes.
pub fn upload_refusal(file: &OutFile) -> Option<String> {
    let mime = file.mime.as_str();
    let (fits, wanted) = match file.media_type {
        MediaType::Image => (matches!(mime, "image/jpeg" | "image/png" | "image/gif"), "JPG, PNG or GIF"),
        MediaType::Voice => (matches!(mime, "audio/amr" | "audio/mpeg"), "AMR or MP3"),
        MediaType::Video => (mime == "video/mp4", "MP4"),
        MediaType::File => (false, "not a file"),
    };
    if file.bytes.len() <= 5 {
        Some("the Official Account takes files of more than 5 bytes".to_owned())
    } else if !fits {
        Some(format!("an Official Account {} must be {wanted}, this is {mime}", file.media_type.as_str()))
    } else {
        None
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
    /// The account `out` names and its AppSecret, or why it cannot be used.
    fn credentials(&self, out: &Outbound) -> Result<(&OaApp, secrecy::SecretString), Failure> {
        let oa = account_of(&self.accounts, out)?;
        let secret = oa
            .app_secret
            .clone()
            .ok_or_else(|| Failure::permanent(format!("Official Account '{}' has no app_secret configured", oa.app)))?;
        Ok((oa, secret))
    }

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

    /// Customer service shows no markdown: its text goes, without the marks.
    fn markdown_to_plain(&self) -> bool {
        true
    }

    /// Customer-service text: ~2048 bytes in the field.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (2048, Unit::Bytes)
    }

    /// Temporary media (media.md §3.3): images kept to 2 MB (the page gives both 2 and 10 MB),
    /// voice 2 MB, video 10 MB; no files.
    fn media_cap(&self, media_type: MediaType) -> Option<u64> {
        match media_type {
            MediaType::Image | MediaType::Voice => Some(2 * MB),
            MediaType::Video => Some(10 * MB),
            MediaType::File => None,
        }
    }

    fn refuse_file(&self, file: &OutFile) -> Option<String> {
        upload_refusal(file)
    }

    /// `media/upload` with the account's stable token. Unverified accounts may not upload
    /// temporary media (48001, permanent: such an account sends text).
    async fn upload(&self, out: &Outbound, file: &OutFile) -> Result<String, Failure> {
        let (oa, secret) = self.credentials(out)?;
        let fetch = || self.api.stable_token(&oa.app_id, &secret);
        self.tokens
            .call(&oa.token_key(), errcodes, fetch, |token| async move {
                self.api.media_upload(&token, file.media_type.as_str(), &file.file_name, file.bytes.clone()).await
            })
            .await
    }

    async fn deliver(&self, out: &Outbound, part: &Content, _key: &str, _retry: bool) -> Result<Delivered, Failure> {
        let (oa, secret) = self.credentials(out)?;
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
            // Not a file: its media id lives three days, a parked reply up to seven.
            Err(failure)
                if failure.errcode == Some(NO_PERMISSION)
                    && passive(part, false).is_some()
                    && part.media_id().is_none() =>
            {
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
        assert_eq!(refuse(&Content::Markdown { text: "**x**".into() }), None, "sent as its text");
        assert_eq!(
            refuse(&Content::News { articles: vec![] }),
            Some("a customer-service news message has exactly one article")
        );
        assert_eq!(
            refuse(&Content::Image { media_id: None, base64: Some("QQ==".into()), media: None }),
            Some("a media message needs media_id or media")
        );
        assert_eq!(
            refuse(&Content::File { media_id: Some("m".into()), media: None }),
            Some("Official Accounts send no files (send a link)")
        );
        let video =
            Content::Video { media_id: Some("v".into()), media: None, title: Some("标题".into()), description: None };
        assert_eq!(refuse(&video), None);
        assert_eq!(
            body("o1", &video),
            json!({"touser": "o1", "msgtype": "video", "video": {"media_id": "v", "title": "标题"}})
        );
    }
}
