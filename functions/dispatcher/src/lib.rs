//! Lambda glue for the dispatcher: inbound SQS batches in, a partial batch response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::aws::sqs::SqsRedeliver;
use shared::adapters::aws::{DynamoReplySlots, SdkConfig, SqsPublisher, Table};
use shared::channels::{Apis, Config};
use shared::core::bot::BotError;
use shared::core::config::{ConfigError, Env};
use shared::core::http::Http;
use shared::core::ports::Typing;
use shared::services::dispatcher::Dispatcher;

/// Why the dispatcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bot(#[from] BotError),
    #[error("HTTP client: {0}")]
    Http(#[from] shared::core::http::ApiError),
}

/// Builds the dispatcher: the configured bot, the reply slots and the outbound queue.
pub fn build(config: &Config, env: &Env, sdk: &SdkConfig) -> Result<Dispatcher, BuildError> {
    // One HTTP client for the bot and the platform calls.
    let http = shared::services::bots::http_client()?;
    Ok(Dispatcher {
        bot: shared::services::bots::from_config(&config.bot, &http),
        slots: Arc::new(DynamoReplySlots::new(&Table::from_sdk(sdk, env.require_table()?))),
        outbound: Arc::new(SqsPublisher::from_sdk(sdk, env.require_outbound_queue_url()?)),
        typing: typing(config, env, &http),
        requeue: Some(Arc::new(SqsRedeliver::from_sdk(sdk, env.require_inbound_queue_url()?))),
        dead_letter: env
            .inbound_dlq_url
            .as_deref()
            .map(|url| Arc::new(SqsPublisher::from_sdk(sdk, url)) as Arc<dyn shared::core::ports::Publisher>),
        max_receives: shared::adapters::aws::resources::INBOUND.max_receive_count,
    })
}

/// "Typing…" for the configured iLink accounts, if any.
pub fn typing(config: &Config, env: &Env, http: &Http) -> Option<Arc<dyn Typing>> {
    if config.ilink.is_empty() {
        return None;
    }
    let apis = Apis::new(http, env);
    Some(Arc::new(shared::channels::ilink::IlinkTyping::new(apis.ilink, &config.ilink)))
}

/// Handles one batch inside an invocation that ends at `deadline_ms` (unix ms); bot errors and
/// timeouts come back through SQS.
pub async fn handle(dispatcher: &Dispatcher, event: SqsEvent, deadline_ms: u64) -> SqsBatchResponse {
    let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms);
    let records = shared::adapters::lambda::sqs_records(event);
    shared::adapters::lambda::batch_response(dispatcher.handle_batch_until(&records, Some(deadline)).await)
}
