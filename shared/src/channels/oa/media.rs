//! Downloading what followers send an Official Account: `media/get` by `MediaId` (kept three
//! days); a video answers with a `video_url` to fetch next.

use std::sync::Arc;

use async_trait::async_trait;

use super::api::{errcodes, OaApi};
use super::config::OaApp;
use crate::channels::wecom::media::described;
use crate::core::envelope::{Inbound, Media};
use crate::core::http::Download;
use crate::core::media::{spool_body, FetchError, Fetched, MediaSource, Spool};
use crate::core::tokens::Tokens;

/// The Official Accounts' media, fetched with each account's shared access token.
pub struct OaMedia {
    accounts: Vec<OaApp>,
    api: OaApi,
    tokens: Arc<Tokens>,
}

impl OaMedia {
    pub fn new(accounts: &[OaApp], api: &OaApi, tokens: &Arc<Tokens>) -> Self {
        Self { accounts: accounts.to_vec(), api: api.clone(), tokens: tokens.clone() }
    }
}

/// Where a `video_url` may point: http(s), no credentials in it.
fn link_ok(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.username().is_empty() && u.password().is_none())
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
        let response = match answer {
            Download::File(response) => response,
            Download::Json(body) => {
                let link = body.get("video_url").and_then(|v| v.as_str()).filter(|u| link_ok(u));
                let link =
                    link.ok_or_else(|| FetchError::Transient("media/get answered JSON without a video_url".into()))?;
                match self.api.fetch_link(link).await.map_err(FetchError::from_api)? {
                    Download::File(response) => response,
                    Download::Json(_) => return Err(FetchError::Transient("the video_url answered JSON".into())),
                }
            }
        };
        let mut fetched = described(&response);
        spool_body(response, spool).await?;
        fetched.transcript = media.transcript.clone();
        Ok(fetched)
    }
}
