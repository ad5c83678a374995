//! What happens inside `wxbridge dev`, as events: the terminal prints a line for each, and the
//! chat page (`GET /events`, server-sent events) shows them live in its conversations and trace.
//!
//! One feed per process, installed by `dev`; in the other commands [`emit`] does nothing. Each
//! event is a JSON object with `seq`, `at` (unix ms), `kind`, `chat` (the conversation, see
//! [`chat_of_inbound`]) and `msg` (the Inbound id it belongs to), plus the kind's own fields.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Events kept for a page that connects later (a reload shows the session so far).
const KEPT: usize = 5_000;

pub struct Feed {
    state: Mutex<State>,
    live: broadcast::Sender<(u64, Arc<str>)>,
}

#[derive(Default)]
struct State {
    seq: u64,
    kept: VecDeque<(u64, Arc<str>)>,
    /// The latest message of each conversation, and the latest message of all: where a WeChat API
    /// call without a message of its own is shown.
    latest: HashMap<String, String>,
    /// Each message's conversation, for events that name only the message (the oldest forgotten
    /// first).
    chat_of: HashMap<String, String>,
    chat_order: VecDeque<String>,
    /// What the bridge is working on (a send, a dispatch, a media fetch): the message, its
    /// conversation, and when the work began and ended (unix µs), newest last.
    working: VecDeque<Work>,
    last_msg: Option<(String, Option<String>)>,
}

static FEED: OnceLock<Feed> = OnceLock::new();

/// Turns the feed on (once; later calls return the same feed).
pub fn install() -> &'static Feed {
    FEED.get_or_init(|| Feed { state: Mutex::new(State::default()), live: broadcast::channel(1024).0 })
}

fn feed() -> Option<&'static Feed> {
    FEED.get()
}

/// Records an event of `kind` in `chat` about message `msg`, with `fields` (an object).
pub fn emit(kind: &str, chat: Option<&str>, msg: Option<&str>, fields: Value) {
    let Some(feed) = feed() else { return };
    let at = now_ms();
    let mut state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
    state.seq += 1;
    let known = msg.filter(|_| chat.is_none()).and_then(|msg| state.chat_of.get(msg).cloned());
    let chat = chat.or(known.as_deref());
    let mut event = json!({"seq": state.seq, "at": at, "kind": kind, "chat": chat, "msg": msg});
    if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
        event.extend(fields);
    }
    if let Some(msg) = msg {
        if let (Some(chat), true) = (chat, kind == "user" || kind == "queued") {
            state.latest.insert(chat.to_owned(), msg.to_owned());
        }
        if let Some(chat) = chat {
            if state.chat_of.insert(msg.to_owned(), chat.to_owned()).is_none() {
                state.chat_order.push_back(msg.to_owned());
                if state.chat_order.len() > KEPT {
                    if let Some(old) = state.chat_order.pop_front() {
                        state.chat_of.remove(&old);
                    }
                }
            }
        }
        if kind == "user" || kind == "queued" {
            state.last_msg = Some((msg.to_owned(), chat.map(str::to_owned)));
        }
    }
    let text: Arc<str> = event.to_string().into();
    let seq = state.seq;
    state.kept.push_back((seq, text.clone()));
    if state.kept.len() > KEPT {
        state.kept.pop_front();
    }
    // No page connected is fine.
    let _ = feed.live.send((seq, text));
}

struct Work {
    id: u64,
    stage: Stage,
    chat: Option<String>,
    msg: String,
    start: u64,
    end: Option<u64>,
}

/// What the bridge does with a message: each stage makes its own WeChat API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fetching its file (the media step).
    Media,
    /// Asking the bot, and "typing…" meanwhile.
    Dispatch,
    /// Sending the replies.
    Send,
}

/// Work on one message, from [`working`] until dropped.
pub struct Working {
    id: u64,
}

impl Drop for Working {
    fn drop(&mut self) {
        let Some(feed) = feed() else { return };
        let mut state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(work) = state.working.iter_mut().find(|w| w.id == self.id) {
            work.end = Some(now_us());
        }
    }
}

/// Pieces of work remembered for placing the API calls made during them.
const WORK_KEPT: usize = 256;

/// Marks the bridge as working on message `msg` (of `chat`) until the guard drops: a WeChat API
/// call made meanwhile belongs to it.
pub fn working(stage: Stage, chat: Option<&str>, msg: &str) -> Working {
    let Some(feed) = feed() else { return Working { id: 0 } };
    let mut state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
    state.seq += 1;
    let id = state.seq;
    let chat = chat.map(str::to_owned).or_else(|| state.chat_of.get(msg).cloned());
    state.working.push_back(Work { id, stage, chat, msg: msg.to_owned(), start: now_us(), end: None });
    if state.working.len() > WORK_KEPT {
        state.working.pop_front();
    }
    Working { id }
}

/// The message (and conversation) the bridge was working on at `at_us` (unix microseconds), in
/// `chat` and at `stage` if given: the only such piece of work, else none (two at once cannot be
/// told apart).
pub fn worked_on(at_us: u64, chat: Option<&str>, stage: Option<Stage>) -> Option<(String, Option<String>)> {
    let state = feed()?.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut during = state
        .working
        .iter()
        .filter(|w| w.start <= at_us && w.end.is_none_or(|end| at_us <= end))
        .filter(|w| chat.is_none() || w.chat.as_deref() == chat)
        .filter(|w| stage.is_none_or(|stage| w.stage == stage));
    // Several stages of one message count as one.
    let first = during.next()?;
    during.all(|w| w.msg == first.msg).then(|| (first.msg.clone(), first.chat.clone()))
}

/// Unix microseconds: steps of one message's work follow each other closer than a millisecond.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// The conversation of message `msg`, if the feed has seen it.
pub fn chat_of(msg: &str) -> Option<String> {
    feed()?.state.lock().unwrap_or_else(|p| p.into_inner()).chat_of.get(msg).cloned()
}

/// The latest message seen in `chat`, or (without a chat) the latest message of all, with its
/// chat: where an event that names no message belongs.
pub fn latest(chat: Option<&str>) -> Option<(String, Option<String>)> {
    let state = feed()?.state.lock().unwrap_or_else(|p| p.into_inner());
    match chat {
        Some(chat) => state.latest.get(chat).map(|msg| (msg.clone(), Some(chat.to_owned()))),
        None => state.last_msg.clone(),
    }
}

/// `GET /events`: every event kept so far, then each new one as it happens.
pub async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = install();
    // Subscribed under the lock: no event falls between the history and the live ones.
    let (history, live) = {
        let state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.kept.iter().cloned().collect::<Vec<_>>(), feed.live.subscribe())
    };
    let history = futures_util::stream::iter(history.into_iter().map(|(seq, text)| Ok(sse(seq, &text))));
    let live = futures_util::stream::unfold(live, |mut live| async move {
        // A page too slow to keep up (lagged): the stream ends, and the browser reconnects and is
        // sent everything kept again (the page skips what it has by `seq`).
        let (seq, text) = live.recv().await.ok()?;
        Some((Ok(sse(seq, &text)), live))
    });
    Sse::new(futures_util::StreamExt::chain(history, live)).keep_alive(KeepAlive::default())
}

fn sse(seq: u64, text: &str) -> Event {
    Event::default().id(seq.to_string()).data(text)
}

/// The conversation an Inbound (as JSON) belongs to: `<channel>:<account>:<conversation id>`,
/// the chat page's id for it.
pub fn chat_of_inbound(inbound: &Value) -> Option<String> {
    let (channel, account, id) =
        (inbound["channel"].as_str()?, inbound["account"].as_str()?, inbound["conversation"]["id"].as_str()?);
    Some(format!("{channel}:{account}:{id}"))
}

/// Names of fields whose values are credentials: masked wherever the feed shows a request.
const SECRET_NAMES: &[&str] = &[
    "access_token",
    "secret",
    "corpsecret",
    "appsecret",
    "app_secret",
    "key",
    "token",
    "bot_token",
    "context_token",
    "aes_key",
    "aeskey",
    "encoding_aes_key",
    "response_code",
    "code",
    "ticket",
    "authorization",
    "upload_param",
    "encrypt_query_param",
    "encrypted_query_param",
    "filekey",
    "typing_ticket",
    "signature",
    "msg_signature",
    "x-wechat-uin",
];

fn is_secret(name: &str) -> bool {
    SECRET_NAMES.iter().any(|secret| name.eq_ignore_ascii_case(secret))
        || name.to_ascii_lowercase().ends_with("_ticket")
}

/// Fields holding URLs whose query may carry credentials.
fn is_url(value: &str) -> bool {
    value.starts_with("http://") || value.starts_with("https://")
}

/// A credential as the trace shows it: `****` and 8 hex digits of its SHA-256, so two can be
/// told apart and none can be read.
pub fn mask(value: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(value.as_bytes());
    format!("****{}", &shared::core::media::hex(&digest)[..8])
}

/// A URL with the credentials in its query masked.
fn mask_url(value: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(value) else { return value.to_owned() };
    let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if !pairs.iter().any(|(k, _)| is_secret(k)) {
        return value.to_owned();
    }
    url.set_query(Some(&mask_query(&pairs)));
    url.to_string()
}

/// Strings longer than this are shown by their size (a picture in base64, say).
const SHOWN_STRING: usize = 4096;

/// A line of text with each quoted value that follows a credential's name masked:
/// `webhook key "abc…"` becomes `webhook key "****1a2b3c4d"`.
pub fn mask_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let Some(len) = rest[open + 1..].find('"') else { break };
        let before = &rest[..open];
        let value = &rest[open + 1..open + 1 + len];
        // The words just before the quote name the value.
        let named = before
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .filter(|w| !w.is_empty())
            .take(2)
            .any(|word| is_secret(word) || word.eq_ignore_ascii_case("uin") || word.eq_ignore_ascii_case("param"));
        out.push_str(before);
        out.push('"');
        out.push_str(&if named { mask(value) } else { value.to_owned() });
        out.push('"');
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `value` with every credential field (at any depth) masked.
pub fn mask_json(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| {
                    let v = match v {
                        Value::String(s) if is_secret(name) => Value::String(mask(s)),
                        other => mask_json(other),
                    };
                    (name.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_json).collect()),
        Value::String(s) if s.len() > SHOWN_STRING => Value::String(format!("({} bytes)", s.len())),
        Value::String(s) if is_url(s) => Value::String(mask_url(s)),
        other => other.clone(),
    }
}

/// A query string's pairs with the credentials masked, as `a=1&key=abcd****`.
pub fn mask_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(
            |(name, value)| if is_secret(name) { format!("{name}={}", mask(value)) } else { format!("{name}={value}") },
        )
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_at_any_depth_and_in_queries() {
        let body = json!({"corpid": "ww1", "corpsecret": "s3cr3t-value", "msg": {"context_token": "ctx-123456"},
                          "list": [{"access_token": "tok-abcdef"}], "text": {"content": "hello"}});
        let masked = mask_json(&body).to_string();
        for secret in ["s3cr3t-value", "ctx-123456", "tok-abcdef"] {
            assert!(!masked.contains(secret), "{masked}");
        }
        assert!(masked.contains("hello") && masked.contains("ww1"), "{masked}");
        let query = mask_query(&[("access_token".into(), "ACCESS-TOKEN-1".into()), ("debug".into(), "1".into())]);
        assert!(query.starts_with("access_token=****") && query.ends_with("&debug=1"), "{query}");
        assert!(!query.contains("ACCE"), "not even a prefix: {query}");
        assert_ne!(mask("token-a"), mask("token-b"), "two tell apart");
        let upload = json!({"upload_full_url": "https://cdn.example/c2c/upload?encrypted_query_param=PARAM-XYZ&filekey=FK-1",
                            "typing_ticket": "TICKET-1", "image": "A".repeat(5000)});
        let masked = mask_json(&upload).to_string();
        for secret in ["PARAM-XYZ", "FK-1", "TICKET-1", "AAAA"] {
            assert!(!masked.contains(secret), "{masked}");
        }
        assert!(masked.contains("https://cdn.example/c2c/upload?") && masked.contains("(5000 bytes)"), "{masked}");
        let line = mask_quoted(r#"POST /x: webhook key "KEY-123456" unknown; touser "WangFang"; X-WECHAT-UIN "MTIz""#);
        assert!(!line.contains("KEY-123456") && !line.contains("MTIz") && line.contains("\"WangFang\""), "{line}");
    }

    #[test]
    fn an_inbound_names_its_conversation() {
        let inbound =
            json!({"channel": "wecom_aibot", "account": "ops", "conversation": {"kind": "group", "id": "wrG1"}});
        assert_eq!(chat_of_inbound(&inbound).as_deref(), Some("wecom_aibot:ops:wrG1"));
        assert_eq!(chat_of_inbound(&json!({"channel": "oa"})), None);
    }
}
