//! Sender throughput on loopback: one process sending batches of 10 text messages (to 10
//! recipients) to the fake
//! WeCom API, with its markers and tokens in the local DynamoDB emulator (`scripts/test` or
//! `infra/local-stack.sh start` must have started it). Reports messages/s and, after criterion's
//! runs, the AWS calls the function makes per message sent (counted by a proxy in front of
//! DynamoDB; the SQS receive and delete are the event source mapping's, one each per batch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use shared::adapters::aws::resources::{self, ResourceNames};
use shared::adapters::aws::{DynamoContextTokens, DynamoDedupe, DynamoTokenStore, Table};
use shared::adapters::memory::{MemoryMetrics, MemoryOutbound};
use shared::channels::Config;
use shared::channels::{Apis, Deliveries, DeliveryPorts};
use shared::core::config::Env;
use shared::core::ports::Record;
use shared::core::ports::SystemClock;
use shared::core::tokens::Tokens;
use shared::services::sender::Sender;
use shared::testing::fixtures::WECOM_AES_KEY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards to `target`, counting DynamoDB requests (by their `X-Amz-Target` header).
async fn counting_proxy(target: String, count: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, count) = (target.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        count.fetch_add(text.matches("x-amz-target: dynamodb_").count() as u64, Ordering::Relaxed);
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let downstream = tokio::io::copy(&mut server_read, &mut client_write);
                tokio::join!(upstream, async {
                    let _ = downstream.await;
                });
            });
        }
    });
    url
}

struct Setup {
    sender: Sender,
    dynamodb_calls: Arc<AtomicU64>,
    _fake: fakes::FakeWechat,
}

async fn setup() -> Setup {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: start the emulator (infra/local-stack.sh start; eval \"$(infra/local-stack.sh env)\")");
    let sdk = shared::adapters::aws::sdk_config().await;
    let names = ResourceNames::new(&format!("bench-{}", &shared::core::ports::claim_token()[..10]));
    resources::create_all(&aws_sdk_dynamodb::Client::new(&sdk), &aws_sdk_sqs::Client::new(&sdk), &names).await.unwrap();
    let fake = fakes::FakeWechat::start().await;
    fake.add_wecom_app("ww1", "secret", 1_000_002);
    for user in 0..10 {
        fake.add_wecom_user(&format!("user{user}"));
    }
    let config = Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "ww1", "agent_id": 1000002, "token": "tok123",
             "encoding_aes_key": "{WECOM_AES_KEY}", "secret": "secret"}}]}}"#,
    ))
    .unwrap();
    let dynamodb_calls = Arc::new(AtomicU64::new(0));
    let proxy = counting_proxy(endpoint.trim_start_matches("http://").to_owned(), dynamodb_calls.clone()).await;
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&sdk).endpoint_url(proxy).build());
    let base = fake.base_url.clone();
    let env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", base.clone())]);
    let clock = Arc::new(SystemClock);
    let table = Table::new(dynamodb, &names.table);
    let ports = DeliveryPorts {
        tokens: Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), clock.clone())),
        contexts: Arc::new(DynamoContextTokens::new(&table)),
        parked: Arc::new(shared::adapters::memory::MemoryParkedReplies::default()),
        streams: Arc::new(shared::adapters::aws::DynamoStreams::new(&table)),
        windows: Arc::new(shared::adapters::aws::DynamoCustomerWindows::new(&table)),
        clock: clock.clone(),
    };
    let sender = Sender {
        deliveries: Deliveries::new(&config, &Apis::from_env(&env).unwrap(), ports),
        sent: Arc::new(DynamoDedupe::new(&table).keeping(shared::core::ports::SENT_TTL)),
        queue: Arc::new(MemoryOutbound::default()),
        metrics: Arc::new(MemoryMetrics::default()),
        clock,
        max_receives: None,
        files: None,
    };
    Setup { sender, dynamodb_calls, _fake: fake }
}

fn batch(next: &AtomicU64) -> Vec<Record> {
    (0..10)
        .map(|_| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": format!("user{}", n % 10),
                "content": {"type": "text", "text": format!("message {n}")}, "idempotency_key": format!("bench-{n}")});
            Record {
                message_id: format!("m{n}"),
                receipt_handle: format!("r{n}"),
                body: body.to_string(),
                receive_count: 1,
                group: None,
            }
        })
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let setup = runtime.block_on(setup());
    let next = AtomicU64::new(0);
    // Warm: the first batch fetches the token into the table and the process cache.
    runtime.block_on(setup.sender.handle_batch(&batch(&next)));

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("sender");
    group.throughput(Throughput::Elements(10));
    group.bench_function("batch_of_10_text", |b| {
        b.to_async(&runtime).iter(|| async {
            let failed = setup.sender.handle_batch(&batch(&next)).await;
            assert!(failed.is_empty());
        })
    });
    group.finish();
    c.final_summary();

    if std::env::args().any(|arg| arg == "--bench") {
        let before = setup.dynamodb_calls.load(Ordering::Relaxed);
        let start = std::time::Instant::now();
        for _ in 0..50 {
            runtime.block_on(setup.sender.handle_batch(&batch(&next)));
        }
        let elapsed = start.elapsed();
        let calls = setup.dynamodb_calls.load(Ordering::Relaxed) - before;
        println!(
            "\n500 messages in batches of 10: {:.0} messages/s; DynamoDB calls per message sent: {:.2} \
             (plus the event source's 1 ReceiveMessage and 1 DeleteMessageBatch per batch)",
            500.0 / elapsed.as_secs_f64(),
            calls as f64 / 500.0
        );
    }
}
