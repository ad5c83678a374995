//! Group robot messages (`webhook/send`): which content a robot takes and its bodies.

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::channels::robot::api::RobotApi;
use crate::channels::robot::config::Robot;
use crate::channels::wecom::api::errcodes;
use crate::channels::wecom::outbound::{payload, TEXT_LIMIT};
use crate::core::envelope::{Content, MediaType, Outbound};
use crate::core::outbound::{account_of, has_account, Delivered, Delivery, OutFile, Unit};
use crate::core::retry::Failure;

/// `POST cgi-bin/webhook/send`: an image goes inline as base64 with its MD5.
pub fn body(content: &Content) -> Value {
    match content {
        Content::Image { base64: Some(data), .. } => {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
            let md5 = crate::protocol::hex::hex(&<md5::Md5 as md5::Digest>::digest(&raw));
            json!({"msgtype": "image", "image": {"base64": data, "md5": md5}})
        }
        other => {
            let (msgtype, payload) = payload(other);
            let mut body = json!({"msgtype": msgtype});
            body[msgtype] = payload;
            body
        }
    }
}

/// Why a robot cannot send `content`, if it cannot.
pub fn refuse(content: &Content) -> Option<&'static str> {
    match content {
        Content::Image { base64: None, media: None, .. } => Some("a robot image needs base64 or media"),
        Content::File { media_id: None, media: None } | Content::Voice { media_id: None, media: None } => {
            Some("a file message needs media_id or media")
        }
        Content::Video { .. } => Some("a group robot sends no video (send it as a file)"),
        Content::News { articles } if !(1..=8).contains(&articles.len()) => Some("news has 1 to 8 articles"),
        Content::Textcard { .. } => Some("not available on this channel"),
        _ => None,
    }
}

/// Sends through the configured robots (`wecom_webhook`; `to` is unused).
pub struct RobotDelivery {
    robots: Vec<Robot>,
    api: RobotApi,
}

impl RobotDelivery {
    pub fn new(robots: &[Robot], api: &RobotApi) -> Self {
        Self { robots: robots.to_vec(), api: api.clone() }
    }
}

#[async_trait]
impl Delivery for RobotDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.robots, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        refuse(content)
    }

    /// Robot markdown takes 4096 bytes; everything else WeCom's 2048.
    fn text_limit(&self, markdown: bool) -> (usize, Unit) {
        if markdown {
            (4096, Unit::Bytes)
        } else {
            TEXT_LIMIT
        }
    }

    /// Images inline up to 2 MB; `upload_media` files up to 20 MB and AMR voice up to 2 MB; no
    /// video.
    fn media_cap(&self, media_type: MediaType) -> Option<u64> {
        match media_type {
            MediaType::Image | MediaType::Voice => Some(2 * 1024 * 1024),
            MediaType::File => Some(20 * 1024 * 1024),
            MediaType::Video => None,
        }
    }

    fn inline_media(&self, media_type: MediaType) -> bool {
        media_type == MediaType::Image
    }

    /// A robot's media ids belong to its key.
    fn media_scope(&self, out: &Outbound) -> String {
        use secrecy::ExposeSecret as _;
        self.robots
            .iter()
            .find(|r| r.name == out.account)
            .map_or_else(|| out.account.clone(), |r| crate::core::outbound::short_hash(r.key.expose_secret()))
    }

    fn refuse_file(&self, file: &OutFile) -> Option<String> {
        crate::channels::wecom::outbound::upload_refusal(file)
    }

    async fn upload(&self, out: &Outbound, file: &OutFile) -> Result<String, Failure> {
        let robot = account_of(&self.robots, out)?;
        self.api
            .upload_media(&robot.key, file.media_type.as_str(), &file.file_name, file.bytes.clone())
            .await
            .map_err(|e| Failure::from_api(errcodes, &e))
    }

    async fn deliver(&self, out: &Outbound, part: &Content, _key: &str, _retry: bool) -> Result<Delivered, Failure> {
        let robot = account_of(&self.robots, out)?;
        self.api
            .send(&robot.key, &body(part))
            .await
            .map(|_| Delivered::Sent { undelivered: Vec::new() })
            .map_err(|e| Failure::from_api(errcodes, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_goes_inline_with_its_md5() {
        let image = body(&Content::Image { media_id: None, base64: Some("aGVsbG8=".into()), media: None });
        assert_eq!(image["image"]["md5"], "5d41402abc4b2a76b9719d911017c592"); // md5("hello")
        assert_eq!(
            refuse(&Content::Image { media_id: Some("m".into()), base64: None, media: None }),
            Some("a robot image needs base64 or media")
        );
        assert_eq!(refuse(&Content::TemplateCard { card: json!({}) }), None);
    }
}
