//! The WeChat sandbox of `wxbridge dev`: the test harness's fake WeChat servers, in-process,
//! standing in for WeCom, the group robots, Official Accounts and iLink. The sender's calls reach
//! it instead of WeChat, and the terminal shows each send as the user would see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fakes::{Api, Delivery, FakeWechat};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};
use shared::channels::Config;
use shared::core::config::Env;

use crate::ui;

/// How long `simulate` and `send` wait for the send that follows.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Starts the sandbox with the config's accounts, and points the config and environment at it.
pub async fn start(config: &mut Config, env: &mut Env) -> Arc<FakeWechat> {
    let fake = Arc::new(FakeWechat::start().await);
    fake.open_directory();
    for app in &config.wecom {
        if let Some(secret) = &app.secret {
            fake.add_wecom_app(&app.corp_id, secret.expose_secret(), app.agent_id);
        }
    }
    for oa in &config.oa {
        if let Some(secret) = &oa.app_secret {
            fake.add_oa(&oa.app_id, secret.expose_secret());
        }
    }
    for robot in &config.robots {
        fake.add_robot(robot.key.expose_secret());
    }
    for bot in &mut config.ilink {
        fake.add_ilink_bot(bot.bot_token.expose_secret());
        bot.base_url = fake.base_url.clone();
    }
    // AI bots need no account: each message's response_url carries its own single-use code.
    for host in shared::channels::API_HOSTS {
        env.set_api_base(host.var, &fake.base_url);
    }
    fake
}

/// A send as JSON for `GET /sandbox/sends` (what `simulate` and `send` wait for). A file shows
/// as `[image 34 KB]` with `file`, the path `wxbridge dev` serves it at.
pub fn describe(delivery: &Delivery, fake: &FakeWechat) -> Value {
    let b = &delivery.body;
    let (channel, to, text) = match delivery.api {
        Api::WecomMessage => ("wecom_app", b["touser"].clone(), content_text(b)),
        Api::WecomAppchat => ("wecom_appchat", b["chatid"].clone(), content_text(b)),
        Api::WecomWebhook => ("wecom_webhook", json!("(group)"), content_text(b)),
        Api::OaCustom => ("oa", b["touser"].clone(), content_text(b)),
        Api::OaTyping => ("oa_typing", b["touser"].clone(), b["command"].as_str().map(str::to_owned)),
        Api::Ilink => (
            "ilink",
            b["msg"]["to_user_id"].clone(),
            b["msg"]["item_list"][0]["text_item"]["text"].as_str().map(str::to_owned),
        ),
        Api::IlinkTyping => ("ilink_typing", b["ilink_user_id"].clone(), None),
        Api::AibotResponse => ("wecom_aibot", json!("(response_url)"), content_text(b)),
    };
    let kind = b["msgtype"].as_str().unwrap_or_default();
    let media_id = b[kind]["media_id"].as_str();
    let (text, file) = match (media_id.and_then(|id| fake.media(id)), b[kind]["base64"].as_str()) {
        (Some((_, bytes)), _) => {
            (Some(format!("[{kind} {}]", size(bytes.len() as u64))), media_id.map(|id| format!("/sandbox/file/{id}")))
        }
        (None, Some(data)) => (Some(format!("[{kind} {}]", size(data.len() as u64 / 4 * 3))), None),
        _ => (text, None),
    };
    json!({"channel": channel, "to": to, "text": text, "file": file, "body": b})
}

/// The text of a WeCom / OA message body, or its type in brackets.
fn content_text(body: &Value) -> Option<String> {
    let kind = body["msgtype"].as_str().unwrap_or("?");
    body[kind]["content"].as_str().map(str::to_owned).or_else(|| Some(format!("[{kind}]")))
}

/// Prints each send as the WeChat user would see it, as it happens, and each request the
/// sandbox refused (as WeChat would have) with its reason.
pub async fn show_sends(fake: Arc<FakeWechat>, origin: String) {
    let (mut shown, mut refused) = (0, 0);
    loop {
        let deliveries = fake.deliveries();
        for delivery in deliveries.iter().skip(shown) {
            let sent = describe(delivery, &fake);
            let channel = sent["channel"].as_str().unwrap_or_default();
            if channel.ends_with("_typing") {
                continue;
            }
            let to = sent["to"].as_str().unwrap_or("?");
            let text = sent["text"].as_str().unwrap_or_default();
            println!(
                "{} {} {}",
                ui::wechat("WeChat ▸"),
                ui::bold(to),
                ui::wechat(&format!("sees {text:?} ({channel})"))
            );
            if let Some(file) = sent["file"].as_str() {
                println!("           {}", ui::dim(&format!("{origin}{file}")));
            }
        }
        shown = deliveries.len();
        let problems = fake.problems();
        for problem in problems.iter().skip(refused) {
            println!("{} {problem}", ui::bad("WeChat ✗ refused:"));
        }
        refused = problems.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A size for people: `34 KB`, `2.5 MB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{} KB", b.div_ceil(1024)),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// Hands a file to the sandbox as one a user of `channel`'s `account` sent; returns what the
/// channel's message names it by (a `MediaId`, or an AI bot's URL).
pub async fn upload_media(
    base: &str,
    channel: &str,
    account: &str,
    name: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{base}/sandbox/media/{channel}/{account}"))
        .query(&[("name", name)])
        .body(bytes)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the sandbox: {}", e.without_url()))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("--image needs `wxbridge dev` in sandbox mode: {status} {}", text.trim());
    }
    Ok(text.trim().to_owned())
}

/// The size of a file the sandbox keeps (`GET /sandbox/file/{media_id}`), if it has it.
pub async fn file_size(base: &str, media_id: &str) -> Option<u64> {
    let response = reqwest::Client::new()
        .get(format!("{base}/sandbox/file/{media_id}"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.bytes().await.ok().map(|b| b.len() as u64)
}

// The client side of `GET /sandbox/sends`, for `simulate` and `send`.

/// The sandbox's sends so far, if `base` is `wxbridge dev` in sandbox mode.
pub async fn sends(base: &str) -> Option<Vec<Value>> {
    let response = reqwest::Client::new()
        .get(format!("{base}/sandbox/sends"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Waits for the sandbox's next send to `to` after the first `before`, and prints it.
pub async fn wait_for_send(base: &str, before: usize, to: &str, quiet: bool) -> Option<Value> {
    let started = Instant::now();
    while started.elapsed() < SEND_WAIT {
        if let Some(sends) = sends(base).await {
            let found = sends
                .into_iter()
                .skip(before)
                .find(|s| s["to"] == to && !s["channel"].as_str().unwrap_or_default().ends_with("_typing"));
            if let Some(send) = found {
                if !quiet {
                    let text = send["text"].as_str().unwrap_or_default();
                    let channel = send["channel"].as_str().unwrap_or_default();
                    println!(
                        "{} {} {} {}",
                        ui::wechat("→ WeChat:"),
                        ui::bold(to),
                        ui::wechat(&format!("sees {text:?}")),
                        ui::dim(&format!("({channel}, {:.1} s later)", started.elapsed().as_secs_f64()))
                    );
                }
                return Some(send);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !quiet {
        println!("{}", ui::warn(&format!("  no send to {to} within {} s", SEND_WAIT.as_secs())));
    }
    None
}
