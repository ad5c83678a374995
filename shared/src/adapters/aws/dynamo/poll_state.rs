//! iLink poll state: `pk = ilink#<account>` with the cursor and the pause.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{get, n, s, update_if, Table};
use crate::core::ports::{unix_millis, PortError};

/// iLink poll state in the bridge's table: `pk = ilink#<account>` with `cursor`, and `paused_at`
/// + `paused_token` while the account waits for a new login.
#[derive(Debug, Clone)]
pub struct DynamoPollState {
    table: Table,
}

impl DynamoPollState {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(account: &str) -> AttributeValue {
        AttributeValue::S(format!("ilink#{account}"))
    }

    async fn item(&self, account: &str) -> Result<Option<HashMap<String, AttributeValue>>, PortError> {
        get(&self.table, Self::pk(account)).await
    }

    async fn update(
        &self,
        account: &str,
        expression: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<(), PortError> {
        // `cursor` is a reserved word: every attribute goes by a placeholder (`#name`).
        update_if(&self.table, Self::pk(account), expression, None, values).await.map(drop)
    }
}

#[async_trait]
impl crate::core::ports::PollState for DynamoPollState {
    async fn cursor(&self, account: &str) -> Result<Option<String>, PortError> {
        Ok(self.item(account).await?.and_then(|i| i.get("cursor").and_then(|v| v.as_s().ok().cloned())))
    }

    async fn save_cursor(&self, account: &str, cursor: &str) -> Result<(), PortError> {
        self.update(account, "SET #cursor = :c", &[(":c", s(cursor))]).await
    }

    async fn paused(&self, account: &str) -> Result<Option<crate::core::ports::Paused>, PortError> {
        let Some(item) = self.item(account).await? else { return Ok(None) };
        let at = item.get("paused_at").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
        let token = item.get("paused_token").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        Ok(at.map(|at| crate::core::ports::Paused { at, token }))
    }

    async fn pause(&self, account: &str, token: &str, at: SystemTime) -> Result<(), PortError> {
        let values = [(":at", n(unix_millis(at) / 1000)), (":t", s(token))];
        self.update(account, "SET #paused_at = :at, #paused_token = :t", &values).await
    }

    async fn resume(&self, account: &str) -> Result<(), PortError> {
        self.update(account, "REMOVE #paused_at, #paused_token, #cursor", &[]).await
    }
}
