//! The dispatcher: hands each `Inbound` to the bot and routes its replies.
//!
//! An Official Account reply first tries the message's reply slot (the passive reply); if the
//! last delivery already closed it, the reply goes by the customer-service API. Everything else
//! becomes an `Outbound` addressed from the `Inbound`. Idempotency keys come from the inbound id
//! and the reply's index, so a dispatcher that runs twice still sends each reply once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::channels::aibot::stream::{self as aibot_stream, fit, stream_key, MAX_CONTENT_BYTES};
use crate::channels::reply_route;
use crate::core::bot::{AnswerSink, Bot, BotError};
use crate::core::callback::{dedup_id, FIFO_DEDUP, FIFO_GROUP};
use crate::core::envelope::{
    Content, ConversationKind, Inbound, Kind, MediaType, OutChannel, OutMedia, Outbound, OUTBOUND_VERSION,
};
use crate::core::media::is_content_key;
use crate::core::outbound::{media_id_scope, ReplyRoute};
use crate::core::ports::{
    attribute_value, cut_utf8, in_groups, unix_millis, Claim, Dedupe, PortError, Publisher, QueueMessage, Record,
    Redeliver, ReplySlots, SlotState, Streams, Typing,
};
use crate::services::files::OutFiles;

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
    /// An earlier delivery's bot call may still be running (its lease ends at `until_ms`).
    #[error("the bot call of an earlier delivery may still be running")]
    Busy { until_ms: u64 },
}

/// The record of each message's bot call: a lease while the call may be running, so that a
/// redelivered message does not start an agent again; done once its replies are routed.
pub struct BotCalls {
    /// Claim markers (`call:<inbound id>`), the same claim / complete / release rules as the
    /// callbacks' dedupe.
    pub leases: Arc<dyn Dedupe>,
    /// The bot's timeout: the longest a call may run.
    pub timeout: Duration,
}

/// How long past the bot's timeout a call's lease lasts: the routing of its replies.
const CALL_MARGIN: Duration = Duration::from_secs(30);
/// What the stream of an AI-bot message shows when the bot failed on every delivery.
pub const GAVE_UP_NOTE: &str = "\n\n（抱歉，这次没能完成回答，请稍后再试。）";
/// How often the growing answer is written to the stream, at most.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The AI bots' answer streams (needed for the `wecom_aibot` channel).
    pub streams: Option<Arc<dyn Streams>>,
    /// Leases on bot calls, so a slow agent is not started twice; none for a bot without side
    /// effects (echo).
    pub calls: Option<BotCalls>,
    /// The media store and the media id cache: a file reply whose id is cached can be an
    /// Official Account's passive reply, and an AI bot's answer images are stored for the
    /// stream's last refresh. None: file replies go by the outbound queue only.
    pub files: Option<Arc<OutFiles>>,
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
    /// No bot call starts with less than this left in the invocation.
    pub fn budget(&self) -> Duration {
        match &self.calls {
            Some(calls) => calls.timeout + Duration::from_secs(5),
            None => DISPATCH_BUDGET,
        }
    }

    /// Dispatches one queue message; returns how many replies went out (passive or queued).
    pub async fn dispatch(&self, body: &str) -> Result<usize, DispatchError> {
        let inbound: Inbound = serde_json::from_str(body)
            .map_err(|e| DispatchError::Invalid(crate::core::config::redact_serde_message(&e.to_string())))?;
        let route = reply_route(inbound.channel);
        let Some(channel) = reply_channel(&route, &inbound) else { return Ok(0) };
        let call = match self.start_call(&inbound).await? {
            Some(Claim::Published) => {
                tracing::info!(id = %inbound.id, "the bot already answered this message; acknowledged");
                return Ok(0);
            }
            Some(Claim::InFlight { until_ms }) => return Err(DispatchError::Busy { until_ms }),
            Some(Claim::Claimed { token, taken_over }) => {
                if taken_over {
                    tracing::warn!(id = %inbound.id, "an earlier bot call's lease ran out unfinished; calling the bot again");
                }
                Some(token)
            }
            None => None,
        };
        let later = self.bot.replies_later(&inbound);
        let typing = if route.typing && !later { self.start_typing(&inbound) } else { None };
        let routed = match (&self.streams, route.stream) {
            // A queue bot: handed over; its replies come as Outbound messages (what comes back
            // here is the bridge's own: a spending-limit notice).
            _ if later => match self.bot.answer(&inbound).await {
                Ok(replies) if replies.is_empty() => Ok(0),
                Ok(replies) => self.route(&inbound, &route, channel, &replies).await.map(|()| replies.len()),
                Err(err) => Err(err.into()),
            },
            (Some(streams), true) => self.answer_in_stream(streams, &inbound, channel).await,
            _ => match self.bot.answer(&inbound).await {
                Ok(replies) => self.route(&inbound, &route, channel, &replies).await.map(|()| replies.len()),
                Err(err) => Err(err.into()),
            },
        };
        if let Some(typing) = typing {
            typing.finish().await;
        }
        if let (Some(calls), Some(token)) = (&self.calls, call) {
            let key = call_key(&inbound);
            let settled = match &routed {
                Ok(_) => calls.leases.complete(&key, &token, SystemTime::now()).await,
                // Free it so the retry calls the bot again at once.
                Err(_) => calls.leases.release(&key, &token).await,
            };
            if let Err(err) = settled {
                tracing::warn!(id = %inbound.id, error = %err, "could not settle the bot call's lease; it runs out on its own");
            }
        }
        routed
    }

    /// Claims the message's bot call, when calls are leased.
    async fn start_call(&self, inbound: &Inbound) -> Result<Option<Claim>, DispatchError> {
        let Some(calls) = &self.calls else { return Ok(None) };
        let lease = calls.timeout + CALL_MARGIN;
        calls.leases.claim(&call_key(inbound), SystemTime::now(), lease).await.map(Some).map_err(DispatchError::Store)
    }

    /// The AI bot: the answer grows in the message's stream, which the dispatcher finishes with
    /// the first text; what the stream does not show (the text past its 20 480 bytes, further
    /// replies, the whole answer when the stream was handed over first) is recorded on the
    /// stream with the finish and goes on the outbound queue, where the sender takes the
    /// message's `response_url`. A redelivered message whose answer is recorded queues the
    /// recorded rest again (the same idempotency keys: sent once) and calls no bot.
    async fn answer_in_stream(
        &self,
        streams: &Arc<dyn Streams>,
        inbound: &Inbound,
        channel: OutChannel,
    ) -> Result<usize, DispatchError> {
        let store = DispatchError::Store;
        let (key, _) = stream_key(&inbound.account, &inbound.id);
        let (recorded, answered) = match streams.read(&key).await.map_err(store)?.and_then(|s| s.answer) {
            Some(rest) => {
                tracing::info!(id = %inbound.id, "the bot's answer was recorded by an earlier delivery; queueing its rest");
                (rest, None)
            }
            None => {
                let sink = StreamSink::new(streams.clone(), key.clone());
                let replies = self.bot.answer_streaming(inbound, &sink).await?;
                // The stream shows the first text and the images; anything else goes to the
                // sender, which sends it or dead-letters it with the reason.
                let mut texts = Vec::new();
                // What the stream does not show, and every non-text reply (for a stream handed
                // over first), each as it is recorded: files by key, never inline.
                let (mut others, mut files) = (Vec::new(), Vec::new());
                let mut images = StreamImages::default();
                for content in &replies {
                    match content {
                        Content::Text { text } | Content::Markdown { text } => texts.push(text.as_str()),
                        other => match self.stream_image(other, &mut images).await {
                            Some(key) => {
                                files.push(other.with_media(OutMedia { key: Some(key), ..OutMedia::default() }))
                            }
                            None => {
                                let recorded = self.by_key(other).await;
                                others.push(recorded.clone());
                                files.push(recorded);
                            }
                        },
                    }
                }
                let shown = cut_utf8(texts.first().copied().unwrap_or(""), MAX_CONTENT_BYTES);
                let mut rest: Vec<&str> = Vec::new();
                if let Some(first) = texts.first() {
                    rest.push(&first[shown.len()..]);
                    rest.extend(&texts[1..]);
                }
                let mut rest = one_message(&rest);
                rest.extend(others.iter().cloned());
                let rest = to_json(&rest)?;
                // A stream finished first (handed over) shows none of it: every reply goes on.
                let mut whole = one_message(&texts);
                whole.extend(files);
                let whole = to_json(&whole)?;
                let images = images.keys;
                // The answer is recorded before the lease is settled: a failing store is tried a
                // few times (an error here means the agent is asked again on the retry).
                let mut tries: u64 = 0;
                let recorded = loop {
                    tries += 1;
                    match self.record(streams, &key, shown, &sink, &rest, &whole, &images).await {
                        Ok(recorded) => break recorded,
                        Err(err) if tries < 3 => {
                            tracing::warn!(id = %inbound.id, error = %err, "could not record the bot's answer; trying again");
                            tokio::time::sleep(Duration::from_millis(300 * tries)).await;
                        }
                        Err(err) => return Err(err),
                    }
                };
                (recorded, Some(replies.len()))
            }
        };
        let rest: Vec<Content> = serde_json::from_str(&recorded).map_err(|e| {
            let reason = crate::core::config::redact_serde_message(&e.to_string());
            DispatchError::Store(PortError::new("stream", format!("the recorded answer is unreadable: {reason}")))
        })?;
        for (index, content) in rest.iter().enumerate() {
            self.queue(inbound, channel, content, &format!("{}#rest{index}", inbound.id)).await?;
        }
        Ok(answered.unwrap_or(rest.len()))
    }

    /// Records the answer on its stream: finishes the open stream with `shown` and records `rest`;
    /// on a stream finished first (handed over) records `whole`; returns what was recorded (an
    /// earlier run's record, if it came first).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        streams: &Arc<dyn Streams>,
        key: &str,
        shown: &str,
        sink: &StreamSink,
        rest: &str,
        whole: &str,
        images: &[String],
    ) -> Result<String, DispatchError> {
        let store = DispatchError::Store;
        for _ in 0..3 {
            let version = sink.next_version().await;
            if streams.finish(key, shown, version, rest, images).await.map_err(store)? {
                return Ok(rest.to_owned());
            }
            match streams.read(key).await.map_err(store)? {
                Some(stream) if stream.answer.is_some() => return Ok(stream.answer.unwrap_or_default()),
                // A newer snapshot (a run whose lease ran out, still writing): finish above it.
                Some(stream) if !stream.finished => sink.raise_version(stream.version).await,
                Some(_) => {
                    if streams.record_answer(key, whole).await.map_err(store)? {
                        return Ok(whole.to_owned());
                    }
                }
                // The stream is gone (older than its two hours): the sender says so.
                None => return Ok(whole.to_owned()),
            }
        }
        Err(DispatchError::Store(PortError::new("stream", "the stream kept changing while the answer was recorded")))
    }

    /// A reply as it is recorded and queued: a file given inline (over a few KB) is stored and
    /// named by its key, since bytes never travel on a queue and the record is one DynamoDB
    /// item (400 KB at most). One that cannot be stored keeps no bytes (the sender refuses it).
    async fn by_key(&self, content: &Content) -> Content {
        const INLINE_KEPT: usize = 4096;
        let data = match (content, content.media()) {
            (Content::Image { base64: Some(data), media: None, .. }, _) => data.as_str(),
            (_, Some((_, OutMedia { base64: Some(data), .. }))) => data.as_str(),
            _ => return content.clone(),
        };
        if data.len() <= INLINE_KEPT {
            return content.clone();
        }
        let (media_type, _) = content.media().unwrap_or((MediaType::Image, &OutMedia::default()));
        let inline = OutMedia { base64: Some(data.to_owned()), ..OutMedia::default() };
        let key = match &self.files {
            Some(files) => match files.load(&inline, media_type, u64::MAX).await {
                Ok(file) => files.keep(&file).await.map_err(|err| err.to_string()),
                Err(failure) => Err(failure.message),
            },
            None => Err("no media store".to_owned()),
        };
        let key = key
            .map_err(
                |why| tracing::warn!(reason = %why, "an inline file of the answer cannot be stored; it is not sent"),
            )
            .ok();
        let file_name = content.media().and_then(|(_, m)| m.file_name.clone());
        content.with_media(OutMedia { key, file_name, ..OutMedia::default() })
    }

    /// Keeps an AI bot's answer image for its finishing stream: loaded (a key, an https URL or
    /// base64), a JPG or PNG, stored in the media store, within the stream's count and bytes;
    /// its key, or `None` when it cannot go there (it goes to the sender, which dead-letters it
    /// with the reason).
    async fn stream_image(&self, content: &Content, images: &mut StreamImages) -> Option<String> {
        let files = self.files.as_ref()?;
        let source = match content {
            Content::Image { media: Some(media), .. } => media.clone(),
            Content::Image { base64: Some(data), media: None, .. } => {
                OutMedia { base64: Some(data.clone()), ..OutMedia::default() }
            }
            _ => return None,
        };
        let refuse = |why: String| {
            tracing::warn!(reason = %why, "an answer image cannot go in the stream");
            None
        };
        if images.keys.len() >= aibot_stream::MAX_IMAGES {
            return refuse(format!("a stream shows at most {} images", aibot_stream::MAX_IMAGES));
        }
        let left = aibot_stream::MAX_IMAGES_TOTAL_BYTES.saturating_sub(images.bytes).min(aibot_stream::MAX_IMAGE_BYTES);
        let file = match files.load(&source, MediaType::Image, left).await {
            Ok(file) => file,
            Err(failure) => return refuse(failure.message),
        };
        if !matches!(file.mime.as_str(), "image/jpeg" | "image/png") {
            return refuse(format!("a stream shows JPG or PNG images, this is {}", file.mime));
        }
        let key = crate::core::media::content_key(&file.sha256);
        if source.key.as_deref() != Some(key.as_str()) {
            if let Err(err) = files.keep(&file).await {
                return refuse(format!("the media store: {err}"));
            }
        }
        images.bytes += file.bytes.len() as u64;
        images.keys.push(key.clone());
        Some(key)
    }

    /// Finishes the stream of an AI-bot message given up on, so the chat does not wait for an
    /// answer that will not come (best effort: the DLQ has the message either way).
    async fn end_stream(&self, body: &str) {
        let (Some(streams), Ok(inbound)) = (&self.streams, serde_json::from_str::<Inbound>(body)) else { return };
        if !reply_route(inbound.channel).stream {
            return;
        }
        let (key, _) = stream_key(&inbound.account, &inbound.id);
        let shown = match streams.read(&key).await {
            Ok(Some(stream)) if !stream.finished => stream.content,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the stream of a message given up on");
                return;
            }
        };
        let content = format!("{}{GAVE_UP_NOTE}", cut_utf8(&shown, MAX_CONTENT_BYTES - GAVE_UP_NOTE.len()));
        // Handed over: an answer that still comes (a redrive) goes by the response_url.
        if let Err(err) = streams.hand_over(&key, &content).await {
            tracing::warn!(error = %err, "could not finish the stream of a message given up on");
        }
    }

    /// Puts one reply on the outbound queue.
    async fn queue(
        &self,
        inbound: &Inbound,
        channel: OutChannel,
        content: &Content,
        key: &str,
    ) -> Result<(), DispatchError> {
        let out = Outbound {
            v: OUTBOUND_VERSION,
            channel,
            account: inbound.account.clone(),
            to: inbound.conversation.id.clone(),
            content: content.clone(),
            idempotency_key: key.to_owned(),
            in_reply_to: Some(inbound.id.clone()),
        };
        let message = QueueMessage { body: out.to_json(), attributes: vec![("channel", channel.as_str().to_owned())] };
        self.outbound.publish(message).await.map_err(DispatchError::Queue)
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
                // A file goes passively only by a media id already cached: an upload would not
                // fit in the reply window.
                let cached = self.cached_media_id(inbound, channel, content).await;
                let content = cached.as_ref().unwrap_or(content);
                let done = if fits_passive(content, to_event) {
                    self.try_passive(inbound, content, &key).await?
                } else if self.filled_by(&inbound.id, &key).await? {
                    // An earlier run put it in the slot (as it was passive-able then): sent if a
                    // delivery takes it, else taken back for customer service.
                    self.await_take(&inbound.id, &key).await?
                } else {
                    // Not passive-able: the held delivery may answer WeChat now (closing fails
                    // harmlessly when the slot is no longer open).
                    self.slots.close(&inbound.id).await.map_err(DispatchError::Store)?;
                    false
                };
                if done {
                    continue;
                }
            }
            self.queue(inbound, channel, content, &key).await?;
        }
        Ok(())
    }

    /// `content` with its file replaced by the media id `channel` has cached for it, if the
    /// file is in the media store (`media.key`) and its id is cached for `inbound`'s account.
    async fn cached_media_id(&self, inbound: &Inbound, channel: OutChannel, content: &Content) -> Option<Content> {
        let (media_type, media) = content.media()?;
        let sha256 = media.key.as_deref().filter(|k| is_content_key(k))?.strip_prefix("media/")?;
        let files = self.files.as_ref()?;
        // The channels with passive replies keep their media ids per account (the default
        // `Delivery::media_scope`) and show no names (a file message never goes passively).
        let scope = media_id_scope(channel, &inbound.account, media_type, sha256, None);
        match files.ids.get(&scope, SystemTime::now()).await {
            Ok(id) => id.map(|id| content.with_media_id(&id)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the media id cache; the file goes by the outbound queue");
                None
            }
        }
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
        self.await_take(&inbound.id, key).await
    }

    /// Waits until a delivery takes the reply `key` put in slot `slot`; false when it must go by
    /// customer service: the slot was closed, holds another reply, or nobody took it by the
    /// slot's deadline (then it is taken back, unless a delivery takes it that instant).
    async fn await_take(&self, slot: &str, key: &str) -> Result<bool, DispatchError> {
        loop {
            let Some(slot_now) = self.slots.read(slot).await.map_err(DispatchError::Store)? else {
                return Ok(false);
            };
            // Another reply (a parked one, say) is in the slot: this one goes by customer service.
            if slot_now.filled_by.as_deref() != Some(key) {
                return Ok(false);
            }
            match slot_now.state {
                SlotState::Filled if slot_now.taken => return Ok(true),
                // Revoked by an earlier run: customer service (the idempotency key sends it once).
                SlotState::Closed => return Ok(false),
                _ => {}
            }
            if unix_millis(SystemTime::now()) > slot_now.deadline_ms + TAKE_GRACE.as_millis() as u64 {
                // Nobody took it: take it back unless a delivery takes it this instant.
                return Ok(!self.slots.revoke(slot).await.map_err(DispatchError::Store)?);
            }
            tokio::time::sleep(TAKE_POLL).await;
        }
    }

    /// Whether the slot holds the reply with idempotency key `key` (an earlier run's).
    async fn filled_by(&self, slot: &str, key: &str) -> Result<bool, DispatchError> {
        let slot = self.slots.read(slot).await.map_err(DispatchError::Store)?;
        Ok(matches!(slot, Some(s) if s.state == SlotState::Filled && s.filled_by.as_deref() == Some(key)))
    }

    /// Puts a record on the inbound DLQ with its reason (in its conversation's group,
    /// deduplicated by its SQS message id). If that is not possible the record comes again soon,
    /// and the queue's redrive moves it after its last receive.
    async fn give_up(&self, record: &Record, kind: &str, reason: &str) -> Handled {
        let again = Handled::Again(crate::core::retry::backoff_s(record.receive_count, 0));
        let Some(dlq) = &self.dead_letter else { return again };
        let group = record.group.clone().unwrap_or_else(|| UNGROUPED.to_owned());
        let message = QueueMessage {
            body: record.body.clone(),
            attributes: vec![
                ("kind", kind.to_owned()),
                ("reason", attribute_value(reason)),
                (FIFO_GROUP, group),
                (FIFO_DEDUP, dedup_id(&record.message_id)),
            ],
        };
        match dlq.publish(message).await {
            Ok(()) => Handled::Done,
            Err(err) => {
                tracing::error!(error = %err, "could not dead-letter; the message stays on the queue");
                again
            }
        }
    }

    /// Handles an SQS batch; returns the ids to report as failed: bot and dependency errors are
    /// retried; an invalid message goes to the DLQ at once.
    ///
    /// The inbound queue is FIFO with a message group per conversation. Conversations are
    /// dispatched concurrently (one slow bot answer must not hold the others past their window,
    /// or the function's timeout); the records of one conversation one at a time, in order. Once
    /// one of them must come again, the later ones of its conversation are not started: they
    /// are reported failed too and come back after it, in order (SQS hands out no message of a
    /// group while an earlier one is in flight).
    pub async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        self.handle_batch_until(records, None).await
    }

    /// [`Self::handle_batch`] inside an invocation that ends at `deadline`: a record whose bot
    /// call could not finish in time is not started but handed back (with the rest of its
    /// conversation) to come again at once.
    pub async fn handle_batch_until(&self, records: &[Record], deadline: Option<SystemTime>) -> Vec<String> {
        // A record without a group (a standard queue) is a conversation of its own.
        let conversations = in_groups(records, |record| record.group.as_deref().unwrap_or(&record.message_id));
        let runs = conversations.into_iter().map(|records| async move {
            let mut failed = Vec::new();
            // Set once a record must come again (after that many seconds): the rest of the
            // conversation follows it.
            let mut held: Option<u32> = None;
            for record in records {
                let handled = match held {
                    Some(after) => {
                        tracing::info!(message_id = %record.message_id, "an earlier message of its conversation comes again first; handed back");
                        Handled::Again(after)
                    }
                    None if deadline.is_some_and(|d| {
                        d.duration_since(SystemTime::now()).unwrap_or_default() < self.budget()
                    }) =>
                    {
                        tracing::info!(message_id = %record.message_id, "not enough time left for the bot; handed back");
                        Handled::Again(HAND_BACK_S)
                    }
                    None => self.handle_record(record).await,
                };
                if let Handled::Again(after) = handled {
                    // Without a redelivery control, it returns after the visibility timeout.
                    if let Some(requeue) = &self.requeue {
                        if let Err(err) = requeue.retry_later(&record.receipt_handle, after).await {
                            tracing::warn!(error = %err, "could not set when the record comes again; it returns after the visibility timeout");
                        }
                    }
                    held.get_or_insert(after);
                    failed.push(record.message_id.clone());
                }
            }
            failed
        });
        futures_util::future::join_all(runs).await.into_iter().flatten().collect()
    }

    /// Dispatches one record, dead-letters it, or says when it must come again.
    async fn handle_record(&self, record: &Record) -> Handled {
        let last = self.max_receives.is_some_and(|max| record.receive_count >= max);
        match self.dispatch(&record.body).await {
            Ok(replies) => {
                tracing::info!(message_id = %record.message_id, replies, "dispatched");
                Handled::Done
            }
            Err(DispatchError::Busy { until_ms }) if !last => {
                // Comes back when the earlier call's lease ends (or the call completes).
                let wait_s = until_ms.saturating_sub(unix_millis(SystemTime::now())).div_ceil(1000) + 1;
                tracing::info!(message_id = %record.message_id, wait_s, "an earlier delivery's bot call may still be running; handed back");
                Handled::Again(wait_s.min(43_200) as u32)
            }
            Err(DispatchError::Invalid(reason)) => {
                tracing::error!(message_id = %record.message_id, reason = %reason, "not an Inbound; dead-lettered");
                self.give_up(record, "invalid", &format!("not an Inbound v1 document: {reason}")).await
            }
            Err(err) if last => {
                tracing::error!(message_id = %record.message_id, error = %err, receive_count = record.receive_count, "dispatch failed on the last receive; dead-lettered");
                // A delivery that only found an earlier call running leaves its stream to it.
                if !matches!(err, DispatchError::Busy { .. }) {
                    self.end_stream(&record.body).await;
                }
                let reason = format!("gave up after {} deliveries: {err}", record.receive_count);
                self.give_up(record, "gave_up", &reason).await
            }
            Err(err) => {
                // Back soon, with a growing backoff, not after the queue's 16-minute visibility
                // timeout (sized for agents that run long, not for retries).
                let delay_s = crate::core::retry::backoff_s(record.receive_count, 0);
                tracing::warn!(message_id = %record.message_id, error = %err, delay_s, "dispatch failed; SQS retries it");
                Handled::Again(delay_s)
            }
        }
    }
}

/// What became of one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Dispatched or dead-lettered: SQS may delete it.
    Done,
    /// It must come again, after this many seconds.
    Again(u32),
}

/// The DLQ group of a record that came without one (not from a FIFO queue).
const UNGROUPED: &str = "ungrouped";

/// Text as an AI-bot message's `response_url` takes it: one markdown message of at most 20 480
/// bytes, the texts joined, cut with a note when too long.
/// The images an answer's stream will show: their keys and bytes so far.
#[derive(Default)]
struct StreamImages {
    keys: Vec<String>,
    bytes: u64,
}

fn one_message(texts: &[&str]) -> Vec<Content> {
    let texts: Vec<&str> = texts.iter().copied().filter(|t| !t.is_empty()).collect();
    if texts.is_empty() {
        return Vec::new();
    }
    vec![Content::Markdown { text: fit(&texts.join("\n\n")).into_owned() }]
}

fn to_json(replies: &[Content]) -> Result<String, DispatchError> {
    serde_json::to_string(replies).map_err(|e| DispatchError::Invalid(e.to_string()))
}

/// The lease key of a message's bot call.
fn call_key(inbound: &Inbound) -> String {
    format!("call:{}", inbound.id)
}

/// Writes the growing answer into a stream, at most once per [`SNAPSHOT_INTERVAL`]: text that
/// grows sooner waits and is written when the interval is up (so an agent that pauses still
/// shows what it has). Each snapshot has a higher version than the last (and a later run's are
/// higher still: they are clock-based), so a slow write never replaces a newer snapshot.
struct StreamSink {
    streams: Arc<dyn Streams>,
    key: String,
    state: Arc<tokio::sync::Mutex<SinkState>>,
}

#[derive(Default)]
struct SinkState {
    last_write: Option<tokio::time::Instant>,
    version: u64,
    /// Text that grew within the interval, waiting for it to pass.
    pending: Option<String>,
    flush_scheduled: bool,
}

impl SinkState {
    fn next_version(&mut self) -> u64 {
        self.version = (self.version + 1).max(unix_millis(SystemTime::now()));
        self.version
    }
}

impl StreamSink {
    fn new(streams: Arc<dyn Streams>, key: String) -> Self {
        Self { streams, key, state: Arc::default() }
    }

    /// Makes the next version higher than `seen` (a snapshot written by another run).
    async fn raise_version(&self, seen: u64) {
        let mut state = self.state.lock().await;
        state.version = state.version.max(seen);
    }

    /// The version of the final write: above every snapshot's, so a late snapshot cannot
    /// replace it (and a finished stream takes no snapshot anyway).
    async fn next_version(&self) -> u64 {
        let mut state = self.state.lock().await;
        state.pending = None;
        state.next_version()
    }

    async fn write(streams: &dyn Streams, key: &str, text: &str, version: u64) {
        match streams.write(key, cut_utf8(text, MAX_CONTENT_BYTES), version, false).await {
            Ok(true) => {}
            Ok(false) => tracing::info!("the stream is finished or holds a newer snapshot; snapshot dropped"),
            // Best effort: the final write carries the whole answer anyway.
            Err(err) => tracing::warn!(error = %err, "could not write a snapshot to the stream"),
        }
    }
}

#[async_trait::async_trait]
impl AnswerSink for StreamSink {
    async fn grow(&self, text: &str) {
        let version = {
            let mut state = self.state.lock().await;
            if let Some(at) = state.last_write.filter(|at| at.elapsed() < SNAPSHOT_INTERVAL) {
                state.pending = Some(text.to_owned());
                if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    let (streams, key, shared) = (self.streams.clone(), self.key.clone(), self.state.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at + SNAPSHOT_INTERVAL).await;
                        let (text, version) = {
                            let mut state = shared.lock().await;
                            state.flush_scheduled = false;
                            let Some(text) = state.pending.take() else { return };
                            state.last_write = Some(tokio::time::Instant::now());
                            (text, state.next_version())
                        };
                        StreamSink::write(streams.as_ref(), &key, &text, version).await;
                    });
                }
                return;
            }
            state.last_write = Some(tokio::time::Instant::now());
            state.pending = None;
            state.next_version()
        };
        Self::write(self.streams.as_ref(), &self.key, text, version).await;
    }
}
