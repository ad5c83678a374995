//! The Official Account callback with the stretched 5-second window.
//!
//! WeChat waits 5 s for a passive reply, then drops the request and delivers the message again
//! (up to 3–4 times). Every delivery counts itself in the message's reply slot and puts the
//! `Inbound` on the inbound queue, whose deduplication by `Inbound` id (five minutes) keeps one
//! copy; every delivery then waits on the slot. A delivery that is not the
//! last answers the reply as soon as it is ready, else it is held until past WeChat's timeout
//! (`hold_ms`, its answer goes nowhere). The last answers the reply if it is ready by
//! `answer_by_ms`, else closes the slot (a conditional write) and answers `success`; the
//! dispatcher fills the slot with a conditional write too, so exactly one of the passive reply
//! and the customer-service send happens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::channels::oa::callback::{Mode, OaAuth};
use crate::channels::oa::config::{OaApp, OaWindow};
use crate::channels::oa::message::OaCallbackMessage;
use crate::channels::oa::reply::{PassiveReply, SUCCESS};
use crate::core::callback::{enqueue, CallbackError, CallbackRequest, CallbackResponse, MAX_BODY_BYTES};
use crate::core::envelope::Content;
use crate::core::ports::{Clock, ParkedReplies, Publisher, ReplySlots, Slot, SlotState};
use crate::protocol::crypto::random_prefix;
use crate::protocol::query::Query;

/// How often a waiting delivery looks at its slot.
pub const SLOT_POLL: Duration = Duration::from_millis(50);
/// The longest API Gateway holds a request before the function answers (HTTP API: 30 s).
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long WeChat waits for an answer before it delivers again.
pub const WECHAT_WAIT: Duration = Duration::from_secs(5);

/// The passive form of a reply, when the content has one. A news reply to a user's message
/// carries one article; to an event, up to 8.
pub fn passive(content: &Content, to_event: bool) -> Option<PassiveReply> {
    let most_articles = if to_event { 8 } else { 1 };
    match content {
        Content::Text { text } => Some(PassiveReply::Text { content: text.clone() }),
        // WeChat shows no markdown: its text, without the marks.
        Content::Markdown { text } => Some(PassiveReply::Text { content: crate::core::outbound::plain_or_raw(text) }),
        Content::Image { media_id: Some(media_id), .. } => Some(PassiveReply::Image { media_id: media_id.clone() }),
        Content::Voice { media_id: Some(media_id), .. } => Some(PassiveReply::Voice { media_id: media_id.clone() }),
        Content::Video { media_id: Some(media_id), title, description, .. } => Some(PassiveReply::Video {
            media_id: media_id.clone(),
            title: title.clone(),
            description: description.clone(),
        }),
        Content::News { articles } if (1..=most_articles).contains(&articles.len()) => {
            Some(PassiveReply::News { articles: articles.clone() })
        }
        _ => None,
    }
}

struct Account {
    auth: OaAuth,
}

/// The Official Account callback service.
pub struct OaCallback {
    accounts: HashMap<String, Account>,
    publisher: Arc<dyn Publisher>,
    slots: Arc<dyn ReplySlots>,
    parked: Arc<dyn ParkedReplies>,
    clock: Arc<dyn Clock>,
    window: OaWindow,
    replay_window_secs: u64,
    wechat_wait: Duration,
}

/// What a delivery answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Echo(String),
    Reply(String),
    Success,
}

impl OaCallback {
    /// Serves `accounts` with `window`, refusing callbacks older than `replay_window_secs`.
    pub fn new(
        accounts: &[OaApp],
        window: OaWindow,
        replay_window_secs: u64,
        publisher: Arc<dyn Publisher>,
        slots: Arc<dyn ReplySlots>,
        parked: Arc<dyn ParkedReplies>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let accounts = accounts
            .iter()
            .map(|oa| (oa.app.clone(), Account { auth: OaAuth::new(&oa.token, oa.msg_crypt()) }))
            .collect();
        Self { accounts, publisher, slots, parked, clock, window, replay_window_secs, wechat_wait: WECHAT_WAIT }
    }

    /// WeChat's wait between deliveries (5 s; simulations scale it).
    pub fn with_wechat_wait(self, wechat_wait: Duration) -> Self {
        Self { wechat_wait, ..self }
    }

    /// Handles one request; always answers.
    pub async fn handle(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        self.handle_received(req, None).await
    }

    /// Handles one request that API Gateway received at `received` (its `timeEpoch`): WeChat's
    /// 5 s started then, not when this function got it after a cold start.
    pub async fn handle_received(&self, req: CallbackRequest<'_>, received: Option<SystemTime>) -> CallbackResponse {
        let text = |body: String| CallbackResponse::ok("text/plain; charset=utf-8", body);
        match self.accept(req, received).await {
            Ok(Answer::Echo(echo)) => {
                tracing::info!(app = req.app, outcome = "verified", "oa url verification");
                text(echo)
            }
            Ok(Answer::Reply(body)) => {
                tracing::info!(app = req.app, outcome = "passive_reply", "oa callback");
                CallbackResponse::ok("application/xml; charset=utf-8", body)
            }
            Ok(Answer::Success) => {
                tracing::info!(app = req.app, outcome = "success", "oa callback");
                text(SUCCESS.to_owned())
            }
            Err(err) => err.refuse("oa", req.app),
        }
    }

    async fn accept(&self, req: CallbackRequest<'_>, received: Option<SystemTime>) -> Result<Answer, CallbackError> {
        let account = self.accounts.get(req.app).ok_or(CallbackError::UnknownApp)?;
        let query = Query::parse(req.raw_query)?;
        match req.method {
            "GET" => Ok(Answer::Echo(account.auth.verify_url(&query)?.to_owned())),
            "POST" => self.receive(req.app, account, &query, req.body, received).await,
            _ => Err(CallbackError::MethodNotAllowed),
        }
    }

    async fn receive(
        &self,
        app: &str,
        account: &Account,
        query: &Query<'_>,
        body: &[u8],
        received: Option<SystemTime>,
    ) -> Result<Answer, CallbackError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(CallbackError::BodyTooLarge);
        }
        let body = std::str::from_utf8(body).map_err(|_| CallbackError::BodyEncoding)?;
        let (mode, plaintext) = account.auth.open(query, body)?;
        let timestamp = query.require("timestamp")?;
        let sent: u64 = timestamp.parse().map_err(|_| CallbackError::BadTimestamp)?;
        let now = self.clock.unix();
        if self.replay_window_secs > 0 && now.abs_diff(sent) > self.replay_window_secs {
            return Err(CallbackError::Stale);
        }
        let message = OaCallbackMessage::parse(&plaintext)?;
        let inbound = message.to_inbound(app, now);
        // WeChat's wait began when API Gateway received the request: the time spent since (a
        // cold start, the gateway) is already gone from this delivery's window.
        // A time in the future, or older than API Gateway ever holds a request, is not believed.
        let started = received
            .filter(|r| self.clock.now().duration_since(*r).is_ok_and(|late| late <= GATEWAY_TIMEOUT))
            .unwrap_or_else(|| self.clock.now());
        let late = self.clock.now().duration_since(started).unwrap_or_default();
        let arrived = tokio::time::Instant::now().checked_sub(late).unwrap_or_else(tokio::time::Instant::now);
        // By then the last delivery has answered: a reply filled later goes by customer service.
        let deadline = started
            + self.wechat_wait * self.window.deliveries.saturating_sub(1)
            + Duration::from_millis(self.window.answer_by_ms);
        let slot = self.slots.arrive(&inbound.id, self.clock.now(), deadline).await.map_err(CallbackError::Store)?;
        let sealed_reply = |content: &str| -> Option<String> {
            let content: Content = serde_json::from_str(content).ok()?;
            let xml = passive(&content, message.header.msg_type == "event")?.render(
                &message.header.from,
                &message.header.to,
                self.clock.unix(),
            );
            Some(account.auth.seal(mode, &xml, random_prefix(), timestamp, query.get("nonce").unwrap_or_default()))
        };
        // Every delivery makes sure the message is on the queue (once, however many try: the
        // queue drops the copies), so none acknowledges a message the queue does not have.
        enqueue(self.publisher.as_ref(), &inbound).await?;
        // Parked replies answer the user's next message (not an event the user never sees
        // answered), on whichever delivery first finds its slot open: a delivery that failed
        // before placing one leaves it to WeChat's retry.
        let slot = if slot.state == SlotState::Open && message.header.msg_id.is_some() {
            self.answer_parked(app, &message.header.from, &inbound.id, slot).await?
        } else {
            slot
        };
        let last = slot.deliveries >= self.window.deliveries;
        let wait = Duration::from_millis(if last { self.window.answer_by_ms } else { self.window.hold_ms });
        let mut current = slot;
        loop {
            match current.state {
                SlotState::Filled => {
                    let sealed = current.reply.as_deref().and_then(sealed_reply);
                    return Ok(self.take_slot(app, &message.header.from, &inbound.id, &current, sealed).await);
                }
                SlotState::Closed => return Ok(Answer::Success),
                SlotState::Open => {}
            }
            if arrived.elapsed() >= wait {
                break;
            }
            tokio::time::sleep(SLOT_POLL.min(wait.saturating_sub(arrived.elapsed()))).await;
            current = match self.slots.read(&inbound.id).await.map_err(CallbackError::Store)? {
                Some(slot) => slot,
                None => return Ok(Answer::Success),
            };
        }
        if !last {
            // WeChat has given up on this request; the next delivery carries on waiting.
            return Ok(Answer::Success);
        }
        if self.slots.close(&inbound.id).await.map_err(CallbackError::Store)? {
            // The dispatcher will find the slot closed and send by customer service.
            return Ok(Answer::Success);
        }
        // The reply won the race to the slot.
        match self.slots.read(&inbound.id).await.map_err(CallbackError::Store)? {
            Some(slot) => {
                let sealed = slot.reply.as_deref().and_then(sealed_reply);
                Ok(self.take_slot(app, &message.header.from, &inbound.id, &slot, sealed).await)
            }
            None => Ok(Answer::Success),
        }
    }

    /// Takes the slot's reply ([`Self::take_reply`]). A parked reply leaves the parked list only
    /// once it is taken, the answer about to go: a failure or a crash before that leaves it parked
    /// for the user's next message (at worst shown twice), never lost.
    async fn take_slot(&self, app: &str, user: &str, id: &str, slot: &Slot, sealed: Option<String>) -> Answer {
        let answer = self.take_reply(id, sealed).await;
        let parked = slot.filled_by.as_deref() == Some(format!("parked:{id}").as_str());
        if let (Answer::Reply(_), true, Some(reply)) = (&answer, parked, &slot.reply) {
            if let Err(err) = self.parked.remove_oldest(app, user, reply).await {
                tracing::warn!(error = %err, "a parked reply was answered but stays parked: it may show again");
            }
        }
        answer
    }

    /// Answers with `reply` only once the slot records it as taken, so the dispatcher cannot
    /// also send it by customer service; otherwise `success`.
    async fn take_reply(&self, id: &str, reply: Option<String>) -> Answer {
        let Some(reply) = reply else { return Answer::Success };
        match self.slots.take(id).await {
            Ok(true) => Answer::Reply(reply),
            Ok(false) => Answer::Success,
            Err(err) => {
                tracing::warn!(error = %err, "could not mark the reply taken; it goes by customer service");
                Answer::Success
            }
        }
    }

    /// A reply the customer-service API refused earlier (48001) answers this message: the user
    /// gets it now, as the passive reply; the bot's answer to this message then goes by
    /// customer service (and is parked again if refused again). The reply stays parked until the
    /// answer takes it ([`Self::take_slot`]).
    async fn answer_parked(&self, app: &str, user: &str, id: &str, slot: Slot) -> Result<Slot, CallbackError> {
        let Some(first) = self.parked.oldest(app, user).await.map_err(CallbackError::Store)? else {
            return Ok(slot);
        };
        // A fill that finds the slot filled (a retried call, the bot first) changes nothing.
        self.slots.fill(id, &first, &format!("parked:{id}"), self.clock.now()).await.map_err(CallbackError::Store)?;
        Ok(self.slots.read(id).await.map_err(CallbackError::Store)?.unwrap_or(slot))
    }

    /// How a request came in, for tests and tools.
    pub fn mode_of(&self, app: &str, raw_query: &str, body: &str) -> Option<Mode> {
        let query = Query::parse(raw_query).ok()?;
        self.accounts.get(app)?.auth.open(&query, body).ok().map(|(mode, _)| mode)
    }
}
#[async_trait::async_trait]
impl crate::core::callback::CallbackService for OaCallback {
    async fn serve(&self, req: CallbackRequest<'_>) -> CallbackResponse {
        self.handle(req).await
    }

    async fn serve_received(&self, req: CallbackRequest<'_>, received: Option<SystemTime>) -> CallbackResponse {
        self.handle_received(req, received).await
    }
}
