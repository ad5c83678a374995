//! Capabilities the handlers need from the outside world, one trait each. Each has an AWS
//! adapter (`crate::adapters::aws`) and an in-memory twin (`crate::adapters::memory`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

/// A dependency (DynamoDB, SQS, …) failed; the caller should make the sender retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service} unavailable: {detail}")]
pub struct PortError {
    pub service: &'static str,
    pub detail: String,
}

impl PortError {
    pub fn new(service: &'static str, detail: impl std::fmt::Display) -> Self {
        Self { service, detail: detail.to_string() }
    }
}

/// One message received from a queue, as the Lambda event (or `dev`'s poller) gives it.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// SQS's ApproximateReceiveCount: 1 on the first delivery.
    pub receive_count: u32,
    /// The message group on a FIFO queue (SQS's MessageGroupId): records of one group are
    /// handled in order, one at a time.
    pub group: Option<String>,
}

/// `records` split by `key` into groups in the order each key first appears, each group in
/// the records' order (the records of a FIFO message group, or of one recipient).
pub fn in_groups<'a, K: PartialEq>(records: &'a [Record], key: impl Fn(&'a Record) -> K) -> Vec<Vec<&'a Record>> {
    let mut groups: Vec<(K, Vec<&Record>)> = Vec::new();
    for record in records {
        let k = key(record);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, group)) => group.push(record),
            None => groups.push((k, vec![record])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Shows the user that an answer is coming ("typing…"), where the channel can. Best effort:
/// implementations log their failures and never hold up the answer for long.
#[async_trait]
pub trait Typing: Send + Sync {
    /// Turns the indicator on (`true`) or off for the conversation of `inbound`.
    async fn set(&self, inbound: &crate::core::envelope::Inbound, typing: bool);
}

/// Wall-clock time, injectable for tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// Seconds since the unix epoch.
    fn unix(&self) -> u64 {
        self.now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A message for a queue: its JSON body and a few string attributes for routing and filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
}

/// SQS refuses empty attribute values and control characters.
pub fn attribute_value(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = cut_utf8(clean.trim(), 256).to_owned();
    if clean.is_empty() {
        "none".to_owned()
    } else {
        clean
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Puts messages on one queue, durably: `Ok` means the queue has it.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, message: QueueMessage) -> Result<(), PortError>;
}

/// The state of a dedupe marker after trying to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to publish; the token identifies this claim for `complete` / `release`.
    /// `taken_over`: an earlier claim ran out of lease unfinished, so its holder may have died
    /// after publishing (or sending) and before recording it: the outcome is unknown.
    Claimed { token: String, taken_over: bool },
    /// Already published: answer the duplicate without publishing again.
    Published,
    /// Another handler holds a live claim and may still be publishing, until its lease ends
    /// (unix ms); after that the key can be claimed again.
    InFlight { until_ms: u64 },
}

/// Seen-message markers that make "publish once" safe where the queues' five-minute
/// deduplication is too short (iLink's messages, 微信客服 items, the dispatcher's bot calls, the
/// sender's parts).
///
/// A marker is *claimed* (with a short lease) before publishing, *completed* after the queue
/// accepted the message, and *released* if publishing failed, so a marker never swallows a
/// message that did not reach the queue. A claim whose holder died expires with its lease.
#[async_trait]
pub trait Dedupe: Send + Sync {
    async fn claim(&self, key: &str, now: SystemTime, lease: Duration) -> Result<Claim, PortError>;
    async fn complete(&self, key: &str, token: &str, now: SystemTime) -> Result<(), PortError>;
    async fn release(&self, key: &str, token: &str) -> Result<(), PortError>;
}

/// How long a completed dedupe marker is kept (unless its adapter says otherwise).
pub const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a sent-part marker is kept: past the outbound queue's (4 days) and its DLQ's
/// (14 days) retention, so a redriven message never sends a part twice.
pub const SENT_TTL: Duration = Duration::from_secs(19 * 24 * 3600);

/// Milliseconds since the unix epoch, for leases.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A unique claim token: 128 random bits as hex.
pub fn claim_token() -> String {
    crate::protocol::hex::hex(&crate::protocol::crypto::random_prefix())
}

/// A queue's redelivery control: when a received message comes again.
#[async_trait]
pub trait Redeliver: Send + Sync {
    /// Makes a received message visible again after `delay_s`.
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError>;
}

/// The outbound queue, as the sender acts on it beyond "done" and "failed".
#[async_trait]
pub trait OutboundQueue: Redeliver {
    /// Puts a message that must not be retried on the dead-letter queue, with its reason.
    async fn dead_letter(&self, body: &str, attributes: &[(&'static str, String)]) -> Result<(), PortError>;
    /// Puts a fresh copy of a message on the queue, visible after `delay_s` (at most 900): for
    /// a message on its last receive that has not failed, only waited.
    async fn requeue(&self, body: &str, delay_s: u32) -> Result<(), PortError>;
}

/// The latest iLink `context_token` per (bot account, user): every send must echo it.
#[async_trait]
pub trait ContextTokens: Send + Sync {
    async fn latest(&self, account: &str, user: &str) -> Result<Option<String>, PortError>;
    /// Stores a token issued at `issued_ms`; an older one never replaces a newer one.
    async fn store(&self, account: &str, user: &str, token: &str, issued_ms: u64) -> Result<(), PortError>;
}

/// One sender outcome, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMetric {
    pub channel: &'static str,
    pub outcome: &'static str,
    pub errcode: Option<i64>,
}

/// Where metrics go: CloudWatch Embedded Metric Format lines on Lambda, a list in tests.
pub trait Metrics: Send + Sync {
    fn record(&self, metric: &SendMetric);
    /// One more of `name` (a metric an alarm or a dashboard watches), with `properties` kept
    /// beside it for searching the logs (never secrets or message text).
    fn count(&self, name: &'static str, properties: &[(&str, &str)]);
}

/// Where an Official Account message's reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Waiting for the bot.
    Open,
    /// The bot's reply is in the slot: the passive reply.
    Filled,
    /// The last delivery gave up waiting: the reply goes by the customer-service API.
    Closed,
}

/// A reply slot as one delivery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub state: SlotState,
    /// Deliveries of the message seen so far, this one included.
    pub deliveries: u32,
    /// The reply (JSON of an Outbound `content`) once filled.
    pub reply: Option<String>,
    /// Who filled it: the idempotency key of that reply.
    pub filled_by: Option<String>,
    /// A delivery has answered with the reply (so it must not go by customer service).
    pub taken: bool,
    /// By when (unix ms) the last delivery answers: a reply filled later reaches nobody.
    pub deadline_ms: u64,
}

/// One reply slot per Official Account message, shared by every delivery of it and the
/// dispatcher. Filling and closing are conditional on the slot being open, so exactly one of
/// "passive reply" and "customer-service send" happens.
#[async_trait]
pub trait ReplySlots: Send + Sync {
    /// Counts a delivery (creating the slot on the first, with its `deadline`) and returns the
    /// slot after it.
    async fn arrive(&self, key: &str, now: SystemTime, deadline: SystemTime) -> Result<Slot, PortError>;
    async fn read(&self, key: &str) -> Result<Option<Slot>, PortError>;
    /// Puts the reply in an open slot before its deadline, recording who (`by`) filled it; false
    /// when the slot was already closed or filled, or the deadline passed.
    async fn fill(&self, key: &str, reply: &str, by: &str, now: SystemTime) -> Result<bool, PortError>;
    /// Closes an open slot; false when the reply arrived first.
    async fn close(&self, key: &str) -> Result<bool, PortError>;
    /// A delivery is about to answer with the reply: marks it taken; false unless it is filled.
    async fn take(&self, key: &str) -> Result<bool, PortError>;
    /// Takes back a filled reply nobody took (it goes by customer service); false when a
    /// delivery took it first.
    async fn revoke(&self, key: &str) -> Result<bool, PortError>;
}

/// Replies the customer-service API refused with 48001 (the account may not use it), kept per
/// (account, user) and given as the passive reply to the user's next message.
#[async_trait]
pub trait ParkedReplies: Send + Sync {
    async fn park(&self, account: &str, user: &str, reply: &str, now: SystemTime) -> Result<(), PortError>;
    /// The user's oldest parked reply (a consistent read), left parked.
    async fn oldest(&self, account: &str, user: &str) -> Result<Option<String>, PortError>;
    /// Removes the user's oldest parked reply if it is still `reply` (once it answered a
    /// message): a retried call, or one racing another, removes nothing more.
    async fn remove_oldest(&self, account: &str, user: &str, reply: &str) -> Result<(), PortError>;
}

/// Leases that keep one poller per iLink account (one token must never be polled twice).
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes `key` for `owner` until `now + ttl` unless another owner holds a live lease.
    async fn acquire(&self, key: &str, owner: &str, now: SystemTime, ttl: Duration) -> Result<bool, PortError>;
    async fn release(&self, key: &str, owner: &str) -> Result<(), PortError>;
}

/// Where each iLink account's long poll stands: its cursor, and whether its session expired.
#[async_trait]
pub trait PollState: Send + Sync {
    async fn cursor(&self, account: &str) -> Result<Option<String>, PortError>;
    async fn save_cursor(&self, account: &str, cursor: &str) -> Result<(), PortError>;
    /// Whether the account is paused because its session expired (-14).
    async fn paused(&self, account: &str) -> Result<Option<Paused>, PortError>;
    /// Pauses the account: the session of the token with this fingerprint expired.
    async fn pause(&self, account: &str, token: &str, at: SystemTime) -> Result<(), PortError>;
    /// A new login: forgets the pause and the old session's cursor.
    async fn resume(&self, account: &str) -> Result<(), PortError>;
}

/// What a 微信客服 customer's reply window says of one more part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowVerdict {
    /// Counted (or counted before, by an earlier try of the same part): send it.
    Counted,
    /// The customer has not written in the window (48 h).
    Closed,
    /// The allowance since the customer's last message is used up.
    Spent,
}

/// 微信客服 customers, per (account, customer) `key`: the reply window (a customer's message
/// opens an allowance of a few messages for 48 h; each part sent counts once, whatever the
/// retries), the session as WeChat last reported it, and a record of each part sent.
#[async_trait]
pub trait CustomerWindows: Send + Sync {
    /// The customer wrote message `msgid` at `at` (unix seconds): a fresh allowance, never
    /// moved back by an older message, and not renewed by the same message handled again.
    async fn customer_wrote(&self, key: &str, msgid: &str, at: u64) -> Result<(), PortError>;
    /// Counts `part` at `now` against a window of `window_s` and `most` parts.
    async fn count(
        &self,
        key: &str,
        part: &str,
        now: u64,
        window_s: u64,
        most: u32,
    ) -> Result<WindowVerdict, PortError>;
    /// Gives back the allowance `part` took (it was refused before any send).
    async fn uncount(&self, key: &str, part: &str) -> Result<(), PortError>;
    /// `msgid` went to the customer at `at`: the reply part `part` (its idempotency key and index).
    async fn sent(&self, key: &str, msgid: &str, part: &str, at: u64) -> Result<(), PortError>;
    /// WeChat reported `msgid` undelivered after all (`msg_send_fail`, `fail_type`): its record
    /// marked failed; the part it was, when the record has it.
    async fn send_failed(&self, key: &str, msgid: &str, fail_type: i64, at: u64) -> Result<Option<String>, PortError>;
    /// The session moved to `state` (WeChat's `service_state`: 3 a human servicer, 4 ended)
    /// with `servicer` at `at`; an older report never overwrites a newer one.
    async fn session(&self, key: &str, state: i64, servicer: Option<&str>, at: u64) -> Result<(), PortError>;
    /// The session as last reported: (state, servicer, at).
    async fn last_session(&self, key: &str) -> Result<Option<(i64, Option<String>, u64)>, PortError>;
}

/// One turn of a conversation the bridge remembers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    pub text: String,
    /// The `Inbound` the turn answers: a turn is kept once per message, however often the
    /// message is handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What the bridge keeps of one conversation with one bot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationState {
    /// The last turns, oldest first (bridge history).
    pub turns: Vec<Turn>,
    /// How often the conversation was reset: a gateway that keeps history itself gets a new
    /// session key with each.
    pub epoch: u64,
    /// The backend's own conversation id (Dify's `conversation_id`).
    pub external_id: Option<String>,
    /// The stored version (0: nothing stored); a save names it.
    pub version: u64,
}

/// Conversations the bridge remembers, per conversation and bot. A save names the version it
/// replaces, so two messages answered at once never lose a turn: the slower reloads and
/// appends again.
#[async_trait]
pub trait Conversations: Send + Sync {
    /// The conversation under `key` (empty, version 0, when none is kept or it expired).
    async fn load(&self, key: &str) -> Result<ConversationState, PortError>;
    /// Stores `state` as the version after `state.version`, if that is still the stored one,
    /// kept `ttl` after now; false when another save came first.
    async fn save(&self, key: &str, state: &ConversationState, ttl: Duration) -> Result<bool, PortError>;
}

/// One window a message is counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterWindow {
    pub key: String,
    pub limit: u32,
    pub ttl: Duration,
}

/// Fixed-window counters for spending limits, shared by every dispatcher.
#[async_trait]
pub trait Counters: Send + Sync {
    /// Counts message `id` in every window of `windows` (each a key naming its window, `…:m<minute>`,
    /// its limit and how long it is kept), or in none: `None` when counted (or counted before:
    /// a message handled again is not counted twice), else the index of a window whose limit
    /// was reached. All or nothing, atomic under concurrency.
    async fn take(&self, windows: &[CounterWindow], id: &str) -> Result<Option<usize>, PortError>;
    /// True the first time it is asked for `key` (a notice sent once per window), kept `ttl`.
    async fn first(&self, key: &str, ttl: Duration) -> Result<bool, PortError>;
}

/// Versioned cursors of pulled feeds (a 微信客服 account's `sync_msg`): a cursor is saved only
/// after what it passes was published, and each save names the version it replaces, so a
/// slower puller never moves a cursor back.
#[async_trait]
pub trait Cursors: Send + Sync {
    /// The cursor under `key` and its version, read consistently.
    async fn load(&self, key: &str) -> Result<Option<(String, u64)>, PortError>;
    /// Stores `cursor` as the version after `previous` (`None`: no cursor stored yet), if that
    /// is still the stored one; false when another save came first.
    async fn save(&self, key: &str, cursor: &str, previous: Option<u64>) -> Result<bool, PortError>;
}

/// One WeCom AI-bot message's answer stream, shared by the callbacks (which answer WeCom's
/// refreshes from it) and the dispatcher (which writes the growing answer into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The whole answer so far (at most 20 480 bytes).
    pub content: String,
    /// WeCom has been (or will be) told `finish: true`: nothing more goes into the stream.
    pub finished: bool,
    /// Finished at the end of the polling window, not by the answer: the answer follows by the
    /// message's `response_url`.
    pub handed_over: bool,
    /// The version of the latest snapshot: a write names a newer one or does not apply.
    pub version: u64,
    /// When the message arrived (unix ms): the polling window counts from here.
    pub opened_ms: u64,
    /// Where the message's `response_url` stands.
    pub url: UrlState,
    /// The bot's answer, once recorded: what it left for other means than the stream (JSON of
    /// `[Content]`, empty list when the stream showed it all). A redelivered message finds it
    /// here and queues it again instead of asking the bot a second time.
    pub answer: Option<String>,
    /// The answer's images (media store keys), shown with the finished stream.
    pub images: Vec<String>,
}

/// A message's single-use `response_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlState {
    /// The callback carried none.
    None,
    Unused,
    /// Claimed for one POST whose outcome is not recorded (it may have been used).
    Claimed,
    Used,
}

/// The outcome of claiming a `response_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlClaim {
    /// Ours to POST once.
    Claimed(String),
    /// Claimed or used before: it must not be POSTed again.
    Used,
    /// Past its hour.
    Expired,
    /// No stream, or the callback carried no URL.
    Missing,
}

/// The answer streams of WeCom AI-bot messages (one item per message, kept two hours).
#[async_trait]
pub trait Streams: Send + Sync {
    /// Creates the open, empty stream of a message unless it exists (a retried callback); true
    /// when this call created it. `response_url` is kept here, never on a queue; it is valid
    /// until `url_expires`.
    async fn open(
        &self,
        key: &str,
        opened: SystemTime,
        response_url: Option<&str>,
        url_expires: SystemTime,
    ) -> Result<bool, PortError>;
    /// The stream, read consistently.
    async fn read(&self, key: &str) -> Result<Option<Stream>, PortError>;
    /// Replaces the content of an open stream with a newer snapshot (`version` above the
    /// stored one), finishing it when `finish`; false when the stream is finished, missing or
    /// holds a newer snapshot.
    async fn write(&self, key: &str, content: &str, version: u64, finish: bool) -> Result<bool, PortError>;
    /// Records the bot's answer and finishes the open stream with `content` (a version above
    /// every snapshot's) and `images` (media store keys); `rest` is what the stream does not
    /// show (JSON of `[Content]`). False when the stream is finished, missing, holds a newer
    /// snapshot or an answer is recorded.
    async fn finish(
        &self,
        key: &str,
        content: &str,
        version: u64,
        rest: &str,
        images: &[String],
    ) -> Result<bool, PortError>;
    /// Records the bot's answer on a stream finished without it (handed over at the end of its
    /// window): `rest` is the whole answer. False when the stream is open, missing, or an
    /// answer was recorded first.
    async fn record_answer(&self, key: &str, rest: &str) -> Result<bool, PortError>;
    /// Finishes an open stream at the end of its window with `content`, marking it handed
    /// over; false when it was finished first.
    async fn hand_over(&self, key: &str, content: &str) -> Result<bool, PortError>;
    /// Claims the `response_url` for its one use, if unused and not expired at `now`.
    async fn claim_url(&self, key: &str, now: SystemTime) -> Result<UrlClaim, PortError>;
    /// Records that the claimed use happened (`used`) or certainly did not (the claim is
    /// released for another attempt).
    async fn settle_url(&self, key: &str, used: bool) -> Result<(), PortError>;
}

/// Where media files are kept: S3 on AWS, a folder in `dev`. Keys are content keys
/// (`core::media::content_key`), so a second store of the same key stores the same bytes.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// The size of the object under `key`, if there is one.
    async fn size(&self, key: &str) -> Result<Option<u64>, PortError>;
    /// Stores the file at `path` under `key`, with its MIME type.
    async fn put_file(&self, key: &str, path: &std::path::Path, mime: &str) -> Result<(), PortError>;
    /// Stores `bytes` under `key`, with its MIME type.
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, mime: &str) -> Result<(), PortError>;
    /// The bytes under `key` if they are at most `max` (`Ok(None)` when there is no object;
    /// an error when it is larger).
    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, PortError>;
    /// A link anyone holding it can GET the object by, until `now + ttl`; the download is named
    /// `file_name` and typed `mime`.
    async fn link(
        &self,
        key: &str,
        mime: &str,
        file_name: Option<&str>,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<String, PortError>;
}

/// The media ids a channel gave for uploaded files, kept while they are valid, so the same file
/// to the same account is uploaded once. `scope` names channel, account, type and the file's
/// SHA-256.
#[async_trait]
pub trait MediaIds: Send + Sync {
    /// The id, if one is stored and still valid at `now`.
    async fn get(&self, scope: &str, now: SystemTime) -> Result<Option<String>, PortError>;
    async fn put(&self, scope: &str, media_id: &str, valid_until: SystemTime) -> Result<(), PortError>;
    /// Drops `media_id` (the platform said it expired) unless another id replaced it.
    async fn forget(&self, scope: &str, media_id: &str) -> Result<(), PortError>;
}

/// How long a stream item is kept: past the window and the `response_url`'s hour.
pub const STREAM_TTL: Duration = Duration::from_secs(2 * 3600);

/// An iLink account whose session expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// When (unix s).
    pub at: u64,
    /// The fingerprint of the token that expired: a new token (a new login) resumes the account.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_are_never_empty_or_control_characters() {
        assert_eq!(attribute_value(""), "none");
        assert_eq!(attribute_value("a\nb\u{0}"), "a b");
        assert_eq!(attribute_value(&"x".repeat(300)).len(), 256);
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(cut_utf8("你好", 4), "你");
        assert_eq!(cut_utf8("你好", 5), "你");
        assert_eq!(cut_utf8("ok", 10), "ok");
    }
}
