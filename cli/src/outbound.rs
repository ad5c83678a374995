//! The sender inside `wxbridge dev`: a loop over the in-memory outbound queue, or over the SQS
//! outbound queue with `--aws` (as the Lambda event source mapping would run it).

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::memory::MemoryTokenStore;
use shared::adapters::memory::{MemoryContextTokens, MemoryDedupe, MemoryOutbound, MemoryParkedReplies};
use shared::channels::{Apis, Config, Deliveries, DeliveryPorts};
use shared::core::config::Env;
use shared::core::ports::{Metrics, Record, SendMetric, SystemClock};
use shared::core::retry::backoff_s;
use shared::core::tokens::Tokens;
use shared::services::sender::Sender;
use tokio::sync::mpsc;

/// Receives after which the in-memory queue gives a message up, like the SQS redrive policy.
const MAX_RECEIVES: u32 = match shared::adapters::aws::resources::OUTBOUND.max_receive_count {
    Some(count) => count,
    None => 6,
};
/// Backoffs in dev are capped so a retry shows up while you watch.
const DEV_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Prints each outcome as a line instead of an EMF document.
pub(crate) struct PrintMetrics;

impl Metrics for PrintMetrics {
    fn record(&self, metric: &SendMetric) {
        let code = metric.errcode.map(|c| format!(" (errcode {c})")).unwrap_or_default();
        let outcome = match metric.outcome {
            "sent" => crate::ui::ok(metric.outcome),
            "retry" => crate::ui::warn(metric.outcome),
            other => crate::ui::bad(other),
        };
        println!("outbound → {} {outcome}{code}", metric.channel);
    }

    fn count(&self, name: &'static str, properties: &[(&str, &str)]) {
        let shown: Vec<String> = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("metric → {} {}", crate::ui::warn(name), shown.join(" "));
        let props: serde_json::Map<String, serde_json::Value> =
            properties.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect();
        crate::feed::emit("metric", None, None, serde_json::json!({"name": name, "props": props}));
    }
}

/// A sender on in-memory stores, with the iLink context tokens, parked replies and AI-bot
/// streams shared with the rest of dev.
pub fn memory_sender(
    config: Arc<Config>,
    env: &Env,
    contexts: Arc<MemoryContextTokens>,
    parked: Arc<MemoryParkedReplies>,
    streams: Arc<dyn shared::core::ports::Streams>,
    windows: Arc<dyn shared::core::ports::CustomerWindows>,
    files: shared::services::files::OutFiles,
) -> anyhow::Result<(Sender, Arc<MemoryOutbound>)> {
    let clock = Arc::new(SystemClock);
    let queue = Arc::new(MemoryOutbound::default());
    let ports = DeliveryPorts {
        tokens: Arc::new(Tokens::new(Arc::new(MemoryTokenStore::default()), clock.clone())),
        contexts,
        parked,
        streams,
        windows,
        clock: clock.clone(),
    };
    let apis = Apis::from_env(env)?;
    let sender = Sender {
        deliveries: Deliveries::new(&config, &apis, ports),
        sent: Arc::new(MemoryDedupe::keeping(shared::core::ports::SENT_TTL)),
        queue: queue.clone(),
        metrics: Arc::new(PrintMetrics),
        clock,
        max_receives: Some(MAX_RECEIVES),
        files: Some(files),
    };
    Ok((sender, queue))
}

/// Sends what arrives on `rx`; retries with the sender's backoff (capped), gives up after
/// [`MAX_RECEIVES`] like the queue's redrive policy.
pub async fn run_memory(
    sender: Arc<Sender>,
    dead: Arc<MemoryOutbound>,
    tx: mpsc::UnboundedSender<Record>,
    mut rx: mpsc::UnboundedReceiver<Record>,
) {
    while let Some(record) = rx.recv().await {
        let handled = {
            let _working = crate::trace::working_on_outbound(&record.body);
            sender.handle(&record).await
        };
        if handled {
            // A wait on the last receive comes back as a fresh copy.
            let requeued: Vec<(String, u32)> =
                std::mem::take(&mut *dead.requeued.lock().unwrap_or_else(|p| p.into_inner()));
            let waits = !requeued.is_empty();
            for (body, delay_s) in requeued {
                crate::trace::send(&body, "retry", Some(&format!("waits {delay_s} s in a fresh copy")));
                let tx = tx.clone();
                let id = shared::core::ports::claim_token();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(delay_s)).min(DEV_MAX_BACKOFF)).await;
                    let _ = tx.send(Record {
                        message_id: id.clone(),
                        receipt_handle: id,
                        body,
                        receive_count: 1,
                        group: None,
                    });
                });
            }
            let dead_letter = dead.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match dead_letter {
                Some((body, attributes)) => {
                    let reason =
                        attributes.iter().find(|(k, _)| *k == "reason").map(|(_, v)| v.as_str()).unwrap_or("?");
                    println!("outbound ✗ dead-lettered: {reason}");
                    crate::trace::dead(&body, &attributes);
                }
                None if waits => {}
                None => crate::trace::send(&record.body, "sent", None),
            }
            continue;
        }
        if record.receive_count >= MAX_RECEIVES {
            println!("outbound ✗ gave up after {MAX_RECEIVES} attempts (the DLQ on AWS)");
            let reason = format!("gave up after {MAX_RECEIVES} attempts (the DLQ on AWS)");
            crate::trace::send(&record.body, "dead", Some(&reason));
            continue;
        }
        crate::trace::send(&record.body, "retry", None);
        let delay = Duration::from_secs(u64::from(backoff_s(record.receive_count, 0))).min(DEV_MAX_BACKOFF);
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Record { receive_count: record.receive_count + 1, ..record });
        });
    }
}

/// Publishes into the in-memory outbound queue that `run_memory` consumes.
pub struct MemoryOutboundQueue(pub mpsc::UnboundedSender<Record>);

#[async_trait::async_trait]
impl shared::core::ports::Publisher for MemoryOutboundQueue {
    async fn publish(&self, message: shared::core::ports::QueueMessage) -> Result<(), shared::core::ports::PortError> {
        let id = shared::core::ports::claim_token();
        let record =
            Record { message_id: id.clone(), receipt_handle: id, body: message.body, receive_count: 1, group: None };
        self.0.send(record).map_err(|_| shared::core::ports::PortError::new("memory queue", "the sender has stopped"))
    }
}

/// Outcome lines for a person rather than EMF documents.
pub fn print_metrics() -> Arc<dyn Metrics> {
    Arc::new(PrintMetrics)
}
