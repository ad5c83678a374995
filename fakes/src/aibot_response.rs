//! The AI bot's `response_url` (`POST /cgi-bin/aibot/response?response_code=…`, wecom-aibot.md §5):
//! plain JSON, no access_token, each URL usable **once** within an hour.
//!
//! WeCom documents no errcodes for it; the fake answers made-up ones in WeCom's shape (846601
//! unknown code, 846602 expired, 846603 already used) and the stock WeCom codes for body errors. A
//! refused request does not use the code up.

use std::time::Instant;

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::state::{AibotCode, State};
use crate::types::{Api, Delivery};
use crate::wecom::{check_content, check_template_card, msgtype};
use crate::wire::{random_alnum, wechat_json, Reject, Req};

const MSGTYPES: &[&str] = &["markdown", "template_card"];
const CARD_TYPES: &[&str] =
    &["text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"];
/// `markdown.content`, UTF-8 bytes.
const CONTENT_MAX: usize = 20_480;
/// `markdown.feedback.id`, UTF-8 bytes.
const FEEDBACK_ID_MAX: usize = 256;

const UNKNOWN_CODE: i64 = 846601;
const EXPIRED_CODE: i64 = 846602;
const USED_CODE: i64 = 846603;

/// Issues a new response code, valid for the configured TTL.
pub(crate) fn issue(st: &mut State) -> String {
    let code = random_alnum(48);
    let expires_at = Instant::now() + st.aibot_response_ttl;
    st.aibot_codes.insert(code.clone(), AibotCode { expires_at, used: false });
    code
}

pub(crate) fn response(st: &mut State, req: &Req) -> Result<Response, Reject> {
    req.require_post()?;
    let code = req.query("response_code").unwrap_or_default().to_owned();
    let Some(slot) = st.aibot_codes.get(&code) else {
        return Err(Reject::code(UNKNOWN_CODE, format!("response_code {code:?} was never issued")));
    };
    if slot.used {
        st.aibot_response_refusals += 1;
        return Err(Reject::code(USED_CODE, "response_code was already used: a response_url takes one message"));
    }
    if Instant::now() >= slot.expires_at {
        return Err(Reject::code(EXPIRED_CODE, "response_code has expired (a response_url lives 1 hour)"));
    }
    let content_type = req.header("content-type").unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(Reject::code(47001, format!("Content-Type is {content_type:?}, not application/json")));
    }
    let body = req.json_object()?;
    match msgtype(&body, MSGTYPES)? {
        "markdown" => {
            check_content(&body, "markdown", CONTENT_MAX)?;
            check_feedback(&body)?;
        }
        _ => check_template_card(&body, CARD_TYPES)?,
    }
    if let Some(slot) = st.aibot_codes.get_mut(&code) {
        slot.used = true;
    }
    st.deliveries.push(Delivery::new(Api::AibotResponse, code, Value::Object(body)));
    Ok(wechat_json(&json!({"errcode": 0, "errmsg": "ok"})))
}

/// `markdown.feedback`, when present, is `{"id": ≤ 256 bytes}`.
fn check_feedback(body: &Map<String, Value>) -> Result<(), Reject> {
    match body.get("markdown").and_then(|m| m.get("feedback")) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(f)) => match f.get("id") {
            Some(Value::String(id)) if id.len() <= FEEDBACK_ID_MAX => Ok(()),
            other => Err(Reject::code(
                40058,
                format!("markdown.feedback.id must be a string of at most {FEEDBACK_ID_MAX} bytes, got {other:?}"),
            )),
        },
        Some(other) => Err(Reject::code(40058, format!("markdown.feedback must be an object, got {other}"))),
    }
}
