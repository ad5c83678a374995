//! The SQS event source of `wxbridge dev --aws`: polls a queue and hands batches to the function's
//! handler, deleting what was handled, as the Lambda event source mapping does.

use std::sync::Arc;
use std::time::Duration;

use shared::core::ports::Record;
use shared::services::sender::Sender;

/// What consumes a queue: the sender or the dispatcher, as their Lambda event sources do.
#[async_trait::async_trait]
pub trait BatchHandler: Send + Sync {
    async fn handle_batch(&self, records: &[Record]) -> Vec<String>;
}

#[async_trait::async_trait]
impl BatchHandler for Sender {
    async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        Sender::handle_batch(self, records).await
    }
}

#[async_trait::async_trait]
impl BatchHandler for shared::services::dispatcher::Dispatcher {
    async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        shared::services::dispatcher::Dispatcher::handle_batch(self, records).await
    }
}

/// Polls an SQS queue and hands batches to `handler`, deleting what was handled (the event
/// source mapping's job on Lambda).
pub async fn run_sqs(handler: Arc<dyn BatchHandler>, sqs: aws_sdk_sqs::Client, queue_url: String) {
    loop {
        let records = match shared::adapters::aws::sqs::receive(&sqs, &queue_url).await {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(error = %err, queue = %queue_url, "cannot read the queue");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let failed = handler.handle_batch(&records).await;
        for record in records.iter().filter(|r| !failed.contains(&r.message_id)) {
            if let Err(err) =
                sqs.delete_message().queue_url(&queue_url).receipt_handle(&record.receipt_handle).send().await
            {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "cannot delete a handled message");
            }
        }
    }
}
