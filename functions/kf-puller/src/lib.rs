//! Lambda glue for the 微信客服 puller: pull-queue (FIFO) SQS batches in, a partial batch
//! response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::aws::{DynamoCursors, DynamoCustomerWindows, DynamoDedupe, DynamoTokenStore, SdkConfig, Table};
use shared::channels::kf::puller::SEEN_TTL;
use shared::channels::kf::KfPuller;
use shared::channels::{Apis, Config};
use shared::core::config::{ConfigError, Env};
use shared::core::ports::SystemClock;
use shared::core::tokens::Tokens;

/// Why the puller cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("HTTP client: {0}")]
    Http(#[from] shared::core::http::ApiError),
}

/// Builds the puller: the kf accounts and their apps, the shared access tokens, the cursors,
/// item markers (kept past WeChat's three days) and reply windows in DynamoDB, and the inbound
/// queues it publishes to.
pub fn build(config: &Config, env: &Env, sdk: &SdkConfig) -> Result<KfPuller, BuildError> {
    let apis = Apis::from_env(env)?;
    let table = Table::from_sdk(sdk, env.require_table()?);
    Ok(KfPuller {
        accounts: config.kf.clone(),
        apps: config.wecom.clone(),
        api: apis.wecom,
        tokens: Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), Arc::new(SystemClock))),
        cursors: Arc::new(DynamoCursors::new(&table)),
        seen: Arc::new(DynamoDedupe::new(&table).keeping(SEEN_TTL)),
        publisher: Arc::new(shared::adapters::aws::inbound_queues(sdk, env)?),
        windows: Arc::new(DynamoCustomerWindows::new(&table)),
        metrics: Arc::new(shared::adapters::metrics::EmfMetrics),
        clock: Arc::new(SystemClock),
    })
}

/// Handles one batch of the pull queue.
pub async fn handle(puller: &KfPuller, event: SqsEvent) -> SqsBatchResponse {
    let records = shared::adapters::lambda::sqs_records(event);
    shared::adapters::lambda::batch_response(puller.handle_batch(&records).await)
}
