//! The WeCom AI bot (智能机器人, API mode): JSON callbacks encrypted with receive id `""`,
//! answers that are streams WeCom polls for about six minutes, and the message's single-use
//! `response_url` after that.

pub mod api;
pub mod config;
pub mod media;
pub mod message;
pub mod outbound;
pub mod service;
pub mod stream;

pub use config::{AiBot, StreamWindow};
pub use message::{AibotCallback, AibotEvent, AibotMessage};
pub use service::AibotService;
pub use stream::{stream_key, MAX_CONTENT_BYTES};

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
