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
        let mut request = self.client.send_message().queue_url(&self.queue_url).message_body(message.body);
        for (name, value) in message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|err| PortError::new("sqs", err))?;
            request = request.message_attributes(name, value);
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

#[async_trait]
impl crate::core::ports::OutboundQueue for SqsOutbound {
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay_s).unwrap_or(i32::MAX))
            .send()
            .await
            .map(drop)
            .map_err(|err| PortError::new("sqs", DisplayErrorContext(&err)))
    }

    async fn dead_letter(&self, body: &str, attributes: &[(&'static str, String)]) -> Result<(), PortError> {
        let message = QueueMessage { body: body.to_owned(), attributes: attributes.to_vec() };
        SqsPublisher::new(self.client.clone(), self.dlq_url.clone()).publish(message).await
    }
}
