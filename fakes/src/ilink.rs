//! iLink bot endpoints: `getupdates` (long poll), `sendmessage`, `getuploadurl`, `getconfig` and
//! `sendtyping`, each checked for the headers, auth and `base_info` every bot POST carries, then
//! for its own fields. QR login lives in `ilink_login`; uploads and media items in
//! `ilink_upload`.
//!
//! Business errors are HTTP 200 with `ret`/`errcode` in the body, as on the real service. An
//! unknown token is `-14 session timeout`; a malformed request `-2 invalid arguments`; a message
//! the service would not deliver (unknown user, stale `context_token`) `-2 prepare failed`.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::ilink_upload;
use crate::state::State;
use crate::types::{Api, Delivery};
use crate::wire::{ilink_json, kind, show, Reject, Req};

/// First `message_id` handed out: above 2^53, so a client that parses ids as f64 loses digits.
const FIRST_MESSAGE_ID: u64 = 7_300_000_000_000_000_000;

/// The checks every bot POST passes: method, `X-WECHAT-UIN`, auth, content type, a JSON object
/// body with `base_info.channel_version`. Returns the bot token and the body.
fn bot_post(st: &mut State, req: &Req) -> Result<(String, Map<String, Value>), Reject> {
    if req.method != axum::http::Method::POST {
        return Err(Reject::http(
            StatusCode::NOT_FOUND,
            format!("{} on an iLink bot endpoint (POST only)", req.method),
        ));
    }
    let uin = check_uin(st, req);
    let bot = check_auth(st, req)?;
    uin?;
    check_content_type(req)?;
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| Reject::ilink_invalid(format!("body is not valid JSON: {e}")))?;
    let Value::Object(top) = body else {
        return Err(Reject::ilink_invalid(format!("body is JSON {} instead of an object", kind(&body))));
    };
    match top.get("base_info").and_then(|b| b.get("channel_version")) {
        Some(Value::String(_)) => Ok((bot, top)),
        other => Err(Reject::ilink_invalid(format!(
            "base_info.channel_version must be a string, got {}",
            other.map_or("nothing", kind)
        ))),
    }
}

pub(crate) fn sendmessage(st: &mut State, req: &Req) -> Result<Response, Reject> {
    let (bot, top) = bot_post(st, req)?;
    let msg = match top.get("msg") {
        Some(Value::Object(m)) => m,
        other => {
            return Err(Reject::ilink_invalid(format!("msg must be an object, got {}", other.map_or("nothing", kind))))
        }
    };
    check_msg_shape(msg)?;

    let to_user = msg.get("to_user_id").and_then(Value::as_str).unwrap_or_default();
    let Some(latest) = st.ilink_users.get(&(bot.clone(), to_user.to_owned())) else {
        return Err(Reject::ilink_prepare_failed(format!("to_user_id {to_user:?} has never written to this bot")));
    };
    match msg.get("context_token") {
        Some(Value::String(t)) if t == latest => {}
        other => {
            return Err(Reject::ilink_prepare_failed(format!(
                "context_token {} is not the latest one issued to {to_user}",
                other.map_or_else(|| "(absent)".to_owned(), Value::to_string)
            )))
        }
    }

    let item = msg.get("item_list").and_then(|items| items.get(0)).cloned().unwrap_or_default();
    let media = match item.get("type").and_then(Value::as_i64) {
        Some(1) => None,
        _ => Some(ilink_upload::check_item(st, req, &bot, to_user, &item)?),
    };

    let n = st.ilink_sent;
    st.ilink_sent += 1;
    st.media.ilink.sends.extend(media);
    st.deliveries.push(Delivery::new(Api::Ilink, bot, Value::Object(top)));
    Ok(success_body(n))
}

/// `getuploadurl`: reserves a CDN upload (checked in `ilink_upload`).
pub(crate) fn getuploadurl(st: &mut State, req: &Req) -> Result<Response, Reject> {
    let (bot, top) = bot_post(st, req)?;
    ilink_upload::reserve(st, req, &bot, &top)
}

/// `getconfig`: a typing ticket for a user who has written to the bot.
pub(crate) fn getconfig(st: &mut State, req: &Req) -> Result<Response, Reject> {
    let (bot, top) = bot_post(st, req)?;
    let user = match top.get("ilink_user_id") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        other => {
            return Err(Reject::ilink_invalid(format!("ilink_user_id must be a non-empty string, got {}", show(other))))
        }
    };
    if !st.ilink_users.contains_key(&(bot.clone(), user.clone())) {
        return Err(Reject::ilink_prepare_failed(format!("ilink_user_id {user:?} has never written to this bot")));
    }
    if let Some(ctx) = top.get("context_token") {
        if !ctx.is_string() {
            return Err(Reject::ilink_invalid(format!("context_token must be a string, got {ctx}")));
        }
    }
    let ticket = base64::engine::general_purpose::STANDARD.encode(format!("ticket:{}:{user}", st.ilink_tickets.len()));
    st.ilink_tickets.insert(ticket.clone(), (bot, user));
    Ok(ilink_json(&json!({"ret": 0, "typing_ticket": ticket})))
}

/// `sendtyping`: needs a ticket issued to this bot for this user, and status 1 (typing) or 2.
pub(crate) fn sendtyping(st: &mut State, req: &Req) -> Result<Response, Reject> {
    let (bot, top) = bot_post(st, req)?;
    let user = top.get("ilink_user_id").and_then(Value::as_str).unwrap_or_default();
    let ticket = top.get("typing_ticket").and_then(Value::as_str).unwrap_or_default();
    match st.ilink_tickets.get(ticket) {
        Some((b, u)) if *b == bot && u == user => {}
        _ => {
            return Err(Reject::ilink_invalid(format!(
                "typing_ticket {ticket:?} was not issued to this bot for ilink_user_id {user:?}"
            )))
        }
    }
    match top.get("status").and_then(Value::as_i64) {
        Some(1 | 2) => {}
        _ => return Err(Reject::ilink_invalid(format!("status must be 1 or 2, got {}", show(top.get("status"))))),
    }
    st.deliveries.push(Delivery::new(Api::IlinkTyping, bot, Value::Object(top)));
    Ok(ilink_json(&json!({"ret": 0})))
}

/// The real service answers a successful send in any of these shapes (§2.1); rotate so clients
/// must accept all of them.
fn success_body(n: u64) -> Response {
    match n % 4 {
        0 => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::empty()).into_response(),
        1 => ilink_json(&json!({})),
        2 => ilink_json(&json!({"ret": 0})),
        _ => ilink_json(&json!({"ret": 0, "message_id": FIRST_MESSAGE_ID.saturating_add(n)})),
    }
}

/// `AuthorizationType: ilink_bot_token` and `Authorization: Bearer <issued token>`; returns the
/// token. Anything else is the service's `-14`.
fn check_auth(st: &State, req: &Req) -> Result<String, Reject> {
    if req.header("authorizationtype") != Some("ilink_bot_token") {
        return Err(Reject::ilink_session_timeout(format!(
            "AuthorizationType header must be \"ilink_bot_token\", got {:?}",
            req.header("authorizationtype")
        )));
    }
    let Some(token) = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")) else {
        return Err(Reject::ilink_session_timeout("Authorization header is not \"Bearer <bot_token>\""));
    };
    let token = token.trim();
    if !st.ilink_bots.contains(token) {
        return Err(Reject::ilink_session_timeout("bot token was never issued (or was revoked)"));
    }
    Ok(token.to_owned())
}

fn check_content_type(req: &Req) -> Result<(), Reject> {
    let media_type = req.header("content-type").and_then(|c| c.split(';').next()).map(str::trim);
    if media_type.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        Ok(())
    } else {
        Err(Reject::ilink_invalid(format!(
            "Content-Type must be application/json, got {:?}",
            req.header("content-type")
        )))
    }
}

/// `X-WECHAT-UIN`: base64 of the decimal text of a random u32, fresh per request. A value equal to
/// the previous request's is reported (the request still goes through: the service would not
/// notice, but the client is not doing what the official one does).
fn check_uin(st: &mut State, req: &Req) -> Result<(), Reject> {
    let Some(uin) = req.header("x-wechat-uin") else {
        return Err(Reject::ilink_invalid("X-WECHAT-UIN header is missing"));
    };
    let previous = st.last_uin.replace(uin.to_owned());
    if previous.as_deref() == Some(uin) {
        st.problems.push(format!(
            "{} {}: X-WECHAT-UIN {uin:?} reused from the previous request (must be fresh per request)",
            req.method, req.path
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(uin)
        .map_err(|e| Reject::ilink_invalid(format!("X-WECHAT-UIN {uin:?} is not base64: {e}")))?;
    let digits = (1..=10).contains(&decoded.len()) && decoded.iter().all(u8::is_ascii_digit);
    let value = std::str::from_utf8(&decoded).ok().and_then(|s| s.parse::<u64>().ok());
    match value {
        Some(v) if digits && v <= u64::from(u32::MAX) => Ok(()),
        _ => Err(Reject::ilink_invalid(format!("X-WECHAT-UIN {uin:?} does not decode to the decimal text of a u32"))),
    }
}

/// The fixed fields of a bot message (§5.1) and its single item: text here, media in
/// `ilink_upload` (which needs the uploads).
fn check_msg_shape(msg: &Map<String, Value>) -> Result<(), Reject> {
    if msg.get("from_user_id") != Some(&json!("")) {
        return Err(Reject::ilink_invalid(format!(
            "msg.from_user_id must be \"\", got {}",
            show(msg.get("from_user_id"))
        )));
    }
    match msg.get("to_user_id") {
        Some(Value::String(u)) if !u.is_empty() => {}
        other => {
            return Err(Reject::ilink_invalid(format!(
                "msg.to_user_id must be a non-empty string, got {}",
                show(other)
            )))
        }
    }
    match msg.get("client_id") {
        Some(Value::String(c)) if !c.is_empty() => {}
        other => {
            return Err(Reject::ilink_invalid(format!("msg.client_id must be a non-empty string, got {}", show(other))))
        }
    }
    for (field, want) in [("message_type", 2), ("message_state", 2)] {
        if msg.get(field).and_then(Value::as_i64) != Some(want) {
            return Err(Reject::ilink_invalid(format!("msg.{field} must be {want}, got {}", show(msg.get(field)))));
        }
    }
    let items = match msg.get("item_list") {
        Some(Value::Array(items)) if items.len() == 1 => items,
        Some(Value::Array(items)) => {
            return Err(Reject::ilink_invalid(format!("msg.item_list must hold exactly one item, got {}", items.len())))
        }
        other => return Err(Reject::ilink_invalid(format!("msg.item_list must be an array, got {}", show(other)))),
    };
    let item = &items[0];
    match item.get("type").and_then(Value::as_i64) {
        Some(1) => {}
        Some(2..=5) => return Ok(()),
        _ => {
            return Err(Reject::ilink_invalid(format!(
                "item type {} is not one of 1 (text), 2 (image), 3 (voice), 4 (file), 5 (video)",
                show(item.get("type"))
            )))
        }
    }
    match item.get("text_item").and_then(|t| t.get("text")) {
        Some(Value::String(t)) if !t.is_empty() => Ok(()),
        other => Err(Reject::ilink_invalid(format!("text_item.text must be a non-empty string, got {}", show(other)))),
    }
}

fn cursor_of(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("v1:{offset}"))
}

fn offset_of(cursor: &str) -> Option<usize> {
    if cursor.is_empty() {
        return Some(0);
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(cursor).ok()?;
    String::from_utf8(raw).ok()?.strip_prefix("v1:")?.parse().ok()
}

/// Checks a `getupdates` request once (headers, auth, body); returns the bot token and the
/// cursor's offset into the bot's queue. A stale cursor replays what came after it.
pub(crate) fn getupdates_open(st: &mut State, req: &Req) -> Result<(String, usize), Reject> {
    let (token, body) = bot_post(st, req)?;
    let cursor = match body.get("get_updates_buf") {
        Some(Value::String(c)) => c.clone(),
        other => return Err(Reject::ilink_invalid(format!("get_updates_buf must be a string, got {}", show(other)))),
    };
    let offset = offset_of(&cursor).ok_or_else(|| Reject::ilink_invalid(format!("unknown cursor {cursor:?}")))?;
    Ok((token, offset))
}

/// One look at the bot's queue: `None` while an empty poll should keep holding.
pub(crate) fn getupdates_answer(st: &mut State, token: &str, offset: usize, give_up: bool) -> Option<Response> {
    let now = std::time::Instant::now();
    let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut st.ilink_pending).into_iter().partition(|p| p.0 <= now);
    st.ilink_pending = waiting;
    for (_, bot, message) in due {
        st.ilink_updates.entry(bot).or_default().push(message);
    }
    let queue = st.ilink_updates.get(token).map(Vec::as_slice).unwrap_or_default();
    let hold_ms = st.ilink_hold.as_millis() as u64;
    if offset < queue.len() {
        let msgs = &queue[offset..];
        return Some(ilink_json(
            &json!({"ret": 0, "msgs": msgs, "get_updates_buf": cursor_of(queue.len()), "longpolling_timeout_ms": hold_ms}),
        ));
    }
    give_up.then(|| {
        ilink_json(
            &json!({"ret": 0, "msgs": [], "get_updates_buf": cursor_of(offset.min(queue.len())), "longpolling_timeout_ms": hold_ms}),
        )
    })
}

/// Queues an inbound message (and its re-delivery, when that is on). A user message issues its
/// `context_token`: from now on, only that one lets the bot reply to the user.
pub(crate) fn push(st: &mut State, bot_token: &str, message: Value) {
    let from_user = message.get("from_user_id").and_then(Value::as_str);
    let context = message.get("context_token").and_then(Value::as_str);
    if let (Some(user), Some(context), Some(1)) =
        (from_user, context, message.get("message_type").and_then(Value::as_i64))
    {
        st.ilink_users.insert((bot_token.to_owned(), user.to_owned()), context.to_owned());
    }
    if let Some(after) = st.ilink_redeliver {
        st.ilink_pending.push((std::time::Instant::now() + after, bot_token.to_owned(), message.clone()));
    }
    st.ilink_updates.entry(bot_token.to_owned()).or_default().push(message);
}
