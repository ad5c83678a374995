//! iLink QR login: `get_bot_qrcode` (GET or POST, `bot_type=3`) and `get_qrcode_status` (GET, no
//! auth), answering a scripted sequence of statuses (ilink.md §7).
//!
//! A `confirmed` status issues a new bot token for the scanning user and revokes the token that
//! user bound before (the old one gets -14 from then on), as binding a WeChat account to a new
//! client does on the real service.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::state::State;
use crate::wire::{ilink_json, Reject, Req};

pub(crate) fn get_bot_qrcode(st: &mut State, req: &Req) -> Result<Response, Reject> {
    if req.query("bot_type") != Some("3") {
        return Err(Reject::ilink_invalid(format!("bot_type must be 3, got {:?}", req.query("bot_type"))));
    }
    if req.header("authorization").is_some() {
        st.problems.push("get_bot_qrcode carries an Authorization header (a login needs no token)".into());
    }
    match req.method {
        Method::GET => {}
        Method::POST => {
            let body: Value = serde_json::from_slice(&req.body)
                .map_err(|e| Reject::ilink_invalid(format!("body is not valid JSON: {e}")))?;
            let tokens = match body.get("local_token_list") {
                None => Vec::new(),
                Some(Value::Array(list)) if list.len() <= 10 && list.iter().all(Value::is_string) => {
                    list.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                }
                Some(other) => {
                    return Err(Reject::ilink_invalid(format!(
                        "local_token_list must be up to 10 strings, got {other}"
                    )))
                }
            };
            st.qr.known_tokens.push(tokens);
        }
        _ => return Err(Reject::http(StatusCode::NOT_FOUND, format!("{} on get_bot_qrcode", req.method))),
    }
    let qrcode = format!("{:032x}", rand::random::<u128>());
    st.qr.codes.insert(qrcode.clone(), true);
    let content = format!("https://liteapp.weixin.qq.com/q/7GiQu1?qrcode={qrcode}&bot_type=3");
    Ok(ilink_json(&json!({"ret": 0, "qrcode": qrcode, "qrcode_img_content": content})))
}

pub(crate) fn get_qrcode_status(st: &mut State, req: &Req) -> Result<Response, Reject> {
    if req.method != Method::GET {
        return Err(Reject::http(StatusCode::NOT_FOUND, format!("{} on get_qrcode_status (GET only)", req.method)));
    }
    if req.header("authorization").is_some() || req.header("x-wechat-uin").is_some() {
        st.problems
            .push("get_qrcode_status carries Authorization or X-WECHAT-UIN (it takes only the app headers)".into());
    }
    if req.header("ilink-app-id") != Some("bot") {
        st.problems.push(format!("get_qrcode_status: iLink-App-Id is {:?}, not \"bot\"", req.header("ilink-app-id")));
    }
    let qrcode = req.query("qrcode").unwrap_or_default().to_owned();
    match st.qr.codes.get(&qrcode) {
        None => return Err(Reject::ilink_invalid(format!("qrcode {qrcode:?} was never issued"))),
        Some(false) => return Ok(ilink_json(&json!({"ret": 0, "status": "expired"}))),
        Some(true) => {}
    }
    let status = st.qr.script.pop_front().unwrap_or_else(|| "wait".to_owned());
    match status.as_str() {
        "expired" | "verify_code_blocked" => {
            st.qr.codes.insert(qrcode, false);
            Ok(ilink_json(&json!({"ret": 0, "status": status})))
        }
        "confirmed" => {
            st.qr.codes.insert(qrcode, false);
            let (account, user) =
                st.qr.login.clone().unwrap_or_else(|| ("fa4e0b0t@im.bot".to_owned(), "scanner@im.wechat".to_owned()));
            st.qr.issued_tokens += 1;
            let token = format!("{account}:{:016x}{}", rand::random::<u64>(), st.qr.issued_tokens);
            // One client per WeChat account: the previous binding's token stops working.
            if let Some(old) = st.qr.tokens_by_user.insert(user.clone(), token.clone()) {
                st.ilink_bots.remove(&old);
            }
            st.ilink_bots.insert(token.clone());
            Ok(ilink_json(&json!({
                "ret": 0, "status": "confirmed", "bot_token": token, "ilink_bot_id": account,
                "baseurl": st.base_url, "ilink_user_id": user,
            })))
        }
        _ => Ok(ilink_json(&json!({"ret": 0, "status": status}))),
    }
}
