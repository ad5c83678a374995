//! The one HTTP client of a process, under every platform's API client: timeouts, transport
//! errors stripped of their URL, and JSON bodies with an `errcode` read the same way everywhere.
//!
//! Access tokens, robot keys and bot tokens travel in URLs and headers: transport errors are
//! stripped of their URL, and nothing here logs a request.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

/// What wxbridge calls itself in `User-Agent` and where a platform asks for a client name.
pub const USER_AGENT: &str = concat!("wxbridge/", env!("CARGO_PKG_VERSION"));

/// A failed API call. Display never contains a token, key or URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("transport: {detail}")]
    Transport {
        timeout: bool,
        /// No connection was made: the request certainly did not reach the server.
        connect: bool,
        detail: String,
    },
    #[error("HTTP {status}")]
    Http { status: u16 },
    #[error("errcode {code}: {message}")]
    Errcode { code: i64, message: String },
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ApiError {
    /// A transport error with its URL (which carries access tokens and robot keys) removed.
    pub fn transport(err: reqwest::Error) -> Self {
        let (timeout, connect) = (err.is_timeout(), err.is_connect());
        let err = err.without_url();
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Transport { timeout, connect, detail }
    }

    /// Whether the request certainly never reached the server (no connection was made).
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Transport { connect: true, .. })
    }

    /// The errcode, if the API answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Errcode { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// An errcode answer: `code` with the body's `errmsg`.
    pub fn from_errcode(code: i64, body: &Value) -> Self {
        Self::Errcode { code, message: body.get("errmsg").and_then(Value::as_str).unwrap_or_default().to_owned() }
    }
}

/// An access token and how long the platform says it lives.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub value: SecretString,
    pub expires_in: u64,
}

impl IssuedToken {
    /// Reads `{"access_token": …, "expires_in": …}` (WeCom and the Official Account alike).
    pub fn from_body(body: &Value) -> Result<Self, ApiError> {
        let value = body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
        let value = value.ok_or_else(|| ApiError::Decode("no access_token in the answer".into()))?;
        let expires_in = body.get("expires_in").and_then(Value::as_u64).unwrap_or(7200);
        Ok(Self { value: SecretString::from(value.to_owned()), expires_in })
    }
}

/// Timeouts of the client.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Whole-request timeout; iLink's sendmessage takes up to 15 s.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(15), connect_timeout: Duration::from_secs(3) }
    }
}

/// The process's HTTP client (a connection pool; clones share it).
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new(settings: &HttpSettings) -> Result<Self, ApiError> {
        let client = Self::builder(settings).build().map_err(ApiError::transport)?;
        Ok(Self { client })
    }

    fn builder(settings: &HttpSettings) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(USER_AGENT)
            // WeChat's APIs do not redirect; a redirect would carry tokens and bodies elsewhere
            // (and make a failed next hop look like a request that never reached WeChat).
            .redirect(reqwest::redirect::Policy::none())
    }

    /// A client for URLs a bot names: a host name that resolves to an internal address
    /// ([`is_internal`]: the instance metadata, the VPC, loopback) is refused, so a name like
    /// `10.0.0.5.nip.io` reaches nothing inside.
    pub fn public_only(settings: &HttpSettings) -> Result<Self, ApiError> {
        let client = Self::builder(settings).dns_resolver(PublicOnly).build().map_err(ApiError::transport)?;
        Ok(Self { client })
    }

    /// The client, to build requests with.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` and reads a JSON answer: a transport failure, a non-2xx status and an
    /// unreadable body are errors; an empty body is `{}` (iLink answers success that way).
    pub async fn json(request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let response = request.send().await.map_err(ApiError::transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ApiError::Http { status: status.as_u16() });
        }
        let bytes = response.bytes().await.map_err(ApiError::transport)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// Sends `request` and reads an answer whose top-level `errcode` (0 or absent is success)
    /// tells how it went, as WeCom and the Official Account answer.
    pub async fn errcode_json(request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        check_errcode(Self::json(request).await?)
    }
}

/// The answer of a media download.
#[derive(Debug)]
pub enum Download {
    /// The file: its body not read yet.
    File(reqwest::Response),
    /// A small file already read (a text or JSON file that turned out not to be an error).
    Read(Vec<u8>),
    /// A JSON answer without an error (the Official Account's video `{"video_url": …}`).
    Json(Value),
}

/// The largest error body a download reads as JSON.
const MAX_DOWNLOAD_ERROR: u64 = 64 * 1024;

/// Sends a media download: a 2xx answer is the file, unless it is a small JSON body with an
/// `errcode` (WeChat sends its errors with HTTP 200, typed `application/json` or even
/// `text/plain`, never with a `Content-Disposition`) or a `video_url`.
pub async fn download(request: reqwest::RequestBuilder) -> Result<Download, ApiError> {
    let response = request.send().await.map_err(ApiError::transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ApiError::Http { status: status.as_u16() });
    }
    let headers = response.headers();
    let typed = |prefix: &str| {
        headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(prefix))
    };
    let maybe_error = !headers.contains_key(reqwest::header::CONTENT_DISPOSITION)
        && (typed("application/json") || typed("text/plain"))
        && response.content_length().is_some_and(|n| n <= MAX_DOWNLOAD_ERROR);
    if !maybe_error {
        return Ok(Download::File(response));
    }
    let bytes = response.bytes().await.map_err(ApiError::transport)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(body) if body.get("errcode").is_some() || body.get("video_url").is_some() => {
            check_errcode(body).map(Download::Json)
        }
        // A text or JSON file: the file itself.
        _ => Ok(Download::Read(bytes.to_vec())),
    }
}

/// Errcode 0 or absent is success.
pub fn check_errcode(body: Value) -> Result<Value, ApiError> {
    match body.get("errcode").and_then(Value::as_i64) {
        None | Some(0) => Ok(body),
        Some(code) => Err(ApiError::from_errcode(code, &body)),
    }
}

/// Whether `ip` is inside a private network: loopback, link-local (the instance metadata
/// service), RFC 1918, carrier-grade NAT, "this network", broadcast, IPv6 unique-local and
/// link-local, and any of these written as IPv4-mapped IPv6 (`::ffff:127.0.0.1`).
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    let internal_v4 = |ip: std::net::Ipv4Addr| {
        let [a, b, ..] = ip.octets();
        ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_broadcast()
            || a == 0
            || (a == 100 && (b & 0xc0) == 64)
    };
    match ip {
        std::net::IpAddr::V4(ip) => internal_v4(ip),
        std::net::IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.to_ipv4_mapped().is_some_and(internal_v4)
                || ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves names with the system resolver and keeps only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public = public_addrs(found);
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The public addresses of `addrs`.
fn public_addrs(addrs: impl IntoIterator<Item = std::net::SocketAddr>) -> Vec<std::net::SocketAddr> {
    addrs.into_iter().filter(|a| !is_internal(a.ip())).collect()
}

/// The multipart form WeChat's `media/upload` APIs take: the file as part `media`, its name as
/// raw UTF-8 in `filename="…"` (percent-encoding, reqwest's default, would show the encoded
/// name; RFC 2231 `filename*` is refused).
pub fn media_form(file_name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
    reqwest::multipart::Form::new().percent_encode_noop().part("media", part)
}

/// A base URL without its trailing slash.
pub fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A string field of an answer, or the error naming it.
pub fn field(answer: &Value, name: &str) -> Result<String, ApiError> {
    answer
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::Decode(format!("no {name} in the answer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_resolving_inside_is_left_with_its_public_addresses_only() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let found = ["10.0.0.5:0", "169.254.169.254:0", "[::ffff:127.0.0.1]:0", "[fd00::1]:0", "203.0.113.7:0"];
        assert_eq!(public_addrs(found.map(addr)), [addr("203.0.113.7:0")]);
    }

    #[tokio::test]
    async fn the_public_only_client_refuses_a_name_of_this_machine() {
        let http = Http::public_only(&HttpSettings::default()).unwrap();
        let err = http.client().get("http://localhost:9/x").send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    #[tokio::test]
    async fn transport_errors_never_carry_the_token_or_key_in_the_url() {
        // Nothing listens on port 9: the connection is refused.
        let http = Http::new(&HttpSettings::default()).unwrap();
        let request = http.client().post("http://127.0.0.1:9/cgi-bin/x").query(&[("access_token", "TOPSECRET-TOKEN")]);
        let err = Http::errcode_json(request).await.unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("TOPSECRET"), "{err:?}");
    }

    #[test]
    fn errcode_zero_or_absent_is_success() {
        assert!(check_errcode(json!({"errcode": 0, "x": 1})).is_ok());
        assert!(check_errcode(json!({"x": 1})).is_ok());
        let err = check_errcode(json!({"errcode": 40014, "errmsg": "invalid access_token"})).unwrap_err();
        assert_eq!(err, ApiError::Errcode { code: 40014, message: "invalid access_token".into() });
    }

    #[test]
    fn reads_an_issued_token_with_its_lifetime() {
        let token = IssuedToken::from_body(&json!({"access_token": "t", "expires_in": 60})).unwrap();
        assert_eq!(token.expires_in, 60);
        assert!(IssuedToken::from_body(&json!({"access_token": ""})).is_err());
    }
}
