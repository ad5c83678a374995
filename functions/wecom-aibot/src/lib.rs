//! Lambda glue for the WeCom AI bot: API Gateway HTTP API events in, [`AibotService`] answers out.

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use shared::adapters::aws::{DynamoStreams, Table};
use shared::channels::aibot::service::AibotPorts;
use shared::channels::aibot::AibotService;
use shared::channels::Config;
use shared::core::config::{ConfigError, Env};
use shared::core::ports::SystemClock;

/// Builds the service on DynamoDB and SQS, as named by the environment.
pub fn build(config: &Config, env: &Env, sdk: &shared::adapters::aws::SdkConfig) -> Result<AibotService, ConfigError> {
    let table = Table::from_sdk(sdk, env.require_table()?);
    let ports = AibotPorts {
        publisher: Arc::new(shared::adapters::aws::inbound_queues(sdk, env)?),
        streams: Arc::new(DynamoStreams::new(&table)),
        clock: Arc::new(SystemClock),
        // An answer's images, shown with its finished stream.
        media: env.media_bucket.as_deref().map(|bucket| {
            Arc::new(shared::adapters::aws::S3MediaStore::new(sdk, bucket, env.aws_endpoint_url.is_some()))
                as Arc<dyn shared::core::ports::MediaStore>
        }),
    };
    Ok(AibotService::new(&config.aibots, config.aibot_stream, config.replay_window_secs, ports))
}

/// Handles one API Gateway request. Never fails: every outcome is an HTTP answer.
pub async fn handle(service: &AibotService, req: Request) -> Response<Body> {
    // Refusals and failures are counted for the callback alarms.
    shared::adapters::lambda::handle_http_counted(service, req, Some(&shared::adapters::metrics::EmfMetrics)).await
}
