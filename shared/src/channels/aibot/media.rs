//! Downloading what users send an AI bot: each image, file or video comes as a URL valid five
//! minutes, its body AES-256-CBC encrypted with the bot's EncodingAESKey (IV = the key's first
//! 16 bytes, PKCS#7 to a multiple of 32). Voice comes only as WeCom's transcript.

use async_trait::async_trait;

use crate::core::ports::Clock as _;

use super::config::AiBot;
use crate::core::envelope::{Inbound, Media};
use crate::core::http::{download, Http};
use crate::core::media::{
    link_allowed, spool_download, Cipher, FetchError, Fetched, MediaSource, Spool, DOWNLOAD_TIMEOUT,
};

/// How long WeCom's media URLs work, from the callback.
pub const URL_LIFETIME_S: u64 = 300;

/// The AI bots' media.
pub struct AibotMedia {
    bots: Vec<AiBot>,
    http: Http,
    /// Hosts allowed even on an internal address (the configured API hosts: fakes in tests).
    trusted: Vec<String>,
}

impl AibotMedia {
    pub fn new(bots: &[AiBot], http: &Http, trusted: Vec<String>) -> Self {
        Self { bots: bots.to_vec(), http: http.clone(), trusted }
    }
}

#[async_trait]
impl MediaSource for AibotMedia {
    async fn fetch(&self, inbound: &Inbound, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError> {
        let Some(url) = media.url.as_deref() else {
            // Voice: WeCom sends its transcript and no audio.
            return Err(FetchError::permanent("none", "an AI bot receives no audio, only WeCom's transcript"));
        };
        let bot = self.bots.iter().find(|b| b.name == inbound.account);
        let bot = bot.ok_or_else(|| FetchError::permanent("refused", format!("no AI bot '{}'", inbound.account)))?;
        let parsed = reqwest::Url::parse(url).ok().filter(|u| link_allowed(u, &self.trusted));
        let parsed =
            parsed.ok_or_else(|| FetchError::permanent("refused", "the media URL is not a public http(s) URL"))?;
        let answer = match download(self.http.client().get(parsed).timeout(DOWNLOAD_TIMEOUT)).await {
            Ok(answer) => answer,
            Err(err) => {
                let age = inbound.received_unix().map(|at| crate::core::ports::SystemClock.unix().saturating_sub(at));
                return Err(match FetchError::from_api(err) {
                    FetchError::Permanent { message, .. } if age.is_some_and(|a| a >= URL_LIFETIME_S) => {
                        FetchError::permanent("expired", format!("{message}: the URL was valid {URL_LIFETIME_S} s"))
                    }
                    other => other,
                });
            }
        };
        spool.decrypt(&Cipher::Cbc256 { key: bot.encoding_aes_key.bytes() });
        let mut fetched = spool_download(answer, spool).await?;
        // The type WeCom's storage gives is that of the ciphertext; the bytes will tell.
        fetched.mime = None;
        Ok(fetched)
    }
}
