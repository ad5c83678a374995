//! WXBizMsgCrypt as WeCom runs it for an AI bot (message-crypto.md §2–§5), written apart from
//! `shared::protocol::crypto` on purpose: the fake holds the bridge to the protocol, not to a copy
//! of its own code, so a bug in one implementation shows up as a disagreement with the other.
//!
//! Every error names the failed check with the error kind of `fixtures/vectors/crypto.json` as its
//! first word (`bad_padding: …`), so tests can check the kind and a person can read the rest.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use sha1::{Digest, Sha1};

/// PKCS#7 block of WXBizMsgCrypt: 32 bytes, not AES's 16.
const PAD_BLOCK: usize = 32;
/// 16 random bytes and the 4-byte message length.
const FRAME_HEAD: usize = 20;

/// Most real EncodingAESKeys have non-zero unused bits in their last character; Tencent's decoders
/// ignore them, the `base64` crate's standard engine does not.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// The 32-byte AES key of an EncodingAESKey: 43 base64 characters with `=` appended, unused bits
/// ignored.
pub(crate) fn aes_key(encoding_aes_key: &str) -> Result<[u8; 32], String> {
    if encoding_aes_key.len() != 43 {
        return Err(format!("illegal_aes_key: EncodingAESKey is {} characters, not 43", encoding_aes_key.len()));
    }
    let bytes = KEY_BASE64
        .decode(format!("{encoding_aes_key}="))
        .map_err(|e| format!("illegal_aes_key: EncodingAESKey is not base64: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("illegal_aes_key: EncodingAESKey decodes to {} bytes, not 32", bytes.len()))
}

/// One AI bot's Token and AES key: signs, encrypts and strictly decrypts.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MsgCrypt { token: <redacted>, key: <redacted> }")
    }
}

impl MsgCrypt {
    /// `encoding_aes_key` must be 43 base64 characters that decode (with `=` appended) to 32 bytes.
    pub fn new(token: &str, encoding_aes_key: &str) -> Result<MsgCrypt, String> {
        Ok(MsgCrypt { token: token.to_owned(), key: aes_key(encoding_aes_key)? })
    }

    /// `sha1_hex(concat(sort([token, timestamp, nonce, encrypt])))`, lowercase.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypt];
        parts.sort_unstable();
        let digest = Sha1::digest(parts.concat().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks a `msg_signature` / `msgsignature` over the four values.
    pub fn verify(&self, signature: &str, timestamp: &str, nonce: &str, encrypt: &str) -> Result<(), String> {
        let expected = self.signature(timestamp, nonce, encrypt);
        if signature == expected {
            Ok(())
        } else {
            Err(format!(
                "signature_mismatch: {signature:?} is not sha1(sort[token, timestamp {timestamp:?}, nonce {nonce:?}, encrypt]) = {expected}"
            ))
        }
    }

    /// The base64 ciphertext of `random || be32(len) || message || receive_id`, PKCS#7-padded to 32.
    /// The random prefix is a parameter so that tests can reproduce vectors byte for byte.
    pub fn encrypt(&self, random: [u8; 16], message: &str, receive_id: &str) -> String {
        let len = u32::try_from(message.len()).expect("a test message under 4 GiB");
        let mut plain = Vec::with_capacity(FRAME_HEAD + message.len() + receive_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(receive_id.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.resize(plain.len() + pad, pad as u8);
        let padded = plain.len();
        let cipher = cbc::Encryptor::<Aes256>::new(&self.key.into(), &self.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, padded)
            .expect("input is a whole number of blocks");
        STANDARD.encode(cipher)
    }

    /// Decrypts `encrypt` and returns the message, checking in order: base64, block length, PKCS#7
    /// padding (1..=32, every pad byte), frame length, the message length field, the receive id
    /// (exactly, `""` included) and UTF-8.
    pub fn decrypt(&self, encrypt: &str, receive_id: &str) -> Result<String, String> {
        let mut buf = STANDARD.decode(encrypt).map_err(|e| format!("base64_invalid: ciphertext: {e}"))?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(format!(
                "aes_invalid_length: ciphertext is {} bytes, not a positive multiple of 16",
                buf.len()
            ));
        }
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| "aes_invalid_length: ciphertext is not whole blocks".to_owned())?;
        let pad = usize::from(plain[plain.len() - 1]);
        if !(1..=PAD_BLOCK).contains(&pad) || pad > plain.len() {
            return Err(format!("bad_padding: last byte {pad} is not a PKCS#7 pad length in 1..=32"));
        }
        let (unpadded, padding) = plain.split_at(plain.len() - pad);
        if padding.iter().any(|&b| usize::from(b) != pad) {
            return Err(format!("bad_padding: the last {pad} bytes are not all {pad}"));
        }
        if unpadded.len() < FRAME_HEAD {
            return Err(format!("plaintext_too_short: {} bytes after unpadding, the frame head is 20", unpadded.len()));
        }
        let len_field = u32::from_be_bytes([unpadded[16], unpadded[17], unpadded[18], unpadded[19]]);
        let rest = &unpadded[FRAME_HEAD..];
        let msg_len = usize::try_from(len_field).unwrap_or(usize::MAX);
        if msg_len > rest.len() {
            return Err(format!("msg_len_out_of_range: length field {len_field} but only {} bytes follow", rest.len()));
        }
        let (message, found_id) = rest.split_at(msg_len);
        if found_id != receive_id.as_bytes() {
            return Err(format!(
                "receive_id_mismatch: the frame ends in {:?}, expected {receive_id:?}",
                String::from_utf8_lossy(found_id)
            ));
        }
        String::from_utf8(message.to_vec()).map_err(|e| format!("invalid_utf8: message: {e}"))
    }

    /// The IV is fixed per key: its first 16 bytes.
    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}
