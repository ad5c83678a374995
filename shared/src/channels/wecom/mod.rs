//! WeCom (企业微信) self-built apps: the `wecom` config section, callback messages and passive
//! replies, the callback service, WeCom's API and its outbound delivery (app messages and app
//! group chats).

pub mod api;
pub mod callback;
pub mod config;
pub mod media;
pub mod message;
pub mod outbound;
#[cfg(any(test, feature = "test-util"))]
pub mod simulate;

pub use callback::WecomCallback;
pub use config::WecomApp;
pub use message::{TextReply, WecomCallbackMessage, WecomEvent, WecomMessage};

use crate::core::envelope::OutChannel;
use crate::core::outbound::ReplyRoute;

/// The callback route's first segment: `/wecom/{app}`.
pub const ROUTE: &str = "wecom";

/// A user's message is answered by app message; a group chat's in that app group chat.
pub const REPLIES: ReplyRoute = ReplyRoute {
    direct: OutChannel::WecomApp,
    group: OutChannel::WecomAppchat,
    passive: None,
    typing: false,
    stream: false,
};
