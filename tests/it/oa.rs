//! The Official Account callback against the emulator: shared reply slots across instances, and
//! safe-mode replies that an independent implementation (wechatpy) opens.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::adapters::aws::{DynamoParkedReplies, DynamoReplySlots, SqsPublisher};
use shared::channels::oa::service::OaCallback;
use shared::channels::Config;
use shared::core::callback::CallbackRequest;
use shared::core::ports::SystemClock;
use shared::protocol::crypto::{plain_signature, EncodingAesKey, MsgCrypt};
use shared::services::bots::EchoBot;
use shared::services::dispatcher::Dispatcher;
use shared::testing::fixtures::{OA_AES_KEY, OA_APP_ID, OA_TOKEN};

use crate::support::Stack;

fn config() -> Config {
    Config::parse(&format!(
        r#"{{"oa": [{{"app": "news", "app_id": "{OA_APP_ID}", "token": "{OA_TOKEN}", "encoding_aes_key": "{OA_AES_KEY}"}}]}}"#
    ))
    .unwrap()
}

fn instance(stack: &Stack) -> OaCallback {
    let table = shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table);
    instance_with(stack, Arc::new(DynamoReplySlots::new(&table)), Arc::new(DynamoParkedReplies::new(&table)))
}

/// The callback on the stack's inbound queue with these slots and parked replies.
fn instance_with(
    stack: &Stack,
    slots: Arc<dyn shared::core::ports::ReplySlots>,
    parked: Arc<dyn shared::core::ports::ParkedReplies>,
) -> OaCallback {
    let config = config();
    OaCallback::new(
        &config.oa,
        config.oa_window,
        config.replay_window_secs,
        Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound)),
        slots,
        parked,
        Arc::new(SystemClock),
    )
}

/// A safe-mode delivery of a text message, as WeChat sends it (fresh nonce each time).
fn safe_delivery(msg_id: u64, text: &str, nonce: &str) -> (String, String) {
    let crypt = MsgCrypt::new(OA_TOKEN, &EncodingAesKey::parse(OA_AES_KEY).unwrap(), OA_APP_ID);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let mut xml = shared::protocol::xml::XmlWriter::with_capacity(512);
    xml.raw("<xml>")
        .cdata_element("ToUserName", "gh_5e6f7a8b9c0d")
        .cdata_element("FromUserName", "oUser")
        .text_element("CreateTime", &now)
        .cdata_element("MsgType", "text")
        .cdata_element("Content", text)
        .text_element("MsgId", &msg_id.to_string())
        .raw("</xml>");
    let plain = xml.finish();
    let encrypt = crypt.encrypt(&plain, shared::protocol::crypto::random_prefix());
    let query = format!(
        "signature={}&timestamp={now}&nonce={nonce}&openid=oUser&encrypt_type=aes&msg_signature={}",
        plain_signature(OA_TOKEN, &now, nonce),
        crypt.signature(&now, nonce, &encrypt)
    );
    (
        query,
        format!(
            "<xml><ToUserName><![CDATA[gh_5e6f7a8b9c0d]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
    )
}

/// Runs the dispatcher (echo bot) over the inbound queue until `stop`; returns how many
/// messages it dispatched.
async fn dispatch_inbound(stack: &Stack, until: Duration) -> usize {
    let dispatcher = Dispatcher {
        bot: Arc::new(EchoBot),
        slots: Arc::new(DynamoReplySlots::new(&shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table))),
        outbound: Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.outbound)),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: None,
    };
    let deadline = tokio::time::Instant::now() + until;
    let mut dispatched = 0;
    while tokio::time::Instant::now() < deadline {
        let received = stack
            .sqs
            .receive_message()
            .queue_url(&stack.urls.inbound)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            dispatcher.dispatch(message.body().unwrap()).await.unwrap();
            stack
                .sqs
                .delete_message()
                .queue_url(&stack.urls.inbound)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            dispatched += 1;
        }
    }
    dispatched
}

fn open_with_wechatpy(reply: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run the tests with scripts/test (it installs wechatpy)", python.display());
    let mut child = Command::new(python)
        .arg(root.join("tests/interop/wechatpy_open.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request =
        serde_json::json!({"token": OA_TOKEN, "encoding_aes_key": OA_AES_KEY, "app_id": OA_APP_ID, "reply": reply});
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wechatpy refused our reply: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn two_instances_handling_concurrent_deliveries_publish_once_and_reply_once() {
    let stack = Stack::new().await;
    let (a, b) = (Arc::new(instance(&stack)), Arc::new(instance(&stack)));
    let mut deliveries = Vec::new();
    for (i, service) in [a.clone(), b.clone(), a, b].into_iter().enumerate() {
        let (query, body) = safe_delivery(88_000_000_000_000_001, "同时", &format!("n{i}"));
        deliveries.push(tokio::spawn(async move {
            service
                .handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() })
                .await
        }));
    }
    let dispatched = dispatch_inbound(&stack, Duration::from_secs(3)).await;
    let mut replies = Vec::new();
    for delivery in deliveries {
        let response = delivery.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
        if response.body != "success" {
            replies.push(open_with_wechatpy(&response.body));
        }
    }
    assert_eq!(dispatched, 1, "one publish for four deliveries on two instances");
    assert!(!replies.is_empty(), "the reply reached a delivery");
    for reply in &replies {
        assert_eq!(
            shared::protocol::xml::parse(reply).unwrap().text("Content"),
            Some("同时"),
            "one reply, the same for every delivery"
        );
    }
    assert!(
        stack.drain(&stack.urls.outbound).await.is_empty(),
        "no customer-service send when the passive reply went out"
    );
}

#[tokio::test]
async fn a_safe_mode_reply_is_opened_and_verified_by_wechatpy() {
    let stack = Stack::new().await;
    let service = Arc::new(instance(&stack));
    let (query, body) = safe_delivery(88_000_000_000_000_002, "你好，世界！🚀 <&> ]]> end", "wp1");
    let delivery = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() })
                .await
        }
    });
    dispatch_inbound(&stack, Duration::from_secs(2)).await;
    let response = delivery.await.unwrap();
    assert_eq!(response.status, 200);
    let opened = open_with_wechatpy(&response.body);
    let fields = shared::protocol::xml::parse(&opened).unwrap();
    assert_eq!(fields.text("Content"), Some("你好，世界！🚀 <&> ]]> end"));
    assert_eq!(fields.text("ToUserName"), Some("oUser"));
    assert_eq!(fields.text("MsgType"), Some("text"));
}

#[tokio::test]
async fn a_reply_refused_with_48001_becomes_the_passive_reply_to_the_next_message() {
    let stack = Stack::new().await;
    let fake = fakes::FakeWechat::start().await;
    fake.add_oa(OA_APP_ID, "oa-secret");
    fake.add_oa_user("oUser");
    fake.inject("/cgi-bin/message/custom/send", fakes::Fault::Errcode(48001));
    let mut config = config();
    config.oa[0].app_secret = Some(secrecy::SecretString::from("oa-secret".to_owned()));
    let (table, outbound, dlq, base) = (
        stack.names.table.clone(),
        stack.urls.outbound.clone(),
        stack.urls.outbound_dlq.clone(),
        fake.base_url.clone(),
    );
    let env = shared::core::config::Env::from_vars([
        ("WXBRIDGE_TABLE", table.clone()),
        ("WXBRIDGE_OUTBOUND_QUEUE_URL", outbound.clone()),
        ("WXBRIDGE_DLQ_URL", dlq.clone()),
        ("WXBRIDGE_OA_API_BASE", base.clone()),
    ]);
    let sender = sender::build(config, &env, &stack.sdk).unwrap();
    let late = serde_json::json!({"v": 1, "channel": "oa", "account": "news", "to": "oUser",
        "content": {"type": "text", "text": "the answer you waited for"}, "idempotency_key": "oa:news:1#0"});
    let record = shared::core::ports::Record {
        message_id: "m".into(),
        receipt_handle: "r".into(),
        body: late.to_string(),
        receive_count: 1,
        group: None,
    };
    assert!(sender.handle(&record).await, "parked, not retried");
    assert!(stack.drain(&stack.urls.outbound_dlq).await.is_empty(), "parked, not dead-lettered");

    // The user writes again: the parked reply answers at once, passively.
    let service = instance(&stack);
    let (query, body) = safe_delivery(88_000_000_000_000_003, "还在吗", "p1");
    let started = tokio::time::Instant::now();
    let response =
        service.handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() }).await;
    assert!(started.elapsed() < Duration::from_secs(2), "answered without waiting for the bot");
    let opened = open_with_wechatpy(&response.body);
    assert_eq!(shared::protocol::xml::parse(&opened).unwrap().text("Content"), Some("the answer you waited for"));
}

/// An earlier run put a picture (by its cached media id) in the slot and died before WeChat took
/// it or the run took it back; by the rerun the id is no longer cached, so the picture is not
/// passive-able now. The rerun must take the untaken reply back and send it by customer service,
/// not count it as answered.
#[tokio::test]
async fn a_reply_an_earlier_run_left_untaken_in_the_slot_goes_by_customer_service() {
    use shared::core::envelope::{Channel, Content, Inbound, Kind, Media, MediaType, OutMedia, Outbound};
    use shared::core::ports::ReplySlots;
    let stack = Stack::new().await;
    let table = shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table);
    let slots = Arc::new(DynamoReplySlots::new(&table));
    let key = format!("media/{}", "ab".repeat(32));
    let id = "oa:news:88000000000000777".to_owned();
    let mut inbound = Inbound::direct(Channel::Oa, "news", id.clone(), "oUser", 0, 0, serde_json::json!({}));
    inbound.kind = Kind::Image;
    inbound.media = Some(Media { key: Some(key.clone()), media_type: Some(MediaType::Image), ..Media::default() });
    // The earlier run: the slot filled with the picture by id, never taken.
    let now = SystemTime::now();
    slots.arrive(&id, now, now + Duration::from_millis(300)).await.unwrap();
    let earlier = Content::Image { media_id: Some("MEDIA_GONE".into()), base64: None, media: None };
    assert!(slots.fill(&id, &serde_json::to_string(&earlier).unwrap(), &format!("{id}#0"), now).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let files = shared::services::files::OutFiles {
        store: Arc::new(stack.media.clone()),
        ids: Arc::new(shared::adapters::aws::DynamoMediaIds::new(&table)),
        http: shared::core::http::Http::new(&shared::core::http::HttpSettings::default()).unwrap(),
        allow_loopback: false,
    };
    let dispatcher = Dispatcher {
        bot: Arc::new(EchoBot),
        slots: slots.clone(),
        outbound: Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.outbound)),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: Some(Arc::new(files)),
    };
    dispatcher.dispatch(&inbound.to_json()).await.unwrap();
    let queued = stack.drain(&stack.urls.outbound).await;
    assert_eq!(queued.len(), 1, "the picture goes by customer service");
    let out = Outbound::parse(queued[0].body().unwrap()).unwrap();
    assert_eq!(out.idempotency_key, format!("{id}#0"));
    let expected = OutMedia { key: Some(key), ..OutMedia::default() };
    assert_eq!(out.content, Content::Image { media_id: None, base64: None, media: Some(expected) });
    let slot = slots.read(&id).await.unwrap().unwrap();
    assert!(!slot.taken && slot.state == shared::core::ports::SlotState::Closed, "taken back: {slot:?}");
}

/// Reply slots whose first `fill` (or `take`) fails: the store unavailable for a moment.
struct FirstFillFails {
    inner: DynamoReplySlots,
    failed: std::sync::atomic::AtomicBool,
    on_take: bool,
}

#[async_trait::async_trait]
impl shared::core::ports::ReplySlots for FirstFillFails {
    async fn arrive(
        &self,
        key: &str,
        now: SystemTime,
        deadline: SystemTime,
    ) -> Result<shared::core::ports::Slot, shared::core::ports::PortError> {
        self.inner.arrive(key, now, deadline).await
    }
    async fn read(&self, key: &str) -> Result<Option<shared::core::ports::Slot>, shared::core::ports::PortError> {
        self.inner.read(key).await
    }
    async fn fill(
        &self,
        key: &str,
        reply: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<bool, shared::core::ports::PortError> {
        if !self.on_take && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(shared::core::ports::PortError::new("dynamodb", "unavailable"));
        }
        self.inner.fill(key, reply, by, now).await
    }
    async fn close(&self, key: &str) -> Result<bool, shared::core::ports::PortError> {
        self.inner.close(key).await
    }
    async fn take(&self, key: &str) -> Result<bool, shared::core::ports::PortError> {
        if self.on_take && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(shared::core::ports::PortError::new("dynamodb", "unavailable"));
        }
        self.inner.take(key).await
    }
    async fn revoke(&self, key: &str) -> Result<bool, shared::core::ports::PortError> {
        self.inner.revoke(key).await
    }
}

/// Two replies parked (48001). The store fails while the first is being handed to the user's
/// next message: WeChat's retry still gets it, and the second answers the message after; none is
/// lost (they were deleted before being placed).
#[tokio::test]
async fn parked_replies_survive_a_store_failure_while_one_is_handed_over() {
    use shared::core::ports::ParkedReplies as _;
    let stack = Stack::new().await;
    let table = shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table);
    let parked = Arc::new(DynamoParkedReplies::new(&table));
    for reply in ["第一个回答", "second answer"] {
        let content = shared::core::envelope::Content::Text { text: reply.into() };
        parked.park("news", "oUser", &serde_json::to_string(&content).unwrap(), SystemTime::now()).await.unwrap();
    }
    let slots = FirstFillFails { inner: DynamoReplySlots::new(&table), failed: Default::default(), on_take: false };
    let service = instance_with(&stack, Arc::new(slots), parked.clone());
    let deliver = |msg_id: u64, nonce: &str| {
        let (query, body) = safe_delivery(msg_id, "还在吗", nonce);
        let service = &service;
        async move {
            service
                .handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() })
                .await
        }
    };
    let refused = deliver(88_000_000_000_000_011, "f1").await;
    assert!(refused.status >= 500, "the store failed: WeChat delivers again ({})", refused.status);
    let retried = deliver(88_000_000_000_000_011, "f2").await;
    let opened = open_with_wechatpy(&retried.body);
    assert_eq!(shared::protocol::xml::parse(&opened).unwrap().text("Content"), Some("第一个回答"));
    let next = deliver(88_000_000_000_000_012, "f3").await;
    let opened = open_with_wechatpy(&next.body);
    assert_eq!(shared::protocol::xml::parse(&opened).unwrap().text("Content"), Some("second answer"));
    assert_eq!(parked.oldest("news", "oUser").await.unwrap(), None, "both handed over");
}

/// WeChat's 5 s began when API Gateway received the delivery (its `timeEpoch`), not when the
/// function got it after a cold start: a delivery that reaches the function 4 s late waits only
/// what is left of the window, so it answers before WeChat gives up on it.
#[tokio::test]
async fn the_window_counts_from_when_api_gateway_received_the_delivery() {
    let stack = Stack::new().await;
    let service = instance(&stack);
    let (query, body) = safe_delivery(88_000_000_000_000_021, "冷启动", "t1");
    let received_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 - 4_000;
    let waited = hold_with_time_epoch(&service, &query, &body, received_ms).await;
    // No bot answers here: the delivery holds what is left of its 5.5 s (1.5 s), not all of it.
    assert!(waited < Duration::from_millis(3_500), "held {waited:?} of a window 4 s spent before the function ran");
    assert!(waited >= Duration::from_millis(1_000), "held {waited:?}: the rest of the window is still waited");
    // A time older than API Gateway ever holds a request is not believed: the whole window.
    let (query, body) = safe_delivery(88_000_000_000_000_022, "时钟", "t2");
    let waited = hold_with_time_epoch(&service, &query, &body, received_ms - 600_000).await;
    assert!(
        waited >= Duration::from_millis(5_000),
        "held {waited:?}: a 10-minute-old timeEpoch is no reason to give up"
    );
}

/// Hands one delivery to the service as API Gateway would, received at `received_ms`; how long
/// it held the request.
async fn hold_with_time_epoch(service: &OaCallback, query: &str, body: &str, received_ms: u64) -> Duration {
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "POST /oa/{app}",
        "rawPath": "/oa/news",
        "rawQueryString": query,
        "headers": {"content-type": "text/xml", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {"method": "POST", "path": "/oa/news", "protocol": "HTTP/1.1", "sourceIp": "101.226.103.0", "userAgent": "Mozilla/4.0"},
            "requestId": "r1", "routeKey": "POST /oa/{app}", "stage": "$default", "time": "21/Nov/2026:05:00:00 +0000",
            "timeEpoch": received_ms
        },
        "pathParameters": {"app": "news"},
        "body": body,
        "isBase64Encoded": false
    });
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let started = tokio::time::Instant::now();
    let response = shared::adapters::lambda::handle_http(service, request).await;
    assert_eq!(response.status().as_u16(), 200);
    started.elapsed()
}

/// The store fails as a parked reply's answer is being taken: that delivery answers `success`
/// (WeChat shows nothing), so the reply must still be parked, and answers the user's next message.
#[tokio::test]
async fn a_parked_reply_whose_answer_was_not_taken_stays_parked() {
    use shared::core::ports::ParkedReplies as _;
    let stack = Stack::new().await;
    let table = shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table);
    let parked = Arc::new(DynamoParkedReplies::new(&table));
    let content = shared::core::envelope::Content::Text { text: "留给你的回答".into() };
    let json = serde_json::to_string(&content).unwrap();
    parked.park("news", "oUser", &json, SystemTime::now()).await.unwrap();
    let slots = FirstFillFails { inner: DynamoReplySlots::new(&table), failed: Default::default(), on_take: true };
    let service = instance_with(&stack, Arc::new(slots), parked.clone());
    let (query, body) = safe_delivery(88_000_000_000_000_031, "在吗", "g1");
    let first =
        service.handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() }).await;
    assert_eq!(first.body, "success", "not taken: nothing shown ({first:?})");
    assert_eq!(parked.oldest("news", "oUser").await.unwrap(), Some(json), "still parked");
    let (query, body) = safe_delivery(88_000_000_000_000_032, "还在吗", "g2");
    let next =
        service.handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() }).await;
    let opened = open_with_wechatpy(&next.body);
    assert_eq!(shared::protocol::xml::parse(&opened).unwrap().text("Content"), Some("留给你的回答"));
    assert_eq!(parked.oldest("news", "oUser").await.unwrap(), None, "taken once shown");
}
