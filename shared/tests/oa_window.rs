//! The stretched 5-second window, simulated at 1/10 scale: WeChat delivers a message, waits 500 ms
//! (its 5 s) for an answer, then delivers it again, three deliveries in all. A bot answers after a
//! chosen latency. Exactly one of "passive reply" and "customer-service send" must happen.

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::memory::{MemoryQueue, MemoryReplySlots};
use shared::core::envelope::{Content, Outbound};
use shared::core::ports::ReplySlots;
use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
use shared::protocol::xml;
use shared::services::dispatcher::Dispatcher;
use shared::testing::fixtures::{OA_AES_KEY, SIMULATED_OA_APP_ID, SIMULATED_OA_TOKEN};
use shared::testing::oa_window::{self, SlowEcho, Timings};

/// One message through WeChat's deliveries at 1/10 scale (WeChat waits 500 ms).
async fn run(latency: Duration, safe_mode: bool, msg_id: u64) -> (Vec<(usize, String, bool)>, Vec<Outbound>) {
    let outcome = oa_window::run(Timings::scaled(0.1), latency, safe_mode, msg_id).await;
    let answers = outcome.answers.into_iter().map(|a| (a.delivery, a.body, a.in_time)).collect();
    (answers, outcome.customer_service)
}

/// The text of a passive reply WeChat received in time, decrypting it in safe mode.
fn passive_replies(answers: &[(usize, String, bool)]) -> Vec<(usize, String)> {
    let crypt = MsgCrypt::new(SIMULATED_OA_TOKEN, &EncodingAesKey::parse(OA_AES_KEY).unwrap(), SIMULATED_OA_APP_ID);
    answers
        .iter()
        .filter(|(_, body, in_time)| *in_time && body != "success")
        .map(|(i, body, _)| {
            let fields = xml::parse(body).unwrap();
            let xml_text = match fields.text("Encrypt") {
                Some(encrypt) => {
                    let sig = fields.text("MsgSignature").unwrap();
                    let proof = crypt
                        .verify(sig, fields.text("TimeStamp").unwrap(), fields.text("Nonce").unwrap(), encrypt)
                        .unwrap();
                    crypt.decrypt(proof).unwrap()
                }
                None => body.clone(),
            };
            (*i, xml::parse(&xml_text).unwrap().text("Content").unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_fast_bot_answers_passively_on_the_first_delivery() {
    let (answers, sends) = run(Duration::from_millis(100), false, 1).await;
    assert_eq!(passive_replies(&answers), [(0, "re: ping".to_owned())]);
    assert!(sends.is_empty(), "no customer-service send: {sends:?}");
}

#[tokio::test]
async fn a_bot_taking_seven_seconds_answers_passively_on_the_second_delivery() {
    let (answers, sends) = run(Duration::from_millis(700), true, 2).await;
    let passive = passive_replies(&answers);
    assert_eq!(passive.first().map(|(i, _)| *i), Some(1), "{answers:?}");
    assert!(passive.iter().all(|(_, text)| text == "re: ping"));
    assert!(sends.is_empty());
}

#[tokio::test]
async fn a_bot_taking_twenty_seconds_gets_success_then_exactly_one_customer_service_send() {
    let (answers, sends) = run(Duration::from_millis(2000), true, 3).await;
    assert!(passive_replies(&answers).is_empty(), "{answers:?}");
    // The last delivery answers `success` (by answer_by_ms, inside WeChat's wait; at this scale
    // the margin is only 50 ms, too little to assert on a busy machine).
    assert_eq!(answers.last().unwrap().1, "success");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].channel, shared::core::envelope::OutChannel::Oa);
    assert_eq!(sends[0].to, "oUser");
    assert_eq!(sends[0].idempotency_key, "oa:news:3#0");
    assert_eq!(sends[0].content, Content::Text { text: "re: ping".into() });
}

#[tokio::test]
async fn a_dispatcher_that_runs_twice_fills_once_and_never_also_sends() {
    let slots: Arc<dyn ReplySlots> = Arc::new(MemoryReplySlots::default());
    let (queue, mut rx) = MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot: Arc::new(SlowEcho(Duration::ZERO)),
        slots: slots.clone(),
        outbound: Arc::new(queue),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: None,
    };
    let now = std::time::SystemTime::now();
    slots.arrive("oa:news:9", now, now + Duration::from_secs(1)).await.unwrap();
    // A delivery waiting on the slot takes the reply as soon as it is there.
    let taker = tokio::spawn({
        let slots = slots.clone();
        async move {
            loop {
                if slots.take("oa:news:9").await.unwrap() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let inbound = r#"{"v":1,"id":"oa:news:9","channel":"oa","account":"news","conversation":{"kind":"direct","id":"oUser"},
        "sender":{"id":"oUser"},"kind":"text","text":"hi","received_at":"2026-11-21T00:00:00Z","sent_at":1,"raw":{}}"#;
    dispatcher.dispatch(inbound).await.unwrap();
    taker.await.unwrap();
    dispatcher.dispatch(inbound).await.unwrap();
    assert!(rx.try_recv().is_err(), "the passive reply is the only reply");
}

#[tokio::test]
async fn a_reply_nobody_takes_goes_by_customer_service_once() {
    // WeChat delivers only once here (it may give up early); the bot answers after the held
    // delivery was answered, so no delivery is left to take the reply.
    let mut timings = Timings::scaled(0.1);
    timings.deliveries = 1;
    let outcome = oa_window::run(timings, Duration::from_millis(700), false, 11).await;
    assert_eq!(outcome.passive_on(), None, "{:?}", outcome.answers);
    assert_eq!(outcome.customer_service.len(), 1);
    assert_eq!(outcome.customer_service[0].content, Content::Text { text: "re: ping".into() });
}
