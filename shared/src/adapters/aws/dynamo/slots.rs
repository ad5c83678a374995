//! Official Account reply slots: `pk = slot#<inbound id>`.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{get, n, port_error, s, update_if, Table};
use crate::core::ports::{unix_millis, PortError};

/// Official Account reply slots in the bridge's table: `pk = slot#<inbound id>`.
#[derive(Debug, Clone)]
pub struct DynamoReplySlots {
    table: Table,
}

/// A slot lives a day: WeChat's deliveries span seconds; the dispatcher reads it within minutes.
const SLOT_TTL_S: u64 = 24 * 3600;

impl DynamoReplySlots {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("slot#{key}"))
    }

    fn slot(item: &HashMap<String, AttributeValue>) -> Option<crate::core::ports::Slot> {
        use crate::core::ports::SlotState;
        let state = match item.get("state").and_then(|v| v.as_s().ok()).map(String::as_str)? {
            "filled" => SlotState::Filled,
            "closed" => SlotState::Closed,
            _ => SlotState::Open,
        };
        let deliveries = item.get("deliveries").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
        let reply = item.get("reply").and_then(|v| v.as_s().ok()).cloned();
        let filled_by = item.get("filled_by").and_then(|v| v.as_s().ok()).cloned();
        let taken = item.get("taken").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
        let deadline_ms = item.get("deadline_ms").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
        Some(crate::core::ports::Slot { state, deliveries, reply, filled_by, taken, deadline_ms })
    }

    /// One conditional update of a slot: true when it applied, false when its condition failed.
    async fn update_if(
        &self,
        key: &str,
        set: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<bool, PortError> {
        update_if(&self.table, Self::pk(key), set, Some(condition), values).await
    }
}

#[async_trait]
impl crate::core::ports::ReplySlots for DynamoReplySlots {
    async fn arrive(
        &self,
        key: &str,
        now: SystemTime,
        deadline: SystemTime,
    ) -> Result<crate::core::ports::Slot, PortError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(key))
            .update_expression(
                "SET #state = if_not_exists(#state, :open), expires_at = if_not_exists(expires_at, :expires), \
                 deadline_ms = if_not_exists(deadline_ms, :deadline) ADD deliveries :one",
            )
            .expression_attribute_values(":deadline", n(unix_millis(deadline)))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":expires", n(unix_millis(now) / 1000 + SLOT_TTL_S))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(port_error)?;
        out.attributes()
            .and_then(Self::slot)
            .ok_or_else(|| PortError::new("dynamodb", "the slot update returned no item"))
    }

    async fn read(&self, key: &str) -> Result<Option<crate::core::ports::Slot>, PortError> {
        Ok(get(&self.table, Self::pk(key)).await?.as_ref().and_then(Self::slot))
    }
    async fn fill(&self, key: &str, reply: &str, by: &str, now: SystemTime) -> Result<bool, PortError> {
        let values = [
            (":open", s("open")),
            (":filled", s("filled")),
            (":reply", s(reply)),
            (":by", s(by)),
            (":now", n(unix_millis(now))),
        ];
        self.update_if(
            key,
            "SET #state = :filled, reply = :reply, filled_by = :by",
            "#state = :open AND deadline_ms > :now",
            &values,
        )
        .await
    }

    async fn take(&self, key: &str) -> Result<bool, PortError> {
        let values = [(":filled", s("filled")), (":yes", AttributeValue::Bool(true))];
        self.update_if(key, "SET taken = :yes", "#state = :filled", &values).await
    }

    async fn revoke(&self, key: &str) -> Result<bool, PortError> {
        let values = [(":filled", s("filled")), (":closed", s("closed"))];
        self.update_if(key, "SET #state = :closed", "#state = :filled AND attribute_not_exists(taken)", &values).await
    }
    async fn close(&self, key: &str) -> Result<bool, PortError> {
        self.update_if(key, "SET #state = :closed", "#state = :open", &[(":open", s("open")), (":closed", s("closed"))])
            .await
    }
}
