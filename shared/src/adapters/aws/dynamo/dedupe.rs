//! Dedupe markers (callbacks and sent parts): one item per key, `pk = seen#<key>`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{applied, get, is_condition_failure, n, port_error, s, update_if, Table};
use crate::core::ports::{claim_token, unix_millis, PortError};
use crate::core::ports::{Claim, Dedupe, DEDUPE_TTL};

const PENDING: &str = "pending";
const DONE: &str = "done";

/// Dedupe markers in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoDedupe {
    table: Table,
    ttl: Duration,
}

impl DynamoDedupe {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone(), ttl: DEDUPE_TTL }
    }

    /// Markers kept for `ttl` (instead of [`DEDUPE_TTL`]) once completed.
    pub fn keeping(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("seen#{key}"))
    }
}

#[async_trait]
impl Dedupe for DynamoDedupe {
    async fn claim(&self, key: &str, now: SystemTime, lease: Duration) -> Result<Claim, PortError> {
        let now_ms = unix_millis(now);
        let now_s = now_ms / 1000;
        let token = claim_token();
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", Self::pk(key))
            .item("state", s(PENDING))
            .item("owner", s(&token))
            .item("lease_until", n(now_ms + lease.as_millis() as u64))
            .item("expires_at", n(now_s + self.ttl.as_secs()))
            // Free, or a claim whose holder's lease ran out, or an expired item TTL has not yet removed.
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :pending AND lease_until < :now_ms) OR expires_at < :now_s",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":now_s", n(now_s))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match put {
            Ok(out) => {
                // An earlier claim whose lease ran out before it was completed or released.
                let old_state = out.attributes().and_then(|a| a.get("state")).and_then(|v| v.as_s().ok());
                Ok(Claim::Claimed { token, taken_over: old_state.map(String::as_str) == Some(PENDING) })
            }
            Err(err) if is_condition_failure(&err) => {
                let item = get(&self.table, Self::pk(key)).await?;
                let item = item.as_ref();
                let state = item.and_then(|i| i.get("state")).and_then(|v| v.as_s().ok()).map(String::as_str);
                let until_ms = item
                    .and_then(|i| i.get("lease_until"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(now_ms);
                // A marker deleted between the two calls was released: report it as in flight so
                // WeChat retries, rather than racing another handler.
                Ok(if state == Some(DONE) { Claim::Published } else { Claim::InFlight { until_ms } })
            }
            Err(err) => Err(port_error(err)),
        }
    }

    async fn complete(&self, key: &str, token: &str, now: SystemTime) -> Result<(), PortError> {
        let values = [
            (":done", s(DONE)),
            (":pending", s(PENDING)),
            (":token", s(token)),
            (":expires", n(unix_millis(now) / 1000 + self.ttl.as_secs())),
        ];
        let set = "SET #state = :done, expires_at = :expires REMOVE lease_until";
        if !update_if(&self.table, Self::pk(key), set, Some("#owner = :token AND #state = :pending"), &values).await? {
            tracing::warn!("dedupe claim was taken over before completion");
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), PortError> {
        let result = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(key))
            .condition_expression("#owner = :token AND #state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        // A failed condition means another holder already moved on: nothing to undo.
        applied(result).map(drop)
    }
}
