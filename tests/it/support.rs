//! The test harness: the emulator's clients, per-test resources, and a TCP proxy that can cut a
//! dependency off the way an outage does.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use shared::adapters::aws::resources::{self, QueueUrls, ResourceNames};
use shared::adapters::aws::SdkConfig;
use shared::channels::Config;
use shared::core::config::Env;
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The emulator's endpoint, from the environment the test script sets up.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test (it starts the local AWS stack)")
    })
}

/// One test's own table and queues on the emulator.
pub struct Stack {
    pub sdk: SdkConfig,
    pub names: ResourceNames,
    pub urls: QueueUrls,
    pub sqs: aws_sdk_sqs::Client,
    /// The test's media bucket (`names.bucket`).
    pub media: shared::adapters::aws::S3MediaStore,
}

impl Stack {
    pub async fn new() -> Self {
        let _ = endpoint();
        let sdk = shared::adapters::aws::sdk_config().await;
        let prefix = format!("it-{}", &shared::core::ports::claim_token()[..12]);
        let names = ResourceNames::new(&prefix);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let urls =
            resources::create_all(&dynamodb, &sqs, &names).await.expect("create table and queues on the emulator");
        let media = shared::adapters::aws::S3MediaStore::new(&sdk, &names.bucket, true);
        resources::create_bucket(media.client(), &names.bucket).await.expect("create the media bucket on the emulator");
        Self { sdk, names, urls, sqs, media }
    }

    /// The environment a deployed function would see.
    pub fn env(&self) -> Env {
        let table = self.names.table.clone();
        let inbound = self.urls.inbound.clone();
        Env::from_vars([("WXBRIDGE_TABLE", table.clone()), ("WXBRIDGE_INBOUND_QUEUE_URL", inbound.clone())])
    }

    /// Every message now on `queue_url`, each received once and deleted.
    pub async fn drain(&self, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        let mut empty_polls = 0;
        while empty_polls < 2 {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .message_system_attribute_names(MessageSystemAttributeName::MessageDeduplicationId)
                .send()
                .await
                .expect("receive from the emulator");
            let messages = batch.messages().to_vec();
            if messages.is_empty() {
                empty_polls += 1;
                continue;
            }
            for message in &messages {
                self.sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
            }
            all.extend(messages);
        }
        all
    }

    pub async fn queue_attribute(&self, queue_url: &str, name: QueueAttributeName) -> String {
        let out =
            self.sqs.get_queue_attributes().queue_url(queue_url).attribute_names(name.clone()).send().await.unwrap();
        out.attributes().and_then(|a| a.get(&name)).cloned().unwrap_or_default()
    }
}

/// The configuration of the recorded vectors' WeCom app, served as `hr`.
pub fn config(replay_window_secs: u64) -> Config {
    let mut config = Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}"}}]}}"#
    ))
    .unwrap();
    config.replay_window_secs = replay_window_secs;
    config
}

/// A TCP proxy to a dependency. `set_down(true)` refuses new connections and cuts open ones,
/// as a network outage does; `set_down(false)` restores service.
pub struct Proxy {
    pub url: String,
    down: watch::Sender<bool>,
}

impl Proxy {
    pub async fn to(target: &str) -> Arc<Self> {
        let target = target.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (down, watcher) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let mut watcher = watcher.clone();
                if *watcher.borrow() {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watcher.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Arc::new(Self { url, down })
    }

    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// An SQS client that reaches the emulator through this proxy. (The client's own config is
    /// set: the SDK prefers `AWS_ENDPOINT_URL` from the environment over `SdkConfig`'s endpoint.)
    pub fn sqs(&self, sdk: &SdkConfig) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sdk).endpoint_url(&self.url).build())
    }
}

/// Waits a little for background tasks (a proxy's cut connections) to settle.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A text message from WangFang to the WeCom app `hr` (an image message, without its media,
/// when `text` is none).
pub fn inbound(text: Option<&str>) -> shared::core::envelope::Inbound {
    let mut value = serde_json::json!({"v": 1, "id": "wecom:hr:1", "channel": "wecom", "account": "hr",
        "conversation": {"kind": "direct", "id": "WangFang"}, "sender": {"id": "WangFang"}, "kind": "text",
        "received_at": "2026-11-21T00:00:00Z", "sent_at": 1, "raw": {}});
    match text {
        Some(text) => value["text"] = text.into(),
        None => value["kind"] = "image".into(),
    }
    serde_json::from_value(value).unwrap()
}

/// What a streaming bot's sink was shown, snapshot by snapshot.
#[derive(Default)]
pub struct Snapshots(std::sync::Mutex<Vec<String>>);

impl Snapshots {
    pub fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl shared::core::bot::AnswerSink for Snapshots {
    async fn grow(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_owned());
    }
}
