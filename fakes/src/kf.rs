//! 微信客服 (wecom-kf.md §2–§6): the items a kf account's customers and servicers produce,
//! pulled with `kf/sync_msg`, the welcome of `kf/send_msg_on_event`, and `kf/send_msg`.
//!
//! * Callback tokens (`FakeWechat::kf_callback_token`) live 10 minutes; `sync_msg` with an
//!   unknown or expired one answers 95007. A pull without one works and is counted
//!   (`kf_tokenless_pulls`: the real service rate-limits them strictly).
//! * Cursors are opaque; each names a position in the account's items. A pull without one starts
//!   at the oldest item of the last three days. Pages hold `page_size` items (default 1000); a
//!   test can make the next pulls answer empty pages with `has_more` 1 first, as the service does.
//! * `send_msg_on_event`: a welcome code from an `enter_session` item, used once, within 20 s.
//! * `send_msg`: text, or an image, voice, video or file the corp uploaded, to a customer of
//!   the account who wrote in the last 48 h, at most 5 messages per customer message (95002,
//!   95001 otherwise); `msgid` at most 32 characters of `[0-9A-Za-z_-]`, unique in the account.
//!   The errcode of a reused msgid is undocumented; this fake answers [`MSGID_REUSED`] with an
//!   errmsg that names the msgid (the shape of the Official Account's `clientmsgid exist`).

use std::time::{Duration, Instant};

use axum::response::Response;
use serde_json::{json, Value};

use crate::kf_store::KfAccount;
use crate::state::State;
use crate::types::{Api, Delivery};
use crate::wire::{random_alnum, unix_secs, wechat_json, Reject, Req};

/// WeChat keeps this much history for `sync_msg`.
const HISTORY_S: u64 = 3 * 24 * 3600;
const TOKEN_LIFE: Duration = Duration::from_secs(600);
const WELCOME_CODE_LIFE: Duration = Duration::from_secs(20);
const WINDOW_S: u64 = 48 * 3600;
const MESSAGES_PER_CUSTOMER_MESSAGE: u32 = 5;
/// What this fake answers a `send_msg` whose msgid the account used before (the real errcode
/// is undocumented: a test must not depend on the number, only on the refusal).
pub const MSGID_REUSED: i64 = 95099;

fn cursor_of(position: usize) -> String {
    format!("kfc{position:08}x{}", random_alnum(6))
}

fn position_of(cursor: &str) -> Option<usize> {
    cursor.strip_prefix("kfc")?.get(..8)?.parse().ok()
}

/// The account `open_kfid` of the caller's corp, or the refusal.
fn account<'a>(st: &'a mut State, req: &Req, open_kfid: Option<&str>) -> Result<&'a mut KfAccount, Reject> {
    let (corp_id, _) = st.wecom_caller(req.query("access_token"))?;
    let open_kfid = open_kfid.ok_or_else(|| Reject::code(95000, "open_kfid is missing"))?;
    match st.kf.accounts.get_mut(open_kfid) {
        Some(account) if account.corp_id == corp_id => Ok(account),
        _ => Err(Reject::code(95004, format!("open_kfid {open_kfid:?} is not a kf account of this corp"))),
    }
}

/// `POST /cgi-bin/kf/sync_msg?access_token=` `{cursor?, token?, limit?, voice_format?, open_kfid}`.
pub(crate) fn sync_msg(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let body = req.json_object()?;
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let limit = match body.get("limit") {
        None => 1000,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1000) => n as usize,
            _ => return Err(Reject::code(40058, "limit must be 1 to 1000")),
        },
    };
    let page_size = st.kf.page_size.min(limit);
    let token = text("token");
    if token.is_none() {
        st.kf.tokenless_pulls += 1;
    }
    let now_unix = unix_secs();
    let account = account(st, req, text("open_kfid").as_deref())?;
    if let Some(token) = &token {
        match account.tokens.get(token) {
            Some(until) if *until > Instant::now() => {}
            _ => return Err(Reject::code(95007, "invalid msg token (unknown, or older than 10 minutes)")),
        }
    }
    let start = match text("cursor") {
        Some(cursor) => position_of(&cursor)
            .filter(|p| *p <= account.items.len())
            .ok_or_else(|| Reject::code(40058, format!("cursor {cursor:?} was not issued by sync_msg")))?,
        None => account
            .items
            .iter()
            .position(|item| item["send_time"].as_u64().unwrap_or(0) + HISTORY_S >= now_unix)
            .unwrap_or(account.items.len()),
    };
    if account.empty_pages > 0 {
        account.empty_pages -= 1;
        return Ok(wechat_json(
            &json!({"errcode": 0, "errmsg": "ok", "next_cursor": cursor_of(start), "has_more": 1, "msg_list": []}),
        ));
    }
    let end = (start + page_size).min(account.items.len());
    let list: Vec<Value> = account.items[start..end].to_vec();
    let has_more = u8::from(end < account.items.len());
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok", "next_cursor": cursor_of(end), "has_more": has_more,
                           "msg_list": list})))
}

/// `POST /cgi-bin/kf/send_msg_on_event?access_token=` `{code, msgid?, msgtype: "text", text}`.
pub(crate) fn send_msg_on_event(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let (corp_id, _) = st.wecom_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    let code = body.get("code").and_then(Value::as_str).unwrap_or_default().to_owned();
    check_msgid(&body)?;
    check_text(&body)?;
    let found =
        st.kf.accounts.values_mut().filter(|a| a.corp_id == corp_id).find_map(|a| a.welcome_codes.get_mut(&code));
    match found {
        Some((until, used)) if !*used && *until > Instant::now() => *used = true,
        Some((_, true)) => return Err(Reject::code(40058, "the code was used already (a code works once)")),
        Some(_) => return Err(Reject::code(40058, "the code is older than 20 s")),
        None => return Err(Reject::code(40058, format!("code {code:?} was not issued"))),
    }
    st.deliveries.push(Delivery::new(Api::KfEvent, corp_id, Value::Object(body.clone())));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok", "msgid": body.get("msgid").cloned().unwrap_or(Value::Null)})))
}

/// `POST /cgi-bin/kf/service_state/get?access_token=` `{open_kfid, external_userid}`.
pub(crate) fn service_state_get(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let body = req.json_object()?;
    let open_kfid = body.get("open_kfid").and_then(Value::as_str).map(str::to_owned);
    let user = body.get("external_userid").and_then(Value::as_str).unwrap_or_default().to_owned();
    let account = account(st, req, open_kfid.as_deref())?;
    let state = account.states.get(&user).copied().unwrap_or(0);
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok", "service_state": state, "servicer_userid": ""})))
}

/// `POST /cgi-bin/kf/service_state/trans?access_token=` `{open_kfid, external_userid,
/// service_state, servicer_userid?}`: 0 → 1, 2, 3; 1 → 2, 3; 2 → 3; 3 → 3, 4 (wecom-kf.md §5).
pub(crate) fn service_state_trans(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let body = req.json_object()?;
    let open_kfid = body.get("open_kfid").and_then(Value::as_str).map(str::to_owned);
    let user = body.get("external_userid").and_then(Value::as_str).unwrap_or_default().to_owned();
    let to = body.get("service_state").and_then(Value::as_i64).unwrap_or(-1);
    let account = account(st, req, open_kfid.as_deref())?;
    let from = account.states.get(&user).copied().unwrap_or(0);
    // 3 → 3 hands the session to another servicer.
    let allowed = matches!((from, to), (0, 1..=3) | (1, 2..=3) | (2, 3) | (3, 3..=4));
    if !allowed {
        return Err(Reject::code(95014, format!("a session in state {from} cannot move to {to}")));
    }
    account.states.insert(user, to);
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

/// `POST /cgi-bin/kf/send_msg?access_token=` `{touser, open_kfid, msgid?, msgtype, <msgtype>}`.
pub(crate) fn send_msg(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let body = req.json_object()?;
    check_msgid(&body)?;
    let corp_id = st.wecom_caller(req.query("access_token"))?.0;
    check_content(st, &corp_id, &body)?;
    let open_kfid = body.get("open_kfid").and_then(Value::as_str).map(str::to_owned);
    let user = body.get("touser").and_then(Value::as_str).unwrap_or_default().to_owned();
    let msgid = body.get("msgid").and_then(Value::as_str).map(str::to_owned);
    let account = account(st, req, open_kfid.as_deref())?;
    if let Some(id) = msgid.as_ref().filter(|id| account.msgids.contains(*id)) {
        return Err(Reject::code(MSGID_REUSED, format!("msgid exist: {id} was used in this kf account")));
    }
    let now = unix_secs();
    // Only a new session (0) or the API's (1) takes API messages; sending makes it the API's.
    match account.states.get(&user).copied().unwrap_or(0) {
        0 | 1 => {}
        state => return Err(Reject::code(95018, format!("send msg session status invalid (state {state})"))),
    }
    match account.customers.get_mut(&user) {
        Some((last, _)) if *last + WINDOW_S < now => {
            return Err(Reject::code(95002, "the customer last wrote more than 48 h ago"))
        }
        Some((_, sent)) if *sent >= MESSAGES_PER_CUSTOMER_MESSAGE => {
            return Err(Reject::code(95001, "5 messages were sent since the customer's last message"))
        }
        Some((_, sent)) => *sent += 1,
        None => return Err(Reject::code(95024, format!("{user:?} has not written to this kf account"))),
    }
    account.states.insert(user, 1);
    account.msgids.extend(msgid);
    st.deliveries.push(Delivery::new(Api::KfSend, corp_id, Value::Object(body.clone())));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok", "msgid": body.get("msgid").cloned().unwrap_or(Value::Null)})))
}

fn check_msgid(body: &serde_json::Map<String, Value>) -> Result<(), Reject> {
    match body.get("msgid") {
        None => Ok(()),
        Some(Value::String(id))
            if !id.is_empty()
                && id.len() <= 32
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(())
        }
        Some(other) => Err(Reject::code(40058, format!("msgid must be 1-32 characters of [0-9A-Za-z_-], got {other}"))),
    }
}

/// Text, or a file message naming a media id the corp uploaded, of the message's type.
fn check_content(st: &State, corp_id: &str, body: &serde_json::Map<String, Value>) -> Result<(), Reject> {
    match body.get("msgtype").and_then(Value::as_str) {
        Some(kind @ ("image" | "voice" | "video" | "file")) => {
            let media_id = body.get(kind).and_then(|m| m.get("media_id")).and_then(Value::as_str);
            let media_id = media_id.ok_or_else(|| Reject::code(40007, format!("{kind}.media_id is missing")))?;
            let wanted = (kind != "file").then_some(kind);
            let at = format!("{kind}.media_id");
            crate::media::check_sendable(st, crate::media_store::Platform::Wecom, corp_id, &at, media_id, wanted)
        }
        _ => check_text(body),
    }
}

fn check_text(body: &serde_json::Map<String, Value>) -> Result<(), Reject> {
    if body.get("msgtype").and_then(Value::as_str) != Some("text") {
        return Err(Reject::code(40008, "msgtype must be text, image, voice, video or file here"));
    }
    match body.get("text").and_then(|t| t.get("content")).and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= 2048 => Ok(()),
        _ => Err(Reject::code(44004, "text.content must be 1-2048 bytes")),
    }
}

/// Adds an item; a customer's (origin 3) opens their 48 h window and resets their count.
pub(crate) fn push(st: &mut State, open_kfid: &str, item: Value) {
    let Some(account) = st.kf.accounts.get_mut(open_kfid) else {
        panic!("no kf account {open_kfid}: add_kf_account first")
    };
    if item["origin"] == 3 {
        if let Some(user) = item["external_userid"].as_str() {
            account.customers.insert(user.to_owned(), (item["send_time"].as_u64().unwrap_or(0), 0));
            // A customer writing after their session ended opens a new one.
            if account.states.get(user) == Some(&4) {
                account.states.insert(user.to_owned(), 0);
            }
        }
    }
    if let Some(code) = item["event"]["welcome_code"].as_str() {
        account.welcome_codes.insert(code.to_owned(), (Instant::now() + WELCOME_CODE_LIFE, false));
    }
    account.items.push(item);
}

/// A fresh callback token for `open_kfid`, valid 10 minutes.
pub(crate) fn callback_token(st: &mut State, open_kfid: &str) -> String {
    let token = format!("ENC{}", random_alnum(44));
    let Some(account) = st.kf.accounts.get_mut(open_kfid) else {
        panic!("no kf account {open_kfid}: add_kf_account first")
    };
    account.tokens.insert(token.clone(), Instant::now() + TOKEN_LIFE);
    token
}
