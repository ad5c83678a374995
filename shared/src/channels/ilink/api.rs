//! The iLink bot API (personal WeChat): `getupdates` long polls, `sendmessage`, `getuploadurl`,
//! typing (`getconfig` → `typing_ticket` → `sendtyping`) and QR login (`get_bot_qrcode` →
//! `get_qrcode_status`), and iLink's error table. Each bot has its own host (`base_url`).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::channels::ilink::message::WeixinMessage;
use crate::core::http::{base, ApiError, Http, USER_AGENT};
use crate::core::retry::Verdict;

/// The iLink API host (QR login always starts here; a login may name another for the bot).
pub const DEFAULT_BASE: &str = "https://ilinkai.weixin.qq.com";
/// What wxbridge tells iLink about itself (`base_info`).
pub const CHANNEL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// iLink's error codes: what each means for a retry.
pub fn errcodes(code: i64) -> Verdict {
    match code {
        // -2 (the user must write first / budget spent) and -14 (session expired) get worse
        // with every retry; 210205 is reported as the same throttle.
        -2 | -14 | 210205 => Verdict::Permanent,
        _ => Verdict::Transient { min_backoff_s: 2 },
    }
}

/// iLink business errors come with HTTP 200: a non-zero `ret` and/or `errcode`.
pub fn check(answer: Value) -> Result<Value, ApiError> {
    let code = ["ret", "errcode"].iter().find_map(|k| answer.get(*k).and_then(Value::as_i64).filter(|c| *c != 0));
    match code {
        None => Ok(answer),
        Some(code) => Err(ApiError::from_errcode(code, &answer)),
    }
}

/// What one `getupdates` poll returned.
#[derive(Debug, Clone, Default)]
pub struct Updates {
    /// Each message with its JSON (the `raw` of its `Inbound`).
    pub messages: Vec<(WeixinMessage, Value)>,
    /// The next cursor; `None` keeps the current one.
    pub cursor: Option<String>,
    /// The server's hint for the next poll's hold time.
    pub hold_hint: Option<Duration>,
}

/// Where `getuploadurl` says to POST a file's ciphertext: a whole URL (what the service answers
/// since about 2.1.1), or only the parameter to build one from; empty fields are `None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UploadUrls {
    pub full_url: Option<String>,
    pub param: Option<String>,
}

impl std::fmt::Debug for UploadUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The parameters authorise an upload: shown only as present or not.
        f.debug_struct("UploadUrls")
            .field("full_url", &self.full_url.as_ref().map(|_| "<set>"))
            .field("param", &self.param.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The headers of every iLink POST: a fresh `X-WECHAT-UIN` (base64 of a random uint32's
/// decimal text) each time, and the bearer token when there is one (not for the QR code).
pub fn headers(bot_token: Option<&SecretString>) -> Result<HeaderMap, ApiError> {
    use base64::Engine as _;
    let mut headers = app_headers();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("AuthorizationType", HeaderValue::from_static("ilink_bot_token"));
    if let Some(bot_token) = bot_token {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", bot_token.expose_secret().trim()))
            .map_err(|_| ApiError::Decode("the bot token is not a valid header value".into()))?;
        bearer.set_sensitive(true);
        headers.insert(AUTHORIZATION, bearer);
    }
    let uin: u32 = u32::from_be_bytes(crate::protocol::crypto::random_prefix()[..4].try_into().unwrap_or([0; 4]));
    let uin = base64::engine::general_purpose::STANDARD.encode(uin.to_string());
    headers.insert("X-WECHAT-UIN", HeaderValue::from_str(&uin).unwrap_or(HeaderValue::from_static("MA==")));
    Ok(headers)
}

/// The app headers, which are all the QR status GET carries.
pub fn app_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("iLink-App-Id", HeaderValue::from_static("bot"));
    headers.insert("iLink-App-ClientVersion", HeaderValue::from_static("132105"));
    headers
}

/// The iLink API client (shares the process's connection pool).
#[derive(Debug, Clone)]
pub struct IlinkApi {
    http: Http,
}

impl IlinkApi {
    pub fn new(http: &Http) -> Self {
        Self { http: http.clone() }
    }

    /// `POST <base_url>/ilink/bot/<endpoint>` with its headers and `base_info`.
    pub async fn post(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        endpoint: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        self.call(base_url, bot_token, endpoint, body, None).await
    }

    /// `getupdates`: a long poll from `cursor` (`""` at first) held by the server up to
    /// `hold`. A client-side timeout is an empty poll, not a failure.
    pub async fn getupdates(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        cursor: &str,
        hold: Duration,
    ) -> Result<Updates, ApiError> {
        let body = json!({"get_updates_buf": cursor});
        let answer = match self.call(base_url, bot_token, "getupdates", body, Some(hold)).await {
            Err(ApiError::Transport { timeout: true, .. }) => return Ok(Updates::default()),
            other => other?,
        };
        let messages = answer
            .get("msgs")
            .and_then(Value::as_array)
            .map(|msgs| {
                msgs.iter().filter_map(|raw| WeixinMessage::from_value(raw).ok().map(|m| (m, raw.clone()))).collect()
            })
            .unwrap_or_default();
        Ok(Updates {
            messages,
            // An empty or absent cursor means "keep the one you have".
            cursor: answer.get("get_updates_buf").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_owned),
            hold_hint: answer
                .get("longpolling_timeout_ms")
                .and_then(Value::as_u64)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        })
    }

    /// `getuploadurl`: reserves a CDN upload of one file for one recipient (`body` without
    /// `base_info`, which every call adds).
    pub async fn getuploadurl(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        body: Value,
    ) -> Result<UploadUrls, ApiError> {
        let answer = self.call(base_url, bot_token, "getuploadurl", body, None).await?;
        let text = |name: &str| answer.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(UploadUrls { full_url: text("upload_full_url"), param: text("upload_param") })
    }

    async fn call(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        endpoint: &str,
        mut body: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, ApiError> {
        body["base_info"] = json!({"channel_version": CHANNEL_VERSION, "bot_agent": USER_AGENT});
        let url = format!("{}/ilink/bot/{endpoint}", base(base_url));
        let mut request = self.http.client().post(url).headers(headers(Some(bot_token))?).json(&body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        check(Http::json(request).await?)
    }
}

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

impl IlinkApi {
    /// `getconfig`: the typing ticket for `user` (`None` when the server gives none).
    pub async fn typing_ticket(
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
        let answer = self.call(base_url, bot_token, "getconfig", body, Some(TYPING_TIMEOUT)).await?;
        Ok(answer.get("typing_ticket").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned))
    }

    /// `sendtyping`: "typing…" on (`true`) or off.
    pub async fn typing(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        user: &str,
        ticket: &str,
        typing: bool,
    ) -> Result<(), ApiError> {
        let body = json!({"ilink_user_id": user, "typing_ticket": ticket, "status": if typing { 1 } else { 2 }});
        self.call(base_url, bot_token, "sendtyping", body, Some(TYPING_TIMEOUT)).await.map(drop)
    }

    /// `get_bot_qrcode`: a new login QR code. `known_tokens` (at most 10 used) lets the server
    /// recognise a bot this client already holds.
    pub async fn bot_qrcode(&self, base_url: &str, known_tokens: &[SecretString]) -> Result<QrCode, ApiError> {
        let tokens: Vec<&str> = known_tokens.iter().take(10).map(|t| t.expose_secret()).collect();
        let url = format!("{}/ilink/bot/get_bot_qrcode", base(base_url));
        let request = self
            .http
            .client()
            .post(url)
            .query(&[("bot_type", BOT_TYPE)])
            .headers(headers(None)?)
            .json(&json!({"local_token_list": tokens}));
        let answer = check(Http::json(request).await?)?;
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
    pub async fn qrcode_status(
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
        let request = self.http.client().get(url).query(&query).headers(app_headers()).timeout(timeout);
        let answer = match Http::json(request).await {
            Ok(answer) => answer,
            Err(ApiError::Transport { .. } | ApiError::Http { .. }) => return Ok(QrStatus::Wait),
            Err(err) => return Err(err),
        };
        let answer = check(answer)?;
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
                    base_url: text("baseurl").map_or_else(|| DEFAULT_BASE.to_owned(), |b| base(&b)),
                    user_id: text("ilink_user_id"),
                })
            }
            other => QrStatus::Other(other.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_table_gives_up_on_throttles_and_expired_sessions() {
        for (code, verdict) in [
            (-2, Verdict::Permanent),
            (-14, Verdict::Permanent),
            (210205, Verdict::Permanent),
            (-1, Verdict::Transient { min_backoff_s: 2 }),
        ] {
            assert_eq!(errcodes(code), verdict, "{code}");
        }
    }

    #[test]
    fn headers_carry_a_fresh_decimal_uin_and_a_sensitive_bearer() {
        use base64::Engine as _;
        let token = SecretString::from("bot-token".to_owned());
        let (a, b) = (headers(Some(&token)).unwrap(), headers(Some(&token)).unwrap());
        let uin = |h: &HeaderMap| {
            let raw = base64::engine::general_purpose::STANDARD.decode(h["X-WECHAT-UIN"].as_bytes()).unwrap();
            String::from_utf8(raw).unwrap().parse::<u32>().unwrap()
        };
        assert_ne!(uin(&a), uin(&b));
        assert!(a[AUTHORIZATION].is_sensitive());
        assert_eq!(a["AuthorizationType"], "ilink_bot_token");
    }

    #[tokio::test]
    async fn transport_errors_never_carry_the_bot_token() {
        let api = IlinkApi::new(&Http::new(&Default::default()).unwrap());
        let secret = SecretString::from("TOPSECRET-TOKEN".to_owned());
        let err = api.post("http://127.0.0.1:9", &secret, "sendmessage", json!({})).await.unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("TOPSECRET"), "{err:?}");
    }
}
