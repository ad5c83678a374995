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
    /// Answer with this HTTP status and a gateway error page (on `/c2c/download` an empty body, on
    /// `/aibot/media` COS's XML error, as those hosts send).
    HttpStatus(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without a complete HTTP response.
    Drop,
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
}
