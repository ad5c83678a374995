//! 微信客服 against the emulator: the puller pulls a kf account's items from the fake with
//! `sync_msg`, publishes each customer message once (markers and cursor in DynamoDB, the inbound
//! queue on SQS), and the sender answers through `kf/send_msg`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use fakes::{Api, FakeWechat};
use serde_json::json;
use shared::adapters::aws::{
    DynamoCursors, DynamoCustomerWindows, DynamoDedupe, DynamoTokenStore, SqsPublisher, Table,
};
use shared::adapters::memory::MemoryMetrics;
use shared::channels::kf::puller::{PullError, SEEN_TTL};
use shared::channels::kf::KfPuller;
use shared::channels::{Apis, Config};
use shared::core::callback::InboundQueues;
use shared::core::config::Env;
use shared::core::envelope::{Channel, Inbound};
use shared::core::http::{Http, HttpSettings};
use shared::core::ports::{Cursors, MediaStore, PortError, Record, SystemClock};
use shared::core::tokens::Tokens;
use shared::services::sender::Outcome;
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

use crate::support::Stack;

const KFID: &str = "wkDemoAAAA0000000000000000001";
const CUSTOMER: &str = "wmDemoCustomer000000000000001";

fn config(welcome: bool) -> Config {
    let welcome = if welcome { r#", "welcome": "您好，我是智能助手。""# } else { "" };
    Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}", "secret": "wecom-secret"}}],
             "kf": [{{"name": "support", "corp_id": "{WECOM_CORP_ID}", "open_kfid": "{KFID}", "app": "hr", "history_horizon_s": 600{welcome}}}]}}"#
    ))
    .unwrap()
}

/// Cursors that fail every save while `broken` (a puller dying before it saved its cursor).
struct Breakable {
    inner: DynamoCursors,
    broken: AtomicBool,
}

#[async_trait]
impl Cursors for Breakable {
    async fn load(&self, key: &str) -> Result<Option<(String, u64)>, PortError> {
        self.inner.load(key).await
    }
    async fn save(&self, key: &str, cursor: &str, previous: Option<u64>) -> Result<bool, PortError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(PortError::new("test", "the puller died before saving its cursor"));
        }
        self.inner.save(key, cursor, previous).await
    }
}

/// The puller on the test's stack; `kf`: the pull queue its follow-on pulls go to.
fn puller(
    stack: &Stack,
    config: &Config,
    apis: &Apis,
    cursors: Arc<Breakable>,
    metrics: Arc<MemoryMetrics>,
    kf: Option<Arc<dyn shared::core::ports::Publisher>>,
) -> KfPuller {
    let table = Table::from_sdk(&stack.sdk, &stack.names.table);
    KfPuller {
        accounts: config.kf.clone(),
        apps: config.wecom.clone(),
        api: apis.wecom.clone(),
        tokens: Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), Arc::new(SystemClock))),
        cursors,
        seen: Arc::new(DynamoDedupe::new(&table).keeping(SEEN_TTL)),
        publisher: Arc::new(InboundQueues {
            inbound: Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound)),
            media: Some(Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.media))),
            kf,
        }),
        windows: Arc::new(DynamoCustomerWindows::new(&table)),
        metrics,
        clock: Arc::new(SystemClock),
    }
}

struct Rig {
    stack: Stack,
    wx: FakeWechat,
    config: Config,
    cursors: Arc<Breakable>,
    metrics: Arc<MemoryMetrics>,
    puller: KfPuller,
}

impl Rig {
    async fn new(welcome: bool) -> Self {
        let stack = Stack::new().await;
        let wx = FakeWechat::start().await;
        wx.add_wecom_app(WECOM_CORP_ID, "wecom-secret", 1_000_002);
        wx.add_kf_account(WECOM_CORP_ID, KFID);
        let config = config(welcome);
        let env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", wx.base_url.clone())]);
        let apis = Apis::new(&Http::new(&HttpSettings::default()).unwrap(), &env);
        let table = Table::from_sdk(&stack.sdk, &stack.names.table);
        let cursors = Arc::new(Breakable { inner: DynamoCursors::new(&table), broken: AtomicBool::new(false) });
        let metrics = Arc::new(MemoryMetrics::default());
        let puller = puller(&stack, &config, &apis, cursors.clone(), metrics.clone(), None);
        Self { stack, wx, config, cursors, metrics, puller }
    }

    /// A FIFO pull queue of the test's own.
    async fn pull_queue(&self) -> String {
        let created = self
            .stack
            .sqs
            .create_queue()
            .queue_name(format!("{}-kf.fifo", self.stack.names.table))
            .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap();
        created.queue_url.unwrap()
    }

    /// Loses the account's cursor: the next pull reads the last three days again.
    async fn forget_cursor(&self) {
        let key = format!("cursor#{}", self.config.kf[0].state_key());
        aws_sdk_dynamodb::Client::new(&self.stack.sdk)
            .delete_item()
            .table_name(&self.stack.names.table)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(key))
            .send()
            .await
            .unwrap();
    }

    async fn published(&self) -> Vec<Inbound> {
        let messages = self.stack.drain(&self.stack.urls.inbound).await;
        messages.iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect()
    }
}

fn texts(inbounds: &[Inbound]) -> Vec<String> {
    let mut texts: Vec<String> = inbounds.iter().filter_map(|i| i.text.clone()).collect();
    texts.sort();
    texts
}

#[tokio::test]
async fn each_customer_message_reaches_the_bot_once_across_pages_empty_pages_retried_callbacks_and_overlapping_pulls() {
    let rig = Rig::new(false).await;
    rig.wx.set_kf_page_size(3);
    let said: Vec<String> = (1..=5).map(|i| format!("第{i}句")).collect();
    for text in &said {
        rig.wx.kf_customer_says(KFID, CUSTOMER, text);
    }
    // The service repeats an item on a later page now and then.
    let first = rig.wx.kf_customer_says(KFID, CUSTOMER, "重复");
    rig.wx.kf_push_item(
        KFID,
        json!({"msgid": first, "open_kfid": KFID, "external_userid": CUSTOMER, "send_time": 1, "origin": 3,
               "msgtype": "text", "text": {"content": "重复"}}),
    );
    rig.wx.kf_empty_pages(KFID, 2);
    let token = rig.wx.kf_callback_token(KFID);
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!((report.published, report.duplicates), (6, 1), "{report:?}");
    assert_eq!(report.pages, 5, "two empty pages with has_more 1 did not stop the pull: {report:?}");
    let published = rig.published().await;
    let mut expected = said.clone();
    expected.push("重复".into());
    expected.sort();
    assert_eq!(texts(&published), expected);
    let inbound = &published[0];
    assert_eq!(
        (inbound.channel, inbound.account.as_str(), inbound.conversation.id.as_str()),
        (Channel::WecomKf, "support", CUSTOMER)
    );
    assert!(inbound.id.starts_with("wecom_kf:support:"));

    // WeChat retries the callback (same token) and another arrives: nothing new to publish.
    rig.puller.pull(KFID, Some(&token)).await.unwrap();
    let token = rig.wx.kf_callback_token(KFID);
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!(report.published, 0, "{report:?}");
    assert!(rig.published().await.is_empty());
    // A new message is the only one the next pull publishes.
    rig.wx.kf_customer_says(KFID, CUSTOMER, "还有一个问题");
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!(report.published, 1);
    assert_eq!(texts(&rig.published().await), ["还有一个问题"]);
    // Two pulls at once over the same new items (a second puller, were the queue not FIFO):
    // each item is published by one of them; the other stops or skips it.
    for i in 0..4 {
        rig.wx.kf_customer_says(KFID, CUSTOMER, &format!("同时{i}"));
    }
    let (a, b) = tokio::join!(rig.puller.pull(KFID, Some(&token)), rig.puller.pull(KFID, Some(&token)));
    let published: usize = [&a, &b].iter().filter_map(|r| r.as_ref().ok()).map(|r| r.published).sum();
    assert_eq!(published, 4, "{a:?} {b:?}");
    assert_eq!(texts(&rig.published().await), ["同时0", "同时1", "同时2", "同时3"]);
    assert_eq!(rig.wx.kf_tokenless_pulls(), 0);
}

#[tokio::test]
async fn a_puller_dying_before_it_saved_its_cursor_loses_and_repeats_nothing() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "一");
    rig.wx.kf_customer_says(KFID, CUSTOMER, "二");
    rig.cursors.broken.store(true, Ordering::SeqCst);
    let token = rig.wx.kf_callback_token(KFID);
    let err = rig.puller.pull(KFID, Some(&token)).await.unwrap_err();
    assert!(matches!(err, PullError::Store(_)), "{err}");
    assert_eq!(texts(&rig.published().await), ["一", "二"], "published before the cursor");
    assert!(rig.cursors.load(&rig.config.kf[0].state_key()).await.unwrap().is_none());

    rig.cursors.broken.store(false, Ordering::SeqCst);
    rig.wx.kf_customer_says(KFID, CUSTOMER, "三");
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!((report.published, report.duplicates), (1, 2), "{report:?}");
    assert_eq!(texts(&rig.published().await), ["三"]);
    assert!(rig.cursors.load(&rig.config.kf[0].state_key()).await.unwrap().is_some());
}

#[tokio::test]
async fn a_pull_without_a_cursor_answers_only_what_is_newer_than_the_horizon() {
    let rig = Rig::new(false).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (i, age) in [7200u64, 3600, 601].into_iter().enumerate() {
        rig.wx.kf_push_item(
            KFID,
            json!({"msgid": format!("old{i}"), "open_kfid": KFID, "external_userid": CUSTOMER, "send_time": now - age,
                   "origin": 3, "msgtype": "text", "text": {"content": format!("旧{i}")}}),
        );
    }
    rig.wx.kf_customer_says(KFID, CUSTOMER, "新的");
    let report = rig.puller.pull(KFID, None).await.unwrap();
    assert_eq!((report.published, report.too_old), (1, 3), "{report:?}");
    assert_eq!(texts(&rig.published().await), ["新的"]);
    assert_eq!(rig.wx.kf_tokenless_pulls(), 1);
}

#[tokio::test]
async fn an_expired_callback_token_pulls_on_without_it_and_servicer_messages_are_not_dispatched() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "有人吗");
    rig.wx.kf_push_item(
        KFID,
        json!({"msgid": "servicer-1", "open_kfid": KFID, "external_userid": CUSTOMER, "send_time": 1_900_000_000u64,
               "origin": 5, "servicer_userid": "zhangsan", "msgtype": "text", "text": {"content": "我是人工客服"}}),
    );
    let report = rig.puller.pull(KFID, Some("ENCnot-a-token-wechat-issued")).await.unwrap();
    assert_eq!((report.published, report.servicer), (1, 1), "{report:?}");
    assert_eq!(texts(&rig.published().await), ["有人吗"]);
    assert_eq!(rig.wx.kf_tokenless_pulls(), 1, "once the token was refused (95007)");
}

#[tokio::test]
async fn a_customer_entering_the_session_gets_the_welcome_inline_once() {
    let rig = Rig::new(true).await;
    let code = rig.wx.kf_enter_session(KFID, CUSTOMER);
    let token = rig.wx.kf_callback_token(KFID);
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!((report.welcomed, report.published), (1, 0), "{report:?}");
    let welcomes = rig.wx.deliveries_of(Api::KfEvent);
    assert_eq!(welcomes.len(), 1);
    assert_eq!(welcomes[0].body["code"], code.as_str());
    assert_eq!(welcomes[0].body["text"]["content"], "您好，我是智能助手。");
    // The cursor lost, the next pull reads the event again: its marker drops it.
    rig.forget_cursor().await;
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!((report.duplicates, report.welcomed), (1, 0), "{report:?}");
    assert_eq!(rig.wx.deliveries_of(Api::KfEvent).len(), 1, "an event is handled once");
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn a_reply_goes_once_with_a_stable_msgid_takes_a_new_session_and_a_sixth_part_is_refused_unsent() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "在吗");
    let sender = kf_sender(&rig);
    let record = |key: &str| reply(key, text(&format!("回复 {key}")), 1);
    let permanent = |o: Outcome| match o {
        Outcome::Permanent { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    // Before any pull, the customer has not written as far as the bridge knows: refused unsent.
    let reason = permanent(sender.send_record(&record("r0")).await.1);
    assert!(reason.contains("48 hours"), "{reason}");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();

    let sent = |o: &Outcome| matches!(o, Outcome::Sent { .. });
    assert!(sent(&sender.send_record(&record("r1")).await.1));
    assert_eq!(rig.wx.kf_service_state(KFID, CUSTOMER), 1, "the new session was taken (0 → 1)");
    assert!(matches!(sender.send_record(&record("r1")).await.1, Outcome::Sent { already_sent: 1, .. }));
    let sends = rig.wx.deliveries_of(Api::KfSend);
    assert_eq!(sends.len(), 1, "a redelivery is sent once");
    assert_eq!(sends[0].body["msgid"], shared::channels::kf::outbound::msgid("sent:wecom_kf:support:r1").as_str());
    for key in ["r2", "r3", "r4", "r5"] {
        assert!(sent(&sender.send_record(&record(key)).await.1), "{key}");
    }
    let reason = permanent(sender.send_record(&record("r6")).await.1);
    assert!(reason.contains("5 messages"), "{reason}");
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 5, "the sixth was never sent");

    // The customer writes again: a fresh allowance. A servicer then takes the session over.
    rig.wx.kf_customer_says(KFID, CUSTOMER, "还有");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert!(sent(&sender.send_record(&record("r7")).await.1));
    rig.wx.set_kf_service_state(KFID, CUSTOMER, 3);
    let reason = permanent(sender.send_record(&record("r8")).await.1);
    assert!(reason.ends_with("a human servicer has the session"), "{reason}");
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 6);
    assert!(rig.wx.problems().is_empty(), "nothing reached WeChat that it refused: {:#?}", rig.wx.problems());
}

/// A pull without a cursor fails after its first page: the retry still has the horizon (kept
/// with the saved cursor), so the old history the first page did not reach is not answered.
#[tokio::test]
async fn a_first_pull_failing_midway_keeps_its_horizon_for_the_retry() {
    let rig = Rig::new(false).await;
    rig.wx.set_kf_page_size(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for i in 0..3u64 {
        rig.wx.kf_push_item(
            KFID,
            json!({"msgid": format!("old{i}"), "open_kfid": KFID, "external_userid": CUSTOMER, "send_time": now - 7200 + i,
                   "origin": 3, "msgtype": "text", "text": {"content": format!("旧{i}")}}),
        );
    }
    rig.wx.kf_customer_says(KFID, CUSTOMER, "新的");
    rig.wx.inject("/cgi-bin/kf/sync_msg", fakes::Fault::Delay(std::time::Duration::ZERO));
    rig.wx.inject("/cgi-bin/kf/sync_msg", fakes::Fault::Errcode(-1));
    let token = rig.wx.kf_callback_token(KFID);
    let err = rig.puller.pull(KFID, Some(&token)).await.unwrap_err();
    assert!(matches!(err, PullError::Api(_)), "{err}");
    let report = rig.puller.pull(KFID, Some(&token)).await.unwrap();
    assert_eq!((report.published, report.too_old), (1, 2), "{report:?}");
    assert_eq!(texts(&rig.published().await), ["新的"]);
    // Once the end was reached, the cursor is WeChat's alone: later items are all answered.
    let (stored, _) = rig.cursors.load(&rig.config.kf[0].state_key()).await.unwrap().unwrap();
    assert!(stored.starts_with("kfc"), "{stored}");
}

/// WeChat's `kf_msg_or_event` on the serving app's route is answered at once after the pull it
/// asks for is queued (to the FIFO pull queue, grouped per kf account); a retried callback
/// (the same Token) queues nothing new, another Token queues another pull.
#[tokio::test]
async fn a_kf_callback_queues_one_pull_per_token_on_the_fifo_queue() {
    use shared::channels::wecom::{simulate, WecomCallback};
    use shared::core::callback::{CallbackRequest, CallbackService};
    use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
    let rig = Rig::new(false).await;
    let fifo = rig.pull_queue().await;
    let queues = InboundQueues {
        inbound: Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &rig.stack.urls.inbound)),
        media: None,
        kf: Some(Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &fifo))),
    };
    let service = WecomCallback::new(
        &rig.config.wecom,
        shared::core::callback::DEFAULT_REPLAY_WINDOW_SECS,
        Arc::new(queues),
        Arc::new(SystemClock),
    )
    .with_metrics(rig.metrics.clone());
    let crypt = MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), WECOM_CORP_ID);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let callback = |token: &str, nonce: &str| {
        let xml = simulate::kf_msg_or_event(WECOM_CORP_ID, token, KFID, now);
        simulate::sign_callback(&crypt, &xml, now, nonce, [7; 16])
    };
    let token = rig.wx.kf_callback_token(KFID);
    for (i, token) in [token.as_str(), token.as_str(), "ENCanotherCallbackToken"].into_iter().enumerate() {
        let signed = callback(token, &format!("n{i}"));
        let request =
            CallbackRequest { method: "POST", app: "hr", raw_query: &signed.query, body: signed.body.as_bytes() };
        assert_eq!(service.serve(request).await.status, 200);
    }
    let pulls = rig.stack.drain(&fifo).await;
    assert_eq!(pulls.len(), 2, "one pull per Token");
    let inbound: Inbound = serde_json::from_str(pulls[0].body().unwrap()).unwrap();
    assert_eq!(inbound.raw["OpenKfId"], KFID);
    assert!(!inbound.id.contains(&token), "the Token is not in the id: {}", inbound.id);
    assert!(rig.stack.drain(&rig.stack.urls.inbound).await.is_empty(), "no event for the bots");

    // The account's API management moves to this app: logged and counted, nothing queued.
    let xml = format!(
        "<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[kf_account_auth_change]]></Event><AuthAddOpenKfId><![CDATA[{KFID}]]></AuthAddOpenKfId></xml>"
    );
    let signed = simulate::sign_callback(&crypt, &xml, now, "auth", [9; 16]);
    let request = CallbackRequest { method: "POST", app: "hr", raw_query: &signed.query, body: signed.body.as_bytes() };
    assert_eq!(service.serve(request).await.status, 200);
    let counted = rig.metrics.counts("KfAccountAuthChange");
    assert_eq!(counted.len(), 1);
    assert!(counted[0].contains(&("added".to_owned(), KFID.to_owned())), "{counted:?}");
    assert!(rig.stack.drain(&fifo).await.is_empty(), "no pull");
    assert!(rig.stack.drain(&rig.stack.urls.inbound).await.is_empty(), "nothing for the bots");
}

/// The puller function's batch: the pull requests of one account are served by one pull with
/// the freshest Token; one without an account is dropped, not retried.
#[tokio::test]
async fn a_batch_pulls_each_account_once_with_its_freshest_token() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "你好");
    let stale = "ENCexpiredLongAgo";
    let fresh = rig.wx.kf_callback_token(KFID);
    let record = |id: &str, raw: serde_json::Value| Record {
        message_id: id.into(),
        receipt_handle: "r".into(),
        body: json!({"raw": raw}).to_string(),
        receive_count: 1,
        group: None,
    };
    let records = [
        record("a", json!({"OpenKfId": KFID, "Token": stale})),
        record("b", json!({"OpenKfId": KFID, "Token": fresh})),
        record("c", json!({"Event": "kf_msg_or_event"})),
    ];
    let failed = rig.puller.handle_batch(&records).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(rig.wx.calls("/cgi-bin/kf/sync_msg"), 1, "one pull, with the fresh Token (no 95007)");
    assert_eq!(texts(&rig.published().await), ["你好"]);
    // A pull that fails reports every request of its account.
    rig.wx.inject("/cgi-bin/kf/sync_msg", fakes::Fault::Errcode(-1));
    let failed = rig.puller.handle_batch(&records[..2]).await;
    assert_eq!(failed, ["a", "b"]);
}

/// The sender on the test's stack, with the media bucket.
fn kf_sender(rig: &Rig) -> shared::services::sender::Sender {
    let env = Env::from_vars([
        ("WXBRIDGE_TABLE", rig.stack.names.table.clone()),
        ("WXBRIDGE_OUTBOUND_QUEUE_URL", rig.stack.urls.outbound.clone()),
        ("WXBRIDGE_DLQ_URL", rig.stack.urls.outbound_dlq.clone()),
        ("WXBRIDGE_MEDIA_BUCKET", rig.stack.names.bucket.clone()),
        ("WXBRIDGE_WECOM_API_BASE", rig.wx.base_url.clone()),
        ("AWS_ENDPOINT_URL", crate::support::endpoint()),
    ]);
    sender::build(rig.config.clone(), &env, &rig.stack.sdk).unwrap()
}

/// A reply to the customer on the outbound queue, received for the `receive_count`th time.
fn reply(key: &str, content: serde_json::Value, receive_count: u32) -> Record {
    Record {
        message_id: key.into(),
        receipt_handle: "r".into(),
        body: json!({"v": 1, "channel": "wecom_kf", "account": "support", "to": CUSTOMER, "content": content,
                     "idempotency_key": key})
        .to_string(),
        receive_count,
        group: None,
    }
}

fn text(text: &str) -> serde_json::Value {
    json!({"type": "text", "text": text})
}

/// WeChat takes a reply but its answer is lost (a gateway error after the send): the retry
/// names the same msgid, WeChat refuses the repeat, and the reply counts as sent: the customer
/// got it once, and it took one of the five messages, not two.
#[tokio::test]
async fn a_reply_whose_answer_was_lost_is_sent_once_and_counted_once() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "在吗");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    let sender = kf_sender(&rig);
    rig.wx.inject("/cgi-bin/kf/send_msg", fakes::Fault::LoseAnswer(502));
    let outcome = sender.send_record(&reply("r1", text("您好"), 1)).await.1;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 1, "WeChat has it");

    let outcome = sender.send_record(&reply("r1", text("您好"), 2)).await.1;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 1, "the customer got it once");
    let problems = rig.wx.problems();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("msgid exist"), "the repeat was refused by its msgid: {problems:?}");

    for key in ["r2", "r3", "r4", "r5"] {
        let outcome = sender.send_record(&reply(key, text(key), 1)).await.1;
        assert!(matches!(outcome, Outcome::Sent { .. }), "{key}: {outcome:?}");
    }
    let outcome = sender.send_record(&reply("r6", text("r6"), 1)).await.1;
    assert!(matches!(&outcome, Outcome::Permanent { reason, .. } if reason.contains("5 messages")), "{outcome:?}");
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 5);
}

/// A servicer takes the session in the WeCom client and writes: the pull stores the session
/// as a human's (with who), dispatches nothing of theirs, and the bot's next reply is refused
/// with the reason, unsent.
#[tokio::test]
async fn a_human_takeover_is_stored_and_the_bots_next_reply_goes_to_the_dlq_unsent() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "我要退货");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    let sender = kf_sender(&rig);
    // Taking the new session fails for a passing reason: tried again, not dead-lettered.
    rig.wx.inject("/cgi-bin/kf/service_state/trans", fakes::Fault::Errcode(-1));
    let outcome = sender.send_record(&reply("r1", text("好的"), 1)).await.1;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert!(matches!(sender.send_record(&reply("r1", text("好的"), 2)).await.1, Outcome::Sent { .. }));

    rig.wx.kf_servicer_takes_over(KFID, CUSTOMER, "zhangsan");
    rig.wx.kf_servicer_says(KFID, CUSTOMER, "zhangsan", "您好，我是张三");
    let report = rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert_eq!((report.sessions, report.servicer, report.published), (1, 1, 0), "{report:?}");
    assert!(rig.published().await.iter().all(|i| i.text.as_deref() != Some("您好，我是张三")));
    let window = shared::channels::kf::outbound::window_key(&rig.config.kf[0], CUSTOMER);
    let (state, servicer, _) = rig.puller.windows.last_session(&window).await.unwrap().expect("stored");
    assert_eq!((state, servicer.as_deref()), (3, Some("zhangsan")));

    let outcome = sender.send_record(&reply("r2", text("还需要什么？"), 1)).await.1;
    assert!(
        matches!(&outcome, Outcome::Permanent { reason, .. } if reason.ends_with("a human servicer has the session")),
        "{outcome:?}"
    );
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 1, "only the reply before the takeover");
    // Queued for a servicer: the same refusal, saying so.
    rig.wx.set_kf_service_state(KFID, CUSTOMER, 2);
    let outcome = sender.send_record(&reply("r3", text("稍等"), 1)).await.1;
    assert!(
        matches!(&outcome, Outcome::Permanent { reason, .. } if reason.contains("a human servicer has the session (it is queued")),
        "{outcome:?}"
    );
    // The servicer ends the session; the customer writes again: a new session the bot takes.
    rig.wx.set_kf_service_state(KFID, CUSTOMER, 4);
    rig.wx.kf_customer_says(KFID, CUSTOMER, "还在吗");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert!(matches!(sender.send_record(&reply("r4", text("在的"), 1)).await.1, Outcome::Sent { .. }));
    assert_eq!(rig.wx.kf_service_state(KFID, CUSTOMER), 1);
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 2);
    let problems = rig.wx.problems();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// WeChat accepted a reply and later reports it undelivered (`msg_send_fail`): the pull marks
/// the part's send record with the failure type and counts it.
#[tokio::test]
async fn a_reply_wechat_could_not_deliver_marks_its_send_record_and_is_counted() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "你好");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    let sender = kf_sender(&rig);
    assert!(matches!(sender.send_record(&reply("r1", text("您好"), 1)).await.1, Outcome::Sent { .. }));
    let msgid = rig.wx.deliveries_of(Api::KfSend)[0].body["msgid"].as_str().unwrap().to_owned();

    rig.wx.kf_send_fails(KFID, CUSTOMER, &msgid, 10);
    let report = rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert_eq!(report.send_failed, 1, "{report:?}");
    let counted = rig.metrics.counts("KfSendFailed");
    assert_eq!(counted.len(), 1);
    assert!(counted[0].contains(&("fail_type".to_owned(), "10".to_owned())), "{counted:?}");
    assert!(counted[0].contains(&("reason".to_owned(), "the customer refused the message".to_owned())));

    let window = shared::channels::kf::outbound::window_key(&rig.config.kf[0], CUSTOMER);
    let item = aws_sdk_dynamodb::Client::new(&rig.stack.sdk)
        .get_item()
        .table_name(&rig.stack.names.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("kfsent#{window}:{msgid}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the send was recorded");
    assert_eq!(item["fail_type"].as_n().unwrap(), "10");
    assert_eq!(item["part"].as_s().unwrap(), "sent:wecom_kf:support:r1");
    // The event is handled once: read again after the cursor was lost, it counts nothing more.
    rig.forget_cursor().await;
    let report = rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert_eq!((report.send_failed, report.duplicates), (0, 2), "{report:?}");
    assert_eq!(rig.metrics.counts("KfSendFailed").len(), 1);
}

/// Pictures and files go to the customer by the serving app's upload; a customer's picture
/// comes in by the media step.
#[tokio::test]
async fn a_picture_reply_is_uploaded_by_the_serving_app_and_sent_by_its_media_id() {
    let rig = Rig::new(false).await;
    rig.wx.kf_customer_says(KFID, CUSTOMER, "发张图");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    let sender = kf_sender(&rig);
    let photo = crate::media::png(40_000, 9);
    let key = format!("media/{}", crate::media::sha256(&photo));
    rig.stack.media.put_bytes(&key, photo.clone(), "image/png").await.unwrap();
    let outcome = sender.send_record(&reply("p1", json!({"type": "image", "media": {"key": key}}), 1)).await.1;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    let sends = rig.wx.deliveries_of(Api::KfSend);
    assert_eq!(sends[0].body["msgtype"], "image");
    let media_id = sends[0].body["image"]["media_id"].as_str().unwrap();
    assert_eq!(rig.wx.media(media_id).expect("uploaded").1, photo, "WeChat got the picture");
    // A card is not a kf message: refused before anything is sent.
    let card = json!({"type": "textcard", "title": "t", "description": "d", "url": "https://example.com/"});
    let outcome = sender.send_record(&reply("p2", card, 1)).await.1;
    assert!(matches!(&outcome, Outcome::Permanent { reason, .. } if reason.contains("微信客服")), "{outcome:?}");
    assert_eq!(rig.wx.deliveries_of(Api::KfSend).len(), 1);
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

/// A customer's picture: the pull puts it on the media queue, the media step fetches it with
/// the serving app's `media/get` into the bucket, and the bot gets it with its link.
#[tokio::test]
async fn a_customers_picture_goes_by_the_media_step_to_the_bot_with_its_link() {
    use shared::services::media::{MediaService, MediaSettings};
    let rig = Rig::new(false).await;
    let photo = crate::media::png(30_000, 4);
    let media_id = rig.wx.add_wecom_media(WECOM_CORP_ID, photo.clone(), "photo.png", "image/png");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    rig.wx.kf_push_item(
        KFID,
        json!({"msgid": "img-1", "open_kfid": KFID, "external_userid": CUSTOMER, "send_time": now, "origin": 3,
               "msgtype": "image", "image": {"media_id": media_id}}),
    );
    let report = rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert_eq!(report.published, 1, "{report:?}");
    assert!(rig.published().await.is_empty(), "nothing reaches the bot unfetched");

    let env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", rig.wx.base_url.clone())]);
    let apis = Apis::new(&Http::new(&HttpSettings::default()).unwrap(), &env);
    let table = Table::from_sdk(&rig.stack.sdk, &rig.stack.names.table);
    let tokens = Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), Arc::new(SystemClock)));
    let media = MediaService {
        sources: Arc::new(shared::channels::MediaSources::new(&rig.config, &apis, &tokens, Vec::new())),
        store: Arc::new(rig.stack.media.clone()),
        inbound: Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &rig.stack.urls.inbound)),
        clock: Arc::new(SystemClock),
        settings: MediaSettings::default(),
        requeue: None,
        max_receives: Some(6),
    };
    let records = crate::media::receive(&rig.stack, &rig.stack.urls.media, 2).await;
    assert_eq!(records.len(), 1);
    assert!(media.handle_batch(&records).await.is_empty());
    let resolved = rig.published().await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].channel, Channel::WecomKf);
    crate::media::assert_stored(resolved[0].media.as_ref().expect("the picture"), &photo).await;
    crate::media::assert_valid(&resolved[0]);
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

/// A backlog longer than one run's pages: the run saves its progress and queues a follow-on
/// pull in the account's group instead of failing (a long backlog never reaches the DLQ).
#[tokio::test]
async fn a_backlog_longer_than_one_run_goes_on_in_a_follow_on_pull() {
    let rig = Rig::new(false).await;
    let fifo = rig.pull_queue().await;
    let env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", rig.wx.base_url.clone())]);
    let apis = Apis::new(&Http::new(&HttpSettings::default()).unwrap(), &env);
    let kf: Arc<dyn shared::core::ports::Publisher> = Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &fifo));
    let puller = puller(&rig.stack, &rig.config, &apis, rig.cursors.clone(), rig.metrics.clone(), Some(kf));
    rig.wx.set_kf_page_size(1);
    for i in 0..7 {
        rig.wx.kf_customer_says(KFID, CUSTOMER, &format!("积压{i}"));
    }
    let request =
        pull_request("p1", json!({"raw": {"OpenKfId": KFID, "Token": rig.wx.kf_callback_token(KFID)}}).to_string());
    assert!(puller.handle_batch(&[request]).await.is_empty(), "acknowledged: the progress is saved");
    assert_eq!(rig.published().await.len(), shared::channels::kf::puller::MAX_PAGES);
    let follow_on = rig.stack.drain(&fifo).await;
    assert_eq!(follow_on.len(), 1, "one follow-on pull");
    let record = pull_request("p2", follow_on[0].body().unwrap().to_owned());
    assert!(puller.handle_batch(&[record]).await.is_empty());
    assert_eq!(texts(&rig.published().await), ["积压5", "积压6"], "the rest, once");
    assert!(rig.stack.drain(&fifo).await.is_empty(), "no more follow-ons");
}

/// Hostile or odd items: an id far longer than WeChat's, a send time in the future. Neither
/// stalls the account nor holds a customer's window shut.
#[tokio::test]
async fn an_oversized_id_or_a_future_send_time_neither_stalls_the_pull_nor_locks_the_window() {
    let rig = Rig::new(false).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    rig.wx.kf_push_item(
        KFID,
        json!({"msgid": "huge-user", "open_kfid": KFID, "external_userid": "w".repeat(3000), "send_time": now,
               "origin": 3, "msgtype": "text", "text": {"content": "x"}}),
    );
    rig.wx.kf_push_item(
        KFID,
        json!({"msgid": "future", "open_kfid": KFID, "external_userid": CUSTOMER, "send_time": now + 10 * 86_400,
               "origin": 3, "msgtype": "text", "text": {"content": "来自未来"}}),
    );
    let report = rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    assert_eq!((report.published, report.other), (1, 1), "{report:?}");
    let sender = kf_sender(&rig);
    for key in ["f1", "f2", "f3", "f4", "f5"] {
        assert!(matches!(sender.send_record(&reply(key, text(key), 1)).await.1, Outcome::Sent { .. }), "{key}");
    }
    // The customer writes again, now: a fresh allowance, though the earlier item claimed a
    // later time.
    rig.wx.kf_customer_says(KFID, CUSTOMER, "再问一次");
    rig.puller.pull(KFID, Some(&rig.wx.kf_callback_token(KFID))).await.unwrap();
    let outcome = sender.send_record(&reply("f6", text("好的"), 1)).await.1;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
}

/// A pull request as the puller's queue delivers it.
fn pull_request(id: &str, body: String) -> Record {
    Record { message_id: id.into(), receipt_handle: "r".into(), body, receive_count: 1, group: None }
}
