//! The SQS adapter of [`Publisher`].

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::ports::{PortError, Publisher, QueueMessage};

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
