//! The media step between the callbacks and the dispatcher: each `Inbound` with media to fetch
//! comes through the media queue; its files are downloaded once (by the channel's
//! `MediaSource`), stored under their content key, and the `Inbound` goes on to the inbound
//! queue with `key`, `sha256`, `size`, `mime` and a time-limited `url`, or a `media.error`.
//!
//! This step runs apart from the dispatcher so that slow bots never delay a fetch: an AI bot's
//! media URL works five minutes. The media queue is FIFO with a group per message (its
//! deduplication drops WeChat's retries; no fetch waits for another); the resolved `Inbound`
//! goes on in its conversation's group with the same deduplication id, so a second run of the
//! step within five minutes queues no second copy. A fetch that fails transiently comes back through the queue
//! after a backoff (short for AI bots); on the queue's last receive the message goes on with
//! `media.error.code = "unavailable"` rather than being lost, also when the invocation runs
//! out of time. Only an invocation that crashes on the last receive, or a failure to publish,
//! leaves the message to the media DLQ (redrive it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::channels::MediaSources;
use crate::core::callback::{dedup_id, inbound_message, FIFO_DEDUP, FIFO_GROUP};
use crate::core::envelope::{Inbound, Media, MediaFailure, MediaType};
use crate::core::media::{content_key, sniff, FetchError, Spool};
use crate::core::ports::{Clock, MediaStore, PortError, Publisher, Record, Redeliver};

/// What the media step may take and give.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// The largest file fetched (decrypted bytes); larger ones give `too_large`.
    pub max_bytes: u64,
    /// How long a bot's `url` works.
    pub link_ttl: Duration,
    /// Where downloads are spooled (Lambda: `/tmp`).
    pub spool_dir: PathBuf,
}

/// The largest file by default: the AI bot's and iLink's 100 MB.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// A bot's link works this long by default (on AWS, at most as long as the function's
/// credentials: presigned links die with the session that signed them).
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(6 * 3600);

impl Default for MediaSettings {
    fn default() -> Self {
        Self { max_bytes: DEFAULT_MAX_BYTES, link_ttl: DEFAULT_LINK_TTL, spool_dir: std::env::temp_dir() }
    }
}

/// Why a record must come again.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media fetch: {0}")]
    Fetch(String),
    #[error(transparent)]
    Store(PortError),
    #[error(transparent)]
    Queue(PortError),
}

/// The media step's dependencies.
pub struct MediaService {
    pub sources: Arc<MediaSources>,
    pub store: Arc<dyn MediaStore>,
    /// The inbound queue: where resolved messages go.
    pub inbound: Arc<dyn Publisher>,
    pub clock: Arc<dyn Clock>,
    pub settings: MediaSettings,
    /// The media queue's redelivery, for a short backoff (without it, the visibility timeout).
    pub requeue: Option<Arc<dyn Redeliver>>,
    /// Receives after which the queue moves a message to its DLQ on its own.
    pub max_receives: Option<u32>,
}

impl MediaService {
    /// Fetches and stores the media of `inbound` (and of its quote). `last_try`: a transient
    /// failure becomes `media.error` instead of an error.
    pub async fn resolve(&self, inbound: &mut Inbound, last_try: bool) -> Result<(), MediaError> {
        if let Some(media) = inbound.media.clone().filter(Media::needs_fetch) {
            let media_type = media.media_type.or(MediaType::of(inbound.kind));
            inbound.media = Some(self.resolve_one(inbound, media, media_type, last_try).await?);
        }
        if let Some(media) = inbound.quote.as_ref().and_then(|q| q.media.clone()).filter(Media::needs_fetch) {
            let media_type = media.media_type.or(inbound.quote.as_ref().and_then(|q| MediaType::of(q.kind)));
            let resolved = self.resolve_one(inbound, media, media_type, last_try).await?;
            if let Some(quote) = inbound.quote.as_mut() {
                quote.media = Some(resolved);
            }
        }
        Ok(())
    }

    async fn resolve_one(
        &self,
        inbound: &Inbound,
        mut media: Media,
        media_type: Option<MediaType>,
        last_try: bool,
    ) -> Result<Media, MediaError> {
        media.media_type = media_type;
        let outcome = self.fetch_and_store(inbound, &mut media).await;
        let failure = match outcome {
            Ok(()) => return Ok(media),
            Err(FetchError::Permanent { code, message }) => MediaFailure { code: code.to_owned(), message },
            Err(FetchError::Transient(message)) if last_try => {
                MediaFailure { code: "unavailable".to_owned(), message: format!("gave up: {message}") }
            }
            Err(FetchError::Transient(message)) => return Err(MediaError::Fetch(message)),
        };
        tracing::warn!(id = %inbound.id, code = %failure.code, reason = %failure.message, "media not fetched; the message goes on without it");
        media.url = None;
        media.error = Some(failure);
        Ok(media)
    }

    async fn fetch_and_store(&self, inbound: &Inbound, media: &mut Media) -> Result<(), FetchError> {
        let mut spool =
            Spool::new(&self.settings.spool_dir, self.settings.max_bytes).await.map_err(FetchError::from_spool)?;
        let fetched = self.sources.get(inbound.channel).fetch(inbound, media, &mut spool).await?;
        let done = spool.finish().await.map_err(FetchError::from_spool)?;
        let mime =
            sniff(&done.head).map(str::to_owned).or(fetched.mime).unwrap_or_else(|| "application/octet-stream".into());
        let key = content_key(&done.sha256);
        let store_err = |e: PortError| FetchError::Transient(e.to_string());
        // Content-addressed: bytes already stored (the same photo again, a redelivery) stay.
        if self.store.size(&key).await.map_err(store_err)? != Some(done.size) {
            self.store.put_file(&key, done.path.path(), &mime).await.map_err(store_err)?;
        }
        let file_name = fetched.file_name.or_else(|| media.file_name.clone());
        let now = self.clock.now();
        let url =
            self.store.link(&key, &mime, file_name.as_deref(), now, self.settings.link_ttl).await.map_err(store_err)?;
        media.url = Some(url);
        media.url_expires_at = Some(crate::core::ports::unix_millis(now + self.settings.link_ttl) / 1000);
        media.file_name = file_name;
        media.mime = Some(mime);
        media.size = Some(done.size);
        media.sha256 = Some(done.sha256);
        media.key = Some(key);
        media.transcript = fetched.transcript.or(media.transcript.take());
        Ok(())
    }

    /// Resolves one queue message and puts it on the inbound queue.
    pub async fn handle(&self, record: &Record) -> Result<(), MediaError> {
        let mut inbound: Inbound = match serde_json::from_str(&record.body) {
            Ok(inbound) => inbound,
            Err(err) => {
                // Nothing to fetch for a body that is no Inbound: the dispatcher dead-letters it
                // with the reason.
                let error = crate::core::config::redact_serde_message(&err.to_string());
                tracing::error!(message_id = %record.message_id, %error, "not an Inbound; passed on as it is");
                let attributes = vec![
                    (FIFO_GROUP, record.group.clone().unwrap_or_else(|| record.message_id.clone())),
                    (FIFO_DEDUP, dedup_id(&record.message_id)),
                ];
                let passed = crate::core::ports::QueueMessage { body: record.body.clone(), attributes };
                return self.inbound.publish(passed).await.map_err(MediaError::Queue);
            }
        };
        let last_try = self.max_receives.is_some_and(|max| record.receive_count >= max);
        self.resolve(&mut inbound, last_try).await?;
        self.inbound.publish(inbound_message(&inbound)).await.map_err(MediaError::Queue)
    }

    /// Handles a batch; returns the ids of the records that must come again.
    pub async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        self.handle_batch_until(records, None).await
    }

    /// [`Self::handle_batch`] inside an invocation that ends at `deadline`: each record's
    /// fetch stops [`PASS_ON_RESERVE`] before it, so that on the queue's last receive the
    /// message still goes on (with `media.error`) instead of dying with the invocation.
    pub async fn handle_batch_until(&self, records: &[Record], deadline: Option<SystemTime>) -> Vec<String> {
        let runs = records.iter().map(|record| async move {
            let outcome = match deadline.map(|d| d.duration_since(self.clock.now()).unwrap_or_default()) {
                Some(left) => match tokio::time::timeout(left.saturating_sub(PASS_ON_RESERVE), self.handle(record)).await {
                    Ok(outcome) => outcome,
                    Err(_) => self.out_of_time(record).await,
                },
                None => self.handle(record).await,
            };
            match outcome {
                Ok(()) => None,
                Err(err) => {
                    let delay_s = backoff_s(&record.body, record.receive_count);
                    tracing::warn!(message_id = %record.message_id, error = %err, delay_s, "media step failed; SQS retries it");
                    if let Some(requeue) = &self.requeue {
                        if let Err(err) = requeue.retry_later(&record.receipt_handle, delay_s).await {
                            tracing::warn!(error = %err, "could not set the retry's delay; it returns after the visibility timeout");
                        }
                    }
                    Some(record.message_id.clone())
                }
            }
        });
        futures_util::future::join_all(runs).await.into_iter().flatten().collect()
    }

    /// A fetch the invocation had no time to finish: on the last receive the message goes on
    /// with `media.error`; before, it comes again.
    async fn out_of_time(&self, record: &Record) -> Result<(), MediaError> {
        let last_try = self.max_receives.is_some_and(|max| record.receive_count >= max);
        let Ok(mut inbound) = serde_json::from_str::<Inbound>(&record.body) else {
            return Err(MediaError::Fetch("out of time".into()));
        };
        if !last_try {
            return Err(MediaError::Fetch("the fetch did not finish within the invocation".into()));
        }
        let failure =
            || MediaFailure { code: "unavailable".into(), message: "gave up: the fetch did not finish in time".into() };
        for media in
            [inbound.media.as_mut(), inbound.quote.as_mut().and_then(|q| q.media.as_mut())].into_iter().flatten()
        {
            if media.needs_fetch() {
                media.url = None;
                media.error = Some(failure());
            }
        }
        self.inbound.publish(inbound_message(&inbound)).await.map_err(MediaError::Queue)
    }
}

/// What the media step keeps of an invocation to pass a message on when its fetch runs out of
/// time.
pub const PASS_ON_RESERVE: Duration = Duration::from_secs(15);

/// Seconds before the next try of a failed fetch: an AI bot's URL works five minutes, so its
/// tries come quickly; WeCom and Official Account media ids work three days and iLink's CDN
/// longer than a few minutes, so theirs spread over about an hour and a half (outlasting a
/// short outage).
fn backoff_s(body: &str, receive_count: u32) -> u32 {
    const QUICK: [u32; 5] = [2, 5, 15, 30, 60];
    const PATIENT: [u32; 5] = [10, 60, 300, 900, 3600];
    let aibot = serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["channel"] == "wecom_aibot");
    let steps = if aibot { QUICK } else { PATIENT };
    steps[(receive_count.max(1) as usize - 1).min(steps.len() - 1)]
}
