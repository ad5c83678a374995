//! What the fake keeps of media: files added by tests or uploaded by clients (the iLink CDN's
//! uploads too), and the AI bot's encrypted media URLs. The handlers that serve and take media
//! are in `media`, `upload` and `ilink_upload`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aes::cipher::{BlockDecrypt, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
use aes::{Aes128, Aes256};
use axum::body::Bytes;
use axum::http::HeaderValue;

use crate::types::{CdnUploadFault, IlinkMediaSend, IlinkUpload, IlinkUploadAnswer};

/// Largest file WeCom's media/get sends without `Range` (media.md §1.2: 20 MB per chunk).
pub(crate) const WECOM_GET_LIMIT: usize = 20 * 1024 * 1024;

/// A temporary media_id lives 3 days (media.md §1.2, §2, §3.3).
pub(crate) const MEDIA_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// An AI bot media URL lives 5 minutes (wecom-aibot.md §7).
pub(crate) const AIBOT_MEDIA_TTL: Duration = Duration::from_secs(300);

/// The AI bot pads its media to a multiple of 32 bytes, not AES's 16.
pub(crate) const AIBOT_PAD_BLOCK: usize = 32;

pub(crate) const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// Whose media_id a stored media is: `media/get` serves only WeCom's and the OA's, each to its own
/// corp or account; a robot's is usable only by its key's `webhook/send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Platform {
    Wecom,
    Oa,
    Robot,
}

/// One temporary media.
#[derive(Debug)]
pub(crate) struct Media {
    pub(crate) platform: Platform,
    /// corp_id (WeCom), app_id (OA) or webhook key (robot).
    pub(crate) account: String,
    /// `image`, `voice`, `video` or `file`: the upload's `type`, or for media a test added, what
    /// its mime says.
    pub(crate) kind: &'static str,
    pub(crate) filename: String,
    pub(crate) bytes: Bytes,
    pub(crate) mime: HeaderValue,
    /// `attachment; filename="…"` with the name as raw UTF-8, as both platforms send it.
    pub(crate) disposition: HeaderValue,
    /// `None`: never (set by `add`).
    pub(crate) expires_at: Option<Instant>,
    /// Set by `FakeWechat::expire_media`.
    pub(crate) expired: bool,
}

impl Media {
    /// Media a test adds, as if a user had sent it.
    ///
    /// # Panics
    /// If `filename` or `mime` holds control characters (they cannot go in a header): a test
    /// set-up error, not request data.
    pub(crate) fn new(platform: Platform, account: &str, bytes: Vec<u8>, filename: &str, mime: &str) -> Media {
        let disposition = HeaderValue::from_bytes(format!("attachment; filename=\"{filename}\"").as_bytes())
            .unwrap_or_else(|_| panic!("filename {filename:?} cannot be sent in an HTTP header"));
        let mime_value = HeaderValue::from_str(mime).unwrap_or_else(|_| panic!("mime {mime:?} is not a header value"));
        Media {
            platform,
            account: account.to_owned(),
            kind: kind_of_mime(mime),
            filename: filename.to_owned(),
            bytes: Bytes::from(bytes),
            mime: mime_value,
            disposition,
            expires_at: None,
            expired: false,
        }
    }

    /// Media a client uploaded: `kind` is the upload's `type`, `mime` the part's Content-Type (if
    /// any). Never panics: characters a header cannot carry become `_` in the download's
    /// Content-Disposition (the stored name stays as sent).
    pub(crate) fn uploaded(
        platform: Platform,
        account: &str,
        kind: &'static str,
        filename: String,
        mime: Option<&str>,
        bytes: Vec<u8>,
    ) -> Media {
        let shown: String = filename.chars().map(|c| if c.is_control() { '_' } else { c }).collect();
        let disposition = HeaderValue::from_bytes(format!("attachment; filename=\"{shown}\"").as_bytes())
            .unwrap_or(HeaderValue::from_static("attachment"));
        let mime = mime.and_then(|m| HeaderValue::from_str(m).ok()).unwrap_or(OCTET_STREAM);
        Media {
            platform,
            account: account.to_owned(),
            kind,
            filename,
            bytes: Bytes::from(bytes),
            mime,
            disposition,
            expires_at: None,
            expired: false,
        }
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.expired || self.expires_at.is_some_and(|at| Instant::now() >= at)
    }
}

/// The upload type a mime corresponds to.
pub(crate) fn kind_of_mime(mime: &str) -> &'static str {
    let top = mime.split('/').next().unwrap_or_default().trim().to_ascii_lowercase();
    match top.as_str() {
        "image" => "image",
        "audio" | "voice" => "voice",
        "video" => "video",
        _ => "file",
    }
}

/// "WeCom corp …" / "Official Account …" / "group robot …", for problem lines.
pub(crate) fn owner(platform: Platform, account: &str) -> String {
    match platform {
        Platform::Wecom => format!("WeCom corp {account}"),
        Platform::Oa => format!("Official Account {account}"),
        Platform::Robot => format!("group robot {account}"),
    }
}

/// The ciphertext behind one AI bot media URL.
#[derive(Debug)]
pub(crate) struct AibotMedia {
    pub(crate) ciphertext: Bytes,
    /// `attachment; filename*=UTF-8''…`, when the file has a name.
    pub(crate) disposition: Option<HeaderValue>,
    /// `None`: never (a TTL too long for an `Instant`).
    pub(crate) expires_at: Option<Instant>,
}

impl AibotMedia {
    /// Encrypts `plaintext` as WeCom does an AI bot's media: AES-256-CBC, key = the EncodingAESKey
    /// decoded, IV = its first 16 bytes, PKCS#7 padding to a multiple of 32 bytes.
    ///
    /// # Panics
    /// If `encoding_aes_key` is not 43 base64 characters decoding to 32 bytes: a test set-up error.
    pub(crate) fn new(plaintext: &[u8], encoding_aes_key: &str, filename: Option<&str>) -> AibotMedia {
        let key = crate::aibot_crypto::aes_key(encoding_aes_key).unwrap_or_else(|e| panic!("{e}"));
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&key[..16]);
        let mut buf = pkcs7(plaintext, AIBOT_PAD_BLOCK);
        let mut cipher = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into());
        for block in buf.chunks_exact_mut(16) {
            cipher.encrypt_block_mut(aes::Block::from_mut_slice(block));
        }
        let disposition = filename
            .and_then(|name| HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{}", rfc5987(name))).ok());
        AibotMedia { ciphertext: Bytes::from(buf), disposition, expires_at: None }
    }
}

/// AES-128-ECB with PKCS#7 (padding 1..=16), as the iLink CDN stores media (media.md §4.2).
pub(crate) fn ecb_encrypt(plaintext: &[u8], key: &[u8; 16]) -> Vec<u8> {
    let mut buf = pkcs7(plaintext, 16);
    let cipher = Aes128::new(&(*key).into());
    for block in buf.chunks_exact_mut(16) {
        cipher.encrypt_block(aes::Block::from_mut_slice(block));
    }
    buf
}

/// The inverse of [`ecb_encrypt`]; `None` when the length is not whole blocks or the padding is
/// wrong (a wrong key, most likely).
pub(crate) fn ecb_decrypt(ciphertext: &[u8], key: &[u8; 16]) -> Option<Vec<u8>> {
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return None;
    }
    let cipher = Aes128::new(&(*key).into());
    let mut buf = ciphertext.to_vec();
    for block in buf.chunks_exact_mut(16) {
        cipher.decrypt_block(aes::Block::from_mut_slice(block));
    }
    let pad = usize::from(*buf.last()?);
    if pad == 0 || pad > 16 || !buf[buf.len() - pad..].iter().all(|&b| usize::from(b) == pad) {
        return None;
    }
    buf.truncate(buf.len() - pad);
    Some(buf)
}

/// What the iLink CDN's upload side holds (ilink_upload.rs).
#[derive(Debug, Default)]
pub(crate) struct CdnUploads {
    /// How `getuploadurl` answers.
    pub(crate) answer: IlinkUploadAnswer,
    /// Faults the next uploads answer with, oldest first.
    pub(crate) faults: std::collections::VecDeque<CdnUploadFault>,
    /// Every reserved upload, in order.
    pub(crate) uploads: Vec<IlinkUpload>,
    /// `upload_param` → index into `uploads`, while the upload waits for its file.
    pub(crate) pending: HashMap<String, usize>,
    /// Accepted sends of uploaded files.
    pub(crate) sends: Vec<IlinkMediaSend>,
}

/// `plaintext` followed by PKCS#7 padding to a multiple of `block` (≤ 255): 1..=`block` bytes,
/// each holding their count.
pub(crate) fn pkcs7(plaintext: &[u8], block: usize) -> Vec<u8> {
    let pad = block - plaintext.len() % block;
    let mut buf = Vec::with_capacity(plaintext.len() + pad);
    buf.extend_from_slice(plaintext);
    buf.resize(plaintext.len() + pad, u8::try_from(pad).unwrap_or(u8::MAX));
    buf
}

/// RFC 5987 `value-chars`: attr-chars as they are, every other byte of the UTF-8 as `%XX`.
pub(crate) fn rfc5987(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What the download endpoints hold.
#[derive(Debug)]
pub(crate) struct MediaState {
    /// media_id → media of `cgi-bin/media/get`.
    pub(crate) files: HashMap<String, Media>,
    /// media_id of an OA video → the id of its `/oa/video` URL.
    pub(crate) video_ids: HashMap<String, String>,
    /// `/oa/video` id → (mime, bytes).
    pub(crate) videos: HashMap<String, (HeaderValue, Bytes)>,
    /// Largest file WeCom's media/get sends without `Range`.
    pub wecom_get_limit: usize,
    /// `/aibot/media` id → ciphertext.
    pub(crate) aibot: HashMap<String, AibotMedia>,
    /// Lifetime of AI bot media URLs issued from now on.
    pub aibot_ttl: Duration,
    /// GETs of AI bot media URLs after they expired.
    pub aibot_expired_hits: usize,
    /// `encrypted_query_param` → the bytes the iLink CDN sends.
    pub(crate) cdn: HashMap<String, Bytes>,
    /// The iLink CDN's uploads.
    pub(crate) ilink: CdnUploads,
}

impl Default for MediaState {
    fn default() -> Self {
        MediaState {
            files: HashMap::new(),
            video_ids: HashMap::new(),
            videos: HashMap::new(),
            wecom_get_limit: WECOM_GET_LIMIT,
            aibot: HashMap::new(),
            aibot_ttl: AIBOT_MEDIA_TTL,
            aibot_expired_hits: 0,
            cdn: HashMap::new(),
            ilink: CdnUploads::default(),
        }
    }
}
