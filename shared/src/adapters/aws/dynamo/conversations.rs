//! Conversations the bridge remembers: `pk = conv#<key>` with `turns` (JSON), `epoch`, `ext`
//! (the backend's conversation id), `version` and `expires_at` (idle expiry). An item past
//! `expires_at` that DynamoDB has not yet removed reads as empty, keeping its version (a save
//! names it) and its reset count.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{get, n, s, update_if, Table};
use crate::core::ports::{ConversationState, Conversations, PortError, Turn};

/// Conversations in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoConversations {
    table: Table,
}

impl DynamoConversations {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("conv#{key}"))
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[async_trait]
impl Conversations for DynamoConversations {
    async fn load(&self, key: &str) -> Result<ConversationState, PortError> {
        let Some(item) = get(&self.table, Self::pk(key)).await? else { return Ok(ConversationState::default()) };
        let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        let version = number("version").unwrap_or(0);
        let epoch = number("epoch").unwrap_or(0);
        if number("expires_at").is_some_and(|at| at <= now()) {
            return Ok(ConversationState { epoch, version, ..ConversationState::default() });
        }
        let turns = match item.get("turns").and_then(|v| v.as_s().ok()) {
            Some(json) => serde_json::from_str::<Vec<Turn>>(json).map_err(|e| {
                let reason = crate::core::config::redact_serde_message(&e.to_string());
                PortError::new("conversations", format!("stored turns are unreadable: {reason}"))
            })?,
            None => Vec::new(),
        };
        let external_id = item.get("ext").and_then(|v| v.as_s().ok()).cloned();
        Ok(ConversationState { turns, epoch, external_id, version })
    }

    async fn save(&self, key: &str, state: &ConversationState, ttl: Duration) -> Result<bool, PortError> {
        let turns = serde_json::to_string(&state.turns)
            .map_err(|e| PortError::new("conversations", format!("turns cannot be stored: {e}")))?;
        let mut values = vec![
            (":turns", s(&turns)),
            (":epoch", n(state.epoch)),
            (":next", n(state.version + 1)),
            (":expires", n(now().saturating_add(ttl.as_secs()))),
        ];
        let mut expression = "SET turns = :turns, epoch = :epoch, #version = :next, expires_at = :expires".to_owned();
        match &state.external_id {
            Some(id) => {
                values.push((":ext", s(id)));
                expression.push_str(", ext = :ext");
            }
            None => expression.push_str(" REMOVE ext"),
        }
        let condition = if state.version == 0 {
            "attribute_not_exists(pk)"
        } else {
            values.push((":previous", n(state.version)));
            "#version = :previous"
        };
        update_if(&self.table, Self::pk(key), &expression, Some(condition), &values).await
    }
}
