//! Versioned feed cursors: `pk = cursor#<key>` with `cursor` and `version` (no TTL: a lost
//! cursor would make a puller start over).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{get, n, s, update_if, Table};
use crate::core::ports::{Cursors, PortError};

/// Cursors in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoCursors {
    table: Table,
}

impl DynamoCursors {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("cursor#{key}"))
    }
}

#[async_trait]
impl Cursors for DynamoCursors {
    async fn load(&self, key: &str) -> Result<Option<(String, u64)>, PortError> {
        let Some(item) = get(&self.table, Self::pk(key)).await? else { return Ok(None) };
        let cursor = item.get("cursor").and_then(|v| v.as_s().ok()).cloned();
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
        Ok(cursor.zip(version))
    }

    async fn save(&self, key: &str, cursor: &str, previous: Option<u64>) -> Result<bool, PortError> {
        let next = previous.map_or(1, |v| v + 1);
        let mut values = vec![(":c", s(cursor)), (":next", n(next))];
        // `cursor` is a reserved word: attributes go by placeholders (`#name`).
        let condition = match previous {
            None => "attribute_not_exists(pk)",
            Some(previous) => {
                values.push((":previous", n(previous)));
                "#version = :previous"
            }
        };
        update_if(&self.table, Self::pk(key), "SET #cursor = :c, #version = :next", Some(condition), &values).await
    }
}
