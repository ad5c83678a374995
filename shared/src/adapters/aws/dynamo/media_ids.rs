//! Uploaded media ids: `pk = mediaid#<scope>` (channel, account, type and SHA-256 of the file).

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{applied, get, n, s, Table};
use crate::core::ports::{unix_millis, PortError};

/// Media ids in the bridge's table; each expires (TTL) with the id itself.
#[derive(Debug, Clone)]
pub struct DynamoMediaIds {
    table: Table,
}

impl DynamoMediaIds {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(scope: &str) -> AttributeValue {
        AttributeValue::S(format!("mediaid#{scope}"))
    }
}

#[async_trait]
impl crate::core::ports::MediaIds for DynamoMediaIds {
    async fn get(&self, scope: &str, now: SystemTime) -> Result<Option<String>, PortError> {
        let item = get(&self.table, Self::pk(scope)).await?;
        let Some(item) = item else { return Ok(None) };
        // TTL deletion lags: an item past its time is no id.
        let until = item.get("valid_until").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        if until.is_none_or(|until| until <= unix_millis(now) / 1000) {
            return Ok(None);
        }
        Ok(item.get("media_id").and_then(|v| v.as_s().ok()).cloned())
    }

    async fn put(&self, scope: &str, media_id: &str, valid_until: SystemTime) -> Result<(), PortError> {
        let until = unix_millis(valid_until) / 1000;
        let result = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", Self::pk(scope))
            .item("media_id", s(media_id))
            .item("valid_until", n(until))
            .item("expires_at", n(until))
            .send()
            .await;
        applied(result).map(drop)
    }

    async fn forget(&self, scope: &str, media_id: &str) -> Result<(), PortError> {
        let result = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(scope))
            .condition_expression("media_id = :id")
            .expression_attribute_values(":id", s(media_id))
            .send()
            .await;
        // A failed condition: another upload already replaced it.
        applied(result).map(drop)
    }
}
