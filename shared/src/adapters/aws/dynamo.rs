//! The DynamoDB adapter of [`Dedupe`]: one item per message, `pk = seen#<inbound id>`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::core::ports::{claim_token, unix_millis, Claim, Dedupe, PortError, DEDUPE_TTL};

const PENDING: &str = "pending";
const DONE: &str = "done";

/// Dedupe markers in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoDedupe {
    client: aws_sdk_dynamodb::Client,
    table: String,
    ttl: Duration,
}

impl DynamoDedupe {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), ttl: DEDUPE_TTL }
    }

    /// Markers kept for `ttl` (instead of [`DEDUPE_TTL`]) once completed.
    pub fn keeping(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// Dedupe with its own client built from the SDK configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("seen#{key}"))
    }
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn port_error<E: std::error::Error + 'static, R: std::fmt::Debug>(err: SdkError<E, R>) -> PortError {
    PortError::new("dynamodb", DisplayErrorContext(&err))
}

/// A conditional write's outcome: true when it applied, false when its condition failed.
fn applied<O, E, R>(result: Result<O, SdkError<E, R>>) -> Result<bool, PortError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if is_condition_failure(&err) => Ok(false),
        Err(err) => Err(port_error(err)),
    }
}

/// True when the error is a failed condition (someone else holds or finished the marker).
fn is_condition_failure<E, R>(err: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl Dedupe for DynamoDedupe {
    async fn claim(&self, key: &str, now: SystemTime, lease: Duration) -> Result<Claim, PortError> {
        let now_ms = unix_millis(now);
        let now_s = now_ms / 1000;
        let token = claim_token();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", Self::pk(key))
            .item("state", s(PENDING))
            .item("owner", s(&token))
            .item("lease_until", n(now_ms + lease.as_millis() as u64))
            .item("expires_at", n(now_s + self.ttl.as_secs()))
            // Free, or a claim whose holder's lease ran out, or an expired item TTL has not yet removed.
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :pending AND lease_until < :now_ms) OR expires_at < :now_s",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":now_s", n(now_s))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Claimed { token }),
            Err(err) if is_condition_failure(&err) => {
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", Self::pk(key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(port_error)?;
                let state = item.item().and_then(|i| i.get("state")).and_then(|v| v.as_s().ok()).map(String::as_str);
                // A marker deleted between the two calls was released: report it as in flight so
                // WeChat retries, rather than racing another handler.
                Ok(if state == Some(DONE) { Claim::Published } else { Claim::InFlight })
            }
            Err(err) => Err(port_error(err)),
        }
    }

    async fn complete(&self, key: &str, token: &str, now: SystemTime) -> Result<(), PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .update_expression("SET #state = :done, expires_at = :expires REMOVE lease_until")
            .condition_expression("#owner = :token AND #state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":expires", n(unix_millis(now) / 1000 + self.ttl.as_secs()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => {
                tracing::warn!("dedupe claim was taken over before completion");
                Ok(())
            }
            Err(err) => Err(port_error(err)),
        }
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), PortError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .condition_expression("#owner = :token AND #state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        // A failed condition means another holder already moved on: nothing to undo.
        applied(result).map(drop)
    }
}

/// The shared access tokens in the bridge's table: `pk = token#<channel>:<account>`.
#[derive(Debug, Clone)]
pub struct DynamoTokenStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoTokenStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }
}

/// Token items outlive the token by a day, then TTL removes them.
fn token_item_expiry(valid_until_ms: u64) -> u64 {
    valid_until_ms / 1000 + 24 * 3600
}

#[async_trait]
impl crate::core::tokens::TokenStore for DynamoTokenStore {
    async fn load(&self, key: &str) -> Result<Option<crate::core::tokens::StoredToken>, PortError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(port_error)?;
        let Some(item) = item.item() else { return Ok(None) };
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
            .client
            .update_item()
            .table_name(&self.table)
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
                .client
                .update_item()
                .table_name(&self.table)
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        // A failed condition means another holder already moved on: nothing to undo.
        applied(result).map(drop)
    }

    async fn invalidate(&self, key: &str, stale: &str) -> Result<(), PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("REMOVE #token, valid_until_ms")
            .condition_expression("#token = :stale")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":stale", s(stale))
            .send()
            .await;
        // A failed condition means another holder already moved on: nothing to undo.
        applied(result).map(drop)
    }
}

/// iLink context tokens in the bridge's table: `pk = ctx#<account>#<user>`.
#[derive(Debug, Clone)]
pub struct DynamoContextTokens {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// Context tokens are kept a week (the service accepts them for 24 h after the user's message).
const CONTEXT_TTL_S: u64 = 7 * 24 * 3600;

impl DynamoContextTokens {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    fn pk(account: &str, user: &str) -> AttributeValue {
        AttributeValue::S(format!("ctx#{account}#{user}"))
    }
}

#[async_trait]
impl crate::core::ports::ContextTokens for DynamoContextTokens {
    async fn latest(&self, account: &str, user: &str) -> Result<Option<String>, PortError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", Self::pk(account, user))
            .consistent_read(true)
            .send()
            .await
            .map_err(port_error)?;
        Ok(item.item().and_then(|i| i.get("token")).and_then(|v| v.as_s().ok()).cloned())
    }

    async fn store(&self, account: &str, user: &str, token: &str, issued_ms: u64) -> Result<(), PortError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", Self::pk(account, user))
            .item("token", s(token))
            .item("issued_ms", n(issued_ms))
            .item("expires_at", n(issued_ms / 1000 + CONTEXT_TTL_S))
            .condition_expression("attribute_not_exists(pk) OR issued_ms <= :issued")
            .expression_attribute_values(":issued", n(issued_ms))
            .send()
            .await;
        // A failed condition means another holder already moved on: nothing to undo.
        applied(result).map(drop)
    }
}

/// Official Account reply slots in the bridge's table: `pk = slot#<inbound id>`.
#[derive(Debug, Clone)]
pub struct DynamoReplySlots {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// A slot lives a day: WeChat's deliveries span seconds; the dispatcher reads it within minutes.
const SLOT_TTL_S: u64 = 24 * 3600;

impl DynamoReplySlots {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(sdk), table)
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

    /// One conditional update of a slot (`#state` names the state attribute): true when it
    /// applied, false when its condition failed.
    async fn update_if(
        &self,
        key: &str,
        set: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<bool, PortError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .update_expression(set)
            .condition_expression(condition)
            .expression_attribute_names("#state", "state");
        for (name, value) in values {
            request = request.expression_attribute_values(*name, value.clone());
        }
        applied(request.send().await)
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
            .client
            .update_item()
            .table_name(&self.table)
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
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(port_error)?;
        Ok(out.item().and_then(Self::slot))
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

/// Parked replies in the bridge's table: `pk = parked#<account>#<user>`, a list kept a week.
#[derive(Debug, Clone)]
pub struct DynamoParkedReplies {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoParkedReplies {
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self { client: aws_sdk_dynamodb::Client::new(sdk), table: table.into() }
    }

    fn pk(account: &str, user: &str) -> AttributeValue {
        AttributeValue::S(format!("parked#{account}#{user}"))
    }
}

#[async_trait]
impl crate::core::ports::ParkedReplies for DynamoParkedReplies {
    async fn park(&self, account: &str, user: &str, reply: &str, now: SystemTime) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::pk(account, user))
            .update_expression(
                "SET replies = list_append(if_not_exists(replies, :empty), :reply), expires_at = :expires",
            )
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":reply", AttributeValue::L(vec![s(reply)]))
            .expression_attribute_values(":expires", n(unix_millis(now) / 1000 + CONTEXT_TTL_S))
            .send()
            .await
            .map(drop)
            .map_err(port_error)
    }

    async fn take(&self, account: &str, user: &str) -> Result<Vec<String>, PortError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", Self::pk(account, user))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(port_error)?;
        let replies = out.attributes().and_then(|a| a.get("replies")).and_then(|v| v.as_l().ok());
        Ok(replies.map(|list| list.iter().filter_map(|v| v.as_s().ok().cloned()).collect()).unwrap_or_default())
    }
}

/// Leases in the bridge's table: the item `pk = <key>` holds `owner` and `until` (unix ms).
#[derive(Debug, Clone)]
pub struct DynamoLeases {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLeases {
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self { client: aws_sdk_dynamodb::Client::new(sdk), table: table.into() }
    }
}

#[async_trait]
impl crate::core::ports::Leases for DynamoLeases {
    async fn acquire(&self, key: &str, owner: &str, now: SystemTime, ttl: Duration) -> Result<bool, PortError> {
        let now_ms = unix_millis(now);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("SET #owner = :owner, lease_until = :until, expires_at = :expires")
            .condition_expression("attribute_not_exists(lease_until) OR lease_until < :now OR #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(now_ms + ttl.as_millis() as u64))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":expires", n(now_ms / 1000 + ttl.as_secs() + 3600))
            .send()
            .await;
        applied(result)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), PortError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
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

/// iLink poll state in the bridge's table: `pk = ilink#<account>` with `cursor`, and `paused_at`
/// + `paused_token` while the account waits for a new login.
#[derive(Debug, Clone)]
pub struct DynamoPollState {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoPollState {
    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self { client: aws_sdk_dynamodb::Client::new(sdk), table: table.into() }
    }

    fn pk(account: &str) -> AttributeValue {
        AttributeValue::S(format!("ilink#{account}"))
    }

    async fn item(&self, account: &str) -> Result<Option<HashMap<String, AttributeValue>>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", Self::pk(account))
            .consistent_read(true)
            .send()
            .await
            .map_err(port_error)?;
        Ok(out.item)
    }

    async fn update(
        &self,
        account: &str,
        expression: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<(), PortError> {
        // `cursor` is a reserved word: every attribute goes by a placeholder (`#name`).
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::pk(account))
            .update_expression(expression);
        for name in ["cursor", "paused_at", "paused_token"] {
            let placeholder = format!("#{name}");
            if expression.contains(&placeholder) {
                request = request.expression_attribute_names(placeholder, name);
            }
        }
        for (name, value) in values {
            request = request.expression_attribute_values(*name, value.clone());
        }
        request.send().await.map(drop).map_err(port_error)
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
