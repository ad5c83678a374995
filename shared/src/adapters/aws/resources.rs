//! The table, queues and media bucket, defined once. `template.yaml` declares the same attributes (a test in
//! `tests/` compares them); the local set-up creates them from here.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// The table's partition key (string).
pub const TABLE_PARTITION_KEY: &str = "pk";
/// The table's TTL attribute (unix seconds).
pub const TABLE_TTL_ATTRIBUTE: &str = "expires_at";

/// One SQS queue's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// Appended to the stack / prefix name: `{prefix}-{suffix}`.
    pub suffix: &'static str,
    pub visibility_timeout_s: u32,
    pub retention_s: u32,
    /// Receives before SQS moves a message to `dlq`.
    pub max_receive_count: Option<u32>,
    /// A FIFO queue (the suffix ends in `.fifo`) in high-throughput mode: deduplication and
    /// throughput per message group, for queues with many groups.
    pub high_throughput: bool,
}

impl QueueSpec {
    /// A FIFO queue: SQS requires the name to end in `.fifo`.
    pub fn fifo(&self) -> bool {
        self.suffix.ends_with(".fifo")
    }
}

/// Where messages that could not be handled end up: kept 14 days, the SQS maximum. FIFO, as a
/// FIFO queue's DLQ must be.
pub const INBOUND_DLQ: QueueSpec = QueueSpec {
    suffix: "inbound-dlq.fifo",
    visibility_timeout_s: 30,
    retention_s: 1_209_600,
    max_receive_count: None,
    high_throughput: false,
};

/// The inbound queue: FIFO, one message group per conversation (each conversation's messages
/// reach the bot one at a time, in order; conversations run in parallel), deduplicated by the
/// `Inbound` id for five minutes (WeChat's retries of a callback). The visibility timeout is
/// just past the dispatcher's timeout (900 s, for agents that take minutes): a live invocation
/// never sees its record come back, a crashed one's returns in 16 minutes, and the bot-call
/// lease keeps an early redelivery from calling the agent again. (AWS's advice of 6× would hold
/// a crashed message, and its conversation, back for 90 minutes.)
pub const INBOUND: QueueSpec = QueueSpec {
    suffix: "inbound.fifo",
    visibility_timeout_s: 960,
    retention_s: 345_600,
    max_receive_count: Some(5),
    high_throughput: true,
};

/// Where replies that cannot be sent end up, with their reason as message attributes.
pub const OUTBOUND_DLQ: QueueSpec = QueueSpec {
    suffix: "outbound-dlq",
    visibility_timeout_s: 30,
    retention_s: 1_209_600,
    max_receive_count: None,
    high_throughput: false,
};

/// The outbound queue: 6× the sender's timeout (60 s); after 6 transient failures, the DLQ.
pub const OUTBOUND: QueueSpec = QueueSpec {
    suffix: "outbound",
    visibility_timeout_s: 360,
    retention_s: 345_600,
    max_receive_count: Some(6),
    high_throughput: false,
};

/// Where media messages end up when passing them on failed six times, or the last try crashed
/// (FIFO, like its queue).
pub const MEDIA_DLQ: QueueSpec = QueueSpec {
    suffix: "media-dlq.fifo",
    visibility_timeout_s: 30,
    retention_s: 1_209_600,
    max_receive_count: None,
    high_throughput: false,
};

/// The media queue: messages with files to fetch before the dispatcher. FIFO for its
/// deduplication by `Inbound` id (WeChat's retries of a callback), with a group per message, so
/// a slow or failing fetch holds up no other message. The visibility timeout is just past the
/// media function's (300 s: a 100 MB download and its upload); retries come sooner, after the
/// media step's own backoff.
pub const MEDIA: QueueSpec = QueueSpec {
    suffix: "media.fifo",
    visibility_timeout_s: 330,
    retention_s: 345_600,
    max_receive_count: Some(6),
    high_throughput: true,
};

/// Where a `queue` bot's messages end up after its consumer failed them five times.
pub const BOT_DLQ: QueueSpec = QueueSpec {
    suffix: "bot-dlq",
    visibility_timeout_s: 30,
    retention_s: 1_209_600,
    max_receive_count: None,
    high_throughput: false,
};

/// The bot queue: each resolved `Inbound` for a `queue` bot, read by the bot's own consumer.
pub const BOT: QueueSpec = QueueSpec {
    suffix: "bot",
    visibility_timeout_s: 120,
    retention_s: 345_600,
    max_receive_count: Some(5),
    high_throughput: false,
};

/// Where 微信客服 pull requests end up after five failed pulls (FIFO, like its queue).
pub const KF_PULL_DLQ: QueueSpec = QueueSpec {
    suffix: "kf-pull-dlq.fifo",
    visibility_timeout_s: 30,
    retention_s: 1_209_600,
    max_receive_count: None,
    high_throughput: false,
};

/// The 微信客服 pull queue: FIFO, one message group per kf account, so pulls of one account
/// never overlap. The visibility timeout is just past the puller's (300 s). Kept a day: a pull
/// request is only a nudge (its Token lives 10 minutes; a later pull goes without one).
pub const KF_PULL: QueueSpec = QueueSpec {
    suffix: "kf-pull.fifo",
    visibility_timeout_s: 330,
    retention_s: 86_400,
    max_receive_count: Some(5),
    high_throughput: false,
};

/// Names of one deployment's resources, derived from a prefix (the stack name on AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub table: String,
    pub inbound: String,
    pub inbound_dlq: String,
    pub outbound: String,
    pub outbound_dlq: String,
    pub media: String,
    pub media_dlq: String,
    pub bot: String,
    pub bot_dlq: String,
    pub kf_pull: String,
    pub kf_pull_dlq: String,
    /// The media bucket.
    pub bucket: String,
}

impl ResourceNames {
    pub fn new(prefix: &str) -> Self {
        Self {
            table: format!("{prefix}-table"),
            inbound: format!("{prefix}-{}", INBOUND.suffix),
            inbound_dlq: format!("{prefix}-{}", INBOUND_DLQ.suffix),
            outbound: format!("{prefix}-{}", OUTBOUND.suffix),
            outbound_dlq: format!("{prefix}-{}", OUTBOUND_DLQ.suffix),
            media: format!("{prefix}-{}", MEDIA.suffix),
            media_dlq: format!("{prefix}-{}", MEDIA_DLQ.suffix),
            bot: format!("{prefix}-{}", BOT.suffix),
            bot_dlq: format!("{prefix}-{}", BOT_DLQ.suffix),
            kf_pull: format!("{prefix}-{}", KF_PULL.suffix),
            kf_pull_dlq: format!("{prefix}-{}", KF_PULL_DLQ.suffix),
            // Bucket names are lower case.
            bucket: format!("{}-media", prefix.to_ascii_lowercase()),
        }
    }
}

/// URLs of the queues created by [`create_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub inbound: String,
    pub inbound_dlq: String,
    pub outbound: String,
    pub outbound_dlq: String,
    pub media: String,
    pub bot: String,
    pub kf_pull: String,
}

/// Why the set-up failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(String);

fn setup_err(err: impl std::fmt::Display) -> SetupError {
    SetupError(err.to_string())
}

/// Creates the table (if missing) with its TTL.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), SetupError> {
    let exists = client.describe_table().table_name(name).send().await.is_ok();
    if !exists {
        client
            .create_table()
            .table_name(name)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(TABLE_PARTITION_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(setup_err)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(TABLE_PARTITION_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(setup_err)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| setup_err(aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TABLE_TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(setup_err)?,
            )
            .send()
            .await
            .map_err(|e| setup_err(aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    }
    Ok(())
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    spec: QueueSpec,
    dlq_arn: Option<&str>,
) -> Result<String, SetupError> {
    let mut request = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, spec.visibility_timeout_s.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, spec.retention_s.to_string());
    if spec.fifo() {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if spec.high_throughput {
        request = request
            .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
            .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId");
    }
    if let (Some(arn), Some(count)) = (dlq_arn, spec.max_receive_count) {
        let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": count.to_string()});
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let created = request.send().await.map_err(|e| setup_err(aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    created.queue_url().map(str::to_owned).ok_or_else(|| SetupError(format!("no URL for queue {name}")))
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> Result<String, SetupError> {
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| setup_err(aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| SetupError(format!("no ARN for queue {url}")))
}

/// Creates the table and the queues with their redrive policies; idempotent.
pub async fn create_all(
    dynamodb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    names: &ResourceNames,
) -> Result<QueueUrls, SetupError> {
    create_table(dynamodb, &names.table).await?;
    let inbound_dlq = create_queue(sqs, &names.inbound_dlq, INBOUND_DLQ, None).await?;
    let inbound = create_queue(sqs, &names.inbound, INBOUND, Some(&queue_arn(sqs, &inbound_dlq).await?)).await?;
    let outbound_dlq = create_queue(sqs, &names.outbound_dlq, OUTBOUND_DLQ, None).await?;
    let outbound = create_queue(sqs, &names.outbound, OUTBOUND, Some(&queue_arn(sqs, &outbound_dlq).await?)).await?;
    let media_dlq = create_queue(sqs, &names.media_dlq, MEDIA_DLQ, None).await?;
    let media = create_queue(sqs, &names.media, MEDIA, Some(&queue_arn(sqs, &media_dlq).await?)).await?;
    let bot_dlq = create_queue(sqs, &names.bot_dlq, BOT_DLQ, None).await?;
    let bot = create_queue(sqs, &names.bot, BOT, Some(&queue_arn(sqs, &bot_dlq).await?)).await?;
    let kf_pull_dlq = create_queue(sqs, &names.kf_pull_dlq, KF_PULL_DLQ, None).await?;
    let kf_pull = create_queue(sqs, &names.kf_pull, KF_PULL, Some(&queue_arn(sqs, &kf_pull_dlq).await?)).await?;
    Ok(QueueUrls { inbound, inbound_dlq, outbound, outbound_dlq, media, bot, kf_pull })
}

/// Creates the media bucket; idempotent.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<(), SetupError> {
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()) =>
        {
            Ok(())
        }
        Err(err) => Err(setup_err(aws_sdk_s3::error::DisplayErrorContext(&err))),
    }
}
