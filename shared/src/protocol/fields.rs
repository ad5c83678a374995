//! Typed access to the fields of a parsed WeChat message, shared by every channel's parser.

use crate::protocol::xml::{Fields, XmlError};

/// Why a decrypted payload is not a message of its channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("required element <{0}> is missing")]
    Missing(&'static str),
    #[error("element <{0}> is not a valid number")]
    NotANumber(&'static str),
    /// A JSON message that is not what the platform documents; the reason never quotes input.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The four elements every WeChat callback message has.
pub(crate) struct Common {
    pub to: String,
    pub from: String,
    pub create_time: u64,
    pub msg_type: String,
}

/// Reads [`Common`]: a message without them is refused.
pub(crate) fn common(fields: &Fields) -> Result<Common, MessageError> {
    Ok(Common {
        to: required(fields, "ToUserName")?.to_owned(),
        from: required(fields, "FromUserName")?.to_owned(),
        create_time: number(fields, "CreateTime")?.ok_or(MessageError::Missing("CreateTime"))?,
        msg_type: required(fields, "MsgType")?.to_owned(),
    })
}

pub(crate) fn required<'a>(fields: &'a Fields, name: &'static str) -> Result<&'a str, MessageError> {
    fields.text(name).ok_or(MessageError::Missing(name))
}

pub(crate) fn owned(fields: &Fields, name: &str) -> Option<String> {
    fields.non_empty(name).map(str::to_owned)
}

pub(crate) fn number<T: std::str::FromStr + Finite>(
    fields: &Fields,
    name: &'static str,
) -> Result<Option<T>, MessageError> {
    match fields.non_empty(name) {
        None => Ok(None),
        Some(text) => match text.trim().parse::<T>() {
            Ok(value) if value.is_finite() => Ok(Some(value)),
            _ => Err(MessageError::NotANumber(name)),
        },
    }
}

/// Numbers from XML must be finite: JSON has no NaN or infinity.
pub(crate) trait Finite {
    fn is_finite(&self) -> bool;
}

impl Finite for f64 {
    fn is_finite(&self) -> bool {
        f64::is_finite(*self)
    }
}

macro_rules! always_finite {
    ($($t:ty),*) => { $(impl Finite for $t { fn is_finite(&self) -> bool { true } })* };
}
always_finite!(u32, u64);

/// A coordinate or precision: kept in `raw` as sent, typed here only when it parses.
pub(crate) fn lenient_f64(fields: &Fields, name: &str) -> Option<f64> {
    fields.non_empty(name).and_then(|t| t.trim().parse().ok()).filter(|v: &f64| v.is_finite())
}

pub(crate) fn texts(value: Option<&crate::protocol::xml::XmlValue>) -> Vec<String> {
    value.map(|v| v.items().iter().filter_map(|item| item.text().map(str::to_owned)).collect()).unwrap_or_default()
}

pub(crate) fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// Formats without allocating (replies are on the hot path).
pub(crate) fn format_u64(buf: &mut [u8; 20], mut value: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}
