//! WXBizMsgCrypt: the signing and encryption scheme of WeCom and Official Account callbacks.
//!
//! Pure code: no I/O, no clock, no global randomness. The 16-byte random prefix of a ciphertext is
//! a parameter ([`MsgCrypt::encrypt`]); production code takes it from [`random_prefix`] (the OS
//! CSPRNG). Decryption only accepts a [`Verified`] ciphertext, which only a successful signature
//! check can produce.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// WXBizMsgCrypt pads to 32-byte blocks (not AES's 16).
const PAD_BLOCK: usize = 32;
/// random(16) + be32 length.
const HEADER_LEN: usize = 20;

/// Why a callback could not be authenticated or decrypted.
///
/// [`CryptoError::kind`] names each variant as the test vectors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("signature mismatch")]
    SignatureMismatch,
    #[error("EncodingAESKey must be 43 base64 characters that decode to 32 bytes")]
    IllegalAesKey,
    #[error("ciphertext is not valid base64")]
    Base64Invalid,
    #[error("ciphertext length is not a positive multiple of 16")]
    AesInvalidLength,
    #[error("bad PKCS#7 padding")]
    BadPadding,
    #[error("decrypted text is shorter than its 20-byte header")]
    PlaintextTooShort,
    #[error("message length field points past the end")]
    MsgLenOutOfRange,
    #[error("receive id does not match")]
    ReceiveIdMismatch,
    #[error("message is not valid UTF-8")]
    InvalidUtf8,
}

impl CryptoError {
    /// The error kind as `../vectors/crypto.json` spells it.
    pub fn kind(self) -> &'static str {
        match self {
            Self::SignatureMismatch => "signature_mismatch",
            Self::IllegalAesKey => "illegal_aes_key",
            Self::Base64Invalid => "base64_invalid",
            Self::AesInvalidLength => "aes_invalid_length",
            Self::BadPadding => "bad_padding",
            Self::PlaintextTooShort => "plaintext_too_short",
            Self::MsgLenOutOfRange => "msg_len_out_of_range",
            Self::ReceiveIdMismatch => "receive_id_mismatch",
            Self::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// The 32-byte AES key behind an EncodingAESKey, parsed once at config load.
#[derive(Clone)]
pub struct EncodingAesKey([u8; 32]);

impl EncodingAesKey {
    /// Parses the 43-character EncodingAESKey from the admin console.
    ///
    /// Most real keys have non-zero unused bits in their last character; those are accepted.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        // The last of 43 base64 characters carries two unused bits that Tencent does not zero.
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(DecodePaddingMode::RequireNone),
        );
        if s.len() != 43 {
            return Err(CryptoError::IllegalAesKey);
        }
        let mut key = [0u8; 32];
        match LENIENT.decode_slice(s, &mut key) {
            Ok(32) => Ok(Self(key)),
            _ => Err(CryptoError::IllegalAesKey),
        }
    }

    /// The raw key: WeCom AI bots encrypt their files with it too (AES-256-CBC).
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

impl std::fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodingAesKey([redacted])")
    }
}

/// A 40-character lowercase hex SHA-1 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 40]);

impl Signature {
    pub fn as_str(&self) -> &str {
        // Only lowercase hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Compares with a received signature in constant time.
    pub fn matches(&self, received: &str) -> bool {
        received.len() == 40 && bool::from(self.0.ct_eq(received.as_bytes()))
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.as_str())
    }
}

/// SHA-1 over the lexicographically sorted concatenation of `parts`, as lowercase hex.
///
/// Encrypted modes sign `[token, timestamp, nonce, encrypt]`; the Official Account's plain
/// `signature` signs `[token, timestamp, nonce]`.
pub fn sign(parts: &mut [&str]) -> Signature {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut hex = [0u8; 40];
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in digest.iter().enumerate() {
        hex[2 * i] = DIGITS[usize::from(byte >> 4)];
        hex[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    Signature(hex)
}

/// The plain signature over `[token, timestamp, nonce]` (Official Account URL verification and
/// plaintext mode).
pub fn plain_signature(token: &str, timestamp: &str, nonce: &str) -> Signature {
    sign(&mut [token, timestamp, nonce])
}

/// Proof that a ciphertext's `msg_signature` was checked; only [`MsgCrypt::verify`] makes one.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    encrypt: &'a str,
}

impl<'a> Verified<'a> {
    /// The verified base64 ciphertext.
    pub fn encrypt(&self) -> &'a str {
        self.encrypt
    }
}

/// One account's WXBizMsgCrypt: its Token, its AES key and its receive id (CorpID or AppID).
#[derive(Clone)]
pub struct MsgCrypt {
    token: SecretString,
    key: EncodingAesKey,
    cipher: Aes256,
    receive_id: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("token", &"[redacted]")
            .field("key", &self.key)
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

impl MsgCrypt {
    /// Builds the crypto of one account; the AES key schedule is computed once here.
    pub fn new(token: &str, key: &EncodingAesKey, receive_id: &str) -> Self {
        Self {
            token: SecretString::from(token.to_owned()),
            cipher: Aes256::new(&key.0.into()),
            key: key.clone(),
            receive_id: receive_id.to_owned(),
        }
    }

    /// The receive id this account expects after every message.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// `msg_signature` over `[token, timestamp, nonce, encrypt]`.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> Signature {
        sign(&mut [self.token.expose_secret(), timestamp, nonce, encrypt])
    }

    /// The plain signature over `[token, timestamp, nonce]`.
    pub fn plain_signature(&self, timestamp: &str, nonce: &str) -> Signature {
        plain_signature(self.token.expose_secret(), timestamp, nonce)
    }

    /// Checks `msg_signature` (constant time) and returns the proof that decryption needs.
    pub fn verify<'a>(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &'a str,
    ) -> Result<Verified<'a>, CryptoError> {
        if self.signature(timestamp, nonce, encrypt).matches(msg_signature) {
            Ok(Verified { encrypt })
        } else {
            Err(CryptoError::SignatureMismatch)
        }
    }

    /// Decrypts a verified ciphertext and returns the message, checking every layer strictly:
    /// base64, block length, all PKCS#7 pad bytes, the length field, the receive id and UTF-8.
    pub fn decrypt(&self, verified: Verified<'_>) -> Result<String, CryptoError> {
        // Strict standard base64 with padding; SIMD, as this runs on every callback.
        let mut buf =
            base64_simd::STANDARD.decode_to_vec(verified.encrypt.as_bytes()).map_err(|_| CryptoError::Base64Invalid)?;
        let len = buf.len();
        if len == 0 || len % 16 != 0 {
            return Err(CryptoError::AesInvalidLength);
        }
        cbc::Decryptor::<Aes256>::inner_iv_init(self.cipher.clone(), &self.key.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::AesInvalidLength)?;

        let pad = usize::from(buf[len - 1]);
        if pad == 0 || pad > PAD_BLOCK || pad > len || buf[len - pad..].iter().any(|&b| usize::from(b) != pad) {
            return Err(CryptoError::BadPadding);
        }
        let body = len - pad;
        if body < HEADER_LEN {
            return Err(CryptoError::PlaintextTooShort);
        }
        let msg_len = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
        let msg_end =
            HEADER_LEN.checked_add(msg_len).filter(|&end| end <= body).ok_or(CryptoError::MsgLenOutOfRange)?;
        if &buf[msg_end..body] != self.receive_id.as_bytes() {
            return Err(CryptoError::ReceiveIdMismatch);
        }
        buf.truncate(msg_end);
        buf.drain(..HEADER_LEN);
        into_string(buf)
    }

    /// Encrypts `msg` with the given 16-byte random prefix; returns the base64 `Encrypt` value.
    pub fn encrypt(&self, msg: &str, random: [u8; 16]) -> String {
        base64_simd::STANDARD.encode_to_string(self.encrypt_bytes(msg, random))
    }

    /// The ciphertext before base64.
    fn encrypt_bytes(&self, msg: &str, random: [u8; 16]) -> Vec<u8> {
        let plain_len = HEADER_LEN + msg.len() + self.receive_id.len();
        let pad = PAD_BLOCK - plain_len % PAD_BLOCK;
        let mut buf = Vec::with_capacity(plain_len + pad);
        buf.extend_from_slice(&random);
        // WeChat messages are far below 4 GiB; the length field is 32 bits by protocol.
        buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        buf.extend_from_slice(msg.as_bytes());
        buf.extend_from_slice(self.receive_id.as_bytes());
        buf.resize(plain_len + pad, pad as u8);
        let total = buf.len();
        // The buffer is a whole number of blocks, so encryption cannot fail.
        let _ = cbc::Encryptor::<Aes256>::inner_iv_init(self.cipher.clone(), &self.key.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, total);
        buf
    }

    /// Encrypts and signs a passive reply, rendering the outer `<xml><Encrypt/>…</xml>` body.
    pub fn encrypt_reply(&self, reply_xml: &str, random: [u8; 16], timestamp: &str, nonce: &str) -> String {
        let cipher = self.encrypt_bytes(reply_xml, random);
        let mut out = crate::protocol::xml::XmlWriter::with_capacity(cipher.len() / 3 * 4 + 200);
        out.raw("<xml>\n");
        // Encoded straight into the reply; the signature covers exactly that text.
        let encrypt = out.cdata_base64("Encrypt", &cipher);
        let signature = self.signature(timestamp, nonce, &out.as_str()[encrypt]);
        out.raw("\n");
        out.cdata_element("MsgSignature", signature.as_str());
        out.raw("\n");
        out.text_element("TimeStamp", timestamp);
        out.raw("\n");
        out.cdata_element("Nonce", nonce);
        out.raw("\n</xml>");
        out.finish()
    }
    /// Encrypts and signs the answer to a JSON callback (the WeCom AI bot):
    /// `{"encrypt", "msgsignature", "timestamp", "nonce"}`, the nonce being the callback's.
    pub fn encrypt_json_reply(&self, reply_json: &str, random: [u8; 16], timestamp: u64, nonce: &str) -> String {
        let encrypt = self.encrypt(reply_json, random);
        let signature = self.signature(&timestamp.to_string(), nonce, &encrypt);
        serde_json::json!({
            "encrypt": encrypt,
            "msgsignature": signature.as_str(),
            "timestamp": timestamp,
            "nonce": nonce,
        })
        .to_string()
    }
}

/// Validates UTF-8 with SIMD: Chinese text validates ~10× faster than with `String::from_utf8`,
/// and this runs on every callback.
#[allow(unsafe_code)]
fn into_string(bytes: Vec<u8>) -> Result<String, CryptoError> {
    simdutf8::basic::from_utf8(&bytes).map_err(|_| CryptoError::InvalidUtf8)?;
    // SAFETY: `simdutf8` has just validated every byte of `bytes` as UTF-8.
    Ok(unsafe { String::from_utf8_unchecked(bytes) })
}

/// 16 bytes from a CSPRNG (the thread-local ChaCha generator, seeded and periodically reseeded
/// from the operating system), for the prefix of every ciphertext we produce.
pub fn random_prefix() -> [u8; 16] {
    use rand::Rng as _;
    let mut random = [0u8; 16];
    rand::rng().fill_bytes(&mut random);
    random
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::fixtures::WECOM_AES_KEY as KEY;

    fn crypt() -> MsgCrypt {
        MsgCrypt::new("tok", &EncodingAesKey::parse(KEY).unwrap(), "ww1")
    }

    #[test]
    fn accepts_key_whose_last_character_has_trailing_bits() {
        // 'v' = 0b101111: its two low bits are set and unused.
        assert!(EncodingAesKey::parse(KEY).is_ok());
        assert!(EncodingAesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").is_ok());
    }

    #[test]
    fn rejects_keys_of_wrong_length_or_alphabet() {
        assert_eq!(EncodingAesKey::parse(&KEY[..42]).unwrap_err(), CryptoError::IllegalAesKey);
        assert_eq!(EncodingAesKey::parse(&format!("{KEY}=")).unwrap_err(), CryptoError::IllegalAesKey);
        assert_eq!(EncodingAesKey::parse(&format!("{}!", &KEY[..42])).unwrap_err(), CryptoError::IllegalAesKey);
        assert_eq!(EncodingAesKey::parse("").unwrap_err(), CryptoError::IllegalAesKey);
    }

    #[test]
    fn key_debug_output_is_redacted() {
        let shown = format!("{:?}", crypt());
        assert!(!shown.contains("tok\""), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn round_trips_every_padding_length() {
        let c = crypt();
        for len in 0..80 {
            let msg = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let enc = c.encrypt(&msg, [7; 16]);
            let proof = c.verify(c.signature("1", "n", &enc).as_str(), "1", "n", &enc).unwrap();
            assert_eq!(c.decrypt(proof).unwrap(), msg);
        }
    }

    #[test]
    fn signature_rejects_uppercase_and_wrong_length() {
        let c = crypt();
        let sig = c.signature("1", "n", "abc");
        assert!(c.verify(sig.as_str(), "1", "n", "abc").is_ok());
        assert_eq!(
            c.verify(&sig.as_str().to_uppercase(), "1", "n", "abc").unwrap_err(),
            CryptoError::SignatureMismatch
        );
        assert_eq!(c.verify(&sig.as_str()[..39], "1", "n", "abc").unwrap_err(), CryptoError::SignatureMismatch);
        assert_eq!(c.verify("", "1", "n", "abc").unwrap_err(), CryptoError::SignatureMismatch);
    }

    #[test]
    fn rejects_ciphertext_with_garbage_after_base64() {
        let c = crypt();
        let enc = c.encrypt("hi", [0; 16]) + "\n";
        let proof = c.verify(c.signature("1", "n", &enc).as_str(), "1", "n", &enc).unwrap();
        assert_eq!(c.decrypt(proof).unwrap_err(), CryptoError::Base64Invalid);
    }

    #[test]
    fn utf8_is_validated_exactly() {
        assert_eq!(into_string("你好 🚀".as_bytes().to_vec()).unwrap(), "你好 🚀");
        for bad in [&b"\xff"[..], b"\xe4\xbd", b"ok\xc0\x80", b"\xed\xa0\x80"] {
            assert_eq!(into_string(bad.to_vec()).unwrap_err(), CryptoError::InvalidUtf8, "{bad:?}");
        }
    }

    #[test]
    fn random_prefixes_differ() {
        assert_ne!(random_prefix(), random_prefix());
    }
}
