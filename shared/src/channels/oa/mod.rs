//! Official Accounts (公众号): callback messages in plaintext, compatible and safe modes, and
//! passive replies.

pub mod callback;
pub mod message;
pub mod reply;
pub mod request;
pub mod service;
pub mod simulate;

pub use message::{OaCallbackMessage, OaEvent, OaMessage};
pub use reply::{PassiveReply, SUCCESS};
