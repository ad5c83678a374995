//! The dispatcher: hands each `Inbound` to the bot and routes its replies.
//!
//! An Official Account reply first tries the message's reply slot (the passive reply); if the
//! last delivery already closed it, the reply goes by the customer-service API. Everything else
//! becomes an `Outbound` addressed from the `Inbound`. Idempotency keys come from the inbound id
//! and the reply's index, so a dispatcher that runs twice still sends each reply once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::channels::reply_route;
use crate::core::bot::{Bot, BotError};
use crate::core::envelope::{Content, ConversationKind, Inbound, Kind, OutChannel, Outbound, OUTBOUND_VERSION};
use crate::core::outbound::ReplyRoute;
use crate::core::ports::{
    attribute_value, unix_millis, PortError, Publisher, QueueMessage, Record, Redeliver, ReplySlots, SlotState, Typing,
};

/// How long past a slot's deadline a delivery may still be taking the reply.
pub const TAKE_GRACE: Duration = Duration::from_secs(1);
const TAKE_POLL: Duration = Duration::from_millis(100);

/// How often "typing…" is renewed while the bot works (it fades on its own otherwise).
pub const TYPING_KEEPALIVE: Duration = Duration::from_secs(5);

/// "Typing…" under way for one message.
struct TypingGuard {
    typing: Arc<dyn Typing>,
    inbound: Inbound,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl TypingGuard {
    /// Stops the renewals, lets a start still in flight land first (so the cancel is not
    /// overtaken), then cancels.
    async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(TYPING_SETTLE, self.task).await;
        self.typing.set(&self.inbound, false).await;
    }
}

/// The longest a cancel waits for its typing start to land.
const TYPING_SETTLE: Duration = Duration::from_secs(2);

/// Why a record could not be dispatched now.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("not an Inbound v1 document: {0}")]
    Invalid(String),
    #[error(transparent)]
    Bot(#[from] BotError),
    #[error(transparent)]
    Store(PortError),
    #[error(transparent)]
    Queue(PortError),
}

/// The dispatcher's dependencies.
pub struct Dispatcher {
    pub bot: Arc<dyn Bot>,
    pub slots: Arc<dyn ReplySlots>,
    /// The outbound queue.
    pub outbound: Arc<dyn Publisher>,
    /// "Typing…" while the bot works (iLink), if configured.
    pub typing: Option<Arc<dyn Typing>>,
    /// The inbound queue's redelivery, to hand back a record this invocation has no time for
    /// (without it, the record comes back after the queue's visibility timeout).
    pub requeue: Option<Arc<dyn Redeliver>>,
    /// The inbound DLQ, for a message given up on (invalid, or failing on the queue's last
    /// receive), with its reason; without it the queue's redrive moves it, reasonless.
    pub dead_letter: Option<Arc<dyn Publisher>>,
    /// Receives after which the queue moves a message to its DLQ on its own.
    pub max_receives: Option<u32>,
}

/// No bot call starts with less than this left in the invocation: the bot's timeout and the
/// routing of its replies.
pub const DISPATCH_BUDGET: Duration = Duration::from_secs(50);
/// How soon a record handed back for lack of time comes again.
const HAND_BACK_S: u32 = 1;

/// Where a reply to `inbound` goes, if anywhere.
fn reply_channel(route: &ReplyRoute, inbound: &Inbound) -> Option<OutChannel> {
    match inbound.conversation.kind {
        ConversationKind::System => None,
        ConversationKind::Group => Some(route.group),
        ConversationKind::Direct => Some(route.direct),
    }
}

impl Dispatcher {
    /// Dispatches one queue message; returns how many replies went out (passive or queued).
    pub async fn dispatch(&self, body: &str) -> Result<usize, DispatchError> {
        let inbound: Inbound = serde_json::from_str(body).map_err(|e| DispatchError::Invalid(e.to_string()))?;
        let route = reply_route(inbound.channel);
        let Some(channel) = reply_channel(&route, &inbound) else { return Ok(0) };
        let typing = if route.typing { self.start_typing(&inbound) } else { None };
        let routed = match self.bot.answer(&inbound).await {
            Ok(replies) => self.route(&inbound, &route, channel, &replies).await.map(|()| replies.len()),
            Err(err) => Err(err.into()),
        };
        if let Some(typing) = typing {
            typing.finish().await;
        }
        routed
    }

    /// Sends the bot's replies on their way: the passive reply, else the outbound queue.
    async fn route(
        &self,
        inbound: &Inbound,
        route: &ReplyRoute,
        channel: OutChannel,
        replies: &[Content],
    ) -> Result<(), DispatchError> {
        for (index, content) in replies.iter().enumerate() {
            let key = format!("{}#{index}", inbound.id);
            if let (Some(fits_passive), 0) = (route.passive, index) {
                let to_event = inbound.kind == Kind::Event;
                let done = if fits_passive(content, to_event) {
                    self.try_passive(inbound, content, &key).await?
                } else {
                    // Not passive-able; but a rerun must not send what an earlier run put in the slot.
                    self.filled_by(&inbound.id, &key).await?
                };
                if done {
                    continue;
                }
            }
            let out = Outbound {
                v: OUTBOUND_VERSION,
                channel,
                account: inbound.account.clone(),
                to: inbound.conversation.id.clone(),
                content: content.clone(),
                idempotency_key: key,
                in_reply_to: Some(inbound.id.clone()),
            };
            let message =
                QueueMessage { body: out.to_json(), attributes: vec![("channel", channel.as_str().to_owned())] };
            self.outbound.publish(message).await.map_err(DispatchError::Queue)?;
        }
        Ok(())
    }

    /// Starts "typing…" for a message when typing is on: it is renewed every few seconds until
    /// the returned guard is finished.
    fn start_typing(&self, inbound: &Inbound) -> Option<TypingGuard> {
        let typing = self.typing.clone()?;
        if inbound.kind == Kind::Event {
            return None;
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let (typing, inbound) = (typing.clone(), inbound.clone());
            async move {
                loop {
                    typing.set(&inbound, true).await;
                    tokio::select! {
                        _ = tokio::time::sleep(TYPING_KEEPALIVE) => {}
                        _ = &mut stopped => return,
                    }
                }
            }
        });
        Some(TypingGuard { typing, inbound: inbound.clone(), stop, task })
    }

    /// Puts the first reply in the message's slot and waits until a delivery takes it; false
    /// when it must go by customer service: the slot was closed, holds another reply, or nobody
    /// took it by the slot's deadline (WeChat delivered fewer times, or a delivery failed).
    async fn try_passive(&self, inbound: &Inbound, content: &Content, key: &str) -> Result<bool, DispatchError> {
        let json = serde_json::to_string(content).map_err(|e| DispatchError::Invalid(e.to_string()))?;
        self.slots.fill(&inbound.id, &json, key, SystemTime::now()).await.map_err(DispatchError::Store)?;
        loop {
            let Some(slot) = self.slots.read(&inbound.id).await.map_err(DispatchError::Store)? else {
                return Ok(false);
            };
            // Another reply (a parked one, say) is in the slot: this one goes by customer service.
            if slot.filled_by.as_deref() != Some(key) {
                return Ok(false);
            }
            match slot.state {
                SlotState::Filled if slot.taken => return Ok(true),
                // Revoked by an earlier run: customer service (the idempotency key sends it once).
                SlotState::Closed => return Ok(false),
                _ => {}
            }
            if unix_millis(SystemTime::now()) > slot.deadline_ms + TAKE_GRACE.as_millis() as u64 {
                // Nobody took it: take it back unless a delivery takes it this instant.
                return Ok(!self.slots.revoke(&inbound.id).await.map_err(DispatchError::Store)?);
            }
            tokio::time::sleep(TAKE_POLL).await;
        }
    }

    /// Whether the slot holds the reply with idempotency key `key` (an earlier run's).
    async fn filled_by(&self, slot: &str, key: &str) -> Result<bool, DispatchError> {
        let slot = self.slots.read(slot).await.map_err(DispatchError::Store)?;
        Ok(matches!(slot, Some(s) if s.state == SlotState::Filled && s.filled_by.as_deref() == Some(key)))
    }

    /// Puts a record on the inbound DLQ with its reason; the id to report as failed if that is
    /// not possible (the queue's redrive then moves it).
    async fn give_up(&self, record: &Record, kind: &str, reason: &str) -> Option<String> {
        let Some(dlq) = &self.dead_letter else { return Some(record.message_id.clone()) };
        let message = QueueMessage {
            body: record.body.clone(),
            attributes: vec![("kind", kind.to_owned()), ("reason", attribute_value(reason))],
        };
        match dlq.publish(message).await {
            Ok(()) => None,
            Err(err) => {
                tracing::error!(error = %err, "could not dead-letter; the message stays on the queue");
                Some(record.message_id.clone())
            }
        }
    }

    /// Handles an SQS batch; returns the ids to report as failed: bot and dependency errors are
    /// retried; an invalid message fails every time, so the queue's redrive puts it in the DLQ.
    ///
    /// Records are dispatched concurrently: one slow bot answer must not hold the others past
    /// their window (or the function's timeout).
    pub async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        self.handle_batch_until(records, None).await
    }

    /// [`Self::handle_batch`] inside an invocation that ends at `deadline`: a record whose bot
    /// call could not finish in time is not started but handed back to come again at once.
    pub async fn handle_batch_until(&self, records: &[Record], deadline: Option<SystemTime>) -> Vec<String> {
        let left = deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default());
        if left.is_some_and(|left| left < DISPATCH_BUDGET) {
            for record in records {
                tracing::info!(message_id = %record.message_id, "not enough time left for the bot; handed back");
                if let Some(requeue) = &self.requeue {
                    if let Err(err) = requeue.retry_later(&record.receipt_handle, HAND_BACK_S).await {
                        tracing::warn!(error = %err, "could not hand the record back; it returns after the visibility timeout");
                    }
                }
            }
            return records.iter().map(|r| r.message_id.clone()).collect();
        }
        let runs = records.iter().map(|record| async move {
            let last = self.max_receives.is_some_and(|max| record.receive_count >= max);
            match self.dispatch(&record.body).await {
                Ok(replies) => {
                    tracing::info!(message_id = %record.message_id, replies, "dispatched");
                    None
                }
                Err(DispatchError::Invalid(reason)) => {
                    tracing::error!(message_id = %record.message_id, reason = %reason, "not an Inbound; dead-lettered");
                    self.give_up(record, "invalid", &format!("not an Inbound v1 document: {reason}")).await
                }
                Err(err) if last => {
                    tracing::error!(message_id = %record.message_id, error = %err, receive_count = record.receive_count, "dispatch failed on the last receive; dead-lettered");
                    let reason = format!("gave up after {} deliveries: {err}", record.receive_count);
                    self.give_up(record, "gave_up", &reason).await
                }
                Err(err) => {
                    tracing::warn!(message_id = %record.message_id, error = %err, "dispatch failed; SQS retries it");
                    Some(record.message_id.clone())
                }
            }
        });
        futures_util::future::join_all(runs).await.into_iter().flatten().collect()
    }
}
