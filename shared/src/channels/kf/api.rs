//! The 微信客服 API calls (wecom-kf.md §3–§5): `kf/sync_msg`, `kf/send_msg`,
//! `kf/send_msg_on_event`, on WeCom's host with the serving app's token, and the 95xxx
//! errcodes.

use secrecy::SecretString;
use serde_json::{json, Value};

use super::message::{SyncPage, PAGE_LIMIT};
use crate::channels::wecom::api::WecomApi;
use crate::core::http::ApiError;
use crate::core::retry::Verdict;

/// The `sync_msg` token from the callback has expired or is unknown.
pub const INVALID_MSG_TOKEN: i64 = 95007;

/// The 微信客服 errcodes (the table of wecom-kf.md §4, from SDK tables; 95xxx meanings are
/// second-hand), then WeCom's own.
pub fn errcodes(code: i64) -> Verdict {
    match code {
        // Over the 5 messages, outside 48 h, no customer message, session ended, session state:
        // not fixed by waiting (until the customer writes again or a servicer lets go).
        95001 | 95002 | 95024 | 95013 | 95018 | 95025 => Verdict::Permanent,
        // Unknown account, API switched off, capacity and verification caps: configuration.
        95000 | 95003..=95005 | 95011 | 95012 | 95017 | 95026 | 95027 | 40201 => Verdict::Permanent,
        other => crate::channels::wecom::api::errcodes(other),
    }
}

/// `POST cgi-bin/kf/sync_msg`: one page after `cursor` (none: from the start of the three days
/// WeChat keeps), with the callback's `token` when there is a fresh one (without it the call
/// is strictly rate-limited).
pub async fn sync_msg(
    api: &WecomApi,
    access_token: &SecretString,
    open_kfid: &str,
    cursor: Option<&str>,
    callback_token: Option<&str>,
) -> Result<SyncPage, ApiError> {
    let mut body = json!({"open_kfid": open_kfid, "limit": PAGE_LIMIT, "voice_format": 0});
    if let Some(cursor) = cursor {
        body["cursor"] = cursor.into();
    }
    if let Some(token) = callback_token {
        body["token"] = token.into();
    }
    let answer = api.post("kf/sync_msg", access_token, &body).await?;
    SyncPage::parse(&answer).map_err(|why| ApiError::Decode(format!("kf/sync_msg: {why}")))
}

/// `POST cgi-bin/kf/send_msg_on_event`: the one text an event's `code` allows (the welcome,
/// valid 20 s).
pub async fn send_msg_on_event(
    api: &WecomApi,
    access_token: &SecretString,
    code: &str,
    msgid: &str,
    text: &str,
) -> Result<Value, ApiError> {
    let body = json!({"code": code, "msgid": msgid, "msgtype": "text", "text": {"content": text}});
    api.post("kf/send_msg_on_event", access_token, &body).await
}

/// `POST cgi-bin/kf/service_state/get`: who has the customer's session (0 new, 1 the API's
/// assistant, 2 queued, 3 a human servicer, 4 ended).
pub async fn service_state(
    api: &WecomApi,
    access_token: &SecretString,
    open_kfid: &str,
    customer: &str,
) -> Result<i64, ApiError> {
    let body = json!({"open_kfid": open_kfid, "external_userid": customer});
    let answer = api.post("kf/service_state/get", access_token, &body).await?;
    answer
        .get("service_state")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::Decode("kf/service_state/get: no service_state".into()))
}

/// `POST cgi-bin/kf/service_state/trans` to state 1: the API's assistant takes a new session.
pub async fn take_session(
    api: &WecomApi,
    access_token: &SecretString,
    open_kfid: &str,
    customer: &str,
) -> Result<(), ApiError> {
    let body = json!({"open_kfid": open_kfid, "external_userid": customer, "service_state": 1});
    api.post("kf/service_state/trans", access_token, &body).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_session_refusals_are_permanent_and_wecom_codes_keep_their_meaning() {
        for code in [95001, 95002, 95018, 95024, 95000, 95017, 40201] {
            assert_eq!(errcodes(code), Verdict::Permanent, "{code}");
        }
        assert_eq!(errcodes(42001), Verdict::RefreshToken);
        assert_eq!(errcodes(-1), Verdict::Transient { min_backoff_s: 0 });
    }
}
