//! The wire formats, pure and synchronous: WXBizMsgCrypt, XML, query strings and the common
//! message fields. No I/O, no clock, no randomness of their own.

pub mod crypto;
pub mod fields;
pub mod hex;
pub mod query;
pub mod xml;
