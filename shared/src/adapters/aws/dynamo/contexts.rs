//! iLink context tokens: `pk = ctx#<account>#<user>`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{applied, get, n, s, Table};
use crate::core::ports::PortError;

/// iLink context tokens in the bridge's table: `pk = ctx#<account>#<user>`.
#[derive(Debug, Clone)]
pub struct DynamoContextTokens {
    table: Table,
}

/// Context tokens are kept a week (the service accepts them for 24 h after the user's message).
pub(super) const CONTEXT_TTL_S: u64 = 7 * 24 * 3600;

impl DynamoContextTokens {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(account: &str, user: &str) -> AttributeValue {
        AttributeValue::S(format!("ctx#{account}#{user}"))
    }
}

#[async_trait]
impl crate::core::ports::ContextTokens for DynamoContextTokens {
    async fn latest(&self, account: &str, user: &str) -> Result<Option<String>, PortError> {
        let item = get(&self.table, Self::pk(account, user)).await?;
        Ok(item.as_ref().and_then(|i| i.get("token")).and_then(|v| v.as_s().ok()).cloned())
    }

    async fn store(&self, account: &str, user: &str, token: &str, issued_ms: u64) -> Result<(), PortError> {
        let result = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", Self::pk(account, user))
            .item("token", s(token))
            .item("issued_ms", n(issued_ms))
            .item("expires_at", n(issued_ms / 1000 + CONTEXT_TTL_S))
            .condition_expression("attribute_not_exists(pk) OR issued_ms <= :issued")
            .expression_attribute_values(":issued", n(issued_ms))
            .send()
            .await;
        // A failed condition means another holder already moved on: nothing to undo.
        applied(result).map(drop)
    }
}
