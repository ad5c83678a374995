//! The 微信客服 puller (wecom-kf.md §9): on each `kf_msg_or_event`, pull the account's items
//! with `sync_msg` until `has_more` is 0 (an empty page with `has_more` 1 does not stop it),
//! handle each item once, and save the cursor only after the page's items were handled.
//!
//! Exactly once towards the bot: every item is claimed under its `msgid` (kept longer than the
//! three days WeChat replays), published (a customer message) or recorded (the rest), then
//! marked done. A puller that dies between publishing and saving the cursor leaves the cursor
//! behind; the next pull gets the same items again and the markers drop them. A pull that
//! starts without a cursor (the first, or one lost) dispatches only customer messages newer than
//! the account's `history_horizon_s`: WeChat would otherwise replay up to three days to the bot.

use std::sync::Arc;
use std::time::Duration;

use super::api::{errcodes, send_msg_on_event, sync_msg, INVALID_MSG_TOKEN};
use super::config::KfAccount;
use super::message::{KfItem, Origin};
use crate::channels::wecom::api::WecomApi;
use crate::channels::wecom::WecomApp;
use crate::core::callback::inbound_message;
use crate::core::outbound::short_hash;
use crate::core::ports::{Claim, Clock, Cursors, CustomerWindows, Dedupe, Metrics, PortError, Publisher};
use crate::core::retry::Failure;
use crate::core::tokens::Tokens;

/// How long an item's marker is kept: past the three days `sync_msg` replays.
pub const SEEN_TTL: Duration = Duration::from_secs(4 * 24 * 3600);
/// How long a claim on an item protects its handling (a publish, a welcome: seconds).
const ITEM_LEASE: Duration = Duration::from_secs(60);
/// A welcome code works 20 s from the event: an older `enter_session` gets none.
const WELCOME_CODE_LIFE_S: u64 = 20;
/// Pages one pull reads at most (a thousand items each, about 30 ms an item to publish: within
/// the function's 300 s); the rest comes when the failed request returns, from the saved cursor.
pub const MAX_PAGES: usize = 5;

/// `service_state` of a session a human servicer has.
const HUMAN: i64 = 3;
/// `service_state` of an ended session.
const ENDED: i64 = 4;

/// What a `msg_send_fail`'s `fail_type` means (wecom-kf.md §6).
fn send_fail_reason(fail_type: i64) -> &'static str {
    match fail_type {
        1 => "the kf account was deleted",
        2 => "the app was closed",
        4 => "the session expired (more than 48 h)",
        5 => "the session was closed",
        6 => "more than 5 messages since the customer's last",
        7..=9 => "the corp is not verified or has no bound 视频号",
        10 => "the customer refused the message",
        11 => "no member is logged in to the WeCom app",
        12 => "the kf account may not send this type",
        13 => "a security restriction",
        _ => "unknown",
    }
}

/// Marks a stored cursor whose pull started without one: `h<unix>|<cursor>`.
const HORIZON_PREFIX: &str = "h";

/// The horizon a stored cursor carries, and the cursor itself.
fn split_horizon(stored: &str) -> (Option<u64>, &str) {
    stored
        .strip_prefix(HORIZON_PREFIX)
        .and_then(|rest| rest.split_once('|'))
        .and_then(|(h, cursor)| h.parse().ok().map(|h| (Some(h), cursor)))
        .unwrap_or((None, stored))
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub pages: usize,
    /// Customer messages put on the inbound queue.
    pub published: usize,
    /// Customer messages older than the horizon of a pull without a cursor: recorded only.
    pub too_old: usize,
    /// Items handled by an earlier pull.
    pub duplicates: usize,
    /// Servicer messages (a human has the conversation: recorded as the customer's session).
    pub servicer: usize,
    /// Session changes (`session_status_change`) stored.
    pub sessions: usize,
    /// Sends WeChat reported undelivered (`msg_send_fail`): their records marked, counted.
    pub send_failed: usize,
    /// Welcomes sent for `enter_session`.
    pub welcomed: usize,
    /// Other events and item types, recorded.
    pub other: usize,
    /// Another pull moved the cursor first: this one stopped.
    pub overtaken: bool,
}

/// Why a pull stopped early; the pull is tried again (its trigger stays on the queue), from the
/// last saved cursor.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no kf account with open_kfid '{0}' in the config")]
    UnknownAccount(String),
    #[error("kf account '{0}': its WeCom app is not configured or has no secret")]
    NoApp(String),
    #[error("kf/sync_msg: {}", .0.message)]
    Api(Failure),
    #[error(transparent)]
    Store(#[from] PortError),
    #[error("another puller is handling item {0}")]
    InFlight(String),
    #[error("more than {MAX_PAGES} pages; the rest comes with the next pull")]
    TooManyPages,
    #[error("the cursor did not move although has_more is 1")]
    Stuck,
}

/// The puller's dependencies.
pub struct KfPuller {
    pub accounts: Vec<KfAccount>,
    pub apps: Vec<WecomApp>,
    pub api: WecomApi,
    pub tokens: Arc<Tokens>,
    pub cursors: Arc<dyn Cursors>,
    /// Item markers (kept [`SEEN_TTL`]).
    pub seen: Arc<dyn Dedupe>,
    /// The inbound queues (a message with a file goes by the media step), and the pull queue
    /// itself (a follow-on pull for a backlog longer than [`MAX_PAGES`]).
    pub publisher: Arc<dyn Publisher>,
    /// The customers' reply windows (opened by each of their messages), sessions and sends.
    pub windows: Arc<dyn CustomerWindows>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
}

impl KfPuller {
    /// Pulls what account `open_kfid` has, with the callback's `token` (`None`: a pull without
    /// one, rate-limited by WeChat).
    pub async fn pull(&self, open_kfid: &str, token: Option<&str>) -> Result<PullReport, PullError> {
        let account = self
            .accounts
            .iter()
            .find(|a| a.open_kfid == open_kfid)
            .ok_or_else(|| PullError::UnknownAccount(open_kfid.to_owned()))?;
        let (app, secret) = account.serving_app(&self.apps).ok_or_else(|| PullError::NoApp(account.name.clone()))?;
        let state = account.state_key();
        // (stored value, version): the value is the cursor, prefixed with the horizon while a
        // pull that started without a cursor has not reached the end (a retry keeps it).
        let mut stored = self.cursors.load(&state).await?;
        let horizon = match &stored {
            Some((value, _)) => split_horizon(value).0,
            None => Some(self.clock.unix().saturating_sub(account.history_horizon_s)),
        };
        let mut token = token.map(str::to_owned);
        let mut report = PullReport::default();
        let mut unmoved = 0;
        loop {
            if report.pages == MAX_PAGES {
                return Err(PullError::TooManyPages);
            }
            let cursor = stored.as_ref().map(|(value, _)| split_horizon(value).1);
            let page = match self.sync(app, &secret, account, cursor, token.as_deref()).await {
                // An expired callback token: the pull goes on without one.
                Err(failure) if failure.errcode == Some(INVALID_MSG_TOKEN) && token.is_some() => {
                    tracing::info!(account = %account.name, "the callback token expired; pulling without it");
                    token = None;
                    continue;
                }
                other => other.map_err(PullError::Api)?,
            };
            report.pages += 1;
            for item in &page.items {
                self.handle(account, item, horizon, &mut report).await?;
            }
            if let Some(next) = &page.next_cursor {
                // Until the end is reached, the horizon stays with the cursor.
                let value = match horizon.filter(|_| page.has_more) {
                    Some(h) => format!("{HORIZON_PREFIX}{h}|{next}"),
                    None => next.clone(),
                };
                let unchanged = stored.as_ref().is_some_and(|(v, _)| *v == value);
                if !unchanged {
                    let previous = stored.as_ref().map(|(_, v)| *v);
                    if !self.cursors.save(&state, &value, previous).await? {
                        tracing::info!(account = %account.name, "another pull moved the cursor; stopping");
                        report.overtaken = true;
                        return Ok(report);
                    }
                    stored = Some((value, previous.map_or(1, |v| v + 1)));
                    unmoved = 0;
                } else if page.has_more {
                    // The same cursor again with more to come: ask again a few times.
                    unmoved += 1;
                    if unmoved > 3 {
                        return Err(PullError::Stuck);
                    }
                }
            }
            if !page.has_more {
                return Ok(report);
            }
        }
    }

    async fn sync(
        &self,
        app: &WecomApp,
        secret: &secrecy::SecretString,
        account: &KfAccount,
        cursor: Option<&str>,
        token: Option<&str>,
    ) -> Result<super::message::SyncPage, Failure> {
        let fetch = || self.api.token(&app.corp_id, secret);
        self.tokens
            .call(&app.token_key(), errcodes, fetch, |access| async move {
                sync_msg(&self.api, &access, &account.open_kfid, cursor, token).await
            })
            .await
    }

    /// Handles one item once: claimed under its msgid, then published or recorded, then done.
    async fn handle(
        &self,
        account: &KfAccount,
        item: &KfItem,
        horizon: Option<u64>,
        report: &mut PullReport,
    ) -> Result<(), PullError> {
        let key = format!("kfseen:{}:{}", account.state_key(), item.msgid);
        let now = self.clock.now();
        let claim = match self.seen.claim(&key, now, ITEM_LEASE).await? {
            Claim::Published => {
                report.duplicates += 1;
                return Ok(());
            }
            Claim::InFlight { .. } => return Err(PullError::InFlight(item.msgid.clone())),
            Claim::Claimed { token, .. } => token,
        };
        let handled = self.route(account, item, horizon, report).await;
        match handled {
            Ok(()) => self.seen.complete(&key, &claim, self.clock.now()).await.map_err(PullError::Store),
            Err(err) => {
                if let Err(release) = self.seen.release(&key, &claim).await {
                    tracing::warn!(error = %release, "could not release an item's claim; it expires with its lease");
                }
                Err(err)
            }
        }
    }

    async fn route(
        &self,
        account: &KfAccount,
        item: &KfItem,
        horizon: Option<u64>,
        report: &mut PullReport,
    ) -> Result<(), PullError> {
        match item.origin {
            Origin::Customer if horizon.is_some_and(|h| item.send_time < h) => {
                report.too_old += 1;
                Ok(())
            }
            Origin::Customer => match item.to_inbound(&account.name, self.clock.unix()) {
                Some(inbound) => {
                    // The window opens first: a crash after it leaves an allowance unused, never
                    // a published message whose reply is refused.
                    let window = super::outbound::window_key(account, &inbound.conversation.id);
                    self.windows.customer_wrote(&window, &item.msgid, self.at(item)).await?;
                    self.publisher.publish(inbound_message(&inbound)).await.map_err(PullError::Store)?;
                    report.published += 1;
                    Ok(())
                }
                None => {
                    report.other += 1;
                    Ok(())
                }
            },
            Origin::Servicer => {
                tracing::info!(account = %account.name, "a servicer answered from the WeCom client: a human has the conversation");
                if let Some(customer) = &item.external_userid {
                    let window = super::outbound::window_key(account, customer);
                    let servicer = item.servicer_userid.as_deref();
                    self.windows.session(&window, HUMAN, servicer, self.at(item)).await?;
                }
                report.servicer += 1;
                Ok(())
            }
            Origin::Event if item.event_type() == Some("session_status_change") => {
                self.session_changed(account, item).await?;
                report.sessions += 1;
                Ok(())
            }
            Origin::Event if item.event_type() == Some("msg_send_fail") => {
                self.send_failed(account, item).await?;
                report.send_failed += 1;
                Ok(())
            }
            Origin::Event if item.event_type() == Some("enter_session") => {
                if self.welcome(account, item).await {
                    report.welcomed += 1;
                } else {
                    report.other += 1;
                }
                Ok(())
            }
            Origin::Event | Origin::Other(_) => {
                tracing::info!(account = %account.name, event = item.event_type().unwrap_or(item.msgtype.as_str()), "kf item recorded");
                report.other += 1;
                Ok(())
            }
        }
    }

    /// When an item happened, as far as stored state goes: its `send_time`, never later than now
    /// (a time in the future would hold a customer's window or session still).
    fn at(&self, item: &KfItem) -> u64 {
        item.send_time.min(self.clock.unix())
    }

    /// Stores a `session_status_change`: picked from the queue (1), transferred (2) or re-opened
    /// (4) by a servicer is a human's session (3); ended (3) is state 4.
    async fn session_changed(&self, account: &KfAccount, item: &KfItem) -> Result<(), PullError> {
        let Some(customer) = &item.external_userid else { return Ok(()) };
        let change = item.event_number("change_type");
        let (state, servicer) = match change {
            Some(3) => (ENDED, None),
            Some(1 | 2 | 4) => (HUMAN, item.event_field("new_servicer_userid")),
            other => {
                tracing::info!(account = %account.name, change_type = other, "a session change of an unknown type; not stored");
                return Ok(());
            }
        };
        tracing::info!(account = %account.name, change_type = change, state, "the customer's session changed");
        let window = super::outbound::window_key(account, customer);
        self.windows.session(&window, state, servicer, self.at(item)).await?;
        Ok(())
    }

    /// A `msg_send_fail`: WeChat accepted a message and could not deliver it. Its send record is
    /// marked, and the failure logged (with the reply part it was) and counted.
    async fn send_failed(&self, account: &KfAccount, item: &KfItem) -> Result<(), PullError> {
        let fail_type = item.event_number("fail_type").unwrap_or(0);
        let (Some(customer), Some(msgid)) = (&item.external_userid, item.event_field("fail_msgid")) else {
            tracing::warn!(account = %account.name, fail_type, "a msg_send_fail without its customer or msgid");
            return Ok(());
        };
        let window = super::outbound::window_key(account, customer);
        let part = self.windows.send_failed(&window, msgid, fail_type, self.at(item)).await?;
        let why = send_fail_reason(fail_type);
        let part = part.unwrap_or_else(|| "unknown (not sent by this bridge, or its record expired)".to_owned());
        tracing::warn!(account = %account.name, msgid, fail_type, part = %part, reason = why, "WeChat did not deliver a reply it had accepted");
        let fail_type = fail_type.to_string();
        let properties = [("account", account.name.as_str()), ("fail_type", fail_type.as_str()), ("reason", why)];
        self.metrics.count("KfSendFailed", &properties);
        Ok(())
    }

    /// Sends the account's welcome with the event's code, inline (the code works 20 s); false
    /// when there is no welcome, no code, the code is too old, or WeChat refused it (a code
    /// works once: nothing to retry).
    async fn welcome(&self, account: &KfAccount, item: &KfItem) -> bool {
        let (Some(text), Some(code)) = (&account.welcome, item.event_field("welcome_code")) else { return false };
        if self.clock.unix().saturating_sub(item.send_time) > WELCOME_CODE_LIFE_S {
            tracing::info!(account = %account.name, "an enter_session too old for its welcome code");
            return false;
        }
        let Some((app, secret)) = account.serving_app(&self.apps) else { return false };
        let msgid = format!("w{}", &short_hash(&item.msgid)[..24]);
        let fetch = || self.api.token(&app.corp_id, &secret);
        let sent = self
            .tokens
            .call(&app.token_key(), errcodes, fetch, |access| {
                let msgid = msgid.clone();
                async move { send_msg_on_event(&self.api, &access, code, &msgid, text).await }
            })
            .await;
        match sent {
            Ok(_) => true,
            Err(failure) => {
                tracing::warn!(account = %account.name, errcode = failure.errcode, reason = %failure.message, "the welcome was refused");
                false
            }
        }
    }
}

impl KfPuller {
    /// Queues another pull of `open_kfid` (without a callback Token: the saved cursor is where
    /// it starts), in the account's group.
    async fn follow_on(&self, open_kfid: &str) -> Result<(), PortError> {
        use crate::core::callback::{FIFO_DEDUP, FIFO_GROUP, KF_PULL, QUEUE_ATTRIBUTE};
        let account = self.accounts.iter().find(|a| a.open_kfid == open_kfid);
        let corp = account.map_or("", |a| a.corp_id.as_str());
        let nonce = crate::core::ports::claim_token();
        let body = serde_json::json!({"raw": {"OpenKfId": open_kfid, "FollowOn": true}}).to_string();
        let attributes = vec![
            (QUEUE_ATTRIBUTE, KF_PULL.to_owned()),
            (FIFO_GROUP, format!("{corp}:{open_kfid}")),
            (FIFO_DEDUP, short_hash(&format!("{open_kfid}:{nonce}"))),
        ];
        self.publisher.publish(crate::core::ports::QueueMessage { body, attributes }).await
    }

    /// Handles a batch of the pull queue: each record is a `kf_msg_or_event` (an `Inbound` whose
    /// `raw` has `OpenKfId` and `Token`). One pull per account serves all its records, with the
    /// freshest Token; an account whose pull fails has all its records reported failed (they
    /// come back in order: the queue is FIFO per account). Returns the failed message ids.
    pub async fn handle_batch(&self, records: &[crate::core::ports::Record]) -> Vec<String> {
        let mut accounts: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
        let mut failed = Vec::new();
        for record in records {
            let raw = serde_json::from_str::<serde_json::Value>(&record.body).ok().map(|v| v["raw"].clone());
            let open_kfid = raw.as_ref().and_then(|r| r["OpenKfId"].as_str()).map(str::to_owned);
            let Some(open_kfid) = open_kfid else {
                // Nothing to pull for: it can never succeed, so it is not retried.
                tracing::error!(message_id = %record.message_id, "a pull request without OpenKfId; dropped");
                continue;
            };
            let token = raw.as_ref().and_then(|r| r["Token"].as_str()).map(str::to_owned);
            match accounts.iter_mut().find(|(id, _, _)| *id == open_kfid) {
                Some((_, latest, ids)) => {
                    *latest = token.or(latest.take());
                    ids.push(record.message_id.clone());
                }
                None => accounts.push((open_kfid, token, vec![record.message_id.clone()])),
            }
        }
        for (open_kfid, token, ids) in accounts {
            match self.pull(&open_kfid, token.as_deref()).await {
                Ok(report) => tracing::info!(
                    open_kfid = %open_kfid,
                    pages = report.pages,
                    published = report.published,
                    duplicates = report.duplicates,
                    too_old = report.too_old,
                    welcomed = report.welcomed,
                    servicer = report.servicer,
                    sessions = report.sessions,
                    send_failed = report.send_failed,
                    "kf pull"
                ),
                Err(PullError::UnknownAccount(_)) => {
                    tracing::error!(open_kfid = %open_kfid, "a pull for a kf account the config does not have; dropped")
                }
                // Progress was saved: the rest comes with a pull of its own, so a long backlog
                // never looks like a failing account (and never reaches the DLQ).
                Err(PullError::TooManyPages) => match self.follow_on(&open_kfid).await {
                    Ok(()) => tracing::info!(open_kfid = %open_kfid, "a long backlog: a follow-on pull is queued"),
                    Err(err) => {
                        tracing::warn!(open_kfid = %open_kfid, error = %err, "could not queue a follow-on pull; it comes again");
                        failed.extend(ids);
                    }
                },
                Err(err) => {
                    tracing::warn!(open_kfid = %open_kfid, error = %err, "kf pull failed; it comes again");
                    failed.extend(ids);
                }
            }
        }
        failed
    }
}
