//! The loops that move messages: the dispatcher (inbound → bot → replies) and the sender
//! (outbound → WeChat), and the bots the dispatcher can call.

pub mod bots;
pub mod chat;
pub mod dify;
pub mod dispatcher;
pub mod files;
pub mod media;
pub mod router;
pub mod sender;
