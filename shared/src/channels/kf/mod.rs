//! 微信客服 (WeCom Customer Service, "kf"): personal WeChat users writing to a kf account,
//! served by a WeCom app. The `kf` config section, `sync_msg` items, the API calls and the
//! puller that turns each item into one `Inbound`.

pub mod api;
pub mod config;
pub mod media;
pub mod message;
pub mod outbound;
pub mod puller;

pub use config::KfAccount;
pub use message::{KfItem, SyncPage};
pub use puller::{KfPuller, PullReport};

use crate::core::envelope::OutChannel;
use crate::core::outbound::ReplyRoute;

/// Replies go back to the customer through the kf account.
pub const REPLIES: ReplyRoute =
    ReplyRoute { direct: OutChannel::WecomKf, group: OutChannel::WecomKf, passive: None, typing: false, stream: false };
