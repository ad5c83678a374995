//! The bots the dispatcher can call: an HTTP webhook signed with a shared secret, and any
//! OpenAI-compatible chat completions endpoint (e.g. an OpenClaw gateway), answering in one body
//! or as server-sent events shown while the answer grows; and [`build`], which makes each
//! configured kind (the Dify app's bot is in [`crate::services::dify`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::core::bot::{conversation_key, AnswerSink, Bot, BotConfig, BotError, History, MAX_BOT_TIMEOUT};
use crate::core::envelope::{Channel, Content, Inbound, MediaType, OutMedia};
use crate::core::http::{ApiError, Http, HttpSettings};
use crate::core::ports::{ConversationState, Conversations, MediaStore, Publisher, Turn};
use crate::services::chat::{replies, said, transport, SseEvent, SseStream, Unseen};
use crate::services::dify::DifyBot;

/// How long the dispatcher's client waits for a connection (bot or platform).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers of the webhook call.
pub const TIMESTAMP_HEADER: &str = "X-Wxbridge-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Wxbridge-Signature";

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: what a webhook checks.
pub fn webhook_signature(secret: &SecretString, timestamp: &str, body: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", crate::protocol::hex::hex(&digest))
}

/// Answers text with the same text (and a voice message with its transcript).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoBot;

#[async_trait]
impl Bot for EchoBot {
    /// The text back; a picture back too, by its key in the media store, where the channel's
    /// replies upload files (so the whole media path shows in the sandbox).
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let mut replies: Vec<Content> =
            inbound.text.iter().filter(|t| !t.is_empty()).map(|text| Content::Text { text: text.clone() }).collect();
        let picture = inbound.media.as_ref().filter(|m| m.media_type == Some(MediaType::Image));
        if let (Some(key), true) = (picture.and_then(|m| m.key.clone()), ECHOES_FILES.contains(&inbound.channel)) {
            replies.push(Content::Image {
                media_id: None,
                base64: None,
                media: Some(OutMedia { key: Some(key), ..OutMedia::default() }),
            });
        }
        Ok(replies)
    }
}

/// The echo, answered over a while a few characters at a time, as a model streams: shows a
/// channel's streaming (the AI bot's growing stream, the Official Account's countdown).
#[derive(Debug, Clone, Copy)]
pub struct StreamingEchoBot {
    pub over: Duration,
}

/// How many pieces the streaming echo shows its answer in.
const ECHO_STEPS: u32 = 6;

#[async_trait]
impl Bot for StreamingEchoBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        tokio::time::sleep(self.over).await;
        EchoBot.answer(inbound).await
    }

    async fn answer_streaming(&self, inbound: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let text: Vec<char> = inbound.text.as_deref().unwrap_or_default().chars().collect();
        for step in 1..=ECHO_STEPS {
            tokio::time::sleep(self.over / ECHO_STEPS).await;
            let shown = text.len() * step as usize / ECHO_STEPS as usize;
            sink.grow(&text[..shown].iter().collect::<String>()).await;
        }
        EchoBot.answer(inbound).await
    }
}

/// The channels whose replies can carry an uploaded file (the rest answer with text only).
const ECHOES_FILES: [Channel; 5] = [Channel::Wecom, Channel::Oa, Channel::WecomAibot, Channel::Ilink, Channel::WecomKf];

/// Puts each `Inbound` (its media fetched) on the bot queue; the bot's own consumer answers
/// with `Outbound` messages.
pub struct QueueBot {
    queue: Option<Arc<dyn Publisher>>,
}

impl QueueBot {
    pub fn new(queue: Arc<dyn Publisher>) -> Self {
        Self { queue: Some(queue) }
    }
}

#[async_trait]
impl Bot for QueueBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let queue = self.queue.as_ref().ok_or_else(|| {
            BotError("bot kind \"queue\" needs the bot queue (WXBRIDGE_BOT_QUEUE_URL) and none is set".to_owned())
        })?;
        let message = crate::core::callback::inbound_message(inbound);
        queue.publish(message).await.map_err(|e| BotError(e.to_string()))?;
        Ok(Vec::new())
    }

    fn replies_later(&self, _: &Inbound) -> bool {
        true
    }
}

/// POSTs the `Inbound` JSON; `200 {"replies": [content, …]}` or `204` for no reply.
pub struct HttpBot {
    http: reqwest::Client,
    url: String,
    secret: SecretString,
    timeout: Duration,
}

#[async_trait]
impl Bot for HttpBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let body = inbound.to_json();
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).to_string();
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, webhook_signature(&self.secret, &timestamp, &body))
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(BotError(format!("webhook answered HTTP {status}")));
        }
        let answer: Value = response.json().await.map_err(transport)?; // Only 204 or an explicit list says "no reply"; anything else is an error to retry.
        let replies =
            answer.get("replies").cloned().ok_or_else(|| BotError("webhook answer has no \"replies\" list".into()))?;
        serde_json::from_value(replies).map_err(|e| {
            let reason = crate::core::config::redact_serde_message(&e.to_string());
            BotError(format!("webhook replies are not Outbound contents: {reason}"))
        })
    }
}

/// Chat completions: the message text in, the first choice's text out. `user` is a stable
/// conversation key, so gateways that keep sessions (OpenClaw) keep one per conversation.
pub struct OpenAiBot {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    model: String,
    system_prompt: Option<String>,
    timeout: Duration,
    stream: bool,
    /// Where a message's image is read from, to send inline (none: text only).
    media: Option<Arc<dyn MediaStore>>,
    history: History,
    /// The bot's name, part of its conversations' keys.
    name: String,
    /// Where conversations are kept (bridge history; a server history's reset count).
    conversations: Option<Arc<dyn Conversations>>,
}

/// The largest image sent inline (before base64): vision APIs take about 20 MB per request.
pub const MAX_INLINE_IMAGE: u64 = 8 * 1024 * 1024;
/// The image types vision models read.
const VISION_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// What OpenClaw answers, with HTTP 200, when the agent run failed (in a stream too) or gave no
/// reply: failures to retry, never answers to show.
const FAILURE_ANSWERS: [&str; 2] = ["Error: internal error", "No response from OpenClaw."];

fn is_failure_answer(text: &str) -> bool {
    FAILURE_ANSWERS.contains(&text.trim())
}

/// Whether streamed content may still turn out to be a failure answer. OpenClaw writes its
/// failure as an ordinary content chunk, and what a WeCom stream has shown cannot be taken back,
/// so such content is held back until it differs from every failure answer.
fn may_become_failure_answer(content: &str) -> bool {
    let content = content.trim();
    !content.is_empty() && FAILURE_ANSWERS.iter().any(|failure| failure.starts_with(content))
}

/// Whether a choice asks the caller to run tools (in its `message`, or a stream's `delta`):
/// wxbridge offers none, so there is no answer to give.
fn asks_for_tools(choice: &Value, part: &str) -> bool {
    let calls = &choice[part]["tool_calls"];
    matches!(choice["finish_reason"].as_str(), Some("tool_calls" | "function_call"))
        || calls.as_array().map_or(!calls.is_null(), |calls| !calls.is_empty())
        || !choice[part]["function_call"].is_null()
}

const TOOL_CALLS: &str = "chat completions asked for tool calls (wxbridge offers no tools)";

impl OpenAiBot {
    /// The request for `inbound`, or none when it carries neither text nor an image. A voice
    /// message's text is the platform's transcript; `image` (a data URL) goes as an
    /// `image_url` part.
    pub fn request(&self, inbound: &Inbound, image: Option<&str>) -> Option<Value> {
        self.request_in(inbound, image, &ConversationState::default())
    }

    /// The request for `inbound` in the conversation `state` (its earlier turns with bridge
    /// history; its reset count, in the `user` key, with server history).
    pub fn request_in(&self, inbound: &Inbound, image: Option<&str>, state: &ConversationState) -> Option<Value> {
        let said = said(inbound);
        let text = said.as_deref();
        let content = match (text, image) {
            (None, None) => return None,
            (Some(text), None) => json!(text),
            (text, Some(image)) => {
                let mut parts = Vec::new();
                if let Some(text) = text {
                    parts.push(json!({"type": "text", "text": text}));
                }
                parts.push(json!({"type": "image_url", "image_url": {"url": image}}));
                Value::Array(parts)
            }
        };
        let mut messages = Vec::new();
        if let Some(prompt) = &self.system_prompt {
            messages.push(json!({"role": "system", "content": prompt}));
        }
        if matches!(self.history, History::Bridge { .. }) {
            // This message's own turns (kept by an earlier delivery of it) are not history.
            let earlier =
                state.turns.iter().filter(|turn| turn.id.is_none() || turn.id.as_deref() != Some(&inbound.id));
            messages.extend(earlier.map(|turn| json!({"role": turn.role, "content": turn.text})));
        }
        messages.push(json!({"role": "user", "content": content}));
        let mut user = conversation_key(inbound);
        if state.epoch > 0 {
            user = format!("{user}:{}", state.epoch);
        }
        let mut request = json!({"model": self.model, "messages": messages, "user": user});
        if self.stream {
            request["stream"] = true.into();
        }
        Some(request)
    }

    /// The message's image (its own, else the one it quotes) as a base64 data URL, when it is
    /// stored, a type vision models read, and small enough to send inline.
    async fn image(&self, inbound: &Inbound) -> Option<String> {
        let store = self.media.as_ref()?;
        let media = [inbound.media.as_ref(), inbound.quote.as_ref().and_then(|q| q.media.as_ref())]
            .into_iter()
            .flatten()
            .find(|m| m.mime.as_deref().is_some_and(|t| VISION_TYPES.contains(&t)) && m.key.is_some())?;
        if media.size.is_some_and(|size| size > MAX_INLINE_IMAGE) {
            tracing::info!(id = %inbound.id, "the image is too large to send inline; text only");
            return None;
        }
        match store.get(media.key.as_deref()?, MAX_INLINE_IMAGE).await {
            Ok(Some(bytes)) => {
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                Some(format!("data:{};base64,{data}", media.mime.as_deref()?))
            }
            Ok(None) => {
                tracing::warn!(id = %inbound.id, "the message's image is no longer stored; text only");
                None
            }
            Err(err) => {
                tracing::warn!(id = %inbound.id, error = %err, "cannot read the message's image; text only");
                None
            }
        }
    }

    /// Sends `request`; a transport failure or a status other than 2xx is an error. With server
    /// history the session is named explicitly too (`x-openclaw-session-key`, the `user` key).
    async fn send(&self, request: &Value) -> Result<reqwest::Response, BotError> {
        let mut call = self
            .http
            .post(format!("{}/v1/chat/completions", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .timeout(self.timeout)
            .json(request);
        if let (History::Server, Some(user)) = (&self.history, request["user"].as_str()) {
            call = call.header(SESSION_HEADER, crate::core::bot::gateway_session(&self.model, user));
        }
        let response = call.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BotError(format!("chat completions answered HTTP {status}")));
        }
        Ok(response)
    }

    /// The answer in one JSON body.
    async fn complete(&self, request: &Value) -> Result<Vec<Content>, BotError> {
        let answer: Value = self.send(request).await?.json().await.map_err(transport)?;
        // A missing answer (an error body, tool calls, null content) is retried, not taken as silence.
        let choice = &answer["choices"][0];
        if asks_for_tools(choice, "message") {
            return Err(BotError(TOOL_CALLS.into()));
        }
        let text = choice["message"]["content"]
            .as_str()
            .ok_or_else(|| BotError("chat completions answer has no text in choices[0].message.content".into()))?;
        if is_failure_answer(text) {
            return Err(BotError("chat completions answered with OpenClaw's failure text".into()));
        }
        Ok(replies(text.trim()))
    }

    /// The answer as server-sent events, shown to `sink` as it grows (the sink throttles).
    async fn stream(&self, request: &Value, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let mut events = SseStream::new(self.send(request).await?);
        let mut answer = StreamedAnswer::default();
        let mut shown = String::new();
        'read: while let Some(batch) = events.next().await? {
            for event in batch {
                if answer.take(&event)? {
                    if let Some(preview) = answer.preview().filter(|preview| *preview != shown) {
                        sink.grow(&preview).await;
                        shown = preview;
                    }
                }
                if answer.done {
                    break 'read;
                }
            }
        }
        let text = answer.text()?;
        // Held-back content that did not become a failure answer is the answer: show it whole.
        let whole = answer.display();
        if whole != shown && !whole.is_empty() {
            sink.grow(&whole).await;
        }
        Ok(replies(&text))
    }
}

#[async_trait]
impl Bot for OpenAiBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        self.answer_streaming(inbound, &Unseen).await
    }

    async fn answer_streaming(&self, inbound: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let key = format!("{}#{}", self.name, conversation_key(inbound));
        let state = match (&self.history, &self.conversations) {
            (History::None, _) | (_, None) => ConversationState::default(),
            (_, Some(conversations)) => {
                conversations.load(&key).await.map_err(|e| BotError(format!("cannot read the conversation: {e}")))?
            }
        };
        let image = self.image(inbound).await;
        let Some(request) = self.request_in(inbound, image.as_deref(), &state) else { return Ok(Vec::new()) };
        let replies = if self.stream { self.stream(&request, sink).await? } else { self.complete(&request).await? };
        if let (History::Bridge { turns, bytes, ttl }, Some(conversations)) = (&self.history, &self.conversations) {
            let answer: Vec<&str> = replies
                .iter()
                .filter_map(|c| match c {
                    Content::Text { text } | Content::Markdown { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let asked = said(inbound).unwrap_or_else(|| "[image]".to_owned());
            let pair = [
                Turn { role: "user".into(), text: asked, id: Some(inbound.id.clone()) },
                Turn { role: "assistant".into(), text: answer.join("\n\n"), id: Some(inbound.id.clone()) },
            ];
            let limits = (*turns, *bytes, *ttl);
            if let Err(err) = remember(conversations.as_ref(), &key, state, &pair, limits).await {
                // The answer still goes out; only this turn is not remembered.
                tracing::warn!(id = %inbound.id, error = %err, "could not remember the turn");
            }
        }
        Ok(replies)
    }
}

/// The header that names an OpenClaw session explicitly.
pub const SESSION_HEADER: &str = "x-openclaw-session-key";

/// Appends `pair` (the message and its answer) to the conversation and saves it, keeping the
/// last `turns` turns within `bytes`; when another message's turn was saved first, reloads and
/// appends to that. A message already remembered (handled again) replaces its own turns.
pub async fn remember(
    conversations: &dyn Conversations,
    key: &str,
    mut state: ConversationState,
    pair: &[Turn],
    (turns, bytes, ttl): (usize, usize, Duration),
) -> Result<(), crate::core::ports::PortError> {
    let epoch = state.epoch;
    for _ in 0..8 {
        if state.epoch != epoch {
            // The conversation was reset while this message was answered: it is not part of
            // the new one.
            return Ok(());
        }
        let id = pair.first().and_then(|t| t.id.clone());
        state.turns.retain(|turn| id.is_none() || turn.id != id);
        state.turns.extend(pair.iter().cloned());
        trim(&mut state.turns, turns, bytes);
        if conversations.save(key, &state, ttl).await? {
            return Ok(());
        }
        state = conversations.load(key).await?;
    }
    Err(crate::core::ports::PortError::new("conversations", "the conversation kept changing while a turn was saved"))
}

/// Drops the oldest turns until at most `turns` remain within `bytes` of text, never leaving an
/// answer without its question at the start (strict chat templates want user turns first); a
/// single turn longer than `bytes` is cut to its last `bytes`.
fn trim(history: &mut Vec<Turn>, turns: usize, bytes: usize) {
    let excess = history.len().saturating_sub(turns);
    history.drain(..excess);
    while history.len() > 1 && history.iter().map(|t| t.text.len()).sum::<usize>() > bytes {
        history.remove(0);
    }
    while history.first().is_some_and(|t| t.role != "user") {
        history.remove(0);
    }
    if let Some(only) = history.first_mut().filter(|t| t.text.len() > bytes) {
        let mut cut = only.text.len() - bytes;
        while !only.text.is_char_boundary(cut) {
            cut += 1;
        }
        only.text.drain(..cut);
    }
}

/// A chat completion read from its `chat.completion.chunk` events.
#[derive(Debug, Default)]
struct StreamedAnswer {
    content: String,
    /// `delta.reasoning_content` (DeepSeek, vLLM) or `delta.reasoning` (Ollama, OpenRouter).
    reasoning: String,
    /// A `finish_reason` was seen.
    finished: bool,
    /// `[DONE]` was seen.
    done: bool,
}

impl StreamedAnswer {
    /// Takes one event; whether the text grew.
    fn take(&mut self, event: &SseEvent) -> Result<bool, BotError> {
        if event.event == "error" {
            return Err(BotError("chat completions stream sent an error event".into()));
        }
        if event.data == "[DONE]" {
            self.done = true;
            return Ok(false);
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|_| BotError("chat completions stream sent an event that is not JSON".into()))?;
        if !chunk["error"].is_null() {
            return Err(BotError("chat completions stream reported an error".into()));
        }
        let choice = &chunk["choices"][0];
        if asks_for_tools(choice, "delta") {
            return Err(BotError(TOOL_CALLS.into()));
        }
        let delta = &choice["delta"];
        let content = delta["content"].as_str().unwrap_or_default();
        // OpenClaw reports a failure after partial output as one more chunk holding only its
        // failure text: an error, wherever it comes, and never shown.
        if !self.content.is_empty() && choice["finish_reason"] == "stop" && is_failure_answer(content) {
            return Err(BotError("the gateway reported a failure in the stream (\"Error: internal error\")".into()));
        }
        let reasoning = delta["reasoning_content"].as_str().or(delta["reasoning"].as_str()).unwrap_or_default();
        self.content.push_str(content);
        self.reasoning.push_str(reasoning);
        self.finished |= choice["finish_reason"].is_string();
        Ok(!content.is_empty() || !reasoning.is_empty())
    }

    /// The reasoning as a `<think>` section (the WeCom AI bot shows it as thinking), then the
    /// content. Long reasoning shows only its latest [`MAX_SHOWN_REASONING`] bytes, so the
    /// section stays closed and the answer has room in a stream of limited size.
    fn display(&self) -> String {
        let content = self.content.trim_start();
        match self.reasoning.trim() {
            "" => content.to_owned(),
            reasoning if reasoning.len() > MAX_SHOWN_REASONING => {
                let mut start = reasoning.len() - MAX_SHOWN_REASONING;
                while !reasoning.is_char_boundary(start) {
                    start += 1;
                }
                format!("<think>…{}</think>\n\n{content}", &reasoning[start..])
            }
            reasoning => format!("<think>{reasoning}</think>\n\n{content}"),
        }
    }

    /// What may be shown now: nothing while the content may still become a failure answer.
    fn preview(&self) -> Option<String> {
        (!may_become_failure_answer(&self.content)).then(|| self.display())
    }

    /// The answer once the stream has ended: its content, without the reasoning.
    fn text(&self) -> Result<String, BotError> {
        if !self.done && !self.finished {
            return Err(BotError("chat completions stream ended early".into()));
        }
        if is_failure_answer(&self.content) {
            return Err(BotError("chat completions answered with OpenClaw's failure text".into()));
        }
        Ok(self.content.trim().to_owned())
    }
}

/// The most of a streamed answer's reasoning shown while it grows (its latest part).
const MAX_SHOWN_REASONING: usize = 8 << 10;

/// The bot the configuration names.
pub fn from_config(config: &BotConfig, http: &Http) -> Arc<dyn Bot> {
    build(crate::core::bot::DEFAULT_BOT, config, http, &BotPorts::default())
}

/// The bot of `config`; the `openai` kind reads a message's image from `media` to send it.
pub fn from_config_with_media(config: &BotConfig, http: &Http, media: Option<Arc<dyn MediaStore>>) -> Arc<dyn Bot> {
    build(crate::core::bot::DEFAULT_BOT, config, http, &BotPorts { media, ..BotPorts::default() })
}

/// What the bots may use besides HTTP.
#[derive(Clone, Default)]
pub struct BotPorts {
    /// Where a message's image is read from (the `openai` kind sends it inline; the `dify` kind
    /// links it anew when its link has expired).
    pub media: Option<Arc<dyn MediaStore>>,
    /// Where conversations are kept (history, reset counts, Dify's conversation ids).
    pub conversations: Option<Arc<dyn Conversations>>,
    /// The bot queue (the `queue` kind).
    pub queue: Option<Arc<dyn Publisher>>,
}

/// The bot named `name` of `config`.
pub fn build(name: &str, config: &BotConfig, http: &Http, ports: &BotPorts) -> Arc<dyn Bot> {
    let http = http.client().clone();
    match config {
        BotConfig::Echo => Arc::new(EchoBot),
        BotConfig::EchoStreaming { over } => Arc::new(StreamingEchoBot { over: *over }),
        // The process's builder gives it its queue; without one it says so.
        BotConfig::Queue => Arc::new(QueueBot { queue: ports.queue.clone() }),
        BotConfig::Http { url, secret, timeout } => {
            Arc::new(HttpBot { http, url: url.clone(), secret: secret.clone(), timeout: *timeout })
        }
        BotConfig::OpenAi { base_url, api_key, model, system_prompt, timeout, stream, history, reset: _ } => {
            Arc::new(OpenAiBot {
                http,
                base_url: base_url.clone(),
                api_key: api_key.clone(),
                model: model.clone(),
                system_prompt: system_prompt.clone(),
                timeout: *timeout,
                stream: *stream,
                media: ports.media.clone(),
                history: history.clone(),
                name: name.to_owned(),
                conversations: ports.conversations.clone(),
            })
        }
        BotConfig::Dify { base_url, api_key, inputs, timeout, reset: _ } => Arc::new(DifyBot {
            http,
            base_url: base_url.clone(),
            api_key: api_key.clone(),
            inputs: inputs.clone(),
            timeout: *timeout,
            name: name.to_owned(),
            conversations: ports.conversations.clone(),
            media: ports.media.clone(),
        }),
    }
}

/// The dispatcher's HTTP client. Each bot call carries its own timeout (`bot.timeout_s`) and so
/// do the platform calls made on it (typing); the client's is only the longest a bot may take.
pub fn http_client() -> Result<Http, ApiError> {
    Http::new(&HttpSettings { timeout: MAX_BOT_TIMEOUT, connect_timeout: CONNECT_TIMEOUT })
}

#[cfg(test)]
mod tests {
    fn turn(role: &str, text: &str) -> Turn {
        Turn { role: role.into(), text: text.into(), id: None }
    }

    #[test]
    fn trimmed_history_starts_with_a_question_and_stays_within_its_bytes() {
        let mut history: Vec<Turn> =
            (0..5).flat_map(|i| [turn("user", &format!("q{i}")), turn("assistant", &format!("a{i}"))]).collect();
        trim(&mut history, 5, 1024);
        assert_eq!(history.first().map(|t| t.text.as_str()), Some("q3"), "an odd cap drops the orphaned answer");
        let mut long = vec![turn("user", "问"), turn("assistant", &"长".repeat(600))];
        trim(&mut long, 20, 1024);
        assert!(long.is_empty(), "an answer over the cap on its own leaves no orphan: {long:?}");
        let mut one = vec![turn("user", &"问".repeat(600))];
        trim(&mut one, 20, 1024);
        assert!(one[0].text.len() <= 1024 && one[0].text.chars().all(|c| c == '问'), "cut on a character boundary");
    }

    use super::*;

    struct Shown(std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl AnswerSink for Shown {
        async fn grow(&self, text: &str) {
            self.0.lock().unwrap().push(text.to_owned());
        }
    }

    /// The streaming echo shows its answer growing, in order, to the whole text, which it answers.
    #[tokio::test]
    async fn the_streaming_echo_grows_its_answer_then_answers_it() {
        let mut inbound =
            Inbound::direct(Channel::WecomAibot, "ops", "wecom_aibot:ops:1".into(), "u1", 1, 1, Value::Null);
        inbound.text = Some("你好，世界 hello".into());
        let shown = Shown(std::sync::Mutex::default());
        let bot = StreamingEchoBot { over: Duration::from_millis(60) };
        let replies = bot.answer_streaming(&inbound, &shown).await.unwrap();
        assert_eq!(replies, vec![Content::Text { text: "你好，世界 hello".into() }]);
        let shown = shown.0.into_inner().unwrap();
        assert_eq!(shown.len(), ECHO_STEPS as usize);
        assert!(shown.windows(2).all(|w| w[1].starts_with(&w[0]) && w[1].len() > w[0].len()), "{shown:?}");
        assert_eq!(shown.last().map(String::as_str), Some("你好，世界 hello"));
    }

    #[test]
    fn webhook_signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = webhook_signature(&SecretString::from("Jefe".to_owned()), "what do ya want ", "for nothing?");
        assert_ne!(sig, webhook_signature(&SecretString::from("Jefe".to_owned()), "what do ya want", " for nothing?"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want .for nothing?");
        let expected = crate::protocol::hex::hex(&mac.finalize().into_bytes());
        assert_eq!(sig, format!("sha256={expected}"));
    }

    fn chunk(delta: Value, finish_reason: Option<&str>) -> SseEvent {
        let data = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
        SseEvent { event: String::new(), data: data.to_string() }
    }

    #[test]
    fn streamed_reasoning_is_shown_as_thinking_but_is_not_the_answer() {
        let mut answer = StreamedAnswer::default();
        assert!(!answer.take(&chunk(json!({"role": "assistant"}), None)).unwrap());
        assert!(answer.take(&chunk(json!({"reasoning_content": "Meetings are "}), None)).unwrap());
        assert!(answer.take(&chunk(json!({"reasoning": "at ten."}), None)).unwrap());
        assert!(answer.take(&chunk(json!({"content": "At 10:00."}), Some("stop"))).unwrap());
        assert_eq!(answer.preview().unwrap(), "<think>Meetings are at ten.</think>\n\nAt 10:00.");
        assert_eq!(answer.text().unwrap(), "At 10:00.");
    }

    #[test]
    fn long_reasoning_shows_its_latest_part_in_a_closed_think_section() {
        let mut answer = StreamedAnswer::default();
        let reasoning = "先检查部署记录，再比较版本。".repeat(2000);
        answer.take(&chunk(json!({"reasoning_content": reasoning}), None)).unwrap();
        answer.take(&chunk(json!({"content": "回滚到 v41。"}), Some("stop"))).unwrap();
        let shown = answer.preview().unwrap();
        assert!(shown.starts_with("<think>…") && shown.ends_with("</think>\n\n回滚到 v41。"), "{shown}");
        let section = &shown["<think>…".len()..shown.len() - "</think>\n\n回滚到 v41。".len()];
        assert!(section.len() <= MAX_SHOWN_REASONING && section.len() > MAX_SHOWN_REASONING - 4);
        assert!(reasoning.ends_with(section));
        assert_eq!(answer.text().unwrap(), "回滚到 v41。");
    }

    #[test]
    fn streamed_content_that_may_become_a_failure_answer_is_held_back() {
        let mut answer = StreamedAnswer::default();
        for (piece, shown) in [("Err", false), ("or", false), (": internal error", false)] {
            answer.take(&chunk(json!({"content": piece}), None)).unwrap();
            assert_eq!(answer.preview().is_some(), shown, "{piece}");
        }
        answer.take(&chunk(json!({}), Some("stop"))).unwrap();
        assert!(answer.text().is_err());
        let mut answer = StreamedAnswer::default();
        answer.take(&chunk(json!({"content": "Error"}), None)).unwrap();
        assert!(answer.preview().is_none());
        answer.take(&chunk(json!({"content": "s are fine"}), None)).unwrap();
        assert_eq!(answer.preview().unwrap(), "Errors are fine");
    }

    #[test]
    fn a_stream_needs_a_finish_reason_or_done_and_no_tool_calls() {
        assert!(StreamedAnswer::default().text().is_err(), "ended early");
        let mut answer = StreamedAnswer::default();
        answer.take(&SseEvent { event: String::new(), data: "[DONE]".into() }).unwrap();
        assert_eq!(answer.text().unwrap(), "");
        let call = json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ""}}]});
        assert!(StreamedAnswer::default().take(&chunk(call, None)).is_err());
        assert!(StreamedAnswer::default().take(&chunk(json!({}), Some("tool_calls"))).is_err());
        assert!(StreamedAnswer::default().take(&chunk(json!({"content": "x", "tool_calls": []}), None)).unwrap());
        let error = SseEvent { event: String::new(), data: json!({"error": {"message": "boom"}}).to_string() };
        assert!(StreamedAnswer::default().take(&error).unwrap_err().to_string().contains("reported an error"));
    }
}
