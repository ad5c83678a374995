//! The WeChat HTTP APIs the sender calls: WeCom, the group robot webhook, the Official Account
//! and iLink. One HTTP client per process; base URLs are configurable so tests use fakes.
//!
//! Access tokens, robot keys and bot tokens travel in URLs and headers: transport errors are
//! stripped of their URL, and nothing here logs a request.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

/// WeCom's API host.
pub const WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// The Official Account API host.
pub const OA_API_BASE: &str = "https://api.weixin.qq.com";
/// The iLink API host (QR login always starts here; a login may name another for the bot).
pub const ILINK_API_BASE: &str = "https://ilinkai.weixin.qq.com";
/// What wxbridge tells iLink about itself (`base_info`).
pub const ILINK_CHANNEL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which API family answered (they share errcode numbers with different meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Wecom,
    Oa,
    Ilink,
}

/// A failed API call. Display never contains a token, key or URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("transport: {detail}")]
    Transport { timeout: bool, detail: String },
    #[error("HTTP {status}")]
    Http { status: u16 },
    #[error("errcode {code}: {message}")]
    Errcode { code: i64, message: String },
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ApiError {
    fn transport(err: reqwest::Error) -> Self {
        let timeout = err.is_timeout();
        // The URL carries access tokens and robot keys.
        let err = err.without_url();
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Transport { timeout, detail }
    }

    /// The errcode, if the API answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Errcode { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What to do about an API result: the one errcode table of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Drop the cached token (if it is still the one used), fetch a new one, retry once.
    RefreshToken,
    /// Retry later, not sooner than this.
    Transient { min_backoff_s: u32 },
    /// Do not retry: the DLQ, with the reason.
    Permanent,
}

/// Classifies a failed call.
pub fn classify(family: Family, err: &ApiError) -> Verdict {
    match err {
        ApiError::Transport { .. } => Verdict::Transient { min_backoff_s: 0 },
        ApiError::Http { status } if *status >= 500 || *status == 429 || *status == 408 => {
            Verdict::Transient { min_backoff_s: 0 }
        }
        ApiError::Http { .. } | ApiError::Decode(_) => Verdict::Permanent,
        ApiError::Errcode { code, .. } => classify_code(family, *code),
    }
}

fn classify_code(family: Family, code: i64) -> Verdict {
    match (family, code) {
        // System busy.
        (Family::Wecom | Family::Oa, -1) => Verdict::Transient { min_backoff_s: 0 },
        // Token invalid, expired or missing (OA also answers 40001 for a token that is not the latest).
        (Family::Wecom, 40014 | 42001 | 41001) | (Family::Oa, 40001 | 40014 | 42001 | 41001) => Verdict::RefreshToken,
        // Frequency limits: WeCom's per-minute blocks last 60 s; the Official Account's 45009 is
        // the daily quota, so wait as long as the queue allows.
        (Family::Wecom, 45009) => Verdict::Transient { min_backoff_s: 60 },
        (Family::Oa, 45009) => Verdict::Transient { min_backoff_s: crate::services::sender::MAX_BACKOFF_S },
        (Family::Wecom, 45033) | (Family::Oa, 45011) => Verdict::Transient { min_backoff_s: 5 },
        // iLink: -2 (the user must write first / budget spent) and -14 (session expired) get
        // worse with every retry.
        // 210205 is reported as the same throttle.
        (Family::Ilink, -2 | -14 | 210205) => Verdict::Permanent,
        (Family::Ilink, _) => Verdict::Transient { min_backoff_s: 2 },
        // Everything else (invalid user, 45015/45047 outside the window or over quota, 48001 no
        // permission, 60020 IP not allowed, bad parameters, unknown codes) is not fixed by waiting.
        _ => Verdict::Permanent,
    }
}

/// An access token and how long WeChat says it lives.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub value: SecretString,
    pub expires_in: u64,
}

/// The least time between two iLink sends of one bot: a third send within about a second is
/// refused with `-2`, and each refused attempt prolongs the penalty.
pub const ILINK_SEND_SPACING: Duration = Duration::from_millis(1500);

/// The API clients, sharing one HTTP connection pool.
#[derive(Debug, Clone)]
pub struct WechatApi {
    http: reqwest::Client,
    wecom_base: String,
    oa_base: String,
    /// When each iLink bot may send next (keyed by a hash of its token).
    ilink_next_send: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// Base URLs and timeouts.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub wecom_base: String,
    pub oa_base: String,
    /// Whole-request timeout; iLink's sendmessage takes up to 15 s.
    pub timeout: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            wecom_base: WECOM_API_BASE.to_owned(),
            oa_base: OA_API_BASE.to_owned(),
            timeout: Duration::from_secs(15),
        }
    }
}

pub(crate) fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// iLink business errors come with HTTP 200: a non-zero `ret` and/or `errcode`.
pub(crate) fn check_ilink(answer: Value) -> Result<Value, ApiError> {
    let code = ["ret", "errcode"].iter().find_map(|k| answer.get(*k).and_then(Value::as_i64).filter(|c| *c != 0));
    match code {
        None => Ok(answer),
        Some(code) => Err(ApiError::Errcode {
            code,
            message: answer.get("errmsg").and_then(Value::as_str).unwrap_or_default().to_owned(),
        }),
    }
}

/// Errcode 0 or absent is success; WeCom and OA put it at the top level.
fn check_errcode(body: Value) -> Result<Value, ApiError> {
    match body.get("errcode").and_then(Value::as_i64) {
        None | Some(0) => Ok(body),
        Some(code) => Err(ApiError::Errcode {
            code,
            message: body.get("errmsg").and_then(Value::as_str).unwrap_or_default().to_owned(),
        }),
    }
}

impl WechatApi {
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn new(settings: &ApiSettings) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(settings.timeout)
            .user_agent(concat!("wxbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ApiError::transport)?;
        Ok(Self {
            http,
            wecom_base: base(&settings.wecom_base),
            oa_base: base(&settings.oa_base),
            ilink_next_send: Default::default(),
        })
    }

    pub(crate) async fn json(response: Result<reqwest::Response, reqwest::Error>) -> Result<Value, ApiError> {
        let response = response.map_err(ApiError::transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ApiError::Http { status: status.as_u16() });
        }
        let bytes = response.bytes().await.map_err(ApiError::transport)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // iLink answers success with an empty body.
            return Ok(json!({}));
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()))
    }

    fn token(body: &Value) -> Result<IssuedToken, ApiError> {
        let value = body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
        let value = value.ok_or_else(|| ApiError::Decode("no access_token in the answer".into()))?;
        let expires_in = body.get("expires_in").and_then(Value::as_u64).unwrap_or(7200);
        Ok(IssuedToken { value: SecretString::from(value.to_owned()), expires_in })
    }

    /// WeCom `GET cgi-bin/gettoken`.
    pub async fn wecom_token(&self, corp_id: &str, secret: &SecretString) -> Result<IssuedToken, ApiError> {
        let url = format!("{}/cgi-bin/gettoken", self.wecom_base);
        let request = self.http.get(url).query(&[("corpid", corp_id), ("corpsecret", secret.expose_secret())]);
        Self::token(&check_errcode(Self::json(request.send().await).await?)?)
    }

    /// WeCom `POST cgi-bin/<path>?access_token=…` (message/send, appchat/*).
    pub async fn wecom_post(&self, path: &str, token: &SecretString, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/{path}", self.wecom_base);
        let request = self.http.post(url).query(&[("access_token", token.expose_secret())]).json(body);
        check_errcode(Self::json(request.send().await).await?)
    }

    /// WeCom `GET cgi-bin/<path>?access_token=…&…` (appchat/get).
    pub async fn wecom_get(&self, path: &str, token: &SecretString, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/{path}", self.wecom_base);
        let request = self.http.get(url).query(&[("access_token", token.expose_secret())]).query(query);
        check_errcode(Self::json(request.send().await).await?)
    }

    /// Uploads a file as multipart part `media`: WeCom `media/upload` (query carries the
    /// access token) or the robot's `webhook/upload_media` (query carries the key).
    pub async fn wecom_upload(
        &self,
        path: &str,
        query: &[(&str, &str)],
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/{path}", self.wecom_base);
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
        let form = reqwest::multipart::Form::new().part("media", part);
        let request = self.http.post(url).query(query).multipart(form);
        check_errcode(Self::json(request.send().await).await?)
    }

    /// Group robot `POST cgi-bin/webhook/send?key=…`.
    pub async fn webhook_send(&self, key: &SecretString, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/webhook/send", self.wecom_base);
        let request = self.http.post(url).query(&[("key", key.expose_secret())]).json(body);
        check_errcode(Self::json(request.send().await).await?)
    }

    /// Official Account `POST cgi-bin/stable_token` in normal mode: never `cgi-bin/token`,
    /// whose every call invalidates the tokens other holders cached.
    pub async fn oa_stable_token(&self, app_id: &str, secret: &SecretString) -> Result<IssuedToken, ApiError> {
        let url = format!("{}/cgi-bin/stable_token", self.oa_base);
        let body = json!({"grant_type": "client_credential", "appid": app_id, "secret": secret.expose_secret(), "force_refresh": false});
        Self::token(&check_errcode(Self::json(self.http.post(url).json(&body).send().await).await?)?)
    }

    /// Official Account `POST cgi-bin/<path>?access_token=…` (message/custom/send, …/typing).
    pub async fn oa_post(&self, path: &str, token: &SecretString, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/{path}", self.oa_base);
        let request = self.http.post(url).query(&[("access_token", token.expose_secret())]).json(body);
        check_errcode(Self::json(request.send().await).await?)
    }

    /// iLink `POST <base_url>/ilink/bot/<endpoint>` with its headers and `base_info`.
    pub async fn ilink_post(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        endpoint: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        self.ilink_call(base_url, bot_token, endpoint, body, None).await
    }

    /// iLink `getupdates`: a long poll from `cursor` (`""` at first) held by the server up to
    /// `hold`. A client-side timeout is an empty poll, not a failure.
    pub async fn ilink_getupdates(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        cursor: &str,
        hold: Duration,
    ) -> Result<Updates, ApiError> {
        let body = json!({"get_updates_buf": cursor});
        let answer = match self.ilink_call(base_url, bot_token, "getupdates", body, Some(hold)).await {
            Err(ApiError::Transport { timeout: true, .. }) => return Ok(Updates::default()),
            other => other?,
        };
        let messages = answer
            .get("msgs")
            .and_then(Value::as_array)
            .map(|msgs| {
                msgs.iter()
                    .filter_map(|raw| {
                        crate::channels::ilink::WeixinMessage::from_value(raw).ok().map(|m| (m, raw.clone()))
                    })
                    .collect()
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

    pub(crate) async fn ilink_call(
        &self,
        base_url: &str,
        bot_token: &SecretString,
        endpoint: &str,
        mut body: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, ApiError> {
        body["base_info"] = json!({"channel_version": ILINK_CHANNEL_VERSION, "bot_agent": concat!("wxbridge/", env!("CARGO_PKG_VERSION"))});
        if endpoint == "sendmessage" {
            let wait = self.ilink_send_slot(bot_token);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let url = format!("{}/ilink/bot/{endpoint}", base(base_url));
        let mut request = self.http.post(url).headers(ilink_headers(Some(bot_token))?).json(&body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        check_ilink(Self::json(request.send().await).await?)
    }
}

impl WechatApi {
    /// Reserves the bot's next send slot; returns how long to wait for it.
    fn ilink_send_slot(&self, bot_token: &SecretString) -> Duration {
        use sha1::Digest as _;
        let key: String = sha1::Sha1::digest(bot_token.expose_secret().as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let now = std::time::Instant::now();
        let mut next = self.ilink_next_send.lock().unwrap_or_else(|p| p.into_inner());
        let slot = next.get(&key).copied().unwrap_or(now).max(now);
        next.insert(key, slot + ILINK_SEND_SPACING);
        slot - now
    }
}

/// The management and media calls, typed.
impl WechatApi {
    /// WeCom `appchat/create`: a group chat of the app's members; returns its chat id.
    pub async fn appchat_create(
        &self,
        token: &SecretString,
        name: Option<&str>,
        owner: Option<&str>,
        members: &[&str],
        chat_id: Option<&str>,
    ) -> Result<String, ApiError> {
        let mut body = json!({"userlist": members});
        for (key, value) in [("name", name), ("owner", owner), ("chatid", chat_id)] {
            if let Some(value) = value {
                body[key] = value.into();
            }
        }
        let answer = self.wecom_post("appchat/create", token, &body).await?;
        answer
            .get("chatid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Decode("no chatid in the answer".into()))
    }

    /// WeCom `appchat/update`: rename, add and remove members.
    pub async fn appchat_update(
        &self,
        token: &SecretString,
        chat_id: &str,
        name: Option<&str>,
        add: &[&str],
        remove: &[&str],
    ) -> Result<(), ApiError> {
        let mut body = json!({"chatid": chat_id, "add_user_list": add, "del_user_list": remove});
        if let Some(name) = name {
            body["name"] = name.into();
        }
        self.wecom_post("appchat/update", token, &body).await.map(drop)
    }

    /// WeCom `appchat/get`: the chat's `chat_info` (chatid, name, owner, userlist).
    pub async fn appchat_get(&self, token: &SecretString, chat_id: &str) -> Result<Value, ApiError> {
        let answer = self.wecom_get("appchat/get", token, &[("chatid", chat_id)]).await?;
        answer.get("chat_info").cloned().ok_or_else(|| ApiError::Decode("no chat_info in the answer".into()))
    }

    /// WeCom `media/upload` (`image`, `voice`, `video`, `file`): a media id valid 3 days.
    pub async fn media_upload(
        &self,
        token: &SecretString,
        media_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let query = [("access_token", token.expose_secret()), ("type", media_type)];
        media_id(self.wecom_upload("media/upload", &query, file_name, bytes).await?)
    }

    /// Group robot `webhook/upload_media` (`file`, `voice`): a media id only this robot may send.
    pub async fn webhook_upload_media(
        &self,
        key: &SecretString,
        media_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let query = [("key", key.expose_secret()), ("type", media_type)];
        media_id(self.wecom_upload("webhook/upload_media", &query, file_name, bytes).await?)
    }

    /// Official Account `message/custom/typing`: "typing…" on (`true`) or off.
    pub async fn oa_typing(&self, token: &SecretString, open_id: &str, typing: bool) -> Result<(), ApiError> {
        let command = if typing { "Typing" } else { "CancelTyping" };
        self.oa_post("message/custom/typing", token, &json!({"touser": open_id, "command": command})).await.map(drop)
    }
}

fn media_id(answer: Value) -> Result<String, ApiError> {
    answer
        .get("media_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::Decode("no media_id in the answer".into()))
}

/// What one `getupdates` poll returned.
#[derive(Debug, Clone, Default)]
pub struct Updates {
    /// Each message with its JSON (the `raw` of its `Inbound`).
    pub messages: Vec<(crate::channels::ilink::WeixinMessage, Value)>,
    /// The next cursor; `None` keeps the current one.
    pub cursor: Option<String>,
    /// The server's hint for the next poll's hold time.
    pub hold_hint: Option<Duration>,
}

/// The headers of every iLink POST: a fresh `X-WECHAT-UIN` (base64 of a random uint32's
/// decimal text) each time, and the bearer token when there is one (not for the QR code).
pub(crate) fn ilink_headers(bot_token: Option<&SecretString>) -> Result<HeaderMap, ApiError> {
    use base64::Engine as _;
    let mut headers = ilink_app_headers();
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
pub(crate) fn ilink_app_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("iLink-App-Id", HeaderValue::from_static("bot"));
    headers.insert("iLink-App-ClientVersion", HeaderValue::from_static("132105"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(code: i64) -> ApiError {
        ApiError::Errcode { code, message: String::new() }
    }

    #[test]
    fn the_errcode_table_decides_refresh_retry_or_give_up() {
        use Family::*;
        use Verdict::*;
        let cases = [
            (Wecom, code(42001), RefreshToken),
            (Wecom, code(40014), RefreshToken),
            (Oa, code(40001), RefreshToken),
            (Wecom, code(-1), Transient { min_backoff_s: 0 }),
            (Wecom, code(45009), Transient { min_backoff_s: 60 }),
            (Wecom, code(45033), Transient { min_backoff_s: 5 }),
            (Oa, code(45011), Transient { min_backoff_s: 5 }),
            (Wecom, code(40003), Permanent),
            (Wecom, code(60020), Permanent),
            (Wecom, code(81013), Permanent),
            (Oa, code(45015), Permanent),
            (Oa, code(45047), Permanent),
            (Oa, code(48001), Permanent),
            (Ilink, code(-2), Permanent),
            (Ilink, code(-14), Permanent),
            (Ilink, code(210205), Permanent),
            (Oa, code(45009), Transient { min_backoff_s: crate::services::sender::MAX_BACKOFF_S }),
            (Ilink, code(-1), Transient { min_backoff_s: 2 }),
            (Wecom, ApiError::Http { status: 502 }, Transient { min_backoff_s: 0 }),
            (Wecom, ApiError::Http { status: 429 }, Transient { min_backoff_s: 0 }),
            (Wecom, ApiError::Http { status: 404 }, Permanent),
            (Oa, ApiError::Transport { timeout: true, detail: String::new() }, Transient { min_backoff_s: 0 }),
        ];
        for (family, err, verdict) in cases {
            assert_eq!(classify(family, &err), verdict, "{family:?} {err}");
        }
    }

    #[tokio::test]
    async fn transport_errors_never_carry_the_token_or_key_in_the_url() {
        // Nothing listens on port 9: the connection is refused.
        let settings = ApiSettings {
            wecom_base: "http://127.0.0.1:9".into(),
            oa_base: "http://127.0.0.1:9".into(),
            ..ApiSettings::default()
        };
        let api = WechatApi::new(&settings).unwrap();
        let secret = SecretString::from("TOPSECRET-TOKEN".to_owned());
        let errors = [
            api.wecom_post("message/send", &secret, &json!({})).await.unwrap_err(),
            api.webhook_send(&secret, &json!({})).await.unwrap_err(),
            api.wecom_token("ww1", &secret).await.unwrap_err(),
            api.ilink_post("http://127.0.0.1:9", &secret, "sendmessage", json!({})).await.unwrap_err(),
        ];
        for err in errors {
            assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("TOPSECRET"), "{err:?}");
        }
    }

    #[test]
    fn ilink_sends_of_one_bot_are_spaced_and_other_bots_are_not_held_up() {
        let api = WechatApi::new(&ApiSettings::default()).unwrap();
        let (a, b) = (SecretString::from("bot-a".to_owned()), SecretString::from("bot-b".to_owned()));
        assert_eq!(api.ilink_send_slot(&a), Duration::ZERO);
        let second = api.ilink_send_slot(&a);
        assert!(second > ILINK_SEND_SPACING - Duration::from_millis(50) && second <= ILINK_SEND_SPACING, "{second:?}");
        assert!(api.ilink_send_slot(&a) > ILINK_SEND_SPACING, "a third send waits for two spacings");
        assert_eq!(api.ilink_send_slot(&b), Duration::ZERO);
    }

    #[test]
    fn ilink_headers_carry_a_fresh_decimal_uin_and_a_sensitive_bearer() {
        use base64::Engine as _;
        let token = SecretString::from("bot-token".to_owned());
        let (a, b) = (ilink_headers(Some(&token)).unwrap(), ilink_headers(Some(&token)).unwrap());
        let uin = |h: &HeaderMap| {
            let raw = base64::engine::general_purpose::STANDARD.decode(h["X-WECHAT-UIN"].as_bytes()).unwrap();
            String::from_utf8(raw).unwrap().parse::<u32>().unwrap()
        };
        assert_ne!(uin(&a), uin(&b));
        assert!(a[AUTHORIZATION].is_sensitive());
        assert_eq!(a["AuthorizationType"], "ilink_bot_token");
    }
}
