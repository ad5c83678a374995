//! WeCom (企业微信) self-built apps: callback messages, passive replies and the callback service.

pub mod callback;
pub mod message;
pub mod simulate;

pub use callback::{CallbackRequest, CallbackResponse, WecomCallback};
pub use message::{TextReply, WecomCallbackMessage, WecomEvent, WecomMessage};
