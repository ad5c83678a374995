//! `wxbridge simulate`: plays WeChat. Builds a real signed (and encrypted) callback for a
//! configured app, posts it to a running bridge the way WeChat does (an Official Account message
//! is re-delivered when WeChat's 5 s pass without an answer), and prints the round trip: the
//! HTTP answer, the decrypted passive reply, and, against `wxbridge dev`'s sandbox, the send
//! that followed. An AI bot's message is answered with a stream, which simulate asks for about
//! once a second, as WeCom does, showing the answer as it grows.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fakes::aibot::{image_message as aibot_image_message, refresh, text_message as aibot_text_message};
use fakes::{AibotWecom, Answer, Conversation};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};
use shared::channels::aibot::service::HANDED_OVER_NOTE;
use shared::channels::oa::callback::Mode;
use shared::channels::wecom::simulate::{image_message, sign_callback, text_message};
use shared::core::config::Env;
use shared::protocol::crypto::random_prefix;
use shared::services::dispatcher::GAVE_UP_NOTE;

use crate::ids::{hex_id, message_id, unix_now};
use crate::settings::Loaded;
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
    /// A WeCom AI bot message (encrypted JSON), then WeCom's stream refreshes until the answer
    /// finishes, shown as it grows.
    Aibot(AibotArgs),
    /// A personal WeChat user writing to a 微信客服 account (against `wxbridge dev`'s sandbox):
    /// the message, WeChat's `kf_msg_or_event` callback to the serving app, the pull, the reply.
    Kf(KfArgs),
}

#[derive(Debug, clap::Args)]
pub struct KfArgs {
    /// The kf account (default: the first configured one).
    #[arg(long)]
    pub account: Option<String>,
    /// The text the customer sends.
    #[arg(long)]
    pub text: String,
    /// The customer's external user id.
    #[arg(long, default_value = "wmDemoCustomer0000000000001")]
    pub from: String,
    #[command(flatten)]
    pub bridge: Bridge,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// The app to write to (default: the first configured one of the channel).
    #[arg(long)]
    pub app: Option<String>,
    /// The text the user sends.
    #[arg(long, required_unless_present = "image")]
    pub text: Option<String>,
    /// A picture the user sends instead (WeCom apps, against `wxbridge dev`'s sandbox, which
    /// keeps it as WeCom keeps media and serves it to the bridge's media/get).
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    pub image: Option<std::path::PathBuf>,
    /// The sending user's id (WeCom user id or Official Account OpenID).
    #[arg(long)]
    pub from: Option<String>,
    #[command(flatten)]
    pub bridge: Bridge,
}

/// Where the bridge runs, the config its accounts come from, and how to print.
#[derive(Debug, clap::Args)]
pub struct Bridge {
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

#[derive(Debug, clap::Args)]
pub struct AibotArgs {
    /// The AI bot to write to (default: the first configured one).
    #[arg(long)]
    pub bot: Option<String>,
    /// The group's chatid: the message comes from that group chat (default: a single chat).
    #[arg(long, value_name = "CHATID")]
    pub group: Option<String>,
    /// The sender's WeCom user id.
    #[arg(long, value_name = "USERID", default_value = "WangFang")]
    pub user: String,
    /// The text the user sends; in a group it starts with the mention ("@DeployBot hi").
    #[arg(long, required_unless_present = "image")]
    pub text: Option<String>,
    /// A picture the user sends instead (in a group, with the mention as its text).
    #[arg(long, value_name = "FILE")]
    pub image: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub bridge: Bridge,
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
        Channel::Aibot(args) => aibot(args).await,
        Channel::Kf(args) => kf(args).await,
    }
}

/// The file `--image` names: its name and bytes.
fn read_image(path: &std::path::Path) -> anyhow::Result<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    Ok((name, bytes))
}

async fn wecom(args: Common) -> anyhow::Result<()> {
    let loaded = crate::settings::load(args.bridge.config.clone(), &Env::from_process())?;
    let app = match &args.app {
        Some(name) => loaded
            .config
            .wecom_app(name)
            .with_context(|| format!("no WeCom app named '{name}' in {}", loaded.origin))?,
        None => loaded.config.wecom.first().with_context(|| format!("no WeCom app in {}", loaded.origin))?,
    };
    let from = args.from.clone().unwrap_or_else(|| "WangFang".to_owned());
    let msg_id = message_id();
    let base = args.bridge.url.trim_end_matches('/');
    let (xml, said) = match (&args.text, &args.image) {
        (_, Some(path)) => {
            let (name, bytes) = read_image(path)?;
            let said = format!("[image {}]", crate::sandbox::size(bytes.len() as u64));
            let media_id = crate::sandbox::upload_media(base, "wecom", &app.app, &name, bytes).await?;
            (image_message(&app.corp_id, app.agent_id, &from, &media_id, msg_id, unix_now()), said)
        }
        (Some(text), None) => {
            (text_message(&app.corp_id, app.agent_id, &from, text, msg_id, unix_now()), format!("{text:?}"))
        }
        (None, None) => bail!("give --text or --image"),
    };
    let nonce = (msg_id % 10_000_000_000).to_string();
    let callback = sign_callback(&app.msg_crypt(), &xml, unix_now(), &nonce, random_prefix());
    let url = format!("{base}/wecom/{}?{}", app.app, callback.query);
    let id = format!("wecom:{}:{msg_id}", app.app);
    if !args.bridge.json {
        println!("{} → {} {}", ui::bold(&from), ui::dim(&format!("POST /wecom/{}", app.app)), said);
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
        .with_context(|| format!("cannot reach {} (is `wxbridge dev` running?)", args.bridge.url))?;
    let status = response.status();
    let elapsed = started.elapsed();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        if args.bridge.json {
            println!("{}", json!({"id": id, "status": status.as_u16(), "error": body.trim()}));
        }
        bail!("← {status}: {}", body.trim());
    }
    if !args.bridge.json {
        println!(
            "{} {} in {} ms: on the inbound queue as {id}",
            ui::ok("←"),
            ui::ok(&status.to_string()),
            elapsed.as_millis()
        );
    }
    let sent = match sends_before {
        Some(before) => crate::sandbox::wait_for_send(base, before, &from, args.bridge.json).await,
        None => None,
    };
    if args.bridge.json {
        println!(
            "{}",
            json!({"id": id, "status": status.as_u16(), "elapsed_ms": elapsed.as_millis() as u64, "sent": sent})
        );
    }
    Ok(())
}

async fn kf(args: KfArgs) -> anyhow::Result<()> {
    let KfArgs { account, text, from, bridge } = args;
    let loaded = crate::settings::load(bridge.config.clone(), &Env::from_process())?;
    let kf = match &account {
        Some(name) => loaded
            .config
            .kf
            .iter()
            .find(|k| &k.name == name)
            .with_context(|| format!("no kf account named '{name}' in {}", loaded.origin))?,
        None => loaded.config.kf.first().with_context(|| format!("no kf account in {}", loaded.origin))?,
    };
    let app = loaded.config.wecom_app(&kf.app).with_context(|| format!("no WeCom app '{}'", kf.app))?;
    let base = bridge.url.trim_end_matches('/');
    if !bridge.json {
        println!("{} → {} {text:?}", ui::bold(&from), ui::dim(&format!("微信客服 {}", kf.name)));
    }
    let sends_before = crate::sandbox::sends(base).await.map(|s| s.len());
    // The sandbox keeps the message as WeChat does and issues the callback's Token.
    let response = reqwest::Client::new()
        .post(format!("{base}/sandbox/kf/{}", kf.name))
        .query(&[("user", from.as_str())])
        .body(text.clone())
        .timeout(WECHAT_WAIT)
        .send()
        .await
        .with_context(|| format!("cannot reach {} (is `wxbridge dev` running?)", bridge.url))?;
    let status = response.status();
    let token = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("simulate kf needs `wxbridge dev` in sandbox mode: {status} {}", token.trim());
    }
    let now = unix_now();
    let xml = shared::channels::wecom::simulate::kf_msg_or_event(&app.corp_id, token.trim(), &kf.open_kfid, now);
    let nonce = (message_id() % 10_000_000_000).to_string();
    let callback = sign_callback(&app.msg_crypt(), &xml, now, &nonce, random_prefix());
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("{base}/wecom/{}?{}", app.app, callback.query))
        .header("content-type", "text/xml")
        .body(callback.body)
        .timeout(WECHAT_WAIT)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", bridge.url))?;
    let status = answer.status();
    if !status.is_success() {
        bail!("← {status}: {}", answer.text().await.unwrap_or_default().trim());
    }
    if !bridge.json {
        println!(
            "{} {} in {} ms: kf_msg_or_event, a pull is queued",
            ui::ok("←"),
            ui::ok(&status.to_string()),
            started.elapsed().as_millis()
        );
    }
    let sent = match sends_before {
        Some(before) => crate::sandbox::wait_for_send(base, before, &from, bridge.json).await,
        None => None,
    };
    if bridge.json {
        println!("{}", json!({"status": status.as_u16(), "sent": sent}));
    }
    Ok(())
}

async fn oa(args: OaArgs) -> anyhow::Result<()> {
    let OaArgs { common: args, mode } = args;
    let loaded = crate::settings::load(args.bridge.config.clone(), &Env::from_process())?;
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
    let base = args.bridge.url.trim_end_matches('/');
    let (xml, said) = match (&args.text, &args.image) {
        (_, Some(path)) => {
            let (name, bytes) = read_image(path)?;
            let said = format!("[image {}]", crate::sandbox::size(bytes.len() as u64));
            let media_id = crate::sandbox::upload_media(base, "oa", &account.app, &name, bytes).await?;
            let pic_url = format!("{base}/sandbox/file/{media_id}");
            (shared::channels::oa::request::image_message(&gh, &from, &pic_url, &media_id, msg_id, unix_now()), said)
        }
        (Some(text), None) => {
            (shared::channels::oa::request::text_message(&gh, &from, text, msg_id, unix_now()), format!("{text:?}"))
        }
        (None, None) => bail!("give --text or --image"),
    };
    let id = format!("oa:{}:{msg_id}", account.app);
    let mode_name = match mode {
        Mode::Plain => "plain",
        Mode::Compatible => "compat",
        Mode::Safe => "safe",
    };
    if !args.bridge.json {
        println!("{} → {} {}", ui::bold(&from), ui::dim(&format!("POST /oa/{} ({mode_name} mode)", account.app)), said);
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
        let answer = countdown(request, delivery, args.bridge.json).await;
        match answer {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                outcome = Some((delivery, status, body));
                break;
            }
            Err(err) if err.is_timeout() => {
                if !args.bridge.json {
                    println!(
                        "{}",
                        ui::warn(&format!("  delivery {delivery}: no answer within 5 s; WeChat delivers again"))
                    );
                }
            }
            Err(_) => bail!("cannot reach {} (is `wxbridge dev` running?)", args.bridge.url),
        }
    }
    let elapsed = started.elapsed();
    let Some((delivery, status, body)) = outcome else {
        if args.bridge.json {
            println!("{}", json!({"id": id, "status": null, "reply": null, "elapsed_ms": elapsed.as_millis() as u64}));
        }
        bail!("no answer to 3 deliveries: WeChat gives up (the reply, if any, goes by customer service)");
    };
    if !status.is_success() {
        if args.bridge.json {
            println!("{}", json!({"id": id, "status": status.as_u16(), "error": body.trim()}));
        }
        bail!("← {status}: {}", body.trim());
    }
    let mut reply_file = None;
    let reply = if body.trim().is_empty() || body.trim() == "success" {
        None
    } else {
        let xml = shared::channels::oa::request::open_reply(crypt.as_ref(), &body)
            .context("the passive reply does not open")?;
        let fields =
            shared::protocol::xml::parse(&xml).map_err(|e| anyhow::anyhow!("the passive reply is not XML: {e}"))?;
        let kind = fields.text("MsgType").unwrap_or("?");
        // A media reply names the file by the id the account uploaded it under.
        let media_id = ["Image", "Voice", "Video"]
            .iter()
            .find_map(|element| fields.get(element).and_then(|v| v.node()).and_then(|n| n.text("MediaId")));
        match (fields.text("Content"), media_id) {
            (Some(text), _) => Some(text.to_owned()),
            (None, Some(id)) => {
                reply_file = Some(format!("/sandbox/file/{id}"));
                let bytes = crate::sandbox::file_size(base, id).await;
                Some(bytes.map_or_else(|| format!("[{kind}]"), |n| format!("[{kind} {}]", crate::sandbox::size(n))))
            }
            (None, None) => Some(format!("[{kind}]")),
        }
    };
    if !args.bridge.json {
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
        (None, Some(before)) => crate::sandbox::wait_for_send(base, before, &from, args.bridge.json).await,
        _ => None,
    };
    if args.bridge.json {
        println!(
            "{}",
            json!({"id": id, "mode": mode_name, "status": status.as_u16(), "delivery": delivery,
                   "elapsed_ms": elapsed.as_millis() as u64, "reply": reply, "reply_file": reply_file, "sent": sent})
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

/// WeCom asks for an AI bot's stream about once a second.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A response_url from `wxbridge dev`'s sandbox, if the bridge is one.
async fn sandbox_response_url(base: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .post(format!("{base}/sandbox/aibot/response_url"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok().filter(|url| url.starts_with("http"))
}

async fn aibot(args: AibotArgs) -> anyhow::Result<()> {
    let AibotArgs { bot, group, user, text, image, bridge } = args;
    let env = Env::from_process();
    let loaded = crate::settings::load(bridge.config.clone(), &env)?;
    let bot = match &bot {
        Some(name) => loaded
            .config
            .aibots
            .iter()
            .find(|b| &b.name == name)
            .with_context(|| format!("no AI bot named '{name}' in {}", loaded.origin))?,
        None => loaded.config.aibots.first().with_context(|| format!("no AI bot in {}", loaded.origin))?,
    };
    let key = aes_key_text(&bridge, &env, &loaded, &bot.name)?;
    let base = bridge.url.trim_end_matches('/');
    let route = format!("/{}/{}", shared::channels::aibot::ROUTE, bot.name);
    let window = Duration::from_secs(loaded.config.aibot_stream.window_s);
    let wecom = AibotWecom::new(&format!("{base}{route}"), bot.token.expose_secret(), &key).window(window);
    // dev's sandbox issues real single-use response_urls; against anything else the URL is on
    // WeCom's API host (as the bridge requires) but made up, so a hand-over to it is refused.
    let response_url = match sandbox_response_url(base).await {
        Some(url) => url,
        None => {
            let wecom_base = env
                .api_base(shared::channels::wecom::api::BASE_VAR, shared::channels::wecom::api::DEFAULT_BASE)
                .trim_end_matches('/')
                .to_owned();
            format!("{wecom_base}/cgi-bin/aibot/response?response_code={}", hex_id())
        }
    };
    let (message, said) = match (&text, &image) {
        (_, Some(path)) => {
            let (name, bytes) = read_image(path)?;
            let said = format!("[image {}]", crate::sandbox::size(bytes.len() as u64));
            let url = crate::sandbox::upload_media(base, "aibot", &bot.name, &name, bytes).await?;
            let mention = text.clone().unwrap_or_else(|| format!("@{}", bot.bot_name));
            (aibot_image_message(&hex_id(), group.as_deref(), &user, &mention, &url, &response_url), said)
        }
        (Some(text), None) => {
            (aibot_text_message(&hex_id(), group.as_deref(), &user, text, &response_url), format!("{text:?}"))
        }
        (None, None) => bail!("give --text or --image"),
    };
    let chat = match &group {
        Some(chatid) => format!("group {chatid}"),
        None => "single chat".to_owned(),
    };
    if !bridge.json {
        println!("{} → {} {said}", ui::bold(&user), ui::dim(&format!("POST {route} ({chat})")));
    }
    let mut shown = Shown { speaker: bot.bot_name.clone(), text: String::new(), line_open: false, quiet: bridge.json };
    let mut talk = Conversation { stream_id: String::new(), answers: Vec::new(), finished: false, refreshes: 0 };
    let started = Instant::now();
    let outcome = stream_answer(&wecom, &message, window, &mut talk, &mut shown).await;
    shown.end();
    let outcome = match outcome {
        Err(Refused::First(_)) if !reachable(base).await => {
            Err(anyhow::anyhow!("cannot reach {} (is `wxbridge dev` running?)", bridge.url))
        }
        Err(Refused::First(problem) | Refused::Later(problem)) => Err(anyhow::anyhow!("← {problem}")),
        Ok(()) if !talk.finished => Err(anyhow::anyhow!(
            "WeCom stopped asking after {} s and the stream had not finished (the answer, if any, goes by response_url)",
            window.as_secs()
        )),
        Ok(()) => Ok(()),
    };
    let final_text = talk.final_text().map(str::to_owned);
    // The images the finished stream showed (msg_item), as the user sees them.
    let images: Vec<Value> = talk
        .final_images()
        .iter()
        .map(|bytes| {
            use sha2::Digest as _;
            let sha256 = shared::core::media::hex(&sha2::Sha256::digest(bytes));
            json!({"size": bytes.len(), "sha256": sha256})
        })
        .collect();
    if bridge.json {
        let stream_id = (!talk.stream_id.is_empty()).then_some(&talk.stream_id);
        let mut doc = json!({"stream_id": stream_id, "snapshots": talk.snapshots(), "final": final_text,
                             "images": images, "finished": talk.finished, "refreshes": talk.refreshes});
        if let Err(err) = &outcome {
            doc["error"] = json!(err.to_string());
        }
        println!("{doc}");
    } else if let Some(text) = &final_text {
        let to = group.as_deref().map_or(user.clone(), |chatid| format!("group {chatid}"));
        let refreshes = format!("{} refresh{}", talk.refreshes, if talk.refreshes == 1 { "" } else { "es" });
        println!(
            "{} {} {} {}",
            ui::wechat("→ WeChat:"),
            ui::bold(&to),
            ui::wechat(&format!("sees {text:?}")),
            ui::dim(&format!("(stream finished after {refreshes}, {:.1} s)", started.elapsed().as_secs_f64()))
        );
        for image in &images {
            let size = crate::sandbox::size(image["size"].as_u64().unwrap_or_default());
            println!("           {}", ui::wechat(&format!("and [image {size}] in the stream")));
        }
        if text.ends_with(GAVE_UP_NOTE) {
            println!(
                "{}",
                ui::warn("  the bot gave up on this answer: the dispatcher's reason is in the bridge's log")
            );
        } else if text.ends_with(HANDED_OVER_NOTE.trim_start()) {
            println!(
                "{}",
                ui::warn(
                    "  the window ended first: the whole answer follows once by the message's response_url \
                     (the sandbox shows it as a wecom_aibot send)"
                )
            );
        }
    }
    outcome
}

/// Why a conversation stopped early: the message itself, or a later refresh, was not answered
/// as WeCom requires (each a line of the fake WeCom side, with the HTTP status and body).
enum Refused {
    First(String),
    Later(String),
}

/// Posts the message, then refreshes its stream about once a second until it finishes or the
/// window ends, showing each new snapshot.
async fn stream_answer(
    wecom: &AibotWecom,
    message: &Value,
    window: Duration,
    talk: &mut Conversation,
    shown: &mut Shown,
) -> Result<(), Refused> {
    let started = Instant::now();
    let first = wecom.post(message).await.map_err(Refused::First)?;
    let Answer::Stream { id, finish, content, .. } = &first else {
        return Err(Refused::First(format!("the bridge answered {first:?}, not a stream")));
    };
    if !shown.quiet {
        println!(
            "{} {} in {} ms: stream {id}; WeCom asks for it about once a second",
            ui::ok("←"),
            ui::ok("200 OK"),
            started.elapsed().as_millis()
        );
    }
    shown.show(content);
    (talk.stream_id, talk.finished) = (id.clone(), *finish);
    talk.answers.push(first.clone());
    let chat = message["chatid"].as_str();
    let user = message["from"]["userid"].as_str().unwrap_or_default();
    while !talk.finished {
        tokio::time::sleep(REFRESH_EVERY).await;
        if started.elapsed() >= window {
            break;
        }
        let answer = wecom.post(&refresh(&hex_id(), &talk.stream_id, chat, user)).await.map_err(Refused::Later)?;
        talk.refreshes += 1;
        if let Answer::Stream { finish, content, .. } = &answer {
            talk.finished = *finish;
            shown.show(content);
        }
        talk.answers.push(answer);
    }
    Ok(())
}

/// The answer as it grows, on one line per rewrite: what a snapshot adds is appended.
struct Shown {
    speaker: String,
    text: String,
    line_open: bool,
    quiet: bool,
}

impl Shown {
    fn show(&mut self, content: &str) {
        use std::io::Write as _;
        if self.quiet || content == self.text {
            return;
        }
        let mut out = std::io::stdout().lock();
        match content.strip_prefix(self.text.as_str()) {
            Some(added) if self.line_open => {
                let _ = write!(out, "{}", ui::wechat(added));
            }
            _ => {
                if self.line_open {
                    let _ = writeln!(out);
                }
                let _ = write!(out, "{} {}", ui::bold(&format!("{} ▸", self.speaker)), ui::wechat(content));
                self.line_open = true;
            }
        }
        let _ = out.flush();
        self.text = content.to_owned();
    }

    fn end(&mut self) {
        if self.line_open {
            println!();
            self.line_open = false;
        }
    }
}

/// Whether anything answers HTTP at `base` (after a failed POST: down, or refusing?).
async fn reachable(base: &str) -> bool {
    reqwest::Client::new().get(base).timeout(Duration::from_secs(2)).send().await.is_ok()
}

/// The bot's EncodingAESKey as the config file spells it: WeCom's side needs the text, and the
/// parsed config keeps only the key's bytes.
fn aes_key_text(bridge: &Bridge, env: &Env, loaded: &Loaded, bot: &str) -> anyhow::Result<String> {
    let text = if loaded.demo {
        crate::settings::DEMO_CONFIG.to_owned()
    } else {
        let path = bridge.config.clone().or_else(|| env.config_file.clone()).context("no config file")?;
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let document: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", loaded.origin))?;
    document["aibots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == bot)
        .and_then(|b| b["encoding_aes_key"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("AI bot '{bot}' has no encoding_aes_key in {}", loaded.origin))
}
