//! Lambda glue for the WeCom callback: API Gateway HTTP API events in, [`WecomCallback`] answers out.

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use shared::channels::wecom::WecomCallback;
use shared::channels::Config;
use shared::core::config::{ConfigError, Env};
use shared::core::ports::SystemClock;

/// Builds the service on the SQS queues named by the environment (no table: the queues'
/// deduplication drops WeCom's retries).
pub fn build(config: &Config, env: &Env, sdk: &shared::adapters::aws::SdkConfig) -> Result<WecomCallback, ConfigError> {
    let publisher = shared::adapters::aws::inbound_queues(sdk, env)?;
    Ok(WecomCallback::new(&config.wecom, config.replay_window_secs, Arc::new(publisher), Arc::new(SystemClock))
        .with_metrics(Arc::new(shared::adapters::metrics::EmfMetrics)))
}

/// Handles one API Gateway request. Never fails: every outcome is an HTTP answer.
pub async fn handle(service: &WecomCallback, req: Request) -> Response<Body> {
    // Refusals and failures are counted for the callback alarms.
    shared::adapters::lambda::handle_http_counted(service, req, Some(&shared::adapters::metrics::EmfMetrics)).await
}
