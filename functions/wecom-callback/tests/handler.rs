//! The Lambda handler, called in-process with API Gateway HTTP API (v2) events and in-memory ports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lambda_http::{Body, Request};
use serde_json::Value;
use shared::adapters::memory::MemoryQueue;
use shared::channels::wecom::simulate::sign_callback;
use shared::channels::wecom::WecomCallback;
use shared::channels::Config;
use shared::core::callback::{dedup_id, FIFO_DEDUP, FIFO_GROUP};
use shared::core::ports::{Clock, PortError, Publisher, QueueMessage};
use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};
use tokio::sync::mpsc::UnboundedReceiver;

const VERIFY_EVENT: &str = include_str!("events/verify_url.json");
const TEXT_EVENT: &str = include_str!("events/callback_text.json");
/// The timestamp of the recorded text callback.
const SENT: u64 = 1_735_689_637;

fn config() -> Config {
    Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}"}}]}}"#
    ))
    .unwrap()
}

/// A clock the test moves by hand.
struct TestClock(AtomicU64);

impl TestClock {
    fn at(unix: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(unix)))
    }

    fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// A queue that can be switched off, as SQS is during an outage.
struct SwitchableQueue {
    inner: MemoryQueue,
    down: AtomicBool,
}

#[async_trait]
impl Publisher for SwitchableQueue {
    async fn publish(&self, message: QueueMessage) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::new("sqs", "connection refused"));
        }
        self.inner.publish(message).await
    }
}

struct Harness {
    service: WecomCallback,
    queue: Arc<SwitchableQueue>,
    clock: Arc<TestClock>,
    rx: UnboundedReceiver<QueueMessage>,
}

/// The service on the in-memory twin of the FIFO inbound queue (it drops a deduplication id it
/// took in the last five minutes, as SQS does).
fn harness_with(config: &Config) -> Harness {
    let (inner, rx) = MemoryQueue::fifo();
    let queue = Arc::new(SwitchableQueue { inner, down: AtomicBool::new(false) });
    let clock = TestClock::at(SENT + 3);
    let service = WecomCallback::new(&config.wecom, config.replay_window_secs, queue.clone(), clock.clone());
    Harness { service, queue, clock, rx }
}

fn harness() -> Harness {
    harness_with(&config())
}

fn event(json: &str) -> Request {
    lambda_http::request::from_str(json).expect("valid API Gateway v2 event")
}

/// The recorded event with its query string and body replaced.
fn event_with(json: &str, method: &str, app: &str, query: &str, body: Option<&str>) -> Request {
    let mut ev: Value = serde_json::from_str(json).unwrap();
    ev["rawQueryString"] = query.into();
    ev["requestContext"]["http"]["method"] = method.into();
    ev["rawPath"] = format!("/wecom/{app}").into();
    ev["requestContext"]["http"]["path"] = format!("/wecom/{app}").into();
    ev["pathParameters"]["app"] = app.into();
    ev["body"] = body.map(Value::from).unwrap_or(Value::Null);
    event(&ev.to_string())
}

fn body_text(body: &Body) -> String {
    String::from_utf8(body.as_ref().to_vec()).unwrap()
}

async fn call(h: &Harness, req: Request) -> (u16, String) {
    let response = wecom_callback::handle(&h.service, req).await;
    (response.status().as_u16(), body_text(response.body()))
}

fn drain(rx: &mut UnboundedReceiver<QueueMessage>) -> Vec<QueueMessage> {
    let mut out = Vec::new();
    while let Ok(message) = rx.try_recv() {
        out.push(message);
    }
    out
}

/// A signed, encrypted callback for `plaintext`, sent at `timestamp`.
fn signed(plaintext: &str, timestamp: u64) -> (String, String) {
    let crypt = MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), WECOM_CORP_ID);
    let callback = sign_callback(&crypt, plaintext, timestamp, "n0nce", [9; 16]);
    (callback.query, callback.body)
}

#[tokio::test]
async fn url_verification_answers_the_decrypted_echostr_as_plain_text() {
    let h = harness();
    let response = wecom_callback::handle(&h.service, event(VERIFY_EVENT)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_text(response.body()), "6643783525895251335");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
}

#[tokio::test]
async fn a_text_callback_is_published_once_and_answered_with_an_empty_200() {
    let mut h = harness();
    assert_eq!(call(&h, event(TEXT_EVENT)).await, (200, String::new()));
    let published = drain(&mut h.rx);
    assert_eq!(published.len(), 1);
    let inbound: Value = serde_json::from_str(&published[0].body).unwrap();
    assert_eq!(inbound["id"], "wecom:hr:7450000000000000337");
    assert_eq!(inbound["text"], "hello from wxbridge");
    assert_eq!(inbound["sent_at"], 1_735_689_597u64);
    assert_eq!(inbound["conversation"]["id"], "ZhangWei");
    // Grouped by conversation, deduplicated by the Inbound id on the FIFO queue.
    let attribute = |name| published[0].attributes.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    assert!(attribute(FIFO_GROUP).is_some_and(|g| g.starts_with("wecom:")));
    assert_eq!(attribute(FIFO_DEDUP), Some(dedup_id("wecom:hr:7450000000000000337")));

    // WeChat's retries of the same message are acknowledged; the queue keeps one copy.
    for _ in 0..3 {
        assert_eq!(call(&h, event(TEXT_EVENT)).await, (200, String::new()));
    }
    assert!(drain(&mut h.rx).is_empty());
}

#[tokio::test]
async fn an_sqs_outage_answers_503_and_the_retry_publishes() {
    let mut h = harness();
    h.queue.down.store(true, Ordering::SeqCst);
    let (status, body) = call(&h, event(TEXT_EVENT)).await;
    assert_eq!(status, 503);
    assert!(!body.contains("connection refused"), "dependency details stay in the logs: {body}");
    assert!(drain(&mut h.rx).is_empty());

    h.queue.down.store(false, Ordering::SeqCst);
    assert_eq!(call(&h, event(TEXT_EVENT)).await.0, 200);
    assert_eq!(drain(&mut h.rx).len(), 1, "nothing swallowed the retry");
}

#[tokio::test]
async fn refusals_map_to_their_status_and_publish_nothing() {
    let mut h = harness();
    let (query, body) = signed(
        &format!("<xml><ToUserName>{WECOM_CORP_ID}</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>"),
        SENT,
    );
    let (stale_query, stale_body) = signed("<xml/>", SENT - 3600);
    let (broken_query, broken_body) = signed("<xml><ToUserName>ww</ToUserName>", SENT);
    let (nonsense_query, nonsense_body) = signed("<xml><MsgType>text</MsgType></xml>", SENT);
    let tampered_query = query.replace("nonce=n0nce", "nonce=n0ncf");
    let huge = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(300 * 1024));
    let cases: Vec<(&str, &str, &str, Option<&str>, u16)> = vec![
        ("POST", "sales", &query, Some(&body), 404),
        ("PUT", "hr", &query, Some(&body), 405),
        ("POST", "hr", &query, Some(&huge), 413),
        ("POST", "hr", "timestamp=1&nonce=n", Some(&body), 400),
        ("POST", "hr", "msg_signature=x&timestamp=soon&nonce=n", Some(&body), 400),
        ("POST", "hr", "msg_signature=%ff%fe&timestamp=1&nonce=n", Some(&body), 400),
        ("POST", "hr", &query, Some("not xml"), 400),
        ("POST", "hr", &query, Some("<xml><ToUserName>x</ToUserName></xml>"), 400),
        (
            "POST",
            "hr",
            &query,
            Some("<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&e;</Encrypt></xml>"),
            400,
        ),
        ("POST", "hr", &tampered_query, Some(&body), 401),
        ("POST", "hr", &stale_query, Some(&stale_body), 403),
        ("POST", "hr", &broken_query, Some(&broken_body), 400),
        ("POST", "hr", &nonsense_query, Some(&nonsense_body), 400),
        ("GET", "hr", "msg_signature=x&timestamp=1&nonce=n", None, 400),
        (
            "GET",
            "hr",
            "msg_signature=0000000000000000000000000000000000000000&timestamp=1&nonce=n&echostr=abc",
            None,
            401,
        ),
    ];
    for (method, app, query, body, status) in cases {
        let (got, text) = call(&h, event_with(TEXT_EVENT, method, app, query, body)).await;
        assert_eq!(got, status, "{method} {app}?{query} → {text}");
        assert!(!text.contains(WECOM_TOKEN) && !text.contains(WECOM_AES_KEY));
    }
    assert!(drain(&mut h.rx).is_empty(), "nothing refused reaches the queue");
}

#[tokio::test]
async fn a_replay_window_of_zero_accepts_recorded_callbacks() {
    let mut config = config();
    config.replay_window_secs = 0;
    let mut h = harness_with(&config);
    h.clock.advance(86_400 * 365);
    assert_eq!(call(&h, event(TEXT_EVENT)).await.0, 200);
    assert_eq!(drain(&mut h.rx).len(), 1);
}

#[tokio::test]
async fn the_replay_window_holds_in_both_directions() {
    // The default window: the queue's five-minute deduplication less a minute for clocks.
    let window = shared::core::callback::DEFAULT_REPLAY_WINDOW_SECS;
    assert_eq!(window, 240);
    let mut h = harness();
    h.clock.0.store(SENT + window + 1, Ordering::SeqCst);
    assert_eq!(call(&h, event(TEXT_EVENT)).await.0, 403);
    h.clock.0.store(SENT - window - 1, Ordering::SeqCst);
    assert_eq!(call(&h, event(TEXT_EVENT)).await.0, 403);
    h.clock.0.store(SENT + window, Ordering::SeqCst);
    assert_eq!(call(&h, event(TEXT_EVENT)).await.0, 200);
    assert_eq!(drain(&mut h.rx).len(), 1);
}

#[tokio::test]
async fn crypto_vectors_with_bad_padding_length_utf8_or_receive_id_are_refused() {
    let doc: Value = serde_json::from_str(include_str!("../../../fixtures/vectors/crypto.json")).unwrap();
    let mut config = config();
    config.replay_window_secs = 0;
    let mut h = harness_with(&config);
    let cases = [
        ("neg_wrong_receive_id", 400),
        ("neg_pad_inconsistent", 400),
        ("neg_pad_zero", 400),
        ("neg_msg_len_too_large", 400),
        ("neg_plaintext_too_short", 400),
        ("neg_invalid_utf8", 400),
        ("neg_base64_truncated", 400),
        ("neg_empty_encrypt", 400),
        ("neg_bad_signature", 401),
    ];
    for (id, expected) in cases {
        let case = doc["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap();
        let field = |name: &str| case[name].as_str().unwrap().to_owned();
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            field("msg_signature"),
            field("timestamp"),
            field("nonce")
        );
        let body = format!("<xml><Encrypt><![CDATA[{}]]></Encrypt></xml>", field("encrypt"));
        let (status, text) = call(&h, event_with(TEXT_EVENT, "POST", "hr", &query, Some(&body))).await;
        assert_eq!(status, expected, "{id}: {text}");
    }
    assert!(drain(&mut h.rx).is_empty());
}
