//! The chat page of `wxbridge dev` (`GET /`, `cli/assets/chat.html`) and its server side: the
//! conversations it lists, and the WeChat users of the sandbox who write in them.
//!
//! A message typed on the page is sent the way WeChat sends it: a signed (and encrypted) callback
//! to the bridge's own route, an Official Account's delivered again when 5 s pass, an AI bot's
//! stream refreshed once a second, a 微信客服 customer's message kept for the pull, an iLink
//! user's message waiting in the long poll. What follows shows on the page through the feed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fakes::aibot::{image_message as aibot_image, refresh, text_message as aibot_text};
use fakes::{AibotWecom, Answer, Api, Delivery, Exchange, FakeWechat};
use secrecy::ExposeSecret as _;
use serde_json::json;
use shared::channels::oa::callback::Mode;
use shared::channels::Config;
use shared::protocol::crypto::random_prefix;

use crate::feed::emit;
use crate::ids::{hex_id, message_id, unix_now};

/// The page: one file, inside the binary.
pub const PAGE: &str = include_str!("../assets/chat.html");

/// The header a sandbox user's callback carries: the message it sends, for the trace.
pub const TRACE_HEADER: &str = "x-wxbridge-trace";

/// How long WeChat waits for an answer to one delivery.
const WECHAT_WAIT: Duration = Duration::from_secs(5);
/// Attached pictures kept for the page, and AI-bot response_urls remembered.
const ATTACHED_KEPT: usize = 32;
const CODES_KEPT: usize = 512;
/// The largest picture the page attaches.
pub const ATTACH_MAX: usize = 10 * 1024 * 1024;
/// The demo group of the AI bots, and who is in it.
const GROUP: &str = "wrDemoGroup0001";
const GROUP_MEMBERS: [&str; 3] = ["WangFang", "LiLei", "张伟"];
const WECOM_USER: &str = "WangFang";
const OA_USER: &str = "oDemoUser0000000000000000001";
const KF_USER: &str = "wmDemoCustomer0000000000001";
const ILINK_USER: &str = "o9cq80demoUser@im.wechat";

/// One conversation of the page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chat {
    pub id: String,
    pub channel: &'static str,
    pub account: String,
    pub title: String,
    pub kind: &'static str,
    pub members: Vec<String>,
    pub bot_name: Option<String>,
    pub composer: bool,
    pub attach: bool,
    pub hint: &'static str,
}

/// The stage of the bridge that makes a WeChat API call on `path`, where only one does.
fn stage_of(path: &str) -> Option<crate::feed::Stage> {
    use crate::feed::Stage;
    let download = ["/cgi-bin/media/get", "/aibot/media", "/c2c/download"];
    let typing = ["/ilink/bot/sendtyping", "/ilink/bot/getconfig", "/cgi-bin/message/custom/typing"];
    if download.iter().any(|p| path.starts_with(p)) {
        Some(Stage::Media)
    } else if typing.contains(&path) {
        Some(Stage::Dispatch)
    } else if ["/cgi-bin/gettoken", "/cgi-bin/stable_token", "/cgi-bin/token"].contains(&path) {
        // A token serves whichever stage needed one.
        None
    } else {
        Some(Stage::Send)
    }
}

/// How a channel answers, in a line for the conversation's header.
fn hint_of(channel: &str) -> &'static str {
    match channel {
        "wecom" => "WeCom app: the callback is acknowledged at once, replies come by message/send",
        "wecom_aibot" => "AI bot in a group: @mention it; the answer streams as WeCom refreshes it",
        "oa" => "Official Account: a passive reply within WeChat's 5 s, else by customer service",
        "ilink" => "iLink: the bridge long-polls, shows typing…, then sends",
        _ => "微信客服: WeChat calls back, the bridge pulls the message, replies by kf/send_msg",
    }
}

/// The page's server side.
pub struct Chats {
    pub chats: Vec<Chat>,
    config: Arc<Config>,
    sandbox: Option<Arc<FakeWechat>>,
    /// Where the bridge's callback routes are (this process).
    base: String,
    aws: bool,
    /// The latest pictures users attached, by number, shown in their own bubbles
    /// (`GET /sandbox/attached/{n}`).
    attached: Mutex<VecDeque<(usize, Vec<u8>)>>,
    /// Files sandbox users sent, by the name the channel fetches them by → (chat, message).
    sent_files: Mutex<HashMap<String, (String, String)>>,
    /// Files of the sandbox the page links to, by a name of the page's own → their media id.
    shown_files: Mutex<HashMap<String, String>>,
    /// An AI-bot message's response_code → (chat, message): where a send to its URL belongs.
    pub response_codes: Mutex<HashMap<String, (String, String)>>,
}

impl Chats {
    /// The conversations of `config`: with the sandbox, one demo user per account (an AI bot's a
    /// group of three); without it none (real conversations appear on the page, read-only, as their
    /// messages and sends do).
    pub fn new(config: Arc<Config>, sandbox: Option<Arc<FakeWechat>>, base: String, aws: bool) -> Chats {
        let live = sandbox.is_some();
        let direct = |peer: &str| (peer.to_owned(), "direct", vec![peer.to_owned()]);
        let group = (GROUP.to_owned(), "group", GROUP_MEMBERS.iter().map(|m| (*m).to_owned()).collect());
        let accounts =
            config
                .wecom
                .iter()
                .map(|app| ("wecom", app.app.clone(), format!("企业微信 · {}", app.app), direct(WECOM_USER), None))
                .chain(config.aibots.iter().map(|bot| {
                    let title = format!("AI bot group · {}", bot.bot_name);
                    ("wecom_aibot", bot.name.clone(), title, group.clone(), Some(bot.bot_name.clone()))
                }))
                .chain(
                    config
                        .oa
                        .iter()
                        .map(|oa| ("oa", oa.app.clone(), format!("公众号 · {}", oa.app), direct(OA_USER), None)),
                )
                .chain(config.ilink.iter().map(|bot| {
                    ("ilink", bot.account.clone(), format!("微信 · {}", bot.account), direct(ILINK_USER), None)
                }))
                .chain(
                    config.kf.iter().map(|kf| {
                        ("wecom_kf", kf.name.clone(), format!("微信客服 · {}", kf.name), direct(KF_USER), None)
                    }),
                );
        let chats: Vec<Chat> = accounts
            .filter(|_| live)
            .map(|(channel, account, title, (peer, kind, members), bot_name)| Chat {
                id: format!("{channel}:{account}:{peer}"),
                channel,
                account,
                title,
                kind,
                members,
                bot_name,
                composer: true,
                attach: channel != "wecom_kf",
                hint: hint_of(channel),
            })
            .collect();
        if let Some(fake) = &sandbox {
            for bot in &config.ilink {
                fake.add_ilink_user(bot.bot_token.expose_secret(), ILINK_USER, "sandbox-context");
            }
            fake.add_oa_user(OA_USER);
            // iLink's long poll as the service holds it, so the trace is not all polls.
            fake.set_ilink_hold(Duration::from_secs(25));
        }
        Chats {
            chats,
            config,
            sandbox,
            base,
            aws,
            attached: Mutex::default(),
            sent_files: Mutex::default(),
            shown_files: Mutex::default(),
            response_codes: Mutex::default(),
        }
    }

    /// The conversation and message a send of the sandbox answers.
    pub fn place_of_delivery(&self, delivery: &Delivery) -> (Option<String>, Option<String>) {
        let b = &delivery.body;
        let config = &self.config;
        let chat = match delivery.api {
            Api::WecomMessage => config
                .wecom
                .iter()
                .find(|a| a.corp_id == delivery.account && Some(u64::from(a.agent_id)) == b["agentid"].as_u64())
                .zip(b["touser"].as_str())
                .map(|(app, to)| format!("wecom:{}:{to}", app.app)),
            Api::OaCustom | Api::OaTyping => config
                .oa
                .iter()
                .find(|a| a.app_id == delivery.account)
                .zip(b["touser"].as_str())
                .map(|(oa, to)| format!("oa:{}:{to}", oa.app)),
            Api::Ilink | Api::IlinkTyping => config
                .ilink
                .iter()
                .find(|bot| bot.bot_token.expose_secret() == delivery.account)
                .zip(b["msg"]["to_user_id"].as_str().or(b["ilink_user_id"].as_str()))
                .map(|(bot, to)| format!("ilink:{}:{to}", bot.account)),
            Api::KfSend => config
                .kf
                .iter()
                .find(|k| Some(k.open_kfid.as_str()) == b["open_kfid"].as_str())
                .zip(b["touser"].as_str())
                .map(|(kf, to)| format!("wecom_kf:{}:{to}", kf.name)),
            Api::AibotResponse => {
                let codes = self.response_codes.lock().unwrap_or_else(|p| p.into_inner());
                return match codes.get(&delivery.account) {
                    Some((chat, msg)) => (Some(chat.clone()), Some(msg.clone())),
                    None => (None, None),
                };
            }
            // Not in a conversation of the page: the terminal and the API hop show them.
            Api::WecomAppchat | Api::WecomWebhook | Api::KfEvent => return (None, None),
        };
        let msg = crate::feed::worked_on(delivery.at_us, chat.as_deref(), None)
            .map(|(msg, _)| msg)
            .or_else(|| crate::feed::latest(chat.as_deref()).map(|(msg, _)| msg));
        (chat, msg)
    }

    /// The conversation and message an API call of the sandbox belongs to: the direct
    /// conversation whose user it names, else the latest message of all.
    pub fn place_of_exchange(&self, exchange: &Exchange) -> (Option<String>, Option<String>) {
        if exchange.path.starts_with("/cgi-bin/aibot/response") {
            let code = exchange.query.iter().find(|(k, _)| k == "response_code").map(|(_, v)| v.clone());
            let codes = self.response_codes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((chat, msg)) = code.and_then(|c| codes.get(&c).cloned()) {
                return (Some(chat), Some(msg));
            }
        }
        let text = format!("{} {}", exchange.request, exchange.response);
        let chat = self
            .chats
            .iter()
            .filter(|c| c.kind == "direct")
            .find(|c| c.members.iter().any(|m| text.contains(&format!("\"{m}\""))))
            .map(|c| c.id.clone());
        // A file a sandbox user sent, fetched by the media step.
        if let Some((chat, msg)) = self.file_of(&exchange.path, &exchange.query) {
            return (Some(chat), Some(msg));
        }
        // A pull names the messages it brings.
        if let Some(placed) = self.pulled(exchange) {
            return placed;
        }
        // The message the bridge was working on then, at the stage that makes such calls.
        if let Some((msg, worked_chat)) =
            crate::feed::worked_on(exchange.at_us, chat.as_deref(), stage_of(&exchange.path))
        {
            return (chat.or(worked_chat), Some(msg));
        }
        match chat {
            // A pull (iLink's getupdates, 微信客服's sync_msg) brings the conversation's newest message.
            Some(chat) => {
                let msg = crate::feed::latest(Some(&chat)).map(|(msg, _)| msg);
                (Some(chat), msg)
            }
            None => (None, None),
        }
    }

    fn chat(&self, id: &str) -> Option<&Chat> {
        self.chats.iter().find(|c| c.id == id)
    }

    /// Keeps an attached picture for the sender's own bubble (the latest [`ATTACHED_KEPT`]); its
    /// path.
    fn keep_attached(&self, bytes: &[u8]) -> String {
        let mut attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        let n = attached.back().map_or(0, |(n, _)| n + 1);
        attached.push_back((n, bytes.to_vec()));
        if attached.len() > ATTACHED_KEPT {
            attached.pop_front();
        }
        format!("/sandbox/attached/{n}")
    }

    /// The first message a pull (iLink's `getupdates`, 微信客服's `sync_msg`) brought, by the ids
    /// in its answer: the Inbound ids the bridge gives them.
    fn pulled(&self, exchange: &Exchange) -> Option<(Option<String>, Option<String>)> {
        let config = &self.config;
        let candidates: Vec<String> = match exchange.path.as_str() {
            "/ilink/bot/getupdates" => {
                let ids = exchange.response["msgs"].as_array()?.iter().filter_map(|m| m["message_id"].as_u64());
                ids.flat_map(|id| config.ilink.iter().map(move |bot| format!("ilink:{}:{id}", bot.account))).collect()
            }
            "/cgi-bin/kf/sync_msg" => {
                let ids = exchange.response["msg_list"].as_array()?.iter().filter_map(|m| m["msgid"].as_str());
                ids.flat_map(|id| config.kf.iter().map(move |kf| format!("wecom_kf:{}:{id}", kf.name))).collect()
            }
            _ => return None,
        };
        let found =
            candidates.into_iter().find_map(|msg| crate::feed::chat_of(&msg).map(|chat| (Some(chat), Some(msg))));
        Some(found.unwrap_or((None, None)))
    }

    /// Remembers the message a file a sandbox user sent belongs to, by the name the channel
    /// fetches it by (a media id, a URL's path, a CDN parameter).
    fn remember_file(&self, name: &str, chat: &str, msg: &str) {
        let mut files = self.sent_files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() >= CODES_KEPT {
            files.clear();
        }
        files.insert(name.to_owned(), (chat.to_owned(), msg.to_owned()));
    }

    /// The message whose file a download names, if a sandbox user sent it.
    fn file_of(&self, path: &str, query: &[(String, String)]) -> Option<(String, String)> {
        let files = self.sent_files.lock().unwrap_or_else(|p| p.into_inner());
        query.iter().find_map(|(_, v)| files.get(v)).or_else(|| files.get(path)).cloned()
    }

    /// The page's link to a file the sandbox keeps under `media_id`.
    pub fn show_file(&self, media_id: &str) -> String {
        let name = crate::feed::mask(media_id).trim_start_matches('*').to_owned();
        let mut files = self.shown_files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() >= CODES_KEPT {
            files.clear();
        }
        files.insert(name.clone(), media_id.to_owned());
        format!("/sandbox/shown/{name}")
    }

    /// Remembers which message an AI-bot response_url belongs to (the latest few hundred).
    fn remember_code(&self, code: String, chat: &str, msg: &str) {
        let mut codes = self.response_codes.lock().unwrap_or_else(|p| p.into_inner());
        if codes.len() >= CODES_KEPT {
            codes.clear();
        }
        codes.insert(code, (chat.to_owned(), msg.to_owned()));
    }
}

/// `GET /`: the page.
pub async fn page() -> Response {
    let mut response = PAGE.into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// `GET /sandbox/chats`.
pub async fn list(State(chats): State<Arc<Chats>>) -> Response {
    axum::Json(json!({"sandbox": chats.sandbox.is_some(), "aws": chats.aws, "chats": chats.chats})).into_response()
}

/// `GET /sandbox/attached/{n}`: a picture a user attached.
pub async fn attached(State(chats): State<Arc<Chats>>, Path(n): Path<usize>) -> Response {
    let attached = chats.attached.lock().unwrap_or_else(|p| p.into_inner());
    let Some((_, bytes)) = attached.iter().find(|(kept, _)| *kept == n) else {
        return (StatusCode::NOT_FOUND, "no such picture\n").into_response();
    };
    let mime = shared::core::media::sniff(&bytes[..bytes.len().min(64)]).unwrap_or("application/octet-stream");
    ([(axum::http::header::CONTENT_TYPE, mime)], bytes.clone()).into_response()
}

/// `GET /sandbox/shown/{name}`: a file the page shows in a bot's answer.
pub async fn shown(State(chats): State<Arc<Chats>>, Path(name): Path<String>) -> Response {
    let media_id = chats.shown_files.lock().unwrap_or_else(|p| p.into_inner()).get(&name).cloned();
    let Some((_, bytes)) = media_id.zip(chats.sandbox.as_ref()).and_then(|(id, fake)| fake.media(&id)) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    ([(axum::http::header::CONTENT_TYPE, mime_of(&bytes))], bytes).into_response()
}

/// Whether a browser sent the request from another site (a page a developer happens to have
/// open must not make their bridge send): by `Sec-Fetch-Site`, else by `Origin` against `Host`.
pub fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => origin.split("://").nth(1) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// What the page posts to `POST /sandbox/say`.
#[derive(Debug, serde::Deserialize)]
pub struct Say {
    chat: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image: Option<Attached>,
}

#[derive(Debug, serde::Deserialize)]
struct Attached {
    name: String,
    /// Base64.
    data: String,
}

/// The largest text the page sends (WeChat's own limit on a message is lower).
const TEXT_MAX: usize = 16 * 1024;

/// `POST /sandbox/say`: a sandbox user writes; answers 202 with the message's Inbound id at once.
/// JSON only: a form on another site cannot post it without the browser asking first.
pub async fn say(State(chats): State<Arc<Chats>>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Response {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json\n").into_response();
    }
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "not from another site\n").into_response();
    }
    match start_saying(&chats, &body) {
        Ok(msg) => (StatusCode::ACCEPTED, axum::Json(json!({"msg": msg}))).into_response(),
        Err((status, text)) => (status, format!("{text}\n")).into_response(),
    }
}

type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, text: impl Into<String>) -> Refusal {
    (status, text.into())
}

/// Checks what the page sent and starts the user's side of the conversation in the background.
fn start_saying(chats: &Arc<Chats>, body: &[u8]) -> Result<String, Refusal> {
    let say: Say = serde_json::from_slice(body)
        // The error's place, not its text: that may quote the message.
        .map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("not a message ({:?} error at column {})", e.classify(), e.column()),
            )
        })?;
    let chat = chats.chat(&say.chat).ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such conversation"))?.clone();
    let Some(fake) = chats.sandbox.clone().filter(|_| chat.composer) else {
        return Err(refuse(StatusCode::CONFLICT, "a real channel: its users write from WeChat"));
    };
    let from = say.from.clone().unwrap_or_else(|| chat.members[0].clone());
    if !chat.members.contains(&from) {
        return Err(refuse(StatusCode::BAD_REQUEST, format!("{from} is not in this conversation")));
    }
    let text = say.text.clone().filter(|t| !t.trim().is_empty());
    if text.as_ref().is_some_and(|t| t.len() > TEXT_MAX) {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("the text is over {TEXT_MAX} bytes")));
    }
    let image = match &say.image {
        None => None,
        Some(_) if !chat.attach => {
            return Err(refuse(StatusCode::BAD_REQUEST, "this sandbox conversation takes text only"))
        }
        Some(image) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(image.data.trim())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the picture is not base64"))?;
            if bytes.len() > ATTACH_MAX {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the picture is over {} MB", ATTACH_MAX >> 20),
                ));
            }
            if !shared::core::media::sniff(&bytes[..bytes.len().min(64)]).is_some_and(|m| m.starts_with("image/")) {
                return Err(refuse(StatusCode::BAD_REQUEST, "not a picture (PNG, JPEG, GIF or WebP)"));
            }
            let name = shared::core::media::clean_file_name(&image.name).unwrap_or_else(|| "image".into());
            Some((name, bytes))
        }
    };
    if text.is_none() && image.is_none() {
        return Err(refuse(StatusCode::BAD_REQUEST, "give a text or a picture"));
    }
    let user = User { chats: chats.clone(), fake, chat, from };
    let msg = user.message_id(text.as_deref().unwrap_or_default())?;
    let shown = image.as_ref().map(|(_, bytes)| user.chats.keep_attached(bytes));
    emit("user", Some(&user.chat.id), Some(&msg), json!({"from": user.from, "text": text, "image": shown}));
    // In a group WeCom hands the AI bot only the messages that mention it.
    if let Some(bot_name) = user.chat.bot_name.as_deref().filter(|_| user.chat.kind == "group") {
        let mention = format!("@{bot_name}");
        if !text.as_deref().is_some_and(|t| t.contains(&mention)) && image.is_none() {
            let note = format!("WeCom gives {bot_name} only the group's messages that mention it ({mention})");
            emit("note", Some(&user.chat.id), Some(&msg), json!({"level": "info", "text": note}));
            return Ok(msg);
        }
    }
    let id = msg.clone();
    tokio::spawn(async move {
        if let Err(err) = user.write(&id, text, image).await {
            emit("note", Some(&user.chat.id), Some(&id), json!({"level": "error", "text": err}));
            println!("{} {err}", crate::ui::bad("sandbox ✗"));
        }
    });
    Ok(msg)
}

/// What a sandbox user writes: a text, a picture (its name and bytes), or both.
struct Said {
    text: Option<String>,
    image: Option<(String, Vec<u8>)>,
}

/// A sandbox user writing in one conversation.
struct User {
    chats: Arc<Chats>,
    fake: Arc<FakeWechat>,
    chat: Chat,
    from: String,
}

impl User {
    /// A new message's id as its channel carries it, in the Inbound id the bridge will give it.
    /// A 微信客服 customer's message gets its id from WeChat, which keeps it for the pull now.
    fn message_id(&self, text: &str) -> Result<String, Refusal> {
        let platform_id = match self.chat.channel {
            "wecom_aibot" => hex_id(),
            "wecom_kf" => {
                let kf = self.chats.config.kf.iter().find(|k| k.name == self.chat.account);
                let kf = kf.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such kf account"))?;
                self.fake.kf_customer_says(&kf.open_kfid, &self.from, text)
            }
            _ => message_id().to_string(),
        };
        Ok(format!("{}:{}:{platform_id}", self.chat.channel, self.chat.account))
    }

    async fn write(&self, msg: &str, text: Option<String>, image: Option<(String, Vec<u8>)>) -> Result<(), String> {
        let platform_id = msg.rsplit(':').next().unwrap_or_default();
        let numeric = || platform_id.parse::<u64>().map_err(|_| "a bad message id".to_owned());
        let said = Said { text, image };
        match self.chat.channel {
            "wecom" => self.wecom(msg, numeric()?, said).await,
            "oa" => self.oa(msg, numeric()?, said).await,
            "wecom_aibot" => self.aibot(msg, platform_id, said).await,
            "wecom_kf" => self.kf(msg).await,
            "ilink" => self.ilink(msg, numeric()?, said),
            other => Err(format!("no sandbox user for {other}")),
        }
    }

    async fn wecom(&self, msg: &str, msg_id: u64, said: Said) -> Result<(), String> {
        use shared::channels::wecom::simulate::{image_message, sign_callback, text_message};
        let app = self.chats.config.wecom_app(&self.chat.account).ok_or("the app is gone from the config")?;
        let xml = match (said.image, said.text) {
            (Some((name, bytes)), _) => {
                let mime = mime_of(&bytes);
                let media_id = self.fake.add_wecom_media(&app.corp_id, bytes, &name, mime);
                self.chats.remember_file(&media_id, &self.chat.id, msg);
                image_message(&app.corp_id, app.agent_id, &self.from, &media_id, msg_id, unix_now())
            }
            (None, Some(text)) => text_message(&app.corp_id, app.agent_id, &self.from, &text, msg_id, unix_now()),
            (None, None) => return Err("nothing to send".into()),
        };
        let callback =
            sign_callback(&app.msg_crypt(), &xml, unix_now(), &(msg_id % 10_000_000_000).to_string(), random_prefix());
        self.post(&format!("/wecom/{}?{}", app.app, callback.query), msg, callback.body, None).await?;
        Ok(())
    }

    /// Posts a callback to the bridge's route as WeChat does, labelled with the message for the
    /// trace; the status and body, or why no answer came.
    async fn post(&self, path: &str, msg: &str, body: String, wait: Option<Duration>) -> Result<(u16, String), String> {
        let answer = reqwest::Client::new()
            .post(format!("{}{path}", self.chats.base))
            .header("content-type", "text/xml")
            .header(TRACE_HEADER, msg)
            .body(body)
            .timeout(wait.unwrap_or(WECHAT_WAIT))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    format!("cannot reach the bridge: {}", e.without_url())
                }
            })?;
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        if status >= 400 {
            return Err(format!("the bridge answered {status}: {}", body.trim()));
        }
        Ok((status, body))
    }

    async fn oa(&self, msg: &str, msg_id: u64, said: Said) -> Result<(), String> {
        let account = self.chats.config.oa.iter().find(|a| a.app == self.chat.account).ok_or("the account is gone")?;
        let gh = format!("gh_{}", account.app);
        let xml = match (said.image, said.text) {
            (Some((name, bytes)), _) => {
                let mime = mime_of(&bytes);
                let media_id = self.fake.add_oa_media(&account.app_id, bytes, &name, mime);
                self.chats.remember_file(&media_id, &self.chat.id, msg);
                let pic_url = format!("{}/sandbox/file/{media_id}", self.chats.base);
                shared::channels::oa::request::image_message(&gh, &self.from, &pic_url, &media_id, msg_id, unix_now())
            }
            (None, Some(text)) => {
                shared::channels::oa::request::text_message(&gh, &self.from, &text, msg_id, unix_now())
            }
            (None, None) => return Err("nothing to send".into()),
        };
        let crypt = account.msg_crypt();
        let mode = if crypt.is_some() { Mode::Safe } else { Mode::Plain };
        // WeChat delivers up to 3 times, each waiting 5 s for the answer.
        for delivery in 1..=3u32 {
            let started = std::time::SystemTime::now();
            let deadline = started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| (d + WECHAT_WAIT).as_millis() as u64)
                .unwrap_or_default();
            emit("window", Some(&self.chat.id), Some(msg), json!({"delivery": delivery, "deadline": deadline}));
            let signed = shared::channels::oa::request::sign_callback(
                account.token.expose_secret(),
                crypt.as_ref(),
                mode,
                &xml,
                &self.from,
                unix_now(),
                &format!("{}{delivery}", msg_id % 1_000_000_000),
                random_prefix(),
            );
            match self.post(&format!("/oa/{}?{}", account.app, signed.query), msg, signed.body, None).await {
                Ok((_, body)) => {
                    let body = body.trim();
                    if body.is_empty() || body == "success" {
                        // No passive reply: one comes by customer service.
                        return Ok(());
                    }
                    let reply = shared::channels::oa::request::open_reply(crypt.as_ref(), body)
                        .map_err(|_| "the passive reply does not open")?;
                    let fields = shared::protocol::xml::parse(&reply)
                        .map_err(|e| format!("the passive reply is not XML: {e}"))?;
                    let kind = fields.text("MsgType").unwrap_or("?").to_owned();
                    let media_id = ["Image", "Voice", "Video"]
                        .iter()
                        .find_map(|element| fields.get(element).and_then(|v| v.node()).and_then(|n| n.text("MediaId")));
                    let file = media_id.map(|id| self.chats.show_file(id));
                    emit(
                        "reply",
                        Some(&self.chat.id),
                        Some(msg),
                        json!({"via": "passive", "text": fields.text("Content"), "file": file,
                               "file_kind": media_id.map(|_| kind.to_lowercase()), "mention": null, "delivery": delivery}),
                    );
                    return Ok(());
                }
                Err(err) if err == "timeout" => continue,
                Err(err) => return Err(err),
            }
        }
        emit(
            "note",
            Some(&self.chat.id),
            Some(msg),
            json!({"level": "info", "text": "no answer to 3 deliveries: WeChat gives up; a reply goes by customer service"}),
        );
        Ok(())
    }

    async fn aibot(&self, msg: &str, msgid: &str, said: Said) -> Result<(), String> {
        let Said { text, image } = said;
        use base64::Engine as _;
        let config = &self.chats.config;
        let bot = config.aibots.iter().find(|b| b.name == self.chat.account).ok_or("the bot is gone")?;
        let key = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bot.encoding_aes_key.bytes());
        let route = format!("{}/{}/{}", self.chats.base, shared::channels::aibot::ROUTE, bot.name);
        let window = Duration::from_secs(config.aibot_stream.window_s);
        let wecom = AibotWecom::new(&route, bot.token.expose_secret(), &key).window(window).header(TRACE_HEADER, msg);
        let response_url = self.fake.aibot_response_url();
        if let Some(code) = response_code(&response_url) {
            self.chats.remember_code(code, &self.chat.id, msg);
        }
        let group = (self.chat.kind == "group").then_some(GROUP);
        let message = match image {
            Some((name, bytes)) => {
                let url = self.fake.aibot_media_url(&bytes, &key, Some(&name));
                if let Ok(parsed) = reqwest::Url::parse(&url) {
                    self.chats.remember_file(parsed.path(), &self.chat.id, msg);
                }
                let mention = text.unwrap_or_else(|| format!("@{}", bot.bot_name));
                aibot_image(msgid, group, &self.from, &mention, &url, &response_url)
            }
            None => aibot_text(msgid, group, &self.from, &text.unwrap_or_default(), &response_url),
        };
        let started = Instant::now();
        let first = wecom.post(&message).await?;
        let Answer::Stream { id, mut finish, content, msg_item } = first else {
            return Err(format!("the bridge answered {first:?}, not a stream"));
        };
        let mut shown = content;
        let mut items = msg_item;
        emit("stream", Some(&self.chat.id), Some(msg), json!({"text": shown, "finished": finish}));
        while !finish && started.elapsed() < window {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let answer = wecom.post(&refresh(&hex_id(), &id, group, &self.from)).await?;
            if let Answer::Stream { finish: done, content, msg_item, .. } = answer {
                finish = done;
                items = msg_item;
                if content != shown || finish {
                    shown = content;
                    emit("stream", Some(&self.chat.id), Some(msg), json!({"text": shown, "finished": finish}));
                }
            }
        }
        if finish {
            // The finishing stream's pictures (msg_item), as the user sees them.
            let finished = Answer::Stream { id, finish, content: shown.clone(), msg_item: items };
            let talk =
                fakes::Conversation { stream_id: String::new(), answers: vec![finished], finished: true, refreshes: 0 };
            let file = talk.final_images().first().map(|bytes| self.chats.keep_attached(bytes));
            emit(
                "reply",
                Some(&self.chat.id),
                Some(msg),
                json!({"via": "stream", "text": shown, "file": file, "file_kind": file.as_ref().map(|_| "image"), "mention": null}),
            );
        } else {
            emit(
                "note",
                Some(&self.chat.id),
                Some(msg),
                json!({"level": "info", "text": "WeCom stopped refreshing: the rest of the answer comes by response_url"}),
            );
        }
        Ok(())
    }

    /// WeChat keeps the customer's message (done in `message_id`) and calls the serving app back.
    async fn kf(&self, msg: &str) -> Result<(), String> {
        let config = &self.chats.config;
        let kf = config.kf.iter().find(|k| k.name == self.chat.account).ok_or("the kf account is gone")?;
        let app = config.wecom_app(&kf.app).ok_or("the kf account's app is gone")?;
        let now = unix_now();
        let token = self.fake.kf_callback_token(&kf.open_kfid);
        let xml = shared::channels::wecom::simulate::kf_msg_or_event(&app.corp_id, &token, &kf.open_kfid, now);
        let callback = shared::channels::wecom::simulate::sign_callback(
            &app.msg_crypt(),
            &xml,
            now,
            &(message_id() % 10_000_000_000).to_string(),
            random_prefix(),
        );
        self.post(&format!("/wecom/{}?{}", app.app, callback.query), msg, callback.body, None).await?;
        Ok(())
    }

    fn ilink(&self, msg: &str, message_id: u64, said: Said) -> Result<(), String> {
        let config = &self.chats.config;
        let bot = config.ilink.iter().find(|b| b.account == self.chat.account).ok_or("the iLink bot is gone")?;
        let item = match (said.image, said.text) {
            (Some((_, bytes)), _) => {
                let key = random_prefix();
                let param = self.fake.ilink_cdn_media(&bytes, key);
                self.chats.remember_file(&param, &self.chat.id, msg);
                json!({"type": 2, "image_item": {"media": {"encrypt_query_param": param,
                       "aes_key": shared::protocol::hex::hex(&key)}}})
            }
            (None, Some(text)) => json!({"type": 1, "text_item": {"text": text}}),
            (None, None) => return Err("nothing to send".into()),
        };
        let now_ms = unix_now() * 1000;
        self.fake.push_ilink_message(
            bot.bot_token.expose_secret(),
            json!({"seq": message_id, "message_id": message_id, "from_user_id": self.from,
                   "to_user_id": bot.account, "create_time_ms": now_ms, "message_type": 1, "message_state": 2,
                   "context_token": "sandbox-context", "item_list": [item]}),
        );
        emit(
            "note",
            Some(&self.chat.id),
            Some(msg),
            json!({"level": "info", "text": "waiting in the bridge's long poll (getupdates)"}),
        );
        Ok(())
    }
}

/// The `response_code` of an AI bot's response_url.
pub fn response_code(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.query_pairs().find(|(k, _)| k == "response_code").map(|(_, v)| v.into_owned())
}

fn mime_of(bytes: &[u8]) -> &'static str {
    shared::core::media::sniff(&bytes[..bytes.len().min(64)]).unwrap_or("application/octet-stream")
}
