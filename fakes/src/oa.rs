//! The Official Account (公众号): `stable_token`, customer-service messages and the typing
//! indicator, checked as official-account.md §6, §7 and §9 describe.
//!
//! `GET /cgi-bin/token` is refused on purpose: every call to it rotates the token for every other
//! holder of the AppSecret, which is exactly the bug wxbridge must not have (§6).

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::media;
use crate::media_store::Platform;
use crate::state::State;
use crate::types::{Api, Delivery};
use crate::upload;
use crate::wire::{kind, show, wechat_json, Reject, Req};

type Object = Map<String, Value>;

/// Bytes of `text.content` the customer-service API takes (field reports say ~2048).
const TEXT_MAX: usize = 2048;

/// `POST /cgi-bin/stable_token` `{"grant_type","appid","secret","force_refresh"}`.
pub(crate) fn stable_token(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let body = req.json_object()?;
    match body.get("grant_type") {
        Some(Value::String(g)) if g == "client_credential" => {}
        other => {
            return Err(Reject::code(40002, format!("grant_type must be \"client_credential\", got {}", show(other))))
        }
    }
    let app_id = string_field(&body, "appid").ok_or_else(|| Reject::code(41002, "appid is missing"))?;
    let secret = string_field(&body, "secret").ok_or_else(|| Reject::code(41004, "secret is missing"))?;
    let force = match body.get("force_refresh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Reject::code(47001, format!("force_refresh must be a boolean, got {}", kind(other))))
        }
    };
    let app = st
        .oa_apps
        .get(app_id)
        .ok_or_else(|| Reject::code(40013, format!("appid {app_id:?} is not a known account")))?;
    if app.secret != secret {
        return Err(Reject::code(40125, format!("secret is not the AppSecret of {app_id}")));
    }
    let (token, expires_in) = st.oa_token_for(app_id, force);
    Ok(wechat_json(&json!({"access_token": token, "expires_in": expires_in})))
}

/// `GET /cgi-bin/token`: refused and reported, see the module doc.
pub(crate) fn plain_token(_st: &mut State, _req: &Req) -> Result<Response, Reject> {
    Err(Reject::Errcode {
        code: 48001,
        errmsg: Some(
            "api unauthorized: this fake refuses cgi-bin/token because each call rotates the token \
             for every other caller; use POST cgi-bin/stable_token with force_refresh false"
                .to_owned(),
        ),
        detail: "cgi-bin/token must not be used; use cgi-bin/stable_token".to_owned(),
    })
}

/// `POST /cgi-bin/message/custom/send?access_token=` — text, image or a one-article news.
pub(crate) fn custom_send(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let app_id = st.oa_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    check_touser(st, &body)?;
    match body.get("msgtype") {
        Some(Value::String(t)) if t == "text" => check_text(&body)?,
        Some(Value::String(t)) if matches!(t.as_str(), "image" | "voice" | "video") => {
            check_media(st, &app_id, &body, t)?
        }
        Some(Value::String(t)) if t == "news" => check_news(&body)?,
        other => {
            return Err(Reject::code(
                40008,
                format!("msgtype must be \"text\", \"image\", \"voice\", \"video\" or \"news\", got {}", show(other)),
            ))
        }
    }
    st.deliveries.push(Delivery::new(Api::OaCustom, app_id, Value::Object(body)));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

/// `POST /cgi-bin/message/custom/typing?access_token=` `{"touser","command"}`.
pub(crate) fn typing(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let app_id = st.oa_caller(req.query("access_token"))?;
    let body = req.json_object()?;
    check_touser(st, &body)?;
    match body.get("command") {
        Some(Value::String(c)) if c == "Typing" || c == "CancelTyping" => {}
        other => {
            return Err(Reject::code(
                45072,
                format!("command must be \"Typing\" or \"CancelTyping\", got {}", show(other)),
            ))
        }
    }
    st.deliveries.push(Delivery::new(Api::OaTyping, app_id, Value::Object(body)));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

fn check_touser(st: &State, body: &Object) -> Result<(), Reject> {
    match body.get("touser") {
        Some(Value::String(u)) if st.open_directory || st.oa_users.contains(u) => Ok(()),
        Some(Value::String(u)) => Err(Reject::code(40003, format!("touser {u:?} is not a known OpenID"))),
        other => Err(Reject::code(40003, format!("touser must be an OpenID string, got {}", show(other)))),
    }
}

fn check_text(body: &Object) -> Result<(), Reject> {
    let text = object(body, "text", 44004)?;
    match text.get("content") {
        Some(Value::String(s)) if s.is_empty() => Err(Reject::code(44004, "text.content is empty")),
        Some(Value::String(s)) if s.len() > TEXT_MAX => {
            Err(Reject::code(45002, format!("text.content is {} bytes, the limit is {TEXT_MAX}", s.len())))
        }
        Some(Value::String(_)) => Ok(()),
        other => Err(Reject::code(44004, format!("text.content must be a string, got {}", show(other)))),
    }
}

/// `<msgtype>.media_id`: one this account uploaded (or a test added), live, of the message's
/// type; 40007 otherwise. A video takes optional `title` and `description` strings and no
/// `thumb_media_id` (reported to fail, media.md §3.5).
fn check_media(st: &State, app_id: &str, body: &Object, msgtype: &str) -> Result<(), Reject> {
    let object = object(body, msgtype, 40007)?;
    let media_id = match object.get("media_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        other => {
            return Err(Reject::code(
                40007,
                format!("{msgtype}.media_id must be a non-empty string, got {}", show(other)),
            ))
        }
    };
    let at = format!("{msgtype}.media_id");
    media::check_sendable(st, Platform::Oa, app_id, &at, media_id, Some(msgtype))?;
    if msgtype == "video" {
        if object.contains_key("thumb_media_id") {
            return Err(Reject::code(40007, "video.thumb_media_id is not taken by customer service"));
        }
        for field in ["title", "description"] {
            match object.get(field) {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(Reject::code(40058, format!("video.{field} must be a string, got {}", kind(other))))
                }
            }
        }
    }
    Ok(())
}

/// `POST /cgi-bin/media/upload?access_token=&type=image|voice|video|thumb` on the Official
/// Account's host: temporary media of the token's account, checked as media.md §3.3 says.
pub(crate) fn media_upload(st: &mut State, req: &Req) -> Result<Response, Reject> {
    let app_id = st.oa_caller(req.query("access_token"))?;
    upload::store(st, req, Platform::Oa, &app_id, upload::OA_TYPES)
}

/// Customer-service news takes exactly one external-link article.
fn check_news(body: &Object) -> Result<(), Reject> {
    let articles = match object(body, "news", 44003)?.get("articles") {
        Some(Value::Array(a)) => a,
        other => return Err(Reject::code(44003, format!("news.articles must be an array, got {}", show(other)))),
    };
    match articles.len() {
        0 => return Err(Reject::code(44003, "news.articles is empty")),
        1 => {}
        n => return Err(Reject::code(45008, format!("news has {n} articles, customer service takes exactly 1"))),
    }
    let Some(Value::Object(article)) = articles.first() else {
        return Err(Reject::code(47001, "news.articles[0] must be an object"));
    };
    for field in ["title", "url"] {
        match article.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            other => {
                return Err(Reject::code(
                    47001,
                    format!("news.articles[0].{field} must be a non-empty string, got {}", show(other)),
                ))
            }
        }
    }
    Ok(())
}

fn object<'a>(body: &'a Object, key: &str, missing_code: i64) -> Result<&'a Object, Reject> {
    match body.get(key) {
        Some(Value::Object(o)) => Ok(o),
        other => Err(Reject::code(missing_code, format!("{key} must be an object, got {}", show(other)))),
    }
}

fn string_field<'a>(body: &'a Object, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}
