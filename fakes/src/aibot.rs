//! WeCom's side of an AI bot (智能机器人, API mode, URL callbacks; wecom-aibot.md): a client that
//! posts encrypted JSON callbacks to the bridge's bot route, as WeCom does, and holds every answer
//! to the rules WeCom applies to it.
//!
//! Each request has a fresh nonce and the current timestamp. Each answer must be HTTP 200 with an
//! empty body or the encrypted envelope `{"encrypt","msgsignature","timestamp","nonce"}` (the
//! request's nonce, a timestamp within 300 s, a valid signature, a ciphertext that decrypts
//! strictly to JSON with receive id `""`), and a stream answer must keep the stream rules (id
//! ≤ 128 bytes, boolean `finish`, content ≤ 20 480 bytes, `msg_item` only with `finish`, one stream
//! id per message, no change once finished). A broken rule is the `Err` of the call and a line in
//! [`AibotWecom::problems`], so a test can also assert that none happened.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use fakes::aibot::{text_message, AibotWecom};
//! let wecom = AibotWecom::new("http://127.0.0.1:3000/aibot/helpdesk", "T0ken", &"a".repeat(43));
//! wecom.verify_url().await?;
//! let msg = text_message("msg-1", None, "alice", "hello", "https://example.invalid/response");
//! let talk = wecom.converse(&msg).await?;
//! assert_eq!(talk.final_text(), Some("hello"));
//! assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

pub use crate::aibot_crypto::MsgCrypt;
use crate::robot::check_image;
use crate::wire::{kind, random_alnum, random_hex};

/// The `aibotid` of the payload builders and of the refreshes `converse` sends.
pub const AIBOTID: &str = "aibFAKE";
/// Longest `stream.id` accepted, in bytes (WeCom documents none; task ids have this cap).
const STREAM_ID_MAX: usize = 128;
/// `stream.content`, UTF-8 bytes (D-AI 101031).
const CONTENT_MAX: usize = 20_480;
/// `feedback.id`, UTF-8 bytes.
const FEEDBACK_ID_MAX: usize = 256;
/// Final images: at most 10, each at most 10 MB before base64.
const MSG_ITEMS_MAX: usize = 10;
const IMAGE_MAX: usize = 10 * 1024 * 1024;
/// How far an answer's timestamp may be from now, either way.
const CLOCK_SKEW_SECS: u64 = 300;
/// A test's patience with one request; WeCom's own is shorter (1 s for GET, about 5 s for POST).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// WeCom's side of one AI bot: posts encrypted JSON callbacks to the bridge and checks its answers.
#[derive(Debug)]
pub struct AibotWecom {
    url: String,
    crypt: MsgCrypt,
    http: reqwest::Client,
    refresh_every: Duration,
    window: Duration,
    seen: Mutex<Seen>,
}

/// What the client remembers across calls.
#[derive(Debug, Default)]
struct Seen {
    problems: Vec<String>,
    nonces: HashSet<String>,
    /// msgid of each message answered with a stream → that stream's id.
    stream_of_msgid: HashMap<String, String>,
    /// Stream id → (last content, finished).
    streams: HashMap<String, (String, bool)>,
}

/// One answer of the bridge, decrypted and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// HTTP 200 with an empty body: "no reply".
    Empty,
    /// `{"msgtype":"stream","stream":{…}}`; a missing `content` reads as `""`.
    Stream { id: String, finish: bool, content: String, msg_item: Option<Value> },
    /// `{"msgtype":"text","text":{"content"}}` (documented only as the `enter_chat` welcome).
    Text { content: String },
    /// Any other decrypted reply (`template_card`, `stream_with_template_card`,
    /// `update_template_card`, …), as JSON.
    Other(Value),
}

/// What [`AibotWecom::converse`] saw: the first answer and one per refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub stream_id: String,
    /// Every answer, all of them [`Answer::Stream`], the message's first.
    pub answers: Vec<Answer>,
    /// Whether an answer had `finish: true` before the window ended.
    pub finished: bool,
    /// Refresh callbacks sent.
    pub refreshes: usize,
}

impl Conversation {
    /// The contents shown to the user, with consecutive repeats dropped.
    pub fn snapshots(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for answer in &self.answers {
            if let Answer::Stream { content, .. } = answer {
                if out.last() != Some(content) {
                    out.push(content.clone());
                }
            }
        }
        out
    }

    /// The images of the finishing answer (`msg_item`, checked: JPG/PNG, md5 right), decoded.
    pub fn final_images(&self) -> Vec<Vec<u8>> {
        use base64::Engine as _;
        let Some(Answer::Stream { finish: true, msg_item: Some(items), .. }) = self.answers.last() else {
            return Vec::new();
        };
        let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
        items
            .iter()
            .filter_map(|item| item["image"]["base64"].as_str())
            .filter_map(|data| base64::engine::general_purpose::STANDARD.decode(data).ok())
            .collect()
    }

    /// The content of the finishing answer, if the stream finished.
    pub fn final_text(&self) -> Option<&str> {
        match self.answers.last() {
            Some(Answer::Stream { finish: true, content, .. }) => Some(content),
            _ => None,
        }
    }
}

/// A ciphertext with its signature, timestamp and nonce, ready to send.
struct Sealed {
    encrypt: String,
    signature: String,
    timestamp: String,
    nonce: String,
}

impl Sealed {
    /// The POST query (`msg_signature, timestamp, nonce`), URL-encoded.
    fn post_query(&self) -> String {
        format!(
            "msg_signature={}&timestamp={}&nonce={}",
            url_encode(&self.signature),
            url_encode(&self.timestamp),
            url_encode(&self.nonce)
        )
    }

    fn body(&self) -> String {
        json!({ "encrypt": self.encrypt }).to_string()
    }
}

impl AibotWecom {
    /// A bot at `url` (the bridge's `…/aibot/{bot}` route) with its Token and 43-character
    /// EncodingAESKey; refreshes every second, for a window of 360 s.
    ///
    /// # Panics
    /// If the EncodingAESKey is not one (a fixture error: no test can run with it).
    pub fn new(url: &str, token: &str, encoding_aes_key: &str) -> Self {
        let crypt = MsgCrypt::new(token, encoding_aes_key).unwrap_or_else(|e| panic!("AibotWecom::new: {e}"));
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("reqwest client");
        AibotWecom {
            url: url.to_owned(),
            crypt,
            http,
            refresh_every: Duration::from_secs(1),
            window: Duration::from_secs(360),
            seen: Mutex::default(),
        }
    }

    /// Sends `name: value` with every request (a label a test or a sandbox traces requests by).
    ///
    /// # Panics
    /// If `name: value` is not a valid header (a fixture error).
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(name, value.parse().unwrap_or_else(|_| panic!("AibotWecom::header: {value:?}")));
        self.http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .expect("reqwest client");
        self
    }

    /// How often `converse` sends a refresh (WeCom: about once a second).
    pub fn refresh_every(mut self, d: Duration) -> Self {
        self.refresh_every = d;
        self
    }

    /// How long after the message `converse` keeps refreshing (WeCom: 6 minutes).
    pub fn window(mut self, d: Duration) -> Self {
        self.window = d;
        self
    }

    /// The bot's cryptography, for a test's own bridge stand-in or hand-made requests.
    pub fn crypt(&self) -> &MsgCrypt {
        &self.crypt
    }

    /// One line per broken rule seen so far (each also was the `Err` of its call).
    pub fn problems(&self) -> Vec<String> {
        self.seen().problems.clone()
    }

    /// GET URL verification with a random echostr; Ok(()) when the bridge answers exactly the
    /// plaintext echostr.
    pub async fn verify_url(&self) -> Result<(), String> {
        let result = self.verify_url_once().await;
        self.recorded(result)
    }

    /// POSTs one callback (the decrypted payload as WeCom would send it) and returns the
    /// decrypted, checked answer.
    pub async fn post(&self, payload: &Value) -> Result<Answer, String> {
        let result = self.exchange(payload).await;
        self.recorded(result)
    }

    /// POSTs a raw body (as `application/json`) with a given query, for negative tests; returns
    /// (status, body), or (0, the error) when no HTTP answer came. Nothing is checked.
    pub async fn post_raw(&self, query: &str, body: &str) -> (u16, String) {
        let request =
            self.http.post(self.url_with(query)).header("content-type", "application/json").body(body.to_owned());
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_else(|e| format!("(unreadable body: {e})")))
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// Encrypts and signs `plaintext` with `receive_id` (normally `""`): (query string, JSON body).
    pub fn seal(&self, plaintext: &str, receive_id: &str) -> (String, String) {
        let sealed = self.sealed(plaintext, receive_id);
        (sealed.post_query(), sealed.body())
    }

    /// Posts a user message and then polls stream refreshes every refresh interval until the answer
    /// has `finish: true` or the window (from the message's post) ends; returns every answer seen.
    pub async fn converse(&self, message: &Value) -> Result<Conversation, String> {
        let started = Instant::now();
        let first = self.post(message).await?;
        let Answer::Stream { id, finish, .. } = &first else {
            return self.recorded(Err(format!(
                "{}: answered {first:?}, but a conversation needs a stream answer",
                describe(message)
            )));
        };
        let mut talk =
            Conversation { stream_id: id.clone(), finished: *finish, answers: vec![first.clone()], refreshes: 0 };
        let chat = message.get("chatid").and_then(Value::as_str);
        let user = message.pointer("/from/userid").and_then(Value::as_str).unwrap_or_default();
        while !talk.finished {
            tokio::time::sleep(self.refresh_every).await;
            if started.elapsed() >= self.window {
                break;
            }
            let msgid = random_alnum(24);
            let answer = self.post(&refresh(&msgid, &talk.stream_id, chat, user)).await?;
            talk.refreshes += 1;
            talk.finished = matches!(answer, Answer::Stream { finish: true, .. });
            talk.answers.push(answer);
        }
        Ok(talk)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn recorded<T>(&self, result: Result<T, String>) -> Result<T, String> {
        if let Err(problem) = &result {
            self.seen().problems.push(problem.clone());
        }
        result
    }

    fn url_with(&self, query: &str) -> String {
        let joint = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{joint}{query}", self.url)
    }

    /// A fresh nonce (10 digits, as WeCom's look) never used before by this client.
    fn nonce(&self) -> String {
        let mut seen = self.seen();
        loop {
            let nonce = rand::random_range(1_000_000_000u64..10_000_000_000).to_string();
            if seen.nonces.insert(nonce.clone()) {
                return nonce;
            }
        }
    }

    fn sealed(&self, plaintext: &str, receive_id: &str) -> Sealed {
        // WeCom's own random prefixes are 16 lowercase hex characters.
        let mut random = [0u8; 16];
        random.copy_from_slice(random_hex(16).as_bytes());
        let encrypt = self.crypt.encrypt(random, plaintext, receive_id);
        let timestamp = unix_now().to_string();
        let nonce = self.nonce();
        let signature = self.crypt.signature(&timestamp, &nonce, &encrypt);
        Sealed { encrypt, signature, timestamp, nonce }
    }

    async fn verify_url_once(&self) -> Result<(), String> {
        let echostr = rand::random_range(1_000_000_000_000_000_000u64..=u64::MAX).to_string();
        let sealed = self.sealed(&echostr, "");
        let query = format!("{}&echostr={}", sealed.post_query(), url_encode(&sealed.encrypt));
        let response = self
            .http
            .get(self.url_with(&query))
            .send()
            .await
            .map_err(|e| format!("URL verification: GET failed: {e}"))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| format!("URL verification: body unreadable: {e}"))?;
        if status != 200 {
            return Err(format!("URL verification: HTTP {status} instead of 200: {}", excerpt(&body)));
        }
        if body != echostr.as_bytes() {
            return Err(format!(
                "URL verification: body {} is not exactly the decrypted echostr {echostr:?} (no quotes, BOM or newline)",
                excerpt(&body)
            ));
        }
        Ok(())
    }

    async fn exchange(&self, payload: &Value) -> Result<Answer, String> {
        let what = describe(payload);
        let sealed = self.sealed(&payload.to_string(), "");
        let response = self
            .http
            .post(self.url_with(&sealed.post_query()))
            .header("content-type", "application/json")
            .body(sealed.body())
            .send()
            .await
            .map_err(|e| format!("{what}: POST failed: {e}"))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| format!("{what}: body unreadable: {e}"))?;
        let answer = self.open(status, &body, &sealed.nonce).map_err(|e| format!("{what}: {e}"))?;
        self.check_against(payload, &answer).map_err(|e| format!("{what}: {e}"))?;
        Ok(answer)
    }

    /// Checks the HTTP answer and its envelope, decrypts it and reads the reply.
    fn open(&self, status: u16, body: &[u8], nonce: &str) -> Result<Answer, String> {
        if status != 200 {
            return Err(format!("HTTP {status} instead of 200: {}", excerpt(body)));
        }
        if body.is_empty() {
            return Ok(Answer::Empty);
        }
        let envelope = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(format!(
                    "body is not the JSON envelope {{encrypt, msgsignature, timestamp, nonce}}: {}",
                    excerpt(body)
                ))
            }
        };
        let encrypt = string_field(&envelope, "encrypt")?;
        let signature = string_field(&envelope, "msgsignature")?;
        let answer_nonce = string_field(&envelope, "nonce")?;
        if answer_nonce != nonce {
            return Err(format!("the answer's nonce {answer_nonce:?} is not the request's {nonce:?}"));
        }
        let timestamp = match envelope.get("timestamp") {
            Some(Value::Number(n)) if n.is_u64() => n.to_string(),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.clone(),
            other => return Err(format!("timestamp must be a number of seconds or a numeric string, got {other:?}")),
        };
        let secs: u64 = timestamp.parse().map_err(|_| format!("timestamp {timestamp} is out of range"))?;
        if secs.abs_diff(unix_now()) > CLOCK_SKEW_SECS {
            return Err(format!("timestamp {secs} is more than {CLOCK_SKEW_SECS} s from now ({})", unix_now()));
        }
        self.crypt.verify(signature, &timestamp, answer_nonce, encrypt).map_err(|e| format!("msgsignature: {e}"))?;
        let plain = self.crypt.decrypt(encrypt, "").map_err(|e| format!("encrypt: {e}"))?;
        let reply = match serde_json::from_str::<Value>(&plain) {
            Ok(reply @ Value::Object(_)) => reply,
            _ => return Err(format!("the decrypted message is not a JSON object: {plain:?}")),
        };
        read_reply(reply)
    }

    /// The rules that depend on what was asked and on earlier answers.
    fn check_against(&self, payload: &Value, answer: &Answer) -> Result<(), String> {
        let msgtype = payload.get("msgtype").and_then(Value::as_str).unwrap_or_default();
        let eventtype = payload.pointer("/event/eventtype").and_then(Value::as_str);
        match (msgtype, answer) {
            ("stream", Answer::Stream { id, .. }) => {
                let asked = payload.pointer("/stream/id").and_then(Value::as_str).unwrap_or_default();
                if id != asked {
                    return Err(format!("a refresh of stream {asked:?} was answered for stream {id:?}"));
                }
            }
            ("stream", other) => return Err(format!("a refresh takes only a stream answer, got {other:?}")),
            ("event", Answer::Text { .. }) if eventtype == Some("enter_chat") => {}
            (_, Answer::Text { .. }) => {
                return Err("a text answer is only documented as the enter_chat welcome".to_owned())
            }
            ("event", a) if eventtype == Some("feedback_event") && *a != Answer::Empty => {
                return Err(format!("feedback_event takes only an empty answer, got {a:?}"))
            }
            _ => {}
        }
        let Answer::Stream { id, finish, content, .. } = answer else {
            return Ok(());
        };
        let mut seen = self.seen();
        if !matches!(msgtype, "stream" | "event") {
            if let Some(msgid) = payload.get("msgid").and_then(Value::as_str) {
                let first = seen.stream_of_msgid.entry(msgid.to_owned()).or_insert_with(|| id.clone());
                if first != id {
                    return Err(format!(
                        "message {msgid:?} was answered with stream {id:?}, an earlier delivery of it with stream {first:?}"
                    ));
                }
            }
        }
        if let Some((before, true)) = seen.streams.get(id) {
            if !finish || before != content {
                return Err(format!(
                    "stream {id:?} changed after it finished: now finish={finish}, content {content:?} (was {before:?})"
                ));
            }
        }
        seen.streams.insert(id.clone(), (content.clone(), *finish));
        Ok(())
    }
}

/// Reads a decrypted reply and checks the stream rules that need no history.
fn read_reply(reply: Value) -> Result<Answer, String> {
    match reply.get("msgtype").and_then(Value::as_str) {
        Some("stream") => read_stream(&reply),
        Some("text") => match reply.pointer("/text/content") {
            Some(Value::String(content)) => Ok(Answer::Text { content: content.clone() }),
            _ => Err(format!("a text answer needs text.content as a string: {reply}")),
        },
        Some(_) => Ok(Answer::Other(reply)),
        None => Err(format!("the decrypted answer has no msgtype (\"no reply\" is an empty body): {reply}")),
    }
}

fn read_stream(reply: &Value) -> Result<Answer, String> {
    let Some(Value::Object(stream)) = reply.get("stream") else {
        return Err(format!("a stream answer needs a stream object: {reply}"));
    };
    let id = match stream.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= STREAM_ID_MAX => id.clone(),
        other => return Err(format!("stream.id must be a string of 1..={STREAM_ID_MAX} bytes, got {other:?}")),
    };
    let Some(Value::Bool(finish)) = stream.get("finish") else {
        return Err(format!("stream.finish must be a boolean, got {:?}", stream.get("finish")));
    };
    let content = match stream.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) if c.len() <= CONTENT_MAX => c.clone(),
        Some(Value::String(c)) => {
            return Err(format!("stream.content is {} bytes, the limit is {CONTENT_MAX}", c.len()))
        }
        Some(other) => return Err(format!("stream.content must be a string, got {}", kind(other))),
    };
    let msg_item = match stream.get("msg_item") {
        None | Some(Value::Null) => None,
        Some(_) if !finish => return Err("stream.msg_item is only allowed with finish: true".to_owned()),
        Some(items) => {
            check_msg_items(items)?;
            Some(items.clone())
        }
    };
    match stream.get("feedback") {
        None | Some(Value::Null) => {}
        Some(Value::Object(f)) if f.get("id").and_then(Value::as_str).is_some_and(|i| i.len() <= FEEDBACK_ID_MAX) => {}
        Some(other) => {
            return Err(format!("stream.feedback must be {{\"id\": ≤ {FEEDBACK_ID_MAX} bytes}}, got {other}"))
        }
    }
    Ok(Answer::Stream { id, finish: *finish, content, msg_item })
}

/// `msg_item`: at most 10 images, each a JPG/PNG of at most 10 MB with the md5 of its bytes.
fn check_msg_items(items: &Value) -> Result<(), String> {
    let Value::Array(items) = items else {
        return Err(format!("stream.msg_item must be an array, got {}", kind(items)));
    };
    if items.len() > MSG_ITEMS_MAX {
        return Err(format!("stream.msg_item has {} items, at most {MSG_ITEMS_MAX} are shown", items.len()));
    }
    for (i, item) in items.iter().enumerate() {
        let Some(item) = item.as_object().filter(|o| o.get("msgtype") == Some(&json!("image"))) else {
            return Err(format!("stream.msg_item[{i}] must be {{\"msgtype\":\"image\",…}}, got {item}"));
        };
        check_image(item, IMAGE_MAX).map_err(|e| format!("stream.msg_item[{i}]: {}", e.detail()))?;
    }
    Ok(())
}

fn string_field<'a>(envelope: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match envelope.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        other => Err(format!("the envelope's {field} must be a non-empty string, got {other:?}")),
    }
}

/// Names a payload in problem lines.
fn describe(payload: &Value) -> String {
    let msgid = payload.get("msgid").and_then(Value::as_str).unwrap_or("?");
    match payload.get("msgtype").and_then(Value::as_str) {
        Some("stream") => {
            let id = payload.pointer("/stream/id").and_then(Value::as_str).unwrap_or("?");
            format!("refresh of stream {id:?} (msgid {msgid:?})")
        }
        Some("event") => {
            let event = payload.pointer("/event/eventtype").and_then(Value::as_str).unwrap_or("?");
            format!("event {event} (msgid {msgid:?})")
        }
        Some(msgtype) => format!("{msgtype} message {msgid:?}"),
        None => format!("payload without msgtype (msgid {msgid:?})"),
    }
}

/// The start of a body for a problem line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (`+`, `/`, `=` of base64 included).
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A user's text message; `chat` is a group's `chatid` (`None`: a single chat).
pub fn text_message(msgid: &str, chat: Option<&str>, userid: &str, content: &str, response_url: &str) -> Value {
    let mut message = envelope(msgid, chat, userid);
    message.insert("response_url".into(), json!(response_url));
    message.insert("msgtype".into(), json!("text"));
    message.insert("text".into(), json!({ "content": content }));
    Value::Object(message)
}

/// A user's picture by its encrypted URL: in a single chat an `image` message; in a group a
/// `mixed` one whose text carries the mention (`text`, e.g. "@Helper").
pub fn image_message(
    msgid: &str,
    chat: Option<&str>,
    userid: &str,
    text: &str,
    url: &str,
    response_url: &str,
) -> Value {
    let mut message = envelope(msgid, chat, userid);
    message.insert("response_url".into(), json!(response_url));
    if chat.is_some() {
        let items =
            json!([{"msgtype": "text", "text": {"content": text}}, {"msgtype": "image", "image": {"url": url}}]);
        message.insert("msgtype".into(), json!("mixed"));
        message.insert("mixed".into(), json!({ "msg_item": items }));
    } else {
        message.insert("msgtype".into(), json!("image"));
        message.insert("image".into(), json!({ "url": url }));
    }
    Value::Object(message)
}

/// A stream refresh callback: no content, no response_url.
pub fn refresh(msgid: &str, stream_id: &str, chat: Option<&str>, userid: &str) -> Value {
    let mut message = envelope(msgid, chat, userid);
    message.insert("msgtype".into(), json!("stream"));
    message.insert("stream".into(), json!({ "id": stream_id }));
    Value::Object(message)
}

/// An event in a single chat: `event: {eventtype, <eventtype>: extra}` (`extra` null: no payload,
/// as for `enter_chat`). Set `response_url` or `chatid` on the result where the event has them.
pub fn event(msgid: &str, eventtype: &str, userid: &str, extra: Value) -> Value {
    let mut message = envelope(msgid, None, userid);
    message.insert("create_time".into(), json!(unix_now()));
    message.insert("msgtype".into(), json!("event"));
    let mut event = Map::new();
    event.insert("eventtype".into(), json!(eventtype));
    if !extra.is_null() {
        event.insert(eventtype.to_owned(), extra);
    }
    message.insert("event".into(), Value::Object(event));
    Value::Object(message)
}

/// The fields every callback has: msgid, aibotid, chatid (groups), chattype, from.
fn envelope(msgid: &str, chat: Option<&str>, userid: &str) -> Map<String, Value> {
    let mut message = Map::new();
    message.insert("msgid".into(), json!(msgid));
    message.insert("aibotid".into(), json!(AIBOTID));
    if let Some(chat) = chat {
        message.insert("chatid".into(), json!(chat));
    }
    message.insert("chattype".into(), json!(if chat.is_some() { "group" } else { "single" }));
    message.insert("from".into(), json!({ "userid": userid }));
    message
}
