//! The fake's public vocabulary: the faults a test injects and the deliveries it reads back.
//!
//! The crate root re-exports these; they live here so that the handler modules, which the root
//! uses, need nothing from the root.

use std::time::Duration;

/// What to do to the next request on a path instead of (or before) handling it normally.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer HTTP 200 with this business error in the platform's shape
    /// (`{"errcode":N,"errmsg":…}`; on iLink `{"ret":N,…}`, or `{"errcode":-14,…}` for -14).
    Errcode(i64),
    /// Answer with this HTTP status and a gateway error page (on the iLink CDN an empty body, on
    /// `/aibot/media` COS's XML error, as those hosts send).
    HttpStatus(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without a complete HTTP response.
    Drop,
    /// Handle the request (it takes effect), then answer this HTTP status instead: a send whose
    /// outcome the client cannot know.
    LoseAnswer(u16),
}

/// One accepted send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub api: Api,
    /// corp_id (WeCom app, appchat), robot key (webhook), app_id (OA), bot_token (iLink),
    /// response_code (AI bot response_url).
    pub account: String,
    /// The request body as the client sent it.
    pub body: serde_json::Value,
    /// When it was accepted, unix microseconds.
    pub at_us: u64,
}

impl Delivery {
    /// A send accepted now.
    pub fn new(api: Api, account: String, body: serde_json::Value) -> Self {
        let at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default();
        Delivery { api, account, body, at_us }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    WecomMessage,
    WecomAppchat,
    WecomWebhook,
    OaCustom,
    OaTyping,
    Ilink,
    /// iLink `sendtyping` (status 1 typing, 2 cancel).
    IlinkTyping,
    /// A WeCom AI bot's `response_url` (one message per URL).
    AibotResponse,
    /// 微信客服 `kf/send_msg`.
    KfSend,
    /// 微信客服 `kf/send_msg_on_event` (a welcome).
    KfEvent,
}

/// How the fake iLink answers `getuploadurl` (both forms occur in the wild, media.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IlinkUploadAnswer {
    /// `upload_full_url` on the fake's own CDN, as the service answers since about 2.1.1.
    #[default]
    FullUrl,
    /// Only `upload_param`: the client builds `<cdn>/c2c/upload?encrypted_query_param=…&filekey=…`.
    ParamOnly,
    /// `upload_full_url` on this base URL instead of the fake's (a host that is not the CDN).
    FullUrlOn(String),
    /// `{"ret": N}` and no URL: the account-level refusal clients have seen (-1, -2).
    Ret(i64),
}

/// What a CDN upload answers instead of taking the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdnUploadFault {
    /// HTTP 500 with an empty body.
    ServerError,
    /// HTTP 200 without `x-encrypted-param` (seen server-side, Tencent/openclaw-weixin#172).
    NoParam,
    /// This 4xx status with this `x-error-message`.
    Refused(u16, String),
}

/// One upload reserved with `getuploadurl`, and its file once the CDN took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IlinkUpload {
    pub bot_token: String,
    pub to_user_id: String,
    /// 1 image, 2 video, 3 file, 4 voice.
    pub media_type: u8,
    pub filekey: String,
    /// The AES-128 key as the client announced it (32 hex digits).
    pub aeskey: String,
    pub rawsize: u64,
    /// MD5 of the plaintext as announced (lowercase hex).
    pub rawfilemd5: String,
    /// The CDN's `x-encrypted-param` for the file, once uploaded.
    pub encrypt_query_param: Option<String>,
    /// The file, decrypted with `aeskey`, once uploaded.
    pub bytes: Option<Vec<u8>>,
}

/// One accepted `sendmessage` carrying an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IlinkMediaSend {
    pub bot_token: String,
    pub to_user_id: String,
    /// The item's `type`: 2 image, 3 voice, 4 file, 5 video.
    pub item_type: u8,
    /// A file item's `file_name`.
    pub file_name: Option<String>,
    pub encrypt_query_param: String,
    /// The uploaded file, decrypted.
    pub bytes: Vec<u8>,
}

/// One request the fake answered and its answer, as logged with
/// [`crate::FakeWechat::record_exchanges`]. Bodies are JSON when they are JSON, else short text or
/// their size; nothing is masked.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// When it arrived, unix microseconds.
    pub at_us: u64,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub request: serde_json::Value,
    pub status: u16,
    pub response: serde_json::Value,
    /// How long the fake took to answer (a long poll's hold included).
    pub ms: u64,
}
