//! WeCom app messages (`message/send`) and app group chats (`appchat/send`): which content they
//! take, their bodies, and delivery with the app's shared token.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::channels::wecom::api::{errcodes, WecomApi};
use crate::channels::wecom::config::WecomApp;
use crate::core::envelope::{Content, MediaType, Outbound};
use crate::core::outbound::{account_of, articles_json, has_account, Delivered, Delivery, OutFile, Unit};
use crate::core::retry::Failure;
use crate::core::tokens::Tokens;

const MB: u64 = 1024 * 1024;

/// Why WeCom would refuse `file` on upload, said before uploading: images are JPG or PNG,
/// voice is AMR, video MP4, and every file is more than 5 bytes.
pub fn upload_refusal(file: &OutFile) -> Option<String> {
    let mime = file.mime.as_str();
    let fits = match file.media_type {
        MediaType::Image => matches!(mime, "image/jpeg" | "image/png"),
        MediaType::Voice => mime == "audio/amr",
        MediaType::Video => mime == "video/mp4",
        MediaType::File => true,
    };
    if file.bytes.len() <= 5 {
        Some("WeCom takes files of more than 5 bytes".to_owned())
    } else if !fits {
        let wanted = match file.media_type {
            MediaType::Image => "JPG or PNG",
            MediaType::Voice => "AMR",
            _ => "MP4",
        };
        Some(format!("a WeCom {} must be {wanted}, this is {mime} (send it as a file)", file.media_type.as_str()))
    } else {
        None
    }
}

/// How long WeCom drops a repeat of an identical message when asked to (its maximum is 4 h).
pub const DUPLICATE_CHECK_INTERVAL_S: u32 = 1800;

/// `msgtype` and its object, shared by app messages, app group chats and group robots.
pub fn payload(content: &Content) -> (&'static str, Value) {
    match content {
        Content::Text { text } => ("text", json!({"content": text})),
        Content::Markdown { text } => ("markdown", json!({"content": text})),
        Content::Image { media_id, .. } => ("image", json!({"media_id": media_id})),
        Content::File { media_id, .. } => ("file", json!({"media_id": media_id})),
        Content::Voice { media_id, .. } => ("voice", json!({"media_id": media_id})),
        Content::Video { media_id, title, description, .. } => {
            let mut video = json!({"media_id": media_id});
            for (key, value) in [("title", title), ("description", description)] {
                if let Some(value) = value {
                    video[key] = value.as_str().into();
                }
            }
            ("video", video)
        }
        Content::News { articles } => ("news", json!({"articles": articles_json(articles)})),
        Content::Textcard { title, description, url, btntxt } => (
            "textcard",
            json!({"title": title, "description": description, "url": url, "btntxt": btntxt.clone().unwrap_or_else(|| "详情".to_owned())}),
        ),
        Content::TemplateCard { card } => ("template_card", card.clone()),
    }
}

/// `POST cgi-bin/message/send`.
pub fn app_body(agent_id: u32, to: &str, content: &Content) -> Value {
    let (msgtype, payload) = payload(content);
    let mut body = json!({"touser": to, "msgtype": msgtype, "agentid": agent_id});
    body[msgtype] = payload;
    body
}

/// `POST cgi-bin/appchat/send`.
pub fn appchat_body(chat_id: &str, content: &Content) -> Value {
    let (msgtype, payload) = payload(content);
    let mut body = json!({"chatid": chat_id, "msgtype": msgtype});
    body[msgtype] = payload;
    body
}

/// Why WeCom (app or app group chat) cannot send `content`, if it cannot; group chats take no
/// template cards.
pub fn refuse(content: &Content, appchat: bool) -> Option<&'static str> {
    match content {
        Content::Image { media_id: None, media: None, .. }
        | Content::File { media_id: None, media: None }
        | Content::Voice { media_id: None, media: None }
        | Content::Video { media_id: None, media: None, .. } => Some("a file message needs media_id or media"),
        Content::News { articles } if !(1..=8).contains(&articles.len()) => Some("news has 1 to 8 articles"),
        Content::TemplateCard { .. } if appchat => Some("not available on this channel"),
        _ => None,
    }
}

/// WeCom counts UTF-8 bytes: 2048 for text and markdown.
pub const TEXT_LIMIT: (usize, Unit) = (2048, Unit::Bytes);

/// Sends as a WeCom app, to users (`wecom_app`) or to an app group chat (`wecom_appchat`).
pub struct WecomDelivery {
    apps: Vec<WecomApp>,
    api: WecomApi,
    tokens: Arc<Tokens>,
    appchat: bool,
}

impl WecomDelivery {
    /// The app `out` names and its secret, or why it cannot be used.
    fn credentials(&self, out: &Outbound) -> Result<(&WecomApp, secrecy::SecretString), Failure> {
        let app = account_of(&self.apps, out)?;
        let secret = app
            .secret
            .clone()
            .ok_or_else(|| Failure::permanent(format!("WeCom app '{}' has no secret configured", app.app)))?;
        Ok((app, secret))
    }

    /// App messages to users.
    pub fn app(apps: &[WecomApp], api: &WecomApi, tokens: &Arc<Tokens>) -> Self {
        Self { apps: apps.to_vec(), api: api.clone(), tokens: tokens.clone(), appchat: false }
    }

    /// Messages to the app's group chats.
    pub fn appchat(apps: &[WecomApp], api: &WecomApi, tokens: &Arc<Tokens>) -> Self {
        Self { appchat: true, ..Self::app(apps, api, tokens) }
    }
}

#[async_trait]
impl Delivery for WecomDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.apps, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        refuse(content, self.appchat)
    }

    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        TEXT_LIMIT
    }

    /// App messages take `enable_duplicate_check`; app group chats have no such check.
    fn drops_repeats(&self) -> bool {
        !self.appchat
    }

    /// `media/upload` caps (2024): image 10 MB, voice 2 MB, video 10 MB, file 20 MB.
    fn media_cap(&self, media_type: MediaType) -> Option<u64> {
        Some(match media_type {
            MediaType::Image | MediaType::Video => 10 * MB,
            MediaType::Voice => 2 * MB,
            MediaType::File => 20 * MB,
        })
    }

    /// WeCom media ids belong to the corp.
    fn media_scope(&self, out: &Outbound) -> String {
        self.apps.iter().find(|a| a.app == out.account).map_or_else(|| out.account.clone(), |a| a.corp_id.clone())
    }

    fn refuse_file(&self, file: &OutFile) -> Option<String> {
        crate::channels::wecom::outbound::upload_refusal(file)
    }

    async fn upload(&self, out: &Outbound, file: &OutFile) -> Result<String, Failure> {
        let (app, secret) = self.credentials(out)?;
        let fetch = || self.api.token(&app.corp_id, &secret);
        self.tokens
            .call(&app.token_key(), errcodes, fetch, |token| async move {
                self.api.media_upload(&token, file.media_type.as_str(), &file.file_name, file.bytes.clone()).await
            })
            .await
    }

    async fn deliver(&self, out: &Outbound, part: &Content, _key: &str, retry: bool) -> Result<Delivered, Failure> {
        let (app, secret) = self.credentials(out)?;
        let (path, mut body) = if self.appchat {
            ("appchat/send", appchat_body(&out.to, part))
        } else {
            ("message/send", app_body(app.agent_id, &out.to, part))
        };
        if retry && !self.appchat {
            // A retry after an unknown outcome: let WeCom drop an identical repeat.
            body["enable_duplicate_check"] = 1.into();
            body["duplicate_check_interval"] = DUPLICATE_CHECK_INTERVAL_S.into();
        }
        let fetch = || self.api.token(&app.corp_id, &secret);
        let answer = self
            .tokens
            .call(&app.token_key(), errcodes, fetch, |token| {
                let body = &body;
                async move { self.api.post(path, &token, body).await }
            })
            .await?;
        // Partial failure is errcode 0 with the bad recipients listed.
        let undelivered = ["invaliduser", "invalidparty", "invalidtag", "unlicenseduser"]
            .into_iter()
            .filter_map(|field| {
                answer.get(field).and_then(Value::as_str).filter(|v| !v.is_empty()).map(|v| format!("{field}={v}"))
            })
            .collect();
        Ok(Delivered::Sent { undelivered })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bodies_as_the_api_expects() {
        let text = Content::Text { text: "hi".into() };
        assert_eq!(
            app_body(1000002, "a|b", &text),
            json!({"touser": "a|b", "msgtype": "text", "agentid": 1000002, "text": {"content": "hi"}})
        );
        assert_eq!(appchat_body("c1", &text), json!({"chatid": "c1", "msgtype": "text", "text": {"content": "hi"}}));
    }

    #[test]
    fn refuses_what_wecom_cannot_send_with_a_reason() {
        let card = Content::TemplateCard { card: json!({"card_type": "text_notice"}) };
        assert_eq!(refuse(&card, true), Some("not available on this channel"));
        assert_eq!(refuse(&card, false), None);
        assert_eq!(
            refuse(&Content::Image { media_id: None, base64: Some("QQ==".into()), media: None }, false),
            Some("a file message needs media_id or media")
        );
        assert_eq!(refuse(&Content::News { articles: vec![] }, false), Some("news has 1 to 8 articles"));
        assert_eq!(refuse(&Content::File { media_id: Some("m".into()), media: None }, true), None);
    }
}
