//! `wxbridge simulate`: sends a real signed, encrypted callback to a running bridge.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use shared::config::Env;
use shared::crypto::random_prefix;
use shared::wecom::simulate::{sign_callback, text_message};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub channel: Channel,
}

#[derive(Debug, clap::Subcommand)]
pub enum Channel {
    /// A WeCom app callback.
    Wecom(WecomArgs),
}

#[derive(Debug, clap::Args)]
pub struct WecomArgs {
    /// The app to write to (default: the first configured WeCom app).
    #[arg(long)]
    pub app: Option<String>,
    /// The text the user sends.
    #[arg(long)]
    pub text: String,
    /// The sending user's id.
    #[arg(long, default_value = "WangFang")]
    pub from: String,
    /// Where the bridge runs (`wxbridge dev`, or a deployed API's base URL).
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Config file (default: $WXBRIDGE_CONFIG, else the built-in demo app).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    match args.channel {
        Channel::Wecom(args) => wecom(args).await,
    }
}

async fn wecom(args: WecomArgs) -> anyhow::Result<()> {
    let loaded = crate::settings::load(args.config, &Env::from_process())?;
    let app = match &args.app {
        Some(name) => loaded
            .config
            .wecom_app(name)
            .with_context(|| format!("no WeCom app named '{name}' in {}", loaded.origin))?,
        None => loaded.config.wecom.first().with_context(|| format!("no WeCom app in {}", loaded.origin))?,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let msg_id = u64::from_be_bytes(random_prefix()[..8].try_into()?) >> 1;
    let xml = text_message(&app.corp_id, app.agent_id, &args.from, &args.text, msg_id, now);
    let nonce = (msg_id % 10_000_000_000).to_string();
    let callback = sign_callback(&app.msg_crypt(), &xml, now, &nonce, random_prefix());

    let url = format!("{}/wecom/{}?{}", args.url.trim_end_matches('/'), app.app, callback.query);
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "text/xml")
        .body(callback.body)
        .send()
        .await
        .with_context(|| format!("cannot reach {} (is `wxbridge dev` running?)", args.url))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{} → POST /wecom/{} (text {:?}, MsgId {msg_id})", args.from, app.app, args.text);
    if status.is_success() {
        println!("← {status}: accepted; the message is on the inbound queue as wecom:{}:{msg_id}", app.app);
        Ok(())
    } else {
        bail!("← {status}: {body}")
    }
}
