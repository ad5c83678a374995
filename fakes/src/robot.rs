//! The WeCom group robot webhook (`POST /cgi-bin/webhook/send?key=`), wecom.md §5.4: no
//! access_token, the key is the credential; 20 messages per minute per robot.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::media;
use crate::media_store::Platform;
use crate::state::State;
use crate::types::{Api, Delivery};
use crate::upload;
use crate::wecom::{check_content, check_news, check_template_card, media_id, msgtype, sub_object};
use crate::wire::{wechat_json, Reject, Req};

const MSGTYPES: &[&str] = &["text", "markdown", "markdown_v2", "image", "news", "file", "voice", "template_card"];
const CARD_TYPES: &[&str] = &["text_notice", "news_notice"];
const TEXT_MAX: usize = 2048;
const MARKDOWN_MAX: usize = 4096;
/// Largest decoded image the robot takes.
const IMAGE_MAX: usize = 2 * 1024 * 1024;
/// Accepted messages per key per `WINDOW`; the next one is refused with 45009.
const PER_MINUTE: usize = 20;
const WINDOW: Duration = Duration::from_secs(60);

/// `file` and `voice` name a media_id this robot uploaded (not another robot's, not expired; a
/// `voice` one for `voice`), else 40007.
pub(crate) fn send(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let key = req.query("key").unwrap_or_default().to_owned();
    let Some(recent) = st.robots.get_mut(&key) else {
        return Err(Reject::code(93000, format!("webhook key {key:?} is not a known robot")));
    };
    let now = Instant::now();
    prune(recent, now);
    let sent_lately = recent.len();
    let body = req.json_object()?;
    if sent_lately >= PER_MINUTE {
        return Err(Reject::code(45009, format!("robot already accepted {PER_MINUTE} messages in the last 60 s")));
    }
    let msgtype = msgtype(&body, MSGTYPES)?;
    match msgtype {
        "text" => {
            check_content(&body, "text", TEXT_MAX)?;
            check_mentions(&body)?;
        }
        "markdown" | "markdown_v2" => check_content(&body, msgtype, MARKDOWN_MAX)?,
        "image" => check_image(&body, IMAGE_MAX)?,
        "news" => check_news(&body, 8)?,
        "file" | "voice" => {
            let media_id = media_id(&body, msgtype)?;
            let wanted = (msgtype == "voice").then_some("voice");
            media::check_sendable(st, Platform::Robot, &key, &format!("{msgtype}.media_id"), media_id, wanted)?;
        }
        "template_card" => check_template_card(&body, CARD_TYPES)?,
        other => return Err(Reject::code(40008, format!("msgtype {other:?} is not handled"))),
    }
    st.robots.entry(key.clone()).or_default().push_back(now);
    st.deliveries.push(Delivery::new(Api::WecomWebhook, key, Value::Object(body)));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

fn prune(recent: &mut VecDeque<Instant>, now: Instant) {
    while recent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        recent.pop_front();
    }
}

/// `text.mentioned_list` / `mentioned_mobile_list`, when present, are arrays of strings.
fn check_mentions(body: &Map<String, Value>) -> Result<(), Reject> {
    let Some(Value::Object(text)) = body.get("text") else {
        return Ok(());
    };
    for field in ["mentioned_list", "mentioned_mobile_list"] {
        match text.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(other) => {
                return Err(Reject::code(40058, format!("text.{field} must be an array of strings, got {other}")))
            }
        }
    }
    Ok(())
}

/// `image.base64` must decode to a JPG or PNG of at most `max` bytes whose md5 is `image.md5` (the
/// robot's image message, and the AI bot's final `msg_item`).
pub(crate) fn check_image(body: &Map<String, Value>, max: usize) -> Result<(), Reject> {
    let image = sub_object(body, "image", 40009)?;
    let (Some(Value::String(b64)), Some(Value::String(md5_hex))) = (image.get("base64"), image.get("md5")) else {
        return Err(Reject::code(40009, "image needs string fields base64 and md5"));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Reject::code(40009, format!("image.base64 is not valid base64: {e}")))?;
    if raw.is_empty() || raw.len() > max {
        return Err(Reject::code(40009, format!("image is {} bytes, it must be 1..={max}", raw.len())));
    }
    let actual: String = <md5::Md5 as md5::Digest>::digest(&raw).iter().map(|b| format!("{b:02x}")).collect();
    if !actual.eq_ignore_ascii_case(md5_hex) {
        return Err(Reject::code(
            40009,
            format!("image.md5 {md5_hex:?} is not the md5 of the decoded bytes ({actual})"),
        ));
    }
    let is_png = raw.starts_with(b"\x89PNG\r\n\x1a\n");
    let is_jpg = raw.starts_with(&[0xFF, 0xD8, 0xFF]);
    if !is_png && !is_jpg {
        return Err(Reject::code(40004, "image must be a JPG or PNG (checked by magic bytes)"));
    }
    Ok(())
}

/// `POST /cgi-bin/webhook/upload_media?key=&type=file|voice`: media only this robot may send
/// (upload.rs).
pub(crate) fn upload_media(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let key = req.query("key").unwrap_or_default().to_owned();
    if !st.robots.contains_key(&key) {
        return Err(Reject::code(93000, format!("webhook key {key:?} is not a known robot")));
    }
    upload::store(st, req, Platform::Robot, &key, upload::ROBOT_TYPES)
}
