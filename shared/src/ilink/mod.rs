//! iLink bots (personal WeChat, 1:1): inbound messages. The poller and login come with the
//! iLink poller; sending is in `crate::sender`.

pub mod message;

pub use message::WeixinMessage;
