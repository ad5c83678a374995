//! Downloading what users send an iLink bot: files on WeChat's CDN, AES-128-ECB encrypted,
//! fetched by their `encrypt_query_param` (or the `full_url` the server gives, when it points
//! at the CDN). An image with no key at all is stored as sent.

use async_trait::async_trait;
use base64::Engine as _;

use super::message::{MediaItem, MessageItem, WeixinMessage};
use crate::core::envelope::{Inbound, Media, MediaType};
use crate::core::http::{download, Http};
use crate::core::media::{spool_download, Cipher, FetchError, Fetched, MediaSource, Spool, DOWNLOAD_TIMEOUT};

/// WeChat's media CDN host (files are under `/c2c/`).
pub const DEFAULT_CDN_BASE: &str = "https://novac2c.cdn.weixin.qq.com";
/// Overrides the CDN (tests and the sandbox point it at a fake).
pub const CDN_VAR: &str = "WXBRIDGE_ILINK_CDN_BASE";

/// The iLink bots' media, from the CDN.
pub struct IlinkMedia {
    http: Http,
    cdn: reqwest::Url,
}

impl IlinkMedia {
    /// Media from the CDN host `cdn_base` (a URL; WeChat's when it does not parse).
    pub fn new(http: &Http, cdn_base: &str) -> Self {
        Self { http: http.clone(), cdn: cdn_root(cdn_base) }
    }

    /// Where to GET a file: the server's `full_url` only when it is on the CDN's own host (it
    /// could point anywhere otherwise), else the CDN's download URL for the query param.
    fn url(&self, media: &super::message::CdnMedia) -> Option<reqwest::Url> {
        let same_host = |u: &reqwest::Url| on_cdn_host(&self.cdn, u);
        if let Some(full) = media.full_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()).filter(same_host) {
            return Some(full);
        }
        let param = media.encrypt_query_param.as_deref().filter(|p| !p.is_empty())?;
        let mut url = self.cdn.join("download").ok()?;
        url.query_pairs_mut().append_pair("encrypted_query_param", param);
        Some(url)
    }
}

/// Where the CDN keeps files: `<cdn_base>/c2c/` (WeChat's CDN when `cdn_base` does not parse).
pub fn cdn_root(cdn_base: &str) -> reqwest::Url {
    let parse = |u: &str| reqwest::Url::parse(&format!("{}/c2c/", u.trim_end_matches('/')));
    parse(cdn_base).or_else(|_| parse(DEFAULT_CDN_BASE)).unwrap_or_else(|_| unreachable_cdn())
}

/// Whether `url` is on the CDN's own scheme, host and port: URLs the server hands out are
/// followed only there (they could point anywhere, the instance metadata included).
pub fn on_cdn_host(cdn: &reqwest::Url, url: &reqwest::Url) -> bool {
    url.scheme() == cdn.scheme()
        && url.host() == cdn.host()
        && url.port_or_known_default() == cdn.port_or_known_default()
}

/// A fixed, valid URL for the impossible case that neither base parses.
fn unreachable_cdn() -> reqwest::Url {
    reqwest::Url::from_directory_path("/")
        .unwrap_or_else(|_| reqwest::Url::parse("http://0.0.0.0/").expect("a literal URL"))
}

/// Decodes 32 hex digits.
fn hex16(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// The AES-128 key of a media item, in every form the server uses: an image's `aeskey` (32 hex
/// digits); else `media.aes_key` as base64 of 16 raw bytes or of 32 hex digits, or bare hex.
/// `Ok(None)`: no key (a plain file); `Err`: a key that is none of these.
pub fn item_key(item: &MediaItem) -> Result<Option<[u8; 16]>, FetchError> {
    if let Some(key) = item.aeskey.as_deref().filter(|k| !k.is_empty()) {
        return hex16(key)
            .map(Some)
            .ok_or_else(|| FetchError::permanent("refused", "the image's aeskey is not 32 hex digits"));
    }
    let Some(text) = item.media.as_ref().and_then(|m| m.aes_key.as_deref()).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if let Some(key) = hex16(text) {
        return Ok(Some(key));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded =
        engine.decode(text.trim()).map_err(|_| FetchError::permanent("refused", "the media aes_key is not base64"))?;
    match decoded.len() {
        16 => Ok(Some(std::array::from_fn(|i| decoded[i]))),
        32 => {
            std::str::from_utf8(&decoded).ok().and_then(hex16).map(Some).ok_or_else(|| {
                FetchError::permanent("refused", "the media aes_key is neither 16 bytes nor 32 hex digits")
            })
        }
        _ => Err(FetchError::permanent("refused", "the media aes_key is neither 16 bytes nor 32 hex digits")),
    }
}

/// The item of the message that `media` describes.
fn item_of<'a>(message: &'a WeixinMessage, media: &Media) -> Option<&'a MediaItem> {
    let pick: fn(&MessageItem) -> Option<&MediaItem> = match media.media_type? {
        MediaType::Image => |i| i.image_item.as_ref(),
        MediaType::Voice => |i| i.voice_item.as_ref(),
        MediaType::Video => |i| i.video_item.as_ref(),
        MediaType::File => |i| i.file_item.as_ref(),
    };
    let items: Vec<&MediaItem> = message.item_list.iter().filter_map(pick).collect();
    items
        .iter()
        .find(|i| i.media.as_ref().and_then(|m| m.encrypt_query_param.as_ref()) == media.media_id.as_ref())
        .or(items.first())
        .copied()
}

#[async_trait]
impl MediaSource for IlinkMedia {
    async fn fetch(&self, inbound: &Inbound, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError> {
        let message = WeixinMessage::from_value(&inbound.raw)
            .map_err(|_| FetchError::permanent("refused", "the message's raw payload is not an iLink message"))?;
        let item =
            item_of(&message, media).ok_or_else(|| FetchError::permanent("refused", "no media item in the message"))?;
        let cdn = item
            .media
            .as_ref()
            .ok_or_else(|| FetchError::permanent("refused", "the media item has no CDN reference"))?;
        let url =
            self.url(cdn).ok_or_else(|| FetchError::permanent("refused", "the media item has no CDN reference"))?;
        let key = item_key(item)?;
        let answer =
            download(self.http.client().get(url).timeout(DOWNLOAD_TIMEOUT)).await.map_err(FetchError::from_api)?;
        if let Some(key) = key {
            spool.decrypt(&Cipher::Ecb128 { key });
        }
        let mut fetched = spool_download(answer, spool).await?;
        fetched.mime = None;
        fetched.file_name = item.file_name.clone().or(fetched.file_name);
        fetched.transcript = item.text.clone().filter(|t| !t.is_empty());
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ilink::message::CdnMedia;

    fn item(aeskey: Option<&str>, aes_key: Option<&str>) -> MediaItem {
        MediaItem {
            aeskey: aeskey.map(str::to_owned),
            media: Some(CdnMedia { aes_key: aes_key.map(str::to_owned), ..CdnMedia::default() }),
            ..MediaItem::default()
        }
    }

    #[test]
    fn reads_every_key_form() {
        let raw: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        let hex = crate::protocol::hex::hex(&raw);
        let b64 = base64::engine::general_purpose::STANDARD;
        for (item, why) in [
            (item(Some(&hex), None), "image aeskey"),
            (item(Some(&hex), Some("garbage")), "image aeskey first"),
            (item(None, Some(&b64.encode(raw))), "base64 of raw"),
            (item(None, Some(&b64.encode(&hex))), "base64 of hex"),
            (item(None, Some(&hex)), "bare hex"),
            (item(None, Some(&hex.to_uppercase())), "bare upper-case hex"),
        ] {
            assert_eq!(item_key(&item).unwrap(), Some(raw), "{why}");
        }
        assert_eq!(item_key(&item(None, None)).unwrap(), None, "no key: plain");
        for bad in [item(Some("xyz"), None), item(None, Some("!!!")), item(None, Some(&b64.encode([1u8; 20])))] {
            assert!(matches!(item_key(&bad), Err(FetchError::Permanent { code: "refused", .. })));
        }
    }

    #[test]
    fn follows_full_url_only_on_the_cdn_host() {
        let http = Http::new(&crate::core::http::HttpSettings::default()).unwrap();
        let media = IlinkMedia::new(&http, "https://novac2c.cdn.weixin.qq.com");
        let on_cdn = CdnMedia {
            full_url: Some("https://novac2c.cdn.weixin.qq.com/c2c/download?x=1".into()),
            ..CdnMedia::default()
        };
        assert_eq!(media.url(&on_cdn).unwrap().as_str(), "https://novac2c.cdn.weixin.qq.com/c2c/download?x=1");
        let elsewhere = CdnMedia {
            full_url: Some("http://169.254.169.254/latest/meta-data".into()),
            encrypt_query_param: Some("a+b/c=".into()),
            ..CdnMedia::default()
        };
        assert_eq!(
            media.url(&elsewhere).unwrap().as_str(),
            "https://novac2c.cdn.weixin.qq.com/c2c/download?encrypted_query_param=a%2Bb%2Fc%3D"
        );
        assert!(media.url(&CdnMedia { full_url: Some("http://evil/".into()), ..CdnMedia::default() }).is_none());
    }
}
