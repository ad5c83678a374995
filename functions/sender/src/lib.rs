//! Lambda glue for the sender: SQS batches in, a partial batch response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::aws::{
    DynamoContextTokens, DynamoDedupe, DynamoParkedReplies, DynamoTokenStore, SdkConfig, SqsOutbound,
};
use shared::core::config::{Config, ConfigError, Env};
use shared::core::http::{ApiError, WechatApi};
use shared::core::ports::{EmfMetrics, SystemClock, SENT_TTL};
use shared::core::tokens::Tokens;
use shared::services::sender::Sender;

/// Why the sender cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("HTTP client: {0}")]
    Http(#[from] ApiError),
}

/// Builds the sender on DynamoDB, SQS and the WeChat APIs named by the environment.
pub fn build(config: Config, env: &Env, sdk: &SdkConfig) -> Result<Sender, BuildError> {
    let table = env.require_table()?;
    let clock = Arc::new(SystemClock);
    Ok(Sender {
        config: Arc::new(config),
        api: WechatApi::new(&env.api_settings())?,
        tokens: Tokens::new(Arc::new(DynamoTokenStore::from_sdk(sdk, table)), clock.clone()),
        sent: Arc::new(DynamoDedupe::from_sdk(sdk, table).keeping(SENT_TTL)),
        queue: Arc::new(SqsOutbound::from_sdk(sdk, env.require_outbound_queue_url()?, env.require_dlq_url()?)),
        contexts: Arc::new(DynamoContextTokens::from_sdk(sdk, table)),
        parked: Arc::new(DynamoParkedReplies::from_sdk(sdk, table)),
        metrics: Arc::new(EmfMetrics),
        clock,
    })
}

/// Handles one batch; only the records that must come back are reported.
pub async fn handle(sender: &Sender, event: SqsEvent) -> SqsBatchResponse {
    shared::adapters::lambda::batch_response(sender.handle_batch(&shared::adapters::lambda::sqs_records(event)).await)
}
