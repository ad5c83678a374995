//! The WeCom AI bot's hot path and what a streamed answer costs.
//!
//! 1. Refresh-callback latency: the whole handler in process (verify the signature, decrypt,
//!    parse, one consistent read of the stream, encrypt and sign the answer) on the in-memory
//!    stream store, so the figure is the bridge's own time; a DynamoDB `GetItem` adds its
//!    round trip (single-digit ms in region). Criterion's estimate, and with `--bench` the
//!    median and p99 over 20 000 calls.
//! 2. With `--bench`: one answer streamed for 30 s (a delta every 250 ms, about 9 KB of text)
//!    while WeCom refreshes once a second, run on tokio's paused clock (no real waiting): every
//!    DynamoDB read and write of the callbacks and the dispatcher is counted, with its request
//!    units from the item size, and priced at the list prices below.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use criterion::Criterion;
use shared::adapters::memory::{MemoryDedupe, MemoryQueue, MemoryReplySlots, MemoryStreams};
use shared::channels::aibot::service::AibotPorts;
use shared::channels::aibot::{stream_key, AibotService};
use shared::channels::Config;
use shared::core::bot::{AnswerSink, Bot, BotError};
use shared::core::callback::CallbackRequest;
use shared::core::envelope::{Content, Inbound};
use shared::core::ports::{Claim, Dedupe, PortError, Publisher, QueueMessage, Stream, Streams, SystemClock, UrlClaim};
use shared::protocol::crypto::{random_prefix, EncodingAesKey, MsgCrypt};
use shared::services::dispatcher::{BotCalls, Dispatcher};
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_TOKEN};

/// DynamoDB on-demand list prices, us-east-1 (USD per million request units, since 2024-11-01).
const WRITE_PER_MILLION: f64 = 0.625;
const READ_PER_MILLION: f64 = 0.125;
/// Per refresh callback: API Gateway HTTP API (per million requests) and a 128 MB arm64 Lambda
/// (per million requests, and per ms).
const HTTP_API_PER_MILLION: f64 = 1.00;
const LAMBDA_PER_MILLION: f64 = 0.20;
const LAMBDA_128MB_ARM_PER_MS: f64 = 0.000_000_001_7;

fn config() -> Config {
    Config::parse(&format!(
        r#"{{"aibots": [{{"name": "ops", "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}", "bot_name": "DeployBot"}}],
            "bot": {{"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k", "model": "m", "stream": true}}}}"#
    ))
    .expect("bench config")
}

fn crypt() -> MsgCrypt {
    MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), "")
}

/// A sealed callback as WeCom posts it: (query, body).
fn seal(crypt: &MsgCrypt, payload: &serde_json::Value) -> (String, String) {
    let timestamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs().to_string();
    let nonce = "n0nce123";
    let encrypt = crypt.encrypt(&payload.to_string(), random_prefix());
    let signature = crypt.signature(&timestamp, nonce, &encrypt);
    let query = format!("msg_signature={}&timestamp={timestamp}&nonce={nonce}", signature.as_str());
    (query, serde_json::json!({"encrypt": encrypt}).to_string())
}

/// Request units of an item of `bytes`: writes per KB, consistent reads per 4 KB.
fn write_units(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(1024).max(1)
}
fn read_units(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4096).max(1)
}

/// Counts the DynamoDB calls the stream and marker adapters would make, with their units.
#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
    read_units: AtomicU64,
    write_units: AtomicU64,
}

impl Counts {
    fn read(&self, bytes: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_units.fetch_add(read_units(bytes), Ordering::Relaxed);
    }
    fn write(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_units.fetch_add(write_units(bytes), Ordering::Relaxed);
    }
}

/// A stream item's size: its content plus the fixed attributes (~200 bytes).
const ITEM_OVERHEAD: usize = 200;

struct CountingStreams {
    inner: MemoryStreams,
    counts: Arc<Counts>,
}

#[async_trait]
impl Streams for CountingStreams {
    async fn open(
        &self,
        key: &str,
        opened: SystemTime,
        url: Option<&str>,
        until: SystemTime,
    ) -> Result<bool, PortError> {
        self.counts.write(ITEM_OVERHEAD + url.map_or(0, str::len));
        self.inner.open(key, opened, url, until).await
    }
    async fn read(&self, key: &str) -> Result<Option<Stream>, PortError> {
        let stream = self.inner.read(key).await?;
        self.counts.read(
            ITEM_OVERHEAD + stream.as_ref().map_or(0, |s| s.content.len() + s.answer.as_ref().map_or(0, String::len)),
        );
        Ok(stream)
    }
    async fn write(&self, key: &str, content: &str, version: u64, finish: bool) -> Result<bool, PortError> {
        self.counts.write(ITEM_OVERHEAD + content.len());
        self.inner.write(key, content, version, finish).await
    }
    async fn finish(
        &self,
        key: &str,
        content: &str,
        version: u64,
        rest: &str,
        images: &[String],
    ) -> Result<bool, PortError> {
        self.counts.write(ITEM_OVERHEAD + content.len() + rest.len() + images.iter().map(String::len).sum::<usize>());
        self.inner.finish(key, content, version, rest, images).await
    }
    async fn record_answer(&self, key: &str, rest: &str) -> Result<bool, PortError> {
        self.counts.write(ITEM_OVERHEAD + rest.len());
        self.inner.record_answer(key, rest).await
    }
    async fn hand_over(&self, key: &str, content: &str) -> Result<bool, PortError> {
        self.counts.write(ITEM_OVERHEAD + content.len());
        self.inner.hand_over(key, content).await
    }
    async fn claim_url(&self, key: &str, now: SystemTime) -> Result<UrlClaim, PortError> {
        self.counts.write(ITEM_OVERHEAD);
        self.inner.claim_url(key, now).await
    }
    async fn settle_url(&self, key: &str, used: bool) -> Result<(), PortError> {
        self.counts.write(ITEM_OVERHEAD);
        self.inner.settle_url(key, used).await
    }
}

struct CountingDedupe {
    inner: MemoryDedupe,
    counts: Arc<Counts>,
}

#[async_trait]
impl Dedupe for CountingDedupe {
    async fn claim(&self, key: &str, now: SystemTime, lease: Duration) -> Result<Claim, PortError> {
        self.counts.write(100);
        self.inner.claim(key, now, lease).await
    }
    async fn complete(&self, key: &str, token: &str, now: SystemTime) -> Result<(), PortError> {
        self.counts.write(100);
        self.inner.complete(key, token, now).await
    }
    async fn release(&self, key: &str, token: &str) -> Result<(), PortError> {
        self.counts.write(100);
        self.inner.release(key, token).await
    }
}

/// An agent that writes ~9 KB over 30 s: a 75-byte delta every 250 ms.
struct SlowStreamingBot;

const DELTA: &str = "部署已回滚到上一版，健康检查通过，错误率回到基线。"; // 75 bytes

#[async_trait]
impl Bot for SlowStreamingBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        struct Nothing;
        #[async_trait]
        impl AnswerSink for Nothing {
            async fn grow(&self, _: &str) {}
        }
        self.answer_streaming(inbound, &Nothing).await
    }
    async fn answer_streaming(&self, _: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let mut text = String::new();
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            text.push_str(DELTA);
            sink.grow(&text).await;
        }
        Ok(vec![Content::Markdown { text }])
    }
}

/// Publishes nowhere but keeps the Inbound for the dispatcher.
struct Keep(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl Publisher for Keep {
    async fn publish(&self, message: QueueMessage) -> Result<(), PortError> {
        self.0.lock().unwrap().push(message.body);
        Ok(())
    }
}

/// Whether a sealed stream answer says `finish: true`.
fn finished(crypt: &MsgCrypt, body: &str) -> bool {
    let answer: serde_json::Value = serde_json::from_str(body).expect("a sealed answer");
    let (encrypt, timestamp) = (answer["encrypt"].as_str().unwrap(), answer["timestamp"].to_string());
    let verified = crypt
        .verify(answer["msgsignature"].as_str().unwrap(), &timestamp, answer["nonce"].as_str().unwrap(), encrypt)
        .expect("signed");
    let reply: serde_json::Value = serde_json::from_str(&crypt.decrypt(verified).expect("decrypts")).unwrap();
    reply["stream"]["finish"] == true
}

async fn streamed_answer_costs() {
    let counts = Arc::new(Counts::default());
    let counting = Arc::new(CountingStreams { inner: MemoryStreams::default(), counts: counts.clone() });
    let streams: Arc<dyn Streams> = counting.clone();
    let dedupe: Arc<dyn Dedupe> = Arc::new(CountingDedupe { inner: MemoryDedupe::default(), counts: counts.clone() });
    let inbound_queue = Arc::new(Keep(std::sync::Mutex::new(Vec::new())));
    let config = config();
    let service = AibotService::new(
        &config.aibots,
        config.aibot_stream,
        config.replay_window_secs,
        AibotPorts {
            publisher: inbound_queue.clone(),
            streams: streams.clone(),
            clock: Arc::new(SystemClock),
            media: None,
        },
    );
    let (outbound, _rx) = MemoryQueue::new();
    let dispatcher = Dispatcher {
        bot: Arc::new(SlowStreamingBot),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(outbound),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: Some(streams.clone()),
        calls: Some(BotCalls { leases: dedupe.clone(), timeout: Duration::from_secs(600) }),
        files: None,
    };
    let crypt = crypt();
    let post = |payload: serde_json::Value| {
        let (query, body) = seal(&crypt, &payload);
        let service = &service;
        async move {
            let answer = service
                .handle(CallbackRequest { method: "POST", app: "ops", raw_query: &query, body: body.as_bytes() })
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            answer
        }
    };
    let message = serde_json::json!({"msgid": "m-30s", "aibotid": "aibX", "chatid": "wrG", "chattype": "group",
        "from": {"userid": "zhangsan"}, "response_url": "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RC",
        "msgtype": "text", "text": {"content": "@DeployBot 回滚 api"}});
    post(message).await;
    let body = inbound_queue.0.lock().unwrap().pop().expect("published");
    let inbound: Inbound = serde_json::from_str(&body).unwrap();
    let (_, stream_id) = stream_key("ops", &inbound.id);
    let callbacks = (counts.reads.load(Ordering::Relaxed), counts.writes.load(Ordering::Relaxed));

    let dispatch = tokio::spawn({
        let dispatcher = Arc::new(dispatcher);
        async move { dispatcher.dispatch(&body).await.expect("dispatched") }
    });
    let mut refreshes = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        refreshes += 1;
        let refresh = serde_json::json!({"msgid": format!("r{refreshes}"), "aibotid": "aibX", "chatid": "wrG",
            "chattype": "group", "from": {"userid": "zhangsan"}, "msgtype": "stream", "stream": {"id": stream_id}});
        let answer = post(refresh).await;
        // WeCom stops at the first answer that says finish.
        if finished(&crypt, &answer.body) {
            break;
        }
    }
    dispatch.await.unwrap();
    let reads = counts.reads.load(Ordering::Relaxed);
    let writes = counts.writes.load(Ordering::Relaxed);
    let (ru, wu) = (counts.read_units.load(Ordering::Relaxed), counts.write_units.load(Ordering::Relaxed));
    let dynamodb = wu as f64 * WRITE_PER_MILLION / 1e6 + ru as f64 * READ_PER_MILLION / 1e6;
    let requests = refreshes + 1;
    let edge = requests as f64 * (HTTP_API_PER_MILLION + LAMBDA_PER_MILLION) / 1e6
        + requests as f64 * 5.0 * LAMBDA_128MB_ARM_PER_MS;
    println!(
        "\none answer streamed for 30 s (9 KB), WeCom refreshing every second: {requests} callbacks \
         ({refreshes} refreshes); DynamoDB {reads} reads ({ru} RRU) and {writes} writes ({wu} WRU) \
         [message callback: {} reads, {} writes]; DynamoDB cost ${dynamodb:.7} per answered message \
         (${:.2} per 100 000), API Gateway + Lambda (5 ms each) ${edge:.7}",
        callbacks.0,
        callbacks.1,
        dynamodb * 100_000.0,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let config = config();
    let streams = Arc::new(MemoryStreams::default());
    let service = AibotService::new(
        &config.aibots,
        config.aibot_stream,
        config.replay_window_secs,
        AibotPorts {
            publisher: Arc::new(Keep(std::sync::Mutex::new(Vec::new()))),
            streams: streams.clone(),
            clock: Arc::new(SystemClock),
            media: None,
        },
    );
    let (key, stream_id) = stream_key("ops", "wecom_aibot:ops:m-bench");
    runtime.block_on(async {
        streams.open(&key, SystemTime::now(), None, SystemTime::now()).await.unwrap();
        streams.write(&key, &"部署已回滚".repeat(200), 1, false).await.unwrap();
    });
    let crypt = crypt();
    let refresh = serde_json::json!({"msgid": "r1", "aibotid": "aibX", "chattype": "single",
        "from": {"userid": "zhangsan"}, "msgtype": "stream", "stream": {"id": stream_id}});
    let (query, body) = seal(&crypt, &refresh);
    let request = CallbackRequest { method: "POST", app: "ops", raw_query: &query, body: body.as_bytes() };

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("aibot/refresh_callback_3kb", |b| {
        b.to_async(&runtime).iter(|| async {
            let answer = service.handle(request).await;
            assert_eq!(answer.status, 200);
        })
    });
    c.final_summary();

    if std::env::args().any(|arg| arg == "--bench") {
        let mut times: Vec<Duration> = runtime.block_on(async {
            let mut times = Vec::with_capacity(20_000);
            for _ in 0..20_000 {
                let start = std::time::Instant::now();
                let answer = service.handle(request).await;
                times.push(start.elapsed());
                assert_eq!(answer.status, 200);
            }
            times
        });
        times.sort();
        println!(
            "\nrefresh callback in process (3 KB stream): median {:.1} µs, p99 {:.1} µs over {} calls",
            times[times.len() / 2].as_secs_f64() * 1e6,
            times[times.len() * 99 / 100].as_secs_f64() * 1e6,
            times.len()
        );
        // The 30 s answer on a paused clock: time advances only when everything waits.
        let paused = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        paused.block_on(streamed_answer_costs());
    }
}
