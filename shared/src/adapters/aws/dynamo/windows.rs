//! 微信客服 reply windows: `pk = kfwin#<key>` with `last_at` (the customer's last message, unix
//! seconds, and its `last_msgid`) and `parts` (a string set of the parts counted since), expiring with the window.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{get, n, s, update_if, Table};
use crate::core::ports::{CustomerWindows, PortError, WindowVerdict};

/// Kept past the 48 h window (a count must outlive it).
const WINDOW_TTL_S: u64 = 3 * 24 * 3600;

/// Reply windows in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoCustomerWindows {
    table: Table,
}

impl DynamoCustomerWindows {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("kfwin#{key}"))
    }
}

#[async_trait]
impl CustomerWindows for DynamoCustomerWindows {
    async fn customer_wrote(&self, key: &str, msgid: &str, at: u64) -> Result<(), PortError> {
        let values = [(":at", n(at)), (":msgid", s(msgid)), (":expires", n(at + WINDOW_TTL_S))];
        // An older message arriving late does not take the allowance back; two messages in one
        // second both renew it, the same one handled again does not.
        update_if(
            &self.table,
            Self::pk(key),
            "SET last_at = :at, last_msgid = :msgid, expires_at = :expires REMOVE parts",
            Some("attribute_not_exists(last_at) OR last_at < :at OR (last_at = :at AND last_msgid <> :msgid)"),
            &values,
        )
        .await
        .map(drop)
    }

    async fn count(
        &self,
        key: &str,
        part: &str,
        now: u64,
        window_s: u64,
        most: u32,
    ) -> Result<WindowVerdict, PortError> {
        let values = [
            (":part", AttributeValue::Ss(vec![part.to_owned()])),
            (":one", s(part)),
            (":since", n(now.saturating_sub(window_s))),
            (":most", n(u64::from(most))),
        ];
        let counted = update_if(
            &self.table,
            Self::pk(key),
            "ADD parts :part",
            Some("last_at >= :since AND (attribute_not_exists(parts) OR contains(parts, :one) OR size(parts) < :most)"),
            &values,
        )
        .await?;
        if counted {
            return Ok(WindowVerdict::Counted);
        }
        // Why not: one more read tells.
        let item = get(&self.table, Self::pk(key)).await?;
        let last = item
            .as_ref()
            .and_then(|i| i.get("last_at"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(match last {
            Some(last) if last >= now.saturating_sub(window_s) => WindowVerdict::Spent,
            _ => WindowVerdict::Closed,
        })
    }
}
