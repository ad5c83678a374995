//! `wxbridge ilink login`: binds a personal-WeChat bot by QR code; and the poller loop that
//! `wxbridge dev` runs for the configured bots.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{json, Value};
use shared::channels::ilink::api::{IlinkApi, DEFAULT_BASE as ILINK_API_BASE, QR_STATUS_TIMEOUT};
use shared::channels::ilink::{IlinkAccount, IlinkLogin, Poller, QrStatus, Turn};
use shared::channels::Config;
use shared::core::http::{Http, HttpSettings};
use tokio::time::Instant;

/// QR codes tried before giving up (the service's own client stops at 3 too).
const MAX_QR_CODES: u32 = 3;
/// A login not confirmed within this long is abandoned.
const LOGIN_DEADLINE: Duration = Duration::from_secs(480);

#[derive(Debug, clap::Args)]
pub struct IlinkArgs {
    #[command(subcommand)]
    command: IlinkCommand,
}

#[derive(Debug, clap::Subcommand)]
enum IlinkCommand {
    /// Show a QR code to scan with WeChat; prints the bot's credentials once confirmed (or
    /// writes them into a config file or the deployed stack's config secret).
    Login(LoginArgs),
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    /// Where the login starts (the server names the bot's own API host when it confirms).
    #[arg(long, default_value = ILINK_API_BASE, env = "WXBRIDGE_ILINK_BASE_URL")]
    base_url: String,
    /// Print the credentials as one JSON object (the config's `ilink` entry) instead of env lines.
    #[arg(long)]
    json: bool,
    /// Add (or replace) the bot in this config file, created if missing (mode 0600).
    #[arg(long, value_name = "PATH", conflicts_with = "secret")]
    config_file: Option<PathBuf>,
    /// Add (or replace) the bot in this Secrets Manager secret: the deployed stack's config
    /// (its `ConfigSecretArn` output). Uses the standard AWS environment.
    #[arg(long, value_name = "NAME_OR_ARN")]
    secret: Option<String>,
    /// Milliseconds between status polls.
    #[arg(long, default_value_t = 1000, hide = true)]
    poll_interval_ms: u64,
}

pub async fn run(args: IlinkArgs) -> anyhow::Result<()> {
    match args.command {
        IlinkCommand::Login(args) => login(args).await,
    }
}

async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let api = IlinkApi::new(&Http::new(&HttpSettings::default())?);
    // Bots this config already holds: the server then answers "already bound" instead of
    // issuing a new token (which would end the old one's session).
    // The destination is checked before the QR code shows: nobody scans for nothing.
    let destination = match (&args.config_file, &args.secret) {
        (Some(path), _) if path.exists() => Some(Config::from_file(path)?),
        (_, Some(secret)) => Some(
            Config::parse(
                &shared::adapters::aws::read_secret(&shared::adapters::aws::sdk_config().await, secret).await?,
            )
            .with_context(|| format!("in secret {secret}"))?,
        ),
        _ => None,
    };
    let known: Vec<SecretString> =
        destination.map(|config| config.ilink.into_iter().map(|a| a.bot_token).collect()).unwrap_or_default();
    let Some(login) = scan(&api, &args, &known).await? else {
        eprintln!("This bot is already logged in with the credentials you have; they stay valid.");
        return Ok(());
    };
    eprintln!("✓ logged in: bot {} (scanned by {})", login.account, login.user_id.as_deref().unwrap_or("?"));
    if let Some(path) = &args.config_file {
        write_config_file(path, &login)?;
        eprintln!("  written into {} (ilink entry {})", path.display(), login.account);
    } else if let Some(secret) = &args.secret {
        write_secret(secret, &login).await?;
        eprintln!("  written into secret {secret}; the functions read it on their next cold start");
    } else if args.json {
        println!("{}", entry(&login));
    } else {
        println!("WXBRIDGE_ILINK_ACCOUNT={}", login.account);
        println!("WXBRIDGE_ILINK_BOT_TOKEN={}", login.bot_token.expose_secret());
        println!("WXBRIDGE_ILINK_BASE_URL={}", login.base_url);
        if let Some(user) = &login.user_id {
            println!("WXBRIDGE_ILINK_USER_ID={user}");
        }
        eprintln!("  keep the token secret; add the bot to your config's \"ilink\" list (or use --config-file)");
    }
    Ok(())
}

/// Shows QR codes and follows their status until the login is confirmed (`Some`), the bot turns
/// out to be bound already (`None`), or it fails.
async fn scan(api: &IlinkApi, args: &LoginArgs, known: &[SecretString]) -> anyhow::Result<Option<IlinkLogin>> {
    let started = Instant::now();
    let interval = Duration::from_millis(args.poll_interval_ms);
    for attempt in 1..=MAX_QR_CODES {
        let qr = api.bot_qrcode(&args.base_url, known).await.context("cannot get a login QR code")?;
        show_qr(&qr.content, attempt);
        let mut host = args.base_url.clone();
        let mut verify_code: Option<String> = None;
        let mut scanned = false;
        loop {
            if started.elapsed() > LOGIN_DEADLINE {
                bail!("the login was not confirmed within {} s; run the command again", LOGIN_DEADLINE.as_secs());
            }
            let status = api.qrcode_status(&host, &qr.qrcode, verify_code.as_deref(), QR_STATUS_TIMEOUT).await?;
            match status {
                QrStatus::Wait | QrStatus::Other(_) => {}
                QrStatus::Scanned => {
                    if !scanned {
                        eprintln!("scanned: confirm the login on the phone");
                        scanned = true;
                    }
                }
                QrStatus::Redirect { host: to } => {
                    host = if to.contains("://") { to } else { format!("https://{to}") };
                }
                QrStatus::NeedVerifyCode => verify_code = Some(ask_verify_code(verify_code.is_some())?),
                QrStatus::Expired | QrStatus::VerifyCodeBlocked => {
                    eprintln!("the QR code expired");
                    break;
                }
                QrStatus::AlreadyBound => return Ok(None),
                QrStatus::Confirmed(login) => return Ok(Some(login)),
            }
            tokio::time::sleep(interval).await;
        }
    }
    bail!("{MAX_QR_CODES} QR codes expired without a confirmed login; run the command again")
}

fn show_qr(content: &str, attempt: u32) {
    use qrcode::render::unicode::Dense1x2;
    if attempt > 1 {
        eprintln!("a new QR code ({attempt} of {MAX_QR_CODES}):");
    }
    match qrcode::QrCode::new(content.as_bytes()) {
        Ok(code) => {
            let image = code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build();
            eprintln!("{image}");
        }
        Err(err) => eprintln!("(cannot draw the QR code here: {err})"),
    }
    eprintln!("Scan with WeChat (or open on the phone): {content}");
}

fn ask_verify_code(again: bool) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("the phone shows a verification code, but there is no terminal to type it into");
    }
    let mut stderr = std::io::stderr();
    let prompt =
        if again { "wrong code; type the digits shown on the phone: " } else { "type the digits shown on the phone: " };
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The config's `ilink` entry for a login.
fn entry(login: &IlinkLogin) -> Value {
    let mut entry = json!({
        "account": login.account,
        "bot_token": login.bot_token.expose_secret(),
        "base_url": login.base_url,
    });
    if let Some(user) = &login.user_id {
        entry["user_id"] = user.clone().into();
    }
    entry
}

/// Puts the login into a config document: it replaces the entry of the same bot and any bot the
/// same WeChat user bound before (one binding per user: the old token no longer works).
fn upsert(document: &str, login: &IlinkLogin) -> anyhow::Result<String> {
    let mut config: Value = serde_json::from_str(document).context("the config is not JSON")?;
    let Some(top) = config.as_object_mut() else { bail!("the config is not a JSON object") };
    let list = top.entry("ilink").or_insert_with(|| json!([]));
    let Some(list) = list.as_array_mut() else { bail!("the config's \"ilink\" is not a list") };
    list.retain(|bot| {
        let same_bot = bot["account"].as_str() == Some(&login.account);
        let same_user = login.user_id.is_some() && bot["user_id"].as_str() == login.user_id.as_deref();
        !same_bot && !same_user
    });
    list.push(entry(login));
    let text = serde_json::to_string_pretty(&config)?;
    Config::parse(&text).context("the updated config does not validate")?;
    Ok(text)
}

fn write_config_file(path: &Path, login: &IlinkLogin) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => "{}".to_owned(),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let updated = upsert(&current, login).with_context(|| format!("in {}", path.display()))?;
    // A new file (mode 0600: it holds secrets) renamed over the old one: never half-written.
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(updated.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

async fn write_secret(secret: &str, login: &IlinkLogin) -> anyhow::Result<()> {
    let sdk = shared::adapters::aws::sdk_config().await;
    // Read again: whatever changed while the QR code was scanned is kept.
    let text = shared::adapters::aws::read_secret(&sdk, secret).await?;
    let updated = upsert(&text, login).with_context(|| format!("in secret {secret}"))?;
    aws_sdk_secretsmanager::Client::new(&sdk)
        .put_secret_value()
        .secret_id(secret)
        .secret_string(updated)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))
        .with_context(|| format!("cannot write secret {secret}"))?;
    Ok(())
}

/// Polls the configured bots for as long as `wxbridge dev` runs, reporting paused accounts once.
pub async fn poll_forever(poller: Arc<Poller>, accounts: Vec<IlinkAccount>) {
    let mut reported: HashMap<String, &'static str> = HashMap::new();
    loop {
        let started = Instant::now();
        for (account, turn) in poller.run_all(&accounts, started + Duration::from_secs(60)).await {
            let state = match &turn {
                Ok(Turn::Polled { .. }) => "polling",
                Ok(Turn::Busy) => "busy",
                Ok(Turn::Paused | Turn::Expired { .. }) => "paused",
                Err(_) => "failing",
            };
            if reported.insert(account.clone(), state) == Some(state) {
                continue;
            }
            match turn {
                Ok(Turn::Polled { .. }) => println!("iLink {account}: polling"),
                Ok(Turn::Busy) => println!("iLink {account}: another poller holds this bot; waiting"),
                Ok(Turn::Expired { .. } | Turn::Paused) => println!(
                    "iLink {account}: session expired (-14), polling stopped; log in again \
                     (wxbridge ilink login --config-file …) and restart"
                ),
                Err(err) => println!("iLink {account}: {err}"),
            }
        }
        // Paused or busy accounts return at once: no hot loop.
        tokio::time::sleep_until(started + Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(account: &str, user: Option<&str>) -> IlinkLogin {
        IlinkLogin {
            account: account.to_owned(),
            bot_token: SecretString::from(format!("{account}:tok")),
            base_url: "https://ilink.example".to_owned(),
            user_id: user.map(str::to_owned),
        }
    }

    #[test]
    fn a_login_replaces_the_same_bot_and_the_same_users_old_bot_and_keeps_the_rest() {
        let document = r#"{"wecom": [], "ilink": [
            {"account": "old@im.bot", "bot_token": "x", "base_url": "https://a.example", "user_id": "u1@im.wechat"},
            {"account": "other@im.bot", "bot_token": "y", "base_url": "https://a.example", "user_id": "u2@im.wechat"},
            {"account": "new@im.bot", "bot_token": "z", "base_url": "https://a.example"}]}"#;
        let updated: Value =
            serde_json::from_str(&upsert(document, &login("new@im.bot", Some("u1@im.wechat"))).unwrap()).unwrap();
        let accounts: Vec<&str> =
            updated["ilink"].as_array().unwrap().iter().map(|b| b["account"].as_str().unwrap()).collect();
        assert_eq!(accounts, ["other@im.bot", "new@im.bot"]);
        assert_eq!(updated["ilink"][1]["bot_token"], "new@im.bot:tok");
        assert!(updated["wecom"].is_array(), "the rest of the config is kept");
    }

    #[test]
    fn a_config_that_is_not_an_object_or_has_a_bad_ilink_list_is_refused() {
        for document in ["[]", "not json", r#"{"ilink": {}}"#, r#"{"unknown": 1}"#] {
            assert!(upsert(document, &login("b@im.bot", None)).is_err(), "{document}");
        }
    }
}
