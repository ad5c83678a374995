//! What the API families share on the wire: the parsed request, the rejection type, the error-body
//! formats of each platform and the fault responses.
//!
//! Handlers return `Err(Reject)`; the dispatcher turns it into the body the real platform would send
//! and writes the matching line to `problems()`, so no rejection can go unreported.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngExt as _;
use serde_json::{json, Map, Value};

/// Which platform a path belongs to; decides the shape of error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Wecom,
    Oa,
    Ilink,
}

/// The Official Account paths; every other `/cgi-bin/` path here is WeCom's (robot included).
/// `media/get` is both platforms': it answers an OA token in the OA's style itself.
const OA_PATHS: &[&str] =
    &["/cgi-bin/stable_token", "/cgi-bin/token", "/cgi-bin/message/custom/send", "/cgi-bin/message/custom/typing"];

pub(crate) fn family(path: &str) -> Family {
    if path.starts_with("/ilink/") {
        Family::Ilink
    } else if OA_PATHS.contains(&path) {
        Family::Oa
    } else {
        Family::Wecom
    }
}

/// A request with its body already read, so handlers can be synchronous.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// A header's value if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// WeChat answers a wrong method with an errcode, not an HTTP 405.
    pub fn require_post(&self) -> Result<(), Reject> {
        if self.method == Method::POST {
            Ok(())
        } else {
            Err(Reject::code(43002, format!("{} used where POST is required", self.method)))
        }
    }

    pub fn require_get(&self) -> Result<(), Reject> {
        if self.method == Method::GET {
            Ok(())
        } else {
            Err(Reject::code(43001, format!("{} used where GET is required", self.method)))
        }
    }

    /// The body as a JSON object; anything else is WeChat's 47001 "data format error".
    pub fn json_object(&self) -> Result<Map<String, Value>, Reject> {
        if self.body.is_empty() {
            return Err(Reject::code(44002, "empty request body"));
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(Reject::code(47001, format!("body is JSON {} instead of an object", kind(&other)))),
            Err(e) => Err(Reject::code(47001, format!("body is not valid JSON: {e}"))),
        }
    }
}

/// Why the fake refused a request. `detail` is for `problems()`; the client sees only the
/// platform's own body.
#[derive(Debug)]
pub(crate) enum Reject {
    /// `{"errcode":N,"errmsg":…}` in the path's family style; `errmsg` overrides the stock text.
    Errcode { code: i64, errmsg: Option<String>, detail: String },
    /// A bare HTTP status (unknown path, unreadable body).
    Http { status: StatusCode, detail: String },
    /// An iLink business error: HTTP 200 with this body.
    Ilink { body: Value, detail: String },
    /// A status with the body a CDN or object store sends (possibly empty), not a platform errcode.
    Page { status: StatusCode, content_type: Option<&'static str>, body: String, detail: String },
    /// Another rejection answered in `family`'s style (when set) and with extra headers: for a path
    /// two platforms share, or an answer the real server labels oddly.
    Dressed { inner: Box<Reject>, family: Option<Family>, headers: Vec<(HeaderName, HeaderValue)> },
}

impl Reject {
    pub fn code(code: i64, detail: impl Into<String>) -> Self {
        Reject::Errcode { code, errmsg: None, detail: detail.into() }
    }

    pub fn http(status: StatusCode, detail: impl Into<String>) -> Self {
        Reject::Http { status, detail: detail.into() }
    }

    /// A status with exactly this body (`""` for none) and Content-Type, as a media host sends it.
    pub fn page(
        status: StatusCode,
        content_type: Option<&'static str>,
        body: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Reject::Page { status, content_type, body: body.into(), detail: detail.into() }
    }

    /// Answers in `family`'s style whatever the path's family is.
    pub fn in_family(self, family: Family) -> Self {
        match self {
            Reject::Dressed { inner, headers, .. } => Reject::Dressed { inner, family: Some(family), headers },
            other => Reject::Dressed { inner: Box::new(other), family: Some(family), headers: Vec::new() },
        }
    }

    /// Sets a header on the answer (replacing the one the body format sets, e.g. Content-Type).
    pub fn with_header(self, name: HeaderName, value: HeaderValue) -> Self {
        match self {
            Reject::Dressed { inner, family, mut headers } => {
                headers.push((name, value));
                Reject::Dressed { inner, family, headers }
            }
            other => Reject::Dressed { inner: Box::new(other), family: None, headers: vec![(name, value)] },
        }
    }

    /// iLink's answer to malformed requests (HITL field report for a two-item `item_list`).
    pub fn ilink_invalid(detail: impl Into<String>) -> Self {
        Reject::Ilink { body: json!({"ret": -2, "errmsg": "invalid arguments"}), detail: detail.into() }
    }

    /// iLink's answer when the message may not be delivered (policy, context_token).
    pub fn ilink_prepare_failed(detail: impl Into<String>) -> Self {
        Reject::Ilink { body: json!({"ret": -2, "errmsg": "prepare failed"}), detail: detail.into() }
    }

    /// iLink's answer to an unknown or missing bot token.
    pub fn ilink_session_timeout(detail: impl Into<String>) -> Self {
        Reject::Ilink { body: json!({"errcode": -14, "errmsg": "session timeout"}), detail: detail.into() }
    }

    /// What was wrong, without the platform's code or text.
    pub fn detail(&self) -> &str {
        match self {
            Reject::Errcode { detail, .. }
            | Reject::Http { detail, .. }
            | Reject::Ilink { detail, .. }
            | Reject::Page { detail, .. } => detail,
            Reject::Dressed { inner, .. } => inner.detail(),
        }
    }

    /// The line for `problems()`.
    pub fn describe(&self, family: Family) -> String {
        match self {
            Reject::Errcode { code, detail, .. } => {
                format!("errcode {code} ({}): {detail}", stock_errmsg(family, *code))
            }
            Reject::Http { status, detail } => format!("HTTP {}: {detail}", status.as_u16()),
            Reject::Ilink { body, detail } => format!("{body}: {detail}"),
            Reject::Page { status, detail, .. } => format!("HTTP {}: {detail}", status.as_u16()),
            Reject::Dressed { inner, family: own, .. } => inner.describe(own.unwrap_or(family)),
        }
    }

    pub fn into_response(self, family: Family) -> Response {
        match self {
            Reject::Errcode { code, errmsg, .. } => errcode_response(family, code, errmsg),
            Reject::Http { status, detail } => (status, detail).into_response(),
            Reject::Ilink { body, .. } => ilink_json(&body),
            Reject::Page { status, content_type, body, .. } => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                if let Some(content_type) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                }
                response
            }
            Reject::Dressed { inner, family: own, headers } => {
                let mut response = inner.into_response(own.unwrap_or(family));
                for (name, value) in headers {
                    response.headers_mut().insert(name, value);
                }
                response
            }
        }
    }
}

/// The stock errmsg text of each code the fake uses, per platform (wecom.md §7,
/// official-account.md §9).
fn stock_errmsg(family: Family, code: i64) -> &'static str {
    match family {
        Family::Wecom => match code {
            -1 => "system busy",
            40001 => "invalid credential",
            40003 => "invalid userid",
            40004 => "invalid media type",
            40005 => "invalid file type",
            40006 => "invalid file size",
            40007 => "invalid media_id",
            40008 => "invalid message type",
            40009 => "invalid image size",
            40013 => "invalid corpid",
            40014 => "invalid access_token",
            40056 => "invalid agentid",
            40058 => "invalid parameter",
            41001 => "access_token missing",
            41002 => "corpid missing",
            41004 => "corpsecret missing",
            41005 => "media data missing",
            41006 => "media_id missing",
            42001 => "access_token expired",
            43001 => "require GET method",
            43002 => "require POST method",
            44001 => "empty media data",
            44002 => "empty post data",
            44003 => "empty news data",
            44004 => "empty content",
            45001 => "media size out of limit",
            45002 => "content size out of limit",
            45008 => "article size out of limit",
            45009 => "api freq out of limit",
            45033 => "api concurrent out of limit",
            47001 => "data format error",
            48002 => "api forbidden",
            60011 => "no privilege to access/modify contact/party/agent",
            60020 => "not allow to access from your ip",
            81013 => "user & party & tag all invalid",
            86001 => "invalid chatid",
            86003 => "chatid not exist",
            86215 => "chatid already exists",
            86216 => "invalid chat member",
            93000 => "invalid webhook url",
            95000 => "invalid open_kfid",
            95001 => "send msg count limit",
            95002 => "send msg time limit",
            95004 => "open_kfid not exist",
            95007 => "invalid msg token",
            95014 => "invalid service state transition",
            95018 => "send msg session status invalid",
            95024 => "no customer message in 48 hours",
            // Made up: the errcode of a reused kf msgid is undocumented (wecom-kf.md §4).
            95099 => "msgid exist",
            830002 => "file too large, use Range",
            // Made up: the AI bot's response_url has no documented errcodes (wecom-aibot.md §5).
            846601 => "invalid response_code",
            846602 => "response_code expired",
            846603 => "response_code already used",
            _ => "unknown error",
        },
        Family::Oa => match code {
            -1 => "system error",
            40001 => "invalid credential, access_token is invalid or not latest",
            40002 => "invalid grant_type",
            40003 => "invalid openid",
            40007 => "invalid media_id",
            40008 => "invalid message type",
            40013 => "invalid appid",
            40125 => "invalid appsecret",
            41001 => "access_token missing",
            41002 => "appid missing",
            41004 => "appsecret missing",
            41006 => "media_id missing",
            42001 => "access_token expired",
            43001 => "require GET method",
            43002 => "require POST method",
            44002 => "empty post data",
            44003 => "empty news data",
            44004 => "empty content",
            45002 => "content size out of limit",
            45008 => "article size out of limit",
            45009 => "reach max api daily quota limit",
            45011 => "api minute-quota reach limit",
            45015 => "response out of time limit or subscription is canceled",
            45047 => "out of response count limit",
            45072 => "command invalid",
            47001 => "data format error",
            48001 => "api unauthorized",
            _ => "unknown error",
        },
        Family::Ilink => match code {
            -14 => "session timeout",
            -2 => "prepare failed",
            -1 => "system error",
            _ => "unknown error",
        },
    }
}

/// An errcode body as the platform writes it: WeCom appends a hint and a devtool link, the OA an
/// `rid`, iLink uses `ret` (except `-14`, which comes as `errcode`).
pub(crate) fn errcode_response(family: Family, code: i64, errmsg: Option<String>) -> Response {
    let text = errmsg.unwrap_or_else(|| stock_errmsg(family, code).to_owned());
    match family {
        Family::Wecom => {
            let errmsg = if code == 0 {
                text
            } else {
                format!(
                    "{text}, hint: [{}_{}_{}], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={code}",
                    unix_secs(),
                    rand::rng().random_range(1..100u32),
                    random_hex(32)
                )
            };
            wechat_json(&json!({"errcode": code, "errmsg": errmsg}))
        }
        Family::Oa => {
            let rid = format!("{}-{}-{}", random_hex(8), random_hex(8), random_hex(8));
            wechat_json(&json!({"errcode": code, "errmsg": format!("{text} rid: {rid}")}))
        }
        Family::Ilink if code == -14 => ilink_json(&json!({"errcode": code, "errmsg": text})),
        Family::Ilink => ilink_json(&json!({"ret": code, "errmsg": text})),
    }
}

/// A WeChat (WeCom/OA) JSON answer: always HTTP 200, errors included.
pub(crate) fn wechat_json(body: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json; charset=UTF-8")], body.to_string()).into_response()
}

pub(crate) fn ilink_json(body: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `Fault::HttpStatus`: what Tencent's gateway (stgw) puts in front of an upstream failure. The
/// media hosts answer in their own way: the iLink CDN with an empty body (media.md §4.2), the AI
/// bot's object store (COS) with its XML error.
pub(crate) fn http_status_response(path: &str, code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match path {
        "/c2c/download" | "/c2c/upload" => return status.into_response(),
        "/aibot/media" => return cos_fault(status),
        _ => {}
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let n = status.as_u16();
    let page = format!(
        "<html>\r\n<head><title>{n} {reason}</title></head>\r\n<body>\r\n<center><h1>{n} {reason}</h1></center>\r\n<hr><center>stgw</center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

/// `Fault::Drop`: a response whose body fails before its first byte. hyper then closes the
/// connection without flushing the buffered head, so the client sees the connection end with no
/// (complete) response, as after a reset.
pub(crate) fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault injected: drop the connection",
        ))
    });
    Response::new(Body::from_stream(failing))
}

/// JSON type name for problem lines.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field's JSON for problem lines, or `nothing`.
pub(crate) fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_owned(), Value::to_string)
}

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A random token in the URL-safe alphabet real access tokens use.
pub(crate) fn random_string(len: usize) -> String {
    random_from(TOKEN_ALPHABET, len)
}

pub(crate) fn random_alnum(len: usize) -> String {
    random_from(&TOKEN_ALPHABET[..62], len)
}

pub(crate) fn random_hex(len: usize) -> String {
    random_from(b"0123456789abcdef", len)
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect()
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `Fault::HttpStatus` on the AI bot's media path: COS's error for that status.
pub(crate) fn cos_fault(status: StatusCode) -> Response {
    let code = match status.as_u16() {
        403 => "AccessDenied",
        404 => "NoSuchKey",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    cos_error(status, code, status.canonical_reason().unwrap_or("Error"))
}

/// An error answer of Tencent Cloud COS, which holds the AI bot's media.
pub(crate) fn cos_error(status: StatusCode, code: &str, message: &str) -> Response {
    cos_reject(status, code, message, "").into_response(Family::Wecom)
}

pub(crate) fn cos_reject(status: StatusCode, code: &str, message: &str, detail: impl Into<String>) -> Reject {
    let body = format!(
        "<?xml version='1.0' encoding='utf-8' ?>\n<Error>\n\t<Code>{code}</Code>\n\t<Message>{message}</Message>\n\t<RequestId>{}</RequestId>\n\t<TraceId>{}</TraceId>\n</Error>\n",
        random_alnum(32),
        random_alnum(64)
    );
    Reject::page(status, Some("application/xml"), body, detail)
}
