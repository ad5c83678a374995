//! Replies to 微信客服 customers (`kf/send_msg`): text, each part with a `msgid` derived from
//! its idempotency key, so a redelivered part names the same message to WeChat too.
//!
//! Before a part goes: the customer's window must allow it (48 h since their last message, 5
//! parts per message, each part counted once in DynamoDB whatever the retries; else permanent,
//! no WeChat call), and the session must be the API's (state 0 is taken, moved to 1; a queued,
//! human-served or ended session is left alone, the reply dead-lettered with the reason).
//!
//! The `msgid` makes WeChat refuse a repeat, with an errcode the documentation does not give;
//! so a part whose first send has an unknown outcome is not counted as deduplicated.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::api::{errcodes, service_state, take_session};
use super::config::KfAccount;
use crate::channels::wecom::api::WecomApi;
use crate::channels::wecom::WecomApp;
use crate::core::envelope::{Content, Outbound};
use crate::core::outbound::{account_of, has_account, short_hash, Delivered, Delivery, Unit};
use crate::core::ports::{Clock, CustomerWindows, WindowVerdict};
use crate::core::retry::Failure;
use crate::core::tokens::Tokens;

/// How long after a customer's message the account may answer.
pub const WINDOW_S: u64 = 48 * 3600;
/// Messages the account may send per customer message.
pub const PER_CUSTOMER_MESSAGE: u32 = 5;

/// The `msgid` of the part with marker key `key`: at most 32 characters of `[0-9a-z]`.
pub fn msgid(key: &str) -> String {
    format!("wxb{}", &short_hash(key)[..24])
}

/// Sends as the kf accounts (`wecom_kf`; `to` is the customer's external user id).
pub struct KfDelivery {
    accounts: Vec<KfAccount>,
    apps: Vec<WecomApp>,
    api: WecomApi,
    tokens: Arc<Tokens>,
    windows: Arc<dyn CustomerWindows>,
    clock: Arc<dyn Clock>,
}

impl KfDelivery {
    pub fn new(
        accounts: &[KfAccount],
        apps: &[WecomApp],
        api: &WecomApi,
        tokens: &Arc<Tokens>,
        windows: Arc<dyn CustomerWindows>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            accounts: accounts.to_vec(),
            apps: apps.to_vec(),
            api: api.clone(),
            tokens: tokens.clone(),
            windows,
            clock,
        }
    }
}

/// The reply window key of `customer` of `account`.
pub fn window_key(account: &KfAccount, customer: &str) -> String {
    format!("{}:{customer}", account.state_key())
}

#[async_trait]
impl Delivery for KfDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.accounts, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        match content {
            Content::Text { .. } | Content::Markdown { .. } => None,
            _ => Some("微信客服 replies are text for now"),
        }
    }

    /// 2048 bytes of text per message.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (2048, Unit::Bytes)
    }

    /// WeChat renders no markdown here: it goes as its text.
    fn markdown_as_text(&self) -> bool {
        true
    }

    async fn deliver(&self, out: &Outbound, part: &Content, key: &str, _retry: bool) -> Result<Delivered, Failure> {
        let account = account_of(&self.accounts, out)?;
        let (app, secret) = account
            .serving_app(&self.apps)
            .ok_or_else(|| Failure::permanent(format!("kf account '{}': its WeCom app has no secret", account.name)))?;
        let Content::Text { text } = part else {
            return Err(Failure::permanent("微信客服 replies are text for now"));
        };
        let fetch = || self.api.token(&app.corp_id, &secret);
        let (kfid, customer) = (account.open_kfid.as_str(), out.to.as_str());
        // The window first: a part it refuses costs no WeChat call at all.
        let verdict = self
            .windows
            .count(&window_key(account, customer), key, self.clock.unix(), WINDOW_S, PER_CUSTOMER_MESSAGE)
            .await
            .map_err(|e| Failure::transient(e.to_string()))?;
        match verdict {
            WindowVerdict::Counted => {}
            WindowVerdict::Closed => {
                return Err(Failure::permanent("the customer has not written in the last 48 hours"))
            }
            WindowVerdict::Spent => {
                return Err(Failure::permanent("5 messages were sent since the customer's last message"))
            }
        }
        let state = || async {
            self.tokens
                .call(&app.token_key(), errcodes, fetch, |token| async move {
                    service_state(&self.api, &token, kfid, customer).await
                })
                .await
        };
        let mut current = state().await?;
        if current == 0 {
            let taken = self
                .tokens
                .call(&app.token_key(), errcodes, fetch, |token| async move {
                    take_session(&self.api, &token, kfid, customer).await
                })
                .await;
            // Another reply may have taken it a moment before: what matters is the state now.
            current = match taken {
                Ok(()) => 1,
                Err(_) => state().await?,
            };
        }
        match current {
            1 => {}
            2 => return Err(Failure::permanent("the session is queued for a human servicer")),
            3 => return Err(Failure::permanent("a human servicer has the session")),
            _ => return Err(Failure::permanent("the session has ended; the customer must write again")),
        }
        let body = json!({"touser": customer, "open_kfid": kfid, "msgid": msgid(key),
                          "msgtype": "text", "text": {"content": text}});
        self.tokens
            .call(&app.token_key(), errcodes, fetch, |token| {
                let body = &body;
                async move { self.api.post("kf/send_msg", &token, body).await }
            })
            .await
            .map(|_| Delivered::Sent { undelivered: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_part_always_names_the_same_short_msgid() {
        let id = super::msgid("sent:wecom_kf:support:wecom_kf:support:m1#0");
        assert_eq!(id, super::msgid("sent:wecom_kf:support:wecom_kf:support:m1#0"));
        assert_ne!(id, super::msgid("sent:wecom_kf:support:wecom_kf:support:m1#1"));
        assert!(id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    }
}
