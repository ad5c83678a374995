//! Media files on their way into the media store: the spool a download streams into (hashed,
//! capped, decrypted on the fly), the channel-neutral fetch contract, and what a file is.
//!
//! Bytes never travel on a queue: a channel's `MediaSource` downloads into a [`Spool`] (a temp
//! file, so a 100 MB file is never held in memory), the media service stores it under its
//! content key and the `Inbound` carries the key and a link.

use std::path::{Path, PathBuf};

use aes::cipher::{BlockDecrypt, BlockDecryptMut, BlockEncrypt, KeyInit, KeyIvInit};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::core::envelope::{Inbound, Media};
use crate::core::http::ApiError;

/// The longest one download request may take (a 100 MB file on a slow link).
pub const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(240);

/// The key of stored bytes: content-addressed, so storing a file twice stores it once.
pub fn content_key(sha256_hex: &str) -> String {
    format!("media/{sha256_hex}")
}

/// Whether `key` is a content key this bridge writes (`media/` + 64 lowercase hex digits).
pub fn is_content_key(key: &str) -> bool {
    key.strip_prefix("media/")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// How a download is encrypted.
#[derive(Clone)]
pub enum Cipher {
    /// WeCom AI bot files: AES-256-CBC with the bot's EncodingAESKey, IV = its first 16 bytes,
    /// PKCS#7 padded to a multiple of 32.
    Cbc256 { key: [u8; 32] },
    /// iLink CDN files: AES-128-ECB, PKCS#7.
    Ecb128 { key: [u8; 16] },
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cbc256 { .. } => "Cbc256 { key: <redacted> }",
            Self::Ecb128 { .. } => "Ecb128 { key: <redacted> }",
        })
    }
}

/// Encrypts `plain` as the iLink CDN keeps files: AES-128-ECB with PKCS#7 padding (1 to 16
/// bytes, so `floor(n / 16) * 16 + 16` bytes come out). The inverse of [`Cipher::Ecb128`].
pub fn ecb_encrypt(key: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    let aes = aes::Aes128::new(key.into());
    let pad = 16 - plain.len() % 16;
    let mut data = Vec::with_capacity(plain.len() + pad);
    data.extend_from_slice(plain);
    data.resize(plain.len() + pad, pad as u8);
    for block in data.chunks_exact_mut(16) {
        aes.encrypt_block(aes::Block::from_mut_slice(block));
    }
    data
}

enum Decrypting {
    Cbc(Box<cbc::Decryptor<aes::Aes256>>),
    Ecb(Box<aes::Aes128>),
}

impl Decrypting {
    fn new(cipher: &Cipher) -> Self {
        match cipher {
            Cipher::Cbc256 { key } => {
                let iv: [u8; 16] = std::array::from_fn(|i| key[i]);
                Self::Cbc(Box::new(cbc::Decryptor::<aes::Aes256>::new(key.into(), &iv.into())))
            }
            Cipher::Ecb128 { key } => Self::Ecb(Box::new(aes::Aes128::new(key.into()))),
        }
    }

    /// The largest padding the format allows.
    fn max_pad(&self) -> usize {
        match self {
            Self::Cbc(_) => 32,
            Self::Ecb(_) => 16,
        }
    }

    /// Decrypts whole 16-byte blocks in place.
    fn blocks(&mut self, data: &mut [u8]) {
        for block in data.chunks_exact_mut(16) {
            let block = aes::Block::from_mut_slice(block);
            match self {
                Self::Cbc(d) => d.decrypt_block_mut(block),
                Self::Ecb(d) => d.decrypt_block(block),
            }
        }
    }
}

/// Why a spool refused its input.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the file is larger than {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("the encrypted file is damaged: {0}")]
    Damaged(&'static str),
    #[error("the media spool failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A download on its way to the store: written to a temp file as it arrives, hashed, counted
/// against a cap, and decrypted on the fly when the channel encrypts its files. The file is
/// removed when the spool (or what it finished into) is dropped.
pub struct Spool {
    file: tokio::fs::File,
    path: TempPath,
    hasher: Sha256,
    size: u64,
    cap: u64,
    head: Vec<u8>,
    decrypting: Option<Decrypting>,
    cipher: Option<Cipher>,
    /// Ciphertext not yet decrypted: the last blocks are kept until the end (they hold the
    /// padding).
    pending: Vec<u8>,
}

/// A temp file path removed on drop.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How many leading bytes a spool keeps for sniffing the type.
const HEAD: usize = 64;

impl Spool {
    /// A new spool in `dir` refusing more than `cap` bytes of plaintext.
    pub async fn new(dir: &Path, cap: u64) -> Result<Self, SpoolError> {
        let name: String = crate::core::ports::claim_token();
        let path = dir.join(format!("wxbridge-media-{name}"));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(Self {
            file,
            path: TempPath(path),
            hasher: Sha256::new(),
            size: 0,
            cap,
            head: Vec::with_capacity(HEAD),
            decrypting: None,
            cipher: None,
            pending: Vec::new(),
        })
    }

    /// Decrypts everything written from now on.
    pub fn decrypt(&mut self, cipher: &Cipher) {
        self.decrypting = Some(Decrypting::new(cipher));
        self.cipher = Some(cipher.clone());
    }

    /// Bytes of plaintext so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts over (a retried download): forgets everything written.
    pub async fn reset(&mut self) -> Result<(), SpoolError> {
        self.file.set_len(0).await?;
        use tokio::io::AsyncSeekExt;
        self.file.seek(std::io::SeekFrom::Start(0)).await?;
        self.hasher = Sha256::new();
        self.size = 0;
        self.head.clear();
        self.pending.clear();
        // A CBC decryptor carries its chain: start it afresh.
        self.decrypting = self.cipher.as_ref().map(Decrypting::new);
        Ok(())
    }

    /// Takes the next chunk of the download.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        match &mut self.decrypting {
            None => self.plain(chunk).await,
            Some(decrypting) => {
                let keep = decrypting.max_pad().max(16);
                self.pending.extend_from_slice(chunk);
                if self.pending.len() > keep {
                    let ready = (self.pending.len() - keep) / 16 * 16;
                    let mut blocks: Vec<u8> = self.pending.drain(..ready).collect();
                    decrypting.blocks(&mut blocks);
                    self.plain(&blocks).await?;
                }
                Ok(())
            }
        }
    }

    async fn plain(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        self.size += data.len() as u64;
        if self.size > self.cap {
            return Err(SpoolError::TooLarge { cap: self.cap });
        }
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        self.hasher.update(data);
        self.file.write_all(data).await?;
        Ok(())
    }

    /// Ends the download: checks and strips the padding of an encrypted file, flushes, and
    /// names the bytes.
    pub async fn finish(mut self) -> Result<Spooled, SpoolError> {
        if let Some(mut decrypting) = self.decrypting.take() {
            let mut last = std::mem::take(&mut self.pending);
            if last.is_empty() || last.len() % 16 != 0 {
                return Err(SpoolError::Damaged("its length is not a whole number of blocks"));
            }
            decrypting.blocks(&mut last);
            let pad = usize::from(last[last.len() - 1]);
            if pad == 0
                || pad > decrypting.max_pad()
                || pad > last.len()
                || !last[last.len() - pad..].iter().all(|&b| usize::from(b) == pad)
            {
                return Err(SpoolError::Damaged("bad padding (a wrong key?)"));
            }
            last.truncate(last.len() - pad);
            self.plain(&last).await?;
        }
        self.file.flush().await?;
        self.file.sync_data().await?;
        let sha256 = hex(&self.hasher.finalize());
        Ok(Spooled { path: self.path, size: self.size, sha256, head: self.head })
    }
}

/// A finished download, in its temp file.
#[derive(Debug)]
pub struct Spooled {
    pub path: TempPath,
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// The first bytes, for sniffing the type.
    pub head: Vec<u8>,
}

pub use crate::protocol::hex::hex;

/// The MIME type the first bytes of a file tell, if they do.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    Some(if starts(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        "image/gif"
    } else if starts(b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if starts(b"RIFF") && at(8, b"WAVE") {
        "audio/wav"
    } else if starts(b"BM") && head.len() > 14 && at(6, &[0, 0, 0, 0]) {
        "image/bmp"
    } else if starts(b"#!AMR-WB\n") {
        "audio/amr-wb"
    } else if starts(b"#!AMR\n") {
        "audio/amr"
    } else if starts(b"\x02#!SILK_V3") || starts(b"#!SILK_V3") {
        "audio/silk"
    } else if starts(b"OggS") {
        "audio/ogg"
    } else if starts(b"ID3") || (head.len() > 1 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0 && head[1] & 0x06 != 0) {
        "audio/mpeg"
    } else if at(4, b"ftyp") {
        if at(8, b"M4A ") {
            "audio/mp4"
        } else if at(8, b"qt  ") {
            "video/quicktime"
        } else {
            "video/mp4"
        }
    } else if starts(b"%PDF-") {
        "application/pdf"
    } else if starts(b"PK\x03\x04") {
        "application/zip"
    } else {
        return None;
    })
}

/// What a download says about itself beyond its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The `Content-Type` the server gave, if any (the bytes decide when they can).
    pub mime: Option<String>,
    /// The file name from `Content-Disposition`, if any.
    pub file_name: Option<String>,
    /// The platform's transcript of a voice message.
    pub transcript: Option<String>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth another try (a timeout, a 5xx, a token to refresh): the message comes again.
    #[error("{0}")]
    Transient(String),
    /// Never worth another try; `code` as in `MediaFailure`.
    #[error("{message}")]
    Permanent { code: &'static str, message: String },
}

impl FetchError {
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent { code, message: message.into() }
    }

    /// A spool error: too large and damaged files are final, the disk is worth another try.
    pub fn from_spool(err: SpoolError) -> Self {
        match err {
            SpoolError::TooLarge { .. } => Self::permanent("too_large", err.to_string()),
            SpoolError::Damaged(_) => Self::permanent("refused", err.to_string()),
            SpoolError::Io(_) => Self::Transient(err.to_string()),
        }
    }

    /// An API error of a download (no errcode: those are the channel's to judge).
    pub fn from_api(err: ApiError) -> Self {
        match err {
            ApiError::Http { status } if (400..500).contains(&status) && status != 408 && status != 429 => {
                Self::permanent("refused", format!("HTTP {status}"))
            }
            other => Self::Transient(other.to_string()),
        }
    }
}

impl FetchError {
    /// A failed API call, as the channel's errcode table judged it: `invalid media_id` (40007)
    /// and the like are final, the rest comes again.
    pub fn from_failure(failure: crate::core::retry::Failure) -> Self {
        use crate::core::retry::Verdict;
        match failure.verdict {
            Verdict::Permanent => Self::permanent("refused", failure.message),
            _ => Self::Transient(failure.message),
        }
    }
}

/// Downloads the media of a channel's messages.
#[async_trait]
pub trait MediaSource: Send + Sync {
    /// Downloads `media` (the message's own, or its quote's) of `inbound` into `spool`.
    async fn fetch(&self, inbound: &Inbound, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError>;
}

/// Writes a download into `spool`: what it says about itself, or an error for an answer that
/// is no file.
pub async fn spool_download(download: crate::core::http::Download, spool: &mut Spool) -> Result<Fetched, FetchError> {
    use crate::core::http::Download;
    match download {
        Download::File(response) => {
            let fetched = described(&response);
            spool_body(response, spool).await?;
            Ok(fetched)
        }
        Download::Read(bytes) => {
            spool.write(&bytes).await.map_err(FetchError::from_spool)?;
            Ok(Fetched::default())
        }
        Download::Json(_) => Err(FetchError::Transient("a JSON answer where a file was expected".into())),
    }
}

/// What a file's headers say: its type and its name.
pub fn described(response: &reqwest::Response) -> Fetched {
    let header = |name| response.headers().get(name);
    Fetched {
        mime: header(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty() && v != "application/octet-stream"),
        file_name: header(reqwest::header::CONTENT_DISPOSITION).and_then(|v| disposition_file_name(v.as_bytes())),
        transcript: None,
    }
}

/// Whether a link a platform gave may be fetched: http(s), no credentials, and not an address
/// inside a private network (loopback, link-local such as the instance metadata service,
/// RFC 1918) unless it is on one of `trusted` hosts (the configured API hosts). A name that
/// resolves to such an address is not caught here.
pub fn link_allowed(url: &reqwest::Url, trusted: &[String]) -> bool {
    if !matches!(url.scheme(), "https" | "http") || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    let Some(host) = url.host_str() else { return false };
    let internal = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => crate::core::http::is_internal(ip),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    !internal || url.host_str().is_some_and(|h| trusted.iter().any(|t| t.eq_ignore_ascii_case(h)))
}

/// The host of each base URL, for [`link_allowed`].
pub fn hosts_of<'a>(bases: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    bases.into_iter().filter_map(|b| reqwest::Url::parse(b).ok()?.host_str().map(str::to_owned)).collect()
}

/// Removes spool files a killed process left behind (a timeout skips their clean-up).
pub fn clean_spool_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("wxbridge-media-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Streams the body of a successful `response` into `spool`, refusing early when the declared
/// length is over the cap.
pub async fn spool_body(mut response: reqwest::Response, spool: &mut Spool) -> Result<(), FetchError> {
    if let Some(length) = response.content_length() {
        if spool.size() + length > spool.cap + 32 {
            return Err(FetchError::permanent("too_large", format!("the file is larger than {} bytes", spool.cap)));
        }
    }
    while let Some(chunk) = response.chunk().await.map_err(|e| FetchError::from_api(ApiError::transport(e)))? {
        spool.write(&chunk).await.map_err(FetchError::from_spool)?;
    }
    Ok(())
}

/// The file name of a `Content-Disposition` header: `filename*=UTF-8''…` (percent-encoded)
/// first, else `filename="…"` whose bytes are taken as UTF-8 (WeChat sends them raw).
pub fn disposition_file_name(header: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let mut plain = None;
    for part in text.split(';').map(str::trim) {
        let Some((name, value)) = part.split_once('=') else { continue };
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let value = value.trim().trim_matches('"');
                let encoded = value.split_once("''").map_or(value, |(_, v)| v);
                let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8().ok()?;
                return clean_file_name(&decoded);
            }
            "filename" => plain = clean_file_name(value.trim().trim_matches('"')),
            _ => {}
        }
    }
    plain
}

/// A file name safe to show and to put in a header: no path, no control characters, at most
/// 255 bytes.
pub fn clean_file_name(name: &str) -> Option<String> {
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = name.chars().filter(|c| !c.is_control() && *c != '"').collect();
    let name = crate::core::ports::cut_utf8(name.trim(), 255).to_owned();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// A `Content-Disposition` naming a download: `filename*` (RFC 5987, any script) and an
/// ASCII fallback.
pub fn attachment(name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use aes::cipher::BlockEncryptMut;

    use super::*;

    fn pkcs7(mut data: Vec<u8>, to: usize) -> Vec<u8> {
        let pad = to - data.len() % to;
        data.extend(std::iter::repeat_n(pad as u8, pad));
        data
    }

    fn cbc_encrypt(key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
        let iv: [u8; 16] = std::array::from_fn(|i| key[i]);
        let mut enc = cbc::Encryptor::<aes::Aes256>::new(key.into(), &iv.into());
        let mut data = pkcs7(plain.to_vec(), 32);
        for block in data.chunks_exact_mut(16) {
            enc.encrypt_block_mut(aes::Block::from_mut_slice(block));
        }
        data
    }

    async fn spool(cipher: Option<Cipher>, chunks: &[&[u8]], cap: u64) -> Result<(Spooled, Vec<u8>), SpoolError> {
        let dir = std::env::temp_dir();
        let mut spool = Spool::new(&dir, cap).await?;
        if let Some(cipher) = &cipher {
            spool.decrypt(cipher);
        }
        for chunk in chunks {
            spool.write(chunk).await?;
        }
        let done = spool.finish().await?;
        let bytes = std::fs::read(done.path.path()).unwrap();
        Ok((done, bytes))
    }

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    #[tokio::test]
    async fn decrypts_in_any_chunking_and_hashes_the_plaintext() {
        let key32 = [7u8; 32];
        let key16 = [9u8; 16];
        for len in [0usize, 1, 15, 16, 31, 32, 33, 1000, 70_001] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for (cipher, sealed) in [
                (Cipher::Cbc256 { key: key32 }, cbc_encrypt(&key32, &plain)),
                (Cipher::Ecb128 { key: key16 }, ecb_encrypt(&key16, &plain)),
            ] {
                for chunk in [1usize, 7, 16, 4096] {
                    let chunks: Vec<&[u8]> = sealed.chunks(chunk).collect();
                    let (done, bytes) = spool(Some(cipher.clone()), &chunks, 1 << 20).await.unwrap();
                    assert_eq!(bytes, plain, "len {len} chunk {chunk} {cipher:?}");
                    assert_eq!((done.size, done.sha256.as_str()), (len as u64, sha(&plain).as_str()));
                }
            }
        }
    }

    #[test]
    fn ecb_encryption_matches_the_openssl_vector_of_the_ilink_notes() {
        // ilink.md §6.6, generated with OpenSSL.
        let key: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        assert_eq!(hex(&ecb_encrypt(&key, b"hello ilink")), "b7b86f6a7e5ca4c39d8da094d17d2f95");
        assert_eq!(
            hex(&ecb_encrypt(&key, b"0123456789abcdef")),
            "aebdd39b144089d5e31cacd35b7a113a00657ea140655a44782747705d422fad"
        );
        assert_eq!(ecb_encrypt(&key, b"").len(), 16);
    }

    #[tokio::test]
    async fn refuses_damaged_ciphertext_and_wrong_keys_and_removes_its_file() {
        let key = [3u8; 16];
        let sealed = ecb_encrypt(&key, b"hello world, this is a file");
        let err = spool(Some(Cipher::Ecb128 { key }), &[&sealed[..sealed.len() - 1]], 1 << 20).await.unwrap_err();
        assert!(matches!(err, SpoolError::Damaged(_)), "{err}");
        let err = spool(Some(Cipher::Ecb128 { key: [4u8; 16] }), &[&sealed], 1 << 20).await.unwrap_err();
        assert!(matches!(err, SpoolError::Damaged(_)), "{err}");
        let err = spool(Some(Cipher::Ecb128 { key }), &[], 1 << 20).await.unwrap_err();
        assert!(matches!(err, SpoolError::Damaged(_)), "{err}");
        let (done, _) = spool(None, &[b"abc"], 10).await.unwrap();
        let path = done.path.path().to_owned();
        assert!(path.exists());
        drop(done);
        assert!(!path.exists(), "the temp file goes with its spool");
    }

    #[tokio::test]
    async fn stops_at_the_cap() {
        let err = spool(None, &[&[0u8; 600], &[0u8; 600]], 1000).await.unwrap_err();
        assert!(matches!(err, SpoolError::TooLarge { cap: 1000 }), "{err}");
        assert!(spool(None, &[&[0u8; 1000]], 1000).await.is_ok(), "exactly the cap fits");
    }

    #[test]
    fn sniffs_the_kinds_wechat_sends() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"#!AMR\n\x3c"), Some("audio/amr"));
        assert_eq!(sniff(b"\x02#!SILK_V3\x0c"), Some("audio/silk"));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42"), Some("video/mp4"));
        assert_eq!(sniff(b"%PDF-1.7"), Some("application/pdf"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"hello"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn reads_file_names_from_content_disposition() {
        assert_eq!(disposition_file_name("attachment; filename=\"报告.pdf\"".as_bytes()).as_deref(), Some("报告.pdf"));
        assert_eq!(
            disposition_file_name(b"attachment; filename=\"x.bin\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf")
                .as_deref(),
            Some("报告.pdf")
        );
        assert_eq!(disposition_file_name(b"attachment; filename=\"../../etc/passwd\"").as_deref(), Some("passwd"));
        assert_eq!(disposition_file_name(b"attachment; filename=\"\"").as_deref(), None);
        assert_eq!(disposition_file_name(b"attachment; filename*=UTF-8''%FF%FE").as_deref(), None);
        assert_eq!(disposition_file_name(b"inline").as_deref(), None);
    }

    #[test]
    fn content_keys_are_what_the_bridge_writes() {
        let key = content_key(&"a".repeat(64));
        assert!(is_content_key(&key));
        for bad in ["media/../x", "media/ABC", "other/aaaa", &format!("media/{}", "g".repeat(64))] {
            assert!(!is_content_key(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn links_to_private_addresses_are_refused_unless_on_a_configured_host() {
        let allowed = |u: &str, trusted: &[&str]| {
            let trusted: Vec<String> = trusted.iter().map(|t| (*t).to_owned()).collect();
            link_allowed(&reqwest::Url::parse(u).unwrap(), &trusted)
        };
        assert!(allowed("https://ww-aibot-img-1258476243.cos.ap-guangzhou.myqcloud.com/x", &[]));
        assert!(allowed("http://203.0.113.7/v.mp4", &[]));
        for internal in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/x",
            "http://10.0.0.5/x",
            "http://192.168.1.1/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://localhost/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://0.1.2.3/x",
            "http://255.255.255.255/x",
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
        ] {
            assert!(!allowed(internal, &[]), "{internal}");
        }
        assert!(allowed("http://127.0.0.1:8080/x", &["127.0.0.1"]), "a configured (fake) host");
        assert_eq!(hosts_of(["http://127.0.0.1:9/", "not a url"]), ["127.0.0.1"]);
    }
}
