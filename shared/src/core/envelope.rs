//! The public contract with bots: versioned JSON documented by `schemas/*.json`.
//!
//! Fields may be added in v1; none is removed or changes meaning.

use serde::{Deserialize, Serialize};

/// The envelope version this code writes.
pub const INBOUND_VERSION: u8 = 1;

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Wecom,
    Oa,
    Ilink,
    /// A WeCom AI bot (智能机器人, API mode): direct chats and group @-mentions.
    WecomAibot,
    /// 微信客服 (WeCom Customer Service): a personal WeChat user writing to a kf account.
    WecomKf,
}

impl Channel {
    /// The name in messages and config (`wecom`, `oa`, `ilink`, `wecom_aibot`, `wecom_kf`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wecom => "wecom",
            Self::Oa => "oa",
            Self::Ilink => "ilink",
            Self::WecomAibot => "wecom_aibot",
            Self::WecomKf => "wecom_kf",
        }
    }
}

/// Whom a reply is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// One user with the app / account.
    Direct,
    /// A group chat.
    Group,
    /// Platform notifications (WeCom `sys` events): nobody to reply to.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub kind: ConversationKind,
    /// What a reply is addressed to.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: String,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Text,
    Image,
    Voice,
    Video,
    File,
    Location,
    Link,
    Event,
    Unsupported,
}

/// A media attachment. The channel's reference (`media_id`, …) comes from the callback; the
/// bridge fetches the bytes once into its media store before any bot sees the message and fills
/// in `key`, `sha256`, `size`, `mime` and `url` (a time-limited link a bot can GET), or `error`
/// when the media could not be had.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// The channel's media id (WeCom, Official Account: valid three days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Once fetched: a time-limited link to the stored bytes (until `url_expires_at`). Before
    /// (and when the fetch failed): absent, or the channel's own plain link where it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The channel's audio format name (`amr`, `speex`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumb_media_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// `image`, `voice`, `video` or `file`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// The MIME type, from the bytes where they tell (JPEG, PNG, AMR, SILK, MP4, PDF, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Size in bytes of the stored (decrypted) file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Hex SHA-256 of the stored bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The object key in the media store (content-addressed: `media/<sha256>`); an outbound
    /// message can send it back by this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When `url` stops working (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_expires_at: Option<u64>,
    /// What the platform heard in a voice message, where it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Why there are no bytes: the message is still delivered, without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MediaFailure>,
}

impl Media {
    /// Whether the bridge still has to fetch it: a channel reference, no stored bytes, no error.
    pub fn needs_fetch(&self) -> bool {
        self.key.is_none() && self.error.is_none() && (self.media_id.is_some() || self.url.is_some())
    }
}

/// The kind of a media file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Voice,
    Video,
    File,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Voice => "voice",
            Self::Video => "video",
            Self::File => "file",
        }
    }

    /// The media type of a message kind, if it is one.
    pub fn of(kind: Kind) -> Option<Self> {
        match kind {
            Kind::Image => Some(Self::Image),
            Kind::Voice => Some(Self::Voice),
            Kind::Video => Some(Self::Video),
            Kind::File => Some(Self::File),
            _ => None,
        }
    }
}

/// Why a message's media could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFailure {
    /// `too_large`, `expired` (the platform's link or id ran out before the fetch), `refused`
    /// (the platform said no: an unknown or foreign id, a bad key), `unavailable` (the platform
    /// kept failing; tried on every delivery of the message) or `none` (the platform gives no
    /// bytes for this kind, e.g. an AI bot's voice: only its transcript).
    pub code: String,
    /// For people: what happened, without tokens or keys.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pic_url: Option<String>,
}

/// The message a user quoted (replied to) in their message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
}

/// An event: its name as the platform sends it and its most used fields; the rest is in `raw`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
}

/// A message or event from WeChat, as it reaches the inbound queue and the bots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    pub v: u8,
    /// Stable across WeChat's retries: the dedupe key.
    pub id: String,
    pub channel: Channel,
    /// The configured app / account name.
    pub account: String,
    pub conversation: Conversation,
    pub sender: Sender,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    /// In a group chat: whether the message mentioned the bot (the mention is not in `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentioned: Option<bool>,
    /// The message this one quotes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// When wxbridge received it (RFC 3339, UTC).
    pub received_at: String,
    /// When the user sent it (unix seconds, from the platform).
    pub sent_at: u64,
    /// Every field of the decrypted payload, as sent.
    pub raw: serde_json::Value,
}

impl Inbound {
    /// A direct message from `sender`, before its kind-specific fields are filled in.
    pub fn direct(
        channel: Channel,
        account: &str,
        id: String,
        sender: &str,
        sent_at: u64,
        received_at: u64,
        raw: serde_json::Value,
    ) -> Self {
        Self {
            v: INBOUND_VERSION,
            id,
            channel,
            account: account.to_owned(),
            conversation: Conversation { kind: ConversationKind::Direct, id: sender.to_owned() },
            sender: Sender { id: sender.to_owned() },
            kind: Kind::Unsupported,
            text: None,
            media: None,
            location: None,
            link: None,
            event: None,
            mentioned: None,
            quote: None,
            received_at: rfc3339(received_at),
            sent_at,
            raw,
        }
    }

    /// Whether the message or its quote carries media the bridge still has to fetch.
    pub fn needs_media(&self) -> bool {
        self.media.as_ref().is_some_and(Media::needs_fetch)
            || self.quote.as_ref().and_then(|q| q.media.as_ref()).is_some_and(Media::needs_fetch)
    }

    /// When wxbridge received it (unix seconds), if `received_at` reads.
    pub fn received_unix(&self) -> Option<u64> {
        let at = time::OffsetDateTime::parse(&self.received_at, &time::format_description::well_known::Rfc3339).ok()?;
        u64::try_from(at.unix_timestamp()).ok()
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The envelope version of `Outbound`.
pub const OUTBOUND_VERSION: u8 = 1;

/// Which API sends an `Outbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutChannel {
    /// A WeCom app message to users (`to`: user ids joined by `|`, or `@all`).
    WecomApp,
    /// A WeCom app group chat (`to`: chat id).
    WecomAppchat,
    /// A WeCom group robot (`account` names the robot; `to` unused).
    WecomWebhook,
    /// An Official Account customer-service message (`to`: open id).
    Oa,
    /// An iLink bot message to a personal WeChat user (`to`: user id).
    Ilink,
    /// The answer to a WeCom AI bot message (`in_reply_to`: its Inbound id): into the message's
    /// stream while it is open, else once through its `response_url`.
    WecomAibot,
    /// A 微信客服 message to a customer (`account`: the kf account; `to`: the external user id).
    WecomKf,
}

impl OutChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WecomApp => "wecom_app",
            Self::WecomAppchat => "wecom_appchat",
            Self::WecomWebhook => "wecom_webhook",
            Self::Oa => "oa",
            Self::Ilink => "ilink",
            Self::WecomAibot => "wecom_aibot",
            Self::WecomKf => "wecom_kf",
        }
    }
}

/// One article of a `news` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Article {
    pub title: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picurl: Option<String>,
}

/// What an `Outbound` says. Each channel supports a subset; the sender refuses the rest as a
/// permanent error with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    Text {
        text: String,
    },
    Markdown {
        text: String,
    },
    /// By `media_id` (an id the channel issued), as `base64` (group robot), or as `media` (a
    /// file the sender uploads to the channel).
    Image {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<OutMedia>,
    },
    File {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<OutMedia>,
    },
    /// WeCom takes AMR voice of at most 60 s.
    Voice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<OutMedia>,
    },
    Video {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<OutMedia>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    News {
        articles: Vec<Article>,
    },
    Textcard {
        title: String,
        description: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        btntxt: Option<String>,
    },
    /// The `template_card` object exactly as WeCom documents it.
    TemplateCard {
        card: serde_json::Value,
    },
}

impl Content {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Markdown { .. } => "markdown",
            Self::Image { .. } => "image",
            Self::File { .. } => "file",
            Self::Voice { .. } => "voice",
            Self::Video { .. } => "video",
            Self::News { .. } => "news",
            Self::Textcard { .. } => "textcard",
            Self::TemplateCard { .. } => "template_card",
        }
    }
}

impl Content {
    /// The file this content asks the sender to upload, with its type.
    pub fn media(&self) -> Option<(MediaType, &OutMedia)> {
        match self {
            Self::Image { media: Some(m), .. } => Some((MediaType::Image, m)),
            Self::File { media: Some(m), .. } => Some((MediaType::File, m)),
            Self::Voice { media: Some(m), .. } => Some((MediaType::Voice, m)),
            Self::Video { media: Some(m), .. } => Some((MediaType::Video, m)),
            _ => None,
        }
    }

    /// The channel's media id a file content names, if any.
    pub fn media_id(&self) -> Option<&str> {
        match self {
            Self::Image { media_id, .. }
            | Self::File { media_id, .. }
            | Self::Voice { media_id, .. }
            | Self::Video { media_id, .. } => media_id.as_deref(),
            _ => None,
        }
    }

    /// The content with the file replaced by the channel's `media_id` for it.
    pub fn with_media_id(&self, id: &str) -> Self {
        let id = Some(id.to_owned());
        match self.clone() {
            Self::Image { .. } => Self::Image { media_id: id, base64: None, media: None },
            Self::File { .. } => Self::File { media_id: id, media: None },
            Self::Voice { .. } => Self::Voice { media_id: id, media: None },
            Self::Video { title, description, .. } => Self::Video { media_id: id, media: None, title, description },
            other => other,
        }
    }

    /// The content with its file given by `media` (no media id, no inline base64).
    pub fn with_media(&self, media: OutMedia) -> Self {
        let media = Some(media);
        match self.clone() {
            Self::Image { .. } => Self::Image { media_id: None, base64: None, media },
            Self::File { .. } => Self::File { media_id: None, media },
            Self::Voice { .. } => Self::Voice { media_id: None, media },
            Self::Video { title, description, .. } => Self::Video { media_id: None, media, title, description },
            other => other,
        }
    }

    /// The content with the file inline as base64 (group robot images).
    pub fn with_base64(&self, data: String) -> Self {
        match self {
            Self::Image { .. } => Self::Image { media_id: None, base64: Some(data), media: None },
            other => other.clone(),
        }
    }
}

/// A file for the sender to upload: one of `key` (in the media store, e.g. an inbound
/// message's `media.key`), `url` (https, fetched with a size cap) or `base64` (small files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutMedia {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The name a file message shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// A reply or message for WeChat, as bots put it on the outbound queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    pub v: u8,
    pub channel: OutChannel,
    /// The configured app, Official Account, iLink account or robot.
    pub account: String,
    #[serde(default)]
    pub to: String,
    pub content: Content,
    /// Sending the same key twice sends once.
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
}

/// Why a queue message is not a valid `Outbound`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not an Outbound v1 document: {0}")]
    Json(String),
    #[error("unsupported envelope version {0} (this sender reads v1)")]
    Version(u8),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("idempotency_key is longer than 512 bytes")]
    KeyTooLong,
    #[error("{0} is longer than {1} bytes")]
    TooLong(&'static str, usize),
}

impl Outbound {
    /// Parses and checks a queue message body.
    pub fn parse(json: &str) -> Result<Self, EnvelopeError> {
        // The reason names the field and the kind of value, never the value (a message's text).
        let out: Outbound = serde_json::from_str(json)
            .map_err(|e| EnvelopeError::Json(crate::core::config::redact_serde_message(&e.to_string())))?;
        if out.v != OUTBOUND_VERSION {
            return Err(EnvelopeError::Version(out.v));
        }
        if out.account.is_empty() {
            return Err(EnvelopeError::Empty("account"));
        }
        if out.idempotency_key.is_empty() {
            return Err(EnvelopeError::Empty("idempotency_key"));
        }
        // An AI bot can only answer a message: its stream or its response_url.
        if out.channel == OutChannel::WecomAibot && out.in_reply_to.as_deref().is_none_or(str::is_empty) {
            return Err(EnvelopeError::Empty("in_reply_to (wecom_aibot answers a message)"));
        }
        if out.idempotency_key.len() > 512 {
            return Err(EnvelopeError::KeyTooLong);
        }
        // Both end up in table keys (DynamoDB keys are at most 2048 bytes).
        if out.account.len() > 128 {
            return Err(EnvelopeError::TooLong("account", 128));
        }
        // WeCom takes up to 1000 user ids joined by '|'.
        if out.to.len() > 64 * 1024 {
            return Err(EnvelopeError::TooLong("to", 64 * 1024));
        }
        if out.to.is_empty() && out.channel != OutChannel::WecomWebhook {
            return Err(EnvelopeError::Empty("to"));
        }
        Ok(out)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// RFC 3339 for a unix time in seconds (UTC).
pub fn rfc3339(unix_seconds: u64) -> String {
    let seconds = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_minimal_outbound_and_refuses_broken_ones() {
        let minimal = r#"{"v": 1, "channel": "wecom_app", "account": "hr", "to": "WangFang",
            "content": {"type": "text", "text": "pong"}, "idempotency_key": "reply-1",
            "in_reply_to": "wecom:hr:7450000000000000230"}"#;
        let out = Outbound::parse(minimal).unwrap();
        assert_eq!(out.content, Content::Text { text: "pong".into() });
        assert_eq!(Outbound::parse(&out.to_json()).unwrap(), out);
        let robot = r#"{"v":1,"channel":"wecom_webhook","account":"ops","content":{"type":"markdown","text":"**hi**"},"idempotency_key":"k"}"#;
        assert_eq!(Outbound::parse(robot).unwrap().to, "");
        for (bad, why) in [
            (minimal.replace("\"v\": 1", "\"v\": 2"), "version"),
            (minimal.replace("\"to\": \"WangFang\"", "\"to\": \"\""), "to"),
            (minimal.replace("reply-1", ""), "idempotency_key"),
            (minimal.replace("wecom_app", "telegram"), "unknown variant"),
            (minimal.replace("\"type\": \"text\"", "\"type\": \"sticker\""), "unknown variant"),
            ("[]".to_owned(), "not an Outbound"),
        ] {
            let err = Outbound::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // A bad envelope's reason (a DLQ attribute, a log line) never quotes the message.
        for bad in [
            minimal.replace("\"v\": 1", "\"v\": \"hunter2 unknown variant x\""),
            minimal.replace("\"type\": \"text\"", "\"type\": \"a, expected hunter2\""),
            minimal.replace("\"text\": \"pong\"", "\"text\": \"pong\", \"我的密码 hunter2\": 1"),
            minimal.replace("wecom_app", "hunter2"),
            minimal.replace("\"pong\"", "{\"secret\": \"我的密码 hunter2\"}"),
            minimal.replace("\"text\": \"pong\"", "\"text\": 7, \"x\": \"hunter2\""),
            minimal.replace("\"type\": \"text\"", "\"type\": \"hunter2 我的密码\""),
            minimal.replace("\"v\": 1", "\"v\": \"hunter2\""),
        ] {
            let err = Outbound::parse(&bad).unwrap_err().to_string();
            assert!(!err.contains("hunter2") && !err.contains("密码"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(rfc3339(1_767_225_597), "2025-12-31T23:59:57Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
