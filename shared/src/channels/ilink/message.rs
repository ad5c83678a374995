//! iLink (personal WeChat bot) inbound messages, as `getupdates` returns them (JSON).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::core::envelope::{Channel, Inbound, Kind, Media, MediaType};

/// A uint64 that may arrive as a JSON number above 2^53 or as a string; kept exact.
fn u64_exact<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Number(u64),
        Text(String),
    }
    Ok(match Option::<Wire>::deserialize(deserializer)? {
        Some(Wire::Number(n)) => Some(n),
        Some(Wire::Text(text)) => text.trim().parse().ok(),
        None => None,
    })
}

/// A media reference on the iLink CDN.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CdnMedia {
    #[serde(default)]
    pub encrypt_query_param: Option<String>,
    #[serde(default)]
    pub full_url: Option<String>,
    /// The file's AES-128 key: base64 of the 16 raw bytes, or of their 32 hex digits.
    #[serde(default)]
    pub aes_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TextItem {
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MediaItem {
    #[serde(default)]
    pub media: Option<CdnMedia>,
    /// Voice: the server's speech-to-text.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub file_name: Option<String>,
    /// Images: the AES-128 key as 32 hex digits (preferred over `media.aes_key`).
    #[serde(default)]
    pub aeskey: Option<String>,
}

/// One item of a message; exactly one payload matches `type`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageItem {
    #[serde(rename = "type", default)]
    pub item_type: u32,
    #[serde(default, deserialize_with = "u64_exact")]
    pub msg_id: Option<u64>,
    #[serde(default)]
    pub text_item: Option<TextItem>,
    #[serde(default)]
    pub image_item: Option<MediaItem>,
    #[serde(default)]
    pub voice_item: Option<MediaItem>,
    #[serde(default)]
    pub file_item: Option<MediaItem>,
    #[serde(default)]
    pub video_item: Option<MediaItem>,
}

/// `message_type`: who wrote it.
pub const MESSAGE_TYPE_USER: u32 = 1;
pub const MESSAGE_TYPE_BOT: u32 = 2;
/// `message_state`: only finished messages are dispatched.
pub const MESSAGE_STATE_FINISH: u32 = 2;

/// A message from `getupdates`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct WeixinMessage {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, deserialize_with = "u64_exact")]
    pub message_id: Option<u64>,
    #[serde(default)]
    pub from_user_id: String,
    #[serde(default)]
    pub to_user_id: String,
    #[serde(default)]
    pub create_time_ms: Option<u64>,
    #[serde(default)]
    pub message_type: Option<u32>,
    #[serde(default)]
    pub message_state: Option<u32>,
    #[serde(default)]
    pub item_list: Vec<MessageItem>,
    /// Echoed on every reply to this user; the latest one wins.
    #[serde(default)]
    pub context_token: Option<String>,
}

impl WeixinMessage {
    /// Parses one message of a `getupdates` answer, keeping its JSON for `raw`.
    pub fn from_value(value: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    /// Whether the bridge should dispatch it: a finished message from a user. The bot's own
    /// messages come back too and are dropped.
    pub fn is_dispatchable(&self) -> bool {
        self.message_type != Some(MESSAGE_TYPE_BOT)
            && self.message_state.is_none_or(|s| s == MESSAGE_STATE_FINISH)
            && !self.from_user_id.is_empty()
    }

    /// The dedupe key: the server's message id, else the first item's, else sequence, sender
    /// and time. The server delivers many messages twice about a second apart.
    pub fn dedupe_key(&self) -> String {
        match self.message_id.or_else(|| self.item_list.first().and_then(|i| i.msg_id)) {
            Some(id) => id.to_string(),
            None => format!("{}:{}:{}", self.seq.unwrap_or(0), self.from_user_id, self.create_time_ms.unwrap_or(0)),
        }
    }

    /// The `Inbound` for bot account `account`.
    pub fn to_inbound(&self, account: &str, received_at: u64, raw: Value) -> Inbound {
        let id = format!("ilink:{account}:{}", self.dedupe_key());
        let sent_at = self.create_time_ms.map(|ms| ms / 1000).unwrap_or(received_at);
        let mut inbound = Inbound::direct(Channel::Ilink, account, id, &self.from_user_id, sent_at, received_at, raw);
        let media = |item: &MediaItem, media_type: MediaType| Media {
            // The server's own link, where it gives one (fetched only on the CDN's host).
            url: item.media.as_ref().and_then(|m| m.full_url.clone()),
            media_id: item.media.as_ref().and_then(|m| m.encrypt_query_param.clone()),
            file_name: item.file_name.clone(),
            media_type: Some(media_type),
            transcript: item.text.clone().filter(|t| !t.is_empty()),
            ..Media::default()
        };
        let first = |pick: fn(&MessageItem) -> Option<&MediaItem>| self.item_list.iter().find_map(pick);
        // The file a message carries, the way WeChat's own plugin picks it: an image, else a
        // video, else a file.
        let file = first(|i| i.image_item.as_ref())
            .map(|m| (Kind::Image, media(m, MediaType::Image)))
            .or_else(|| first(|i| i.video_item.as_ref()).map(|m| (Kind::Video, media(m, MediaType::Video))))
            .or_else(|| first(|i| i.file_item.as_ref()).map(|m| (Kind::File, media(m, MediaType::File))));
        // The body is the first text (with the file, if one came along), else a voice
        // transcript, else the file.
        if let Some(text) = self.item_list.iter().find_map(|i| i.text_item.as_ref()).filter(|t| !t.text.is_empty()) {
            inbound.kind = Kind::Text;
            inbound.text = Some(text.text.clone());
            inbound.media = file.map(|(_, media)| media);
        } else if let Some(voice) = first(|i| i.voice_item.as_ref()) {
            inbound.kind = Kind::Voice;
            inbound.text = voice.text.clone().filter(|t| !t.is_empty());
            inbound.media = Some(media(voice, MediaType::Voice));
        } else if let Some((kind, media)) = file {
            inbound.kind = kind;
            inbound.media = Some(media);
        }
        inbound
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SCHEMA: &str = include_str!("../../../../schemas/inbound.v1.json");

    fn message(value: Value) -> WeixinMessage {
        WeixinMessage::from_value(&value).unwrap()
    }

    #[test]
    fn ids_above_2_pow_53_stay_exact_as_numbers_or_strings() {
        let as_number: Value =
            serde_json::from_str(r#"{"message_id": 7300000000000000123, "from_user_id": "u@im.wechat"}"#).unwrap();
        assert_eq!(message(as_number).message_id, Some(7_300_000_000_000_000_123));
        let as_text = json!({"message_id": "18446744073709551615", "from_user_id": "u@im.wechat"});
        assert_eq!(message(as_text).message_id, Some(u64::MAX));
    }

    #[test]
    fn text_voice_and_media_become_the_right_inbound() {
        let text =
            message(json!({"message_id": 1, "from_user_id": "u@im.wechat", "create_time_ms": 1_767_225_600_123u64,
            "message_type": 1, "message_state": 2, "context_token": "ctx1",
            "item_list": [{"type": 1, "text_item": {"text": "你好"}}]}));
        let inbound = text.to_inbound("b@im.bot", 9, json!({}));
        assert_eq!((inbound.kind, inbound.text.as_deref(), inbound.sent_at), (Kind::Text, Some("你好"), 1_767_225_600));
        assert_eq!(inbound.id, "ilink:b@im.bot:1");
        assert_eq!(inbound.conversation.id, "u@im.wechat");

        let voice = message(json!({"message_id": 2, "from_user_id": "u@im.wechat",
            "item_list": [{"type": 3, "voice_item": {"text": "语音转文字", "encode_type": 4}}]}));
        let inbound = voice.to_inbound("b@im.bot", 9, json!({}));
        assert_eq!((inbound.kind, inbound.text.as_deref()), (Kind::Voice, Some("语音转文字")));

        let file = message(json!({"message_id": 3, "from_user_id": "u@im.wechat",
            "item_list": [{"type": 4, "file_item": {"file_name": "a.pdf", "len": "12", "media": {"encrypt_query_param": "q", "full_url": "https://cdn/x"}}}]}));
        let inbound = file.to_inbound("b@im.bot", 9, json!({}));
        assert_eq!(inbound.kind, Kind::File);
        assert_eq!(inbound.media.as_ref().unwrap().file_name.as_deref(), Some("a.pdf"));

        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for m in [text, voice, file] {
            let json: Value = serde_json::from_str(&m.to_inbound("b@im.bot", 9, json!({"x": 1})).to_json()).unwrap();
            assert!(validator.is_valid(&json), "{json}");
        }
    }

    #[test]
    fn the_bots_own_and_unfinished_messages_are_not_dispatched() {
        assert!(!message(json!({"message_id": 1, "from_user_id": "b@im.bot", "message_type": 2})).is_dispatchable());
        assert!(!message(json!({"message_id": 1, "from_user_id": "u@im.wechat", "message_state": 1})).is_dispatchable());
        assert!(message(
            json!({"message_id": 1, "from_user_id": "u@im.wechat", "message_type": 1, "message_state": 2})
        )
        .is_dispatchable());
    }

    #[test]
    fn a_message_without_ids_still_has_a_stable_key() {
        let m = message(json!({"seq": 7, "from_user_id": "u@im.wechat", "create_time_ms": 5}));
        assert_eq!(m.dedupe_key(), "7:u@im.wechat:5");
        assert_eq!(
            m.dedupe_key(),
            message(json!({"seq": 7, "from_user_id": "u@im.wechat", "create_time_ms": 5})).dedupe_key()
        );
    }
}
