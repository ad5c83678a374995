//! Downloading what members send a WeCom app: `media/get` by `MediaId` (valid three days),
//! in ranges so a large file never needs WeCom's "too large, use Range" (830002) round trip.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;

use super::api::{errcodes, WecomApi};
use super::config::WecomApp;
use crate::core::envelope::{Inbound, Media};
use crate::core::http::{download, ApiError, Download};
use crate::core::media::{spool_download, FetchError, Fetched, MediaSource, Spool};
use crate::core::tokens::Tokens;

/// The bytes asked for per request: WeCom recommends at most 20 MB per range.
pub const RANGE_BYTES: u64 = 20 * 1024 * 1024;

impl WecomApi {
    /// `GET cgi-bin/media/get?access_token=…&media_id=…`, `bytes` of it when given.
    pub async fn media_get(
        &self,
        token: &secrecy::SecretString,
        media_id: &str,
        bytes: Option<(u64, u64)>,
    ) -> Result<Download, ApiError> {
        let mut request = self
            .client()
            .get(self.url("media/get"))
            .query(&[("access_token", token.expose_secret()), ("media_id", media_id)])
            .timeout(crate::core::media::DOWNLOAD_TIMEOUT);
        if let Some((first, last)) = bytes {
            request = request.header(reqwest::header::RANGE, format!("bytes={first}-{last}"));
        }
        download(request).await
    }
}

/// The WeCom apps' media, fetched with each app's shared access token.
pub struct WecomMedia {
    apps: Vec<WecomApp>,
    api: WecomApi,
    tokens: Arc<Tokens>,
}

impl WecomMedia {
    pub fn new(apps: &[WecomApp], api: &WecomApi, tokens: &Arc<Tokens>) -> Self {
        Self { apps: apps.to_vec(), api: api.clone(), tokens: tokens.clone() }
    }
}

/// `bytes a-b/total` of a `Content-Range` header: (a, b, total).
fn content_range(response: &reqwest::Response) -> Option<(u64, u64, u64)> {
    let value = response.headers().get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, last) = range.split_once('-')?;
    let (start, last, total) = (start.trim().parse().ok()?, last.trim().parse().ok()?, total.trim().parse().ok()?);
    (start <= last && last < total).then_some((start, last, total))
}

#[async_trait]
impl MediaSource for WecomMedia {
    async fn fetch(&self, inbound: &Inbound, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError> {
        self.fetch_for(&inbound.account, media, spool).await
    }
}

impl WecomMedia {
    /// Fetches `media` with the token of app `app_name` (the app itself, or the one serving a
    /// 微信客服 account).
    pub async fn fetch_for(&self, app_name: &str, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError> {
        let media_id = media.media_id.as_deref().filter(|m| !m.is_empty());
        let media_id = media_id.ok_or_else(|| FetchError::permanent("refused", "the message carries no MediaId"))?;
        let app = self.apps.iter().find(|a| a.app == app_name);
        let app = app.ok_or_else(|| FetchError::permanent("refused", format!("no WeCom app '{app_name}'")))?;
        let secret = app.secret.clone().ok_or_else(|| {
            FetchError::permanent("refused", format!("WeCom app '{}' has no secret: media cannot be fetched", app.app))
        })?;
        let fetch_token = || self.api.token(&app.corp_id, &secret);
        let mut described_first = None;
        let mut first = 0u64;
        loop {
            let last = first + RANGE_BYTES - 1;
            let answer = self
                .tokens
                .call(&app.token_key(), errcodes, fetch_token, |token| async move {
                    self.api.media_get(&token, media_id, Some((first, last))).await
                })
                .await
                .map_err(FetchError::from_failure)?;
            let (whole, range) = match &answer {
                Download::File(response) => (response.status() == reqwest::StatusCode::OK, content_range(response)),
                Download::Read(_) => (true, None),
                Download::Json(_) => {
                    return Err(FetchError::Transient("media/get answered JSON without a file".into()))
                }
            };
            if whole && first > 0 {
                // The whole file to a later range: start over with it.
                spool.reset().await.map_err(FetchError::from_spool)?;
            }
            if let Some((start, _, _)) = range.filter(|(start, _, _)| *start != first) {
                return Err(FetchError::Transient(format!("asked for bytes from {first}, got them from {start}")));
            }
            let fetched = spool_download(answer, spool).await?;
            described_first.get_or_insert(fetched);
            match range {
                _ if whole => break,
                Some((_, end, total)) if end + 1 < total => first = end + 1,
                Some(_) => break,
                None => return Err(FetchError::Transient("a partial answer without Content-Range".into())),
            }
        }
        Ok(described_first.unwrap_or_default())
    }
}
