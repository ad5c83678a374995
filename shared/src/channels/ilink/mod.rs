//! iLink bots (personal WeChat, 1:1): the `ilink` config section, inbound messages, the API
//! (long polls, sends, uploads, typing, QR login), the poller, outbound delivery and the CDN
//! uploads of the files it sends.

pub mod api;
pub mod config;
pub mod media;
pub mod message;
pub mod outbound;
pub mod poller;
pub mod typing;
pub mod upload;

pub use api::{IlinkLogin, QrCode, QrStatus};
pub use config::IlinkAccount;
pub use message::WeixinMessage;
pub use poller::{Poller, Turn};
pub use typing::IlinkTyping;

use crate::core::envelope::OutChannel;
use crate::core::outbound::ReplyRoute;

/// Replies go back through the bot; the user sees "typing…" meanwhile.
pub const REPLIES: ReplyRoute =
    ReplyRoute { direct: OutChannel::Ilink, group: OutChannel::Ilink, passive: None, typing: true, stream: false };
