//! Parked Official Account replies: `pk = parked#<account>#<user>`.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::contexts::CONTEXT_TTL_S;
use super::table::{applied, n, port_error, s, Table};
use crate::core::ports::{unix_millis, PortError};

/// Parked replies in the bridge's table: `pk = parked#<account>#<user>`, a list kept a week.
#[derive(Debug, Clone)]
pub struct DynamoParkedReplies {
    table: Table,
}

impl DynamoParkedReplies {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(account: &str, user: &str) -> AttributeValue {
        AttributeValue::S(format!("parked#{account}#{user}"))
    }
}

#[async_trait]
impl crate::core::ports::ParkedReplies for DynamoParkedReplies {
    async fn park(&self, account: &str, user: &str, reply: &str, now: SystemTime) -> Result<(), PortError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(account, user))
            .update_expression(
                "SET replies = list_append(if_not_exists(replies, :empty), :reply), expires_at = :expires",
            )
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":reply", AttributeValue::L(vec![s(reply)]))
            .expression_attribute_values(":expires", n(unix_millis(now) / 1000 + CONTEXT_TTL_S))
            .send()
            .await
            .map(drop)
            .map_err(port_error)
    }

    async fn oldest(&self, account: &str, user: &str) -> Result<Option<String>, PortError> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(account, user))
            .consistent_read(true)
            .projection_expression("replies[0]")
            .send()
            .await
            .map_err(port_error)?;
        let replies = out.item().and_then(|i| i.get("replies")).and_then(|v| v.as_l().ok());
        Ok(replies.and_then(|list| list.first()).and_then(|v| v.as_s().ok().cloned()))
    }

    async fn remove_oldest(&self, account: &str, user: &str, reply: &str) -> Result<(), PortError> {
        let removed = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(account, user))
            .update_expression("REMOVE replies[0]")
            .condition_expression("replies[0] = :reply")
            .expression_attribute_values(":reply", s(reply))
            .send()
            .await;
        // A failed condition: already removed (a retried call), nothing more to remove.
        applied(removed).map(drop)
    }
}
