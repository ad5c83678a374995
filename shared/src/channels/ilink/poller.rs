//! The iLink poller: long-polls each bot account's `getupdates` and publishes its users'
//! messages, once each, before it advances the cursor.
//!
//! One poller per account at a time (a lease): the service allows one client per token. A crash
//! after publishing and before saving the cursor re-reads those messages; the dedupe markers
//! absorb them. They are kept a day, not left to the inbound queue's five-minute deduplication:
//! the service redelivers messages half an hour later, and a lost cursor or a new login re-reads
//! older ones. Errors back off 2 s, then 30 s after three in a row; a session that expired (-14)
//! pauses the account until a new login, without retrying.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::channels::ilink::api::IlinkApi;
use crate::channels::ilink::config::IlinkAccount;
use crate::core::callback::{publish_once, Published};
use crate::core::http::ApiError;
use crate::core::ports::{claim_token, Clock, ContextTokens, Dedupe, Leases, PollState, Publisher};

/// The server holds a poll about this long unless it says otherwise.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(35);
/// No poll starts unless it can finish this long before the deadline.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(5);
const RETRY_DELAY: Duration = Duration::from_secs(2);
const BACKOFF_DELAY: Duration = Duration::from_secs(30);
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// Names a bot token without revealing it: the pause remembers which token expired, so that a
/// new login (a new token) resumes the account.
pub fn token_fingerprint(token: &secrecy::SecretString) -> String {
    use secrecy::ExposeSecret as _;
    use sha2::Digest as _;
    crate::protocol::hex::hex(&sha2::Sha256::digest(token.expose_secret().trim().as_bytes())[..8])
}

/// How one account's turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Polled until the deadline; this many messages were published.
    Polled { published: usize },
    /// Another poller holds the account.
    Busy,
    /// The account's session expired earlier; it waits for a new login (a new bot token).
    Paused,
    /// The session expired during this turn (-14): the account is now paused.
    Expired { published: usize },
}

/// The poller's dependencies.
pub struct Poller {
    pub api: IlinkApi,
    pub publisher: Arc<dyn Publisher>,
    pub dedupe: Arc<dyn Dedupe>,
    pub contexts: Arc<dyn ContextTokens>,
    pub leases: Arc<dyn Leases>,
    pub state: Arc<dyn PollState>,
    pub clock: Arc<dyn Clock>,
    /// The longest a server may hold a poll (the client timeout is this plus a margin).
    pub hold: Duration,
    /// Failure delays (2 s and 30 s; tests shorten them).
    pub retry_delay: Duration,
    pub backoff_delay: Duration,
    /// No poll starts unless it can end this long before the deadline.
    pub margin: Duration,
}

impl Poller {
    pub fn new(
        api: IlinkApi,
        publisher: Arc<dyn Publisher>,
        dedupe: Arc<dyn Dedupe>,
        contexts: Arc<dyn ContextTokens>,
        leases: Arc<dyn Leases>,
        state: Arc<dyn PollState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            api,
            publisher,
            dedupe,
            contexts,
            leases,
            state,
            clock,
            hold: DEFAULT_HOLD,
            retry_delay: RETRY_DELAY,
            backoff_delay: BACKOFF_DELAY,
            margin: SAFETY_MARGIN,
        }
    }

    /// Polls every account at once until `deadline`; each account's turn is independent (its own
    /// lease), so one failing account does not stop the others.
    pub async fn run_all(
        &self,
        accounts: &[IlinkAccount],
        deadline: Instant,
    ) -> Vec<(String, Result<Turn, crate::core::ports::PortError>)> {
        let turns = accounts.iter().map(|account| async move {
            let turn = self.run_account(account, deadline).await;
            match &turn {
                Ok(Turn::Expired { .. }) | Ok(Turn::Paused) | Ok(Turn::Busy) => {}
                Ok(Turn::Polled { published }) => {
                    tracing::info!(account = %account.account, published, "iLink turn done")
                }
                Err(err) => tracing::error!(account = %account.account, error = %err, "iLink turn failed"),
            }
            (account.account.clone(), turn)
        });
        futures_util::future::join_all(turns).await
    }

    /// Polls `account` until `deadline` (the invocation's end, less a margin).
    pub async fn run_account(
        &self,
        account: &IlinkAccount,
        deadline: Instant,
    ) -> Result<Turn, crate::core::ports::PortError> {
        let token = token_fingerprint(&account.bot_token);
        if let Some(paused) = self.state.paused(&account.account).await? {
            if paused.token == token {
                return Ok(Turn::Paused);
            }
            // Another token than the one that expired: a new login. Its session starts afresh.
            self.state.resume(&account.account).await?;
            tracing::info!(account = %account.account, "new bot token: the paused account resumes");
        }
        let lease_key = format!("lease#ilink:{}", account.account);
        let owner = claim_token();
        let lease_for = deadline.saturating_duration_since(Instant::now()) + self.margin;
        if !self.leases.acquire(&lease_key, &owner, self.clock.now(), lease_for).await? {
            return Ok(Turn::Busy);
        }
        let turn = self.poll(account, deadline).await;
        if let Err(err) = self.leases.release(&lease_key, &owner).await {
            tracing::warn!(error = %err, "could not release the poller lease; it expires");
        }
        turn
    }

    async fn poll(&self, account: &IlinkAccount, deadline: Instant) -> Result<Turn, crate::core::ports::PortError> {
        let mut cursor = self.state.cursor(&account.account).await?.unwrap_or_default();
        let mut hold = self.hold;
        let mut failures = 0u32;
        let mut published = 0usize;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= self.margin {
                return Ok(Turn::Polled { published });
            }
            let timeout = (hold + self.margin).min(left - self.margin);
            match self.api.getupdates(&account.base_url, &account.bot_token, &cursor, timeout).await {
                Ok(updates) => {
                    failures = 0;
                    for (message, raw) in &updates.messages {
                        if !message.is_dispatchable() {
                            continue;
                        }
                        if let (Some(token), Some(at)) = (&message.context_token, message.create_time_ms) {
                            self.contexts.store(&account.account, &message.from_user_id, token, at).await?;
                        }
                        let inbound = message.to_inbound(&account.account, self.clock.unix(), raw.clone());
                        let result =
                            publish_once(self.dedupe.as_ref(), self.publisher.as_ref(), self.clock.as_ref(), &inbound)
                                .await;
                        match result {
                            Ok(Published::Now) => published += 1,
                            Ok(Published::Before) => {}
                            // Keep the cursor where it is: these messages come again.
                            Ok(Published::ByAnother) | Err(_) => {
                                tracing::warn!(account = %account.account, "could not publish; the cursor stays for a re-read");
                                return Ok(Turn::Polled { published });
                            }
                        }
                    }
                    // Published before advanced: a crash here re-reads, and the dedupe absorbs it.
                    if let Some(next) = updates.cursor {
                        self.state.save_cursor(&account.account, &next).await?;
                        cursor = next;
                    }
                    if let Some(hint) = updates.hold_hint {
                        hold = hint;
                    }
                }
                Err(ApiError::Errcode { code: -14, .. }) => {
                    self.state
                        .pause(&account.account, &token_fingerprint(&account.bot_token), self.clock.now())
                        .await?;
                    tracing::error!(account = %account.account, "iLink session expired (-14): account paused until a new login");
                    return Ok(Turn::Expired { published });
                }
                Err(err) => {
                    failures += 1;
                    let delay = if failures < MAX_CONSECUTIVE_FAILURES {
                        self.retry_delay
                    } else {
                        failures = 0;
                        self.backoff_delay
                    };
                    tracing::warn!(account = %account.account, error = %err, delay_ms = delay.as_millis() as u64, "getupdates failed");
                    tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
            }
        }
    }
}
