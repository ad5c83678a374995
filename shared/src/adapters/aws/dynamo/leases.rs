//! Leases (one iLink poller per account): `pk = <key>` with `owner` and `until`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::table::{applied, n, s, update_if, Table};
use crate::core::ports::{unix_millis, PortError};

/// Leases in the bridge's table: the item `pk = <key>` holds `owner` and `until` (unix ms).
#[derive(Debug, Clone)]
pub struct DynamoLeases {
    table: Table,
}

impl DynamoLeases {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }
}

#[async_trait]
impl crate::core::ports::Leases for DynamoLeases {
    async fn acquire(&self, key: &str, owner: &str, now: SystemTime, ttl: Duration) -> Result<bool, PortError> {
        let now_ms = unix_millis(now);
        let values = [
            (":owner", s(owner)),
            (":until", n(now_ms + ttl.as_millis() as u64)),
            (":now", n(now_ms)),
            (":expires", n(now_ms / 1000 + ttl.as_secs() + 3600)),
        ];
        update_if(
            &self.table,
            s(key),
            "SET #owner = :owner, lease_until = :until, expires_at = :expires",
            Some("attribute_not_exists(lease_until) OR lease_until < :now OR #owner = :owner"),
            &values,
        )
        .await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), PortError> {
        let result = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(key))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        // Someone else's lease (ours expired): leave it.
        applied(result).map(drop)
    }
}
