//! Spending-limit counters: `pk = count#<key>` with `ids` (a string set of the messages counted
//! in the window the key names, so a message handled again is not counted twice) and
//! `expires_at`, all of a message's windows in one transaction; notices: `pk = once#<key>`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::table::{n, port_error, update_if, Table};
use crate::core::ports::{CounterWindow, Counters, PortError};

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
    async fn take(&self, windows: &[CounterWindow], id: &str) -> Result<Option<usize>, PortError> {
        if windows.is_empty() {
            return Ok(None);
        }
        // One transaction of conditional ADDs: counted in every window or in none, and
        // concurrent takes never count past a limit.
        let mut request = self.table.client.transact_write_items();
        for window in windows {
            let update = Update::builder()
                .table_name(&self.table.name)
                .key("pk", AttributeValue::S(format!("count#{}", window.key)))
                .update_expression("ADD ids :id SET expires_at = if_not_exists(expires_at, :expires)")
                .condition_expression("attribute_not_exists(ids) OR contains(ids, :one) OR size(ids) < :limit")
                .expression_attribute_values(":id", AttributeValue::Ss(vec![id.to_owned()]))
                .expression_attribute_values(":one", AttributeValue::S(id.to_owned()))
                .expression_attribute_values(":limit", n(u64::from(window.limit)))
                .expression_attribute_values(":expires", expires(window.ttl))
                .build()
                .map_err(|e| PortError::new("dynamodb", e))?;
            request = request.transact_items(TransactWriteItem::builder().update(update).build());
        }
        match request.send().await {
            Ok(_) => Ok(None),
            Err(err) => {
                let reasons = err
                    .as_service_error()
                    .and_then(|e| match e {
                        TransactWriteItemsError::TransactionCanceledException(c) => Some(c.cancellation_reasons()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let over = reasons.iter().position(|r| r.code() == Some("ConditionalCheckFailed"));
                match over {
                    Some(index) => Ok(Some(index)),
                    None => Err(port_error(err)),
                }
            }
        }
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
