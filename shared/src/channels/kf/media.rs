//! A customer's files: `media/get` with the token of the WeCom app serving the kf account
//! (the same download as the app's own messages, in ranges).

use async_trait::async_trait;

use super::config::KfAccount;
use crate::channels::wecom::media::WecomMedia;
use crate::core::envelope::{Inbound, Media};
use crate::core::media::{FetchError, Fetched, MediaSource, Spool};

/// The kf accounts' media, fetched through their apps.
pub struct KfMedia {
    accounts: Vec<KfAccount>,
    wecom: WecomMedia,
}

impl KfMedia {
    pub fn new(accounts: &[KfAccount], wecom: WecomMedia) -> Self {
        Self { accounts: accounts.to_vec(), wecom }
    }
}

#[async_trait]
impl MediaSource for KfMedia {
    async fn fetch(&self, inbound: &Inbound, media: &Media, spool: &mut Spool) -> Result<Fetched, FetchError> {
        let account = self.accounts.iter().find(|a| a.name == inbound.account);
        let account =
            account.ok_or_else(|| FetchError::permanent("refused", format!("no kf account '{}'", inbound.account)))?;
        self.wecom.fetch_for(&account.app, media, spool).await
    }
}
