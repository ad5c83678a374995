//! The sender: delivers queued `Outbound` messages once, through the channel each names.
//!
//! Per record: an invalid envelope or unsupported content is permanent (DLQ with the reason);
//! each part of a message is sent at most once per idempotency key (a marker claimed before the
//! call, completed after it); the channel's errcode table decides between success, a token
//! refresh and one retry, a later retry with a growing backoff, and the DLQ. The channels
//! themselves are reached only through [`Deliveries`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::channels::Deliveries;
use crate::core::envelope::{Content, OutChannel, Outbound};
use crate::core::outbound::{self, part_key, sent_key, short_hash, Delivered, Delivery};
use crate::core::ports::{
    attribute_value, Claim, Clock, Dedupe, Metrics, OutboundQueue, PortError, Record, SendMetric,
};
use crate::core::retry::{backoff_s, Failure, Verdict};
use crate::services::files::OutFiles;

/// How long a claim on a part protects an in-flight send: longer than one API call can take
/// (15 s), twice over for the token refresh and retry. A sender that dies holding a claim
/// delays that part by at most this (the retry comes back just after the lease, see
/// [`Outcome::Later`]).
pub const SEND_LEASE: Duration = Duration::from_secs(60);
/// No part is started with less time than this left in the invocation: one API call (15 s)
/// and recording it.
pub const SEND_BUDGET: Duration = Duration::from_secs(20);
/// How soon a record handed back for lack of time comes again.
pub const HAND_BACK_S: u32 = 1;

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every part was sent (now, or already by an earlier delivery).
    Sent { parts: usize, already_sent: usize },
    /// Try again later; the record is reported as a batch item failure.
    Retry { reason: String, errcode: Option<i64>, min_backoff_s: u32 },
    /// Try again after exactly `delay_s`, not a growing backoff: nothing failed (another
    /// sender's claim runs until then, or this invocation ran out of time).
    Later { reason: String, delay_s: u32 },
    /// Never retried: dead-lettered with the reason, then deleted.
    Permanent { reason: String, errcode: Option<i64>, errmsg: String },
}

impl Outcome {
    fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent { reason: reason.into(), errcode: None, errmsg: String::new() }
    }
}

/// The sender's dependencies, built once per process.
pub struct Sender {
    /// Every outbound channel.
    pub deliveries: Deliveries,
    /// Idempotency markers of sent parts.
    pub sent: Arc<dyn Dedupe>,
    pub queue: Arc<dyn OutboundQueue>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Receives after which the queue moves a message to its DLQ on its own (without a
    /// reason): the sender dead-letters it with its reason on the last one instead. `None`
    /// when the queue has no such limit.
    pub max_receives: Option<u32>,
    /// Where files to send are read and their media ids kept (none: file contents that need
    /// an upload are refused).
    pub files: Option<OutFiles>,
}

/// File parts loaded and uploaded at once in this process: one, so that a batch of large files
/// to different recipients never holds more than one in memory (the sender has 256 MB).
static FILE_PARTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A part ready to send, and the cached media id it uses, if any.
struct Attached {
    part: Content,
    /// The media id's cache entry (scope, id).
    cached: Option<(String, String)>,
    /// The id came from the cache (not this upload).
    from_cache: bool,
}

impl Sender {
    /// Handles a batch; returns the message ids to report as batch item failures.
    ///
    /// Records to different recipients are sent concurrently; records to one recipient keep
    /// their order within the batch.
    pub async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        self.handle_batch_until(records, None).await
    }

    /// [`Self::handle_batch`] inside an invocation that ends at `deadline`: no part is started
    /// without [`SEND_BUDGET`] left; what cannot start is handed back to come again at once.
    pub async fn handle_batch_until(&self, records: &[Record], deadline: Option<SystemTime>) -> Vec<String> {
        let groups = crate::core::ports::in_groups(records, |record| recipient_of(&record.body));
        let sends = groups.into_iter().map(|group| async move {
            let mut failed = Vec::new();
            // Once one comes back later, the later ones to the same recipient come back after it.
            let mut wait: Option<u32> = None;
            for record in group {
                let come_back = match wait {
                    Some(after) => Some(after + 1),
                    // Not started: handed back to come again at once (by another invocation).
                    None if self.out_of_time(deadline) => Some(HAND_BACK_S),
                    None => self.handle_until(record, deadline).await,
                };
                if let Some(delay_s) = come_back {
                    wait = Some(delay_s);
                    if !self.come_back(record, delay_s).await {
                        failed.push(record.message_id.clone());
                    }
                }
            }
            failed
        });
        futures_util::future::join_all(sends).await.into_iter().flatten().collect()
    }

    /// Handles one record; false when it must be reported as failed (SQS delivers it again).
    pub async fn handle(&self, record: &Record) -> bool {
        match self.handle_until(record, None).await {
            None => true,
            Some(delay_s) => self.come_back(record, delay_s).await,
        }
    }

    /// Makes a record come again after `delay_s`; true when the original is done with (on the
    /// queue's last receive a fresh copy is queued instead, so a wait never becomes a DLQ entry).
    async fn come_back(&self, record: &Record, delay_s: u32) -> bool {
        let last = self.max_receives.is_some_and(|max| record.receive_count >= max);
        if last {
            match self.queue.requeue(&record.body, delay_s).await {
                Ok(()) => return true,
                Err(err) => {
                    tracing::warn!(error = %err, "could not queue a fresh copy; the queue's redrive may take it")
                }
            }
        }
        if let Err(err) = self.queue.retry_later(&record.receipt_handle, delay_s).await {
            // The message still comes back after the queue's visibility timeout.
            tracing::warn!(error = %err, "could not set the retry delay");
        }
        false
    }

    /// Handles one record; `Some(delay)` when it must come again after `delay` seconds.
    async fn handle_until(&self, record: &Record, deadline: Option<SystemTime>) -> Option<u32> {
        let (channel, outcome) = self.send_record_until(record, deadline).await;
        let channel = channel.map(OutChannel::as_str).unwrap_or("unknown");
        let outcome = self.last_chance(record, outcome);
        match &outcome {
            Outcome::Sent { parts, already_sent } => {
                tracing::info!(channel, outcome = "sent", parts, already_sent, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "sent", errcode: None });
                None
            }
            Outcome::Retry { reason, errcode, min_backoff_s } => {
                let delay = backoff_s(record.receive_count, *min_backoff_s);
                tracing::warn!(channel, outcome = "retry", errcode, reason = %reason, delay_s = delay, receive_count = record.receive_count, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "retry", errcode: *errcode });
                Some(delay)
            }
            Outcome::Later { reason, delay_s } => {
                tracing::info!(channel, outcome = "later", reason = %reason, delay_s, receive_count = record.receive_count, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "later", errcode: None });
                Some(*delay_s)
            }
            Outcome::Permanent { reason, errcode, errmsg } => {
                tracing::error!(channel, outcome = "dead_letter", errcode, reason = %reason, message_id = %record.message_id, "outbound");
                self.metrics.record(&SendMetric { channel, outcome: "dead_letter", errcode: *errcode });
                let attributes = [
                    ("channel", channel.to_owned()),
                    ("errcode", errcode.map(|c| c.to_string()).unwrap_or_else(|| "none".to_owned())),
                    ("errmsg", attribute_value(errmsg)),
                    ("reason", attribute_value(reason)),
                ];
                match self.queue.dead_letter(&record.body, &attributes).await {
                    Ok(()) => None,
                    Err(err) => {
                        // Never drop it: let SQS deliver it again.
                        tracing::error!(error = %err, "could not dead-letter; the message stays on the queue");
                        Some(backoff_s(record.receive_count, 0))
                    }
                }
            }
        }
    }

    /// On the queue's last receive, a retry after a failure would let SQS move the message to the
    /// DLQ without a reason: dead-letter it here, with one. (A wait, `Later`, is requeued instead.)
    fn last_chance(&self, record: &Record, outcome: Outcome) -> Outcome {
        let last = self.max_receives.is_some_and(|max| record.receive_count >= max);
        match outcome {
            Outcome::Retry { reason, errcode, .. } if last => Outcome::Permanent {
                reason: format!("gave up after {} deliveries: {reason}", record.receive_count),
                errcode,
                errmsg: reason,
            },
            other => other,
        }
    }

    /// Sends every part of one record.
    pub async fn send_record(&self, record: &Record) -> (Option<OutChannel>, Outcome) {
        self.send_record_until(record, None).await
    }

    async fn send_record_until(&self, record: &Record, deadline: Option<SystemTime>) -> (Option<OutChannel>, Outcome) {
        let out = match Outbound::parse(&record.body) {
            Ok(out) => out,
            Err(err) => return (None, Outcome::permanent(format!("invalid envelope: {err}"))),
        };
        let outcome = self.send(&out, record.receive_count, deadline).await;
        (Some(out.channel), outcome)
    }

    /// Whether less than [`SEND_BUDGET`] is left before `deadline`.
    fn out_of_time(&self, deadline: Option<SystemTime>) -> bool {
        deadline.is_some_and(|d| d.duration_since(self.clock.now()).unwrap_or_default() < SEND_BUDGET)
    }

    async fn send(&self, out: &Outbound, receive_count: u32, deadline: Option<SystemTime>) -> Outcome {
        let delivery = self.deliveries.get(out.channel);
        let parts = match outbound::parts(delivery, out) {
            Ok(parts) => parts,
            Err(err) => return Outcome::permanent(err.to_string()),
        };
        if !delivery.has_account(&out.account) {
            return Outcome::permanent(outbound::unknown_account(out));
        }
        let total = parts.len();
        let mut already_sent = 0;
        let mut undelivered = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            if self.out_of_time(deadline) {
                let reason = format!("not enough time left to send part {} of {total}", index + 1);
                return Outcome::Later { reason, delay_s: HAND_BACK_S };
            }
            let key = sent_key(out.channel, &out.account, &part_key(&out.idempotency_key, index, total));
            // Uploads first (safe to repeat; the id is cached), so the claim covers only the send.
            let attached = {
                // One file in memory at a time per process (a 20 MB file is held as its bytes,
                // its upload body and, for iLink, its ciphertext); the rest of a batch waits.
                let _one_file = match part.media() {
                    Some(_) => FILE_PARTS.acquire().await.ok(),
                    None => None,
                };
                self.attach(delivery, out, part).await
            };
            let attached = match attached {
                Ok(attached) => attached,
                // A file gone (or a link expired) after the part was sent: it was sent.
                Err(failure) => match self.sent_before(&key).await {
                    Some(true) => {
                        already_sent += 1;
                        continue;
                    }
                    _ => return failed(failure, index, total),
                },
            };
            if part.media().is_some() && self.out_of_time(deadline) {
                let reason = format!("the file of part {} took the time left", index + 1);
                return Outcome::Later { reason, delay_s: HAND_BACK_S };
            }
            let now = self.clock.now();
            let (token, taken_over) = match self.sent.claim(&key, now, SEND_LEASE).await {
                Err(err) => return store_unavailable(err),
                Ok(Claim::Published) => {
                    already_sent += 1;
                    continue;
                }
                Ok(Claim::InFlight { until_ms }) => {
                    // Its holder may be sending, or may have died: come back just after its lease.
                    let left_ms = until_ms.saturating_sub(crate::core::ports::unix_millis(now));
                    let delay_s = u32::try_from(left_ms.div_ceil(1000)).unwrap_or(u32::MAX).saturating_add(1);
                    let reason = "another sender holds this part's claim".to_owned();
                    return Outcome::Later { reason, delay_s };
                }
                Ok(Claim::Claimed { token, taken_over }) => (token, taken_over),
            };
            if taken_over {
                // An earlier sender claimed this part and never recorded it: it may have sent it
                // before it died. Where the platform drops a repeat, the retry asks it to; else
                // the part goes again (at least once), counted.
                let deduped = delivery.drops_repeats();
                let outcome = if deduped { "resent_deduped" } else { "resent_unknown" };
                tracing::warn!(
                    channel = out.channel.as_str(),
                    outcome,
                    "a part whose earlier send has an unknown outcome is sent again"
                );
                self.metrics.record(&SendMetric { channel: out.channel.as_str(), outcome, errcode: None });
            }
            let retry = receive_count > 1 || taken_over;
            let delivered = delivery.deliver(out, &attached.part, &key, retry).await;
            if let (Err(failure), Some((scope, id)), true) = (&delivered, &attached.cached, attached.from_cache) {
                if delivery.refuses_media_id(failure) {
                    // The cached id ran out before its time: forget it and come back at once, to
                    // upload again before claiming (an upload inside the claim could outlast it).
                    tracing::info!(channel = out.channel.as_str(), "a cached media id was refused; uploading again");
                    if let Some(files) = &self.files {
                        if let Err(err) = files.ids.forget(scope, id).await {
                            tracing::warn!(error = %err, "could not forget the refused media id");
                        }
                    }
                    if let Err(err) = self.sent.release(&key, &token).await {
                        tracing::warn!(error = %err, "could not release the send claim; it expires with its lease");
                    }
                    let reason = "a cached media id expired early; uploading again".to_owned();
                    return Outcome::Retry { reason, errcode: failure.errcode, min_backoff_s: 0 };
                }
            }
            match delivered {
                Ok(delivered) => {
                    let (what, then) = match delivered {
                        Delivered::Sent { undelivered: missed } => {
                            undelivered.extend(missed);
                            ("sent", "; later parts wait")
                        }
                        Delivered::Parked { errcode } => {
                            let channel = out.channel.as_str();
                            self.metrics.record(&SendMetric { channel, outcome: "parked", errcode: Some(errcode) });
                            ("parked", "")
                        }
                    };
                    if !self.complete_with_retries(&key, &token).await {
                        // Sent but not recorded: stop here. The claim stays pending; the retry
                        // after its lease takes it over and sends the part again, with the
                        // platform's repeat check where it has one (see `taken_over` above).
                        let reason = format!("{what} a part but could not record it{then}");
                        return Outcome::Retry { reason, errcode: None, min_backoff_s: SEND_LEASE.as_secs() as u32 };
                    }
                }
                Err(failure) => {
                    if let Err(err) = self.sent.release(&key, &token).await {
                        tracing::warn!(error = %err, "could not release the send claim; it expires with its lease");
                    }
                    return failed(failure, index, total);
                }
            }
        }
        if !undelivered.is_empty() {
            // Sent (and recorded, so never resent), but not to everyone: the operator should know.
            let reason = format!("WeCom did not deliver to {}", undelivered.join("; "));
            return Outcome::Permanent { reason, errcode: None, errmsg: "partial delivery".to_owned() };
        }
        Outcome::Sent { parts: total, already_sent }
    }

    /// `part` ready to send: a file it names loaded and uploaded (or inlined), with the media id
    /// cached per channel, owner (corp, robot key), type, SHA-256 and file name.
    async fn attach(&self, delivery: &dyn Delivery, out: &Outbound, part: &Content) -> Result<Attached, Failure> {
        let Some((media_type, source)) = part.media() else {
            return Ok(Attached { part: part.clone(), cached: None, from_cache: false });
        };
        let cap = delivery.media_cap(media_type).ok_or_else(|| {
            Failure::permanent(format!("{} cannot send {} files", out.channel.as_str(), media_type.as_str()))
        })?;
        let files = self
            .files
            .as_ref()
            .ok_or_else(|| Failure::permanent("this sender has no media store: files cannot be sent"))?;
        let file = files.load(source, media_type, cap).await?;
        if let Some(why) = delivery.refuse_file(&file) {
            return Err(Failure::permanent(why));
        }
        if delivery.inline_media(media_type) {
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD.encode(&file.bytes);
            return Ok(Attached { part: part.with_base64(data), cached: None, from_cache: false });
        }
        let owner = delivery.media_scope(out);
        let name = delivery.shows_file_name(media_type).then_some(file.file_name.as_str());
        let scope = outbound::media_id_scope(out.channel, &owner, media_type, &file.sha256, name);
        let now = self.clock.now();
        match files.ids.get(&scope, now).await {
            Ok(Some(id)) => {
                return Ok(Attached { part: part.with_media_id(&id), cached: Some((scope, id)), from_cache: true })
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the media id cache; uploading"),
        }
        let id = delivery.upload(out, &file).await?;
        if let Err(err) = files.ids.put(&scope, &id, now + delivery.media_id_ttl()).await {
            tracing::warn!(error = %err, "uploaded, but could not cache the media id");
        }
        Ok(Attached { part: part.with_media_id(&id), cached: Some((scope, id)), from_cache: false })
    }

    /// Whether the part under `key` was sent by an earlier delivery (`None`: unknown). A claim
    /// taken to look is given back.
    async fn sent_before(&self, key: &str) -> Option<bool> {
        match self.sent.claim(key, self.clock.now(), SEND_LEASE).await.ok()? {
            Claim::Published => Some(true),
            Claim::InFlight { .. } => None,
            Claim::Claimed { token, .. } => {
                if let Err(err) = self.sent.release(key, &token).await {
                    tracing::warn!(error = %err, "could not release a claim taken to look; it expires with its lease");
                }
                Some(false)
            }
        }
    }

    /// Records a sent part, trying a few times: a lost record could mean a second send.
    async fn complete_with_retries(&self, key: &str, token: &str) -> bool {
        for attempt in 0..3u64 {
            match self.sent.complete(key, token, self.clock.now()).await {
                Ok(()) => return true,
                Err(err) => {
                    tracing::error!(error = %err, attempt, "sent but could not record it");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        false
    }
}

/// The outcome of a part that failed.
fn failed(failure: Failure, index: usize, total: usize) -> Outcome {
    match failure.verdict {
        Verdict::Permanent => Outcome::Permanent {
            reason: format!("part {} of {total}: {}", index + 1, failure.message),
            errcode: failure.errcode,
            errmsg: failure.message,
        },
        Verdict::Transient { min_backoff_s } => {
            Outcome::Retry { reason: failure.message, errcode: failure.errcode, min_backoff_s }
        }
        // A second token rejection right after a refresh: retry later.
        Verdict::RefreshToken => Outcome::Retry { reason: failure.message, errcode: failure.errcode, min_backoff_s: 0 },
    }
}

/// Who a queued message goes to, for ordering; unreadable bodies each get their own group.
fn recipient_of(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => format!(
            "{}|{}|{}",
            v["channel"].as_str().unwrap_or("?"),
            v["account"].as_str().unwrap_or("?"),
            v["to"].as_str().unwrap_or("")
        ),
        Err(_) => format!("unreadable|{}", short_hash(body)),
    }
}

fn store_unavailable(err: PortError) -> Outcome {
    Outcome::Retry { reason: err.to_string(), errcode: None, min_backoff_s: 0 }
}
