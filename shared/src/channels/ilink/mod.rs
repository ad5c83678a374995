//! iLink bots (personal WeChat, 1:1): inbound messages and the long-polling poller; sending is
//! in `crate::services::sender`.

pub mod client;
pub mod message;
pub mod poller;
pub mod typing;

pub use client::{IlinkLogin, QrCode, QrStatus};
pub use message::WeixinMessage;
pub use poller::{Poller, Turn};
pub use typing::IlinkTyping;
