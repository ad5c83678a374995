//! Access tokens shared by every sender: one per (channel, account) in the table, refreshed by
//! one caller at a time, cached in memory by each warm process.
//!
//! Why shared: WeCom rate-limits `gettoken`, and each refresh costs a round trip; with one item in
//! DynamoDB, twenty cold senders cause one token call, not twenty.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::core::http::{ApiError, IssuedToken};
use crate::core::ports::{claim_token, unix_millis, Clock, PortError};
use crate::core::retry::{classify, Errcodes, Failure, Verdict};

/// A token is used until this long before WeChat's expiry.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// How long one caller may take to refresh before another may try: longer than a token call
/// can take (the HTTP timeout is 15 s).
pub const REFRESH_LEASE: Duration = Duration::from_secs(20);
/// How long a caller waits for another's refresh, re-reading the store: past the lease, so a
/// holder that died is replaced rather than waited out.
pub const WAIT_FOR_REFRESH: Duration = Duration::from_secs(22);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A stored token and when it stops being used (unix ms).
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub value: SecretString,
    pub valid_until_ms: u64,
}

/// Where tokens are shared (DynamoDB on AWS, a map in memory).
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load(&self, key: &str) -> Result<Option<StoredToken>, PortError>;
    /// Takes the refresh lease unless another caller holds a live one or a valid token is stored.
    async fn lease(&self, key: &str, owner: &str, now_ms: u64, lease: Duration) -> Result<bool, PortError>;
    /// Stores a fresh token and gives the lease back.
    async fn save(&self, key: &str, owner: &str, token: &StoredToken) -> Result<(), PortError>;
    /// Gives the lease back without a token (the token call failed), so others need not wait it out.
    async fn abandon(&self, key: &str, owner: &str) -> Result<(), PortError>;
    /// Deletes the token only if it is still `stale` (compare-and-swap): a token another caller
    /// already refreshed is kept.
    async fn invalidate(&self, key: &str, stale: &str) -> Result<(), PortError>;
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token store: {0}")]
    Store(#[from] PortError),
    #[error("token call: {0}")]
    Fetch(#[from] ApiError),
    #[error("another caller is refreshing the token and has not finished")]
    Busy,
}

/// The tokens of one process: a memory cache in front of the shared store.
pub struct Tokens {
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, StoredToken>>,
}

impl Tokens {
    pub fn new(store: Arc<dyn TokenStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock, cache: Mutex::new(HashMap::new()) }
    }

    fn now_ms(&self) -> u64 {
        unix_millis(self.clock.now())
    }

    fn cached(&self, key: &str, now_ms: u64) -> Option<StoredToken> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|t| t.valid_until_ms > now_ms).cloned()
    }

    fn remember(&self, key: &str, token: &StoredToken) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_owned(), token.clone());
    }

    /// A valid token for `key`: from memory, else the store, else `fetch` (by one caller at a
    /// time across every process; the others wait for its result).
    pub async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<SecretString, TokenError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<IssuedToken, ApiError>>,
    {
        let now = self.now_ms();
        if let Some(token) = self.cached(key, now) {
            return Ok(token.value);
        }
        let owner = claim_token();
        let mut waited = Duration::ZERO;
        loop {
            let now = self.now_ms();
            if let Some(token) = self.store.load(key).await?.filter(|t| t.valid_until_ms > now) {
                self.remember(key, &token);
                return Ok(token.value);
            }
            if self.store.lease(key, &owner, now, REFRESH_LEASE).await? {
                let issued = match fetch().await {
                    Ok(issued) => issued,
                    Err(err) => {
                        if let Err(abandon) = self.store.abandon(key, &owner).await {
                            tracing::warn!(error = %abandon, "could not give the token lease back; it expires");
                        }
                        return Err(err.into());
                    }
                };
                let margin = EXPIRY_MARGIN.as_secs().min(issued.expires_in / 2);
                let token = StoredToken {
                    value: issued.value,
                    valid_until_ms: self.now_ms() + (issued.expires_in - margin) * 1000,
                };
                self.store.save(key, &owner, &token).await?;
                self.remember(key, &token);
                return Ok(token.value);
            }
            if waited >= WAIT_FOR_REFRESH {
                return Err(TokenError::Busy);
            }
            tokio::time::sleep(POLL_EVERY).await;
            waited += POLL_EVERY;
        }
    }

    /// WeChat said `used` is invalid: forget it here and in the store, unless it was replaced.
    pub async fn invalidate(&self, key: &str, used: &SecretString) -> Result<(), PortError> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.get(key).is_some_and(|t| t.value.expose_secret() == used.expose_secret()) {
                cache.remove(key);
            }
        }
        self.store.invalidate(key, used.expose_secret()).await
    }
}

impl Tokens {
    /// Calls the API with the shared token `key`; when the platform rejects the token, drops it
    /// (if still current), fetches a new one and calls once more.
    pub async fn call<F, Fut, C, CFut, T>(&self, key: &str, errcodes: Errcodes, fetch: F, call: C) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<IssuedToken, ApiError>>,
        C: Fn(SecretString) -> CFut,
        CFut: Future<Output = Result<T, ApiError>>,
    {
        let token = self.get(key, &fetch).await.map_err(|e| token_failure(errcodes, e))?;
        match call(token.clone()).await {
            Ok(answer) => Ok(answer),
            Err(err) if classify(errcodes, &err) == Verdict::RefreshToken => {
                tracing::info!(errcode = err.errcode(), "access token rejected; refreshing once");
                self.invalidate(key, &token).await.map_err(|e| Failure::transient(e.to_string()))?;
                let fresh = self.get(key, &fetch).await.map_err(|e| token_failure(errcodes, e))?;
                call(fresh).await.map_err(|e| Failure::from_api(errcodes, &e))
            }
            Err(err) => Err(Failure::from_api(errcodes, &err)),
        }
    }
}

/// A token call that fails on credentials is a configuration error, not a retry.
fn token_failure(errcodes: Errcodes, err: TokenError) -> Failure {
    match err {
        TokenError::Fetch(api) => {
            let mut failure = Failure::from_api(errcodes, &api);
            if failure.verdict == Verdict::RefreshToken {
                failure.verdict = Verdict::Permanent;
            }
            failure.message = format!("token call: {}", failure.message);
            failure
        }
        other => Failure::transient(other.to_string()),
    }
}
