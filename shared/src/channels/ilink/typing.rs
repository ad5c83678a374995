//! "Typing…" on personal WeChat while the bot works on an answer: `getconfig` gives a per-user
//! ticket, `sendtyping` turns the indicator on and off. Best effort: failures are logged, never
//! returned, and never hold up the answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::channels::ilink::api::IlinkApi;
use crate::channels::ilink::config::IlinkAccount;
use crate::core::envelope::{Channel, Inbound};
use crate::core::ports::Typing;

/// How long a typing ticket is reused before a fresh `getconfig` (the service's lifetime is not
/// documented; a short reuse also keeps a cancel from going out with a stale ticket).
pub const TICKET_TTL: Duration = Duration::from_secs(600);

/// Typing for the configured iLink accounts.
pub struct IlinkTyping {
    api: IlinkApi,
    accounts: HashMap<String, IlinkAccount>,
    /// (account, user) → ticket and when it was fetched.
    tickets: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl IlinkTyping {
    pub fn new(api: IlinkApi, accounts: &[IlinkAccount]) -> Self {
        Self {
            api,
            accounts: accounts.iter().map(|a| (a.account.clone(), a.clone())).collect(),
            tickets: Mutex::default(),
        }
    }

    /// The ticket for (account, user): a cached one if fresh, else a new one from `getconfig`.
    /// A cancel (`fetch` false) only uses what typing was started with.
    async fn ticket(
        &self,
        account: &IlinkAccount,
        user: &str,
        context_token: Option<&str>,
        fetch: bool,
    ) -> Option<String> {
        let key = (account.account.clone(), user.to_owned());
        if let Some((ticket, at)) = self.tickets.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if !fetch || at.elapsed() < TICKET_TTL {
                return Some(ticket.clone());
            }
        }
        if !fetch {
            return None;
        }
        match self.api.typing_ticket(&account.base_url, &account.bot_token, user, context_token).await {
            Ok(Some(ticket)) => {
                self.tickets.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (ticket.clone(), Instant::now()));
                Some(ticket)
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(account = %account.account, error = %err, "no typing ticket; typing skipped");
                None
            }
        }
    }
}

#[async_trait]
impl Typing for IlinkTyping {
    async fn set(&self, inbound: &Inbound, typing: bool) {
        if inbound.channel != Channel::Ilink {
            return;
        }
        let Some(account) = self.accounts.get(&inbound.account) else { return };
        let user = &inbound.conversation.id;
        let context_token = inbound.raw.get("context_token").and_then(serde_json::Value::as_str);
        let Some(ticket) = self.ticket(account, user, context_token, typing).await else { return };
        if let Err(err) = self.api.typing(&account.base_url, &account.bot_token, user, &ticket, typing).await {
            // The ticket may have lapsed: the next call fetches a new one.
            self.tickets.lock().unwrap_or_else(|p| p.into_inner()).remove(&(account.account.clone(), user.clone()));
            tracing::warn!(account = %account.account, error = %err, typing, "sendtyping failed");
        }
    }
}
