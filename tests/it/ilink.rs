//! The iLink poller against the fake's long poll, on in-memory stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fakes::FakeWechat;
use serde_json::{json, Value};
use shared::adapters::memory::{MemoryContextTokens, MemoryDedupe, MemoryLeases, MemoryPollState, MemoryQueue};
use shared::channels::ilink::api::IlinkApi;
use shared::channels::ilink::{Poller, Turn};
use shared::channels::Config;
use shared::core::http::{Http, HttpSettings};
use shared::core::ports::{ContextTokens, Paused, PollState, PortError, QueueMessage, SystemClock};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

const TOKEN: &str = "a1b2c3@im.bot:secret";

struct Rig {
    fake: FakeWechat,
    poller: Poller,
    inbound: UnboundedReceiver<QueueMessage>,
    contexts: Arc<MemoryContextTokens>,
    account: shared::channels::ilink::IlinkAccount,
}

async fn rig(state: Arc<dyn PollState>) -> Rig {
    let fake = FakeWechat::start().await;
    fake.add_ilink_bot(TOKEN);
    fake.set_ilink_hold(Duration::from_millis(100));
    let config = Config::parse(&format!(
        r#"{{"ilink": [{{"account": "a1b2c3@im.bot", "bot_token": "{TOKEN}", "base_url": "{}"}}]}}"#,
        fake.base_url
    ))
    .unwrap();
    let (queue, inbound) = MemoryQueue::new();
    let contexts = Arc::new(MemoryContextTokens::default());
    let mut poller = Poller::new(
        IlinkApi::new(&Http::new(&HttpSettings::default()).unwrap()),
        Arc::new(queue),
        Arc::new(MemoryDedupe::default()),
        contexts.clone(),
        Arc::new(MemoryLeases::default()),
        state,
        Arc::new(SystemClock),
    );
    poller.hold = Duration::from_millis(200);
    poller.retry_delay = Duration::from_millis(20);
    poller.backoff_delay = Duration::from_millis(50);
    poller.margin = Duration::from_millis(100);
    Rig { account: config.ilink[0].clone(), fake, poller, inbound, contexts }
}

fn message(id: u64, text: &str, ctx: &str, at_ms: u64) -> Value {
    json!({"seq": id, "message_id": id, "from_user_id": "u1@im.wechat", "to_user_id": "a1b2c3@im.bot",
        "create_time_ms": at_ms, "message_type": 1, "message_state": 2, "context_token": ctx,
        "item_list": [{"type": 1, "text_item": {"text": text}}]})
}

fn drain(rx: &mut UnboundedReceiver<QueueMessage>) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(serde_json::from_str(&m.body).unwrap());
    }
    out
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[tokio::test]
async fn each_message_reaches_the_inbound_queue_once_though_delivered_twice() {
    let mut rig = rig(Arc::new(MemoryPollState::default())).await;
    rig.fake.push_ilink_message(TOKEN, message(7_300_000_000_000_000_001, "一", "ctx1", 1_000));
    rig.fake.push_ilink_message(TOKEN, message(7_300_000_000_000_000_001, "一", "ctx1", 1_000));
    rig.fake.push_ilink_message(TOKEN, message(7_300_000_000_000_000_002, "二", "ctx2", 2_000));
    rig.fake.push_ilink_message(
        TOKEN,
        json!({"message_id": 9, "from_user_id": "a1b2c3@im.bot", "message_type": 2, "message_state": 2}),
    );
    let turn = rig.poller.run_account(&rig.account, soon(700)).await.unwrap();
    assert_eq!(turn, Turn::Polled { published: 2 });
    let published = drain(&mut rig.inbound);
    let ids: Vec<&str> = published.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ilink:a1b2c3@im.bot:7300000000000000001", "ilink:a1b2c3@im.bot:7300000000000000002"]);
    assert_eq!(published[1]["text"], "二");
    // The reply goes with the user's latest context token.
    assert_eq!(rig.contexts.latest("a1b2c3@im.bot", "u1@im.wechat").await.unwrap().as_deref(), Some("ctx2"));
    assert!(rig.fake.problems().is_empty(), "{:?}", rig.fake.problems());
}

#[tokio::test]
async fn two_pollers_at_once_leave_the_account_to_one() {
    let rig = rig(Arc::new(MemoryPollState::default())).await;
    let poller = Arc::new(rig.poller);
    let (a, b) = (poller.clone(), poller.clone());
    let (account_a, account_b) = (rig.account.clone(), rig.account.clone());
    let first = tokio::spawn(async move { a.run_account(&account_a, soon(600)).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let second = b.run_account(&account_b, soon(600)).await.unwrap();
    assert_eq!(second, Turn::Busy);
    assert!(started.elapsed() < Duration::from_millis(100), "the second exits at once");
    assert!(matches!(first.await.unwrap(), Turn::Polled { .. }));
}

/// Poll state whose first cursor save fails, as a crash between publish and save would.
struct CrashOnce {
    inner: MemoryPollState,
    crashed: AtomicBool,
}

#[async_trait]
impl PollState for CrashOnce {
    async fn cursor(&self, account: &str) -> Result<Option<String>, PortError> {
        self.inner.cursor(account).await
    }
    async fn save_cursor(&self, account: &str, cursor: &str) -> Result<(), PortError> {
        if !self.crashed.swap(true, Ordering::SeqCst) {
            return Err(PortError::new("dynamodb", "the process died here"));
        }
        self.inner.save_cursor(account, cursor).await
    }
    async fn paused(&self, account: &str) -> Result<Option<Paused>, PortError> {
        self.inner.paused(account).await
    }
    async fn pause(&self, account: &str, token: &str, at: std::time::SystemTime) -> Result<(), PortError> {
        self.inner.pause(account, token, at).await
    }
    async fn resume(&self, account: &str) -> Result<(), PortError> {
        self.inner.resume(account).await
    }
}

#[tokio::test]
async fn a_crash_after_publishing_and_before_saving_the_cursor_loses_and_duplicates_nothing() {
    let state = Arc::new(CrashOnce { inner: MemoryPollState::default(), crashed: AtomicBool::new(false) });
    let mut rig = rig(state).await;
    rig.fake.push_ilink_message(TOKEN, message(41, "before the crash", "c1", 1));
    assert!(rig.poller.run_account(&rig.account, soon(600)).await.is_err(), "the turn died at the cursor save");
    // The next turn re-reads from the old cursor; the dedupe absorbs the replay.
    let turn = rig.poller.run_account(&rig.account, soon(600)).await.unwrap();
    assert_eq!(turn, Turn::Polled { published: 0 });
    assert_eq!(drain(&mut rig.inbound).len(), 1);
}

#[tokio::test]
async fn an_expired_session_pauses_the_account_without_a_hot_loop() {
    let mut rig = rig(Arc::new(MemoryPollState::default())).await;
    rig.account.bot_token = secrecy::SecretString::from("revoked@im.bot:x".to_owned());
    let turn = rig.poller.run_account(&rig.account, soon(2_000)).await.unwrap();
    assert_eq!(turn, Turn::Expired { published: 0 });
    assert_eq!(rig.fake.calls("/ilink/bot/getupdates"), 1, "no retry on -14");
    assert_eq!(rig.poller.run_account(&rig.account, soon(2_000)).await.unwrap(), Turn::Paused);
    assert_eq!(rig.fake.calls("/ilink/bot/getupdates"), 1, "a paused account is not polled");
}

#[tokio::test]
async fn server_errors_back_off_and_polling_resumes() {
    let mut rig = rig(Arc::new(MemoryPollState::default())).await;
    for _ in 0..4 {
        rig.fake.inject("/ilink/bot/getupdates", fakes::Fault::HttpStatus(502));
    }
    rig.fake.push_ilink_message(TOKEN, message(77, "after the errors", "c", 1));
    let turn = rig.poller.run_account(&rig.account, soon(1_000)).await.unwrap();
    assert_eq!(turn, Turn::Polled { published: 1 });
    assert_eq!(drain(&mut rig.inbound).len(), 1);
}

#[tokio::test]
async fn on_dynamodb_the_lease_cursor_and_pause_are_shared_by_every_poller() {
    let stack = crate::support::Stack::new().await;
    let make = |rig: &Rig| {
        let mut poller = Poller::new(
            IlinkApi::new(&Http::new(&HttpSettings::default()).unwrap()),
            Arc::new(shared::adapters::aws::SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound)),
            Arc::new(shared::adapters::aws::DynamoDedupe::new(&shared::adapters::aws::Table::from_sdk(
                &stack.sdk,
                &stack.names.table,
            ))),
            Arc::new(shared::adapters::aws::DynamoContextTokens::new(&shared::adapters::aws::Table::from_sdk(
                &stack.sdk,
                &stack.names.table,
            ))),
            Arc::new(shared::adapters::aws::DynamoLeases::new(&shared::adapters::aws::Table::from_sdk(
                &stack.sdk,
                &stack.names.table,
            ))),
            Arc::new(shared::adapters::aws::DynamoPollState::new(&shared::adapters::aws::Table::from_sdk(
                &stack.sdk,
                &stack.names.table,
            ))),
            Arc::new(SystemClock),
        );
        poller.hold = rig.poller.hold;
        poller.margin = rig.poller.margin;
        poller
    };
    let rig = rig(Arc::new(MemoryPollState::default())).await;
    rig.fake.push_ilink_message(TOKEN, message(501, "stored", "c501", 1));
    let (a, b) = (Arc::new(make(&rig)), Arc::new(make(&rig)));
    let account = rig.account.clone();
    let first = tokio::spawn({
        let (a, account) = (a.clone(), account.clone());
        async move { a.run_account(&account, soon(800)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        b.run_account(&account, soon(800)).await.unwrap(),
        Turn::Busy,
        "one poller per account across instances"
    );
    assert_eq!(first.await.unwrap(), Turn::Polled { published: 1 });
    // The cursor is stored: the next turn (any instance) does not publish the message again.
    assert_eq!(b.run_account(&account, soon(500)).await.unwrap(), Turn::Polled { published: 0 });
    assert_eq!(stack.drain(&stack.urls.inbound).await.len(), 1);
    let state = shared::adapters::aws::DynamoPollState::new(&shared::adapters::aws::Table::from_sdk(
        &stack.sdk,
        &stack.names.table,
    ));
    assert!(state.cursor("a1b2c3@im.bot").await.unwrap().is_some());
    let fingerprint = shared::channels::ilink::poller::token_fingerprint(&account.bot_token);
    state.pause("a1b2c3@im.bot", &fingerprint, std::time::SystemTime::now()).await.unwrap();
    assert_eq!(a.run_account(&account, soon(500)).await.unwrap(), Turn::Paused);
    // A new login (a new token) resumes the account from a fresh session.
    let mut relogged = account.clone();
    relogged.bot_token = secrecy::SecretString::from("d4e5f6@im.bot:new".to_owned());
    rig.fake.add_ilink_bot("d4e5f6@im.bot:new");
    assert_eq!(b.run_account(&relogged, soon(500)).await.unwrap(), Turn::Polled { published: 0 });
    assert_eq!(state.paused("a1b2c3@im.bot").await.unwrap(), None);
}

#[tokio::test]
async fn a_message_delivered_again_after_the_cursor_moved_is_published_once() {
    let mut rig = rig(Arc::new(MemoryPollState::default())).await;
    rig.fake.set_ilink_redeliver(Some(Duration::from_millis(150)));
    rig.fake.push_ilink_message(TOKEN, message(7_300_000_000_000_000_077, "again", "c77", 77));
    let turn = rig.poller.run_account(&rig.account, soon(900)).await.unwrap();
    assert_eq!(turn, Turn::Polled { published: 1 });
    assert!(rig.fake.calls("/ilink/bot/getupdates") >= 2, "the re-delivery came in a later poll");
    assert_eq!(drain(&mut rig.inbound).len(), 1);
    assert!(rig.fake.problems().is_empty(), "{:?}", rig.fake.problems());
}

/// The deployed path: the poller Lambda's build publishes to SQS, the dispatcher Lambda's build
/// answers (echo) with typing on, the sender Lambda's build sends with the latest context token.
#[tokio::test]
async fn a_reply_to_an_ilink_message_goes_out_with_the_users_latest_context_token() {
    let stack = crate::support::Stack::new().await;
    let fake = FakeWechat::start().await;
    fake.add_ilink_bot(TOKEN);
    fake.set_ilink_hold(Duration::from_millis(100));
    fake.push_ilink_message(TOKEN, message(9_007_199_254_740_993, "一", "ctx1", 1_000));
    fake.push_ilink_message(TOKEN, message(9_007_199_254_740_995, "二", "ctx2", 2_000));
    let config = Config::parse(&format!(
        r#"{{"ilink": [{{"account": "a1b2c3@im.bot", "bot_token": "{TOKEN}", "base_url": "{}"}}]}}"#,
        fake.base_url
    ))
    .unwrap();
    let (table, inbound, outbound, dlq) = (
        stack.names.table.clone(),
        stack.urls.inbound.clone(),
        stack.urls.outbound.clone(),
        stack.urls.outbound_dlq.clone(),
    );
    let env = shared::core::config::Env::from_vars([
        ("WXBRIDGE_TABLE", table.clone()),
        ("WXBRIDGE_INBOUND_QUEUE_URL", inbound.clone()),
        ("WXBRIDGE_OUTBOUND_QUEUE_URL", outbound.clone()),
        ("WXBRIDGE_DLQ_URL", dlq.clone()),
    ]);

    let mut poller = ilink_poller::build(&env, &stack.sdk).unwrap();
    poller.hold = Duration::from_millis(200);
    poller.margin = Duration::from_millis(100);
    let deadline_ms = shared::core::ports::unix_millis(std::time::SystemTime::now()) + 800;
    let summary = ilink_poller::handle(&poller, &config.ilink, deadline_ms).await;
    assert_eq!((summary.polled, summary.published, summary.paused), (1, 2, 0), "{summary:?}");
    let inbound = stack.drain(&stack.urls.inbound).await;
    assert_eq!(inbound.len(), 2);
    let first = inbound.iter().map(|m| m.body().unwrap()).find(|b| b.contains("\"一\"")).unwrap();

    // The bot answers the older message after the newer one came in.
    let dispatcher = dispatcher::build(&config, &env, &stack.sdk).unwrap();
    assert_eq!(dispatcher.dispatch(first).await.unwrap(), 1);
    let typing: Vec<i64> =
        fake.deliveries_of(fakes::Api::IlinkTyping).iter().map(|d| d.body["status"].as_i64().unwrap()).collect();
    assert_eq!(typing.first(), Some(&1), "typing starts: {typing:?}");
    assert_eq!(typing.last(), Some(&2), "and is cancelled once the bot answered: {typing:?}");

    let sender = sender::build(config.clone(), &env, &stack.sdk).unwrap();
    let outbound = stack.drain(&stack.urls.outbound).await;
    assert_eq!(outbound.len(), 1);
    let record = shared::core::ports::Record {
        message_id: outbound[0].message_id().unwrap().to_owned(),
        receipt_handle: outbound[0].receipt_handle().unwrap().to_owned(),
        body: outbound[0].body().unwrap().to_owned(),
        receive_count: 1,
        group: None,
    };
    assert!(sender.handle(&record).await, "sent");
    let sent = fake.deliveries_of(fakes::Api::Ilink);
    assert_eq!(sent.len(), 1);
    let msg = &sent[0].body["msg"];
    assert_eq!(msg["to_user_id"], "u1@im.wechat");
    assert_eq!(msg["context_token"], "ctx2", "the latest token, not the one of the message answered");
    assert_eq!(msg["item_list"][0]["text_item"]["text"], "一");
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn typing_that_fails_does_not_hold_up_the_answer() {
    let rig = rig(Arc::new(MemoryPollState::default())).await;
    rig.fake.push_ilink_message(TOKEN, message(5, "hi", "c5", 5));
    rig.fake.inject("/ilink/bot/getconfig", fakes::Fault::HttpStatus(502));
    let (queue, mut replies) = MemoryQueue::new();
    let api = IlinkApi::new(&Http::new(&HttpSettings::default()).unwrap());
    let dispatcher = shared::services::dispatcher::Dispatcher {
        bot: Arc::new(shared::services::bots::EchoBot),
        slots: Arc::new(shared::adapters::memory::MemoryReplySlots::default()),
        outbound: Arc::new(queue),
        typing: Some(Arc::new(shared::channels::ilink::IlinkTyping::new(api, std::slice::from_ref(&rig.account)))),
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: None,
    };
    let inbound = message_inbound(&rig.account.account, message(5, "hi", "c5", 5));
    assert_eq!(dispatcher.dispatch(&inbound).await.unwrap(), 1);
    assert_eq!(drain(&mut replies).len(), 1);
    assert!(rig.fake.deliveries_of(fakes::Api::IlinkTyping).is_empty());
}

fn message_inbound(account: &str, raw: Value) -> String {
    let parsed = shared::channels::ilink::WeixinMessage::from_value(&raw).unwrap();
    parsed.to_inbound(account, 0, raw).to_json()
}
