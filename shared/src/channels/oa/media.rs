//! Downloading what followers send an Official Account: `media/get` by `MediaId` (kept three
//! days); a video answers with a `video_url` to fetch next.

use std::sync::Arc;

use async_trait::async_trait;

use super::api::{errcodes, OaApi};
use super::config::OaApp;
use crate::core::envelope::{Inbound, Media};
use crate::core::http::Download;
use crate::core::media::{link_allowed, spool_download, FetchError, Fetched, MediaSource, Spool};
use crate::core::tokens::Tokens;

/// The Official Accounts' media, fetched with each account's shared access token.
pub struct OaMedia {
    accounts: Vec<OaApp>,
    api: OaApi,
    tokens: Arc<Tokens>,
    /// Hosts a `video_url` may name even on an internal address (the configured API hosts).
    trusted: Vec<String>,
}

impl OaMedia {
    pub fn new(accounts: &[OaApp], api: &OaApi, tokens: &Arc<Tokens>, trusted: Vec<String>) -> Self {
        Self { accounts: accounts.to_vec(), api: api.clone(), tokens: tokens.clone(), trusted }
    }
}

#[async_trait]
impl MediaSource for OaMedia {
    async fn fetch(&self, inbound: &Inbound, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError> {
        let media_id = media.media_id.as_deref().filter(|m| !m.is_empty());
        let media_id = media_id.ok_or_else(|| FetchError::permanent("refused", "the message carries no MediaId"))?;
        let account = self.accounts.iter().find(|a| a.app == inbound.account);
        let account = account
            .ok_or_else(|| FetchError::permanent("refused", format!("no Official Account '{}'", inbound.account)))?;
        let secret = account.app_secret.clone().ok_or_else(|| {
            FetchError::permanent(
                "refused",
                format!("Official Account '{}' has no app_secret: media cannot be fetched", account.app),
            )
        })?;
        let fetch_token = || self.api.stable_token(&account.app_id, &secret);
        let answer = self
            .tokens
            .call(&account.token_key(), errcodes, fetch_token, |token| async move {
                self.api.media_get(&token, media_id).await
            })
            .await
            .map_err(FetchError::from_failure)?;
        let answer = match answer {
            Download::Json(body) => {
                let link = body.get("video_url").and_then(|v| v.as_str()).and_then(|u| reqwest::Url::parse(u).ok());
                let link = link.filter(|u| link_allowed(u, &self.trusted));
                let link =
                    link.ok_or_else(|| FetchError::permanent("refused", "media/get gave no public video_url"))?;
                self.api.fetch_link(link.as_str()).await.map_err(FetchError::from_api)?
            }
            file => file,
        };
        let mut fetched = spool_download(answer, spool).await?;
        fetched.transcript = media.transcript.clone();
        Ok(fetched)
    }
}
