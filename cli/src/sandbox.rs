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
    for kf in &config.kf {
        fake.add_kf_account(&kf.corp_id, &kf.open_kfid);
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
        Api::KfSend => ("wecom_kf", b["touser"].clone(), content_text(b)),
        Api::KfEvent => ("wecom_kf_welcome", json!("(welcome)"), content_text(b)),
    };
    // A file: WeCom names it by its media_id, iLink by its item's CDN parameter.
    let (kind, media_id) = match delivery.api {
        Api::Ilink => ilink_file(&b["msg"]["item_list"][0]),
        _ => {
            let kind = b["msgtype"].as_str().unwrap_or_default();
            (kind, b[kind]["media_id"].as_str())
        }
    };
    let (text, file) = match (media_id.and_then(|id| fake.media(id)), b[kind]["base64"].as_str()) {
        (Some((_, bytes)), _) => (Some(format!("[{kind} {}]", size(bytes.len() as u64))), media_id.map(file_path)),
        (None, Some(data)) => (Some(format!("[{kind} {}]", size(data.len() as u64 / 4 * 3))), None),
        _ => (text, None),
    };
    let file_kind = file.as_ref().map(|_| kind);
    json!({"channel": channel, "to": to, "text": text, "file": file, "file_kind": file_kind, "body": b})
}

/// The id a send names its file by (WeCom's media_id, iLink's CDN parameter).
fn media_id_of(delivery: &Delivery) -> Option<String> {
    let b = &delivery.body;
    match delivery.api {
        Api::Ilink => ilink_file(&b["msg"]["item_list"][0]).1.map(str::to_owned),
        _ => b["msgtype"].as_str().and_then(|kind| b[kind]["media_id"].as_str()).map(str::to_owned),
    }
}

/// The kind and CDN parameter of an iLink media item (none for text).
fn ilink_file(item: &Value) -> (&'static str, Option<&str>) {
    let kind = match item["type"].as_i64() {
        Some(2) => "image",
        Some(3) => "voice",
        Some(4) => "file",
        Some(5) => "video",
        _ => return ("", None),
    };
    (kind, item[format!("{kind}_item")]["media"]["encrypt_query_param"].as_str())
}

/// Where `wxbridge dev` serves a sandbox file: `/sandbox/file/<id>`, the id percent-encoded (an
/// iLink parameter holds `/`).
fn file_path(media_id: &str) -> String {
    let mut url = reqwest::Url::parse("http://sandbox/sandbox/file/").expect("a literal URL");
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push(media_id);
    }
    url.path().to_owned()
}

/// The text of a WeCom / OA message body, or its type in brackets.
fn content_text(body: &Value) -> Option<String> {
    let kind = body["msgtype"].as_str().unwrap_or("?");
    body[kind]["content"].as_str().map(str::to_owned).or_else(|| Some(format!("[{kind}]")))
}

/// Prints each send as the WeChat user would see it, as it happens, and each request the
/// sandbox refused (as WeChat would have) with its reason; the feed gets each as a `reply` (or
/// `typing`) in its conversation, each refusal as a `note`, and every API call as an `api` hop.
pub async fn show_sends(fake: Arc<FakeWechat>, origin: String, chats: Arc<crate::chat::Chats>) {
    use crate::feed::emit;
    fake.record_exchanges();
    let (mut shown, mut refused) = (0, 0);
    // Where the latest refused call belonged: its refusal's note goes there.
    let mut last_refused = (None, None);
    loop {
        for exchange in &fake.take_exchanges() {
            let (chat, msg) = chats.place_of_exchange(exchange);
            let errcode = exchange.response["errcode"].as_i64().or(exchange.response["ret"].as_i64());
            if exchange.status >= 400 || errcode.is_some_and(|code| code != 0) {
                last_refused = (chat.clone(), msg.clone());
            }
            emit(
                "api",
                chat.as_deref(),
                msg.as_deref(),
                json!({"at": exchange.at_us / 1000, "method": exchange.method, "path": exchange.path,
                       "query": crate::feed::mask_query(&exchange.query), "status": exchange.status,
                       "request": crate::feed::mask_json(&exchange.request),
                       "response": crate::feed::mask_json(&exchange.response), "ms": exchange.ms}),
            );
        }
        let deliveries = fake.deliveries();
        for delivery in deliveries.iter().skip(shown) {
            let sent = describe(delivery, &fake);
            let channel = sent["channel"].as_str().unwrap_or_default();
            let (chat, msg) = chats.place_of_delivery(delivery);
            if channel.ends_with("_typing") {
                // iLink's status 2 and the Official Account's "CancelTyping" end it.
                let on = sent["body"]["status"] != 2 && sent["text"] != "CancelTyping";
                emit("typing", chat.as_deref(), msg.as_deref(), json!({"on": on}));
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
            if chat.is_some() {
                // The page links a file by a name of its own (an iLink file's is a CDN credential).
                let file = sent["file"].as_str().and_then(|_| media_id_of(delivery)).map(|id| chats.show_file(&id));
                emit(
                    "reply",
                    chat.as_deref(),
                    msg.as_deref(),
                    json!({"via": "send", "channel": channel, "text": text, "file": file,
                           "file_kind": sent["file_kind"], "mention": null}),
                );
            }
        }
        shown = deliveries.len();
        let problems = fake.problems();
        for problem in problems.iter().skip(refused) {
            // The fake's reasons quote what it refused, credentials included.
            let problem = crate::feed::mask_quoted(problem);
            println!("{} {problem}", ui::bad("WeChat ✗ refused:"));
            let (chat, msg) = &last_refused;
            emit(
                "note",
                chat.as_deref(),
                msg.as_deref(),
                json!({"level": "error", "text": format!("WeChat refused: {problem}")}),
            );
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shared::channels::ilink::outbound::IlinkDelivery;
    use shared::core::envelope::{Content, MediaType, OutChannel, Outbound};
    use shared::core::outbound::{Delivery, OutFile};
    use shared::core::ports::ContextTokens;

    use super::*;

    /// An iLink picture shows as `[image 34 KB]` with a link that names its upload, and that
    /// link's id survives the trip through the route `wxbridge dev` serves it at.
    #[tokio::test]
    async fn an_ilink_picture_shows_its_size_and_a_link_to_the_file() {
        let fake = FakeWechat::start().await;
        fake.add_ilink_bot("bot-token");
        fake.add_ilink_user("bot-token", "u@im.wechat", "ctx");
        let config = Config::parse(&format!(
            r#"{{"ilink": [{{"account": "b@im.bot", "bot_token": "bot-token", "base_url": "{}"}}]}}"#,
            fake.base_url
        ))
        .unwrap();
        let contexts = Arc::new(shared::adapters::memory::MemoryContextTokens::default());
        contexts.store("b@im.bot", "u@im.wechat", "ctx", 1).await.unwrap();
        let apis =
            shared::channels::Apis::from_env(&Env::from_vars([("WXBRIDGE_ILINK_CDN_BASE", fake.base_url.clone())]))
                .unwrap();
        let delivery = IlinkDelivery::new(&config.ilink, &apis.ilink, contexts, &apis.http, &apis.ilink_cdn);
        let out = Outbound {
            v: 1,
            channel: OutChannel::Ilink,
            account: "b@im.bot".into(),
            to: "u@im.wechat".into(),
            content: Content::Text { text: String::new() },
            idempotency_key: "k".into(),
            in_reply_to: None,
        };
        let picture: Vec<u8> = b"\x89PNG\r\n\x1a\n".iter().copied().chain(std::iter::repeat_n(7, 34_000)).collect();
        let file = OutFile {
            media_type: MediaType::Image,
            bytes: picture.clone(),
            sha256: String::new(),
            mime: "image/png".into(),
            file_name: "a.png".into(),
        };
        let id = delivery.upload(&out, &file).await.unwrap();
        let part = Content::Image { media_id: Some(id), base64: None, media: None };
        delivery.deliver(&out, &part, "k", false).await.unwrap();

        let shown = describe(&fake.deliveries()[0], &fake);
        assert_eq!(shown["text"], "[image 34 KB]", "{shown}");
        let link = shown["file"].as_str().expect("a link");
        let route = axum::Router::new().route(
            "/sandbox/file/{id}",
            axum::routing::get(|axum::extract::Path(id): axum::extract::Path<String>| async move { id }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, route).await });
        let id = reqwest::get(format!("{base}{link}")).await.unwrap().text().await.unwrap();
        assert_eq!(fake.media(&id), Some(("image".to_owned(), picture)), "{link}");
    }
}
