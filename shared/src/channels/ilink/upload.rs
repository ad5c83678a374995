//! Files out through an iLink bot (media.md §4.3, ilink.md §6): a file is sealed with a fresh
//! AES-128 key (ECB, PKCS#7), reserved for one recipient with `getuploadurl`, POSTed to the CDN,
//! and sent as one item naming the CDN's download parameter and the key.
//!
//! What a send needs of an upload travels as the media id the sender caches
//! ([`UploadedMedia`], a small JSON). The key in it is a secret: it is kept in DynamoDB and never
//! shown in logs, errors or dead-letter reasons.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{errcodes, UploadUrls};
use super::media::on_cdn_host;
use crate::core::envelope::MediaType;
use crate::core::http::{ApiError, Http};
use crate::core::media::{ecb_encrypt, hex, DOWNLOAD_TIMEOUT};
use crate::core::retry::{Failure, Verdict};

/// CDN upload attempts before the part is retried later (with a new `getuploadurl`).
pub const CDN_ATTEMPTS: u32 = 3;
/// Why a cached media id cannot be sent (the sender then forgets it and uploads again).
pub const UNREADABLE_ID: &str = "the cached iLink media id is not one this version writes (an older entry?)";
/// The pause before the second attempt; the third waits twice as long.
const CDN_PAUSE: Duration = Duration::from_millis(500);
/// The most of the CDN's `x-error-message` a reason quotes.
const MAX_CDN_MESSAGE: usize = 200;

/// The ciphertext size of `rawsize` plaintext bytes: PKCS#7 always adds 1 to 16 bytes.
pub fn ciphertext_size(rawsize: u64) -> u64 {
    (rawsize / 16 + 1) * 16
}

/// `getuploadurl`'s `media_type`: 1 image, 2 video, 3 file. Voice goes as a file: the service
/// takes voice items but shows no bubble for them (media.md §4.4).
pub fn upload_media_type(media_type: MediaType) -> u8 {
    match media_type {
        MediaType::Image => 1,
        MediaType::Video => 2,
        MediaType::File | MediaType::Voice => 3,
    }
}

/// A file sealed for the CDN: its key and file key, the plaintext's size and MD5, and the
/// ciphertext. `Debug` never shows the key.
pub struct Sealed {
    /// 32 hex digits naming the upload.
    pub filekey: String,
    /// The AES-128 key as 32 hex digits.
    pub aes_key: String,
    pub rawsize: u64,
    /// Lowercase hex MD5 of the plaintext.
    pub md5: String,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("filekey", &self.filekey)
            .field("aes_key", &"<redacted>")
            .field("rawsize", &self.rawsize)
            .field("filesize", &self.ciphertext.len())
            .finish()
    }
}

impl Sealed {
    /// Seals `plain` with `key` under `filekey` (each 16 random bytes the caller draws).
    pub fn new(plain: &[u8], key: [u8; 16], filekey: [u8; 16]) -> Self {
        use md5::Digest as _;
        Self {
            filekey: hex(&filekey),
            aes_key: hex(&key),
            rawsize: plain.len() as u64,
            md5: hex(&md5::Md5::digest(plain)),
            ciphertext: ecb_encrypt(&key, plain),
        }
    }

    /// Bytes of ciphertext (`filesize` on the wire).
    pub fn filesize(&self) -> u64 {
        self.ciphertext.len() as u64
    }

    /// The body of `getuploadurl` (without `base_info`) reserving this file for user `to`; no
    /// thumbnail, as every client sends.
    pub fn request(&self, media_type: MediaType, to: &str) -> Value {
        json!({
            "filekey": self.filekey,
            "media_type": upload_media_type(media_type),
            "to_user_id": to,
            "rawsize": self.rawsize,
            "rawfilemd5": self.md5,
            "filesize": self.filesize(),
            "no_need_thumb": true,
            "aeskey": self.aes_key,
        })
    }
}

/// What a failed `getuploadurl` means: `ret` -1 or -2 without URLs has been seen as an
/// account-level refusal that retries do not lift (media.md §4.5); the rest as iLink's table says.
pub fn reservation_failure(err: &ApiError) -> Failure {
    match err {
        ApiError::Errcode { code: code @ (-1 | -2), message } => Failure {
            verdict: Verdict::Permanent,
            errcode: Some(*code),
            message: format!(
                "iLink would not take the file (getuploadurl ret {code}: {message:?}); \
                 seen as an account-level refusal, not retried"
            ),
        },
        other => {
            let mut failure = Failure::from_api(errcodes, other);
            failure.message = format!("getuploadurl: {}", failure.message);
            failure
        }
    }
}

/// Where to POST the ciphertext: the `upload_full_url` the server gave, only when it is on the
/// CDN's own host (it came from the network); else `<cdn>/c2c/upload` with the `upload_param`.
pub fn upload_url(cdn: &reqwest::Url, urls: &UploadUrls, filekey: &str) -> Result<reqwest::Url, Failure> {
    if let Some(full) = &urls.full_url {
        let url = reqwest::Url::parse(full)
            .map_err(|_| Failure::permanent("getuploadurl answered an upload_full_url that is not a URL"))?;
        if !on_cdn_host(cdn, &url) {
            return Err(Failure::permanent(format!(
                "getuploadurl answered an upload URL on {}, not on the iLink CDN ({}): refused",
                host_port(&url),
                host_port(cdn)
            )));
        }
        return Ok(url);
    }
    let Some(param) = &urls.param else {
        return Err(Failure::permanent(
            "getuploadurl answered neither upload_full_url nor upload_param: iLink would not take the file \
             (seen as an account-level refusal), not retried",
        ));
    };
    let mut url =
        cdn.join("upload").map_err(|_| Failure::permanent("the iLink CDN base cannot take an upload path"))?;
    url.query_pairs_mut().append_pair("encrypted_query_param", param).append_pair("filekey", filekey);
    Ok(url)
}

/// `host` or `host:port` of a URL, for reasons.
fn host_port(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("(no host)");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// POSTs the ciphertext to the CDN; returns its `x-encrypted-param` (the download parameter a
/// send names). A 4xx is final (the reason from `x-error-message`); a 5xx, a transport error or
/// a 200 without the header is tried [`CDN_ATTEMPTS`] times in all, then worth a later retry.
pub async fn post_to_cdn(http: &Http, url: &reqwest::Url, ciphertext: &[u8]) -> Result<String, Failure> {
    let mut last = String::new();
    for attempt in 1..=CDN_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(CDN_PAUSE * (attempt - 1)).await;
        }
        let request = http
            .client()
            .post(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(ciphertext.to_vec())
            .timeout(DOWNLOAD_TIMEOUT);
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                last = ApiError::transport(err).to_string();
                continue;
            }
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        match status {
            200 => match header("x-encrypted-param") {
                Some(param) => return Ok(param),
                None => last = "HTTP 200 without x-encrypted-param".to_owned(),
            },
            400..=499 => {
                let why = header("x-error-message").map_or_else(
                    || "no x-error-message".to_owned(),
                    |m| crate::core::ports::cut_utf8(&m, MAX_CDN_MESSAGE).to_owned(),
                );
                return Err(Failure::permanent(format!("the iLink CDN refused the upload: HTTP {status}: {why}")));
            }
            _ => last = format!("HTTP {status}"),
        }
    }
    Err(Failure::transient(format!("the iLink CDN upload failed {CDN_ATTEMPTS} times (last: {last})")))
}

/// An uploaded file, as much of it as a send needs. The sender caches it as the channel's media
/// id ([`Self::to_id`]), per bot, recipient, type, content and file name. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedMedia {
    /// The CDN's download parameter (its `x-encrypted-param`).
    pub encrypt_query_param: String,
    /// The AES-128 key as 32 hex digits.
    pub aes_key: String,
    /// Bytes of ciphertext (an image's `mid_size`, a video's `video_size`).
    pub filesize: u64,
    /// Bytes of plaintext (a file's `len`).
    pub rawsize: u64,
    /// The name a file item shows.
    pub file_name: String,
}

impl std::fmt::Debug for UploadedMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadedMedia")
            .field("aes_key", &"<redacted>")
            .field("filesize", &self.filesize)
            .field("rawsize", &self.rawsize)
            .field("file_name", &self.file_name)
            .finish_non_exhaustive()
    }
}

impl UploadedMedia {
    /// The media id the sender caches: this, as JSON.
    pub fn to_id(&self) -> String {
        // Strings and integers only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a media id [`Self::to_id`] wrote. Anything else (an entry of another format) is a
    /// permanent failure whose reason shows nothing of the id.
    pub fn from_id(id: &str) -> Result<Self, Failure> {
        let unreadable = || Failure::permanent(UNREADABLE_ID);
        let media: Self = serde_json::from_str(id).map_err(|_| unreadable())?;
        let hex_key = media.aes_key.len() == 32 && media.aes_key.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_key || media.encrypt_query_param.is_empty() {
            return Err(unreadable());
        }
        Ok(media)
    }

    /// The `sendmessage` item of this file sent as `media_type`: an image (2), a video (5), or a
    /// file (4; voice too). `media.aes_key` is base64 of the key's hex text (ilink.md §6.4).
    pub fn item(&self, media_type: MediaType) -> Value {
        let media = json!({
            "encrypt_query_param": self.encrypt_query_param,
            "aes_key": base64::engine::general_purpose::STANDARD.encode(&self.aes_key),
            "encrypt_type": 1,
        });
        match media_type {
            MediaType::Image => json!({"type": 2, "image_item": {"media": media, "mid_size": self.filesize}}),
            MediaType::Video => json!({"type": 5, "video_item": {"media": media, "video_size": self.filesize}}),
            MediaType::File | MediaType::Voice => json!({"type": 4, "file_item": {
                "media": media,
                "file_name": self.file_name,
                "len": self.rawsize.to_string(),
            }}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] =
        [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

    fn uploaded() -> UploadedMedia {
        UploadedMedia {
            encrypt_query_param: "a+b/c==".into(),
            aes_key: hex(&KEY),
            filesize: 28704,
            rawsize: 28691,
            file_name: "季度报告.pdf".into(),
        }
    }

    #[test]
    fn the_ciphertext_is_one_to_sixteen_bytes_longer_than_the_plaintext() {
        for (raw, sealed) in [(0, 16), (1, 16), (15, 16), (16, 32), (28691, 28704), (28704, 28720)] {
            assert_eq!(ciphertext_size(raw), sealed, "{raw}");
            let plain = vec![7u8; raw as usize];
            assert_eq!(Sealed::new(&plain, KEY, [1; 16]).filesize(), sealed, "{raw}: the formula is what ECB gives");
        }
    }

    #[test]
    fn the_reservation_names_the_sizes_md5_and_keys_as_hex_and_voice_as_a_file() {
        // ilink.md §6.6: "hello ilink", 11 bytes.
        let sealed = Sealed::new(b"hello ilink", KEY, [0xab; 16]);
        assert_eq!(hex(&sealed.ciphertext), "b7b86f6a7e5ca4c39d8da094d17d2f95");
        let body = sealed.request(MediaType::Voice, "o9cq@im.wechat");
        assert_eq!(
            body,
            json!({"filekey": "ab".repeat(16), "media_type": 3, "to_user_id": "o9cq@im.wechat", "rawsize": 11,
                   "rawfilemd5": "a0e581bef9105ace19c7d2e59e66374d", "filesize": 16, "no_need_thumb": true,
                   "aeskey": "00112233445566778899aabbccddeeff"})
        );
        assert_eq!(
            [MediaType::Image, MediaType::Video, MediaType::File].map(upload_media_type),
            [1, 2, 3],
            "4 (voice) is never asked for"
        );
        assert!(!format!("{sealed:?}").contains("00112233"), "{sealed:?}");
    }

    #[test]
    fn items_carry_the_key_as_base64_of_its_hex_text() {
        let media = uploaded();
        let image = media.item(MediaType::Image);
        assert_eq!(
            image,
            json!({"type": 2, "image_item": {"media": {"encrypt_query_param": "a+b/c==",
                   "aes_key": "MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=", "encrypt_type": 1}, "mid_size": 28704}})
        );
        let video = media.item(MediaType::Video);
        assert_eq!((video["type"].as_i64(), video["video_item"]["video_size"].as_u64()), (Some(5), Some(28704)));
        for kind in [MediaType::File, MediaType::Voice] {
            let file = media.item(kind);
            assert_eq!(file["type"], 4, "{kind:?}");
            assert_eq!(file["file_item"]["file_name"], "季度报告.pdf");
            assert_eq!(file["file_item"]["len"], "28691", "a decimal string of the plaintext size");
        }
    }

    #[test]
    fn a_media_id_round_trips_and_a_malformed_one_is_refused_without_showing_it() {
        let media = uploaded();
        assert_eq!(UploadedMedia::from_id(&media.to_id()).unwrap(), media);
        assert!(!format!("{media:?}").contains(&media.aes_key), "{media:?}");
        let secret = hex(&KEY);
        for bad in [
            "3a1b2c3d4e5f".to_owned(),
            String::new(),
            format!(r#"{{"encrypt_query_param":"p","aes_key":"{secret}","filesize":16}}"#),
            format!(r#"{{"encrypt_query_param":"","aes_key":"{secret}","filesize":16,"rawsize":1,"file_name":"a"}}"#),
            r#"{"encrypt_query_param":"p","aes_key":"short","filesize":16,"rawsize":1,"file_name":"a"}"#.to_owned(),
            format!(
                r#"{{"encrypt_query_param":"p","aes_key":"{secret}","filesize":16,"rawsize":1,"file_name":"a","x":1}}"#
            ),
        ] {
            let failure = UploadedMedia::from_id(&bad).unwrap_err();
            assert_eq!(failure.verdict, Verdict::Permanent, "{bad}");
            assert!(!failure.message.contains(&secret) && !failure.message.contains("3a1b2c"), "{}", failure.message);
        }
    }

    #[test]
    fn the_upload_goes_to_the_cdn_host_only() {
        let cdn = crate::channels::ilink::media::cdn_root("https://novac2c.cdn.weixin.qq.com");
        let full = UploadUrls {
            full_url: Some(
                "https://novac2c.cdn.weixin.qq.com/c2c/upload?encrypted_query_param=x&filekey=f&taskid=1".into(),
            ),
            param: Some("ignored".into()),
        };
        assert_eq!(upload_url(&cdn, &full, "f").unwrap().as_str(), full.full_url.as_deref().unwrap());
        let param = UploadUrls { full_url: None, param: Some("a+b/c=".into()) };
        assert_eq!(
            upload_url(&cdn, &param, "0f").unwrap().as_str(),
            "https://novac2c.cdn.weixin.qq.com/c2c/upload?encrypted_query_param=a%2Bb%2Fc%3D&filekey=0f"
        );
        for elsewhere in [
            "http://169.254.169.254/latest/meta-data/",
            "http://novac2c.cdn.weixin.qq.com/c2c/upload",
            "https://novac2c.cdn.weixin.qq.com:8443/c2c/upload",
            "https://evil.example/c2c/upload",
        ] {
            let urls = UploadUrls { full_url: Some(elsewhere.into()), param: Some("p".into()) };
            let failure = upload_url(&cdn, &urls, "f").unwrap_err();
            assert_eq!(failure.verdict, Verdict::Permanent, "{elsewhere}");
            assert!(failure.message.contains("not on the iLink CDN"), "{}", failure.message);
        }
        let failure = upload_url(&cdn, &UploadUrls::default(), "f").unwrap_err();
        assert_eq!(failure.verdict, Verdict::Permanent);
    }

    #[test]
    fn a_refused_reservation_is_final_and_a_transport_error_is_not() {
        let refused = reservation_failure(&ApiError::Errcode { code: -2, message: String::new() });
        assert_eq!((refused.verdict, refused.errcode), (Verdict::Permanent, Some(-2)));
        assert_eq!(
            reservation_failure(&ApiError::Errcode { code: -1, message: "x".into() }).verdict,
            Verdict::Permanent
        );
        let cut = ApiError::Transport { timeout: true, connect: false, detail: "timed out".into() };
        assert!(matches!(reservation_failure(&cut).verdict, Verdict::Transient { .. }));
        assert_eq!(reservation_failure(&ApiError::Http { status: 502 }).message, "getuploadurl: HTTP 502");
    }
}
