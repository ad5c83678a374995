//! The WeCom AI bot (智能机器人, API mode): JSON callbacks encrypted with receive id `""`,
//! answers that are streams WeCom polls for about six minutes, and the message's single-use
//! `response_url` after that.

pub mod api;
pub mod config;
pub mod message;
pub mod outbound;
pub mod service;

pub use config::{AiBot, StreamWindow};
pub use message::{AibotCallback, AibotEvent, AibotMessage};
pub use service::AibotService;

use crate::core::envelope::OutChannel;
use crate::core::outbound::ReplyRoute;

/// The callback route's first segment: `/aibot/{bot}`.
pub const ROUTE: &str = "aibot";

/// Answers go into the message's stream (or its `response_url`), in a group as in a direct chat.
pub const REPLIES: ReplyRoute = ReplyRoute {
    direct: OutChannel::WecomAibot,
    group: OutChannel::WecomAibot,
    passive: None,
    typing: false,
    stream: true,
};

/// The most a stream answer (and a `response_url` markdown) may carry, in UTF-8 bytes.
pub const MAX_CONTENT_BYTES: usize = 20_480;

pub use crate::core::ports::cut_utf8;

/// The stream of the message with Inbound id `inbound_id` to bot `bot`: its item key and the id
/// WeCom sees. Derived, so every delivery of a message names the same stream and the dispatcher
/// finds it from the Inbound alone.
pub fn stream_key(bot: &str, inbound_id: &str) -> (String, String) {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(inbound_id.as_bytes());
    let id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    (format!("{bot}#{id}"), id)
}
