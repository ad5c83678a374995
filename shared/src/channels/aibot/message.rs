//! The decrypted JSON callbacks of the AI bot: user messages, stream refreshes and events
//! (wecom-aibot.md §2–§4), and their conversion to the bridge's [`Inbound`].
//!
//! The payload is read from a [`serde_json::Value`] field by field rather than derived with serde:
//! every refusal then has a fixed reason naming the field, and no serde error text (which can
//! echo user text) ever reaches an error. An absent or `null` optional field is `None`; a field
//! present with the wrong JSON type is refused.

use serde_json::{Map, Value};

use crate::core::envelope::{Channel, Conversation, ConversationKind, Event, Inbound, Kind, Media, MediaType, Quote};
use crate::protocol::fields::MessageError;

/// msgid, aibotid, userid, chatid and stream id longer than this are refused (they end up in
/// table keys and envelope ids).
pub const MAX_ID_BYTES: usize = 128;

type Object = Map<String, Value>;

/// A decrypted callback.
#[derive(Debug, Clone, PartialEq)]
pub enum AibotCallback {
    Message(AibotMessage),
    /// A stream refresh (msgtype "stream"): WeCom asks for the stream's current content.
    Refresh {
        msgid: String,
        stream_id: String,
    },
    Event(AibotEvent),
}

impl AibotCallback {
    /// Parses a decrypted callback. Untrusted (though signature-checked) input: never panics.
    pub fn parse(json: &str) -> Result<Self, MessageError> {
        // serde_json stops at 128 levels of nesting, so hostile depth is an error, not a stack overflow.
        let mut value: Value =
            serde_json::from_str(json).map_err(|_| MessageError::Invalid("the callback is not JSON"))?;
        let callback = {
            let obj = value.as_object().ok_or(MessageError::Invalid("the callback is not a JSON object"))?;
            read(obj)?
        };
        // response_url is a bearer-like secret: the caller keeps it, nothing else may carry it.
        remove_response_urls(&mut value);
        Ok(match callback {
            Read::Refresh { msgid, stream_id } => Self::Refresh { msgid, stream_id },
            Read::Message { header, body, quote } => Self::Message(AibotMessage {
                msgid: header.msgid,
                aibotid: header.aibotid,
                chat: header.chat,
                response_url: header.response_url,
                create_time: header.create_time,
                body,
                quote,
                raw: value,
            }),
            Read::Event { header, eventtype, detail } => Self::Event(AibotEvent {
                msgid: header.msgid,
                aibotid: header.aibotid,
                chat: header.chat,
                create_time: header.create_time,
                eventtype,
                detail,
                response_url: header.response_url,
                raw: value,
            }),
        })
    }
}

/// Where a callback was sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chat {
    Single { userid: String },
    Group { chatid: String, userid: String },
}

impl Chat {
    /// The sender's member userid.
    pub fn userid(&self) -> &str {
        match self {
            Self::Single { userid } | Self::Group { userid, .. } => userid,
        }
    }
}

/// What a message (or the message it quotes) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// In a group, `content` still holds the @-mention of the bot.
    Text {
        content: String,
    },
    Mixed {
        items: Vec<MixedItem>,
    },
    /// The file behind `url` is AES-encrypted and valid for 5 minutes.
    Image {
        url: String,
    },
    /// Voice arrives transcribed: there is no audio URL.
    Voice {
        content: String,
    },
    File {
        url: String,
    },
    Video {
        url: String,
    },
    Unsupported {
        msgtype: String,
    },
}

/// One item of a `mixed` message; items of other types are left out (they stay in `raw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixedItem {
    Text { content: String },
    Image { url: String },
}

/// A user message (msgtype text, mixed, image, voice, file, video, or one this code does not know).
#[derive(Debug, Clone, PartialEq)]
pub struct AibotMessage {
    pub msgid: String,
    /// Empty when the payload does not name the bot (the route does).
    pub aibotid: String,
    pub chat: Chat,
    /// Kept in DynamoDB by the caller, never put on the queue.
    pub response_url: Option<String>,
    pub create_time: Option<u64>,
    pub body: Body,
    pub quote: Option<Body>,
    /// The whole decrypted payload minus every `response_url`.
    pub raw: Value,
}

impl AibotMessage {
    /// The Inbound for bot `bot` (the configured name, the {bot} of the route) whose display name is `bot_name`.
    ///
    /// A text (or mixed) message that is nothing but the mention takes the quote's text; with no
    /// quote text either it stays kind `text` with an empty `text` (the schema requires `text` on
    /// a text message, and "the user @-mentioned the bot and said nothing" is still a message).
    /// Voice carries an empty `media` (no audio URL exists; the schema requires `media` on voice).
    pub fn to_inbound(&self, bot: &str, bot_name: &str, received_at: u64) -> Inbound {
        let mut inbound = base_inbound(bot, &self.msgid, &self.chat, self.create_time, received_at, self.raw.clone());
        let group = matches!(self.chat, Chat::Group { .. });
        let quote = self.quote.as_ref().map(Body::to_quote);
        let mut mentioned = false;
        // A single chat may start with the bot's name too; only a group falls back to any leading @token.
        let mut unmention = |text: &str| {
            let (rest, removed) = strip(text, bot_name, group);
            mentioned |= removed;
            rest
        };
        let or_quote = |text: String| match &quote {
            Some(Quote { text: Some(quoted), .. }) if text.trim().is_empty() => quoted.clone(),
            _ => text,
        };
        match &self.body {
            Body::Text { content } => {
                inbound.kind = Kind::Text;
                inbound.text = Some(or_quote(unmention(content)));
            }
            Body::Mixed { items } => {
                let mut texts = Vec::new();
                let mut first = true;
                for item in items {
                    if let MixedItem::Text { content } = item {
                        let text = if first { unmention(content) } else { content.clone() };
                        first = false;
                        if !text.trim().is_empty() {
                            texts.push(text);
                        }
                    }
                }
                inbound.kind = Kind::Text;
                inbound.text = Some(or_quote(texts.join("\n")));
                inbound.media = first_image(items);
            }
            Body::Image { url } => (inbound.kind, inbound.media) = (Kind::Image, Some(media(url, MediaType::Image))),
            Body::Voice { content } => {
                inbound.kind = Kind::Voice;
                inbound.text = Some(content.clone());
                // No audio reaches the bot: only WeCom's transcript.
                inbound.media = Some(Media {
                    media_type: Some(MediaType::Voice),
                    transcript: Some(content.clone()),
                    ..Media::default()
                });
            }
            Body::File { url } => (inbound.kind, inbound.media) = (Kind::File, Some(media(url, MediaType::File))),
            Body::Video { url } => (inbound.kind, inbound.media) = (Kind::Video, Some(media(url, MediaType::Video))),
            Body::Unsupported { .. } => inbound.kind = Kind::Unsupported,
        }
        inbound.mentioned = group.then_some(mentioned);
        inbound.quote = quote;
        inbound
    }
}

impl Body {
    /// The body as the `quote` of an Inbound.
    pub fn to_quote(&self) -> Quote {
        let (kind, text, media) = match self {
            Self::Text { content } => (Kind::Text, Some(content.clone()), None),
            Self::Mixed { items } => {
                let texts: Vec<&str> = items
                    .iter()
                    .filter_map(|i| match i {
                        MixedItem::Text { content } if !content.trim().is_empty() => Some(content.as_str()),
                        _ => None,
                    })
                    .collect();
                (Kind::Text, Some(texts.join("\n")), first_image(items))
            }
            Self::Image { url } => (Kind::Image, None, Some(media(url, MediaType::Image))),
            Self::Voice { content } => (Kind::Voice, Some(content.clone()), None),
            Self::File { url } => (Kind::File, None, Some(media(url, MediaType::File))),
            Self::Video { url } => (Kind::Video, None, Some(media(url, MediaType::Video))),
            Self::Unsupported { .. } => (Kind::Unsupported, None, None),
        };
        Quote { kind, text, media }
    }
}

/// An event (msgtype "event").
#[derive(Debug, Clone, PartialEq)]
pub struct AibotEvent {
    pub msgid: String,
    /// Empty when the payload does not name the bot (the route does).
    pub aibotid: String,
    pub chat: Chat,
    pub create_time: Option<u64>,
    /// event.eventtype: "enter_chat", "template_card_event", "feedback_event", or any other (kept).
    pub eventtype: String,
    /// The fields of the event types this code knows.
    pub detail: EventDetail,
    pub response_url: Option<String>,
    /// The whole decrypted payload minus every `response_url`.
    pub raw: Value,
}

/// The typed part of an event. The card and feedback fields are optional: WeCom sends a card
/// event once and drops it, and the docs disagree on its field names (wecom-aibot.md §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDetail {
    /// The user opened the single chat for the first time that day.
    EnterChat,
    /// A click or submission on a template card.
    TemplateCard {
        event_key: Option<String>,
        task_id: Option<String>,
        card_type: Option<String>,
    },
    /// 👍/👎 on a reply that carried a feedback id: type 1 accurate, 2 inaccurate, 3 cancelled.
    Feedback {
        id: Option<String>,
        feedback_type: Option<u64>,
    },
    Other,
}

impl AibotEvent {
    /// The Inbound (kind `event`) for bot `bot`: the card's event_key or the feedback type is the key.
    pub fn to_inbound(&self, bot: &str, received_at: u64) -> Inbound {
        let mut inbound = base_inbound(bot, &self.msgid, &self.chat, self.create_time, received_at, self.raw.clone());
        let key = match &self.detail {
            EventDetail::TemplateCard { event_key, .. } => event_key.clone(),
            EventDetail::Feedback { feedback_type, .. } => feedback_type.map(|t| t.to_string()),
            EventDetail::EnterChat | EventDetail::Other => None,
        };
        inbound.kind = Kind::Event;
        inbound.event = Some(Event { name: self.eventtype.clone(), key, change_type: None });
        inbound
    }
}

/// Removes one leading mention of the bot: `@<bot_name>` at the start (after leading whitespace),
/// else (fallback) the first `@token` at position 0 (token = up to the first whitespace); keeps the
/// rest, trimmed of the whitespace right after the mention. Returns (text, whether a mention was removed).
/// Never removes an `@` in the middle of the text (e-mail addresses, other mentions later on).
pub fn strip_mention(text: &str, bot_name: &str) -> (String, bool) {
    strip(text, bot_name, true)
}

/// [`strip_mention`], with the fallback to any leading `@token` only when `fallback` is set.
fn strip(text: &str, bot_name: &str, fallback: bool) -> (String, bool) {
    let Some(after_at) = text.trim_start().strip_prefix('@') else {
        return (text.to_owned(), false);
    };
    // The name matches ASCII-case-insensitively and must end there: "@Bot" is not in "@Bottle".
    let named = after_at
        .get(..bot_name.len())
        .filter(|head| !bot_name.is_empty() && head.eq_ignore_ascii_case(bot_name))
        .map(|_| &after_at[bot_name.len()..])
        .filter(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'));
    if let Some(rest) = named {
        return (rest.trim_start().to_owned(), true);
    }
    let token_end = after_at.find(char::is_whitespace).unwrap_or(after_at.len());
    if fallback && token_end > 0 {
        return (after_at[token_end..].trim_start().to_owned(), true);
    }
    (text.to_owned(), false)
}

fn media(url: &str, media_type: MediaType) -> Media {
    Media { url: Some(url.to_owned()), media_type: Some(media_type), ..Media::default() }
}

fn first_image(items: &[MixedItem]) -> Option<Media> {
    items.iter().find_map(|i| match i {
        MixedItem::Image { url } => Some(media(url, MediaType::Image)),
        MixedItem::Text { .. } => None,
    })
}

/// The fields messages and events share in an Inbound.
fn base_inbound(bot: &str, msgid: &str, chat: &Chat, sent: Option<u64>, received_at: u64, raw: Value) -> Inbound {
    let id = format!("wecom_aibot:{bot}:{msgid}");
    let sent_at = sent.unwrap_or(received_at);
    let mut inbound = Inbound::direct(Channel::WecomAibot, bot, id, chat.userid(), sent_at, received_at, raw);
    if let Chat::Group { chatid, .. } = chat {
        inbound.conversation = Conversation { kind: ConversationKind::Group, id: chatid.clone() };
    }
    inbound
}

/// Deletes `response_url` at every level (nesting is bounded by serde_json's recursion limit).
fn remove_response_urls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("response_url");
            map.values_mut().for_each(remove_response_urls);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_response_urls),
        _ => {}
    }
}

// ---- reading the payload ----

/// A field with its fixed refusal reasons: they name the field and never quote the input.
struct Field {
    key: &'static str,
    path: &'static str,
    wrong_type: &'static str,
    too_long: &'static str,
    control: &'static str,
}

macro_rules! field {
    ($key:literal) => {
        field!($key, $key)
    };
    ($key:literal, $path:literal) => {
        Field {
            key: $key,
            path: $path,
            wrong_type: concat!($path, " has the wrong JSON type"),
            too_long: concat!($path, " is longer than 128 bytes"),
            control: concat!($path, " contains control characters"),
        }
    };
}

const MSGID: Field = field!("msgid");
const MSGTYPE: Field = field!("msgtype");
const AIBOTID: Field = field!("aibotid");
const CHATID: Field = field!("chatid");
const CHATTYPE: Field = field!("chattype");
const FROM: Field = field!("from");
const USERID: Field = field!("userid", "from.userid");
const CREATE_TIME: Field = field!("create_time");
const RESPONSE_URL: Field = field!("response_url");
const STREAM: Field = field!("stream");
const STREAM_ID: Field = field!("id", "stream.id");
const TEXT: Field = field!("text");
const TEXT_CONTENT: Field = field!("content", "text.content");
const MIXED: Field = field!("mixed");
const MSG_ITEM: Field = field!("msg_item", "mixed.msg_item");
const ITEM_MSGTYPE: Field = field!("msgtype", "mixed.msg_item.msgtype");
const IMAGE: Field = field!("image");
const IMAGE_URL: Field = field!("url", "image.url");
const VOICE: Field = field!("voice");
const VOICE_CONTENT: Field = field!("content", "voice.content");
const FILE: Field = field!("file");
const FILE_URL: Field = field!("url", "file.url");
const VIDEO: Field = field!("video");
const VIDEO_URL: Field = field!("url", "video.url");
const QUOTE: Field = field!("quote");
const QUOTE_MSGTYPE: Field = field!("msgtype", "quote.msgtype");
const EVENT: Field = field!("event");
const EVENTTYPE: Field = field!("eventtype", "event.eventtype");
const EVENT_RESPONSE_URL: Field = field!("response_url", "event.response_url");
const CARD_EVENT: Field = field!("template_card_event", "event.template_card_event");
const CARD: Field = field!("template_card", "event.template_card");
const EVENT_KEY: Field = field!("event_key", "template_card_event.event_key");
const TASK_ID: Field = field!("task_id", "template_card_event.task_id");
const CARD_TYPE: Field = field!("card_type", "template_card_event.card_type");
const FEEDBACK: Field = field!("feedback_event", "event.feedback_event");
const FEEDBACK_ID: Field = field!("id", "feedback_event.id");
const FEEDBACK_TYPE: Field = field!("type", "feedback_event.type");

impl Field {
    /// The value, unless absent or `null`.
    fn value<'a>(&self, obj: &'a Object) -> Option<&'a Value> {
        obj.get(self.key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self) -> MessageError {
        MessageError::Invalid(self.wrong_type)
    }

    fn missing(&self) -> MessageError {
        MessageError::Missing(self.path)
    }

    /// A string, possibly empty.
    fn text<'a>(&self, obj: &'a Object) -> Result<Option<&'a str>, MessageError> {
        self.value(obj).map(|v| v.as_str().ok_or_else(|| self.wrong_type())).transpose()
    }

    /// A non-empty string, or `None`.
    fn string(&self, obj: &Object) -> Result<Option<String>, MessageError> {
        Ok(self.text(obj)?.filter(|s| !s.is_empty()).map(str::to_owned))
    }

    /// A non-empty string that must be there.
    fn required(&self, obj: &Object) -> Result<String, MessageError> {
        self.string(obj)?.ok_or_else(|| self.missing())
    }

    /// A string that must be there, possibly empty (a message's content).
    fn content(&self, obj: Option<&Object>) -> Result<String, MessageError> {
        match obj {
            Some(obj) => self.text(obj)?.map(str::to_owned).ok_or_else(|| self.missing()),
            None => Err(self.missing()),
        }
    }

    /// An id: a non-empty string of at most [`MAX_ID_BYTES`] without control characters.
    fn id(&self, obj: &Object) -> Result<Option<String>, MessageError> {
        let Some(id) = self.string(obj)? else { return Ok(None) };
        if id.len() > MAX_ID_BYTES {
            return Err(MessageError::Invalid(self.too_long));
        }
        if id.chars().any(char::is_control) {
            return Err(MessageError::Invalid(self.control));
        }
        Ok(Some(id))
    }

    fn required_id(&self, obj: &Object) -> Result<String, MessageError> {
        self.id(obj)?.ok_or_else(|| self.missing())
    }

    fn object<'a>(&self, obj: &'a Object) -> Result<Option<&'a Object>, MessageError> {
        self.value(obj).map(|v| v.as_object().ok_or_else(|| self.wrong_type())).transpose()
    }

    /// A whole number, as a JSON number or a string of digits.
    fn number(&self, obj: &Object) -> Result<Option<u64>, MessageError> {
        self.value(obj)
            .map(|v| match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .map(|n| n.ok_or_else(|| self.wrong_type()))
            .transpose()
    }
}

/// What every message and event carries.
struct Header {
    msgid: String,
    aibotid: String,
    chat: Chat,
    create_time: Option<u64>,
    response_url: Option<String>,
}

/// A callback read from the payload, before `raw` is cleaned.
enum Read {
    Refresh { msgid: String, stream_id: String },
    Message { header: Header, body: Body, quote: Option<Body> },
    Event { header: Header, eventtype: String, detail: EventDetail },
}

fn read(obj: &Object) -> Result<Read, MessageError> {
    let msgid = MSGID.required_id(obj)?;
    let msgtype = MSGTYPE.required(obj)?;
    // A refresh only asks for a stream's content: the stream id is all it needs.
    if msgtype == "stream" {
        let stream = STREAM.object(obj)?.ok_or_else(|| STREAM_ID.missing())?;
        return Ok(Read::Refresh { msgid, stream_id: STREAM_ID.required_id(stream)? });
    }
    let mut header = Header {
        msgid,
        aibotid: AIBOTID.id(obj)?.unwrap_or_default(),
        chat: chat(obj)?,
        create_time: CREATE_TIME.number(obj)?,
        response_url: RESPONSE_URL.string(obj)?,
    };
    if msgtype == "event" {
        let event = EVENT.object(obj)?.ok_or_else(|| EVENT.missing())?;
        let eventtype = EVENTTYPE.required(event)?;
        if header.response_url.is_none() {
            header.response_url = EVENT_RESPONSE_URL.string(event)?;
        }
        let detail = event_detail(&eventtype, event)?;
        return Ok(Read::Event { header, eventtype, detail });
    }
    let quote = match QUOTE.object(obj)? {
        Some(quote) => Some(body(&QUOTE_MSGTYPE.required(quote)?, quote)?),
        None => None,
    };
    Ok(Read::Message { header, body: body(&msgtype, obj)?, quote })
}

/// The chat: `chatid` only in groups; without `chattype`, a `chatid` makes it a group.
fn chat(obj: &Object) -> Result<Chat, MessageError> {
    let from = FROM.object(obj)?.ok_or_else(|| USERID.missing())?;
    let userid = USERID.required_id(from)?;
    let chatid = CHATID.id(obj)?;
    match (CHATTYPE.text(obj)?, chatid) {
        (Some("single"), _) | (None, None) => Ok(Chat::Single { userid }),
        (Some("group") | None, Some(chatid)) => Ok(Chat::Group { chatid, userid }),
        (Some("group"), None) => Err(MessageError::Invalid("a group callback has no chatid")),
        (Some(_), _) => Err(MessageError::Invalid("chattype is neither single nor group")),
    }
}

fn body(msgtype: &str, obj: &Object) -> Result<Body, MessageError> {
    Ok(match msgtype {
        "text" => Body::Text { content: TEXT_CONTENT.content(TEXT.object(obj)?)? },
        "mixed" => Body::Mixed { items: mixed_items(obj)? },
        "image" => Body::Image { url: url(obj, &IMAGE, &IMAGE_URL)? },
        "voice" => Body::Voice { content: VOICE_CONTENT.content(VOICE.object(obj)?)? },
        "file" => Body::File { url: url(obj, &FILE, &FILE_URL)? },
        "video" => Body::Video { url: url(obj, &VIDEO, &VIDEO_URL)? },
        other => Body::Unsupported { msgtype: other.to_owned() },
    })
}

fn url(obj: &Object, outer: &Field, url: &Field) -> Result<String, MessageError> {
    url.required(outer.object(obj)?.ok_or_else(|| url.missing())?)
}

fn mixed_items(obj: &Object) -> Result<Vec<MixedItem>, MessageError> {
    let mixed = MIXED.object(obj)?.ok_or_else(|| MSG_ITEM.missing())?;
    let items = MSG_ITEM.value(mixed).ok_or_else(|| MSG_ITEM.missing())?;
    let items = items.as_array().ok_or_else(|| MSG_ITEM.wrong_type())?;
    let mut read = Vec::with_capacity(items.len());
    for item in items {
        let item = item.as_object().ok_or_else(|| MSG_ITEM.wrong_type())?;
        match ITEM_MSGTYPE.required(item)?.as_str() {
            "text" => read.push(MixedItem::Text { content: TEXT_CONTENT.content(TEXT.object(item)?)? }),
            "image" => read.push(MixedItem::Image { url: url(item, &IMAGE, &IMAGE_URL)? }),
            _ => {}
        }
    }
    Ok(read)
}

fn event_detail(eventtype: &str, event: &Object) -> Result<EventDetail, MessageError> {
    Ok(match eventtype {
        "enter_chat" => EventDetail::EnterChat,
        "template_card_event" => {
            // The documented `template_card_event` object, else the `template_card` some peers see.
            let card = match CARD_EVENT.object(event)? {
                Some(card) => Some(card),
                None => CARD.object(event)?,
            };
            match card {
                Some(card) => EventDetail::TemplateCard {
                    event_key: EVENT_KEY.string(card)?,
                    task_id: TASK_ID.string(card)?,
                    card_type: CARD_TYPE.string(card)?,
                },
                None => EventDetail::TemplateCard { event_key: None, task_id: None, card_type: None },
            }
        }
        "feedback_event" => match FEEDBACK.object(event)? {
            Some(feedback) => EventDetail::Feedback {
                id: FEEDBACK_ID.string(feedback)?,
                feedback_type: FEEDBACK_TYPE.number(feedback)?,
            },
            None => EventDetail::Feedback { id: None, feedback_type: None },
        },
        _ => EventDetail::Other,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SCHEMA: &str = include_str!("../../../../schemas/inbound.v1.json");
    const VECTORS: &str = include_str!("../../../../fixtures/vectors/messages.json");
    const TEXT_GROUP_QUOTE: &str = include_str!("../../../../fixtures/aibot/text_group_quote.json");
    const MIXED_GROUP_QUOTE_FILE: &str = include_str!("../../../../fixtures/aibot/mixed_group_quote_file.json");
    const VIDEO: &str = include_str!("../../../../fixtures/aibot/video.json");
    const TEMPLATE_CARD_EVENT: &str = include_str!("../../../../fixtures/aibot/template_card_event_group.json");
    const FEEDBACK_EVENT: &str = include_str!("../../../../fixtures/aibot/feedback_event.json");

    const BOT: &str = "ops";
    const BOT_NAME: &str = "DeployBot";
    const NOW: u64 = 1_767_225_999;

    fn message(json: &str) -> AibotMessage {
        match AibotCallback::parse(json) {
            Ok(AibotCallback::Message(m)) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    fn event(json: &str) -> AibotEvent {
        match AibotCallback::parse(json) {
            Ok(AibotCallback::Event(e)) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn inbound_of(value: Value) -> Inbound {
        message(&value.to_string()).to_inbound(BOT, BOT_NAME, NOW)
    }

    /// A single-chat message of `msgtype` with `object` as its body.
    fn single(msgtype: &str, object: Value) -> Value {
        json!({"msgid": "CAIQ28bb97ba994fc7655245f4fb", "aibotid": "aibAbCdEf0123456789", "chattype": "single",
               "from": {"userid": "lisi"}, "response_url": "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=S1",
               "msgtype": msgtype, msgtype: object})
    }

    /// A group text message saying `content`.
    fn group_text(content: &str) -> Value {
        json!({"msgid": "CAIQ642caf277214d860c9165298", "aibotid": "aibAbCdEf0123456789", "chatid": "wrkSFfCgAA562c8f917a985e",
               "chattype": "group", "from": {"userid": "lisi"}, "msgtype": "text", "text": {"content": content}})
    }

    fn with(mut value: Value, key: &str, field: Value) -> Value {
        value[key] = field;
        value
    }

    /// The Inbound schema; until it lists the AI bot channel, with it added.
    fn assert_valid(inbound: &Inbound) {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let json: Value = serde_json::from_str(&inbound.to_json()).unwrap();
        assert!(validator.is_valid(&json), "{json}");
    }

    fn error(json: &str) -> MessageError {
        AibotCallback::parse(json).unwrap_err()
    }

    #[test]
    fn parses_every_ai_bot_sample_of_the_shared_vectors() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let samples: Vec<&Value> =
            vectors["messages"].as_array().unwrap().iter().filter(|m| m["channel"] == "aibot").collect();
        assert!(samples.len() >= 8, "{}", samples.len());
        for sample in samples {
            let raw = sample["raw"].as_str().unwrap();
            let fields = &sample["fields"];
            let inbound = match AibotCallback::parse(raw).unwrap() {
                AibotCallback::Message(m) => {
                    assert_eq!(m.msgid, fields["msgid"].as_str().unwrap());
                    assert_eq!(m.aibotid, "aibAbCdEf0123456789");
                    assert_eq!(m.response_url.as_deref(), fields["response_url"].as_str());
                    m.to_inbound(BOT, "bot", NOW)
                }
                AibotCallback::Event(e) => {
                    assert_eq!(e.eventtype, sample["event"].as_str().unwrap());
                    e.to_inbound(BOT, NOW)
                }
                AibotCallback::Refresh { msgid, stream_id } => {
                    assert_eq!(
                        (msgid.as_str(), stream_id.as_str()),
                        ("CAIQcf39095476167f45e34a03c8", "stream-shared-0001")
                    );
                    continue;
                }
            };
            assert_eq!(inbound.id, format!("wecom_aibot:ops:{}", fields["msgid"].as_str().unwrap()));
            assert_eq!(inbound.channel, Channel::WecomAibot);
            assert!(!inbound.to_json().contains("response_code"), "{}", sample["id"]);
            assert_valid(&inbound);
        }
    }

    #[test]
    fn a_group_text_loses_the_mention_and_keeps_its_quote() {
        let m = message(TEXT_GROUP_QUOTE);
        assert_eq!(m.chat, Chat::Group { chatid: "wrXXXX".into(), userid: "zhangsan".into() });
        assert_eq!(m.body, Body::Text { content: "@DeployBot 回滚 api 到上一版".into() });
        assert_eq!(m.create_time, None);
        let inbound = m.to_inbound(BOT, BOT_NAME, NOW);
        assert_eq!(inbound.id, "wecom_aibot:ops:0ad92cd9fe284245bcb776c9214475e3");
        assert_eq!(inbound.account, "ops");
        assert_eq!(inbound.conversation, Conversation { kind: ConversationKind::Group, id: "wrXXXX".into() });
        assert_eq!(inbound.sender.id, "zhangsan");
        assert_eq!(
            (inbound.kind, inbound.text.as_deref(), inbound.mentioned),
            (Kind::Text, Some("回滚 api 到上一版"), Some(true))
        );
        assert_eq!(inbound.quote, Some(Quote { kind: Kind::Text, text: Some("api 5xx 升高".into()), media: None }));
        assert_eq!(inbound.sent_at, NOW, "no create_time: the time it was received");
        assert_eq!(inbound.raw["text"]["content"], "@DeployBot 回滚 api 到上一版", "raw keeps the payload as sent");
        assert_valid(&inbound);

        let plain = inbound_of_group("回滚 api");
        assert_eq!((plain.text.as_deref(), plain.mentioned), (Some("回滚 api"), Some(false)));
        let other_name = inbound_of_group("@小助手 回滚 api");
        assert_eq!(
            (other_name.text.as_deref(), other_name.mentioned),
            (Some("回滚 api"), Some(true)),
            "fallback in groups"
        );
    }

    fn inbound_of_group(content: &str) -> Inbound {
        inbound_of(group_text(content))
    }

    #[test]
    fn a_single_chat_text_strips_only_the_bots_own_name() {
        let inbound = inbound_of(with(
            single("text", json!({"content": "@DeployBot 今天谁值班"})),
            "create_time",
            json!(1_767_225_600),
        ));
        assert_eq!(inbound.conversation, Conversation { kind: ConversationKind::Direct, id: "lisi".into() });
        assert_eq!((inbound.text.as_deref(), inbound.mentioned), (Some("今天谁值班"), None));
        assert_eq!(inbound.sent_at, 1_767_225_600);
        let other = inbound_single_text("@wangwu 的电脑坏了");
        assert_eq!((other.text.as_deref(), other.mentioned), (Some("@wangwu 的电脑坏了"), None));
        assert_valid(&other);
    }

    fn inbound_single_text(content: &str) -> Inbound {
        inbound_of(single("text", json!({ "content": content })))
    }

    #[test]
    fn mixed_joins_its_texts_and_takes_the_first_image() {
        let m = message(MIXED_GROUP_QUOTE_FILE);
        assert_eq!(m.msgid, "CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=");
        assert!(matches!(&m.body, Body::Mixed { items } if items.len() == 4));
        let inbound = m.to_inbound(BOT, BOT_NAME, NOW);
        assert_eq!(inbound.kind, Kind::Text);
        assert_eq!(inbound.text.as_deref(), Some("这两张图和附件里的日志对得上吗\n尤其是 14:02 那次"));
        assert_eq!(inbound.mentioned, Some(true));
        assert_eq!(
            inbound.media.and_then(|m| m.url).as_deref(),
            Some("https://ww-aibot-img-1258476243.cos.ap-guangzhou.myqcloud.com/first")
        );
        assert_eq!(inbound.raw["mixed"]["msg_item"].as_array().unwrap().len(), 4, "every item stays in raw");
        assert_eq!(inbound.sent_at, 1_767_225_600);
        assert_eq!(
            inbound.quote.unwrap().media.unwrap().url.as_deref(),
            Some("https://ww-aibot-file-1258476243.cos.ap-guangzhou.myqcloud.com/api.log")
        );

        // Items of unknown types are skipped; a mention-only first item leaves no blank line.
        let mixed = json!({"msg_item": [{"msgtype": "text", "text": {"content": "@DeployBot"}},
            {"msgtype": "emotion", "emotion": {"id": 3}}, {"msgtype": "text", "text": {"content": "看这个"}}]});
        let inbound = inbound_of(single("mixed", mixed));
        assert_eq!((inbound.text.as_deref(), &inbound.media, inbound.mentioned), (Some("看这个"), &None, None));
        assert_valid(&inbound);
    }

    #[test]
    fn image_voice_file_and_video_become_their_kinds() {
        let url = "https://ww-aibot-img-1258476243.cos.ap-guangzhou.myqcloud.com/80bff001ae1a5af2";
        for (msgtype, kind) in [("image", Kind::Image), ("file", Kind::File), ("video", Kind::Video)] {
            let inbound = inbound_of(single(msgtype, json!({ "url": url })));
            assert_eq!(inbound.kind, kind);
            let media_type = MediaType::of(kind);
            assert_eq!(inbound.media, Some(Media { url: Some(url.into()), media_type, ..Media::default() }));
            assert_eq!((&inbound.text, inbound.mentioned), (&None, None));
            assert_valid(&inbound);
        }
        let video = message(VIDEO);
        assert_eq!(
            video.body,
            Body::Video { url: "https://ww-aibot-video-1258476243.cos.ap-guangzhou.myqcloud.com/7c2e".into() }
        );

        let voice = inbound_of(single("voice", json!({"content": "帮我查一下上周的发布记录"})));
        assert_eq!((voice.kind, voice.text.as_deref()), (Kind::Voice, Some("帮我查一下上周的发布记录")));
        let media = voice.media.as_ref().unwrap();
        assert_eq!(
            (media.url.as_deref(), media.transcript.as_deref()),
            (None, voice.text.as_deref()),
            "no audio URL exists"
        );
        assert!(!media.needs_fetch(), "nothing to fetch: the transcript is all");
        assert_valid(&voice);
    }

    #[test]
    fn every_quote_kind_becomes_a_quote() {
        let url = "https://ww-aibot-img-1258476243.cos.ap-guangzhou.myqcloud.com/q";
        let cases = [
            (json!({"msgtype": "text", "text": {"content": "原消息"}}), Kind::Text, Some("原消息"), None),
            (json!({"msgtype": "image", "image": {"url": url}}), Kind::Image, None, Some(url)),
            (
                json!({"msgtype": "mixed", "mixed": {"msg_item": [{"msgtype": "text", "text": {"content": "第一段"}},
                    {"msgtype": "image", "image": {"url": url}}, {"msgtype": "text", "text": {"content": "第二段"}}]}}),
                Kind::Text,
                Some("第一段\n第二段"),
                Some(url),
            ),
            (json!({"msgtype": "voice", "voice": {"content": "转写"}}), Kind::Voice, Some("转写"), None),
            (json!({"msgtype": "file", "file": {"url": url}}), Kind::File, None, Some(url)),
            (json!({"msgtype": "video", "video": {"url": url}}), Kind::Video, None, Some(url)),
            (json!({"msgtype": "location", "location": {}}), Kind::Unsupported, None, None),
        ];
        for (quoted, kind, text, media_url) in cases {
            let inbound = inbound_of(with(group_text("@DeployBot 这个怎么看"), "quote", quoted.clone()));
            let quote = inbound.quote.clone().unwrap();
            assert_eq!((quote.kind, quote.text.as_deref()), (kind, text), "{quoted}");
            assert_eq!(quote.media.and_then(|m| m.url).as_deref(), media_url, "{quoted}");
            assert_eq!(inbound.text.as_deref(), Some("这个怎么看"), "the message's own text wins");
            assert_valid(&inbound);
        }
        let quote_of_quote = with(
            group_text("@DeployBot 看"),
            "quote",
            json!({"msgtype": "text", "text": {"content": "a"},
            "quote": {"msgtype": "text"}}),
        );
        assert!(message(&quote_of_quote.to_string()).quote.is_some(), "a quote's own quote is not read");
    }

    /// Decision: a mention and nothing else takes the quote's text; without quote text it stays a
    /// text message with an empty text (the schema requires text on kind text).
    #[test]
    fn a_mention_alone_takes_the_quotes_text_or_stays_an_empty_text() {
        let quoted = |quote: Value| inbound_of(with(group_text("@DeployBot "), "quote", quote));
        let taken = quoted(json!({"msgtype": "text", "text": {"content": "api 5xx 升高"}}));
        assert_eq!(
            (taken.kind, taken.text.as_deref(), taken.mentioned),
            (Kind::Text, Some("api 5xx 升高"), Some(true))
        );
        assert!(taken.quote.is_some(), "the quote stays too");
        let voice = quoted(json!({"msgtype": "voice", "voice": {"content": "转写"}}));
        assert_eq!(voice.text.as_deref(), Some("转写"));
        let mixed = inbound_of(with(
            single("mixed", json!({"msg_item": [{"msgtype": "text", "text": {"content": "@DeployBot"}}]})),
            "quote",
            json!({"msgtype": "mixed", "mixed": {"msg_item": [{"msgtype": "text", "text": {"content": "上文"}}]}}),
        ));
        assert_eq!(mixed.text.as_deref(), Some("上文"));

        let image = quoted(json!({"msgtype": "image", "image": {"url": "https://x.invalid/i"}}));
        assert_eq!((image.kind, image.text.as_deref()), (Kind::Text, Some("")));
        assert_eq!(image.quote.unwrap().kind, Kind::Image);
        let alone = inbound_of_group("@DeployBot");
        assert_eq!(
            (alone.kind, alone.text.as_deref(), alone.mentioned, &alone.quote),
            (Kind::Text, Some(""), Some(true), &None)
        );
        assert_valid(&alone);
    }

    #[test]
    fn events_carry_their_type_and_key() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let enter =
            vectors["messages"].as_array().unwrap().iter().find(|m| m["id"] == "aibot_event_enter_chat").unwrap();
        let enter = event(enter["raw"].as_str().unwrap());
        assert_eq!(
            (enter.detail.clone(), enter.create_time, enter.response_url.clone()),
            (EventDetail::EnterChat, Some(1_735_689_540), None)
        );
        let inbound = enter.to_inbound(BOT, NOW);
        assert_eq!(
            (inbound.kind, inbound.sent_at, inbound.id.as_str()),
            (Kind::Event, 1_735_689_540, "wecom_aibot:ops:CAIQae1beae4f2d41c175274f220")
        );
        assert_eq!(inbound.event, Some(Event { name: "enter_chat".into(), key: None, change_type: None }));
        assert_eq!(
            (inbound.conversation.kind, inbound.mentioned, &inbound.text),
            (ConversationKind::Direct, None, &None)
        );
        assert_valid(&inbound);

        let card = event(TEMPLATE_CARD_EVENT);
        assert_eq!(
            card.detail,
            EventDetail::TemplateCard {
                event_key: Some("submit_vote".into()),
                task_id: Some("rollback-2026-01-01".into()),
                card_type: Some("vote_interaction".into())
            }
        );
        assert_eq!(
            card.response_url.as_deref(),
            Some("https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=0c4e6a8b1d")
        );
        let inbound = card.to_inbound(BOT, NOW);
        assert_eq!(inbound.event.as_ref().unwrap().key.as_deref(), Some("submit_vote"));
        assert_eq!(
            inbound.conversation,
            Conversation { kind: ConversationKind::Group, id: "wrkSFfCgAA562c8f917a985e".into() }
        );
        assert_eq!(
            inbound.raw["event"]["template_card_event"]["selected_items"]["selected_item"][0]["question_key"],
            "version"
        );
        assert_valid(&inbound);

        let mut variant: Value = serde_json::from_str(TEMPLATE_CARD_EVENT).unwrap();
        let inner = variant["event"].as_object_mut().unwrap().remove("template_card_event").unwrap();
        variant["event"]["template_card"] = inner;
        assert!(matches!(event(&variant.to_string()).detail,
            EventDetail::TemplateCard { event_key: Some(key), .. } if key == "submit_vote"));

        let feedback = event(FEEDBACK_EVENT);
        assert_eq!(feedback.detail, EventDetail::Feedback { id: Some("fb-7f3a".into()), feedback_type: Some(2) });
        let inbound = feedback.to_inbound(BOT, NOW);
        assert_eq!(
            inbound.event,
            Some(Event { name: "feedback_event".into(), key: Some("2".into()), change_type: None })
        );
        assert_eq!(inbound.sent_at, 1_767_225_720);
        assert_valid(&inbound);
        let as_text = FEEDBACK_EVENT.replace("\"type\": 2", "\"type\": \"3\"");
        assert_eq!(event(&as_text).to_inbound(BOT, NOW).event.unwrap().key.as_deref(), Some("3"));

        let unknown =
            FEEDBACK_EVENT.replace("\"eventtype\": \"feedback_event\"", "\"eventtype\": \"disconnected_event\"");
        let unknown = event(&unknown);
        assert_eq!((unknown.eventtype.as_str(), &unknown.detail), ("disconnected_event", &EventDetail::Other));
        let inbound = unknown.to_inbound(BOT, NOW);
        assert_eq!(inbound.event, Some(Event { name: "disconnected_event".into(), key: None, change_type: None }));
        assert_eq!(inbound.raw["event"]["feedback_event"]["id"], "fb-7f3a", "unknown events keep their payload in raw");
        assert_valid(&inbound);
    }

    #[test]
    fn a_stream_refresh_names_its_stream() {
        let refresh = r#"{"msgid":"CAIQcf39095476167f45e34a03c8","aibotid":"aibAbCdEf0123456789","chatid":"wrkSFfCgAA562c8f917a985e",
            "chattype":"group","from":{"userid":"lisi"},"msgtype":"stream","stream":{"id":"s-7f3a"}}"#;
        assert_eq!(
            AibotCallback::parse(refresh).unwrap(),
            AibotCallback::Refresh { msgid: "CAIQcf39095476167f45e34a03c8".into(), stream_id: "s-7f3a".into() }
        );
        assert_eq!(
            error(&refresh.replace(r#""stream":{"id":"s-7f3a"}"#, r#""stream":{}"#)),
            MessageError::Missing("stream.id")
        );
        assert_eq!(error(&refresh.replace(r#","stream":{"id":"s-7f3a"}"#, "")), MessageError::Missing("stream.id"));
        assert_eq!(
            error(&refresh.replace("s-7f3a", &"s".repeat(MAX_ID_BYTES + 1))),
            MessageError::Invalid("stream.id is longer than 128 bytes")
        );
    }

    #[test]
    fn an_unknown_msgtype_is_unsupported_with_its_raw() {
        let m = message(&single("markdown", json!({"content": "**hi**"})).to_string());
        assert_eq!(m.body, Body::Unsupported { msgtype: "markdown".into() });
        let inbound = m.to_inbound(BOT, BOT_NAME, NOW);
        assert_eq!((inbound.kind, &inbound.text, &inbound.media), (Kind::Unsupported, &None, &None));
        assert_eq!(inbound.raw["markdown"]["content"], "**hi**");
        assert_valid(&inbound);
    }

    #[test]
    fn response_url_is_kept_for_the_caller_and_never_in_raw_or_the_envelope() {
        let secret = "response_code=2f5a7cd932fdf1ff3f6a495143b5fccc";
        let url = format!("https://qyapi.weixin.qq.com/cgi-bin/aibot/response?{secret}");
        let mut value = with(group_text("@DeployBot hi"), "response_url", json!(url));
        // Wherever else it might appear, it goes too.
        value["quote"] = json!({"msgtype": "text", "text": {"content": "x"}, "response_url": url});
        let m = message(&value.to_string());
        assert_eq!(m.response_url.as_deref(), Some(url.as_str()));
        assert!(!m.raw.to_string().contains(secret));
        assert!(!m.to_inbound(BOT, BOT_NAME, NOW).to_json().contains(secret));

        let card = event(TEMPLATE_CARD_EVENT);
        assert!(card.response_url.is_some());
        assert!(
            !card.raw.to_string().contains("response_code")
                && !card.to_inbound(BOT, NOW).to_json().contains("response_code")
        );
        let mut inside: Value = serde_json::from_str(FEEDBACK_EVENT).unwrap();
        inside["event"]["response_url"] = json!(url);
        let inside = event(&inside.to_string());
        assert_eq!(inside.response_url.as_deref(), Some(url.as_str()), "an event's own response_url is read too");
        assert!(!inside.to_inbound(BOT, NOW).to_json().contains(secret));
    }

    #[test]
    fn strips_one_leading_mention() {
        let cases = [
            ("@DeployBot 回滚 api", "DeployBot", "回滚 api", true),
            ("@DeployBot回滚 api", "DeployBot", "回滚 api", true),
            ("@deploybot 回滚", "DeployBot", "回滚", true),
            ("  \n@DeployBot\u{2005}回滚", "DeployBot", "回滚", true),
            ("@DeployBot", "DeployBot", "", true),
            ("@DeployBot   ", "DeployBot", "", true),
            ("@Deploy Bot 回滚", "Deploy Bot", "回滚", true),
            ("@DeployBot @wangwu 你看下", "DeployBot", "@wangwu 你看下", true),
            ("@DeployBot 发到 ops@example.com", "DeployBot", "发到 ops@example.com", true),
            ("@DeployBot\n第一行\n第二行", "DeployBot", "第一行\n第二行", true),
            // Fallback: the first @token at the start, whatever the name.
            ("@小助手 查一下", "DeployBot", "查一下", true),
            ("@DeployBotX 查一下", "DeployBot", "查一下", true),
            ("@Deploy Bot 回滚", "DeployBot", "Bot 回滚", true),
            // Never in the middle.
            ("发到 ops@example.com", "DeployBot", "发到 ops@example.com", false),
            ("回滚 @DeployBot", "DeployBot", "回滚 @DeployBot", false),
            ("", "DeployBot", "", false),
            ("@ 你好", "DeployBot", "@ 你好", false),
            ("@", "DeployBot", "@", false),
        ];
        for (text, name, want, removed) in cases {
            assert_eq!(strip_mention(text, name), (want.to_owned(), removed), "{text:?} / {name:?}");
        }
        // Without the fallback (single chats) only the bot's own name goes.
        assert_eq!(strip("@小助手 查一下", "DeployBot", false), ("@小助手 查一下".to_owned(), false));
        assert_eq!(strip("@DeployBotX 查一下", "DeployBot", false), ("@DeployBotX 查一下".to_owned(), false));
        assert_eq!(strip("@DeployBot 查一下", "DeployBot", false), ("查一下".to_owned(), true));
        assert_eq!(strip("@ü 查一下", "u", false), ("@ü 查一下".to_owned(), false), "no slicing inside a character");
    }

    #[test]
    fn refuses_payloads_that_are_not_callbacks() {
        let ok = group_text("@DeployBot hi");
        let without = |path: &[&str]| {
            let mut value = ok.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut value;
            for p in parents {
                at = &mut at[*p];
            }
            at.as_object_mut().unwrap().remove(*last);
            value.to_string()
        };
        let set = |key: &str, field: Value| with(ok.clone(), key, field).to_string();
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let cases: Vec<(String, MessageError)> = vec![
            ("not json".into(), MessageError::Invalid("the callback is not JSON")),
            ("".into(), MessageError::Invalid("the callback is not JSON")),
            ("[1, 2]".into(), MessageError::Invalid("the callback is not a JSON object")),
            ("\"text\"".into(), MessageError::Invalid("the callback is not a JSON object")),
            ("<xml><MsgType>text</MsgType></xml>".into(), MessageError::Invalid("the callback is not JSON")),
            (without(&["msgid"]), MessageError::Missing("msgid")),
            (set("msgid", json!("")), MessageError::Missing("msgid")),
            (without(&["msgtype"]), MessageError::Missing("msgtype")),
            (without(&["from"]), MessageError::Missing("from.userid")),
            (without(&["from", "userid"]), MessageError::Missing("from.userid")),
            (without(&["chatid"]), MessageError::Invalid("a group callback has no chatid")),
            (set("chattype", json!("external")), MessageError::Invalid("chattype is neither single nor group")),
            (without(&["text"]), MessageError::Missing("text.content")),
            (without(&["text", "content"]), MessageError::Missing("text.content")),
            (set("msgid", json!(long)), MessageError::Invalid("msgid is longer than 128 bytes")),
            (set("chatid", json!(long)), MessageError::Invalid("chatid is longer than 128 bytes")),
            (set("from", json!({ "userid": long })), MessageError::Invalid("from.userid is longer than 128 bytes")),
            (set("aibotid", json!(long)), MessageError::Invalid("aibotid is longer than 128 bytes")),
            (
                set("from", json!({"userid": "li\nsi"})),
                MessageError::Invalid("from.userid contains control characters"),
            ),
            (set("msgid", json!(12345)), MessageError::Invalid("msgid has the wrong JSON type")),
            (set("from", json!("lisi")), MessageError::Invalid("from has the wrong JSON type")),
            (set("from", json!({"userid": ["lisi"]})), MessageError::Invalid("from.userid has the wrong JSON type")),
            (set("text", json!("hi")), MessageError::Invalid("text has the wrong JSON type")),
            (set("text", json!({"content": 5})), MessageError::Invalid("text.content has the wrong JSON type")),
            (set("create_time", json!(-1)), MessageError::Invalid("create_time has the wrong JSON type")),
            (set("create_time", json!(1.5)), MessageError::Invalid("create_time has the wrong JSON type")),
            (set("create_time", json!("soon")), MessageError::Invalid("create_time has the wrong JSON type")),
            (set("response_url", json!(true)), MessageError::Invalid("response_url has the wrong JSON type")),
            (set("quote", json!({"text": {"content": "x"}})), MessageError::Missing("quote.msgtype")),
            (set("quote", json!({"msgtype": "image", "image": {}})), MessageError::Missing("image.url")),
            (set("quote", json!([])), MessageError::Invalid("quote has the wrong JSON type")),
            (single("image", json!({})).to_string(), MessageError::Missing("image.url")),
            (single("image", json!({"url": ""})).to_string(), MessageError::Missing("image.url")),
            (without(&["text"]).replace("\"text\"", "\"image\""), MessageError::Missing("image.url")),
            (single("file", json!({})).to_string(), MessageError::Missing("file.url")),
            (
                single("video", json!({"url": 1})).to_string(),
                MessageError::Invalid("video.url has the wrong JSON type"),
            ),
            (single("voice", json!({})).to_string(), MessageError::Missing("voice.content")),
            (single("mixed", json!({})).to_string(), MessageError::Missing("mixed.msg_item")),
            (
                single("mixed", json!({"msg_item": {}})).to_string(),
                MessageError::Invalid("mixed.msg_item has the wrong JSON type"),
            ),
            (
                single("mixed", json!({"msg_item": [7]})).to_string(),
                MessageError::Invalid("mixed.msg_item has the wrong JSON type"),
            ),
            (
                single("mixed", json!({"msg_item": [{"text": {}}]})).to_string(),
                MessageError::Missing("mixed.msg_item.msgtype"),
            ),
            (FEEDBACK_EVENT.replace(r#""eventtype": "feedback_event","#, ""), MessageError::Missing("event.eventtype")),
            (single("event", json!(null)).to_string(), MessageError::Missing("event")),
            (
                FEEDBACK_EVENT.replace("\"type\": 2", "\"type\": {}"),
                MessageError::Invalid("feedback_event.type has the wrong JSON type"),
            ),
        ];
        for (json, want) in cases {
            assert_eq!(AibotCallback::parse(&json), Err(want), "{json}");
        }
    }

    #[test]
    fn accepts_what_the_docs_leave_optional() {
        let exact = "x".repeat(MAX_ID_BYTES);
        let m = message(&with(group_text("hi"), "msgid", json!(exact)).to_string());
        assert_eq!(m.msgid.len(), MAX_ID_BYTES);
        // No chattype: a chatid makes it a group; no aibotid; nulls are absent; unknown fields ignored.
        let minimal = r#"{"msgid":"m1","chatid":"wr1","from":{"userid":"u1","corpid":"ww1"},"msgtype":"text",
            "text":{"content":"@x hi","extra":1},"response_url":null,"create_time":"1767225600","future":{"a":[1]}}"#;
        let m = message(minimal);
        assert_eq!(
            (m.chat.clone(), m.aibotid.as_str(), m.response_url.clone()),
            (Chat::Group { chatid: "wr1".into(), userid: "u1".into() }, "", None)
        );
        assert_eq!(m.create_time, Some(1_767_225_600));
        let single = message(r#"{"msgid":"m2","from":{"userid":"u1"},"msgtype":"text","text":{"content":""}}"#);
        assert_eq!(single.chat, Chat::Single { userid: "u1".into() });
        assert_eq!(single.to_inbound(BOT, BOT_NAME, NOW).text.as_deref(), Some(""));
        let chatid_in_single = r#"{"msgid":"m3","chattype":"single","chatid":"wr1","from":{"userid":"u1"},"msgtype":"text","text":{"content":"a"}}"#;
        assert_eq!(message(chatid_in_single).chat, Chat::Single { userid: "u1".into() });
        // A card event without its object is still the event (WeCom sends it once).
        let bare =
            r#"{"msgid":"m4","from":{"userid":"u1"},"msgtype":"event","event":{"eventtype":"template_card_event"}}"#;
        assert_eq!(event(bare).detail, EventDetail::TemplateCard { event_key: None, task_id: None, card_type: None });
    }

    #[test]
    fn survives_hostile_sizes_and_depths() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(error(&deep), MessageError::Invalid("the callback is not JSON"));
        let deep_field = format!(r#"{{"msgid":"m","x":{}{}}}"#, "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert_eq!(error(&deep_field), MessageError::Invalid("the callback is not JSON"));
        let long_text = "回滚".repeat(35_000);
        let inbound = inbound_of(group_text(&format!("@DeployBot {long_text}")));
        assert_eq!(inbound.text.as_deref(), Some(long_text.as_str()));
        assert!(long_text.len() > 200_000);
        let many_items: Vec<Value> =
            (0..10_000).map(|i| json!({"msgtype": "text", "text": {"content": i.to_string()}})).collect();
        assert!(inbound_of_mixed(many_items).text.unwrap().ends_with("9999"));
    }

    fn inbound_of_mixed(items: Vec<Value>) -> Inbound {
        inbound_of(single("mixed", json!({ "msg_item": items })))
    }

    #[test]
    fn no_error_quotes_the_input() {
        let marker = "机密-SECRET-USER-TEXT";
        let hostile = [
            format!("{marker} not json"),
            format!(r#"["{marker}"]"#),
            format!(r#"{{"msgid":"{marker}{}","msgtype":"text"}}"#, "x".repeat(MAX_ID_BYTES)),
            format!(r#"{{"msgid":{{"{marker}":1}},"msgtype":"text"}}"#),
            format!(r#"{{"msgid":"m","msgtype":"text","from":{{"userid":"u"}},"text":{{"content":["{marker}"]}}}}"#),
            format!(r#"{{"msgid":"m","msgtype":"text","from":{{"userid":"u"}},"chattype":"{marker}"}}"#),
            format!(r#"{{"msgid":"m","msgtype":"image","from":{{"userid":"u"}},"image":{{"{marker}":"x"}}}}"#),
            format!(
                r#"{{"msgid":"m","msgtype":"text","from":{{"userid":"u"}},"text":{{"content":"{marker}"}},"quote":"{marker}"}}"#
            ),
            format!(r#"{{"msgid":"m","msgtype":"text","from":{{"userid":"u"}},"text":{{"content":"{marker}"}}"#),
            format!(r#"{{"msgid":"m","msgtype":"text","create_time":"{marker}","from":{{"userid":"u"}}}}"#),
        ];
        for json in hostile {
            let shown = error(&json).to_string();
            assert!(!shown.contains("SECRET") && !shown.contains("机密"), "{json} → {shown}");
        }
    }

    #[test]
    fn the_too_long_reasons_state_max_id_bytes() {
        for field in [MSGID, AIBOTID, CHATID, USERID, STREAM_ID] {
            assert!(field.too_long.ends_with(&format!("longer than {MAX_ID_BYTES} bytes")), "{}", field.too_long);
        }
    }
}
