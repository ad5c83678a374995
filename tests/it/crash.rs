//! Crash points and time budgets: a sender, dispatcher or callback that dies between two steps,
//! and an invocation that runs out of time. Each test plays the dead process by leaving the
//! state it would have left (a claim without its completion, a message published twice) and
//! checks that nothing acknowledged is lost and nothing reaches the user twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fakes::{Api, FakeWechat, Fault};
use serde_json::{json, Value};
use shared::adapters::memory::{
    MemoryContextTokens, MemoryDedupe, MemoryMetrics, MemoryOutbound, MemoryParkedReplies, MemoryQueue,
    MemoryReplySlots, MemoryTokenStore,
};
use shared::channels::{Apis, Config, Deliveries, DeliveryPorts};
use shared::core::bot::{Bot, BotError};
use shared::core::config::Env;
use shared::core::envelope::{Content, Inbound, OutChannel};
use shared::core::outbound::sent_key;
use shared::core::ports::{Claim, Dedupe, Record, SystemClock};
use shared::core::tokens::Tokens;
use shared::services::dispatcher::Dispatcher;
use shared::services::sender::{Sender, HAND_BACK_S, SEND_LEASE};
use shared::testing::fixtures::{OA_APP_ID, OA_TOKEN, WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

const APP_SECRET: &str = "app-secret-0001";
const OA_SECRET: &str = "oa-secret-0001";
const USER: &str = "ZhangWei";
const OPEN_ID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const MAX_RECEIVES: u32 = 6;

/// A sender on in-memory stores, sending to the fake WeChat.
struct Rig {
    fake: FakeWechat,
    sender: Sender,
    sent: Arc<MemoryDedupe>,
    queue: Arc<MemoryOutbound>,
    metrics: Arc<MemoryMetrics>,
}

async fn rig() -> Rig {
    let fake = FakeWechat::start().await;
    fake.add_wecom_app(WECOM_CORP_ID, APP_SECRET, 1_000_002);
    fake.add_wecom_user(USER);
    fake.add_oa(OA_APP_ID, OA_SECRET);
    fake.add_oa_user(OPEN_ID);
    let config = Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}",
              "encoding_aes_key": "{WECOM_AES_KEY}", "secret": "{APP_SECRET}"}}],
             "oa": [{{"app": "news", "app_id": "{OA_APP_ID}", "token": "{OA_TOKEN}", "app_secret": "{OA_SECRET}"}}]}}"#
    ))
    .unwrap();
    let env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", &fake.base_url), ("WXBRIDGE_OA_API_BASE", &fake.base_url)]);
    let clock = Arc::new(SystemClock);
    let ports = DeliveryPorts {
        tokens: Arc::new(Tokens::new(Arc::new(MemoryTokenStore::default()), clock.clone())),
        contexts: Arc::new(MemoryContextTokens::default()),
        parked: Arc::new(MemoryParkedReplies::default()),
        streams: Arc::new(shared::adapters::memory::MemoryStreams::default()),
        windows: Arc::new(shared::adapters::memory::MemoryCustomerWindows::default()),
        clock: clock.clone(),
    };
    let (sent, queue, metrics) = (
        Arc::new(MemoryDedupe::keeping(shared::core::ports::SENT_TTL)),
        Arc::new(MemoryOutbound::default()),
        Arc::new(MemoryMetrics::default()),
    );
    let sender = Sender {
        deliveries: Deliveries::new(&config, &Apis::from_env(&env).unwrap(), ports),
        sent: sent.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
        clock,
        max_receives: Some(MAX_RECEIVES),
        files: None,
    };
    Rig { fake, sender, sent, queue, metrics }
}

fn record(body: Value, receive_count: u32) -> Record {
    Record {
        message_id: "m-1".into(),
        receipt_handle: "r-1".into(),
        body: body.to_string(),
        receive_count,
        group: None,
    }
}

fn wecom_text(key: &str, text: &str) -> Value {
    json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": USER,
           "content": {"type": "text", "text": text}, "idempotency_key": key})
}

fn oa_text(key: &str, text: &str) -> Value {
    json!({"v": 1, "channel": "oa", "account": "news", "to": OPEN_ID,
           "content": {"type": "text", "text": text}, "idempotency_key": key})
}

impl Rig {
    /// Claims a part as a sender that then died would have, `ago` before now.
    async fn dead_claim(&self, channel: OutChannel, account: &str, key: &str, ago: Duration) {
        let claimed = self.sent.claim(&sent_key(channel, account, key), SystemTime::now() - ago, SEND_LEASE).await;
        assert!(matches!(claimed, Ok(Claim::Claimed { .. })), "{claimed:?}");
    }

    fn retries(&self) -> Vec<(String, u32)> {
        self.queue.retries.lock().unwrap().clone()
    }

    fn dead_letters(&self) -> Vec<(String, Vec<(&'static str, String)>)> {
        self.queue.dead_letters.lock().unwrap().clone()
    }

    fn outcomes(&self) -> Vec<&'static str> {
        self.metrics.recorded.lock().unwrap().iter().map(|m| m.outcome).collect()
    }
}

#[tokio::test]
async fn a_retry_that_finds_a_dead_senders_claim_comes_back_just_after_its_lease() {
    let rig = rig().await;
    // The dead sender claimed 50 s ago: its lease has 10 s left.
    rig.dead_claim(OutChannel::WecomApp, "hr", "k-1", SEND_LEASE - Duration::from_secs(10)).await;
    // However often it came already, the retry is set for the end of the lease, not a backoff.
    assert!(!rig.sender.handle(&record(wecom_text("k-1", "hello"), 5)).await);
    let retries = rig.retries();
    let [(receipt, delay)] = &retries[..] else { panic!("{retries:?}") };
    assert_eq!(receipt, "r-1");
    assert!((10..=12).contains(delay), "came back after {delay} s");
    assert!(rig.fake.deliveries().is_empty());
    assert!(rig.dead_letters().is_empty());
    // On the queue's last receive the wait is not a failure: a fresh copy comes back instead of
    // the DLQ taking the message.
    assert!(rig.sender.handle(&record(wecom_text("k-1", "hello"), MAX_RECEIVES)).await);
    let requeued = rig.queue.requeued.lock().unwrap().clone();
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!((10..=12).contains(&requeued[0].1));
    assert!(rig.dead_letters().is_empty());
}

#[tokio::test]
async fn a_part_whose_sender_died_unrecorded_is_sent_again_with_wecoms_repeat_check() {
    let rig = rig().await;
    // A sender claimed the part, sent it, and died before recording it: the claim is pending
    // and its lease over.
    let body = wecom_text("k-2", "sent once");
    rig.dead_claim(OutChannel::WecomApp, "hr", "k-2", SEND_LEASE + Duration::from_secs(1)).await;
    let out = shared::core::envelope::Outbound::parse(&body.to_string()).unwrap();
    let key = sent_key(OutChannel::WecomApp, "hr", "k-2");
    let delivery = rig.sender.deliveries.get(OutChannel::WecomApp);
    delivery.deliver(&out, &out.content, &key, false).await.unwrap();
    // The retry (a copy on its first receive, as SQS may deliver) takes the claim over and asks
    // WeCom to drop a repeat; WeCom (the fake checks as the documentation says) does.
    assert!(rig.sender.handle(&record(body, 1)).await);
    let sends = rig.fake.deliveries_of(Api::WecomMessage);
    assert_eq!(sends.len(), 1, "the user got it once: {sends:?}");
    assert!(rig.outcomes().contains(&"resent_deduped"), "{:?}", rig.outcomes());
    assert!(rig.fake.problems().is_empty(), "{:?}", rig.fake.problems());
}

#[tokio::test]
async fn where_the_platform_cannot_drop_repeats_a_takeover_resends_and_is_counted() {
    let rig = rig().await;
    rig.dead_claim(OutChannel::Oa, "news", "k-3", SEND_LEASE + Duration::from_secs(1)).await;
    assert!(rig.sender.handle(&record(oa_text("k-3", "at least once"), 2)).await);
    assert_eq!(rig.fake.deliveries_of(Api::OaCustom).len(), 1);
    assert!(rig.outcomes().contains(&"resent_unknown"), "{:?}", rig.outcomes());
}

#[tokio::test]
async fn the_last_receive_dead_letters_with_its_reason_instead_of_leaving_it_to_the_redrive() {
    let rig = rig().await;
    rig.fake.inject("/cgi-bin/message/send", Fault::Errcode(-1));
    assert!(rig.sender.handle(&record(wecom_text("k-4", "busy"), MAX_RECEIVES)).await);
    let letters = rig.dead_letters();
    assert_eq!(letters.len(), 1);
    let reason = letters[0].1.iter().find(|(name, _)| *name == "reason").map(|(_, v)| v.clone()).unwrap();
    assert!(reason.contains("gave up after 6 deliveries") && reason.contains("-1"), "{reason}");
    // Earlier receives still retry.
    rig.fake.inject("/cgi-bin/message/send", Fault::Errcode(-1));
    assert!(!rig.sender.handle(&record(wecom_text("k-5", "busy"), MAX_RECEIVES - 1)).await);
}

#[tokio::test]
async fn a_sender_with_too_little_time_left_starts_no_send_and_hands_the_record_back() {
    let rig = rig().await;
    let deadline = SystemTime::now() + Duration::from_secs(5);
    let failed = rig.sender.handle_batch_until(&[record(wecom_text("k-6", "later"), 1)], Some(deadline)).await;
    assert_eq!(failed, ["m-1"]);
    assert_eq!(rig.retries(), [("r-1".to_owned(), HAND_BACK_S)]);
    assert!(rig.fake.deliveries().is_empty());
    // With time, it goes.
    let deadline = SystemTime::now() + Duration::from_secs(60);
    assert!(rig.sender.handle_batch_until(&[record(wecom_text("k-6", "later"), 2)], Some(deadline)).await.is_empty());
    assert_eq!(rig.fake.deliveries().len(), 1);
}

/// Counts its calls; answers each message with two replies.
#[derive(Default)]
struct TwoReplies(AtomicUsize);

#[async_trait]
impl Bot for TwoReplies {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let text = inbound.text.clone().unwrap_or_default();
        Ok(vec![Content::Text { text: format!("1: {text}") }, Content::Text { text: format!("2: {text}") }])
    }
}

fn inbound(id: &str) -> String {
    json!({"v": 1, "id": id, "channel": "wecom", "account": "hr",
           "conversation": {"kind": "direct", "id": USER}, "sender": {"id": USER},
           "kind": "text", "text": "hi", "received_at": "2026-11-28T00:00:00Z", "sent_at": 1, "raw": {}})
    .to_string()
}

#[tokio::test]
async fn a_dispatcher_run_twice_for_one_message_still_sends_each_reply_once() {
    // Covers a message queued again past the inbound queue's five-minute deduplication (a media
    // step that died after passing it on, whose record returns after its 330 s visibility
    // timeout) and a dispatcher that died after queueing some replies (SQS redelivers).
    let rig = rig().await;
    let (outbound, mut queued) = MemoryQueue::new();
    let bot = Arc::new(TwoReplies::default());
    let dispatcher = Dispatcher {
        bot: bot.clone(),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: None,
    };
    for _ in 0..2 {
        dispatcher.dispatch(&inbound("wecom:hr:42")).await.unwrap();
    }
    assert_eq!(bot.0.load(Ordering::SeqCst), 2);
    let mut count = 1;
    while let Ok(message) = queued.try_recv() {
        assert!(rig.sender.handle(&record(serde_json::from_str(&message.body).unwrap(), count)).await);
        count += 1;
    }
    assert_eq!(count, 5, "four replies queued");
    let texts: Vec<String> = rig
        .fake
        .deliveries_of(Api::WecomMessage)
        .iter()
        .map(|d| d.body["text"]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["1: hi", "2: hi"]);
}

#[tokio::test]
async fn a_dispatcher_with_too_little_time_left_calls_no_bot_and_hands_the_batch_back() {
    let queue = Arc::new(MemoryOutbound::default());
    let bot = Arc::new(TwoReplies::default());
    let (outbound, _queued) = MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot: bot.clone(),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue: Some(queue.clone()),
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: None,
    };
    let records = [Record {
        message_id: "m-9".into(),
        receipt_handle: "r-9".into(),
        body: inbound("wecom:hr:9"),
        receive_count: 1,
        group: None,
    }];
    let failed = dispatcher.handle_batch_until(&records, Some(SystemTime::now() + Duration::from_secs(10))).await;
    assert_eq!(failed, ["m-9"]);
    assert_eq!(bot.0.load(Ordering::SeqCst), 0);
    assert_eq!(queue.retries.lock().unwrap().clone(), [("r-9".to_owned(), 1)]);
}

#[tokio::test]
async fn a_claim_left_by_a_dead_poller_is_published_by_the_next_read_after_its_lease() {
    use shared::core::callback::{publish_once, Published, CLAIM_LEASE};
    let dedupe = MemoryDedupe::default();
    let (queue, mut published) = MemoryQueue::new();
    let message: Inbound = serde_json::from_str(&inbound("wecom:hr:77")).unwrap();
    // The iLink poller claimed the message, then died before publishing (its cursor stayed).
    let dead = dedupe.claim(&message.id, SystemTime::now() - CLAIM_LEASE - Duration::from_secs(1), CLAIM_LEASE).await;
    assert!(matches!(dead, Ok(Claim::Claimed { .. })));
    // The next read of the same message (seconds later) publishes it, once.
    assert_eq!(publish_once(&dedupe, &queue, &SystemClock, &message).await.unwrap(), Published::Now);
    assert_eq!(publish_once(&dedupe, &queue, &SystemClock, &message).await.unwrap(), Published::Before);
    assert!(published.try_recv().is_ok());
    assert!(published.try_recv().is_err());
    // While a live claim holds, the poller keeps its cursor and reads the message again later.
    let other: Inbound = serde_json::from_str(&inbound("wecom:hr:78")).unwrap();
    dedupe.claim(&other.id, SystemTime::now(), CLAIM_LEASE).await.unwrap();
    assert_eq!(publish_once(&dedupe, &queue, &SystemClock, &other).await.unwrap(), Published::ByAnother);
}

/// A bot that is down.
struct Down;

#[async_trait]
impl Bot for Down {
    async fn answer(&self, _: &Inbound) -> Result<Vec<Content>, BotError> {
        Err(BotError("connection refused".into()))
    }
}

#[tokio::test]
async fn a_dispatcher_gives_up_on_the_last_receive_into_the_dlq_with_the_reason() {
    let (dlq, mut dead) = MemoryQueue::new();
    let (outbound, _queued) = MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot: Arc::new(Down),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue: None,
        dead_letter: Some(Arc::new(dlq)),
        max_receives: Some(5),
        streams: None,
        calls: None,
        files: None,
    };
    let at = |receive_count| Record {
        message_id: "m-5".into(),
        receipt_handle: "r-5".into(),
        body: inbound("wecom:hr:5"),
        receive_count,
        group: None,
    };
    // Before the last receive, SQS retries it.
    assert_eq!(dispatcher.handle_batch(&[at(4)]).await, ["m-5"]);
    assert!(dead.try_recv().is_err());
    // On the last, it goes to the DLQ with why, and is not reported (so SQS deletes it).
    assert!(dispatcher.handle_batch(&[at(5)]).await.is_empty());
    let letter = dead.try_recv().unwrap();
    assert_eq!(letter.body, inbound("wecom:hr:5"));
    let reason = letter.attributes.iter().find(|(k, _)| *k == "reason").map(|(_, v)| v.clone()).unwrap();
    assert!(reason.contains("gave up after 5 deliveries") && reason.contains("connection refused"), "{reason}");
    // Something that is not an Inbound goes at once.
    let junk = Record {
        message_id: "m-6".into(),
        receipt_handle: "r-6".into(),
        body: "{}".into(),
        receive_count: 1,
        group: None,
    };
    assert!(dispatcher.handle_batch(&[junk]).await.is_empty());
    assert!(dead.try_recv().unwrap().attributes.iter().any(|(k, v)| *k == "kind" && v == "invalid"));
}

#[tokio::test]
async fn a_failed_dispatch_comes_back_after_a_growing_backoff_not_the_queues_visibility_timeout() {
    let requeue = Arc::new(MemoryOutbound::default());
    let (outbound, _queued) = MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot: Arc::new(Down),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue: Some(requeue.clone()),
        dead_letter: None,
        max_receives: Some(5),
        streams: None,
        calls: None,
        files: None,
    };
    for receive_count in 1..=4 {
        let record = Record {
            message_id: format!("m-{receive_count}"),
            receipt_handle: format!("r-{receive_count}"),
            body: inbound("wecom:hr:7"),
            receive_count,
            group: None,
        };
        assert_eq!(dispatcher.handle_batch(&[record]).await, [format!("m-{receive_count}")]);
    }
    let retries = requeue.retries.lock().unwrap().clone();
    let handles: Vec<&str> = retries.iter().map(|(handle, _)| handle.as_str()).collect();
    assert_eq!(handles, ["r-1", "r-2", "r-3", "r-4"], "each failed record got its own delay");
    let delays: Vec<u32> = retries.iter().map(|(_, delay)| *delay).collect();
    // 10 s, 20 s, 40 s, 80 s (plus up to 4 s of jitter): each later than the one before, and
    // all far below the inbound queue's 960 s visibility timeout.
    for (index, delay) in delays.iter().enumerate() {
        let base = 10 << index;
        assert!((base..base + 5).contains(delay), "delay {index}: {delays:?}");
    }
}

#[tokio::test]
async fn later_records_to_the_same_user_come_back_just_after_the_one_that_failed() {
    let rig = rig().await;
    rig.fake.inject("/cgi-bin/message/send", Fault::Errcode(-1));
    let head =
        Record { message_id: "m-a".into(), receipt_handle: "r-a".into(), ..record(wecom_text("k-a", "first"), 1) };
    let next =
        Record { message_id: "m-b".into(), receipt_handle: "r-b".into(), ..record(wecom_text("k-b", "second"), 1) };
    let failed = rig.sender.handle_batch(&[head, next]).await;
    assert_eq!(failed, ["m-a", "m-b"]);
    // The second waits for the first (order kept) but not for the queue's visibility timeout.
    let retries = rig.retries();
    let (head_delay, next_delay) = (retries[0].1, retries[1].1);
    assert_eq!((retries[0].0.as_str(), retries[1].0.as_str()), ("r-a", "r-b"));
    assert_eq!(next_delay, head_delay + 1);
    assert!(rig.fake.deliveries().is_empty());
}
