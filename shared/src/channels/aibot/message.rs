//! The decrypted JSON callbacks of the AI bot (placeholder; see the module docs of `aibot`).

/// A decrypted callback.
#[derive(Debug, Clone)]
pub enum AibotCallback {}

/// A user message.
#[derive(Debug, Clone)]
pub struct AibotMessage;

/// An event.
#[derive(Debug, Clone)]
pub struct AibotEvent;
