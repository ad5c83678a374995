//! One conversation in order: the FIFO inbound queue (a message group per conversation) and the
//! dispatcher's batches on the emulator. A conversation's messages reach the bot one at a time,
//! in order, while other conversations are answered meanwhile; a message that must come again
//! holds the rest of its conversation; what is given up goes to the FIFO DLQ.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::json;
use shared::adapters::aws::sqs::SqsRedeliver;
use shared::adapters::aws::SqsPublisher;
use shared::adapters::memory::{MemoryQueue, MemoryReplySlots};
use shared::core::bot::{Bot, BotError};
use shared::core::callback::{conversation_group, dedup_id, enqueue, FIFO_DEDUP, FIFO_GROUP};
use shared::core::envelope::{Content, Inbound};
use shared::core::ports::{PortError, Publisher, QueueMessage, Record, Redeliver};
use shared::services::dispatcher::Dispatcher;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::media::receive;
use crate::support::Stack;

/// A text from `user` in a direct chat with the WeCom app `hr`.
fn inbound(id: &str, user: &str, text: &str) -> Inbound {
    serde_json::from_value(json!({"v": 1, "id": format!("wecom:hr:{id}"), "channel": "wecom", "account": "hr",
        "conversation": {"kind": "direct", "id": user}, "sender": {"id": user},
        "kind": "text", "text": text, "received_at": "2026-11-28T00:00:00Z", "sent_at": 1, "raw": {}}))
    .unwrap()
}

/// What the bot saw: (text, "start" | "end", when).
type Log = Arc<Mutex<Vec<(String, &'static str, Instant)>>>;

/// A bot that takes `delay` over each answer and fails on "fail" while `failing` is set.
struct SlowBot {
    delay: Duration,
    log: Log,
    failing: AtomicBool,
}

impl SlowBot {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self { delay, log: Log::default(), failing: AtomicBool::new(false) })
    }

    fn seen(&self, what: &str) -> Vec<String> {
        self.log.lock().unwrap().iter().filter(|(_, w, _)| *w == what).map(|(t, _, _)| t.clone()).collect()
    }

    fn at(&self, text: &str, what: &str) -> Instant {
        let log = self.log.lock().unwrap();
        log.iter()
            .find(|(t, w, _)| t == text && *w == what)
            .map(|(_, _, at)| *at)
            .unwrap_or_else(|| panic!("{text} {what}"))
    }
}

#[async_trait]
impl Bot for SlowBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let text = inbound.text.clone().unwrap_or_default();
        self.log.lock().unwrap().push((text.clone(), "start", Instant::now()));
        tokio::time::sleep(self.delay).await;
        self.log.lock().unwrap().push((text.clone(), "end", Instant::now()));
        if text == "fail" && self.failing.load(Ordering::SeqCst) {
            return Err(BotError("the bot is down".into()));
        }
        Ok(vec![Content::Text { text: format!("re: {text}") }])
    }
}

/// The inbound queue's redelivery, recording each delay it sets.
struct Recording {
    inner: SqsRedeliver,
    delays: Mutex<Vec<(String, u32)>>,
}

#[async_trait]
impl Redeliver for Recording {
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError> {
        self.delays.lock().unwrap().push((receipt_handle.to_owned(), delay_s));
        self.inner.retry_later(receipt_handle, delay_s).await
    }
}

/// The dispatcher on the test's queues, and the receiving end of its outbound queue.
fn dispatcher(
    bot: Arc<SlowBot>,
    stack: &Stack,
    requeue: Option<Arc<dyn Redeliver>>,
) -> (Dispatcher, UnboundedReceiver<QueueMessage>) {
    let (outbound, replies) = MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot,
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue,
        dead_letter: Some(Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound_dlq))),
        max_receives: Some(5),
        streams: None,
        calls: None,
        files: None,
    };
    (dispatcher, replies)
}

/// Deletes the records a batch did not report failed, as the Lambda event source does.
async fn delete_done(stack: &Stack, records: &[Record], failed: &[String]) {
    for record in records.iter().filter(|r| !failed.contains(&r.message_id)) {
        stack
            .sqs
            .delete_message()
            .queue_url(&stack.urls.inbound)
            .receipt_handle(&record.receipt_handle)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn three_quick_messages_of_one_conversation_reach_a_slow_bot_in_order_one_at_a_time_while_another_is_answered() {
    let stack = Stack::new().await;
    let queue = SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound);
    for (id, user, text) in [("1", "alice", "a1"), ("2", "alice", "a2"), ("3", "alice", "a3"), ("4", "bob", "b1")] {
        enqueue(&queue, &inbound(id, user, text)).await.unwrap();
    }
    let bot = SlowBot::new(Duration::from_millis(700));
    let (dispatcher, mut replies) = dispatcher(bot.clone(), &stack, None);
    let dispatcher = Arc::new(dispatcher);
    // Two consumers at once, as Lambda runs several invocations of the dispatcher.
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (dispatcher, bot) = (dispatcher.clone(), bot.clone());
            let stack = &stack;
            async move {
                while bot.seen("end").len() < 4 && Instant::now() < deadline {
                    let records = receive(stack, &stack.urls.inbound, 1).await;
                    let failed = dispatcher.handle_batch(&records).await;
                    delete_done(stack, &records, &failed).await;
                }
            }
        })
        .collect();
    futures_util::future::join_all(consumers).await;

    let alice: Vec<String> = bot.seen("start").into_iter().filter(|t| t.starts_with('a')).collect();
    assert_eq!(alice, ["a1", "a2", "a3"], "in order");
    // One at a time: each starts after the one before it ended.
    assert!(bot.at("a2", "start") >= bot.at("a1", "end") && bot.at("a3", "start") >= bot.at("a2", "end"));
    // Bob is not held up by alice's conversation.
    assert!(bot.at("b1", "end") < bot.at("a3", "start"), "bob answered while alice waited");
    assert_eq!(bot.seen("end").len(), 4, "each answered once");
    assert!(receive(&stack, &stack.urls.inbound, 1).await.is_empty(), "nothing left");
    // Alice's replies were queued in her order.
    let mut queued = Vec::new();
    while let Ok(reply) = replies.try_recv() {
        queued.push(serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["content"]["text"].clone());
    }
    let alice: Vec<_> = queued.iter().filter(|t| t.as_str().is_some_and(|t| t.starts_with("re: a"))).collect();
    assert_eq!(alice, ["re: a1", "re: a2", "re: a3"]);
}

#[tokio::test]
async fn a_failing_message_holds_the_rest_of_its_conversation_while_another_conversation_succeeds() {
    let stack = Stack::new().await;
    let queue = SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound);
    for (id, user, text) in
        [("1", "alice", "a1"), ("2", "alice", "fail"), ("3", "alice", "a3"), ("4", "bob", "b1"), ("5", "bob", "b2")]
    {
        enqueue(&queue, &inbound(id, user, text)).await.unwrap();
    }
    let bot = SlowBot::new(Duration::from_millis(50));
    bot.failing.store(true, Ordering::SeqCst);
    let requeue = Arc::new(Recording {
        inner: SqsRedeliver::from_sdk(&stack.sdk, &stack.urls.inbound),
        delays: Mutex::default(),
    });
    let (dispatcher, _replies) = dispatcher(bot.clone(), &stack, Some(requeue.clone()));

    let records = receive(&stack, &stack.urls.inbound, 1).await;
    assert_eq!(records.len(), 5, "one batch");
    let id_of = |text: &str| {
        let record =
            records.iter().find(|r| serde_json::from_str::<Inbound>(&r.body).unwrap().text.as_deref() == Some(text));
        record.unwrap().message_id.clone()
    };
    let failed = dispatcher.handle_batch(&records).await;
    // The failed one and the one after it in its conversation, in order; bob's both succeed.
    assert_eq!(failed, [id_of("fail"), id_of("a3")]);
    let mut started = bot.seen("start");
    started.sort();
    assert_eq!(started, ["a1", "b1", "b2", "fail"], "a3 was not started before the message ahead of it");
    // Both come back together, after the failed one's backoff (not the 16-minute visibility
    // timeout, which would hold alice's conversation that long).
    let delays = requeue.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 2, "{delays:?}");
    assert_eq!(delays[0].1, delays[1].1);
    assert!((10..=15).contains(&delays[0].1), "{delays:?}");
    delete_done(&stack, &records, &failed).await;

    // Instead of waiting out the backoff: both visible now. SQS hands them out in order.
    for record in records.iter().filter(|r| failed.contains(&r.message_id)) {
        SqsRedeliver::from_sdk(&stack.sdk, &stack.urls.inbound).retry_later(&record.receipt_handle, 0).await.unwrap();
    }
    bot.failing.store(false, Ordering::SeqCst);
    let again = receive(&stack, &stack.urls.inbound, 1).await;
    let ids: Vec<&str> = again.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(ids, [id_of("fail"), id_of("a3")]);
    assert_eq!(again[0].receive_count, 2);
    assert!(dispatcher.handle_batch(&again).await.is_empty());
    let started = bot.seen("start");
    assert_eq!(started[started.len() - 2..], ["fail", "a3"], "the retried one first, then the one behind it");
}

#[tokio::test]
async fn a_message_given_up_on_goes_to_the_fifo_dlq_once_with_its_reason_and_conversation() {
    let stack = Stack::new().await;
    let queue = SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound);
    let message = inbound("9", "alice", "fail");
    enqueue(&queue, &message).await.unwrap();
    // Not an Inbound at all, in a group of its own.
    let junk = QueueMessage {
        body: "{}".into(),
        attributes: vec![(FIFO_GROUP, "junk".into()), (FIFO_DEDUP, "junk-1".into())],
    };
    queue.publish(junk).await.unwrap();
    let bot = SlowBot::new(Duration::ZERO);
    bot.failing.store(true, Ordering::SeqCst);
    let (mut dispatcher, _replies) = dispatcher(bot.clone(), &stack, None);
    // This delivery is the last the queue allows.
    dispatcher.max_receives = Some(1);

    let records = receive(&stack, &stack.urls.inbound, 1).await;
    assert_eq!(records.len(), 2);
    assert!(dispatcher.handle_batch(&records).await.is_empty(), "both done with: SQS deletes them");
    // A dispatcher that died before SQS deleted them hands the same records to the DLQ again:
    // the DLQ's deduplication keeps one copy each.
    assert!(dispatcher.handle_batch(&records).await.is_empty());

    let letters = stack.drain(&stack.urls.inbound_dlq).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let attribute = |m: &aws_sdk_sqs::types::Message, name: &str| {
        m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).unwrap_or_default().to_owned()
    };
    let group = |m: &aws_sdk_sqs::types::Message| {
        m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned().unwrap_or_default()
    };
    let gave_up = letters.iter().find(|m| attribute(m, "kind") == "gave_up").expect("the failing message");
    assert!(attribute(gave_up, "reason").contains("the bot is down"), "{gave_up:?}");
    assert_eq!(group(gave_up), conversation_group(&message), "in its conversation's group");
    let dedup = gave_up.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageDeduplicationId)).cloned();
    let record = records.iter().find(|r| r.body == message.to_json()).unwrap();
    assert_eq!(dedup, Some(dedup_id(&record.message_id)));
    let invalid = letters.iter().find(|m| attribute(m, "kind") == "invalid").expect("the junk");
    assert_eq!(group(invalid), "junk");
}
