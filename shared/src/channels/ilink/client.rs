//! The iLink calls beyond `getupdates` and `sendmessage` (which live with the other APIs in
//! `crate::core::http`): typing (`getconfig` → `typing_ticket` → `sendtyping`) and QR login
//! (`get_bot_qrcode` → `get_qrcode_status`).

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::core::http::{base, check_ilink, ilink_app_headers, ilink_headers, ApiError, WechatApi};

/// Client timeout of `getconfig` and `sendtyping`.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(10);
/// Client timeout of one `get_qrcode_status` long poll.
pub const QR_STATUS_TIMEOUT: Duration = Duration::from_secs(35);
/// `bot_type` of a bot login.
const BOT_TYPE: &str = "3";

/// A QR code to scan with WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    /// The token to poll the status with.
    pub qrcode: String,
    /// What the QR image must encode (a URL); the bare `qrcode` token does not scan.
    pub content: String,
}

/// Credentials of a confirmed login. `Debug` never shows the token.
#[derive(Clone)]
pub struct IlinkLogin {
    /// The bot account id, `…@im.bot`.
    pub account: String,
    pub bot_token: SecretString,
    /// The API host for this bot (the default host when the server names none).
    pub base_url: String,
    /// The WeChat user who scanned, when the server says.
    pub user_id: Option<String>,
}

impl std::fmt::Debug for IlinkLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IlinkLogin")
            .field("account", &self.account)
            .field("bot_token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// Where a QR login stands.
#[derive(Debug, Clone)]
pub enum QrStatus {
    /// Not scanned yet (also what a timed-out or failed status poll means).
    Wait,
    /// Scanned; waiting for the user to confirm on the phone.
    Scanned,
    /// Keep polling at `https://<host>`.
    Redirect {
        host: String,
    },
    /// The phone shows digits the operator must type in.
    NeedVerifyCode,
    /// Too many wrong digits: a new QR code is needed.
    VerifyCodeBlocked,
    /// The code expired: a new QR code is needed.
    Expired,
    /// This client already holds this bot's token; nothing new to store.
    AlreadyBound,
    Confirmed(IlinkLogin),
    /// A status this client does not know (polling goes on).
    Other(String),
}

impl WechatApi {
    /// `getconfig`: the typing ticket for `user` (`None` when the server gives none).
    pub async fn ilink_typing_ticket(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        user: &str,
        context_token: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let mut body = json!({"ilink_user_id": user});
        if let Some(context_token) = context_token {
            body["context_token"] = context_token.into();
        }
        let answer = self.ilink_call(base_url, bot_token, "getconfig", body, Some(TYPING_TIMEOUT)).await?;
        Ok(answer.get("typing_ticket").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned))
    }

    /// `sendtyping`: "typing…" on (`true`) or off.
    pub async fn ilink_typing(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        user: &str,
        ticket: &str,
        typing: bool,
    ) -> Result<(), ApiError> {
        let body = json!({"ilink_user_id": user, "typing_ticket": ticket, "status": if typing { 1 } else { 2 }});
        self.ilink_call(base_url, bot_token, "sendtyping", body, Some(TYPING_TIMEOUT)).await.map(drop)
    }

    /// `get_bot_qrcode`: a new login QR code. `known_tokens` (at most 10 used) lets the server
    /// recognise a bot this client already holds.
    pub async fn ilink_bot_qrcode(&self, base_url: &str, known_tokens: &[SecretString]) -> Result<QrCode, ApiError> {
        use secrecy::ExposeSecret as _;
        let tokens: Vec<&str> = known_tokens.iter().take(10).map(|t| t.expose_secret()).collect();
        let url = format!("{}/ilink/bot/get_bot_qrcode", base(base_url));
        let request = self
            .http()
            .post(url)
            .query(&[("bot_type", BOT_TYPE)])
            .headers(ilink_headers(None)?)
            .json(&json!({"local_token_list": tokens}));
        let answer = check_ilink(Self::json(request.send().await).await?)?;
        let field = |name: &str| {
            answer
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ApiError::Decode(format!("no {name} in the QR code answer")))
        };
        Ok(QrCode { qrcode: field("qrcode")?, content: field("qrcode_img_content")? })
    }

    /// `get_qrcode_status`: one long poll. Timeouts, transport and gateway errors are `Wait`, as
    /// the service's own client treats them; `base_url` is where the login started (or the host
    /// of a redirect).
    pub async fn ilink_qrcode_status(
        &self,
        base_url: &str,
        qrcode: &str,
        verify_code: Option<&str>,
        timeout: Duration,
    ) -> Result<QrStatus, ApiError> {
        let mut query = vec![("qrcode", qrcode)];
        if let Some(code) = verify_code {
            query.push(("verify_code", code));
        }
        let url = format!("{}/ilink/bot/get_qrcode_status", base(base_url));
        let request = self.http().get(url).query(&query).headers(ilink_app_headers()).timeout(timeout);
        let answer = match Self::json(request.send().await).await {
            Ok(answer) => answer,
            Err(ApiError::Transport { .. } | ApiError::Http { .. }) => return Ok(QrStatus::Wait),
            Err(err) => return Err(err),
        };
        let answer = check_ilink(answer)?;
        let text = |name: &str| answer.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        let status = text("status").unwrap_or_default();
        Ok(match status.as_str() {
            "wait" | "" => QrStatus::Wait,
            "scaned" => QrStatus::Scanned,
            "scaned_but_redirect" => match text("redirect_host") {
                Some(host) => QrStatus::Redirect { host },
                None => QrStatus::Scanned,
            },
            "need_verifycode" => QrStatus::NeedVerifyCode,
            "verify_code_blocked" => QrStatus::VerifyCodeBlocked,
            "expired" => QrStatus::Expired,
            "binded_redirect" => QrStatus::AlreadyBound,
            "confirmed" => {
                let (Some(token), Some(account)) = (text("bot_token"), text("ilink_bot_id")) else {
                    return Err(ApiError::Decode("a confirmed login without bot_token or ilink_bot_id".into()));
                };
                QrStatus::Confirmed(IlinkLogin {
                    account,
                    bot_token: SecretString::from(token),
                    base_url: text("baseurl")
                        .map_or_else(|| crate::core::http::ILINK_API_BASE.to_owned(), |b| base(&b)),
                    user_id: text("ilink_user_id"),
                })
            }
            other => QrStatus::Other(other.to_owned()),
        })
    }
}
