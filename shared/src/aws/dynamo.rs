//! The DynamoDB adapter of [`Dedupe`]: one item per message, `pk = seen#<inbound id>`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::ports::{claim_token, unix_millis, Claim, Dedupe, PortError, DEDUPE_TTL};

const PENDING: &str = "pending";
const DONE: &str = "done";

/// Dedupe markers in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoDedupe {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoDedupe {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Dedupe with its own client built from the SDK configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("seen#{key}"))
    }
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn port_error<E: std::error::Error + 'static, R: std::fmt::Debug>(err: SdkError<E, R>) -> PortError {
    PortError::new("dynamodb", DisplayErrorContext(&err))
}

/// True when the error is a failed condition (someone else holds or finished the marker).
fn is_condition_failure<E, R>(err: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl Dedupe for DynamoDedupe {
    async fn claim(&self, key: &str, now: SystemTime, lease: Duration) -> Result<Claim, PortError> {
        let now_ms = unix_millis(now);
        let now_s = now_ms / 1000;
        let token = claim_token();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", Self::pk(key))
            .item("state", s(PENDING))
            .item("owner", s(&token))
            .item("lease_until", n(now_ms + lease.as_millis() as u64))
            .item("expires_at", n(now_s + DEDUPE_TTL.as_secs()))
            // Free, or a claim whose holder's lease ran out, or an expired item TTL has not yet removed.
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :pending AND lease_until < :now_ms) OR expires_at < :now_s",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":now_s", n(now_s))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Claimed { token }),
            Err(err) if is_condition_failure(&err) => {
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", Self::pk(key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(port_error)?;
                let state = item.item().and_then(|i| i.get("state")).and_then(|v| v.as_s().ok()).map(String::as_str);
                // A marker deleted between the two calls was released: report it as in flight so
                // WeChat retries, rather than racing another handler.
                Ok(if state == Some(DONE) { Claim::Published } else { Claim::InFlight })
            }
            Err(err) => Err(port_error(err)),
        }
    }

    async fn complete(&self, key: &str, token: &str, now: SystemTime) -> Result<(), PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .update_expression("SET #state = :done, expires_at = :expires REMOVE lease_until")
            .condition_expression("#owner = :token AND #state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":expires", n(unix_millis(now) / 1000 + DEDUPE_TTL.as_secs()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => {
                tracing::warn!("dedupe claim was taken over before completion");
                Ok(())
            }
            Err(err) => Err(port_error(err)),
        }
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), PortError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .condition_expression("#owner = :token AND #state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => Ok(()),
            Err(err) => Err(port_error(err)),
        }
    }
}
