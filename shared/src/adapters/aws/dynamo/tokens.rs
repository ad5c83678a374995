//! Shared access tokens: `pk = token#<channel>:<account>`, with the refresh lease.

use std::time::Duration;

use async_trait::async_trait;

use super::table::{applied, get, is_condition_failure, n, port_error, s, update_if, Table};
use crate::core::ports::PortError;

/// The shared access tokens in the bridge's table: `pk = token#<channel>:<account>`.
#[derive(Debug, Clone)]
pub struct DynamoTokenStore {
    table: Table,
}

impl DynamoTokenStore {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }
}

/// Token items outlive the token by a day, then TTL removes them.
fn token_item_expiry(valid_until_ms: u64) -> u64 {
    valid_until_ms / 1000 + 24 * 3600
}

#[async_trait]
impl crate::core::tokens::TokenStore for DynamoTokenStore {
    async fn load(&self, key: &str) -> Result<Option<crate::core::tokens::StoredToken>, PortError> {
        let Some(item) = get(&self.table, s(key)).await? else { return Ok(None) };
        let value = item.get("token").and_then(|v| v.as_s().ok());
        let until = item.get("valid_until_ms").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
        Ok(match (value, until) {
            (Some(value), Some(valid_until_ms)) => Some(crate::core::tokens::StoredToken {
                value: secrecy::SecretString::from(value.clone()),
                valid_until_ms,
            }),
            _ => None,
        })
    }

    async fn lease(&self, key: &str, owner: &str, now_ms: u64, lease: Duration) -> Result<bool, PortError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(key))
            .update_expression("SET lease_owner = :owner, lease_until = :until, expires_at = if_not_exists(expires_at, :expires)")
            // Only while no valid token is stored: a caller that read "no token" just before
            // another saved one must not refresh again.
            .condition_expression(
                "(attribute_not_exists(lease_until) OR lease_until < :now) AND (attribute_not_exists(valid_until_ms) OR valid_until_ms <= :now)",
            )
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(now_ms + lease.as_millis() as u64))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":expires", n(now_ms / 1000 + 24 * 3600))
            .send()
            .await;
        applied(result)
    }

    async fn save(&self, key: &str, owner: &str, token: &crate::core::tokens::StoredToken) -> Result<(), PortError> {
        use secrecy::ExposeSecret as _;
        let update = |release: bool| {
            let mut request = self
                .table
                .client
                .update_item()
                .table_name(&self.table.name)
                .key("pk", s(key))
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":token", s(token.value.expose_secret()))
                .expression_attribute_values(":until", n(token.valid_until_ms))
                .expression_attribute_values(":expires", n(token_item_expiry(token.valid_until_ms)));
            if release {
                request = request
                    .update_expression("SET #token = :token, valid_until_ms = :until, expires_at = :expires REMOVE lease_owner, lease_until")
                    .condition_expression("lease_owner = :owner")
                    .expression_attribute_values(":owner", s(owner));
            } else {
                request =
                    request.update_expression("SET #token = :token, valid_until_ms = :until, expires_at = :expires");
            }
            request.send()
        };
        match update(true).await {
            Ok(_) => Ok(()),
            // Our lease ran out and another caller holds it: store the token, leave its lease.
            Err(err) if is_condition_failure(&err) => update(false).await.map(drop).map_err(port_error),
            Err(err) => Err(port_error(err)),
        }
    }

    async fn abandon(&self, key: &str, owner: &str) -> Result<(), PortError> {
        let values = [(":owner", s(owner))];
        // A failed condition means another holder already moved on: nothing to undo.
        update_if(&self.table, s(key), "REMOVE lease_owner, lease_until", Some("lease_owner = :owner"), &values)
            .await
            .map(drop)
    }

    async fn invalidate(&self, key: &str, stale: &str) -> Result<(), PortError> {
        let values = [(":stale", s(stale))];
        // A failed condition means another holder already moved on: nothing to undo.
        update_if(&self.table, s(key), "REMOVE #token, valid_until_ms", Some("#token = :stale"), &values)
            .await
            .map(drop)
    }
}
