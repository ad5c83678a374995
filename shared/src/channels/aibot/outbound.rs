//! The AI bot's outbound delivery (being built).

use async_trait::async_trait;

use crate::core::envelope::{Content, Outbound};
use crate::core::outbound::{Delivered, Delivery, Unit};
use crate::core::retry::Failure;

/// Answers into a message's stream, else through its `response_url`.
pub struct AibotDelivery;

#[async_trait]
impl Delivery for AibotDelivery {
    fn has_account(&self, _account: &str) -> bool {
        false
    }
    fn refuse(&self, _content: &Content) -> Option<&'static str> {
        Some("not available yet")
    }
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (20_480, Unit::Bytes)
    }
    async fn deliver(&self, _out: &Outbound, _part: &Content, _key: &str, _retry: bool) -> Result<Delivered, Failure> {
        Err(Failure::permanent("not available yet".to_owned()))
    }
}
