//! 微信客服 in `wxbridge dev`: the puller on the pull queue (in memory: one pull at a time, in
//! order, as the FIFO queue's groups do on AWS).

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::memory::{MemoryCursors, MemoryDedupe, MemoryTokenStore};
use shared::channels::kf::KfPuller;
use shared::channels::{Apis, Config};
use shared::core::config::Env;
use shared::core::ports::{CustomerWindows, Publisher, QueueMessage, Record, SystemClock};
use shared::core::tokens::Tokens;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::sqs::BatchHandler;

#[async_trait::async_trait]
impl BatchHandler for KfPuller {
    async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        KfPuller::handle_batch(self, records).await
    }
}

/// The puller on in-memory state, publishing to `inbound`, opening `windows` for the sender.
pub fn memory_puller(
    config: &Config,
    env: &Env,
    inbound: Arc<dyn Publisher>,
    windows: Arc<dyn CustomerWindows>,
) -> anyhow::Result<KfPuller> {
    let apis = Apis::from_env(env)?;
    Ok(KfPuller {
        accounts: config.kf.clone(),
        apps: config.wecom.clone(),
        api: apis.wecom,
        tokens: Arc::new(Tokens::new(Arc::new(MemoryTokenStore::default()), Arc::new(SystemClock))),
        cursors: Arc::new(MemoryCursors::default()),
        seen: Arc::new(MemoryDedupe::default()),
        publisher: inbound,
        windows,
        metrics: Arc::new(crate::outbound::PrintMetrics),
        clock: Arc::new(SystemClock),
    })
}

/// Pulls for each request on `rx`, one at a time; a failed pull is tried again a few times.
pub async fn run_memory(puller: Arc<KfPuller>, mut rx: UnboundedReceiver<QueueMessage>) {
    while let Some(message) = rx.recv().await {
        for attempt in 1..=3u32 {
            let id = shared::core::ports::claim_token();
            let record = Record {
                message_id: id.clone(),
                receipt_handle: id,
                body: message.body.clone(),
                receive_count: attempt,
                group: None,
            };
            if puller.handle_batch(&[record]).await.is_empty() {
                break;
            }
            println!("kf pull ✗ (try {attempt} of 3)");
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
}
