//! `wxbridge simulate`: plays WeChat. Builds a real signed (and encrypted) callback for a
//! configured app, posts it to a running bridge the way WeChat does (an Official Account message
//! is re-delivered when WeChat's 5 s pass without an answer), and prints the round trip: the
//! HTTP answer, the decrypted passive reply, and, against `wxbridge dev`'s sandbox, the send
//! that followed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde_json::json;
use shared::channels::oa::callback::Mode;
use shared::channels::wecom::simulate::{sign_callback, text_message};
use shared::core::config::Env;
use shared::protocol::crypto::random_prefix;

use crate::ui;

/// How long WeChat waits for an answer to one delivery.
const WECHAT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub channel: Channel,
}

#[derive(Debug, clap::Subcommand)]
pub enum Channel {
    /// A WeCom app callback (encrypted and signed for the app).
    Wecom(Common),
    /// An Official Account callback, with the passive reply decrypted.
    Oa(OaArgs),
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// The app to write to (default: the first configured one of the channel).
    #[arg(long)]
    pub app: Option<String>,
    /// The text the user sends.
    #[arg(long)]
    pub text: String,
    /// The sending user's id (WeCom user id or Official Account OpenID).
    #[arg(long)]
    pub from: Option<String>,
    /// Where the bridge runs (`wxbridge dev`, or a deployed API's base URL).
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// Config file (default: $WXBRIDGE_CONFIG, else the built-in demo apps).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// One JSON object on stdout instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct OaArgs {
    #[command(flatten)]
    pub common: Common,
    /// Message mode (default: safe when the account has an EncodingAESKey, else plain).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Plain,
    Compat,
    Safe,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    match args.channel {
        Channel::Wecom(args) => wecom(args).await,
        Channel::Oa(args) => oa(args).await,
    }
}

fn message_id() -> u64 {
    u64::from_be_bytes(random_prefix()[..8].try_into().unwrap_or([1; 8])) >> 1
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

async fn wecom(args: Common) -> anyhow::Result<()> {
    let loaded = crate::settings::load(args.config.clone(), &Env::from_process())?;
    let app = match &args.app {
        Some(name) => loaded
            .config
            .wecom_app(name)
            .with_context(|| format!("no WeCom app named '{name}' in {}", loaded.origin))?,
        None => loaded.config.wecom.first().with_context(|| format!("no WeCom app in {}", loaded.origin))?,
    };
    let from = args.from.clone().unwrap_or_else(|| "WangFang".to_owned());
    let msg_id = message_id();
    let xml = text_message(&app.corp_id, app.agent_id, &from, &args.text, msg_id, unix_now());
    let nonce = (msg_id % 10_000_000_000).to_string();
    let callback = sign_callback(&app.msg_crypt(), &xml, unix_now(), &nonce, random_prefix());
    let base = args.url.trim_end_matches('/');
    let url = format!("{base}/wecom/{}?{}", app.app, callback.query);
    let id = format!("wecom:{}:{msg_id}", app.app);
    if !args.json {
        println!(
            "{} → {} {}",
            ui::bold(&from),
            ui::dim(&format!("POST /wecom/{}", app.app)),
            format_args!("{:?}", args.text)
        );
    }
    let sends_before = crate::sandbox::sends(base).await.map(|s| s.len());
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "text/xml")
        .body(callback.body)
        .timeout(WECHAT_WAIT)
        .send()
        .await
        .with_context(|| format!("cannot reach {} (is `wxbridge dev` running?)", args.url))?;
    let status = response.status();
    let elapsed = started.elapsed();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        if args.json {
            println!("{}", json!({"id": id, "status": status.as_u16(), "error": body.trim()}));
        }
        bail!("← {status}: {}", body.trim());
    }
    if !args.json {
        println!(
            "{} {} in {} ms: on the inbound queue as {id}",
            ui::ok("←"),
            ui::ok(&status.to_string()),
            elapsed.as_millis()
        );
    }
    let sent = match sends_before {
        Some(before) => crate::sandbox::wait_for_send(base, before, &from, args.json).await,
        None => None,
    };
    if args.json {
        println!(
            "{}",
            json!({"id": id, "status": status.as_u16(), "elapsed_ms": elapsed.as_millis() as u64, "sent": sent})
        );
    }
    Ok(())
}

async fn oa(args: OaArgs) -> anyhow::Result<()> {
    let OaArgs { common: args, mode } = args;
    let loaded = crate::settings::load(args.config.clone(), &Env::from_process())?;
    let account = match &args.app {
        Some(name) => loaded
            .config
            .oa
            .iter()
            .find(|a| &a.app == name)
            .with_context(|| format!("no Official Account named '{name}' in {}", loaded.origin))?,
        None => loaded.config.oa.first().with_context(|| format!("no Official Account in {}", loaded.origin))?,
    };
    let crypt = account.msg_crypt();
    let mode = match (mode, &crypt) {
        (Some(ModeArg::Plain), Some(_)) => bail!(
            "'{}' has an encoding_aes_key, so the bridge refuses plaintext callbacks for it (no downgrade); \
             use --mode compat or --mode safe",
            account.app
        ),
        (Some(ModeArg::Plain), None) | (None, None) => Mode::Plain,
        (Some(ModeArg::Compat), Some(_)) => Mode::Compatible,
        (Some(ModeArg::Safe), Some(_)) | (None, Some(_)) => Mode::Safe,
        (Some(_), None) => bail!("'{}' has no encoding_aes_key: only --mode plain works", account.app),
    };
    let from = args.from.clone().unwrap_or_else(|| "oDemoUser0000000000000000001".to_owned());
    let msg_id = message_id();
    let gh = format!("gh_{}", account.app);
    let xml = shared::channels::oa::request::text_message(&gh, &from, &args.text, msg_id, unix_now());
    let base = args.url.trim_end_matches('/');
    let id = format!("oa:{}:{msg_id}", account.app);
    let mode_name = match mode {
        Mode::Plain => "plain",
        Mode::Compatible => "compat",
        Mode::Safe => "safe",
    };
    if !args.json {
        println!(
            "{} → {} {:?}",
            ui::bold(&from),
            ui::dim(&format!("POST /oa/{} ({mode_name} mode)", account.app)),
            args.text
        );
    }
    let sends_before = crate::sandbox::sends(base).await.map(|s| s.len());
    let client = reqwest::Client::new();
    let started = Instant::now();
    // WeChat delivers up to 3 times, each waiting 5 s for the answer.
    let mut outcome = None;
    for delivery in 1..=3u32 {
        let nonce = format!("{}{delivery}", msg_id % 1_000_000_000);
        let signed = shared::channels::oa::request::sign_callback(
            secrecy::ExposeSecret::expose_secret(&account.token),
            crypt.as_ref(),
            mode,
            &xml,
            &from,
            unix_now(),
            &nonce,
            random_prefix(),
        );
        let url = format!("{base}/oa/{}?{}", account.app, signed.query);
        let request =
            client.post(&url).header("content-type", "text/xml").body(signed.body).timeout(WECHAT_WAIT).send();
        let answer = countdown(request, delivery, args.json).await;
        match answer {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                outcome = Some((delivery, status, body));
                break;
            }
            Err(err) if err.is_timeout() => {
                if !args.json {
                    println!(
                        "{}",
                        ui::warn(&format!("  delivery {delivery}: no answer within 5 s; WeChat delivers again"))
                    );
                }
            }
            Err(_) => bail!("cannot reach {} (is `wxbridge dev` running?)", args.url),
        }
    }
    let elapsed = started.elapsed();
    let Some((delivery, status, body)) = outcome else {
        if args.json {
            println!("{}", json!({"id": id, "status": null, "reply": null, "elapsed_ms": elapsed.as_millis() as u64}));
        }
        bail!("no answer to 3 deliveries: WeChat gives up (the reply, if any, goes by customer service)");
    };
    if !status.is_success() {
        if args.json {
            println!("{}", json!({"id": id, "status": status.as_u16(), "error": body.trim()}));
        }
        bail!("← {status}: {}", body.trim());
    }
    let reply = if body.trim().is_empty() || body.trim() == "success" {
        None
    } else {
        let xml = shared::channels::oa::request::open_reply(crypt.as_ref(), &body)
            .context("the passive reply does not open")?;
        let fields =
            shared::protocol::xml::parse(&xml).map_err(|e| anyhow::anyhow!("the passive reply is not XML: {e}"))?;
        Some(
            fields
                .text("Content")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("[{}]", fields.text("MsgType").unwrap_or("?"))),
        )
    };
    if !args.json {
        let when = format!("in {:.2} s, delivery {delivery}", elapsed.as_secs_f64());
        match &reply {
            Some(text) => println!(
                "{} {} {when}: passive reply {}",
                ui::ok("←"),
                ui::ok(&status.to_string()),
                ui::wechat(&format!("{text:?}"))
            ),
            None => println!(
                "{} {} {when}: no passive reply; a reply goes by the customer-service API",
                ui::ok("←"),
                ui::ok(&status.to_string())
            ),
        }
    }
    let sent = match (&reply, sends_before) {
        (None, Some(before)) => crate::sandbox::wait_for_send(base, before, &from, args.json).await,
        _ => None,
    };
    if args.json {
        println!(
            "{}",
            json!({"id": id, "mode": mode_name, "status": status.as_u16(), "delivery": delivery,
                   "elapsed_ms": elapsed.as_millis() as u64, "reply": reply, "sent": sent})
        );
    }
    Ok(())
}

/// Awaits one delivery, counting WeChat's 5 s down on a terminal.
async fn countdown(
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    delivery: u32,
    quiet: bool,
) -> reqwest::Result<reqwest::Response> {
    let started = Instant::now();
    tokio::pin!(request);
    loop {
        tokio::select! {
            answer = &mut request => {
                ui::progress_done();
                return answer;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if !quiet {
                    let left = WECHAT_WAIT.saturating_sub(started.elapsed()).as_secs_f64();
                    ui::progress(&format!("  delivery {delivery}: waiting for the passive reply, {left:.1} s of WeChat's 5 s left"));
                }
            }
        }
    }
}
