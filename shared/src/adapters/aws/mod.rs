//! AWS adapters of the ports: DynamoDB, SQS and Secrets Manager, plus the resource definitions
//! that the local set-up and `template.yaml` share.

pub mod dynamo;
pub mod resources;
pub mod s3;
pub mod sqs;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;

use crate::channels::Config;
use crate::core::config::{ConfigError, ConfigSource, Env};

pub use dynamo::{
    DynamoContextTokens, DynamoConversations, DynamoCounters, DynamoCursors, DynamoCustomerWindows, DynamoDedupe,
    DynamoLeases, DynamoMediaIds, DynamoParkedReplies, DynamoPollState, DynamoReplySlots, DynamoStreams,
    DynamoTokenStore, Table,
};
pub use s3::S3MediaStore;
pub use sqs::{SqsOutbound, SqsPublisher};

/// Loads the SDK configuration from the standard AWS environment (region, credentials,
/// `AWS_ENDPOINT_URL` for emulators), with timeouts that fit inside WeChat's 5-second window.
pub async fn sdk_config() -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_millis(1500))
        .operation_timeout(Duration::from_secs(3))
        .build();
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).load().await
}

/// Where the callbacks and the iLink poller publish: the media queue for messages with files
/// to fetch (when the environment names one), else the inbound queue.
pub fn inbound_queues(sdk: &SdkConfig, env: &Env) -> Result<crate::core::callback::InboundQueues, ConfigError> {
    let inbound = std::sync::Arc::new(SqsPublisher::from_sdk(sdk, env.require_inbound_queue_url()?));
    let media = env.media_queue_url.as_deref().map(|url| {
        std::sync::Arc::new(SqsPublisher::from_sdk(sdk, url)) as std::sync::Arc<dyn crate::core::ports::Publisher>
    });
    if media.is_none() {
        tracing::warn!("WXBRIDGE_MEDIA_QUEUE_URL is not set: media reaches the bot unfetched");
    }
    let kf = env.kf_queue_url.as_deref().map(|url| {
        std::sync::Arc::new(SqsPublisher::from_sdk(sdk, url)) as std::sync::Arc<dyn crate::core::ports::Publisher>
    });
    Ok(crate::core::callback::InboundQueues { inbound, media, kf })
}

/// Loads the configuration from the file or Secrets Manager secret that `env` names, as a
/// deployed function takes it: a bot over plain `http://` is refused (`wxbridge dev` allows it).
pub async fn load_config(env: &Env, sdk: &SdkConfig) -> Result<Config, ConfigError> {
    let config = match env.config_source()? {
        ConfigSource::File(path) => Config::from_file(&path)?,
        ConfigSource::Secret(name) => Config::parse(&read_secret(sdk, &name).await?)?,
    };
    deployable(config)
}

/// `config` if a deployed function may run with it.
pub fn deployable(config: Config) -> Result<Config, ConfigError> {
    match config.bots.plain_http().as_slice() {
        [] => Ok(config),
        fields => Err(crate::core::config::invalid(
            fields.join(", "),
            "must be https:// when deployed (plain http:// only with wxbridge dev)",
        )),
    }
}

/// The text of a Secrets Manager secret (the config document).
pub async fn read_secret(sdk: &SdkConfig, name: &str) -> Result<String, ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let secret = client.get_secret_value().secret_id(name).send().await.map_err(|err| ConfigError::Read {
        path: format!("secret {name}"),
        reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
    })?;
    secret.secret_string().map(str::to_owned).ok_or_else(|| ConfigError::Read {
        path: format!("secret {name}"),
        reason: "the secret has no SecretString (binary secrets are not supported)".to_owned(),
    })
}
