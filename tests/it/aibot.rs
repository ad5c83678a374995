//! The WeCom AI bot end to end on the emulator: WeCom's side (`AibotWecom`) posts encrypted
//! callbacks to the real service behind an HTTP listener; the dispatcher streams a bot's answer
//! into the message's stream item in DynamoDB; the sender answers through the stream or, once,
//! through the message's `response_url` on the fake WeChat.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use base64::Engine as _;
use fakes::aibot::{event, refresh, text_message, AibotWecom, Answer};
use fakes::{Api, FakeWechat};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use shared::adapters::aws::{DynamoDedupe, DynamoStreams, Table};
use shared::channels::aibot::service::HANDED_OVER_NOTE;
use shared::channels::aibot::{stream_key, AibotService};
use shared::channels::Config;
use shared::core::callback::CallbackRequest;
use shared::core::config::Env;
use shared::core::envelope::{Channel, Content, ConversationKind, Inbound, Kind, OutChannel, Outbound};
use shared::core::ports::{Claim, Dedupe, MediaStore as _, Record, Stream, Streams, UrlState};
use shared::services::dispatcher::{DispatchError, Dispatcher, GAVE_UP_NOTE};
use shared::services::sender::Sender;
use shared::testing::fixtures::{WECOM_AES_KEY as KEY, WECOM_TOKEN as TOKEN};

use crate::support::Stack;

const BOT: &str = "ops";
const USER: &str = "lisi";
const CHAT: &str = "wrkSFfCgAA562c8f917a985e";
const WELCOME: &str = "你好，我是 DeployBot，发“帮助”看我能做什么。";
const PLACEHOLDER: &str = "思考中…";
/// A response_url that is never called (the bridge trusts only the configured WeCom host).
const SECRET_CODE: &str = "RC7f3aSECRET0c1d";
const RESPONSE_PATH: &str = "/cgi-bin/aibot/response";

fn unreachable_response_url() -> String {
    format!("https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code={SECRET_CODE}")
}

fn config(window_s: u64, margin_s: u64, agent: &str, timeout_s: u64) -> Config {
    Config::parse(
        &json!({
            "aibots": [{"name": BOT, "token": TOKEN, "encoding_aes_key": KEY, "bot_name": "DeployBot",
                        "welcome": WELCOME, "placeholder": PLACEHOLDER}],
            "aibot_stream": {"window_s": window_s, "margin_s": margin_s},
            "bot": {"kind": "openai", "base_url": agent, "api_key": "sk-test", "model": "claw-1",
                    "timeout_s": timeout_s, "stream": true}
        })
        .to_string(),
    )
    .expect("the AI bot test config parses")
}

/// The service, the dispatcher and the sender as the Lambdas build them, on one test's table and
/// queues, with WeCom's side of the bot and the fake WeChat (the `response_url`s' host).
struct Bridge {
    stack: Stack,
    config: Config,
    env: Env,
    /// `http://127.0.0.1:PORT/aibot/`
    route: String,
    streams: DynamoStreams,
    leases: DynamoDedupe,
    wecom: AibotWecom,
    fake: FakeWechat,
}

/// Passes the request to the service as API Gateway's glue does, and its answer back.
async fn callback(
    State(service): State<Arc<AibotService>>,
    method: Method,
    Path(bot): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let request = CallbackRequest {
        method: method.as_str(),
        app: &bot,
        raw_query: query.as_deref().unwrap_or_default(),
        body: &body,
    };
    let answer = service.handle(request).await;
    let status = StatusCode::from_u16(answer.status).expect("a valid status");
    (status, [(header::CONTENT_TYPE, answer.content_type)], answer.body).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

impl Bridge {
    async fn start(window_s: u64, margin_s: u64, agent: &str, timeout_s: u64) -> Self {
        let stack = Stack::new().await;
        let fake = FakeWechat::start().await;
        let config = config(window_s, margin_s, agent, timeout_s);
        let env = Env::from_vars([
            ("WXBRIDGE_TABLE", stack.names.table.clone()),
            ("WXBRIDGE_INBOUND_QUEUE_URL", stack.urls.inbound.clone()),
            ("WXBRIDGE_INBOUND_DLQ_URL", stack.urls.inbound_dlq.clone()),
            ("WXBRIDGE_OUTBOUND_QUEUE_URL", stack.urls.outbound.clone()),
            ("WXBRIDGE_DLQ_URL", stack.urls.outbound_dlq.clone()),
            ("WXBRIDGE_WECOM_API_BASE", fake.base_url.clone()),
            ("WXBRIDGE_MEDIA_BUCKET", stack.names.bucket.clone()),
            ("AWS_ENDPOINT_URL", crate::support::endpoint()),
        ]);
        let service = Arc::new(wecom_aibot::build(&config, &env, &stack.sdk).expect("the AI bot service builds"));
        let base = serve(Router::new().route("/aibot/{bot}", any(callback)).with_state(service)).await;
        let route = format!("{base}/aibot/");
        let table = Table::from_sdk(&stack.sdk, stack.names.table.clone());
        let wecom = AibotWecom::new(&format!("{route}{BOT}"), TOKEN, KEY)
            .refresh_every(Duration::from_millis(300))
            .window(Duration::from_secs(window_s));
        Self {
            streams: DynamoStreams::new(&table),
            leases: DynamoDedupe::new(&table),
            stack,
            config,
            env,
            route,
            wecom,
            fake,
        }
    }

    fn dispatcher(&self) -> Dispatcher {
        dispatcher::build(&self.config, &self.env, &self.stack.sdk).expect("the dispatcher builds")
    }

    fn sender(&self) -> Sender {
        sender::build(self.config.clone(), &self.env, &self.stack.sdk).expect("the sender builds")
    }

    /// The stream item of message `msgid`, read through the port.
    async fn stream(&self, msgid: &str) -> Option<Stream> {
        self.streams.read(&stream_key(BOT, &inbound_id(msgid)).0).await.expect("read the stream")
    }

    /// Receives (and deletes) messages from `queue_url` until `want` arrived or `within` passed.
    async fn take(&self, queue_url: &str, want: usize, within: Duration) -> Vec<Message> {
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        while all.len() < want && Instant::now() < deadline {
            let batch = self
                .stack
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .send()
                .await
                .expect("receive from the emulator");
            for message in batch.messages() {
                let receipt = message.receipt_handle().unwrap();
                self.stack.sqs.delete_message().queue_url(queue_url).receipt_handle(receipt).send().await.unwrap();
                all.push(message.clone());
            }
        }
        all
    }

    /// Everything on `queue_url` within a short wait.
    async fn rest(&self, queue_url: &str) -> Vec<Message> {
        self.take(queue_url, usize::MAX, Duration::from_millis(1500)).await
    }

    /// The one Inbound the last callback queued.
    async fn one_inbound(&self) -> Message {
        let mut got = self.take(&self.stack.urls.inbound, 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "one Inbound on the inbound queue");
        got.remove(0)
    }

    /// POSTs a refresh of `stream_id` as WeCom does.
    async fn refresh(&self, stream_id: &str) -> Answer {
        let msgid = format!("refresh-{}", &shared::core::ports::claim_token()[..12]);
        self.wecom.post(&refresh(&msgid, stream_id, None, USER)).await.expect("a refresh is answered")
    }
}

fn inbound_id(msgid: &str) -> String {
    format!("wecom_aibot:{BOT}:{msgid}")
}

fn record(message: &Message, receive_count: u32) -> Record {
    Record {
        message_id: message.message_id().unwrap().to_owned(),
        receipt_handle: message.receipt_handle().unwrap().to_owned(),
        body: message.body().unwrap().to_owned(),
        receive_count,
        group: message
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
            .cloned(),
    }
}

fn outbound_record(body: &Value, receive_count: u32) -> Record {
    Record {
        message_id: format!("out-{}", body["idempotency_key"].as_str().unwrap_or("none")),
        receipt_handle: "not-a-receipt".into(),
        body: body.to_string(),
        receive_count,
        group: None,
    }
}

fn attribute(message: &Message, name: &str) -> String {
    message.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).unwrap_or_default().to_owned()
}

fn parse_inbound(message: &Message) -> Inbound {
    serde_json::from_str(message.body().unwrap()).expect("an Inbound")
}

/// A user message of `msgtype` with its object (`chat`: a group's chatid).
fn message_of(msgid: &str, chat: Option<&str>, msgtype: &str, object: Value) -> Value {
    let mut message = text_message(msgid, chat, USER, "", &unreachable_response_url());
    let fields = message.as_object_mut().unwrap();
    fields.remove("text");
    fields.insert("msgtype".into(), json!(msgtype));
    fields.insert(msgtype.into(), object);
    message
}

fn stream_of(answer: &Answer) -> (&str, bool, &str) {
    match answer {
        Answer::Stream { id, finish, content, .. } => (id, *finish, content),
        other => panic!("expected a stream answer, got {other:?}"),
    }
}

async fn until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- an OpenAI-compatible agent streaming server-sent events ----

/// An agent endpoint: streams `script` (pauses in ms, then an event) and counts its calls.
struct Agent {
    calls: AtomicUsize,
    prompts: Mutex<Vec<String>>,
    script: Vec<(u64, String)>,
}

impl Agent {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn agent(script: Vec<(u64, String)>) -> (String, Arc<Agent>) {
    let agent = Arc::new(Agent { calls: AtomicUsize::new(0), prompts: Mutex::default(), script });
    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(agent): State<Arc<Agent>>, headers: HeaderMap, body: String| async move {
                agent.calls.fetch_add(1, Ordering::SeqCst);
                let request: Value = serde_json::from_str(&body).unwrap_or_default();
                agent.prompts.lock().unwrap().push(request["messages"][0]["content"].as_str().unwrap_or("").to_owned());
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test")
                    || request["stream"] != true
                {
                    return (StatusCode::BAD_REQUEST, "expected a stream with the key sk-test").into_response();
                }
                let events = futures_util::stream::iter(agent.script.clone()).then(|(pause_ms, event)| async move {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    Ok::<_, std::convert::Infallible>(event)
                });
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(Body::from_stream(events))
                    .unwrap()
            }),
        )
        .with_state(agent.clone());
    (serve(router).await, agent)
}

/// One `chat.completion.chunk` event.
fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let chunk = json!({"id": "chatcmpl_1", "object": "chat.completion.chunk", "created": 1763700000, "model": "claw-1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
    format!("data: {chunk}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

/// The answer `text` at once after `delay_ms`.
fn answer_after(delay_ms: u64, text: &str) -> Vec<(u64, String)> {
    vec![
        (0, chunk(json!({"role": "assistant"}), None)),
        (delay_ms, chunk(json!({"content": text}), Some("stop"))),
        (0, DONE.to_owned()),
    ]
}

/// No agent is called in this test.
const NO_AGENT: &str = "http://127.0.0.1:9";

// ---- 1. URL verification ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_verification_answers_exactly_the_echostr_and_a_wrong_signature_is_401() {
    let bridge = Bridge::start(6, 2, NO_AGENT, 30).await;
    bridge.wecom.verify_url().await.expect("the console's URL check passes");

    let crypt = bridge.wecom.crypt();
    let echostr = crypt.encrypt(*b"0123456789abcdef", "8174610232749216350", "");
    let timestamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs().to_string();
    let signature = crypt.signature(&timestamp, "1372623149", &echostr);
    let encoded = base64_query(&echostr);
    let http = reqwest::Client::new();
    let get = |signature: String| {
        let url = format!(
            "{}{BOT}?msg_signature={signature}&timestamp={timestamp}&nonce=1372623149&echostr={encoded}",
            bridge.route
        );
        http.get(url).send()
    };
    let right = get(signature.clone()).await.unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(right.text().await.unwrap(), "8174610232749216350");
    // The right signature with its last hex digit changed (whatever the digit was).
    let last = if signature.ends_with('0') { '1' } else { '0' };
    let wrong = get(format!("{}{last}", &signature[..39])).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let body = wrong.text().await.unwrap();
    assert!(!body.is_empty() && !body.contains("8174610232749216350") && !body.contains(TOKEN), "{body}");
    assert!(bridge.wecom.problems().is_empty(), "{:#?}", bridge.wecom.problems());
}

/// Percent-encodes base64's `+`, `/` and `=`.
fn base64_query(value: &str) -> String {
    value.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

// ---- 2. every message and event type ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_and_event_type_is_answered_and_queued_as_its_inbound() {
    let bridge = Bridge::start(60, 10, NO_AGENT, 30).await;
    let wecom = &bridge.wecom;
    let image_url = "https://ww-aibot-img-1258476243.cos.ap-guangzhou.myqcloud.com/BHnnIy2k?sign=x";
    let mut card = event(
        "m-card",
        "template_card_event",
        USER,
        json!({"card_type": "button_interaction",
        "event_key": "approve", "task_id": "deploy-41"}),
    );
    card["response_url"] = json!(unreachable_response_url());
    let messages: Vec<(&str, Value)> = vec![
        ("m-text", text_message("m-text", None, USER, "api 现在什么版本？", &unreachable_response_url())),
        ("m-group", text_message("m-group", Some(CHAT), USER, "@DeployBot 回滚 api", &unreachable_response_url())),
        (
            "m-mixed",
            message_of(
                "m-mixed",
                None,
                "mixed",
                json!({"msg_item": [
                {"msgtype": "text", "text": {"content": "这个报错"}},
                {"msgtype": "image", "image": {"url": image_url}}]}),
            ),
        ),
        ("m-image", message_of("m-image", None, "image", json!({ "url": image_url }))),
        ("m-voice", message_of("m-voice", None, "voice", json!({"content": "帮我查一下发布状态"}))),
        ("m-file", message_of("m-file", None, "file", json!({"url": "https://ww-aibot-file.example/f1"}))),
        ("m-video", message_of("m-video", None, "video", json!({"url": "https://ww-aibot-file.example/v1"}))),
        ("m-quote", {
            let mut m = text_message("m-quote", Some(CHAT), USER, "@DeployBot", &unreachable_response_url());
            m["quote"] = json!({"msgtype": "text", "text": {"content": "api 5xx 升高"}});
            m
        }),
        ("m-unknown", message_of("m-unknown", None, "markdown", json!({"content": "**hi**"}))),
    ];
    let mut stream_ids = Vec::new();
    for (msgid, message) in &messages {
        let answer = wecom.post(message).await.unwrap_or_else(|e| panic!("{msgid}: {e}"));
        let (id, finish, content) = stream_of(&answer);
        assert_eq!((finish, content), (false, PLACEHOLDER), "{msgid}: the stream starts with the placeholder");
        assert_eq!(id, stream_key(BOT, &inbound_id(msgid)).1, "{msgid}: the stream id is derived from the message");
        stream_ids.push(id.to_owned());
        let stream = bridge.stream(msgid).await.unwrap_or_else(|| panic!("{msgid}: its stream item exists"));
        assert_eq!((stream.finished, stream.content.as_str()), (false, ""), "{msgid}");
        assert_eq!(stream.url, UrlState::Unused, "{msgid}: the response_url is kept in the stream item");
    }
    let distinct: std::collections::HashSet<&String> = stream_ids.iter().collect();
    assert_eq!(distinct.len(), messages.len(), "one stream per message");

    // Events: the welcome; feedback and card clicks go to the bot with an empty answer.
    let enter = event("m-enter", "enter_chat", USER, Value::Null);
    assert_eq!(wecom.post(&enter).await.unwrap(), Answer::Text { content: WELCOME.into() });
    let feedback = event("m-feedback", "feedback_event", USER, json!({"id": "fb-7f3a", "type": 1}));
    assert_eq!(wecom.post(&feedback).await.unwrap(), Answer::Empty);
    assert_eq!(wecom.post(&card).await.unwrap(), Answer::Empty);
    let card_stream = bridge.stream("m-card").await.expect("a card click keeps its response_url");
    assert_eq!((card_stream.finished, card_stream.url), (true, UrlState::Unused));

    let queued = bridge.take(&bridge.stack.urls.inbound, messages.len() + 2, Duration::from_secs(8)).await;
    let queued = [queued, bridge.rest(&bridge.stack.urls.inbound).await].concat();
    assert_eq!(queued.len(), messages.len() + 2, "every message and two events, nothing for enter_chat");
    for message in &queued {
        let body = message.body().unwrap();
        assert!(!body.contains("response_url") && !body.contains(SECRET_CODE), "a response_url was queued: {body}");
        assert_eq!(attribute(message, "channel"), "wecom_aibot");
    }
    let by_msgid = |msgid: &str| -> Inbound {
        let id = inbound_id(msgid);
        queued.iter().map(parse_inbound).find(|i| i.id == id).unwrap_or_else(|| panic!("{msgid} was not queued"))
    };

    let text = by_msgid("m-text");
    assert_eq!(
        (text.channel, text.kind, text.text.as_deref()),
        (Channel::WecomAibot, Kind::Text, Some("api 现在什么版本？"))
    );
    assert_eq!(
        (text.conversation.kind, text.conversation.id.as_str(), text.account.as_str()),
        (ConversationKind::Direct, USER, BOT)
    );
    let group = by_msgid("m-group");
    assert_eq!((group.channel, group.kind), (Channel::WecomAibot, Kind::Text));
    assert_eq!((group.conversation.kind, group.conversation.id.as_str()), (ConversationKind::Group, CHAT));
    assert_eq!(
        (group.text.as_deref(), group.mentioned, group.sender.id.as_str()),
        (Some("回滚 api"), Some(true), USER)
    );
    let mixed = by_msgid("m-mixed");
    assert_eq!((mixed.kind, mixed.text.as_deref()), (Kind::Text, Some("这个报错")));
    assert_eq!(mixed.media.and_then(|m| m.url).as_deref(), Some(image_url));
    let image = by_msgid("m-image");
    assert_eq!((image.kind, image.media.and_then(|m| m.url).as_deref()), (Kind::Image, Some(image_url)));
    let voice = by_msgid("m-voice");
    assert_eq!((voice.kind, voice.text.as_deref()), (Kind::Voice, Some("帮我查一下发布状态")));
    let file = by_msgid("m-file");
    assert_eq!(
        (file.kind, file.media.and_then(|m| m.url).as_deref()),
        (Kind::File, Some("https://ww-aibot-file.example/f1"))
    );
    let video = by_msgid("m-video");
    assert_eq!(
        (video.kind, video.media.and_then(|m| m.url).as_deref()),
        (Kind::Video, Some("https://ww-aibot-file.example/v1"))
    );
    let quote = by_msgid("m-quote");
    assert_eq!((quote.kind, quote.text.as_deref(), quote.mentioned), (Kind::Text, Some("api 5xx 升高"), Some(true)));
    assert_eq!(quote.quote.and_then(|q| q.text).as_deref(), Some("api 5xx 升高"));
    assert_eq!(by_msgid("m-unknown").kind, Kind::Unsupported);
    let feedback = by_msgid("m-feedback");
    assert_eq!(feedback.kind, Kind::Event);
    assert_eq!(feedback.event.map(|e| (e.name, e.key)), Some(("feedback_event".into(), Some("1".into()))));
    let card = by_msgid("m-card");
    assert_eq!(card.event.map(|e| (e.name, e.key)), Some(("template_card_event".into(), Some("approve".into()))));
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_before_the_bots_first_words_still_shows_the_placeholder() {
    // `placeholder`: "the stream's content until the bot's first words" (config.rs). The first
    // answer shows it; a refresh that blanks it would make the bubble flicker to empty.
    let bridge = Bridge::start(60, 10, NO_AGENT, 30).await;
    let first = bridge.wecom.post(&text_message("m-wait", None, USER, "发布状态？", &unreachable_response_url())).await;
    let first = first.unwrap();
    let (id, _, content) = stream_of(&first);
    assert_eq!(content, PLACEHOLDER);
    let refreshed = bridge.refresh(id).await;
    assert_eq!(stream_of(&refreshed), (id, false, PLACEHOLDER), "the refresh shows the placeholder too");
}

// ---- 3. refusals ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_callbacks_are_4xx_with_a_reason_queue_nothing_and_leak_no_secret_or_text() {
    let bridge = Bridge::start(6, 2, NO_AGENT, 30).await;
    let wecom = &bridge.wecom;
    let words = "机密回滚计划";
    let plaintext = text_message("m-bad", None, USER, words, &unreachable_response_url()).to_string();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let sign = |encrypt: &str, timestamp: u64| wecom.crypt().signature(&timestamp.to_string(), "4079021546", encrypt);
    let query_of =
        |signature: &str, timestamp: u64| format!("msg_signature={signature}&timestamp={timestamp}&nonce=4079021546");
    let sealed = |encrypt: &str, timestamp: u64| {
        (query_of(&sign(encrypt, timestamp), timestamp), json!({ "encrypt": encrypt }).to_string())
    };
    let good = wecom.crypt().encrypt(*b"fedcba9876543210", &plaintext, "");

    // CBC: flipping the last byte of the next-to-last cipher block flips the last padding byte.
    let mut bytes = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
    let pad = 32 - (20 + plaintext.len()) % 32;
    let at = bytes.len() - 17;
    bytes[at] ^= pad as u8;
    let bad_padding = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let truncated = &good[..good.len() - 4];

    let mut cases: Vec<(&str, (String, String), u16)> = vec![
        ("a non-empty receive id", wecom.seal(&plaintext, "wwcorp"), 400),
        ("bad PKCS#7 padding", sealed(&bad_padding, now), 400),
        ("a truncated ciphertext", sealed(truncated, now), 400),
        ("a stale timestamp", sealed(&good, now - 3600), 403),
        ("a plaintext that is not JSON", wecom.seal(&format!("{{\"msgid\": \"{words}"), ""), 400),
        ("a body over 256 KB", (sealed(&good, now).0, format!("{{\"encrypt\": \"{}\"}}", "A".repeat(256 * 1024))), 413),
    ];
    let (query, body) = sealed(&good, now);
    // A signature, but over another ciphertext.
    let forged = query_of(&sign(&bad_padding, now), now);
    cases.push(("a bad signature", (forged, body.clone()), 401));
    let xml = "<xml><ToUserName><![CDATA[ww5f2d8c1a9e3b7046]]></ToUserName><Encrypt><![CDATA[x]]></Encrypt></xml>";
    cases.push(("an XML body", (query.clone(), xml.to_owned()), 400));

    for (case, (query, body), status) in &cases {
        let (got, answer) = wecom.post_raw(query, body).await;
        assert_eq!(got, *status, "{case}: {answer}");
        assert!(!answer.trim().is_empty(), "{case}: a refusal says why");
        for secret in [TOKEN, KEY, words, SECRET_CODE] {
            assert!(!answer.contains(secret), "{case}: the answer {answer:?} shows {secret:?}");
        }
        if *case == "an XML body" {
            assert!(answer.contains("API mode"), "the XML refusal points at API mode: {answer}");
        }
    }
    // An unknown bot.
    let unknown = AibotWecom::new(&format!("{}nobody", bridge.route), TOKEN, KEY);
    let (query, body) = unknown.seal(&plaintext, "");
    let (status, answer) = unknown.post_raw(&query, &body).await;
    assert_eq!(status, 404, "{answer}");
    assert!(!answer.trim().is_empty() && !answer.contains(words) && !answer.contains(TOKEN));

    assert!(bridge.rest(&bridge.stack.urls.inbound).await.is_empty(), "nothing refused was queued");
    assert!(bridge.stream("m-bad").await.is_none(), "no stream was opened for a refused callback");
}

// ---- 4. WeCom's retries ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_deliveries_of_one_message_queue_one_inbound_and_answer_one_stream_id() {
    let bridge = Bridge::start(60, 10, NO_AGENT, 30).await;
    let message = text_message("m-retried", Some(CHAT), USER, "@DeployBot 发布状态", &unreachable_response_url());
    let (first, second) = tokio::join!(bridge.wecom.post(&message), bridge.wecom.post(&message));
    let third = bridge.wecom.post(&message).await;
    let fourth = bridge.wecom.post(&message).await;
    let answers: Vec<Answer> = [first, second, third, fourth]
        .into_iter()
        .enumerate()
        .map(|(i, answer)| answer.unwrap_or_else(|e| panic!("delivery {}: {e}", i + 1)))
        .collect();
    let expected = stream_key(BOT, &inbound_id("m-retried")).1;
    for answer in &answers {
        assert_eq!(stream_of(answer), (expected.as_str(), false, PLACEHOLDER));
    }
    let queued = bridge.take(&bridge.stack.urls.inbound, 2, Duration::from_secs(3)).await;
    assert_eq!(queued.len(), 1, "one Inbound for four deliveries");
    assert_eq!(parse_inbound(&queued[0]).id, inbound_id("m-retried"));
    assert!(bridge.wecom.problems().is_empty(), "{:#?}", bridge.wecom.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_delivery_died_between_opening_the_stream_and_publishing_queues_the_message() {
    let bridge = Bridge::start(60, 10, NO_AGENT, 30).await;
    let message = text_message("m-died", Some(CHAT), USER, "@DeployBot 还在吗", &unreachable_response_url());
    // The first delivery opened the message's stream, then died before publishing (WeCom got
    // no answer and retries).
    let (key, expected) = stream_key(BOT, &inbound_id("m-died"));
    let now = SystemTime::now();
    assert!(bridge.streams.open(&key, now, None, now + Duration::from_secs(3600)).await.unwrap());
    let answer = bridge.wecom.post(&message).await.expect("the retry is answered");
    assert_eq!(stream_of(&answer), (expected.as_str(), false, PLACEHOLDER), "the same stream");
    let queued = bridge.take(&bridge.stack.urls.inbound, 2, Duration::from_secs(3)).await;
    assert_eq!(queued.len(), 1, "the retry queued the message the first delivery did not");
    assert_eq!(parse_inbound(&queued[0]).id, inbound_id("m-died"));
}

// ---- 5. streaming end to end ----

const PIECES: [&str; 6] =
    ["部署已开始，", "镜像已拉取，", "新版本已就绪，", "滚动更新中，", "健康检查通过，", "api 已回滚到 v41。"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_answer_grows_in_front_of_the_user_and_finishes_whole() {
    let mut script = vec![(0, chunk(json!({"role": "assistant"}), None))];
    script.extend(PIECES.iter().map(|piece| (500, chunk(json!({ "content": piece }), None))));
    script.push((0, chunk(json!({}), Some("stop"))));
    script.push((0, DONE.to_owned()));
    let (url, agent) = agent(script).await;
    let bridge = Bridge::start(8, 2, &url, 30).await;
    let dispatcher = bridge.dispatcher();
    let message = text_message("m-stream", None, USER, "把 api 回滚到上一版", &bridge.fake.aibot_response_url());
    let dispatch = async {
        let inbound = bridge.one_inbound().await;
        dispatcher.dispatch(inbound.body().unwrap()).await
    };
    let (talk, dispatched) = tokio::join!(bridge.wecom.converse(&message), dispatch);
    let talk = talk.expect("WeCom's side accepted every answer");
    assert_eq!(dispatched.expect("dispatched"), 1);
    let whole = PIECES.concat();
    assert!(talk.finished, "{talk:#?}");
    assert_eq!(talk.final_text(), Some(whole.as_str()));
    let growing: Vec<String> = talk.snapshots().into_iter().filter(|s| !s.is_empty() && s != PLACEHOLDER).collect();
    assert!(growing.len() >= 3, "the answer grew in front of the user: {growing:?}");
    assert!(growing.windows(2).all(|w| w[1].starts_with(&w[0]) && w[1] != w[0]), "{growing:?}");
    assert_eq!(agent.calls(), 1);
    assert_eq!(agent.prompts.lock().unwrap().clone(), ["把 api 回滚到上一版"]);
    let stream = bridge.stream("m-stream").await.unwrap();
    assert_eq!((stream.finished, stream.handed_over, stream.content.as_str()), (true, false, whole.as_str()));
    assert_eq!(stream.url, UrlState::Unused, "the response_url was not needed");
    assert!(bridge.rest(&bridge.stack.urls.outbound).await.is_empty(), "nothing went to the outbound queue");
    assert_eq!(bridge.fake.calls(RESPONSE_PATH), 0);
    assert!(bridge.wecom.problems().is_empty(), "{:#?}", bridge.wecom.problems());
}

// ---- 6. slower than the window ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_slower_than_the_window_is_handed_over_and_sent_once_through_the_response_url() {
    let whole = "回滚完成：api 已回到 v41，错误率恢复到 0.1%。";
    let script = vec![
        (0, chunk(json!({"role": "assistant"}), None)),
        (800, chunk(json!({"content": "回滚完成："}), None)),
        (2200, chunk(json!({"content": "api 已回到 v41，错误率恢复到 0.1%。"}), Some("stop"))),
        (0, DONE.to_owned()),
    ];
    let (url, agent) = agent(script).await;
    let bridge = Bridge::start(4, 2, &url, 30).await;
    let dispatcher = bridge.dispatcher();
    let response_url = bridge.fake.aibot_response_url();
    let message = text_message("m-slow", Some(CHAT), USER, "@DeployBot 回滚 api", &response_url);
    let dispatch = async {
        let inbound = bridge.one_inbound().await;
        dispatcher.dispatch(inbound.body().unwrap()).await
    };
    let (talk, dispatched) = tokio::join!(bridge.wecom.converse(&message), dispatch);
    let talk = talk.expect("WeCom's side accepted every answer");
    assert_eq!(dispatched.expect("dispatched"), 1);
    assert_eq!(agent.calls(), 1);
    let shown = talk.final_text().expect("the bridge finished the stream at the end of the window");
    let before_note = shown.strip_suffix(HANDED_OVER_NOTE).unwrap_or_else(|| panic!("no hand-over note: {shown:?}"));
    assert!(whole.starts_with(before_note), "{shown:?}");
    let stream = bridge.stream("m-slow").await.unwrap();
    assert!(stream.finished && stream.handed_over, "{stream:?}");

    let queued = bridge.take(&bridge.stack.urls.outbound, 2, Duration::from_secs(3)).await;
    assert_eq!(queued.len(), 1, "one Outbound for the rest of the answer");
    let out = Outbound::parse(queued[0].body().unwrap()).unwrap();
    assert_eq!(out.channel, OutChannel::WecomAibot);
    assert_eq!(out.in_reply_to.as_deref(), Some(inbound_id("m-slow").as_str()));
    assert_eq!(out.content, Content::Markdown { text: whole.into() });
    assert!(!queued[0].body().unwrap().contains("response_code"), "the response_url stays in DynamoDB");

    let sender = bridge.sender();
    assert!(sender.handle(&record(&queued[0], 1)).await);
    let posts = bridge.fake.deliveries_of(Api::AibotResponse);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].body, json!({"msgtype": "markdown", "markdown": {"content": whole}}));
    assert!(response_url.ends_with(&posts[0].account), "the message's own response_url");
    assert_eq!(bridge.stream("m-slow").await.unwrap().url, UrlState::Used);
    // SQS delivers the same Outbound again: nothing more is sent.
    assert!(sender.handle(&record(&queued[0], 2)).await);
    assert_eq!(bridge.fake.deliveries_of(Api::AibotResponse).len(), 1);
    assert_eq!(bridge.fake.aibot_response_refusals(), 0);
    assert!(bridge.rest(&bridge.stack.urls.outbound_dlq).await.is_empty());
    // The finished stream stays as it was shown.
    assert_eq!(stream_of(&bridge.refresh(&talk.stream_id).await), (talk.stream_id.as_str(), true, shown));
    assert!(bridge.fake.problems().is_empty(), "{:#?}", bridge.fake.problems());
    assert!(bridge.wecom.problems().is_empty(), "{:#?}", bridge.wecom.problems());
}

// ---- 7. response_url: once, and within its hour ----

fn aibot_outbound(key: &str, msgid: &str, text: &str) -> Value {
    json!({"v": 1, "channel": "wecom_aibot", "account": BOT, "to": USER,
           "content": {"type": "markdown", "text": text}, "idempotency_key": key, "in_reply_to": inbound_id(msgid)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_used_or_expired_response_url_is_a_permanent_failure_without_a_post() {
    let bridge = Bridge::start(2, 1, NO_AGENT, 30).await;
    let sender = bridge.sender();
    let used_url = bridge.fake.aibot_response_url();
    bridge.fake.set_aibot_response_ttl(Duration::from_millis(1));
    let short_lived_url = bridge.fake.aibot_response_url();
    let mut streams = Vec::new();
    for (msgid, url) in [("m-used", &used_url), ("m-fake-expired", &short_lived_url)] {
        let answer = bridge.wecom.post(&text_message(msgid, None, USER, "状态？", url)).await.unwrap();
        streams.push(stream_of(&answer).0.to_owned());
    }
    // The window (1 s before its end) passes: the next refreshes hand the streams over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for id in &streams {
        let refreshed = bridge.refresh(id).await;
        let (_, finish, content) = stream_of(&refreshed);
        assert!(finish && content.ends_with(HANDED_OVER_NOTE.trim_start()), "{content:?}");
    }

    // The first answer takes the URL; a second one finds it used.
    assert!(sender.handle(&outbound_record(&aibot_outbound("k-first", "m-used", "第一次回答"), 1)).await);
    assert_eq!(bridge.fake.deliveries_of(Api::AibotResponse).len(), 1);
    assert!(sender.handle(&outbound_record(&aibot_outbound("k-second", "m-used", "第二次回答"), 1)).await);
    let letters = bridge.take(&bridge.stack.urls.outbound_dlq, 1, Duration::from_secs(3)).await;
    assert_eq!(letters.len(), 1, "the second answer is dead-lettered");
    let reason = attribute(&letters[0], "reason");
    assert!(reason.contains("response_url") && reason.contains("used"), "{reason}");
    assert_eq!(bridge.fake.calls(RESPONSE_PATH), 1, "no second POST");
    assert_eq!(bridge.fake.aibot_response_refusals(), 0);

    // Expired by the bridge's own clock (the stream's url_expires passed): not even tried.
    let msgid = "m-expired";
    let key = stream_key(BOT, &inbound_id(msgid)).0;
    let opened = SystemTime::now() - Duration::from_secs(3600);
    let expired_url = bridge.fake.aibot_response_url();
    bridge.streams.open(&key, opened, Some(&expired_url), SystemTime::now() - Duration::from_secs(1)).await.unwrap();
    assert!(bridge.streams.hand_over(&key, HANDED_OVER_NOTE).await.unwrap());
    assert!(sender.handle(&outbound_record(&aibot_outbound("k-expired", msgid, "太晚的回答"), 1)).await);
    let letters = bridge.take(&bridge.stack.urls.outbound_dlq, 1, Duration::from_secs(3)).await;
    assert_eq!(letters.len(), 1);
    let reason = attribute(&letters[0], "reason");
    assert!(reason.contains("response_url") && reason.contains("expired"), "{reason}");
    assert_eq!(bridge.fake.calls(RESPONSE_PATH), 1, "an expired response_url is not POSTed");

    // Expired by WeCom's clock: WeCom refuses the one try; it is not retried.
    assert!(sender.handle(&outbound_record(&aibot_outbound("k-late", "m-fake-expired", "过期的回答"), 1)).await);
    let letters = bridge.take(&bridge.stack.urls.outbound_dlq, 1, Duration::from_secs(3)).await;
    assert_eq!(letters.len(), 1);
    assert!(attribute(&letters[0], "reason").contains("response_url"), "{}", attribute(&letters[0], "reason"));
    assert_eq!(bridge.fake.deliveries_of(Api::AibotResponse).len(), 1);
    assert_eq!(bridge.stream("m-fake-expired").await.unwrap().url, UrlState::Used, "never tried again");
    assert!(bridge.rest(&bridge.stack.urls.outbound_dlq).await.is_empty());
}

// ---- 8. one agent call per message ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_agent_is_called_once_although_sqs_redelivers_and_again_after_its_lease_ran_out() {
    let (url, agent) = agent(answer_after(3000, "api 运行正常。")).await;
    let bridge = Bridge::start(60, 10, &url, 10).await;
    let dispatcher = bridge.dispatcher();
    bridge.wecom.post(&text_message("m-agent", None, USER, "api 状态？", &unreachable_response_url())).await.unwrap();
    let inbound = bridge.one_inbound().await;
    let body = inbound.body().unwrap();

    let first = dispatcher.dispatch(body);
    let redelivered = async {
        until("the agent's first call", Duration::from_secs(5), || agent.calls() == 1).await;
        let redelivery = [record(&inbound, 2)];
        let deadline = SystemTime::now() + Duration::from_secs(60);
        let handed_back = dispatcher.handle_batch_until(&redelivery, Some(deadline)).await;
        (handed_back, dispatcher.dispatch(body).await)
    };
    let (first, (handed_back, busy)) = tokio::join!(first, redelivered);
    assert_eq!(first.expect("the first delivery answers"), 1);
    assert_eq!(handed_back, [inbound.message_id().unwrap().to_owned()], "the redelivery is handed back");
    match busy {
        Err(DispatchError::Busy { until_ms }) => {
            assert!(until_ms > shared::core::ports::unix_millis(SystemTime::now()), "the lease runs on");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(agent.calls(), 1, "the agent was started once");
    let stream = bridge.stream("m-agent").await.unwrap();
    assert_eq!((stream.finished, stream.content.as_str()), (true, "api 运行正常。"));
    // Once the call is done, another delivery is acknowledged without calling the agent.
    assert_eq!(dispatcher.dispatch(body).await.expect("acknowledged"), 0);
    assert_eq!(agent.calls(), 1);

    // A dispatcher died holding the lease of another message's call: after the lease, the call
    // is made again.
    bridge.wecom.post(&text_message("m-orphan", None, USER, "db 状态？", &unreachable_response_url())).await.unwrap();
    let orphan = bridge.one_inbound().await;
    let claimed = bridge
        .leases
        .claim(&format!("call:{}", inbound_id("m-orphan")), SystemTime::now(), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(matches!(claimed, Claim::Claimed { .. }), "{claimed:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dispatcher.dispatch(orphan.body().unwrap()).await.expect("called again"), 1);
    assert_eq!(agent.calls(), 2);
    assert_eq!(bridge.stream("m-orphan").await.unwrap().content, "api 运行正常。");
}

// ---- 9. OpenClaw's in-stream failure ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openclaws_in_stream_error_is_retried_and_never_shown() {
    let script = vec![
        (0, chunk(json!({"role": "assistant"}), None)),
        (100, chunk(json!({"content": "Error: internal error"}), Some("stop"))),
        (0, DONE.to_owned()),
    ];
    let (url, agent) = agent(script).await;
    let bridge = Bridge::start(60, 10, &url, 10).await;
    let dispatcher = bridge.dispatcher();
    let first = bridge.wecom.post(&text_message("m-fail", None, USER, "api 状态？", &unreachable_response_url())).await;
    let stream_id = stream_of(&first.unwrap()).0.to_owned();
    let inbound = bridge.one_inbound().await;

    // WeCom keeps refreshing while the dispatcher runs.
    let done = std::sync::atomic::AtomicBool::new(false);
    let watch = async {
        let mut seen = Vec::new();
        while !done.load(Ordering::SeqCst) {
            seen.push(stream_of(&bridge.refresh(&stream_id).await).2.to_owned());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    let run = async {
        let failed = dispatcher.handle_batch(&[record(&inbound, 1)]).await;
        done.store(true, Ordering::SeqCst);
        failed
    };
    let (seen, failed) = tokio::join!(watch, run);
    assert_eq!(failed, [inbound.message_id().unwrap().to_owned()], "the failure is retried by SQS");
    assert!(seen.iter().all(|content| !content.contains("Error")), "{seen:?}");
    let refreshed = bridge.refresh(&stream_id).await;
    let (_, finish, content) = stream_of(&refreshed);
    assert!(!finish && !content.contains("Error"), "the stream waits for the retry: {content:?}");
    let stream = bridge.stream("m-fail").await.unwrap();
    assert!(!stream.finished && !stream.content.contains("Error"), "{stream:?}");

    // The retry calls the agent again at once (the lease was released) …
    assert_eq!(dispatcher.handle_batch(&[record(&inbound, 2)]).await.len(), 1);
    assert_eq!(agent.calls(), 2);
    // … and on the last receive the stream is finished with an apology, never the error.
    assert!(dispatcher.handle_batch(&[record(&inbound, 5)]).await.is_empty(), "dead-lettered");
    let refreshed = bridge.refresh(&stream_id).await;
    let (_, finish, content) = stream_of(&refreshed);
    assert!(finish && content.ends_with(GAVE_UP_NOTE) && !content.contains("Error"), "{content:?}");
    let letters = bridge.take(&bridge.stack.urls.inbound_dlq, 1, Duration::from_secs(3)).await;
    assert_eq!(letters.len(), 1);
    assert!(!attribute(&letters[0], "reason").contains("internal error"), "{}", attribute(&letters[0], "reason"));
    assert!(bridge.rest(&bridge.stack.urls.outbound).await.is_empty());
}

// ---- 10. a queue bot's answer ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_bots_answer_goes_into_the_open_stream_and_needs_in_reply_to() {
    let bridge = Bridge::start(60, 10, NO_AGENT, 30).await;
    let sender = bridge.sender();
    let response_url = bridge.fake.aibot_response_url();
    let first = bridge.wecom.post(&text_message("m-queue", Some(CHAT), USER, "@DeployBot 发布", &response_url)).await;
    let stream_id = stream_of(&first.unwrap()).0.to_owned();

    let answer = aibot_outbound("k-queue", "m-queue", "**发布完成**：api v42 已上线。");
    assert!(sender.handle(&outbound_record(&answer, 1)).await);
    let refreshed = bridge.refresh(&stream_id).await;
    assert_eq!(stream_of(&refreshed), (stream_id.as_str(), true, "**发布完成**：api v42 已上线。"));
    assert_eq!(bridge.fake.calls(RESPONSE_PATH), 0, "no response_url POST while the stream is open");
    assert_eq!(bridge.stream("m-queue").await.unwrap().url, UrlState::Unused);
    // Redelivered: still nothing through the response_url.
    assert!(sender.handle(&outbound_record(&answer, 2)).await);
    assert_eq!(bridge.fake.calls(RESPONSE_PATH), 0);

    let mut orphan = aibot_outbound("k-orphan", "m-queue", "回答谁？");
    orphan.as_object_mut().unwrap().remove("in_reply_to");
    let err = Outbound::parse(&orphan.to_string()).unwrap_err();
    assert!(err.to_string().contains("in_reply_to"), "{err}");
    assert!(sender.handle(&outbound_record(&orphan, 1)).await);
    let letters = bridge.take(&bridge.stack.urls.outbound_dlq, 1, Duration::from_secs(3)).await;
    assert_eq!(letters.len(), 1);
    assert!(attribute(&letters[0], "reason").contains("in_reply_to"), "{}", attribute(&letters[0], "reason"));
    assert!(bridge.wecom.problems().is_empty(), "{:#?}", bridge.wecom.problems());
}

/// The outbound queue, failing its first `failures` publishes (an SQS outage, or a dispatcher
/// that dies right after finishing the stream).
struct FlakyOutbound {
    inner: Arc<dyn shared::core::ports::Publisher>,
    failures: AtomicUsize,
}

#[async_trait::async_trait]
impl shared::core::ports::Publisher for FlakyOutbound {
    async fn publish(&self, message: shared::core::ports::QueueMessage) -> Result<(), shared::core::ports::PortError> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(shared::core::ports::PortError::new("sqs", "the outbound queue is unavailable"));
        }
        self.inner.publish(message).await
    }
}

// ---- 11. long answers, and a death between the stream's finish and the queue ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_answer_fills_the_stream_and_its_rest_goes_once_by_response_url_though_queueing_failed() {
    use shared::channels::aibot::stream::{CUT_NOTE, MAX_CONTENT_BYTES};
    // About 46 KB: the stream shows the first 20 480 bytes; the rest (about 26 KB) is more than
    // one response_url message takes, so it is cut with a note.
    let line = "第 N 步：检查 api 的部署记录并回滚到上一版。\n";
    let whole = line.repeat(46_000 / line.len());
    let (url, agent) = agent(answer_after(0, &whole)).await;
    let bridge = Bridge::start(60, 10, &url, 30).await;
    let response_url = bridge.fake.aibot_response_url();
    bridge.wecom.post(&text_message("m-long", Some(CHAT), USER, "@DeployBot 回滚步骤", &response_url)).await.unwrap();
    let inbound = bridge.one_inbound().await;

    // The first run finishes the stream, then cannot queue the rest (and its error frees the
    // bot call's lease).
    let mut dispatcher = bridge.dispatcher();
    dispatcher.outbound = Arc::new(FlakyOutbound { inner: dispatcher.outbound.clone(), failures: AtomicUsize::new(1) });
    let failed = dispatcher.dispatch(inbound.body().unwrap()).await;
    assert!(matches!(failed, Err(DispatchError::Queue(_))), "{failed:?}");
    let stream = bridge.stream("m-long").await.unwrap();
    assert!(stream.finished && !stream.handed_over, "{stream:?}");
    assert!(stream.content.len() <= MAX_CONTENT_BYTES && stream.content.len() > MAX_CONTENT_BYTES - 4);
    assert!(whole.starts_with(&stream.content));
    assert!(bridge.rest(&bridge.stack.urls.outbound).await.is_empty());

    // SQS delivers the message again: the recorded rest is queued, the agent is not asked again.
    assert_eq!(dispatcher.dispatch(inbound.body().unwrap()).await.expect("the rest is queued"), 1);
    assert_eq!(agent.calls(), 1, "the agent answered once");
    let queued = bridge.take(&bridge.stack.urls.outbound, 2, Duration::from_secs(3)).await;
    assert_eq!(queued.len(), 1, "one Outbound for what the stream does not show");
    let out = Outbound::parse(queued[0].body().unwrap()).unwrap();
    let Content::Markdown { text: rest } = &out.content else { panic!("{:?}", out.content) };
    assert!(rest.len() <= MAX_CONTENT_BYTES && rest.ends_with(CUT_NOTE), "{}", rest.len());
    assert!(whole[stream.content.len()..].starts_with(rest.trim_end_matches(CUT_NOTE)));

    // A third delivery finds the call done: nothing more.
    assert_eq!(dispatcher.dispatch(inbound.body().unwrap()).await.expect("acknowledged"), 0);
    assert!(bridge.rest(&bridge.stack.urls.outbound).await.is_empty());
    assert_eq!(agent.calls(), 1);

    // The sender: the rest once, though SQS delivers it twice.
    let sender = bridge.sender();
    assert!(sender.handle(&record(&queued[0], 1)).await);
    assert!(sender.handle(&record(&queued[0], 2)).await);
    let posts = bridge.fake.deliveries_of(Api::AibotResponse);
    assert_eq!(posts.len(), 1, "the rest went once");
    assert_eq!(posts[0].body["markdown"]["content"], json!(rest));
    assert_eq!(bridge.stream("m-long").await.unwrap().content, stream.content, "the stream is as shown");
    assert!(bridge.rest(&bridge.stack.urls.outbound_dlq).await.is_empty());
    assert!(bridge.fake.problems().is_empty(), "{:#?}", bridge.fake.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_url_post_that_never_connected_is_not_counted_as_its_one_use() {
    let bridge = Bridge::start(2, 1, NO_AGENT, 30).await;
    // A sender whose WeCom host refuses connections (the listener is gone).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut env_vars: Vec<(&str, String)> = vec![
        ("WXBRIDGE_TABLE", bridge.stack.names.table.clone()),
        ("WXBRIDGE_OUTBOUND_QUEUE_URL", bridge.stack.urls.outbound.clone()),
        ("WXBRIDGE_DLQ_URL", bridge.stack.urls.outbound_dlq.clone()),
    ];
    env_vars.push(("WXBRIDGE_WECOM_API_BASE", closed.clone()));
    let unreachable = sender::build(bridge.config.clone(), &Env::from_vars(env_vars), &bridge.stack.sdk).unwrap();
    let msgid = "m-down";
    let key = stream_key(BOT, &inbound_id(msgid)).0;
    let url = format!("{closed}/cgi-bin/aibot/response?response_code=RC-down");
    let now = SystemTime::now();
    bridge.streams.open(&key, now, Some(&url), now + Duration::from_secs(3600)).await.unwrap();
    assert!(bridge.streams.hand_over(&key, HANDED_OVER_NOTE).await.unwrap());
    let answer = aibot_outbound("k-down", msgid, "稍后的回答");
    assert!(!unreachable.handle(&outbound_record(&answer, 1)).await, "retried later, not dead-lettered");
    assert_eq!(bridge.stream(msgid).await.unwrap().url, UrlState::Unused, "still unused: it never reached WeCom");
    assert!(bridge.rest(&bridge.stack.urls.outbound_dlq).await.is_empty());
}

/// A dispatcher with `bot` on in-memory ports, and the AI-bot message `msgid` saying `text`,
/// its stream open: the dispatcher, the streams, what it queues, the message and its stream key.
async fn in_memory(
    bot: Arc<dyn shared::core::bot::Bot>,
    msgid: &str,
    text: &str,
) -> (
    Dispatcher,
    Arc<shared::adapters::memory::MemoryStreams>,
    tokio::sync::mpsc::UnboundedReceiver<shared::core::ports::QueueMessage>,
    Inbound,
    String,
) {
    let streams = Arc::new(shared::adapters::memory::MemoryStreams::default());
    let (outbound, queued) = shared::adapters::memory::MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot,
        slots: Arc::new(shared::adapters::memory::MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: Some(streams.clone()),
        calls: None,
        files: None,
    };
    let mut inbound = Inbound::direct(Channel::WecomAibot, BOT, inbound_id(msgid), USER, 0, 0, json!({}));
    inbound.kind = Kind::Text;
    inbound.text = Some(text.into());
    let (key, _) = stream_key(BOT, &inbound.id);
    streams.open(&key, SystemTime::now(), None, SystemTime::now()).await.unwrap();
    (dispatcher, streams, queued, inbound, key)
}

/// A bot that says a little, more within the snapshot interval, then pauses like an agent
/// running a tool, then finishes.
struct PausingAgent;

#[async_trait::async_trait]
impl shared::core::bot::Bot for PausingAgent {
    async fn answer(&self, _: &Inbound) -> Result<Vec<Content>, shared::core::bot::BotError> {
        unreachable!("the dispatcher streams AI-bot answers")
    }
    async fn answer_streaming(
        &self,
        _: &Inbound,
        sink: &dyn shared::core::bot::AnswerSink,
    ) -> Result<Vec<Content>, shared::core::bot::BotError> {
        sink.grow("正在查询").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        sink.grow("正在查询部署记录…").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(vec![Content::Markdown { text: "正在查询部署记录…已回滚。".into() }])
    }
}

#[tokio::test]
async fn text_that_grows_within_the_interval_is_shown_while_the_agent_pauses() {
    let (dispatcher, streams, _queued, inbound, key) = in_memory(Arc::new(PausingAgent), "m-pause", "查一下").await;
    let dispatcher = Arc::new(dispatcher);
    let run = tokio::spawn({
        let (dispatcher, body) = (dispatcher.clone(), inbound.to_json());
        async move { dispatcher.dispatch(&body).await }
    });
    // Past the interval, during the pause: the second piece is shown, not only the first.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let shown = streams.read(&key).await.unwrap().unwrap();
    assert_eq!((shown.content.as_str(), shown.finished), ("正在查询部署记录…", false));
    run.await.unwrap().unwrap();
    let done = streams.read(&key).await.unwrap().unwrap();
    assert_eq!((done.content.as_str(), done.finished), ("正在查询部署记录…已回滚。", true));
}

/// A webhook-style bot whose answer starts with an image, then text, then more text.
struct ImageFirst;

#[async_trait::async_trait]
impl shared::core::bot::Bot for ImageFirst {
    async fn answer(&self, _: &Inbound) -> Result<Vec<Content>, shared::core::bot::BotError> {
        Ok(vec![
            Content::Image { media_id: None, base64: Some("aGk=".repeat(200_000)), media: None },
            Content::Markdown { text: "**已回滚**".into() },
            Content::Text { text: "详情见部署记录。".into() },
        ])
    }
}

#[tokio::test]
async fn the_first_text_of_an_answer_is_shown_and_what_the_stream_cannot_show_goes_to_the_sender() {
    let (dispatcher, streams, mut queued, inbound, key) = in_memory(Arc::new(ImageFirst), "m-image", "回滚").await;
    // An answer can be recorded only on a finished stream.
    assert!(!streams.record_answer(&key, "[]").await.unwrap());
    dispatcher.dispatch(&inbound.to_json()).await.unwrap();
    let stream = streams.read(&key).await.unwrap().unwrap();
    assert_eq!((stream.content.as_str(), stream.finished), ("**已回滚**", true));
    // The second text goes by response_url; the image (no media store here to keep it for the
    // stream) goes to the sender, which dead-letters it with the reason.
    let rest: Vec<Content> = serde_json::from_str(stream.answer.as_deref().unwrap()).unwrap();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(rest[0], Content::Markdown { text: "详情见部署记录。".into() });
    assert!(matches!(rest[1], Content::Image { .. }), "{rest:?}");
    assert!(stream.images.is_empty());
    for expected in &rest {
        let out = Outbound::parse(&queued.try_recv().unwrap().body).unwrap();
        assert_eq!(&out.content, expected);
    }
    assert!(queued.try_recv().is_err());
}

/// Bytes that start as `magic` and are `len` long in all.
fn picture(magic: &[u8], len: usize, seed: u32) -> Vec<u8> {
    magic.iter().copied().chain((0..).map(|i: u32| (i.wrapping_mul(seed) % 251) as u8)).take(len).collect()
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0];

/// An agent answering with text, pictures (by key and inline), a GIF and a file.
struct Pictures {
    stored: String,
    inline: Vec<u8>,
    over: Vec<u8>,
}

#[async_trait::async_trait]
impl shared::core::bot::Bot for Pictures {
    async fn answer(&self, _: &Inbound) -> Result<Vec<Content>, shared::core::bot::BotError> {
        let media = |m: Value| Some(serde_json::from_value(m).unwrap());
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(vec![
            Content::Markdown { text: "部署拓扑如下：".into() },
            Content::Image { media_id: None, base64: None, media: media(json!({"key": self.stored})) },
            Content::Image { media_id: None, base64: None, media: media(json!({"base64": b64(&self.inline)})) },
            // Past the 3 MB the stream's images may hold together.
            Content::Image { media_id: None, base64: None, media: media(json!({"base64": b64(&self.over)})) },
            Content::Image { media_id: None, base64: None, media: media(json!({"base64": b64(b"GIF89a-animated")})) },
            Content::File { media_id: None, media: media(json!({"base64": b64(b"%PDF-1.7 report")})) },
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answers_pictures_come_with_its_finishing_stream_and_what_does_not_fit_is_dead_lettered_with_why() {
    let bridge = Bridge::start(30, 5, "http://127.0.0.1:9", 30).await;
    let stored = picture(PNG, 2_000_000, 7);
    let key = format!("media/{}", shared::core::media::hex(&<sha2::Sha256 as sha2::Digest>::digest(&stored)));
    bridge.stack.media.put_bytes(&key, stored.clone(), "image/png").await.unwrap();
    let inline = picture(JPG, 900_000, 13);
    // 2 000 000 + 900 000 bytes fit the 3 MiB; 600 000 more do not (and as base64 they would
    // not fit the answer's record, a DynamoDB item of 400 KB, either: they go by key).
    let over = picture(PNG, 600_000, 17);
    let bot = Pictures { stored: key.clone(), inline: inline.clone(), over: over.clone() };
    let dispatcher = Dispatcher { bot: Arc::new(bot), calls: None, ..bridge.dispatcher() };
    let message = text_message("m-pictures", None, USER, "拓扑图", &bridge.fake.aibot_response_url());
    let dispatch = async {
        let inbound = bridge.one_inbound().await;
        dispatcher.dispatch(inbound.body().unwrap()).await
    };
    let (talk, dispatched) = tokio::join!(bridge.wecom.converse(&message), dispatch);
    let talk = talk.expect("WeCom's side accepted every answer (msg_item md5 and formats checked)");
    dispatched.expect("dispatched");
    assert_eq!(talk.final_text(), Some("部署拓扑如下："));
    let shown: Vec<usize> = talk.final_images().iter().map(Vec::len).collect();
    assert!(talk.final_images() == vec![stored.clone(), inline.clone()], "both pictures, in order: {shown:?}");
    assert!(bridge.wecom.problems().is_empty(), "{:#?}", bridge.wecom.problems());
    // The stream keeps the keys (the inline one now stored too); a late refresh shows them again.
    let stream = bridge.stream("m-pictures").await.unwrap();
    let inline_key = format!("media/{}", shared::core::media::hex(&<sha2::Sha256 as sha2::Digest>::digest(&inline)));
    assert_eq!(stream.images, [key, inline_key]);
    let Answer::Stream { finish: true, msg_item: Some(items), .. } = bridge.refresh(&talk.stream_id).await else {
        panic!("a finished stream with its images")
    };
    assert_eq!(items.as_array().unwrap().len(), 2);

    // What the stream could not show goes to the sender, which dead-letters each with its reason.
    let queued = bridge.take(&bridge.stack.urls.outbound, 3, Duration::from_secs(5)).await;
    assert_eq!(queued.len(), 3, "the picture over 3 MB, the GIF and the file");
    assert!(queued.iter().all(|m| m.body().unwrap().len() < 2048), "no bytes on the queue");
    let over_key = format!("media/{}", shared::core::media::hex(&<sha2::Sha256 as sha2::Digest>::digest(&over)));
    assert!(queued.iter().any(|m| m.body().unwrap().contains(&over_key)), "the refused picture is named by its key");
    assert_eq!(bridge.stack.media.get(&over_key, 1 << 20).await.unwrap(), Some(over));
    let sender = bridge.sender();
    for message in &queued {
        let (_, outcome) = sender.send_record(&record(message, 1)).await;
        let shared::services::sender::Outcome::Permanent { reason, .. } = outcome else { panic!("{outcome:?}") };
        assert!(reason.contains("wecom_aibot cannot send"), "{reason}");
    }
    assert_eq!(bridge.fake.calls(RESPONSE_PATH), 0, "nothing went by the response_url");
}
