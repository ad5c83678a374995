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
#[derive(Clone)]
pub struct OutFiles {
    pub store: Arc<dyn MediaStore>,
    pub ids: Arc<dyn MediaIds>,
    pub http: Http,
    /// `wxbridge dev` only: bots on this machine may name `http://127.0.0.1…` files. Never on
    /// Lambda, where loopback is the runtime API.
    pub allow_loopback: bool,
}

/// Whether a bot's URL may be fetched: https to a public address (no private, loopback or
/// link-local literal: the instance metadata, the Lambda runtime API), or in `dev` http on
/// this machine.
fn url_allowed(url: &reqwest::Url, allow_loopback: bool) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if allow_loopback && loopback && url.username().is_empty() && url.password().is_none() {
        return true;
    }
    url.scheme() == "https" && crate::core::media::link_allowed(url, &[])
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

    /// Keeps `file` in the media store under its content key; returns the key.
    pub async fn keep(&self, file: &OutFile) -> Result<String, crate::core::ports::PortError> {
        let key = crate::core::media::content_key(&file.sha256);
        self.store.put_bytes(&key, file.bytes.clone(), &file.mime).await?;
        Ok(key)
    }

    /// GETs a bot's file by URL, at most `cap` bytes.
    async fn fetch(&self, url: &str, cap: u64) -> Result<Vec<u8>, Failure> {
        let parsed = reqwest::Url::parse(url).ok().filter(|u| url_allowed(u, self.allow_loopback));
        let parsed = parsed.ok_or_else(|| Failure::permanent("media.url must be an https URL of a public host"))?;
        let response = self
            .http
            .client()
            .get(parsed)
            .timeout(URL_TIMEOUT)
            .send()
            .await
            .map_err(|e| Failure::transient(format!("media.url: {}", ApiError::transport(e))))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Failure::permanent("media.url redirects (redirects are not followed; give the final URL)"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_name_public_https_files_only_and_loopback_only_in_dev() {
        let ok = |u: &str, dev: bool| url_allowed(&reqwest::Url::parse(u).unwrap(), dev);
        assert!(ok("https://example.com/a.png", false));
        for refused in [
            "http://example.com/a.png",
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3/x",
            "https://localhost/x",
        ] {
            assert!(!ok(refused, false), "{refused}");
        }
        assert!(ok("http://127.0.0.1:8787/media/x", true), "dev's own files");
        assert!(!ok("http://10.1.2.3/x", true));
    }
}
