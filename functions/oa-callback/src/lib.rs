//! Lambda glue for the Official Account callback.

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use shared::adapters::aws::{DynamoParkedReplies, DynamoReplySlots, SdkConfig, Table};
use shared::channels::oa::service::OaCallback;
use shared::channels::Config;
use shared::core::config::{ConfigError, Env};
use shared::core::ports::SystemClock;

/// Builds the service on DynamoDB (reply slots, parked replies) and the inbound SQS queue.
pub fn build(config: &Config, env: &Env, sdk: &SdkConfig) -> Result<OaCallback, ConfigError> {
    // One DynamoDB client, lent to each adapter.
    let table = Table::from_sdk(sdk, env.require_table()?);
    Ok(OaCallback::new(
        &config.oa,
        config.oa_window,
        config.replay_window_secs,
        Arc::new(shared::adapters::aws::inbound_queues(sdk, env)?),
        Arc::new(DynamoReplySlots::new(&table)),
        Arc::new(DynamoParkedReplies::new(&table)),
        Arc::new(SystemClock),
    ))
}

/// Handles one API Gateway request. Never fails: every outcome is an HTTP answer.
pub async fn handle(service: &OaCallback, req: Request) -> Response<Body> {
    // Refusals and failures are counted for the callback alarms.
    shared::adapters::lambda::handle_http_counted(service, req, Some(&shared::adapters::metrics::EmfMetrics)).await
}
