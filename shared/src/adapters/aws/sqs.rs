//! The SQS adapter of [`Publisher`].

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::core::ports::{PortError, Publisher, QueueMessage};

/// Publishes to one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsPublisher {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsPublisher {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }

    /// A publisher with its own client built from the SDK configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(aws_sdk_sqs::Client::new(sdk), queue_url)
    }
}

#[async_trait]
impl Publisher for SqsPublisher {
    async fn publish(&self, message: QueueMessage) -> Result<(), PortError> {
        use crate::core::callback::{FIFO_DEDUP, FIFO_GROUP};
        // SQS names every FIFO queue `….fifo`; a standard queue refuses a deduplication id.
        let fifo = self.queue_url.ends_with(".fifo");
        let mut request = self.client.send_message().queue_url(&self.queue_url).message_body(message.body);
        for (name, value) in message.attributes {
            // A FIFO queue's group and deduplication id travel as the send's own fields.
            match name {
                FIFO_GROUP if fifo => request = request.message_group_id(value),
                FIFO_DEDUP if fifo => request = request.message_deduplication_id(value),
                FIFO_GROUP | FIFO_DEDUP => {}
                _ => {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .map_err(|err| PortError::new("sqs", err))?;
                    request = request.message_attributes(name, value);
                }
            }
        }
        request.send().await.map_err(|err| PortError::new("sqs", DisplayErrorContext(&err)))?;
        Ok(())
    }
}

/// The sender's actions on the outbound queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsOutbound {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
}

impl SqsOutbound {
    pub fn from_sdk(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self { client: aws_sdk_sqs::Client::new(sdk), queue_url: queue_url.into(), dlq_url: dlq_url.into() }
    }
}

/// Redelivery control of one queue (ChangeMessageVisibility).
#[derive(Debug, Clone)]
pub struct SqsRedeliver {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRedeliver {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }

    /// With its own client built from the SDK configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(aws_sdk_sqs::Client::new(sdk), queue_url)
    }
}

#[async_trait]
impl crate::core::ports::Redeliver for SqsRedeliver {
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError> {
        // SQS allows at most 12 h.
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay_s.min(43_200)).unwrap_or(43_200))
            .send()
            .await
            .map(drop)
            .map_err(|err| PortError::new("sqs", DisplayErrorContext(&err)))
    }
}

#[async_trait]
impl crate::core::ports::Redeliver for SqsOutbound {
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError> {
        SqsRedeliver::new(self.client.clone(), self.queue_url.clone()).retry_later(receipt_handle, delay_s).await
    }
}

#[async_trait]
impl crate::core::ports::OutboundQueue for SqsOutbound {
    async fn dead_letter(&self, body: &str, attributes: &[(&'static str, String)]) -> Result<(), PortError> {
        let message = QueueMessage { body: body.to_owned(), attributes: attributes.to_vec() };
        SqsPublisher::new(self.client.clone(), self.dlq_url.clone()).publish(message).await
    }

    async fn requeue(&self, body: &str, delay_s: u32) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(i32::try_from(delay_s.min(900)).unwrap_or(900))
            .send()
            .await
            .map(drop)
            .map_err(|err| PortError::new("sqs", DisplayErrorContext(&err)))
    }
}

/// How long a long poll of [`receive`] waits for messages (SQS allows up to 20 s).
pub const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// One long poll of `queue_url` for up to ten messages (what the Lambda event source does for a
/// function, for loops that run outside Lambda such as `wxbridge dev --aws`).
///
/// The request gets its own timeout, longer than the poll: the SDK's operation timeout (3 s,
/// sized for the callbacks) would abandon a poll that SQS still holds, and a message SQS hands to
/// an abandoned poll stays invisible for the queue's whole visibility timeout.
pub async fn receive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<crate::core::ports::Record>, PortError> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let timeout = LONG_POLL + std::time::Duration::from_secs(5);
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeout)
        .operation_attempt_timeout(timeout)
        .build();
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(LONG_POLL.as_secs() as i32)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .customize()
        .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
        .send()
        .await
        .map_err(|err| PortError::new("sqs", DisplayErrorContext(&err)))?;
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| {
            let attribute = |name| m.attributes().and_then(|a| a.get(&name));
            let count = attribute(MessageSystemAttributeName::ApproximateReceiveCount);
            Some(crate::core::ports::Record {
                message_id: m.message_id()?.to_owned(),
                receipt_handle: m.receipt_handle()?.to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                receive_count: count.and_then(|c| c.parse().ok()).unwrap_or(1),
                group: attribute(MessageSystemAttributeName::MessageGroupId).cloned(),
            })
        })
        .collect())
}
