//! The `dify` kind: a Dify chat, agent or chatflow app through `POST /v1/chat-messages`, always
//! streamed (agent apps refuse blocking mode, and Dify's cloud cuts a blocking call at 100 s).
//! Dify keeps the conversation under the `conversation_id` its answers carry; the bridge keeps
//! that id per conversation and bot, sends it back with the next message, and starts a new
//! conversation when Dify no longer has it or the user resets it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};

use crate::core::bot::{conversation_key, AnswerSink, Bot, BotError};
use crate::core::envelope::{Content, Inbound};
use crate::core::ports::{cut_utf8, ConversationState, Conversations, MediaStore, PortError};
use crate::services::chat::{replies, said, transport, SseEvent, SseStream, Unseen};

/// How long a conversation's Dify id is kept after its last answer: a conversation idle longer
/// starts anew.
pub const CONVERSATION_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a link made anew for a message's image stays valid.
const IMAGE_LINK_TTL: Duration = Duration::from_secs(3600);
/// The most of an error body read for its `code`.
const MAX_ERROR_BODY: usize = 16 << 10;
/// The most of a Dify error code and message put in an error.
const MAX_CODE: usize = 64;
const MAX_MESSAGE: usize = 200;

/// A Dify app answering through its service API (`Authorization: Bearer <app key>`).
pub struct DifyBot {
    pub(crate) http: reqwest::Client,
    pub(crate) base_url: String,
    pub(crate) api_key: SecretString,
    /// The app's input variables, sent with every message.
    pub(crate) inputs: Map<String, Value>,
    /// Per message, both calls included when a lost conversation is started again.
    pub(crate) timeout: Duration,
    /// The bot's name, part of its conversations' keys.
    pub(crate) name: String,
    /// Where each conversation's Dify id is kept (none: every message starts a conversation).
    pub(crate) conversations: Option<Arc<dyn Conversations>>,
    /// Where a link to a message's image is made anew when its own has expired.
    pub(crate) media: Option<Arc<dyn MediaStore>>,
}

/// How a call went, short of an error.
enum Call {
    Answered(DifyAnswer),
    /// Dify no longer has the conversation the call named (404), or has closed it.
    Gone,
}

impl DifyBot {
    /// The request for `inbound` in the Dify conversation `conversation_id` (none: a new one),
    /// with `image` (a link Dify fetches) as its file; none when there is neither text nor an
    /// image. In a group chat the query names its sender: the group shares one conversation.
    pub fn request(&self, inbound: &Inbound, image: Option<&str>, conversation_id: Option<&str>) -> Option<Value> {
        let query = said(inbound);
        if query.is_none() && image.is_none() {
            return None;
        }
        let files: Vec<Value> = image
            .map(|url| json!({"type": "image", "transfer_method": "remote_url", "url": url}))
            .into_iter()
            .collect();
        Some(json!({
            "query": query.unwrap_or_default(),
            "inputs": self.inputs,
            "response_mode": "streaming",
            "user": conversation_key(inbound),
            "conversation_id": conversation_id.unwrap_or_default(),
            "files": files,
        }))
    }

    /// The link Dify fetches the message's image by (its own image, else the one it quotes):
    /// the stored copy's link, made anew when it would expire during the call and the media
    /// store is at hand.
    async fn image(&self, inbound: &Inbound) -> Option<String> {
        let media = [inbound.media.as_ref(), inbound.quote.as_ref().and_then(|q| q.media.as_ref())]
            .into_iter()
            .flatten()
            .find(|m| {
                m.key.is_some() && m.url.is_some() && m.mime.as_deref().is_some_and(|t| t.starts_with("image/"))
            })?;
        let now = SystemTime::now();
        let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if media.url_expires_at.is_none_or(|at| at > unix.saturating_add(self.timeout.as_secs())) {
            return media.url.clone();
        }
        let (Some(store), Some(key), Some(mime)) = (&self.media, media.key.as_deref(), media.mime.as_deref()) else {
            tracing::info!(id = %inbound.id, "the image's link has expired; text only");
            return None;
        };
        match store.link(key, mime, media.file_name.as_deref(), now, IMAGE_LINK_TTL).await {
            Ok(url) => Some(url),
            Err(err) => {
                tracing::warn!(id = %inbound.id, error = %err, "cannot link the message's image; text only");
                None
            }
        }
    }

    /// One call, read to `message_end` and shown to `sink` as it grows, before `deadline`.
    async fn call(&self, request: &Value, deadline: Instant, sink: &dyn AnswerSink) -> Result<Call, BotError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BotError("Dify: timed out".into()));
        }
        let response = self
            .http
            .post(format!("{}/v1/chat-messages", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .timeout(left)
            .json(request)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let code = error_code(response).await;
            let named = request["conversation_id"].as_str().is_some_and(|id| !id.is_empty());
            let gone = status == reqwest::StatusCode::NOT_FOUND
                || (status == reqwest::StatusCode::BAD_REQUEST && code.as_deref() == Some("conversation_completed"));
            if named && gone {
                return Ok(Call::Gone);
            }
            let code = code.map(|code| format!(" ({})", clean(&code, MAX_CODE, &self.api_key))).unwrap_or_default();
            return Err(BotError(format!("Dify answered HTTP {status}{code}")));
        }
        let mut events = SseStream::new(response);
        let mut answer = DifyAnswer::default();
        let mut shown = String::new();
        'read: while let Some(batch) = events.next().await? {
            for event in batch {
                if answer.take(&event).map_err(|fault| fault.into_error(&self.api_key))? {
                    let now = answer.text.trim_start();
                    if !now.is_empty() && now != shown {
                        sink.grow(now).await;
                        shown = now.to_owned();
                    }
                }
                if answer.ended {
                    break 'read;
                }
            }
        }
        if !answer.ended {
            return Err(BotError("the Dify stream ended before message_end".into()));
        }
        Ok(Call::Answered(answer))
    }
}

#[async_trait]
impl Bot for DifyBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        self.answer_streaming(inbound, &Unseen).await
    }

    async fn answer_streaming(&self, inbound: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let key = format!("{}#{}", self.name, conversation_key(inbound));
        let state = match &self.conversations {
            Some(conversations) => {
                conversations.load(&key).await.map_err(|e| BotError(format!("cannot read the conversation: {e}")))?
            }
            None => ConversationState::default(),
        };
        let image = self.image(inbound).await;
        let Some(mut request) = self.request(inbound, image.as_deref(), state.external_id.as_deref()) else {
            return Ok(Vec::new());
        };
        let deadline = Instant::now() + self.timeout;
        let answer = match self.call(&request, deadline, sink).await? {
            Call::Answered(answer) => answer,
            Call::Gone => {
                // The stored id is replaced once the new conversation has answered.
                tracing::info!(id = %inbound.id, bot = %self.name, "Dify no longer has the conversation; starting a new one");
                request["conversation_id"] = "".into();
                match self.call(&request, deadline, sink).await? {
                    Call::Answered(answer) => answer,
                    Call::Gone => return Err(BotError("Dify refused to start a new conversation".into())),
                }
            }
        };
        if let (Some(conversations), Some(id)) = (&self.conversations, &answer.conversation_id) {
            if let Err(err) = keep_conversation(conversations.as_ref(), &key, state, id).await {
                // The answer still goes out; only the conversation's id is not kept.
                tracing::warn!(id = %inbound.id, error = %err, "could not keep Dify's conversation id");
            }
        }
        Ok(replies(&answer.reply()))
    }
}

/// Stores `id` as the conversation's Dify id after an answer in it; `loaded` is the conversation
/// as read before the call. When another save came first it reloads, and keeps what it finds if
/// the conversation was reset meanwhile (a new epoch: the answered conversation is over) or
/// another answer stored a newer id.
async fn keep_conversation(
    conversations: &dyn Conversations,
    key: &str,
    loaded: ConversationState,
    id: &str,
) -> Result<(), PortError> {
    let (epoch, before) = (loaded.epoch, loaded.external_id.clone());
    let mut state = loaded;
    for _ in 0..8 {
        let replaced = state.external_id != before && state.external_id.as_deref() != Some(id);
        if state.epoch != epoch || replaced {
            return Ok(());
        }
        state.external_id = Some(id.to_owned());
        if conversations.save(key, &state, CONVERSATION_KEPT).await? {
            return Ok(());
        }
        state = conversations.load(key).await?;
    }
    Err(PortError::new("conversations", "the conversation kept changing while its Dify id was kept"))
}

/// The `code` of a JSON error body (`{"code": "not_found", "message": …, "status": 404}`), read
/// up to [`MAX_ERROR_BODY`].
async fn error_code(mut response: reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while let Ok(Some(bytes)) = response.chunk().await {
        body.extend_from_slice(&bytes);
        if body.len() > MAX_ERROR_BODY {
            return None;
        }
    }
    let body: Value = serde_json::from_slice(&body).ok()?;
    body["code"].as_str().map(str::to_owned)
}

/// Text from Dify fit for an error (and so for a log line): without the API key or control
/// characters, at most `max` bytes.
fn clean(text: &str, max: usize, key: &SecretString) -> String {
    let key = key.expose_secret();
    let text = if key.is_empty() { text.to_owned() } else { text.replace(key, "[api_key]") };
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cut = cut_utf8(text.trim(), max);
    if cut.len() < text.trim().len() {
        format!("{cut}…")
    } else {
        cut.to_owned()
    }
}

/// Whether `id` looks like a Dify conversation id (a UUID): what the bridge stores and sends
/// back must be a short plain word.
fn plausible_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A Dify answer read from its stream's events.
#[derive(Debug, Default)]
struct DifyAnswer {
    /// The answer so far: the `message` / `agent_message` chunks, or what `message_replace` put
    /// in their place.
    text: String,
    /// The conversation the events name.
    conversation_id: Option<String>,
    /// `message_end` was seen.
    ended: bool,
}

/// Why a stream gives no answer.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    /// Dify's `error` event, with its `code` and `message`.
    Reported { code: String, message: String },
    /// An event that is not a JSON object naming its event.
    Unreadable,
}

impl Fault {
    fn into_error(self, key: &SecretString) -> BotError {
        match self {
            Fault::Reported { code, message } => BotError(format!(
                "Dify reported an error: {}: {}",
                clean(&code, MAX_CODE, key),
                clean(&message, MAX_MESSAGE, key)
            )),
            Fault::Unreadable => BotError("the Dify stream sent an event that is not a JSON event".into()),
        }
    }
}

impl DifyAnswer {
    /// Takes one event; whether the answer changed. Dify names its events in the JSON
    /// (`{"event": "message", …}`), except its keep-alive, a bare `event: ping`.
    fn take(&mut self, event: &SseEvent) -> Result<bool, Fault> {
        if event.event == "ping" {
            return Ok(false);
        }
        let value: Value = serde_json::from_str(&event.data).map_err(|_| Fault::Unreadable)?;
        let name = value["event"].as_str().ok_or(Fault::Unreadable)?;
        if let Some(id) = value["conversation_id"].as_str().filter(|id| plausible_id(id)) {
            self.conversation_id = Some(id.to_owned());
        }
        let answer = value["answer"].as_str().unwrap_or_default();
        match name {
            "message" | "agent_message" => {
                self.text.push_str(answer);
                Ok(!answer.is_empty())
            }
            // Output moderation puts its own text in place of the answer.
            "message_replace" => {
                let changed = self.text != answer;
                answer.clone_into(&mut self.text);
                Ok(changed)
            }
            "message_end" => {
                self.ended = true;
                Ok(false)
            }
            "error" => Err(Fault::Reported {
                code: value["code"].as_str().unwrap_or_default().to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            }),
            // ping, agent_thought, message_file, tts_message, workflow_*, node_*, …: not the answer.
            _ => Ok(false),
        }
    }

    /// The reply: the answer without a leading `<think>` section (a reasoning model's, which
    /// Dify passes on in the answer; the WeCom AI bot's stream shows it as thinking).
    fn reply(&self) -> String {
        let text = self.text.trim();
        match text.strip_prefix("<think>").and_then(|rest| rest.split_once("</think>")) {
            Some((_, after)) => after.trim().to_owned(),
            None => text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: Value) -> SseEvent {
        SseEvent { event: String::new(), data: value.to_string() }
    }

    const CONVERSATION: &str = "45701982-8118-4bc5-8e9b-64562b4555f2";

    fn message(event: &str, answer: &str) -> SseEvent {
        data(json!({"event": event, "task_id": "t1", "message_id": "m1", "conversation_id": CONVERSATION,
            "answer": answer, "created_at": 1705398420}))
    }

    fn end() -> SseEvent {
        data(json!({"event": "message_end", "task_id": "t1", "message_id": "m1", "conversation_id": CONVERSATION,
            "metadata": {"usage": {"total_tokens": 12}}}))
    }

    #[test]
    fn message_and_agent_message_chunks_make_the_answer_until_message_end() {
        let mut answer = DifyAnswer::default();
        assert!(answer.take(&message("message", "明天的会")).unwrap());
        assert!(answer.take(&message("agent_message", "在十点。")).unwrap());
        assert!(!answer.take(&message("message", "")).unwrap(), "an empty chunk changes nothing");
        assert!(!answer.ended);
        assert!(!answer.take(&end()).unwrap());
        assert!(answer.ended);
        assert_eq!(answer.reply(), "明天的会在十点。");
        assert_eq!(answer.conversation_id.as_deref(), Some(CONVERSATION));
    }

    #[test]
    fn message_replace_puts_its_text_in_place_of_the_answer() {
        let mut answer = DifyAnswer::default();
        answer.take(&message("message", "something moderated")).unwrap();
        assert!(answer.take(&message("message_replace", "这个问题我不能回答。")).unwrap());
        assert!(!answer.take(&message("message_replace", "这个问题我不能回答。")).unwrap());
        answer.take(&end()).unwrap();
        assert_eq!(answer.reply(), "这个问题我不能回答。");
    }

    #[test]
    fn pings_thoughts_files_and_workflow_events_are_not_the_answer() {
        let mut answer = DifyAnswer::default();
        let others = [
            SseEvent { event: "ping".into(), data: String::new() },
            data(json!({"event": "ping"})),
            data(json!({"event": "agent_thought", "id": "a1", "thought": "I should look it up", "answer": "x",
                "conversation_id": CONVERSATION})),
            data(json!({"event": "message_file", "id": "f1", "type": "image", "url": "https://dify/f.png",
                "conversation_id": CONVERSATION})),
            data(json!({"event": "workflow_started", "workflow_run_id": "w1", "data": {}})),
            data(json!({"event": "node_finished", "data": {"outputs": {"answer": "x"}}})),
            data(json!({"event": "tts_message", "audio": "AAAA", "answer": "x"})),
        ];
        for event in others {
            assert!(!answer.take(&event).unwrap(), "{event:?}");
        }
        assert_eq!(answer.text, "");
        assert!(!answer.ended);
    }

    #[test]
    fn an_error_event_is_a_fault_with_its_code_and_message() {
        let event = data(json!({"event": "error", "message_id": "m1", "conversation_id": CONVERSATION,
            "status": 400, "code": "completion_request_error", "message": "model quota exceeded"}));
        let fault = DifyAnswer::default().take(&event).unwrap_err();
        assert_eq!(
            fault,
            Fault::Reported { code: "completion_request_error".into(), message: "model quota exceeded".into() }
        );
        let err = fault.into_error(&SecretString::from("app-key".to_owned())).to_string();
        assert!(err.contains("completion_request_error") && err.contains("model quota exceeded"), "{err}");
    }

    #[test]
    fn errors_never_carry_the_api_key_control_characters_or_long_text() {
        let key = SecretString::from("app-SECRETKEY0123456789".to_owned());
        let fault = Fault::Reported {
            code: "bad\ncode".into(),
            message: format!("invalid key app-SECRETKEY0123456789 {}", "很长".repeat(200)),
        };
        let err = fault.into_error(&key).to_string();
        assert!(!err.contains("SECRETKEY"), "{err}");
        assert!(err.contains("bad code") && err.contains("[api_key]"), "{err}");
        assert!(err.len() < 300 && err.ends_with('…'), "{err}");
    }

    #[test]
    fn an_event_that_is_not_a_json_event_is_unreadable() {
        for data in
            ["{\"event\": \"message\", \"answer\": \"cut", "[DONE]", "[1, 2]", "{\"answer\": \"x\"}", "", "null"]
        {
            let event = SseEvent { event: String::new(), data: data.into() };
            assert_eq!(DifyAnswer::default().take(&event).unwrap_err(), Fault::Unreadable, "{data}");
        }
    }

    #[test]
    fn only_a_plausible_conversation_id_is_taken() {
        let mut answer = DifyAnswer::default();
        for id in [json!(""), json!(42), json!("a b"), json!("x".repeat(65)), json!("../../etc"), json!("id\n")] {
            answer.take(&data(json!({"event": "message", "answer": "", "conversation_id": id}))).unwrap();
            assert_eq!(answer.conversation_id, None, "{id}");
        }
        answer.take(&message("message", "")).unwrap();
        assert_eq!(answer.conversation_id.as_deref(), Some(CONVERSATION));
    }

    #[test]
    fn a_leading_think_section_is_shown_but_not_replied() {
        let mut answer = DifyAnswer::default();
        answer.take(&message("message", "<think>\n先看日程。\n</think>\n\n")).unwrap();
        answer.take(&message("message", "十点。")).unwrap();
        assert_eq!(answer.reply(), "十点。");
        let mut unclosed = DifyAnswer::default();
        unclosed.take(&message("message", "<think>还在想")).unwrap();
        assert_eq!(unclosed.reply(), "<think>还在想");
        let mut later = DifyAnswer::default();
        later.take(&message("message", "答案：<think>不算</think>")).unwrap();
        assert_eq!(later.reply(), "答案：<think>不算</think>");
    }

    async fn stored_with(conversations: &MemoryConversations, state: ConversationState) -> ConversationState {
        assert!(conversations.save("k", &state, CONVERSATION_KEPT).await.unwrap());
        conversations.load("k").await.unwrap()
    }

    use crate::adapters::memory::MemoryConversations;

    #[tokio::test]
    async fn an_answers_id_is_kept_over_the_id_it_was_asked_in() {
        let conversations = MemoryConversations::default();
        let loaded =
            stored_with(&conversations, ConversationState { external_id: Some("A".into()), ..Default::default() })
                .await;
        // Another message in the same conversation was saved meanwhile (same id, new version).
        stored_with(&conversations, loaded.clone()).await;
        keep_conversation(&conversations, "k", loaded, "B").await.unwrap();
        assert_eq!(conversations.load("k").await.unwrap().external_id.as_deref(), Some("B"));
    }

    #[tokio::test]
    async fn a_newer_id_stored_meanwhile_is_kept() {
        let conversations = MemoryConversations::default();
        let loaded =
            stored_with(&conversations, ConversationState { external_id: Some("A".into()), ..Default::default() })
                .await;
        // Another answer started a new conversation first (both found A gone).
        stored_with(&conversations, ConversationState { external_id: Some("C".into()), ..loaded.clone() }).await;
        keep_conversation(&conversations, "k", loaded, "B").await.unwrap();
        assert_eq!(conversations.load("k").await.unwrap().external_id.as_deref(), Some("C"));
    }

    #[tokio::test]
    async fn a_reset_during_the_answer_is_kept() {
        // Whether the answer was the conversation's first (no id yet) or went on in one.
        for before in [None, Some("A".to_owned())] {
            let conversations = MemoryConversations::default();
            let loaded =
                stored_with(&conversations, ConversationState { external_id: before, ..Default::default() }).await;
            let reset = ConversationState { external_id: None, epoch: loaded.epoch + 1, ..loaded.clone() };
            stored_with(&conversations, reset).await;
            keep_conversation(&conversations, "k", loaded, "B").await.unwrap();
            let now = conversations.load("k").await.unwrap();
            assert_eq!((now.external_id, now.epoch), (None, 1));
        }
    }

    #[tokio::test]
    async fn the_first_answer_stores_its_id() {
        let conversations = MemoryConversations::default();
        keep_conversation(&conversations, "k", ConversationState::default(), "A").await.unwrap();
        let now = conversations.load("k").await.unwrap();
        assert_eq!((now.external_id.as_deref(), now.version), (Some("A"), 1));
    }

    #[test]
    fn blank_answers_are_no_reply() {
        let mut answer = DifyAnswer::default();
        answer.take(&message("message", "  \n")).unwrap();
        answer.take(&end()).unwrap();
        assert_eq!(answer.reply(), "");
        assert!(replies(&answer.reply()).is_empty());
    }
}
