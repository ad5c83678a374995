//! Lambda glue for the sender: SQS batches in, a partial batch response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::aws::{
    DynamoContextTokens, DynamoDedupe, DynamoMediaIds, DynamoParkedReplies, DynamoTokenStore, S3MediaStore, SdkConfig,
    SqsOutbound, Table,
};
use shared::adapters::metrics::EmfMetrics;
use shared::channels::{Apis, Config, Deliveries, DeliveryPorts};
use shared::core::config::{ConfigError, Env};
use shared::core::http::{ApiError, Http, HttpSettings};
use shared::core::ports::{SystemClock, SENT_TTL};
use shared::core::tokens::Tokens;
use shared::services::files::OutFiles;
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
    // One DynamoDB client and one HTTP client, lent to every adapter and channel.
    let table = Table::from_sdk(sdk, env.require_table()?);
    let clock = Arc::new(SystemClock);
    let ports = DeliveryPorts {
        tokens: Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), clock.clone())),
        contexts: Arc::new(DynamoContextTokens::new(&table)),
        parked: Arc::new(DynamoParkedReplies::new(&table)),
        streams: Arc::new(shared::adapters::aws::DynamoStreams::new(&table)),
        windows: Arc::new(shared::adapters::aws::DynamoCustomerWindows::new(&table)),
        clock: clock.clone(),
    };
    let apis = Apis::from_env(env)?;
    // Without a bucket (an older stack) file contents that need an upload are refused.
    // Files bots name by URL are fetched only from public addresses.
    let public = Http::public_only(&HttpSettings::default())?;
    let files = env.media_bucket.as_deref().map(|bucket| OutFiles {
        store: Arc::new(S3MediaStore::new(sdk, bucket, env.aws_endpoint_url.is_some())),
        ids: Arc::new(DynamoMediaIds::new(&table)),
        http: public,
        allow_loopback: false,
    });
    Ok(Sender {
        deliveries: Deliveries::new(&config, &apis, ports),
        sent: Arc::new(DynamoDedupe::new(&table).keeping(SENT_TTL)),
        queue: Arc::new(SqsOutbound::from_sdk(sdk, env.require_outbound_queue_url()?, env.require_dlq_url()?)),
        metrics: Arc::new(EmfMetrics),
        clock,
        max_receives: shared::adapters::aws::resources::OUTBOUND.max_receive_count,
        files,
    })
}

/// Handles one batch inside an invocation that ends at `deadline_ms` (unix ms); only the records
/// that must come back are reported.
pub async fn handle(sender: &Sender, event: SqsEvent, deadline_ms: u64) -> SqsBatchResponse {
    let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms);
    let records = shared::adapters::lambda::sqs_records(event);
    shared::adapters::lambda::batch_response(sender.handle_batch_until(&records, Some(deadline)).await)
}
