//! The stretched 5-second window, simulated at 1/10 scale: WeChat delivers a message, waits 500 ms
//! (its 5 s) for an answer, then delivers it again, three deliveries in all. A bot answers after a
//! chosen latency. Exactly one of "passive reply" and "customer-service send" must happen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::callback::CallbackRequest;
use shared::config::Config;
use shared::crypto::{plain_signature, EncodingAesKey, MsgCrypt};
use shared::dispatcher::{Bot, BotError, Dispatcher};
use shared::envelope::{Content, Inbound, Outbound};
use shared::memory::{MemoryDedupe, MemoryQueue, MemoryReplySlots};
use shared::oa::service::OaCallback;
use shared::ports::{ReplySlots, SystemClock};
use shared::xml;
use tokio::time::Instant;

const KEY: &str = "RfHDCFpLM98By6wp04UOhB6dpmdAqt40QAHcQiASytv";
const APP_ID: &str = "wx6d1c9e8f2a3b4c57";
const TOKEN: &str = "oaBridgeTok2024";
/// WeChat's 5 s, scaled.
const WECHAT_WAIT: Duration = Duration::from_millis(500);

fn config() -> Config {
    Config::parse(&format!(
        r#"{{"oa": [{{"app": "news", "app_id": "{APP_ID}", "token": "{TOKEN}", "encoding_aes_key": "{KEY}"}}],
             "oa_window": {{"hold_ms": 550, "answer_by_ms": 450, "deliveries": 3}}}}"#
    ))
    .unwrap()
}

/// Echoes after `latency`.
struct SlowEcho(Duration);

#[async_trait]
impl Bot for SlowEcho {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        tokio::time::sleep(self.0).await;
        Ok(vec![Content::Text { text: format!("re: {}", inbound.text.clone().unwrap_or_default()) }])
    }
}

#[derive(Debug, Default)]
struct Seen {
    /// (delivery index, answer, arrived within WeChat's wait)
    answers: Vec<(usize, String, bool)>,
}

/// One message through WeChat's deliveries, the callback, the dispatcher and the bot.
async fn run(latency: Duration, safe_mode: bool, msg_id: u64) -> (Vec<(usize, String, bool)>, Vec<Outbound>) {
    let config = config();
    let (inbound_queue, mut inbound_rx) = MemoryQueue::new();
    let (outbound_queue, mut outbound_rx) = MemoryQueue::new();
    let slots: Arc<dyn ReplySlots> = Arc::new(MemoryReplySlots::default());
    let service = Arc::new(OaCallback::new(
        &config,
        Arc::new(inbound_queue),
        Arc::new(MemoryDedupe::default()),
        slots.clone(),
        Arc::new(SystemClock),
    ));
    let dispatcher =
        Arc::new(Dispatcher { bot: Arc::new(SlowEcho(latency)), slots, outbound: Arc::new(outbound_queue) });
    tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move {
            while let Some(message) = inbound_rx.recv().await {
                let dispatcher = dispatcher.clone();
                tokio::spawn(async move { dispatcher.dispatch(&message.body).await.unwrap() });
            }
        }
    });

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let plain = format!(
        "<xml><ToUserName><![CDATA[gh_5e6f7a8b9c0d]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[ping]]></Content><MsgId>{msg_id}</MsgId></xml>"
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let crypt = MsgCrypt::new(TOKEN, &EncodingAesKey::parse(KEY).unwrap(), APP_ID);
    let start = Instant::now();
    let mut deliveries = Vec::new();
    for delivery in 0..3usize {
        tokio::time::sleep_until(start + WECHAT_WAIT * delivery as u32).await;
        // WeChat stops delivering once an answer arrived in time.
        if seen.lock().unwrap().answers.iter().any(|(_, _, in_time)| *in_time) {
            break;
        }
        let ts = now.to_string();
        let nonce = format!("n{delivery}");
        let signature = plain_signature(TOKEN, &ts, &nonce);
        let (query, body) = if safe_mode {
            let encrypt = crypt.encrypt(&plain, [delivery as u8; 16]);
            let msg_signature = crypt.signature(&ts, &nonce, &encrypt);
            (
                format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid=oUser&encrypt_type=aes&msg_signature={msg_signature}"),
                format!("<xml><ToUserName><![CDATA[gh_5e6f7a8b9c0d]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
            )
        } else {
            (format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid=oUser"), plain.clone())
        };
        let (service, seen) = (service.clone(), seen.clone());
        let sent_at = Instant::now();
        deliveries.push(tokio::spawn(async move {
            let response = service
                .handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() })
                .await;
            assert_eq!(response.status, 200);
            let in_time = sent_at.elapsed() <= WECHAT_WAIT;
            seen.lock().unwrap().answers.push((delivery, response.body, in_time));
        }));
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    // Give a slow bot time to finish, as the dispatcher would after the last delivery.
    tokio::time::sleep(latency.saturating_sub(start.elapsed()) + Duration::from_millis(200)).await;
    let mut sends = Vec::new();
    while let Ok(message) = outbound_rx.try_recv() {
        sends.push(Outbound::parse(&message.body).unwrap());
    }
    let mut answers = seen.lock().unwrap().answers.clone();
    answers.sort_by_key(|(i, _, _)| *i);
    (answers, sends)
}

/// The text of a passive reply WeChat received in time, decrypting it in safe mode.
fn passive_replies(answers: &[(usize, String, bool)]) -> Vec<(usize, String)> {
    let crypt = MsgCrypt::new(TOKEN, &EncodingAesKey::parse(KEY).unwrap(), APP_ID);
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
    assert_eq!(sends[0].channel, shared::envelope::OutChannel::Oa);
    assert_eq!(sends[0].to, "oUser");
    assert_eq!(sends[0].content, Content::Text { text: "re: ping".into() });
}

#[tokio::test]
async fn a_dispatcher_that_runs_twice_fills_once_and_never_also_sends() {
    let slots: Arc<dyn ReplySlots> = Arc::new(MemoryReplySlots::default());
    let (queue, mut rx) = MemoryQueue::new();
    let dispatcher =
        Dispatcher { bot: Arc::new(SlowEcho(Duration::ZERO)), slots: slots.clone(), outbound: Arc::new(queue) };
    slots.arrive("oa:news:9", std::time::SystemTime::now()).await.unwrap();
    let inbound = r#"{"v":1,"id":"oa:news:9","channel":"oa","account":"news","conversation":{"kind":"direct","id":"oUser"},
        "sender":{"id":"oUser"},"kind":"text","text":"hi","received_at":"2026-11-21T00:00:00Z","sent_at":1,"raw":{}}"#;
    dispatcher.dispatch(inbound).await.unwrap();
    dispatcher.dispatch(inbound).await.unwrap();
    assert!(rx.try_recv().is_err(), "the passive reply is the only reply");
}
