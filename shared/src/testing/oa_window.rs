//! WeChat's side of the 5-second window, simulated: deliveries of one message spaced by WeChat's
//! wait, stopping at the first answer that arrives in time, against a callback service and a
//! dispatcher whose bot answers after a chosen latency. All in memory; timings can be scaled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::adapters::memory::{MemoryQueue, MemoryReplySlots};
use crate::channels::oa::service::OaCallback;
use crate::channels::oa::OaWindow;
use crate::channels::Config;
use crate::core::bot::{Bot, BotError};
use crate::core::callback::CallbackRequest;
use crate::core::envelope::{Content, Inbound, Outbound};
use crate::core::ports::{ReplySlots, SystemClock};
use crate::protocol::crypto::{plain_signature, EncodingAesKey, MsgCrypt};
use crate::protocol::xml::XmlWriter;
use crate::services::dispatcher::Dispatcher;
use crate::testing::fixtures::{OA_AES_KEY, SIMULATED_OA_APP_ID, SIMULATED_OA_TOKEN};

/// Answers with "re: <text>" after a latency.
pub struct SlowEcho(pub Duration);

#[async_trait]
impl Bot for SlowEcho {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        tokio::time::sleep(self.0).await;
        Ok(vec![Content::Text { text: format!("re: {}", inbound.text.clone().unwrap_or_default()) }])
    }
}

/// One delivery's answer as WeChat saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub delivery: usize,
    pub body: String,
    /// It arrived within WeChat's wait, so WeChat used it.
    pub in_time: bool,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRun {
    pub answers: Vec<Answer>,
    /// Replies that went by the customer-service API instead.
    pub customer_service: Vec<Outbound>,
}

impl WindowRun {
    /// The delivery whose passive reply WeChat used, if any.
    pub fn passive_on(&self) -> Option<usize> {
        self.answers.iter().find(|a| a.in_time && a.body != "success").map(|a| a.delivery)
    }
}

/// The timings of WeChat and of the window, scaled by `scale` (1.0 is real time).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub wechat_wait: Duration,
    pub deliveries: usize,
    pub window: OaWindow,
}

impl Timings {
    pub fn scaled(scale: f64) -> Self {
        let ms = |v: f64| (v * scale).round() as u64;
        let defaults = OaWindow::default();
        Self {
            wechat_wait: Duration::from_millis(ms(5000.0)),
            deliveries: 3,
            window: OaWindow {
                hold_ms: ms(defaults.hold_ms as f64),
                answer_by_ms: ms(defaults.answer_by_ms as f64),
                deliveries: defaults.deliveries,
            },
        }
    }
}

/// Delivers one message (plaintext or safe mode) as WeChat does and lets a bot of `latency`
/// answer it.
pub async fn run(timings: Timings, latency: Duration, safe_mode: bool, msg_id: u64) -> WindowRun {
    // A key puts the account in safe mode; without one it is in plaintext mode.
    let key = if safe_mode { format!(r#", "encoding_aes_key": "{OA_AES_KEY}""#) } else { String::new() };
    let mut config = Config::parse(&format!(
        r#"{{"oa": [{{"app": "news", "app_id": "{SIMULATED_OA_APP_ID}", "token": "{SIMULATED_OA_TOKEN}"{key}}}]}}"#
    ))
    .unwrap_or_default();
    config.oa_window = timings.window;
    let (inbound_queue, mut inbound_rx) = MemoryQueue::fifo();
    let (outbound_queue, mut outbound_rx) = MemoryQueue::new();
    let slots: Arc<dyn ReplySlots> = Arc::new(MemoryReplySlots::default());
    let service = Arc::new(
        OaCallback::new(
            &config.oa,
            config.oa_window,
            config.replay_window_secs,
            Arc::new(inbound_queue),
            slots.clone(),
            Arc::new(crate::adapters::memory::MemoryParkedReplies::default()),
            Arc::new(SystemClock),
        )
        .with_wechat_wait(timings.wechat_wait),
    );
    let dispatcher = Arc::new(Dispatcher {
        bot: Arc::new(SlowEcho(latency)),
        slots,
        outbound: Arc::new(outbound_queue),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: None,
    });
    let bot = tokio::spawn(async move {
        let mut running = Vec::new();
        while let Some(message) = inbound_rx.recv().await {
            let dispatcher = dispatcher.clone();
            running.push(tokio::spawn(async move { dispatcher.dispatch(&message.body).await.is_ok() }));
        }
        for task in running {
            let _ = task.await;
        }
    });

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut xml = XmlWriter::with_capacity(256);
    xml.raw("<xml>")
        .cdata_element("ToUserName", "gh_simulated")
        .cdata_element("FromUserName", "oUser")
        .text_element("CreateTime", &now.to_string())
        .cdata_element("MsgType", "text")
        .cdata_element("Content", "ping")
        .text_element("MsgId", &msg_id.to_string())
        .raw("</xml>");
    let plain = xml.finish();
    let crypt =
        EncodingAesKey::parse(OA_AES_KEY).ok().map(|key| MsgCrypt::new(SIMULATED_OA_TOKEN, &key, SIMULATED_OA_APP_ID));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let start = tokio::time::Instant::now();
    let mut deliveries = Vec::new();
    for delivery in 0..timings.deliveries {
        tokio::time::sleep_until(start + timings.wechat_wait * delivery as u32).await;
        // WeChat stops delivering once an answer arrived in time.
        if answers.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|a| a.in_time) {
            break;
        }
        let ts = now.to_string();
        let nonce = format!("n{delivery}");
        let signature = plain_signature(SIMULATED_OA_TOKEN, &ts, &nonce);
        let (query, body) = match (&crypt, safe_mode) {
            (Some(crypt), true) => {
                let encrypt = crypt.encrypt(&plain, crate::protocol::crypto::random_prefix());
                let msg_signature = crypt.signature(&ts, &nonce, &encrypt);
                (
                    format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid=oUser&encrypt_type=aes&msg_signature={msg_signature}"),
                    format!("<xml><ToUserName><![CDATA[gh_simulated]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
                )
            }
            _ => (format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid=oUser"), plain.clone()),
        };
        let (service, answers, wait) = (service.clone(), answers.clone(), timings.wechat_wait);
        deliveries.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let response = service
                .handle(CallbackRequest { method: "POST", app: "news", raw_query: &query, body: body.as_bytes() })
                .await;
            let in_time = response.status == 200 && sent.elapsed() <= wait;
            answers.lock().unwrap_or_else(|p| p.into_inner()).push(Answer { delivery, body: response.body, in_time });
        }));
    }
    for delivery in deliveries {
        let _ = delivery.await;
    }
    // Let the bot finish, as the dispatcher would after the last delivery.
    drop(service);
    let _ = bot.await;
    let mut customer_service = Vec::new();
    while let Ok(message) = outbound_rx.try_recv() {
        if let Ok(out) = Outbound::parse(&message.body) {
            customer_service.push(out);
        }
    }
    let mut answers = answers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    answers.sort_by_key(|a| a.delivery);
    WindowRun { answers, customer_service }
}
