//! iLink bot messages to personal WeChat users (`sendmessage`): text only, each echoing the
//! user's latest `context_token`, spaced per bot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::channels::ilink::api::{errcodes, IlinkApi};
use crate::channels::ilink::config::IlinkAccount;
use crate::channels::ilink::poller::token_fingerprint;
use crate::core::envelope::{Content, Outbound};
use crate::core::outbound::{account_of, has_account, short_hash, Delivered, Delivery, Unit};
use crate::core::ports::ContextTokens;
use crate::core::retry::Failure;

/// The least time between two sends of one bot: a third send within about a second is refused
/// with `-2`, and each refused attempt prolongs the penalty.
pub const SEND_SPACING: Duration = Duration::from_millis(1500);

/// The `msg` of `POST ilink/bot/sendmessage`: one text item, sent by the bot.
pub fn text_msg(to: &str, context_token: &str, client_id: &str, text: &str) -> Value {
    json!({
        "from_user_id": "",
        "to_user_id": to,
        "client_id": client_id,
        "message_type": 2,
        "message_state": 2,
        "item_list": [{"type": 1, "text_item": {"text": text}}],
        "context_token": context_token,
    })
}

/// Why iLink cannot send `content`, if it cannot: text and markdown only.
pub fn refuse(content: &Content) -> Option<&'static str> {
    match content {
        Content::Text { .. } | Content::Markdown { .. } => None,
        _ => Some("not available on this channel"),
    }
}

/// When each bot of this process may send next.
#[derive(Debug, Default)]
pub struct SendSpacing {
    /// Keyed by the bot token's fingerprint.
    next: Mutex<HashMap<String, Instant>>,
}

impl SendSpacing {
    /// Reserves the bot's next send slot; returns how long to wait for it.
    pub fn reserve(&self, bot_token: &SecretString) -> Duration {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let key = token_fingerprint(bot_token);
        let slot = next.get(&key).copied().unwrap_or(now).max(now);
        next.insert(key, slot + SEND_SPACING);
        slot - now
    }
}

/// Sends through the configured iLink bots (`ilink`; `to` is the user id).
pub struct IlinkDelivery {
    accounts: Vec<IlinkAccount>,
    api: IlinkApi,
    contexts: Arc<dyn ContextTokens>,
    spacing: SendSpacing,
}

impl IlinkDelivery {
    pub fn new(accounts: &[IlinkAccount], api: &IlinkApi, contexts: Arc<dyn ContextTokens>) -> Self {
        Self { accounts: accounts.to_vec(), api: api.clone(), contexts, spacing: SendSpacing::default() }
    }
}

#[async_trait]
impl Delivery for IlinkDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.accounts, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        refuse(content)
    }

    /// iLink chunks at ~2000 characters.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (2000, Unit::Chars)
    }

    /// iLink renders a Markdown subset in plain text messages.
    fn markdown_as_text(&self) -> bool {
        true
    }

    async fn deliver(&self, out: &Outbound, part: &Content, key: &str, _retry: bool) -> Result<Delivered, Failure> {
        let account = account_of(&self.accounts, out)?;
        let Content::Text { text } = part else {
            return Err(Failure::permanent("iLink sends text only"));
        };
        let context =
            self.contexts.latest(&account.account, &out.to).await.map_err(|e| Failure::transient(e.to_string()))?;
        let context = context.ok_or_else(|| {
            Failure::permanent("no context_token for this user: the user must write to the bot first")
        })?;
        // The same part keeps its client_id across retries.
        let client_id = format!("wxbridge:{}", short_hash(key));
        let body = json!({"msg": text_msg(&out.to, &context, &client_id, text)});
        let wait = self.spacing.reserve(&account.bot_token);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.api
            .post(&account.base_url, &account.bot_token, "sendmessage", body)
            .await
            .map(|_| Delivered::Sent { undelivered: Vec::new() })
            .map_err(|e| Failure::from_api(errcodes, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_of_one_bot_are_spaced_and_other_bots_are_not_held_up() {
        let spacing = SendSpacing::default();
        let (a, b) = (SecretString::from("bot-a".to_owned()), SecretString::from("bot-b".to_owned()));
        assert_eq!(spacing.reserve(&a), Duration::ZERO);
        let second = spacing.reserve(&a);
        assert!(second > SEND_SPACING - Duration::from_millis(50) && second <= SEND_SPACING, "{second:?}");
        assert!(spacing.reserve(&a) > SEND_SPACING, "a third send waits for two spacings");
        assert_eq!(spacing.reserve(&b), Duration::ZERO);
    }

    #[test]
    fn a_message_is_one_text_item_sent_by_the_bot() {
        let msg = text_msg("u@im.wechat", "ctx", "cid", "hi");
        assert_eq!(msg["item_list"].as_array().unwrap().len(), 1);
        assert_eq!((msg["from_user_id"].as_str(), msg["message_type"].as_i64()), (Some(""), Some(2)));
        assert_eq!(
            refuse(&Content::File { media_id: Some("m".into()), media: None }),
            Some("not available on this channel")
        );
    }
}
