//! WeCom (企业微信): `gettoken`, app messages (`message/send`) and app group chats
//! (`appchat/create|get|send`), checked as wecom.md §4, §5 and §7 describe.
//!
//! The message-object checks live here too because the group robot (robot.rs) shares them with
//! different limits.

use serde_json::{json, Map, Value};

use crate::media;
use crate::media_store::Platform;
use crate::state::{AppChat, State};
use crate::types::{Api, Delivery};
use crate::upload;
use crate::wire::{kind, random_alnum, random_string, wechat_json, Reject, Req};
use axum::response::Response;

type Object = Map<String, Value>;

/// Bytes allowed in `text.content` / `markdown.content` of app and appchat messages.
pub(crate) const APP_CONTENT_MAX: usize = 2048;

const APP_MSGTYPES: &[&str] =
    &["text", "markdown", "image", "voice", "video", "file", "news", "textcard", "template_card"];
const APPCHAT_MSGTYPES: &[&str] = &["text", "markdown", "image", "voice", "video", "file", "news", "textcard"];
const APP_CARD_TYPES: &[&str] =
    &["text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"];

/// `GET /cgi-bin/gettoken?corpid=&corpsecret=`: one token per app secret, the same one again while
/// it is valid.
pub(crate) fn gettoken(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_get()?;
    let corp_id = non_empty(req.query("corpid")).ok_or_else(|| Reject::code(41002, "corpid is missing"))?;
    let secret = non_empty(req.query("corpsecret")).ok_or_else(|| Reject::code(41004, "corpsecret is missing"))?;
    if !st.wecom_apps.iter().any(|a| a.corp_id == corp_id) {
        return Err(Reject::code(40013, format!("corpid {corp_id:?} is not a known corp")));
    }
    let index = st
        .wecom_apps
        .iter()
        .position(|a| a.corp_id == corp_id && a.secret == secret)
        .ok_or_else(|| Reject::code(40001, format!("corpsecret is not the secret of any app of {corp_id}")))?;
    let (token, expires_in) = st.wecom_token_for(index);
    Ok(wechat_json(&json!({
        "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in
    })))
}

/// `POST /cgi-bin/message/send?access_token=`: an app message to users, parties or tags.
pub(crate) fn message_send(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let (corp_id, agent_id) = st.wecom_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    match body.get("agentid") {
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(agent_id)) => {}
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
            return Err(Reject::code(
                40056,
                format!("agentid {n} is not the app that owns the access_token (agentid {agent_id})"),
            ))
        }
        Some(other) => {
            return Err(Reject::code(40056, format!("agentid must be an integer, got {} {other}", kind(other))))
        }
        None => return Err(Reject::code(40056, "agentid is missing")),
    }
    let msgtype = msgtype(&body, APP_MSGTYPES)?;
    check_app_object(st, &corp_id, &body, msgtype, APP_CARD_TYPES)?;

    let touser = target_field(&body, "touser")?;
    let toparty = target_field(&body, "toparty")?;
    let totag = target_field(&body, "totag")?;
    if touser.is_empty() && toparty.is_empty() && totag.is_empty() {
        return Err(Reject::code(40003, "touser, toparty and totag are all empty"));
    }
    let mut answer = json!({"errcode": 0, "errmsg": "ok"});
    let all = touser.trim() == "@all";
    let mut valid = 0usize;
    let mut invalid_users = Vec::new();
    if !all {
        for user in touser.split('|').filter(|u| !u.is_empty()) {
            if st.knows_wecom_user(user) {
                valid += 1;
            } else {
                invalid_users.push(user);
            }
        }
        // The fake's directory has no departments or tags, so every one given is invalid.
        if !toparty.is_empty() {
            answer["invalidparty"] = Value::from(toparty);
        }
        if !totag.is_empty() {
            answer["invalidtag"] = Value::from(totag);
        }
    }
    if !all && valid == 0 {
        return Err(Reject::code(
            81013,
            format!("no valid recipient: touser {touser:?}, toparty {toparty:?}, totag {totag:?}"),
        ));
    }
    answer["invaliduser"] = Value::from(invalid_users.join("|"));
    answer["msgid"] = Value::from(random_string(48));
    // With `enable_duplicate_check`, the same content to the same targets within the interval
    // (default 1800 s, at most 4 h) is accepted and not delivered again.
    let same = format!(
        "{corp_id}|{agent_id}|{touser}|{toparty}|{totag}|{msgtype}|{}",
        body.get(msgtype).cloned().unwrap_or_default()
    );
    let now = std::time::Instant::now();
    if body.get("enable_duplicate_check").and_then(Value::as_i64) == Some(1) {
        let interval = body.get("duplicate_check_interval").and_then(Value::as_u64).unwrap_or(1800);
        if interval > 14_400 {
            return Err(Reject::code(40058, format!("duplicate_check_interval {interval} is over 4 hours")));
        }
        let window = std::time::Duration::from_secs(interval);
        if st.wecom_sent.iter().any(|(key, at)| *key == same && now.duration_since(*at) < window) {
            return Ok(wechat_json(&answer));
        }
    }
    st.wecom_sent.push((same, now));
    st.deliveries.push(Delivery::new(Api::WecomMessage, corp_id, Value::Object(body)));
    Ok(wechat_json(&answer))
}

/// `POST /cgi-bin/appchat/send?access_token=`: a message to a group chat the corp created.
pub(crate) fn appchat_send(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let (corp_id, _) = st.wecom_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    let chat_id = match body.get("chatid") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(other) if !other.is_null() => {
            return Err(Reject::code(86001, format!("chatid must be a string, got {}", kind(other))))
        }
        _ => return Err(Reject::code(86001, "chatid is missing")),
    };
    if !st.appchats.contains_key(chat_id) {
        return Err(Reject::code(86003, format!("chat {chat_id:?} does not exist")));
    }
    let msgtype = msgtype(&body, APPCHAT_MSGTYPES)?;
    check_app_object(st, &corp_id, &body, msgtype, &[])?;
    st.deliveries.push(Delivery::new(Api::WecomAppchat, corp_id, Value::Object(body)));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

/// `POST /cgi-bin/appchat/create?access_token=`: at least two known members, optional chatid.
pub(crate) fn appchat_create(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    st.wecom_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    let members: Vec<String> = match body.get("userlist") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| Reject::code(40058, "userlist must hold only strings"))?,
        Some(other) => return Err(Reject::code(40058, format!("userlist must be an array, got {}", kind(other)))),
        None => return Err(Reject::code(40058, "userlist is missing")),
    };
    if members.len() < 2 {
        return Err(Reject::code(86216, format!("a chat needs at least 2 members, got {}", members.len())));
    }
    if let Some(unknown) = members.iter().find(|m| !st.knows_wecom_user(m)) {
        return Err(Reject::code(86216, format!("member {unknown:?} is not a known user")));
    }
    let owner = match body.get("owner") {
        None | Some(Value::Null) => members[0].clone(),
        Some(Value::String(o)) if members.contains(o) => o.clone(),
        Some(other) => return Err(Reject::code(86216, format!("owner {other} is not one of the members"))),
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(n)) => n.clone(),
        Some(other) => return Err(Reject::code(40058, format!("name must be a string, got {}", kind(other)))),
    };
    let chat_id = match body.get("chatid") {
        None | Some(Value::Null) => random_alnum(24),
        Some(Value::String(id)) if (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            id.clone()
        }
        Some(other) => {
            return Err(Reject::code(86001, format!("chatid {other} is not 1-32 characters of [0-9a-zA-Z]")))
        }
    };
    if st.appchats.contains_key(&chat_id) {
        return Err(Reject::code(86215, format!("chat {chat_id:?} already exists")));
    }
    st.appchats.insert(chat_id.clone(), AppChat { name, owner, members });
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok", "chatid": chat_id})))
}

/// `GET /cgi-bin/appchat/get?access_token=&chatid=`.
pub(crate) fn appchat_get(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_get()?;
    st.wecom_caller(req.query("access_token"))?;
    let chat_id = non_empty(req.query("chatid")).ok_or_else(|| Reject::code(86001, "chatid is missing"))?;
    let chat =
        st.appchats.get(chat_id).ok_or_else(|| Reject::code(86003, format!("chat {chat_id:?} does not exist")))?;
    Ok(wechat_json(&json!({
        "errcode": 0, "errmsg": "ok",
        "chat_info": {
            "chatid": chat_id, "name": chat.name, "owner": chat.owner,
            "userlist": chat.members, "chat_type": 0
        }
    })))
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// A target list (`touser`/`toparty`/`totag`): absent or null is empty, anything but a string is
/// a client bug.
fn target_field<'a>(body: &'a Object, key: &str) -> Result<&'a str, Reject> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Reject::code(40058, format!("{key} must be a '|'-separated string, got {}", kind(other)))),
    }
}

/// `msgtype` must be a string naming one of `allowed`.
pub(crate) fn msgtype<'a>(body: &'a Object, allowed: &[&str]) -> Result<&'a str, Reject> {
    match body.get("msgtype") {
        Some(Value::String(t)) if allowed.contains(&t.as_str()) => Ok(t),
        Some(Value::String(t)) => {
            Err(Reject::code(40008, format!("msgtype {t:?} is not one of {allowed:?} on this endpoint")))
        }
        Some(other) => Err(Reject::code(40008, format!("msgtype must be a string, got {}", kind(other)))),
        None => Err(Reject::code(40008, "msgtype is missing")),
    }
}

/// The object named after the msgtype, with the fields app and appchat messages require. A
/// `media_id` must be one the corp uploaded (or a test added), not expired, of the message's type
/// (`file` takes any): 40007 otherwise.
fn check_app_object(
    st: &State,
    corp_id: &str,
    body: &Object,
    msgtype: &str,
    card_types: &[&str],
) -> Result<(), Reject> {
    match msgtype {
        "text" | "markdown" => check_content(body, msgtype, APP_CONTENT_MAX),
        "image" | "voice" | "video" | "file" => {
            let media_id = media_id(body, msgtype)?;
            let wanted = (msgtype != "file").then_some(msgtype);
            media::check_sendable(st, Platform::Wecom, corp_id, &format!("{msgtype}.media_id"), media_id, wanted)?;
            if msgtype == "video" {
                check_video_texts(body)?;
            }
            Ok(())
        }
        "news" => check_news(body, 8),
        "textcard" => check_textcard(body),
        "template_card" => check_template_card(body, card_types),
        // msgtype() already limited the set.
        other => Err(Reject::code(40008, format!("msgtype {other:?} is not handled"))),
    }
}

/// The object `key` of `body`. Absent/null answers `missing_code`; a non-object 40058.
pub(crate) fn sub_object<'a>(body: &'a Object, key: &str, missing_code: i64) -> Result<&'a Object, Reject> {
    match body.get(key) {
        Some(Value::Object(o)) => Ok(o),
        None | Some(Value::Null) => Err(Reject::code(missing_code, format!("{key} object is missing"))),
        Some(other) => Err(Reject::code(40058, format!("{key} must be an object, got {}", kind(other)))),
    }
}

/// `<msgtype>.content`: a non-empty string of at most `max_bytes` UTF-8 bytes.
pub(crate) fn check_content(body: &Object, msgtype: &str, max_bytes: usize) -> Result<(), Reject> {
    let obj = sub_object(body, msgtype, 44004)?;
    match obj.get("content") {
        Some(Value::String(s)) if s.is_empty() => Err(Reject::code(44004, format!("{msgtype}.content is empty"))),
        Some(Value::String(s)) if s.len() > max_bytes => {
            Err(Reject::code(45002, format!("{msgtype}.content is {} bytes, the limit is {max_bytes}", s.len())))
        }
        Some(Value::String(_)) => Ok(()),
        None | Some(Value::Null) => Err(Reject::code(44004, format!("{msgtype}.content is missing"))),
        Some(other) => Err(Reject::code(40058, format!("{msgtype}.content must be a string, got {}", kind(other)))),
    }
}

/// `<msgtype>.media_id`: a non-empty string.
pub(crate) fn media_id<'a>(body: &'a Object, msgtype: &str) -> Result<&'a str, Reject> {
    let obj = sub_object(body, msgtype, 40007)?;
    match obj.get("media_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(Reject::code(40007, format!("{msgtype}.media_id is missing or empty")))
        }
        Some(other) => Err(Reject::code(40007, format!("{msgtype}.media_id must be a string, got {}", kind(other)))),
    }
}

/// `video.title` / `video.description`: optional strings.
fn check_video_texts(body: &Object) -> Result<(), Reject> {
    let video = sub_object(body, "video", 40007)?;
    for field in ["title", "description"] {
        match video.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(Reject::code(40058, format!("video.{field} must be a string, got {}", kind(other))))
            }
        }
    }
    Ok(())
}

/// `news.articles`: 1..=`max` objects, each with a non-empty `title` and `url`.
pub(crate) fn check_news(body: &Object, max: usize) -> Result<(), Reject> {
    let news = sub_object(body, "news", 44003)?;
    let articles = match news.get("articles") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(Reject::code(44003, "news.articles is missing")),
        Some(other) => return Err(Reject::code(40058, format!("news.articles must be an array, got {}", kind(other)))),
    };
    if articles.is_empty() {
        return Err(Reject::code(44003, "news.articles is empty"));
    }
    if articles.len() > max {
        return Err(Reject::code(45008, format!("news has {} articles, the limit is {max}", articles.len())));
    }
    for (i, article) in articles.iter().enumerate() {
        let Value::Object(article) = article else {
            return Err(Reject::code(40058, format!("news.articles[{i}] must be an object")));
        };
        for field in ["title", "url"] {
            require_string(article, field, &format!("news.articles[{i}]"), None)?;
        }
    }
    Ok(())
}

/// `textcard`: `title` ≤ 128 bytes, `description` ≤ 512 bytes, `url`, optional `btntxt`.
fn check_textcard(body: &Object) -> Result<(), Reject> {
    let card = sub_object(body, "textcard", 40058)?;
    require_string(card, "title", "textcard", Some(128))?;
    require_string(card, "description", "textcard", Some(512))?;
    require_string(card, "url", "textcard", None)?;
    match card.get("btntxt") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(Reject::code(40058, format!("textcard.btntxt must be a string, got {}", kind(other)))),
    }
}

/// `template_card.card_type`: one of the types this endpoint supports.
pub(crate) fn check_template_card(body: &Object, card_types: &[&str]) -> Result<(), Reject> {
    let card = sub_object(body, "template_card", 40058)?;
    match card.get("card_type") {
        Some(Value::String(t)) if card_types.contains(&t.as_str()) => Ok(()),
        Some(Value::String(t)) => {
            Err(Reject::code(40058, format!("template_card.card_type {t:?} is not one of {card_types:?}")))
        }
        _ => Err(Reject::code(40058, "template_card.card_type must be a string")),
    }
}

/// `obj.field` must be a non-empty string (of at most `max` bytes): 40058 / 45002 otherwise.
fn require_string(obj: &Object, field: &str, at: &str, max: Option<usize>) -> Result<(), Reject> {
    match obj.get(field) {
        Some(Value::String(s)) if s.is_empty() => Err(Reject::code(40058, format!("{at}.{field} is empty"))),
        Some(Value::String(s)) => match max {
            Some(max) if s.len() > max => {
                Err(Reject::code(45002, format!("{at}.{field} is {} bytes, the limit is {max}", s.len())))
            }
            _ => Ok(()),
        },
        None | Some(Value::Null) => Err(Reject::code(40058, format!("{at}.{field} is missing"))),
        Some(other) => Err(Reject::code(40058, format!("{at}.{field} must be a string, got {}", kind(other)))),
    }
}

/// `POST /cgi-bin/appchat/update?access_token=`: only chats that exist; added members must be known.
pub(crate) fn appchat_update(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    st.wecom_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    let chat_id = body.get("chatid").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !st.appchats.contains_key(&chat_id) {
        return Err(Reject::code(86003, format!("chat {chat_id:?} does not exist")));
    }
    let list = |key: &str| -> Result<Vec<String>, Reject> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| Reject::code(40058, format!("{key} holds a non-string")))
                })
                .collect(),
            Some(other) => Err(Reject::code(40058, format!("{key} must be an array, got {}", kind(other)))),
        }
    };
    let (add, remove) = (list("add_user_list")?, list("del_user_list")?);
    if let Some(unknown) = add.iter().find(|u| !st.knows_wecom_user(u)) {
        return Err(Reject::code(86216, format!("user {unknown:?} is not a member of the corp")));
    }
    let chat = st.appchats.get_mut(&chat_id).ok_or_else(|| Reject::code(86003, "chat vanished"))?;
    chat.members.retain(|m| !remove.contains(m));
    for user in add {
        if !chat.members.contains(&user) {
            chat.members.push(user);
        }
    }
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        chat.name = name.to_owned();
    }
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

/// `POST /cgi-bin/media/upload?access_token=&type=`: temporary media for app messages, kept for
/// the token's corp (upload.rs).
pub(crate) fn media_upload(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    // The Official Account's API has the same path on its own host.
    let owner = req.query("access_token").and_then(|t| st.tokens.get(t)).map(|t| &t.owner);
    if matches!(owner, Some(crate::state::Owner::Oa { .. })) {
        return crate::oa::media_upload(st, req).map_err(|reject| reject.in_family(crate::wire::Family::Oa));
    }
    let (corp_id, _) = st.wecom_caller(req.query("access_token"))?;
    upload::store(st, req, Platform::Wecom, &corp_id, upload::WECOM_TYPES)
}
