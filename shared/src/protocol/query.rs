//! Callback query strings, decoded as WeChat encodes them.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// A query string was not decodable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query parameter {0} is missing")]
    Missing(&'static str),
    #[error("query parameter {0} is not valid percent-encoded UTF-8")]
    Encoding(String),
}

/// The decoded parameters of a raw query string.
///
/// Values are percent-decoded and `+` stays a plus: WeChat percent-encodes `+` in base64
/// values, so reading `+` as a space (form decoding) would corrupt the ciphertext.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pairs: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, QueryError> {
        let raw = raw.strip_prefix('?').unwrap_or(raw);
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| QueryError::Encoding(name.chars().take(32).collect()))?;
            pairs.push((name, value));
        }
        Ok(Self { pairs })
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_ref())
    }

    /// The first value of `name`, which must be present.
    pub fn require(&self, name: &'static str) -> Result<&str, QueryError> {
        self.get(name).ok_or(QueryError::Missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decodes_and_keeps_plus() {
        let q = Query::parse("echostr=wB%2Bm%2F%3D%3D&a=1+2&empty=&flag").unwrap();
        assert_eq!(q.get("echostr"), Some("wB+m/=="));
        assert_eq!(q.get("a"), Some("1+2"));
        assert_eq!(q.get("empty"), Some(""));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.require("nonce").unwrap_err(), QueryError::Missing("nonce"));
    }

    #[test]
    fn rejects_invalid_utf8_and_takes_the_first_duplicate() {
        assert!(matches!(Query::parse("a=%ff%fe").unwrap_err(), QueryError::Encoding(_)));
        assert_eq!(Query::parse("?a=1&a=2").unwrap().get("a"), Some("1"));
    }
}
