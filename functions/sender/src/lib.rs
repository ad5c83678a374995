//! Lambda glue for the sender: SQS batches in, a partial batch response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::api::{ApiError, WechatApi};
use shared::aws::{DynamoContextTokens, DynamoDedupe, DynamoTokenStore, SdkConfig, SqsOutbound};
use shared::config::{Config, ConfigError, Env};
use shared::ports::{EmfMetrics, SystemClock, SENT_TTL};
use shared::sender::{Record, Sender};
use shared::tokens::Tokens;

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
        metrics: Arc::new(EmfMetrics),
        clock,
    })
}

/// The records of an SQS event. A record without an id or receipt cannot be acted on and is
/// skipped (SQS always sets them).
pub fn records(event: SqsEvent) -> Vec<Record> {
    event
        .records
        .into_iter()
        .filter_map(|m| {
            let receive_count = m.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
            Some(Record {
                message_id: m.message_id?,
                receipt_handle: m.receipt_handle?,
                body: m.body.unwrap_or_default(),
                receive_count,
            })
        })
        .collect()
}

/// Handles one batch; only the records that must come back are reported.
pub async fn handle(sender: &Sender, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in sender.handle_batch(&records(event)).await {
        response.add_failure(id);
    }
    response
}
