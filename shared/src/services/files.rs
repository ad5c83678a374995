//! The files an `Outbound` sends: loaded from the media store (`key`), an https URL, or inline
//! base64, hashed and typed, before a channel uploads them; and the media ids channels gave
//! for them, so a file goes up once per account while its id is valid.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::core::envelope::{MediaType, OutMedia};
use crate::core::http::{ApiError, Http};
use crate::core::media::{clean_file_name, hex, is_content_key, sniff};
use crate::core::outbound::{megabytes, OutFile};
use crate::core::ports::{MediaIds, MediaStore};
use crate::core::retry::Failure;

/// How long fetching a file by URL may take.
const URL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the sender finds files and remembers their media ids.
pub struct OutFiles {
    pub store: Arc<dyn MediaStore>,
    pub ids: Arc<dyn MediaIds>,
    pub http: Http,
}

/// Whether a bot's URL may be fetched: https, or http on this machine (`dev`).
fn url_allowed(url: &reqwest::Url) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    url.username().is_empty()
        && url.password().is_none()
        && (url.scheme() == "https" || (url.scheme() == "http" && loopback))
}

impl OutFiles {
    /// Loads the file `source` names, refusing more than `cap` bytes.
    pub async fn load(&self, source: &OutMedia, media_type: MediaType, cap: u64) -> Result<OutFile, Failure> {
        let too_large =
            || Failure::permanent(format!("the {} is over this channel's {}", media_type.as_str(), megabytes(cap)));
        let bytes = match (&source.key, &source.url, &source.base64) {
            (Some(key), None, None) => {
                if !is_content_key(key) {
                    return Err(Failure::permanent("media.key is not a media/<sha256> key of the media store"));
                }
                let transient = |e: crate::core::ports::PortError| Failure::transient(e.to_string());
                match self.store.size(key).await.map_err(transient)? {
                    None => return Err(Failure::permanent("no file under media.key (expired from the media store?)")),
                    Some(size) if size > cap => return Err(too_large()),
                    Some(_) => {}
                }
                let bytes = self.store.get(key, cap).await.map_err(transient)?;
                bytes.ok_or_else(|| Failure::permanent("no file under media.key (expired from the media store?)"))?
            }
            (None, Some(url), None) => self.fetch(url, cap).await?,
            (None, None, Some(data)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|_| Failure::permanent("media.base64 is not base64"))?;
                if bytes.len() as u64 > cap {
                    return Err(too_large());
                }
                bytes
            }
            _ => return Err(Failure::permanent("media needs exactly one of key, url and base64")),
        };
        if bytes.is_empty() {
            return Err(Failure::permanent("the file is empty"));
        }
        let sha256 = hex(&Sha256::digest(&bytes));
        let mime = sniff(&bytes[..bytes.len().min(64)]).unwrap_or("application/octet-stream").to_owned();
        let file_name = source
            .file_name
            .as_deref()
            .and_then(clean_file_name)
            .unwrap_or_else(|| format!("{}.{}", &sha256[..12], extension(&mime)));
        Ok(OutFile { media_type, bytes, sha256, mime, file_name })
    }

    /// GETs a bot's file by URL, at most `cap` bytes.
    async fn fetch(&self, url: &str, cap: u64) -> Result<Vec<u8>, Failure> {
        let parsed = reqwest::Url::parse(url).ok().filter(url_allowed);
        let parsed = parsed.ok_or_else(|| Failure::permanent("media.url must be an https URL"))?;
        let response = self
            .http
            .client()
            .get(parsed)
            .timeout(URL_TIMEOUT)
            .send()
            .await
            .map_err(|e| Failure::transient(format!("media.url: {}", ApiError::transport(e))))?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("media.url answered HTTP {}", status.as_u16());
            return Err(if status.is_client_error() {
                Failure::permanent(message)
            } else {
                Failure::transient(message)
            });
        }
        if response.content_length().is_some_and(|n| n > cap) {
            return Err(Failure::permanent(format!("the file at media.url is over this channel's {}", megabytes(cap))));
        }
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| Failure::transient(format!("media.url: {}", ApiError::transport(e))))?
        {
            if (bytes.len() + chunk.len()) as u64 > cap {
                return Err(Failure::permanent(format!(
                    "the file at media.url is over this channel's {}",
                    megabytes(cap)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// A file name extension for a MIME type.
fn extension(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "audio/amr" => "amr",
        "audio/mpeg" => "mp3",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        _ => "bin",
    }
}
