//! Telling an Official Account callback's mode apart, authenticating it, and sealing the reply
//! in the same mode. Pure: the HTTP function around it publishes and waits on the reply slot.

use secrecy::{ExposeSecret, SecretString};

use crate::core::callback::CallbackError;
use crate::protocol::crypto::{plain_signature, MsgCrypt};
use crate::protocol::query::Query;
use crate::protocol::xml;

/// How the account exchanges messages (set in its console; each request says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 明文: plaintext body, only the `signature` over token, timestamp and nonce.
    Plain,
    /// 兼容: plaintext fields and `Encrypt` side by side; only the ciphertext is authenticated.
    Compatible,
    /// 安全: only `Encrypt`.
    Safe,
}

/// Refusals are the callbacks' shared [`CallbackError`]: one map to HTTP statuses.
pub type OaError = CallbackError;

/// One account's credentials for callbacks.
#[derive(Debug, Clone)]
pub struct OaAuth {
    token: SecretString,
    crypt: Option<MsgCrypt>,
}

impl OaAuth {
    pub fn new(token: &SecretString, crypt: Option<MsgCrypt>) -> Self {
        Self { token: token.clone(), crypt }
    }

    fn check_plain(&self, query: &Query<'_>) -> Result<(), OaError> {
        let expected =
            plain_signature(self.token.expose_secret(), query.require("timestamp")?, query.require("nonce")?);
        if expected.matches(query.require("signature")?) {
            Ok(())
        } else {
            Err(OaError::Signature)
        }
    }

    /// GET: the plain signature checks out → answer `echostr` unchanged (every mode).
    pub fn verify_url<'q>(&self, query: &'q Query<'q>) -> Result<&'q str, OaError> {
        self.check_plain(query)?;
        Ok(query.require("echostr")?)
    }

    /// POST: authenticates the body and returns its mode and the message XML to parse.
    ///
    /// With `encrypt_type=aes`, only `msg_signature` authenticates the ciphertext (the plain
    /// `signature` does not cover the body), and the plaintext copy of compatible mode is ignored.
    pub fn open(&self, query: &Query<'_>, body: &str) -> Result<(Mode, String), OaError> {
        if query.get("encrypt_type") != Some("aes") {
            // With a key the account is in compatible or safe mode, where WeChat always encrypts:
            // a plaintext request (whose body no signature covers) is not WeChat's.
            if self.crypt.is_some() {
                return Err(OaError::Signature);
            }
            self.check_plain(query)?;
            xml::parse(body).map_err(OaError::Body)?;
            return Ok((Mode::Plain, body.to_owned()));
        }
        let crypt = self.crypt.as_ref().ok_or(OaError::NoKey)?;
        let fields = xml::parse(body).map_err(OaError::Body)?;
        let encrypt = fields.text("Encrypt").map(str::trim).ok_or(OaError::NoEncrypt)?;
        let verified = crypt
            .verify(query.require("msg_signature")?, query.require("timestamp")?, query.require("nonce")?, encrypt)
            .map_err(|_| OaError::Signature)?;
        let plaintext = crypt.decrypt(verified).map_err(OaError::Crypto)?;
        let mode = if fields.iter().any(|(name, _)| name != "ToUserName" && name != "Encrypt") {
            Mode::Compatible
        } else {
            Mode::Safe
        };
        Ok((mode, plaintext))
    }

    /// The reply body in the request's mode: plaintext XML, or encrypted and signed (compatible
    /// mode accepts both; wxbridge encrypts whenever it can).
    pub fn seal(&self, mode: Mode, reply_xml: &str, random: [u8; 16], timestamp: &str, nonce: &str) -> String {
        match (mode, &self.crypt) {
            (Mode::Plain, _) | (_, None) => reply_xml.to_owned(),
            (_, Some(crypt)) => crypt.encrypt_reply(reply_xml, random, timestamp, nonce),
        }
    }
}
