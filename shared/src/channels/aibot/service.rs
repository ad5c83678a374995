//! The AI bot's callback, independent of how HTTP arrives (Lambda, `wxbridge dev`, tests).
//!
//! GET verifies the URL. A POST is a user message (open its stream, publish it, answer the
//! stream's id; the queue's deduplication by `Inbound` id keeps one copy of WeCom's retries), a
//! stream refresh (answer the stream as it stands, from one consistent read), or
//! an event. Every answer is encrypted JSON with the callback's nonce.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::channels::aibot::config::{AiBot, StreamWindow};
use crate::channels::aibot::message::{AibotCallback, AibotEvent, AibotMessage};
use crate::channels::aibot::stream::{stream_key, MAX_CONTENT_BYTES, MAX_IMAGE_BYTES};
use crate::core::callback::{enqueue, verify_url, CallbackError, CallbackRequest, CallbackResponse, MAX_BODY_BYTES};
use crate::core::ports::cut_utf8;
use crate::core::ports::{Clock, MediaStore, Publisher, Stream, Streams};
use crate::protocol::crypto::{random_prefix, MsgCrypt};
use crate::protocol::query::Query;

/// A `response_url` is valid for an hour; the bridge stops trusting it a minute earlier.
pub const RESPONSE_URL_VALIDITY: Duration = Duration::from_secs(3600 - 60);

/// Added to what the stream shows when the window ends before the answer.
pub const HANDED_OVER_NOTE: &str = "\n\n（仍在处理中，完成后会另行发送完整回答）";

/// What an accepted POST answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Nothing (HTTP 200, empty body).
    Empty,
    /// URL verification: the plaintext echostr.
    Plain(String),
    /// The encrypted JSON reply, and the reply before encryption (for tests and `dev`).
    Sealed { body: String, reply: Value },
}

/// The AI-bot callback service: per-bot crypto plus the ports it publishes through.
pub struct AibotService {
    bots: HashMap<String, (AiBot, MsgCrypt)>,
    window: StreamWindow,
    replay_window_secs: u64,
    publisher: Arc<dyn Publisher>,
    streams: Arc<dyn Streams>,
    clock: Arc<dyn Clock>,
    media: Option<Arc<dyn MediaStore>>,
}

/// The ports the service works on.
pub struct AibotPorts {
    pub publisher: Arc<dyn Publisher>,
    pub streams: Arc<dyn Streams>,
    pub clock: Arc<dyn Clock>,
    /// Where an answer's images are (none: a finished stream shows its text only).
    pub media: Option<Arc<dyn MediaStore>>,
}

/// The stream answer WeCom shows.
fn stream_reply(id: &str, finish: bool, content: &str) -> Value {
    json!({"msgtype": "stream", "stream": {"id": id, "finish": finish, "content": content}})
}

/// `msg_item` of a finished stream: each image as base64 with the MD5 of its bytes.
pub fn image_items(images: &[Vec<u8>]) -> Value {
    use base64::Engine as _;
    use md5::Digest as _;
    Value::Array(
        images
            .iter()
            .map(|bytes| {
                let md5 = crate::core::media::hex(&md5::Md5::digest(bytes));
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                json!({"msgtype": "image", "image": {"base64": data, "md5": md5}})
            })
            .collect(),
    )
}

impl AibotService {
    pub fn new(bots: &[AiBot], window: StreamWindow, replay_window_secs: u64, ports: AibotPorts) -> Self {
        let AibotPorts { publisher, streams, clock, media } = ports;
        Self {
            bots: bots.iter().map(|bot| (bot.name.clone(), (bot.clone(), bot.msg_crypt()))).collect(),
            window,
            replay_window_secs,
            publisher,
            streams,
            clock,
            media,
        }
    }

    /// What WeCom shows of a finished stream: its content and its images. An image gone from the
    /// store is left out; a store that cannot be read is an error (WeCom asks again).
    async fn finished_reply(&self, id: &str, stream: &Stream) -> Result<Value, CallbackError> {
        let mut reply = stream_reply(id, true, &stream.content);
        let Some(media) = self.media.as_ref().filter(|_| !stream.images.is_empty()) else { return Ok(reply) };
        let mut images = Vec::new();
        for key in &stream.images {
            match media.get(key, MAX_IMAGE_BYTES).await.map_err(CallbackError::Store)? {
                Some(bytes) => images.push(bytes),
                None => tracing::warn!("an answer image is gone from the media store; the stream shows the rest"),
            }
        }
        if !images.is_empty() {
            reply["stream"]["msg_item"] = image_items(&images);
        }
        Ok(reply)
    }

    /// Handles one request; always answers.
    pub async fn handle(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        let text = |_status: u16, body: String| CallbackResponse::ok("text/plain; charset=utf-8", body);
        match self.accept(req).await {
            Ok((outcome, answer)) => {
                tracing::info!(bot = req.app, outcome, "aibot callback");
                match answer {
                    Answer::Empty => text(200, String::new()),
                    // The official sample answers the encrypted JSON as text/plain.
                    Answer::Plain(body) | Answer::Sealed { body, .. } => text(200, body),
                }
            }
            Err(err) => err.refuse("aibot", req.app),
        }
    }

    /// The callback's logic: a short outcome name for the log and the answer.
    pub async fn accept(&self, req: CallbackRequest<'_>) -> Result<(&'static str, Answer), CallbackError> {
        let (bot, crypt) = self.bots.get(req.app).ok_or(CallbackError::UnknownApp)?;
        let query = Query::parse(req.raw_query)?;
        match req.method {
            "GET" => {
                let echo = verify_url(crypt, &query)?;
                Ok(("verified", Answer::Plain(echo)))
            }
            "POST" => self.receive(bot, crypt, &query, req.body).await,
            _ => Err(CallbackError::MethodNotAllowed),
        }
    }

    async fn receive(
        &self,
        bot: &AiBot,
        crypt: &MsgCrypt,
        query: &Query<'_>,
        body: &[u8],
    ) -> Result<(&'static str, Answer), CallbackError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(CallbackError::BodyTooLarge);
        }
        let msg_signature = query.require("msg_signature")?;
        let timestamp = query.require("timestamp")?;
        let nonce = query.require("nonce")?;
        let sent: u64 = timestamp.parse().map_err(|_| CallbackError::BadTimestamp)?;
        let body = std::str::from_utf8(body).map_err(|_| CallbackError::BodyEncoding)?;
        let encrypt = encrypted_field(body)?;
        let verified = crypt.verify(msg_signature, timestamp, nonce, &encrypt).map_err(|_| CallbackError::Signature)?;
        let now = self.clock.unix();
        if self.replay_window_secs > 0 && now.abs_diff(sent) > self.replay_window_secs {
            return Err(CallbackError::Stale);
        }
        // The receive id of an AI bot is empty: decryption refuses any other.
        let plaintext = crypt.decrypt(verified).map_err(CallbackError::Crypto)?;
        let (outcome, reply) = match AibotCallback::parse(&plaintext)? {
            AibotCallback::Message(message) => self.message(bot, &message).await?,
            AibotCallback::Refresh { stream_id, .. } => self.refresh(bot, &stream_id).await?,
            AibotCallback::Event(event) => self.event(bot, &event).await?,
        };
        Ok((
            outcome,
            match reply {
                None => Answer::Empty,
                Some(reply) => {
                    let body = crypt.encrypt_json_reply(&reply.to_string(), random_prefix(), now, nonce);
                    Answer::Sealed { body, reply }
                }
            },
        ))
    }

    /// A user message: open its stream, publish it, answer the stream's id.
    async fn message(
        &self,
        bot: &AiBot,
        message: &AibotMessage,
    ) -> Result<(&'static str, Option<Value>), CallbackError> {
        let now = self.clock.now();
        let inbound = message.to_inbound(&bot.name, &bot.bot_name, self.clock.unix());
        let (key, id) = stream_key(&bot.name, &inbound.id);
        // The stream exists before the dispatcher can write to it; a retry finds it as it is.
        let opened = self
            .streams
            .open(&key, now, message.response_url.as_deref(), now + RESPONSE_URL_VALIDITY)
            .await
            .map_err(CallbackError::Store)?;
        // Every delivery publishes: an earlier one may have died before it did (the queue keeps
        // one copy).
        enqueue(self.publisher.as_ref(), &inbound).await?;
        if opened {
            return Ok(("published", Some(stream_reply(&id, false, &bot.placeholder))));
        }
        // A retry (WeCom did not get the first answer): show the stream as it stands now.
        let stream = self.streams.read(&key).await.map_err(CallbackError::Store)?;
        if let Some(stream) = stream.filter(|s| s.finished || !s.content.is_empty()) {
            if stream.finished {
                return Ok(("duplicate", Some(self.finished_reply(&id, &stream).await?)));
            }
            return Ok(("duplicate", Some(stream_reply(&id, false, &stream.content))));
        }
        Ok(("duplicate", Some(stream_reply(&id, false, &bot.placeholder))))
    }

    /// A stream refresh: the stream as it stands; at the end of the window, finished with what
    /// exists and a note (the answer then follows by `response_url`).
    async fn refresh(&self, bot: &AiBot, stream_id: &str) -> Result<(&'static str, Option<Value>), CallbackError> {
        let key = format!("{}#{stream_id}", bot.name);
        let Some(stream) = self.streams.read(&key).await.map_err(CallbackError::Store)? else {
            // Unknown (or expired): finish it so WeCom stops polling.
            return Ok(("unknown_stream", Some(stream_reply(stream_id, true, ""))));
        };
        if stream.finished {
            return Ok(("finished", Some(self.finished_reply(stream_id, &stream).await?)));
        }
        let hand_over_at = stream.opened_ms + self.window.hand_over_after().as_millis() as u64;
        if crate::core::ports::unix_millis(self.clock.now()) < hand_over_at {
            // Until the bot's first words, the placeholder.
            let shown = if stream.content.is_empty() { bot.placeholder.as_str() } else { &stream.content };
            return Ok(("streaming", Some(stream_reply(stream_id, false, shown))));
        }
        let content = if stream.content.is_empty() {
            HANDED_OVER_NOTE.trim_start().to_owned()
        } else {
            format!("{}{HANDED_OVER_NOTE}", cut_utf8(&stream.content, MAX_CONTENT_BYTES - HANDED_OVER_NOTE.len()))
        };
        if self.streams.hand_over(&key, &content).await.map_err(CallbackError::Store)? {
            return Ok(("handed_over", Some(stream_reply(stream_id, true, &content))));
        }
        // The answer finished it a moment ago: show that.
        match self.streams.read(&key).await.map_err(CallbackError::Store)? {
            Some(stream) => Ok(("finished", Some(self.finished_reply(stream_id, &stream).await?))),
            None => Ok(("finished", Some(stream_reply(stream_id, true, "")))),
        }
    }

    /// `enter_chat` is answered with the welcome; card clicks and feedback go to the bot.
    async fn event(&self, bot: &AiBot, event: &AibotEvent) -> Result<(&'static str, Option<Value>), CallbackError> {
        if event.eventtype == "enter_chat" {
            let welcome = bot.welcome.as_deref().map(|w| json!({"msgtype": "text", "text": {"content": w}}));
            return Ok(("welcome", welcome));
        }
        let inbound = event.to_inbound(&bot.name, self.clock.unix());
        if let Some(url) = &event.response_url {
            // No stream to show, but the bot may answer a card click once through its URL.
            let now = self.clock.now();
            let (key, _) = stream_key(&bot.name, &inbound.id);
            self.streams.open(&key, now, Some(url), now + RESPONSE_URL_VALIDITY).await.map_err(CallbackError::Store)?;
            self.streams.hand_over(&key, "").await.map_err(CallbackError::Store)?;
        }
        enqueue(self.publisher.as_ref(), &inbound).await?;
        Ok(("published", None))
    }
}

/// The `encrypt` field of the JSON body.
fn encrypted_field(body: &str) -> Result<String, CallbackError> {
    if body.trim_start().starts_with('<') {
        return Err(CallbackError::NotJson);
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(alias = "Encrypt")]
        encrypt: String,
    }
    let body: Body = serde_json::from_str(body).map_err(|_| CallbackError::NoEncrypt)?;
    Ok(body.encrypt.trim().to_owned())
}

#[async_trait::async_trait]
impl crate::core::callback::CallbackService for AibotService {
    async fn serve(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        self.handle(req).await
    }
}
