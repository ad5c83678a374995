//! Lambda glue for the iLink poller: every scheduled invocation polls each configured bot until
//! shortly before the invocation's deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shared::adapters::aws::{DynamoContextTokens, DynamoDedupe, DynamoLeases, DynamoPollState, SdkConfig, Table};
use shared::adapters::metrics::EmfMetrics;
use shared::channels::ilink::IlinkAccount;
use shared::channels::ilink::{Poller, Turn};
use shared::channels::Apis;
use shared::core::config::{ConfigError, Env};
use shared::core::http::ApiError;
use shared::core::ports::{unix_millis, SystemClock};

/// Why the poller cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("HTTP client: {0}")]
    Http(#[from] ApiError),
}

/// Builds the poller on DynamoDB (leases, cursors, dedupe, context tokens) and the inbound queue.
pub fn build(env: &Env, sdk: &SdkConfig) -> Result<Poller, BuildError> {
    let table = Table::from_sdk(sdk, env.require_table()?);
    Ok(Poller::new(
        Apis::from_env(env)?.ilink,
        Arc::new(shared::adapters::aws::inbound_queues(sdk, env)?),
        Arc::new(DynamoDedupe::new(&table)),
        Arc::new(DynamoContextTokens::new(&table)),
        Arc::new(DynamoLeases::new(&table)),
        Arc::new(DynamoPollState::new(&table)),
        Arc::new(SystemClock),
    ))
}

/// What one invocation did, as the function's result.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub polled: usize,
    pub published: usize,
    pub busy: usize,
    pub paused: usize,
    pub expired: usize,
    pub failed: usize,
}

/// Polls every account until `deadline_ms` (unix ms, the invocation's end): no poll starts
/// unless it ends the poller's safety margin before it.
///
/// Emits, as CloudWatch metrics: `IlinkSessionExpired` once when an account's session expires,
/// and `IlinkPausedAccounts` every invocation (what the paused-account alarm watches).
pub async fn handle(poller: &Poller, accounts: &[IlinkAccount], deadline_ms: u64) -> Summary {
    let left = Duration::from_millis(deadline_ms.saturating_sub(unix_millis(SystemTime::now())));
    let deadline = tokio::time::Instant::now() + left;
    let mut summary = Summary::default();
    for (account, turn) in poller.run_all(accounts, deadline).await {
        match turn {
            Ok(Turn::Polled { published }) => {
                summary.polled += 1;
                summary.published += published;
            }
            Ok(Turn::Busy) => summary.busy += 1,
            Ok(Turn::Paused) => summary.paused += 1,
            Ok(Turn::Expired { published }) => {
                summary.expired += 1;
                summary.paused += 1;
                summary.published += published;
                let now = unix_millis(SystemTime::now());
                println!("{}", EmfMetrics::count_line("IlinkSessionExpired", 1, &[("account", &account)], now));
            }
            Err(_) => summary.failed += 1,
        }
    }
    if summary.paused > 0 {
        tracing::error!(
            paused = summary.paused,
            "iLink accounts wait for a new login (wxbridge ilink login) and are not polled"
        );
    }
    let now = unix_millis(SystemTime::now());
    println!("{}", EmfMetrics::count_line("IlinkPausedAccounts", summary.paused as u64, &[], now));
    summary
}
