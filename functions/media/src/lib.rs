//! Lambda glue for the media step: media-queue SQS batches in, a partial batch response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::aws::sqs::SqsRedeliver;
use shared::adapters::aws::{DynamoTokenStore, S3MediaStore, SdkConfig, SqsPublisher, Table};
use shared::channels::{Apis, Config, MediaSources};
use shared::core::config::{ConfigError, Env};
use shared::core::ports::SystemClock;
use shared::core::tokens::Tokens;
use shared::services::media::{MediaService, MediaSettings};

/// Why the media function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("HTTP client: {0}")]
    Http(#[from] shared::core::http::ApiError),
}

/// Builds the media step: the channels' downloads (with the shared access tokens), the bucket,
/// the inbound queue it passes messages on to, and the media queue's redelivery.
pub fn build(config: &Config, env: &Env, sdk: &SdkConfig) -> Result<MediaService, BuildError> {
    let apis = Apis::from_env(env)?;
    let table = Table::from_sdk(sdk, env.require_table()?);
    let tokens = Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), Arc::new(SystemClock)));
    let settings = MediaSettings::default();
    // A killed invocation leaves its spool files in /tmp, which the next one may inherit.
    shared::core::media::clean_spool_dir(&settings.spool_dir);
    Ok(MediaService {
        sources: Arc::new(MediaSources::new(config, &apis, &tokens, MediaSources::trusted_hosts(env))),
        store: Arc::new(S3MediaStore::new(sdk, env.require_media_bucket()?, env.aws_endpoint_url.is_some())),
        inbound: Arc::new(SqsPublisher::from_sdk(sdk, env.require_inbound_queue_url()?)),
        clock: Arc::new(SystemClock),
        settings,
        requeue: Some(Arc::new(SqsRedeliver::from_sdk(sdk, env.require_media_queue_url()?))),
        max_receives: shared::adapters::aws::resources::MEDIA.max_receive_count,
    })
}

/// Handles one batch of the media queue inside an invocation that ends at `deadline_ms`.
pub async fn handle(service: &MediaService, event: SqsEvent, deadline_ms: u64) -> SqsBatchResponse {
    let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms);
    let records = shared::adapters::lambda::sqs_records(event);
    shared::adapters::lambda::batch_response(service.handle_batch_until(&records, Some(deadline)).await)
}
