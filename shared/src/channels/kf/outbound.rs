//! Replies to 微信客服 customers (`kf/send_msg`): text, images, voice, video and files (uploaded
//! with the serving app's `media/upload`), each part with a `msgid` derived from its
//! idempotency key, so a redelivered part names the same message to WeChat too.
//!
//! Before a part goes: the customer's window must allow it (48 h since their last message, 5
//! parts per message, each part counted once in DynamoDB whatever the retries; else permanent,
//! no WeChat call), and the session must be the API's (state 0 is taken, moved to 1; a queued,
//! human-served or ended session is left alone, the reply dead-lettered with the reason).
//!
//! WeChat refuses a `msgid` the account used before. The errcode is undocumented, so a retry
//! (an earlier attempt may have reached WeChat) takes a refusal whose errmsg says the msgid
//! exists as "sent" ([`repeat_refused`]); a first attempt never does.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::api::{errcodes, service_state, take_session};
use super::config::KfAccount;
use crate::channels::wecom::api::WecomApi;
use crate::channels::wecom::WecomApp;
use crate::core::envelope::{Content, MediaType, Outbound};
use crate::core::outbound::{account_of, has_account, short_hash, Delivered, Delivery, OutFile, Unit};
use crate::core::ports::{Clock, CustomerWindows, WindowVerdict};
use crate::core::retry::Failure;
use crate::core::tokens::Tokens;

/// How long after a customer's message the account may answer.
pub const WINDOW_S: u64 = 48 * 3600;
/// Messages the account may send per customer message.
pub const PER_CUSTOMER_MESSAGE: u32 = 5;

/// The `msgid` of the part with marker key `key`: at most 32 characters of `[0-9a-z]`.
pub fn msgid(key: &str) -> String {
    format!("wxb{}", &short_hash(key)[..24])
}

/// Sends as the kf accounts (`wecom_kf`; `to` is the customer's external user id).
pub struct KfDelivery {
    accounts: Vec<KfAccount>,
    apps: Vec<WecomApp>,
    api: WecomApi,
    tokens: Arc<Tokens>,
    windows: Arc<dyn CustomerWindows>,
    clock: Arc<dyn Clock>,
}

impl KfDelivery {
    pub fn new(
        accounts: &[KfAccount],
        apps: &[WecomApp],
        api: &WecomApi,
        tokens: &Arc<Tokens>,
        windows: Arc<dyn CustomerWindows>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            accounts: accounts.to_vec(),
            apps: apps.to_vec(),
            api: api.clone(),
            tokens: tokens.clone(),
            windows,
            clock,
        }
    }
}

/// The reply window key of `customer` of `account`.
pub fn window_key(account: &KfAccount, customer: &str) -> String {
    format!("{}:{customer}", account.state_key())
}

/// Whether `failure` is WeChat refusing a `msgid` the account already used: an errcode answer
/// whose errmsg says the msgid exists or repeats (`msgid exist`, the Official Account's
/// `clientmsgid exist` shape; the kf errcode itself is undocumented), and not that it is
/// invalid or unknown.
pub fn repeat_refused(failure: &Failure) -> bool {
    const SAYS_REPEAT: [&str; 7] = [
        "msgid exist",
        "msgid already",
        "msgid duplicat",
        "duplicate msgid",
        "msgid repeat",
        "repeated msgid",
        "msgid重复",
    ];
    const SAYS_OTHER: [&str; 4] = ["not exist", "invalid", "unknown", "illegal"];
    let message = failure.message.to_ascii_lowercase();
    failure.errcode.is_some()
        && SAYS_REPEAT.iter().any(|phrase| message.contains(phrase))
        && !SAYS_OTHER.iter().any(|phrase| message.contains(phrase))
}

/// `msgtype` and its object for a part: text, or a file message by media id.
fn payload(part: &Content) -> Result<(&'static str, serde_json::Value), Failure> {
    let by_id = |kind: &'static str, media_id: &Option<String>| match media_id {
        Some(id) => Ok((kind, json!({"media_id": id}))),
        None => Err(Failure::permanent(format!("the {kind} was not uploaded"))),
    };
    match part {
        Content::Text { text } | Content::Markdown { text } => Ok(("text", json!({"content": text}))),
        Content::Image { media_id, .. } => by_id("image", media_id),
        Content::Voice { media_id, .. } => by_id("voice", media_id),
        Content::Video { media_id, .. } => by_id("video", media_id),
        Content::File { media_id, .. } => by_id("file", media_id),
        _ => Err(Failure::permanent(UNSUPPORTED)),
    }
}

const UNSUPPORTED: &str = "微信客服 replies are text, images, voice, video or files";

impl KfDelivery {
    /// The account `out` names, its serving app and the app's secret.
    fn credentials(&self, out: &Outbound) -> Result<(&KfAccount, &WecomApp, secrecy::SecretString), Failure> {
        let account = account_of(&self.accounts, out)?;
        let (app, secret) = account
            .serving_app(&self.apps)
            .ok_or_else(|| Failure::permanent(format!("kf account '{}': its WeCom app has no secret", account.name)))?;
        Ok((account, app, secret))
    }

    /// Counts the part in the customer's window: permanent when it is closed or spent.
    async fn count(&self, account: &KfAccount, customer: &str, key: &str) -> Result<(), Failure> {
        let verdict = self
            .windows
            .count(&window_key(account, customer), key, self.clock.unix(), WINDOW_S, PER_CUSTOMER_MESSAGE)
            .await
            .map_err(|e| Failure::transient(e.to_string()))?;
        match verdict {
            WindowVerdict::Counted => Ok(()),
            WindowVerdict::Closed => Err(Failure::permanent("the customer has not written in the last 48 hours")),
            WindowVerdict::Spent => Err(Failure::permanent("5 messages were sent since the customer's last message")),
        }
    }

    /// Makes sure the session is the API's: 0 is taken (moved to 1); 2, 3 and 4 are refusals.
    async fn take(
        &self,
        account: &KfAccount,
        app: &WecomApp,
        secret: &secrecy::SecretString,
        customer: &str,
    ) -> Result<(), Failure> {
        let kfid = account.open_kfid.as_str();
        let fetch = || self.api.token(&app.corp_id, secret);
        let state = || async {
            self.tokens
                .call(&app.token_key(), errcodes, fetch, |token| async move {
                    service_state(&self.api, &token, kfid, customer).await
                })
                .await
        };
        let mut current = state().await?;
        if current == 0 {
            let taken = self
                .tokens
                .call(&app.token_key(), errcodes, fetch, |token| async move {
                    take_session(&self.api, &token, kfid, customer).await
                })
                .await;
            // Another reply may have taken it a moment before: what matters is the state now;
            // still new, the move itself failed (a passing fault is retried).
            current = match taken {
                Ok(()) => {
                    let window = window_key(account, customer);
                    if let Err(err) = self.windows.session(&window, 1, None, self.clock.unix()).await {
                        tracing::warn!(error = %err, "could not record the session taken");
                    }
                    1
                }
                Err(failure) => match state().await? {
                    0 => return Err(failure),
                    now => now,
                },
            };
        }
        match current {
            1 => Ok(()),
            2 => Err(Failure::permanent("a human servicer has the session (it is queued for one)")),
            3 => Err(Failure::permanent("a human servicer has the session")),
            4 => Err(Failure::permanent(
                "a human servicer has the session (they ended it; the customer must write again)",
            )),
            other => Err(Failure::permanent(format!("the session is in an unknown state {other}"))),
        }
    }
}

#[async_trait]
impl Delivery for KfDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.accounts, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        match content {
            Content::Text { .. } | Content::Markdown { .. } => None,
            Content::Image { .. } | Content::Voice { .. } | Content::Video { .. } | Content::File { .. } => {
                crate::channels::wecom::outbound::refuse(content, false)
            }
            _ => Some(UNSUPPORTED),
        }
    }

    /// 2048 bytes of text per message.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (2048, Unit::Bytes)
    }

    /// WeChat renders no markdown here: it goes as its text.
    fn markdown_as_text(&self) -> bool {
        true
    }

    /// Each part names its `msgid`, which WeChat takes once per account.
    fn drops_repeats(&self) -> bool {
        true
    }

    /// The serving app's `media/upload`: WeCom's caps.
    fn media_cap(&self, media_type: MediaType) -> Option<u64> {
        const MB: u64 = 1024 * 1024;
        Some(match media_type {
            MediaType::Image | MediaType::Video => 10 * MB,
            MediaType::Voice => 2 * MB,
            MediaType::File => 20 * MB,
        })
    }

    /// Media ids belong to the serving app's corp.
    fn media_scope(&self, out: &Outbound) -> String {
        match self.credentials(out) {
            Ok((_, app, _)) => app.corp_id.clone(),
            Err(_) => out.account.clone(),
        }
    }

    fn refuse_file(&self, file: &OutFile) -> Option<String> {
        crate::channels::wecom::outbound::upload_refusal(file)
    }

    async fn upload(&self, out: &Outbound, file: &OutFile) -> Result<String, Failure> {
        let (_, app, secret) = self.credentials(out)?;
        let fetch = || self.api.token(&app.corp_id, &secret);
        self.tokens
            .call(&app.token_key(), errcodes, fetch, |token| async move {
                self.api.media_upload(&token, file.media_type.as_str(), &file.file_name, file.bytes.clone()).await
            })
            .await
    }

    async fn deliver(&self, out: &Outbound, part: &Content, key: &str, retry: bool) -> Result<Delivered, Failure> {
        let (account, app, secret) = self.credentials(out)?;
        let (msgtype, object) = payload(part)?;
        let (kfid, customer) = (account.open_kfid.as_str(), out.to.as_str());
        // The window first: a part it refuses costs no WeChat call at all. A part the session
        // then refuses gives its allowance back.
        self.count(account, customer, key).await?;
        if let Err(refused) = self.take(account, app, &secret, customer).await {
            if refused.verdict == crate::core::retry::Verdict::Permanent {
                if let Err(err) = self.windows.uncount(&window_key(account, customer), key).await {
                    tracing::warn!(error = %err, "could not give back a refused part's allowance");
                }
            }
            return Err(refused);
        }
        let msgid = msgid(key);
        let mut body = json!({"touser": customer, "open_kfid": kfid, "msgid": msgid, "msgtype": msgtype});
        body[msgtype] = object;
        let fetch = || self.api.token(&app.corp_id, &secret);
        let sent = self
            .tokens
            .call(&app.token_key(), errcodes, fetch, |token| {
                let body = &body;
                async move { self.api.post("kf/send_msg", &token, body).await }
            })
            .await;
        match sent {
            Ok(_) => {}
            // An earlier attempt reached WeChat after all: this part is sent.
            Err(failure) if retry && repeat_refused(&failure) => {
                tracing::info!(account = %account.name, errcode = failure.errcode, answer = %failure.message, "WeChat already has this part's msgid: sent before");
            }
            Err(failure) => return Err(failure),
        }
        // The record a later `msg_send_fail` marks; the part is sent whether or not it is kept.
        if let Err(err) = self.windows.sent(&window_key(account, customer), &msgid, key, self.clock.unix()).await {
            tracing::warn!(account = %account.name, error = %err, "could not record a sent part");
        }
        Ok(Delivered::Sent { undelivered: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_part_always_names_the_same_short_msgid() {
        let id = super::msgid("sent:wecom_kf:support:wecom_kf:support:m1#0");
        assert_eq!(id, super::msgid("sent:wecom_kf:support:wecom_kf:support:m1#0"));
        assert_ne!(id, super::msgid("sent:wecom_kf:support:wecom_kf:support:m1#1"));
        assert!(id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    }

    #[test]
    fn only_an_errcode_naming_an_existing_msgid_is_a_repeat() {
        use crate::core::retry::Failure;
        let refused = |code: Option<i64>, message: &str| {
            let mut failure = Failure::permanent(message);
            failure.errcode = code;
            super::repeat_refused(&failure)
        };
        assert!(refused(Some(95099), "errcode 95099: msgid exist: wxb1 was used"));
        assert!(refused(Some(40058), "errcode 40058: duplicate msgid"));
        assert!(!refused(Some(95018), "errcode 95018: send msg session status invalid"));
        assert!(!refused(Some(40058), "errcode 40058: invalid msgid format"));
        assert!(!refused(Some(40058), "errcode 40058: msgid exist check failed: invalid"));
        assert!(!refused(Some(95004), "errcode 95004: msgid not exist"));
        assert!(!refused(Some(40058), "errcode 40058: unused msgid"));
        assert!(!refused(None, "timed out after msgid exist"), "a transport error is not WeChat's answer");
    }
}
