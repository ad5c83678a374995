//! Official Accounts (公众号): the `oa` and `oa_window` config sections, callback messages in
//! plaintext, compatible and safe modes, passive replies inside the stretched 5-second window,
//! the API and customer-service delivery.

pub mod api;
pub mod callback;
pub mod config;
pub mod media;
pub mod message;
pub mod outbound;
pub mod reply;
#[cfg(any(test, feature = "test-util"))]
pub mod request;
pub mod service;

pub use config::{OaApp, OaWindow};
pub use message::{OaCallbackMessage, OaEvent, OaMessage};
pub use reply::{PassiveReply, SUCCESS};

use crate::core::envelope::{Content, OutChannel};
use crate::core::outbound::ReplyRoute;

/// The callback route's first segment: `/oa/{app}`.
pub const ROUTE: &str = "oa";

fn fits_passive(content: &Content, to_event: bool) -> bool {
    service::passive(content, to_event).is_some()
}

/// The first reply goes as the passive reply when it is ready in time; the rest (and a late
/// first) by customer service.
pub const REPLIES: ReplyRoute = ReplyRoute {
    direct: OutChannel::Oa,
    group: OutChannel::Oa,
    passive: Some(fits_passive),
    typing: false,
    stream: false,
};
