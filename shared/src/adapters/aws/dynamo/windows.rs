//! 微信客服 customers: `pk = kfwin#<key>` with `last_at` (the customer's last message, unix
//! seconds, and its `last_msgid`), `parts` (a string set of the parts counted since) and the
//! session as WeChat last reported it (`svc_state`, `svc_user`, `svc_at`), expiring after the
//! window; and one `kfsent#<key>:<msgid>` per part sent (`part`: the reply part's key, then `fail_type` and
//! `failed_at` when WeChat reports it undelivered), kept four days.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{get, n, s, update_if, Table};
use crate::core::ports::{CustomerWindows, PortError, WindowVerdict};

/// Kept past the 48 h window (a count must outlive it).
const WINDOW_TTL_S: u64 = 3 * 24 * 3600;
/// A send's record outlives the window its failure report can come in.
const SENT_TTL_S: u64 = 4 * 24 * 3600;

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

    fn sent_pk(key: &str, msgid: &str) -> AttributeValue {
        AttributeValue::S(format!("kfsent#{key}:{msgid}"))
    }
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

#[async_trait]
impl CustomerWindows for DynamoCustomerWindows {
    async fn customer_wrote(&self, key: &str, msgid: &str, at: u64) -> Result<(), PortError> {
        let values = [(":at", n(at)), (":msgid", s(msgid)), (":expires", n(at.saturating_add(WINDOW_TTL_S)))];
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

    async fn uncount(&self, key: &str, part: &str) -> Result<(), PortError> {
        let values = [(":part", AttributeValue::Ss(vec![part.to_owned()]))];
        update_if(&self.table, Self::pk(key), "DELETE parts :part", Some("attribute_exists(parts)"), &values)
            .await
            .map(drop)
    }

    async fn sent(&self, key: &str, msgid: &str, part: &str, at: u64) -> Result<(), PortError> {
        let values = [(":part", s(part)), (":at", n(at)), (":expires", n(at.saturating_add(SENT_TTL_S)))];
        update_if(
            &self.table,
            Self::sent_pk(key, msgid),
            "SET #part = :part, sent_at = :at, expires_at = :expires",
            None,
            &values,
        )
        .await
        .map(drop)
    }

    async fn send_failed(&self, key: &str, msgid: &str, fail_type: i64, at: u64) -> Result<Option<String>, PortError> {
        let values = [
            (":type", AttributeValue::N(fail_type.to_string())),
            (":at", n(at)),
            (":expires", n(at.saturating_add(SENT_TTL_S))),
        ];
        let pk = Self::sent_pk(key, msgid);
        update_if(
            &self.table,
            pk.clone(),
            "SET fail_type = :type, failed_at = :at, expires_at = if_not_exists(expires_at, :expires)",
            None,
            &values,
        )
        .await?;
        let item = get(&self.table, pk).await?;
        Ok(item.and_then(|i| i.get("part").and_then(|v| v.as_s().ok()).cloned()))
    }

    async fn session(&self, key: &str, state: i64, servicer: Option<&str>, at: u64) -> Result<(), PortError> {
        let mut values = vec![
            (":state", AttributeValue::N(state.to_string())),
            (":at", n(at)),
            (":expires", n(at.saturating_add(WINDOW_TTL_S))),
        ];
        let servicer_update = match servicer {
            Some(servicer) => {
                values.push((":user", s(servicer)));
                "svc_user = :user"
            }
            None => "",
        };
        let (set_user, remove_user) = if servicer_update.is_empty() {
            (String::new(), " REMOVE svc_user")
        } else {
            (format!(", {servicer_update}"), "")
        };
        // An older report never overwrites a newer one; the item lives at least as long as the
        // window it may already hold.
        let expression = format!(
            "SET svc_state = :state, svc_at = :at, expires_at = if_not_exists(expires_at, :expires){set_user}{remove_user}"
        );
        update_if(
            &self.table,
            Self::pk(key),
            &expression,
            Some("attribute_not_exists(svc_at) OR svc_at <= :at"),
            &values,
        )
        .await
        .map(drop)
    }

    async fn last_session(&self, key: &str) -> Result<Option<(i64, Option<String>, u64)>, PortError> {
        let Some(item) = get(&self.table, Self::pk(key)).await? else { return Ok(None) };
        let state = item.get("svc_state").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
        let user = item.get("svc_user").and_then(|v| v.as_s().ok()).cloned();
        Ok(state.zip(number(&item, "svc_at")).map(|(state, at)| (state, user, at)))
    }
}
