//! Downloading what users send an AI bot: each image, file or video comes as a URL valid five
//! minutes, its body AES-256-CBC encrypted with the bot's EncodingAESKey (IV = the key's first
//! 16 bytes, PKCS#7 to a multiple of 32). Voice comes only as WeCom's transcript.

use async_trait::async_trait;

use crate::core::ports::Clock as _;

use super::config::AiBot;
use crate::channels::wecom::media::described;
use crate::core::envelope::{Inbound, Media};
use crate::core::http::{download, Download, Http};
use crate::core::media::{spool_body, Cipher, FetchError, Fetched, MediaSource, Spool, DOWNLOAD_TIMEOUT};

/// How long WeCom's media URLs work, from the callback.
pub const URL_LIFETIME_S: u64 = 300;

/// The AI bots' media.
pub struct AibotMedia {
    bots: Vec<AiBot>,
    http: Http,
}

impl AibotMedia {
    pub fn new(bots: &[AiBot], http: &Http) -> Self {
        Self { bots: bots.to_vec(), http: http.clone() }
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
        let parsed = reqwest::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "https" | "http"));
        let parsed = parsed.ok_or_else(|| FetchError::permanent("refused", "the media URL is not an http(s) URL"))?;
        let response = match download(self.http.client().get(parsed).timeout(DOWNLOAD_TIMEOUT)).await {
            Ok(Download::File(response)) => response,
            Ok(Download::Json(_)) => return Err(FetchError::permanent("refused", "the media URL answered JSON")),
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
        let mut fetched = described(&response);
        // The type WeCom's storage gives is that of the ciphertext; the bytes will tell.
        fetched.mime = None;
        spool.decrypt(&Cipher::Cbc256 { key: bot.encoding_aes_key.bytes() });
        spool_body(response, spool).await?;
        Ok(fetched)
    }
}
