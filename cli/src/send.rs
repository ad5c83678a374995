//! `wxbridge send`: puts an `Outbound` text on the outbound queue, as a bot would: a running
//! `wxbridge dev`'s queue, or an SQS queue (a deployed stack's `OutboundQueueUrl`).

use anyhow::{bail, Context as _};
use serde_json::json;
use shared::core::envelope::Outbound;

use crate::ui;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// wecom_app, wecom_appchat, wecom_webhook, oa or ilink.
    #[arg(long)]
    channel: String,
    /// The app, account, robot or bot in the config that sends.
    #[arg(long)]
    account: String,
    /// The recipient: user id(s) joined by `|`, chat id, OpenID or iLink user id (ignored by
    /// wecom_webhook).
    #[arg(long, default_value = "")]
    to: String,
    /// The text to send.
    #[arg(long)]
    text: String,
    /// The idempotency key: the same key is sent once (default: a new one).
    #[arg(long)]
    key: Option<String>,
    /// A running `wxbridge dev`.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    url: String,
    /// Put it on this SQS queue instead, with the standard AWS environment.
    #[arg(long, value_name = "URL")]
    queue_url: Option<String>,
    /// One JSON object on stdout instead of lines for people.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let key = args.key.clone().unwrap_or_else(|| format!("cli-{}", &shared::core::ports::claim_token()[..16]));
    let document = json!({
        "v": 1, "channel": args.channel, "account": args.account, "to": args.to,
        "content": {"type": "text", "text": args.text}, "idempotency_key": key,
    })
    .to_string();
    // The sender would refuse it later; refuse it now, naming the field.
    let outbound = Outbound::parse(&document).context("not a valid Outbound")?;
    let channel = outbound.channel.as_str();
    let base = args.url.trim_end_matches('/');
    let sends_before = match &args.queue_url {
        Some(queue_url) => {
            let sqs = aws_sdk_sqs::Client::new(&shared::adapters::aws::sdk_config().await);
            sqs.send_message()
                .queue_url(queue_url)
                .message_body(&document)
                .message_attributes(
                    "channel",
                    aws_sdk_sqs::types::MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(channel)
                        .build()?,
                )
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
                .with_context(|| format!("cannot send to {queue_url}"))?;
            None
        }
        None => {
            let before = crate::sandbox::sends(base).await.map(|s| s.len());
            let response = reqwest::Client::new()
                .post(format!("{base}/outbound"))
                .body(document.clone())
                .send()
                .await
                .with_context(|| format!("cannot reach {} (is `wxbridge dev` running?)", args.url))?;
            let status = response.status();
            if !status.is_success() {
                bail!("{status}: {}", response.text().await.unwrap_or_default().trim());
            }
            before
        }
    };
    if !args.json {
        let to = if outbound.to.is_empty() { String::new() } else { format!(" → {}", ui::bold(&outbound.to)) };
        println!("{} {key}: {channel} from {}{to}", ui::ok("queued"), args.account);
    }
    let sent = match sends_before {
        Some(before) if !outbound.to.is_empty() => {
            crate::sandbox::wait_for_send(base, before, &outbound.to, args.json).await
        }
        _ => None,
    };
    if args.json {
        println!("{}", json!({"queued": key, "channel": channel, "sent": sent}));
    }
    Ok(())
}
