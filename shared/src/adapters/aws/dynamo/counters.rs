//! Spending-limit counters: `pk = count#<key>` with `ids` (a string set of the messages counted
//! in the window the key names, so a message handled again is not counted twice) and
//! `expires_at`; notices: `pk = once#<key>`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{n, update_if, Table};
use crate::core::ports::{Counters, PortError};

/// Counters in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoCounters {
    table: Table,
}

impl DynamoCounters {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }
}

fn expires(ttl: Duration) -> AttributeValue {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    n(now.saturating_add(ttl.as_secs()))
}

#[async_trait]
impl Counters for DynamoCounters {
    async fn take(&self, key: &str, id: &str, limit: u32, ttl: Duration) -> Result<bool, PortError> {
        // One conditional ADD: concurrent takes never count past the limit.
        let values = [
            (":id", AttributeValue::Ss(vec![id.to_owned()])),
            (":one", AttributeValue::S(id.to_owned())),
            (":limit", n(u64::from(limit))),
            (":expires", expires(ttl)),
        ];
        update_if(
            &self.table,
            AttributeValue::S(format!("count#{key}")),
            "ADD ids :id SET expires_at = if_not_exists(expires_at, :expires)",
            Some("attribute_not_exists(ids) OR contains(ids, :one) OR size(ids) < :limit"),
            &values,
        )
        .await
    }

    async fn first(&self, key: &str, ttl: Duration) -> Result<bool, PortError> {
        let values = [(":expires", expires(ttl))];
        update_if(
            &self.table,
            AttributeValue::S(format!("once#{key}")),
            "SET expires_at = :expires",
            Some("attribute_not_exists(pk)"),
            &values,
        )
        .await
    }
}
