//! The dify bot against a local Dify that checks each request as Dify's service API does and
//! keeps the conversations it issued.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared::adapters::memory::{MemoryConversations, MemoryMetrics};
use shared::channels::Config;
use shared::core::bot::{conversation_key, Bot, BotConfig};
use shared::core::envelope::{Content, Inbound, Media, MediaType};
use shared::core::ports::{Conversations, MediaStore, SystemClock};
use shared::services::bots::{build, http_client, BotPorts};
use shared::services::router::{Router, RouterPorts};

use crate::support::{inbound, Snapshots};

const KEY: &str = "app-T0pS3cretDifyKey";
const USER: &str = "wxbridge:wecom:hr:WangFang";

/// What the fake streams for an accepted request: pieces of the SSE body, each after its pause
/// (ms), for the request and the conversation id it answers in.
type Script = Arc<dyn Fn(&Value, &str) -> Vec<(u64, Vec<u8>)> + Send + Sync>;

/// A Dify app's service API: `POST /v1/chat-messages`, streaming only.
struct Dify {
    /// Conversation ids issued, with the user each belongs to.
    issued: Mutex<HashMap<String, String>>,
    /// Ids it has forgotten (a conversation deleted in Dify's console): 404 when named.
    forgotten: Mutex<HashSet<String>>,
    /// Conversations it has closed: 400 `conversation_completed` when named.
    closed: Mutex<HashSet<String>>,
    /// Every request body that passed the key check, in order.
    requests: Mutex<Vec<Value>>,
    /// Why a request was refused, one readable line each (none in a passing test).
    problems: Mutex<Vec<String>>,
    /// A status and JSON body to answer every request with instead.
    failing: Mutex<Option<(StatusCode, Value)>>,
    script: Script,
}

impl Dify {
    async fn serve(script: Script) -> (String, Arc<Dify>) {
        let dify = Arc::new(Dify {
            issued: Mutex::default(),
            forgotten: Mutex::default(),
            closed: Mutex::default(),
            requests: Mutex::default(),
            problems: Mutex::default(),
            failing: Mutex::default(),
            script,
        });
        let router = axum::Router::new().route("/v1/chat-messages", post(chat_messages)).with_state(dify.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, dify)
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The `conversation_id` of each request, in order.
    fn conversation_ids(&self) -> Vec<String> {
        self.requests().iter().map(|r| r["conversation_id"].as_str().unwrap_or("?").to_owned()).collect()
    }

    fn forget(&self, id: &str) {
        self.forgotten.lock().unwrap().insert(id.to_owned());
    }

    fn close(&self, id: &str) {
        self.closed.lock().unwrap().insert(id.to_owned());
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}

/// Dify's error body, and the refusal noted as a problem when the client is at fault.
fn refuse(dify: &Dify, status: StatusCode, code: &str, message: &str, problem: bool) -> Response {
    if problem {
        dify.problems.lock().unwrap().push(format!("{status} {code}: {message}"));
    }
    let body = json!({"code": code, "message": message, "status": status.as_u16()}).to_string();
    Response::builder().status(status).header("content-type", "application/json").body(Body::from(body)).unwrap()
}

/// What Dify's `ChatRequestPayload` takes.
const FIELDS: [&str; 6] = ["query", "inputs", "response_mode", "user", "conversation_id", "files"];

async fn chat_messages(State(dify): State<Arc<Dify>>, headers: HeaderMap, body: String) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return refuse(&dify, StatusCode::UNAUTHORIZED, "unauthorized", "Access token is invalid", false);
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return refuse(&dify, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_param", "not JSON", true);
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return refuse(&dify, StatusCode::BAD_REQUEST, "invalid_param", "the body is not JSON", true);
    };
    dify.requests.lock().unwrap().push(request.clone());
    if let Some((status, body)) = dify.failing.lock().unwrap().clone() {
        return Response::builder().status(status).body(Body::from(body.to_string())).unwrap();
    }
    let object = request.as_object().cloned().unwrap_or_default();
    if let Some(extra) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return refuse(&dify, StatusCode::BAD_REQUEST, "invalid_param", &format!("unexpected field {extra}"), true);
    }
    let (Some(query), Some(user), Some(id)) =
        (request["query"].as_str(), request["user"].as_str(), request["conversation_id"].as_str())
    else {
        return refuse(&dify, StatusCode::BAD_REQUEST, "invalid_param", "query, user, conversation_id", true);
    };
    if !request["inputs"].is_object() || request["response_mode"] != "streaming" || user.is_empty() {
        return refuse(&dify, StatusCode::BAD_REQUEST, "invalid_param", "inputs, response_mode streaming, user", true);
    }
    let files = request["files"].as_array().cloned().unwrap_or_default();
    let file_ok = |f: &Value| {
        f["type"] == "image"
            && f["transfer_method"] == "remote_url"
            && f["url"].as_str().is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
            && f.as_object().is_some_and(|o| o.len() == 3)
    };
    if !request["files"].is_array() || !files.iter().all(file_ok) {
        return refuse(&dify, StatusCode::BAD_REQUEST, "invalid_param", "files: remote_url images", true);
    }
    if query.is_empty() && files.is_empty() {
        return refuse(&dify, StatusCode::BAD_REQUEST, "invalid_param", "nothing asked", true);
    }
    let id = if id.is_empty() {
        let mut issued = dify.issued.lock().unwrap();
        let id = format!("{:08x}-8118-4bc5-8e9b-64562b4555f2", issued.len() + 1);
        issued.insert(id.clone(), user.to_owned());
        id
    } else {
        if dify.forgotten.lock().unwrap().contains(id) {
            return refuse(&dify, StatusCode::NOT_FOUND, "not_found", "Conversation Not Exists.", false);
        }
        if dify.closed.lock().unwrap().contains(id) {
            let message = "The conversation has ended. Please start a new conversation.";
            return refuse(&dify, StatusCode::BAD_REQUEST, "conversation_completed", message, false);
        }
        match dify.issued.lock().unwrap().get(id) {
            Some(owner) if owner == user => id.to_owned(),
            Some(_) => return refuse(&dify, StatusCode::NOT_FOUND, "not_found", "another user's conversation", true),
            None => return refuse(&dify, StatusCode::NOT_FOUND, "not_found", &format!("{id} was never issued"), true),
        }
    };
    let pieces = (dify.script)(&request, &id);
    let body = futures_util::stream::iter(pieces).then(|(pause_ms, bytes)| async move {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        Ok::<_, std::convert::Infallible>(bytes)
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

/// One `data:` event.
fn event(value: Value) -> Vec<u8> {
    format!("data: {value}\n\n").into_bytes()
}

fn message(id: &str, answer: &str) -> Vec<u8> {
    event(json!({"event": "message", "task_id": "t1", "message_id": "m1", "conversation_id": id,
        "answer": answer, "created_at": 1705398420}))
}

fn message_end(id: &str) -> Vec<u8> {
    event(json!({"event": "message_end", "task_id": "t1", "message_id": "m1", "conversation_id": id,
        "metadata": {"usage": {"total_tokens": 20}}}))
}

/// Dify's keep-alive, which carries no data.
const PING: &[u8] = b"event: ping\n\n";

/// Answers "you said <query>" in two chunks, with a ping, an agent thought and a workflow event
/// among them.
fn echo() -> Script {
    Arc::new(|request, id| {
        let query = request["query"].as_str().unwrap_or_default();
        vec![
            (0, PING.to_vec()),
            (0, event(json!({"event": "workflow_started", "conversation_id": id, "data": {"id": "w1"}}))),
            (0, message(id, "you said ")),
            (0, event(json!({"event": "agent_thought", "conversation_id": id, "thought": "hm", "answer": "no"}))),
            (0, message(id, query)),
            (0, message_end(id)),
        ]
    })
}

/// Streams `pieces` as they are, 30 ms apart, whatever the request.
fn fixed(pieces: Vec<Vec<u8>>) -> Script {
    Arc::new(move |_, _| pieces.iter().map(|p| (30, p.clone())).collect())
}

fn dify_config(url: &str, extra: &str) -> Config {
    Config::parse(&format!(
        r#"{{"bots": {{"default": {{"kind": "dify", "base_url": "{url}", "api_key": "{KEY}", "inputs": {{"tone": "brief"}}{extra}}}}}}}"#
    ))
    .unwrap()
}

fn dify_bot(url: &str, conversations: Option<Arc<dyn Conversations>>) -> Arc<dyn Bot> {
    let config = dify_config(url, "");
    let ports = BotPorts { conversations, ..BotPorts::default() };
    build("default", config.bots.default_bot(), &http_client().unwrap(), &ports)
}

fn text(replies: &[Content]) -> &str {
    match replies {
        [Content::Text { text }] => text,
        other => panic!("expected one text reply, got {other:?}"),
    }
}

/// Conversations in the test's own table on the emulator.
async fn dynamo_conversations() -> Arc<dyn Conversations> {
    let stack = crate::support::Stack::new().await;
    let table = shared::adapters::aws::Table::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.names.table);
    Arc::new(shared::adapters::aws::DynamoConversations::new(&table))
}

/// The Dify id stored for the default bot's conversation of `inbound`.
async fn stored(conversations: &dyn Conversations, inbound: &Inbound) -> Option<String> {
    conversations.load(&format!("default#{}", conversation_key(inbound))).await.unwrap().external_id
}

#[tokio::test]
async fn a_conversation_goes_on_under_the_id_difys_first_answer_gave() {
    let conversations = dynamo_conversations().await;
    let (url, dify) = Dify::serve(echo()).await;
    let bot = dify_bot(&url, Some(conversations.clone()));
    for (i, said) in ["明天的会几点？", "在哪里？", "谢谢"].into_iter().enumerate() {
        let replies = bot.answer(&inbound(Some(said))).await.unwrap();
        assert_eq!(text(&replies), format!("you said {said}"), "message {i}");
    }
    let issued: Vec<String> = dify.issued.lock().unwrap().keys().cloned().collect();
    assert_eq!(issued.len(), 1, "one conversation: {issued:?}");
    assert_eq!(dify.conversation_ids(), ["", issued[0].as_str(), issued[0].as_str()]);
    assert_eq!(stored(conversations.as_ref(), &inbound(None)).await, Some(issued[0].clone()));
    let first = &dify.requests()[0];
    assert_eq!(
        first,
        &json!({"query": "明天的会几点？", "inputs": {"tone": "brief"}, "response_mode": "streaming", "user": USER,
            "conversation_id": "", "files": []})
    );

    // A group shares one conversation, and its queries name their senders.
    let mut group = inbound(Some("谁去？"));
    group.conversation = serde_json::from_value(json!({"kind": "group", "id": "wrOps"})).unwrap();
    assert_eq!(text(&bot.answer(&group).await.unwrap()), "you said WangFang: 谁去？");
    let last = dify.requests().pop().unwrap();
    assert_eq!((&last["user"], &last["conversation_id"]), (&json!("wxbridge:wecom:hr:wrOps"), &json!("")));
    assert_ne!(stored(conversations.as_ref(), &group).await, Some(issued[0].clone()), "its own conversation");
    assert_eq!(dify.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn a_conversation_dify_no_longer_has_is_started_anew_and_its_id_replaced() {
    let conversations = dynamo_conversations().await;
    let (url, dify) = Dify::serve(echo()).await;
    let bot = dify_bot(&url, Some(conversations.clone()));
    bot.answer(&inbound(Some("一"))).await.unwrap();
    let old = stored(conversations.as_ref(), &inbound(None)).await.expect("an id after the first answer");
    dify.forget(&old);
    let snapshots = Snapshots::default();
    let replies = bot.answer_streaming(&inbound(Some("二")), &snapshots).await.unwrap();
    assert_eq!(text(&replies), "you said 二", "answered in the same call");
    assert_eq!(snapshots.seen().last().map(String::as_str), Some("you said 二"));
    let new = stored(conversations.as_ref(), &inbound(None)).await.expect("the new conversation's id");
    assert_ne!(new, old);
    bot.answer(&inbound(Some("三"))).await.unwrap();
    assert_eq!(dify.conversation_ids(), ["", old.as_str(), "", new.as_str()]);

    // A conversation Dify has closed is started anew the same way.
    dify.close(&new);
    assert_eq!(text(&bot.answer(&inbound(Some("四"))).await.unwrap()), "you said 四");
    let newest = stored(conversations.as_ref(), &inbound(None)).await.unwrap();
    assert!(newest != new && newest != old, "{newest}");
    assert_eq!(dify.conversation_ids()[4..], [new.as_str(), ""]);
    assert_eq!(dify.problems(), Vec::<String>::new());

    // Without a stored id a 404 is an error (here: no such route).
    let wrong = dify_bot(&format!("{url}/nowhere"), None);
    let err = wrong.answer(&inbound(Some("五"))).await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
}

#[tokio::test]
async fn the_reset_command_starts_a_new_dify_conversation() {
    let (url, dify) = Dify::serve(echo()).await;
    let conversations = Arc::new(MemoryConversations::default());
    let config = dify_config(&url, "");
    let ports = RouterPorts {
        bots: BotPorts { conversations: Some(conversations.clone()), ..BotPorts::default() },
        counters: None,
        metrics: Arc::new(MemoryMetrics::default()),
        clock: Arc::new(SystemClock),
    };
    let router = Router::new(&config, &http_client().unwrap(), ports);
    router.answer(&inbound(Some("一"))).await.unwrap();
    router.answer(&inbound(Some("二"))).await.unwrap();
    let reset = router.answer(&inbound(Some("/new"))).await.unwrap();
    assert_eq!(text(&reset), "好的，我们重新开始吧。");
    assert_eq!(dify.requests().len(), 2, "the reset is answered without Dify");
    assert_eq!(stored(conversations.as_ref(), &inbound(None)).await, None);
    router.answer(&inbound(Some("三"))).await.unwrap();
    router.answer(&inbound(Some("四"))).await.unwrap();
    // The fake's ids sort in the order it issued them.
    let mut issued: Vec<String> = dify.issued.lock().unwrap().keys().cloned().collect();
    issued.sort();
    let [before, after] = &issued[..] else { panic!("two conversations: {issued:?}") };
    assert_eq!(dify.conversation_ids(), ["", before.as_str(), "", after.as_str()], "a new one after the reset");
    assert_eq!(stored(conversations.as_ref(), &inbound(None)).await.as_ref(), Some(after));
    assert_eq!(dify.problems(), Vec::<String>::new());
}

const PIECES: [&str; 5] = ["明天的会", "在十点，", "三楼", "会议室 ", "🦀。"];

#[tokio::test]
async fn the_streamed_answer_grows_in_front_of_the_user() {
    let script: Script = Arc::new(|_, id| {
        let mut pieces = vec![(0, PING.to_vec())];
        for piece in PIECES {
            // Each event in two writes that split a character.
            let bytes = message(id, piece);
            let at = bytes.iter().position(|b| !b.is_ascii()).unwrap() + 1;
            pieces.push((40, bytes[..at].to_vec()));
            pieces.push((10, bytes[at..].to_vec()));
        }
        pieces.push((40, message_end(id)));
        pieces
    });
    let (url, dify) = Dify::serve(script).await;
    let conversations = Arc::new(MemoryConversations::default());
    let bot = dify_bot(&url, Some(conversations.clone()));
    let snapshots = Snapshots::default();
    let replies = bot.answer_streaming(&inbound(Some("明天的会几点？")), &snapshots).await.unwrap();
    let whole = PIECES.concat();
    assert_eq!(text(&replies), whole.trim_end());
    let seen = snapshots.seen();
    assert_eq!(seen.len(), PIECES.len(), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1].starts_with(&w[0]) && w[1] != w[0]), "{seen:?}");
    assert_eq!(seen.last().unwrap(), &whole);
    assert!(stored(conversations.as_ref(), &inbound(None)).await.is_some());
    assert_eq!(dify.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn an_empty_answer_is_no_reply_but_the_conversation_is_kept() {
    let (url, _) = Dify::serve(Arc::new(|_, id| vec![(0, message(id, " \n")), (0, message_end(id))])).await;
    let conversations = Arc::new(MemoryConversations::default());
    let replies = dify_bot(&url, Some(conversations.clone())).answer(&inbound(Some("嗯"))).await.unwrap();
    assert!(replies.is_empty(), "{replies:?}");
    assert!(stored(conversations.as_ref(), &inbound(None)).await.is_some());
}

#[tokio::test]
async fn an_error_event_a_stream_cut_before_message_end_and_bad_json_are_errors() {
    let id = "45701982-8118-4bc5-8e9b-64562b4555f2";
    let error = event(json!({"event": "error", "conversation_id": id, "message_id": "m1", "status": 400,
        "code": "completion_request_error", "message": format!("[openai] invalid key {KEY}")}));
    let cases = [
        ("an error event", vec![message(id, "明天"), error], "completion_request_error"),
        ("cut before message_end", vec![message(id, "明天"), message(id, "的会")], "before message_end"),
        (
            "a data line that is not JSON",
            vec![message(id, "明天"), b"data: {\"event\": \"mess\n\n".to_vec()],
            "not a JSON",
        ),
        ("only pings", vec![PING.to_vec(), PING.to_vec()], "before message_end"),
    ];
    for (case, pieces, expected) in cases {
        let (url, _) = Dify::serve(fixed(pieces)).await;
        let conversations = Arc::new(MemoryConversations::default());
        let snapshots = Snapshots::default();
        let bot = dify_bot(&url, Some(conversations.clone()));
        let err = bot.answer_streaming(&inbound(Some("明天的会几点？")), &snapshots).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{case}: {err}");
        assert!(!err.contains(KEY), "{case}: {err}");
        assert_eq!(stored(conversations.as_ref(), &inbound(None)).await, None, "{case}: nothing kept");
    }
}

#[tokio::test]
async fn failing_statuses_name_the_status_and_difys_code_never_the_body_or_key() {
    let (url, dify) = Dify::serve(echo()).await;
    let bot = dify_bot(&url, None);
    let body = json!({"code": "provider_quota_exceeded", "message": format!("secret detail {KEY}"), "status": 400});
    *dify.failing.lock().unwrap() = Some((StatusCode::BAD_REQUEST, body));
    let err = bot.answer(&inbound(Some("x"))).await.unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("provider_quota_exceeded"), "{err}");
    assert!(!err.contains("secret detail") && !err.contains(KEY), "{err}");
    *dify.failing.lock().unwrap() = Some((StatusCode::BAD_GATEWAY, json!("<html>bad gateway</html>")));
    let err = bot.answer(&inbound(Some("x"))).await.unwrap_err().to_string();
    assert!(err.contains("502") && !err.contains("html"), "{err}");
    *dify.failing.lock().unwrap() = None;

    let wrong = build(
        "default",
        &BotConfig::Dify {
            base_url: url,
            api_key: secrecy::SecretString::from("app-wrong-key".to_owned()),
            inputs: serde_json::Map::new(),
            timeout: Duration::from_secs(5),
            reset: Default::default(),
        },
        &http_client().unwrap(),
        &BotPorts::default(),
    );
    let err = wrong.answer(&inbound(Some("x"))).await.unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("unauthorized") && !err.contains("app-wrong-key"), "{err}");
}

#[tokio::test]
async fn a_message_with_an_image_sends_its_link_as_a_remote_url_file() {
    let (url, dify) = Dify::serve(echo()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(shared::adapters::folder::FolderMediaStore::new(dir.path(), "http://127.0.0.1:1").unwrap());
    let key = format!("media/{}", "ab".repeat(32));
    store.put_bytes(&key, b"\x89PNG\r\n\x1a\n".to_vec(), "image/png").await.unwrap();
    let config = dify_config(&url, "");
    let ports = BotPorts { media: Some(store), ..BotPorts::default() };
    let bot = build("default", config.bots.default_bot(), &http_client().unwrap(), &ports);
    let presigned = format!("https://media.example.com/{key}?X-Amz-Signature=abc");
    let presigned = presigned.as_str();
    let picture = |mime: &str, expires_at: u64| Media {
        key: Some(key.clone()),
        url: Some(presigned.into()),
        url_expires_at: Some(expires_at),
        mime: Some(mime.into()),
        media_type: Some(if mime.starts_with("image/") { MediaType::Image } else { MediaType::Voice }),
        ..Media::default()
    };
    let later = 4_000_000_000;
    let with = |text: Option<&str>, media: Media| Inbound { media: Some(media), ..inbound(text) };
    let file = |url: &str| json!([{"type": "image", "transfer_method": "remote_url", "url": url}]);

    bot.answer(&with(Some("这是什么？"), picture("image/png", later))).await.unwrap();
    bot.answer(&with(None, picture("image/jpeg", later))).await.unwrap();
    let mut quoting = inbound(Some("那张图呢？"));
    quoting.quote = Some(serde_json::from_value(json!({"kind": "image"})).unwrap());
    quoting.quote.as_mut().unwrap().media = Some(picture("image/png", later));
    bot.answer(&quoting).await.unwrap();
    bot.answer(&with(Some("听听"), picture("audio/amr", later))).await.unwrap();
    bot.answer(&with(Some("旧图"), picture("image/png", 1))).await.unwrap();
    assert!(bot.answer(&with(None, picture("audio/amr", later))).await.unwrap().is_empty(), "nothing to ask");

    let requests = dify.requests();
    assert_eq!(requests.len(), 5, "no call for a message without text or an image");
    assert_eq!((&requests[0]["query"], &requests[0]["files"]), (&json!("这是什么？"), &file(presigned)));
    assert_eq!((&requests[1]["query"], &requests[1]["files"]), (&json!(""), &file(presigned)), "an image alone");
    assert_eq!(requests[2]["files"], file(presigned), "the quoted image");
    assert_eq!(requests[3]["files"], json!([]), "no audio as an image");
    let fresh = requests[4]["files"][0]["url"].as_str().unwrap();
    assert!(fresh.starts_with(&format!("http://127.0.0.1:1/{key}?expires=")), "a new link: {fresh}");
    assert_eq!(dify.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn hostile_streams_are_cut_off_not_held_in_memory() {
    // One endless line: 9 MB without a line break, in 64 KB writes.
    let endless: Script = Arc::new(|_, _| (0..144).map(|_| (0, vec![b'x'; 64 * 1024])).collect());
    // Pings forever: each event complete, the stream endless.
    let chatty: Script = Arc::new(|_, _| (0..144).map(|_| (0, PING.repeat(64 * 1024 / PING.len()))).collect());
    for script in [endless, chatty] {
        let (url, _) = Dify::serve(script).await;
        let err = dify_bot(&url, None).answer(&inbound(Some("x"))).await.unwrap_err().to_string();
        assert!(err.contains("exceeds 8 MB"), "{err}");
    }
}

#[tokio::test]
async fn a_call_has_the_configured_timeout_the_whole_stream_included() {
    let script: Script = Arc::new(|_, id| vec![(0, message(id, "明天")), (3000, message_end(id))]);
    let (url, _) = Dify::serve(script).await;
    let config = dify_config(&url, r#", "timeout_s": 1"#);
    let bot = build("default", config.bots.default_bot(), &http_client().unwrap(), &BotPorts::default());
    let snapshots = Snapshots::default();
    let started = std::time::Instant::now();
    let err = bot.answer_streaming(&inbound(Some("x")), &snapshots).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(snapshots.seen(), ["明天"]);
}

#[test]
fn the_base_url_may_end_with_difys_v1() {
    for base in ["https://api.dify.ai/v1", "https://api.dify.ai/v1/", "https://api.dify.ai"] {
        let config = dify_config(base, "");
        let BotConfig::Dify { base_url, inputs, .. } = config.bots.default_bot() else { panic!("a dify bot") };
        assert_eq!(base_url, "https://api.dify.ai", "{base}");
        assert_eq!(inputs["tone"], "brief");
    }
    assert!(Config::parse(r#"{"bots": {"default": {"kind": "dify", "base_url": "api.dify.ai", "api_key": "k"}}}"#)
        .unwrap_err()
        .to_string()
        .contains("base_url"));
}
