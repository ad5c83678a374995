//! Lambda glue for the dispatcher: inbound SQS batches in, a partial batch response out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::aws::sqs::SqsRedeliver;
use shared::adapters::aws::{
    DynamoConversations, DynamoCounters, DynamoDedupe, DynamoMediaIds, DynamoReplySlots, DynamoStreams, SdkConfig,
    SqsPublisher, Table,
};
use shared::channels::{Apis, Config};
use shared::core::bot::{BotConfig, BotError};
use shared::core::config::{ConfigError, Env};
use shared::core::http::Http;
use shared::core::ports::{Dedupe, Typing};
use shared::services::bots::BotPorts;
use shared::services::dispatcher::{BotCalls, Dispatcher};
use shared::services::files::OutFiles;
use shared::services::router::{Router, RouterPorts};

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
    let table = Table::from_sdk(sdk, env.require_table()?);
    Ok(Dispatcher {
        bot: Arc::new(Router::new(
            config,
            &http,
            RouterPorts {
                bots: BotPorts {
                    media: media_store(env, sdk),
                    conversations: Some(Arc::new(DynamoConversations::new(&table))),
                    queue: match config.bots.named.values().any(|bot| matches!(bot, BotConfig::Queue)) {
                        true => Some(Arc::new(SqsPublisher::from_sdk(sdk, env.require_bot_queue_url()?))),
                        false => None,
                    },
                },
                counters: Some(Arc::new(DynamoCounters::new(&table))),
                metrics: Arc::new(shared::adapters::metrics::EmfMetrics),
                clock: Arc::new(shared::core::ports::SystemClock),
            },
        )),
        slots: Arc::new(DynamoReplySlots::new(&table)),
        outbound: Arc::new(SqsPublisher::from_sdk(sdk, env.require_outbound_queue_url()?)),
        typing: typing(config, env, &http),
        requeue: Some(Arc::new(SqsRedeliver::from_sdk(sdk, env.require_inbound_queue_url()?))),
        dead_letter: env
            .inbound_dlq_url
            .as_deref()
            .map(|url| Arc::new(SqsPublisher::from_sdk(sdk, url)) as Arc<dyn shared::core::ports::Publisher>),
        max_receives: shared::adapters::aws::resources::INBOUND.max_receive_count,
        streams: Some(Arc::new(DynamoStreams::new(&table))),
        calls: bot_calls(config, Arc::new(DynamoDedupe::new(&table))),
        // An answer's images named by URL are fetched only from public addresses.
        files: match media_store(env, sdk) {
            Some(store) => Some(Arc::new(OutFiles {
                store,
                ids: Arc::new(DynamoMediaIds::new(&table)),
                http: Http::public_only(&shared::core::http::HttpSettings::default())?,
                allow_loopback: false,
            })),
            None => None,
        },
    })
}

/// The media bucket, for a bot that sends a message's image inline (openai), if named.
pub fn media_store(env: &Env, sdk: &SdkConfig) -> Option<Arc<dyn shared::core::ports::MediaStore>> {
    let bucket = env.media_bucket.as_deref()?;
    Some(Arc::new(shared::adapters::aws::S3MediaStore::new(sdk, bucket, env.aws_endpoint_url.is_some())))
}

/// Leases on the bot's calls on `leases`, unless the bot has no side effects to repeat (echo).
pub fn bot_calls(config: &Config, leases: Arc<dyn Dedupe>) -> Option<BotCalls> {
    shared::services::router::calls_matter(config).then(|| BotCalls { leases, timeout: config.bots.timeout() })
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
