//! In-process adapters of the ports, for `wxbridge dev` and tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::core::ports::{claim_token, unix_millis, Claim, Dedupe, PortError, Publisher, QueueMessage, DEDUPE_TTL};

/// A queue in memory: publishing sends to an unbounded channel whose receiver is the consumer.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    tx: mpsc::UnboundedSender<QueueMessage>,
    /// A FIFO queue's deduplication: when each deduplication id was last taken.
    seen: Option<std::sync::Arc<Mutex<HashMap<String, std::time::Instant>>>>,
}

impl MemoryQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<QueueMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, seen: None }, rx)
    }

    /// A FIFO queue's twin: a message whose deduplication id (`fifo_dedup`) was taken in the
    /// last five minutes is dropped, as SQS drops it. (The consumer keeps each group's order.)
    pub fn fifo() -> (Self, mpsc::UnboundedReceiver<QueueMessage>) {
        let (queue, rx) = Self::new();
        (Self { seen: Some(std::sync::Arc::default()), ..queue }, rx)
    }
}

#[async_trait]
impl Publisher for MemoryQueue {
    async fn publish(&self, message: QueueMessage) -> Result<(), PortError> {
        use crate::core::callback::{attribute, FIFO_DEDUP, FIFO_DEDUP_WINDOW};
        if let (Some(seen), Some(dedup)) = (&self.seen, attribute(&message, FIFO_DEDUP)) {
            let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = std::time::Instant::now();
            seen.retain(|_, at| now.duration_since(*at) < FIFO_DEDUP_WINDOW);
            if seen.contains_key(dedup) {
                return Ok(());
            }
            let dedup = dedup.to_owned();
            self.tx.send(message).map_err(|_| PortError::new("memory queue", "no consumer"))?;
            seen.insert(dedup, now);
            return Ok(());
        }
        self.tx.send(message).map_err(|_| PortError::new("memory queue", "no consumer"))
    }
}

/// Runs the consumer of a FIFO queue's twin as SQS hands messages out: one at a time and in
/// order within a message group, groups in parallel.
#[derive(Debug, Default)]
pub struct GroupedTasks {
    /// Each group's latest task; the next one of the group waits for it.
    latest: HashMap<String, tokio::task::JoinHandle<()>>,
}

impl GroupedTasks {
    /// Starts `task` once the group's earlier tasks have ended.
    pub fn spawn(&mut self, group: &str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.latest.retain(|_, task| !task.is_finished());
        let before = self.latest.remove(group);
        let next = tokio::spawn(async move {
            if let Some(before) = before {
                // One that panicked ends its turn all the same.
                let _ = before.await;
            }
            task.await;
        });
        self.latest.insert(group.to_owned(), next);
    }
}

#[derive(Debug, Clone)]
enum Marker {
    Pending { token: String, lease_until_ms: u64 },
    Done { expires_ms: u64 },
}

/// Dedupe markers in a map, with the same claim / complete / release rules as DynamoDB.
#[derive(Debug)]
pub struct MemoryDedupe {
    markers: Mutex<HashMap<String, Marker>>,
    ttl: Duration,
}

impl Default for MemoryDedupe {
    fn default() -> Self {
        Self { markers: Mutex::new(HashMap::new()), ttl: DEDUPE_TTL }
    }
}

impl MemoryDedupe {
    /// Markers kept for `ttl` once completed.
    pub fn keeping(ttl: Duration) -> Self {
        Self { ttl, ..Self::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Marker>> {
        // A panic while holding the lock cannot leave a marker half-written: keep going.
        self.markers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Dedupe for MemoryDedupe {
    async fn claim(&self, key: &str, now: SystemTime, lease: Duration) -> Result<Claim, PortError> {
        let now_ms = unix_millis(now);
        let mut markers = self.lock();
        let taken_over = match markers.get(key) {
            Some(Marker::Done { expires_ms }) if *expires_ms > now_ms => return Ok(Claim::Published),
            Some(Marker::Pending { lease_until_ms, .. }) if *lease_until_ms > now_ms => {
                return Ok(Claim::InFlight { until_ms: *lease_until_ms })
            }
            Some(Marker::Pending { .. }) => true,
            _ => false,
        };
        let token = claim_token();
        markers.insert(
            key.to_owned(),
            Marker::Pending { token: token.clone(), lease_until_ms: now_ms + lease.as_millis() as u64 },
        );
        Ok(Claim::Claimed { token, taken_over })
    }

    async fn complete(&self, key: &str, token: &str, now: SystemTime) -> Result<(), PortError> {
        let mut markers = self.lock();
        if matches!(markers.get(key), Some(Marker::Pending { token: t, .. }) if t == token) {
            markers.insert(key.to_owned(), Marker::Done { expires_ms: unix_millis(now) + self.ttl.as_millis() as u64 });
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), PortError> {
        let mut markers = self.lock();
        if matches!(markers.get(key), Some(Marker::Pending { token: t, .. }) if t == token) {
            markers.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(6);

    fn message(group: &str, dedup: &str) -> QueueMessage {
        use crate::core::callback::{FIFO_DEDUP, FIFO_GROUP};
        QueueMessage {
            body: dedup.to_owned(),
            attributes: vec![(FIFO_GROUP, group.into()), (FIFO_DEDUP, dedup.into())],
        }
    }

    #[tokio::test]
    async fn the_fifo_twin_drops_a_deduplication_id_it_took_and_the_plain_queue_does_not() {
        let (fifo, mut taken) = MemoryQueue::fifo();
        for dedup in ["a", "b", "a", "a"] {
            fifo.publish(message("g", dedup)).await.unwrap();
        }
        assert_eq!([taken.try_recv().unwrap().body, taken.try_recv().unwrap().body], ["a", "b"]);
        assert!(taken.try_recv().is_err());
        let (plain, mut all) = MemoryQueue::new();
        for _ in 0..2 {
            plain.publish(message("g", "a")).await.unwrap();
        }
        assert!(all.try_recv().is_ok() && all.try_recv().is_ok());
    }

    #[tokio::test]
    async fn grouped_tasks_run_one_at_a_time_in_order_per_group_and_groups_in_parallel() {
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = GroupedTasks::default();
        let step = |name: &'static str, ms: u64| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!("{name} start"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                log.lock().unwrap().push(format!("{name} end"));
            }
        };
        for (group, name) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1"), ("alice", "a3")] {
            tasks.spawn(group, step(name, 100));
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let log = log.lock().unwrap().clone();
        let at = |line: &str| log.iter().position(|l| l == line).unwrap();
        assert!(at("a1 end") < at("a2 start") && at("a2 end") < at("a3 start"), "{log:?}");
        assert!(at("b1 start") < at("a1 end"), "bob is not held up by alice: {log:?}");
    }

    #[tokio::test]
    async fn claim_complete_then_duplicate() {
        let d = MemoryDedupe::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let Claim::Claimed { token, taken_over: false } = d.claim("k", t0, LEASE).await.unwrap() else { panic!() };
        let until_ms = unix_millis(t0 + LEASE);
        assert_eq!(d.claim("k", t0, LEASE).await.unwrap(), Claim::InFlight { until_ms });
        d.complete("k", &token, t0).await.unwrap();
        assert_eq!(d.claim("k", t0 + Duration::from_secs(3600), LEASE).await.unwrap(), Claim::Published);
    }

    #[tokio::test]
    async fn released_or_expired_claims_can_be_taken_again() {
        let d = MemoryDedupe::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let Claim::Claimed { token, .. } = d.claim("k", t0, LEASE).await.unwrap() else { panic!() };
        d.release("k", &token).await.unwrap();
        let Claim::Claimed { token: second, .. } = d.claim("k", t0, LEASE).await.unwrap() else { panic!() };
        // The first holder's token no longer completes anything.
        d.complete("k", &token, t0).await.unwrap();
        assert!(matches!(
            d.claim("k", t0 + LEASE + Duration::from_millis(1), LEASE).await.unwrap(),
            Claim::Claimed { .. }
        ));
        d.complete("k", &second, t0).await.unwrap();
    }
}

/// The outbound queue's side actions, remembered for `wxbridge dev` and tests.
#[derive(Debug, Default)]
pub struct MemoryOutbound {
    pub retries: Mutex<Vec<(String, u32)>>,
    pub requeued: Mutex<Vec<(String, u32)>>,
    pub dead_letters: Mutex<Vec<(String, Vec<(&'static str, String)>)>>,
}

#[async_trait]
impl crate::core::ports::Redeliver for MemoryOutbound {
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner()).push((receipt_handle.to_owned(), delay_s));
        Ok(())
    }
}

#[async_trait]
impl crate::core::ports::OutboundQueue for MemoryOutbound {
    async fn dead_letter(&self, body: &str, attributes: &[(&'static str, String)]) -> Result<(), PortError> {
        self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).push((body.to_owned(), attributes.to_vec()));
        Ok(())
    }

    async fn requeue(&self, body: &str, delay_s: u32) -> Result<(), PortError> {
        self.requeued.lock().unwrap_or_else(|p| p.into_inner()).push((body.to_owned(), delay_s));
        Ok(())
    }
}

/// iLink context tokens in a map.
#[derive(Debug, Default)]
pub struct MemoryContextTokens {
    tokens: Mutex<HashMap<(String, String), (String, u64)>>,
}

#[async_trait]
impl crate::core::ports::ContextTokens for MemoryContextTokens {
    async fn latest(&self, account: &str, user: &str) -> Result<Option<String>, PortError> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        Ok(tokens.get(&(account.to_owned(), user.to_owned())).map(|(t, _)| t.clone()))
    }

    async fn store(&self, account: &str, user: &str, token: &str, issued_ms: u64) -> Result<(), PortError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let slot = tokens.entry((account.to_owned(), user.to_owned())).or_insert_with(|| (token.to_owned(), issued_ms));
        if slot.1 <= issued_ms {
            *slot = (token.to_owned(), issued_ms);
        }
        Ok(())
    }
}

/// Metrics kept in a list.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    pub recorded: Mutex<Vec<crate::core::ports::SendMetric>>,
    /// Counts by name, each with its properties.
    pub counted: Mutex<Vec<Counted>>,
}

/// A count's name and properties.
pub type Counted = (&'static str, Vec<(String, String)>);

impl MemoryMetrics {
    /// The properties of each count of `name`.
    pub fn counts(&self, name: &str) -> Vec<Vec<(String, String)>> {
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        counted.iter().filter(|(n, _)| *n == name).map(|(_, p)| p.clone()).collect()
    }
}

impl crate::core::ports::Metrics for MemoryMetrics {
    fn record(&self, metric: &crate::core::ports::SendMetric) {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).push(metric.clone());
    }

    fn count(&self, name: &'static str, properties: &[(&str, &str)]) {
        let properties = properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.counted.lock().unwrap_or_else(|p| p.into_inner()).push((name, properties));
    }
}

/// Reply slots in a map, with the same conditional rules as DynamoDB.
#[derive(Debug, Default)]
pub struct MemoryReplySlots {
    slots: Mutex<HashMap<String, crate::core::ports::Slot>>,
}

impl MemoryReplySlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, crate::core::ports::Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl crate::core::ports::ReplySlots for MemoryReplySlots {
    async fn arrive(
        &self,
        key: &str,
        _now: SystemTime,
        deadline: SystemTime,
    ) -> Result<crate::core::ports::Slot, PortError> {
        let mut slots = self.lock();
        let slot = slots.entry(key.to_owned()).or_insert(crate::core::ports::Slot {
            state: crate::core::ports::SlotState::Open,
            deliveries: 0,
            reply: None,
            filled_by: None,
            taken: false,
            deadline_ms: unix_millis(deadline),
        });
        slot.deliveries += 1;
        Ok(slot.clone())
    }

    async fn read(&self, key: &str) -> Result<Option<crate::core::ports::Slot>, PortError> {
        Ok(self.lock().get(key).cloned())
    }
    async fn fill(&self, key: &str, reply: &str, by: &str, now: SystemTime) -> Result<bool, PortError> {
        let mut slots = self.lock();
        match slots.get_mut(key) {
            Some(slot) if slot.state == crate::core::ports::SlotState::Open && slot.deadline_ms > unix_millis(now) => {
                slot.state = crate::core::ports::SlotState::Filled;
                slot.reply = Some(reply.to_owned());
                slot.filled_by = Some(by.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn close(&self, key: &str) -> Result<bool, PortError> {
        let mut slots = self.lock();
        match slots.get_mut(key) {
            Some(slot) if slot.state == crate::core::ports::SlotState::Open => {
                slot.state = crate::core::ports::SlotState::Closed;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn take(&self, key: &str) -> Result<bool, PortError> {
        let mut slots = self.lock();
        match slots.get_mut(key) {
            Some(slot) if slot.state == crate::core::ports::SlotState::Filled => {
                slot.taken = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn revoke(&self, key: &str) -> Result<bool, PortError> {
        let mut slots = self.lock();
        match slots.get_mut(key) {
            Some(slot) if slot.state == crate::core::ports::SlotState::Filled && !slot.taken => {
                slot.state = crate::core::ports::SlotState::Closed;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Parked replies in a map.
#[derive(Debug, Default)]
pub struct MemoryParkedReplies {
    parked: Mutex<HashMap<(String, String), Vec<String>>>,
}

#[async_trait]
impl crate::core::ports::ParkedReplies for MemoryParkedReplies {
    async fn park(&self, account: &str, user: &str, reply: &str, _now: SystemTime) -> Result<(), PortError> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.entry((account.to_owned(), user.to_owned())).or_default().push(reply.to_owned());
        Ok(())
    }

    async fn oldest(&self, account: &str, user: &str) -> Result<Option<String>, PortError> {
        let parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        Ok(parked.get(&(account.to_owned(), user.to_owned())).and_then(|list| list.first().cloned()))
    }

    async fn remove_oldest(&self, account: &str, user: &str, reply: &str) -> Result<(), PortError> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = parked.get_mut(&(account.to_owned(), user.to_owned())) {
            if list.first().map(String::as_str) == Some(reply) {
                list.remove(0);
            }
        }
        Ok(())
    }
}

/// Leases in a map.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    leases: Mutex<HashMap<String, (String, u64)>>,
}

#[async_trait]
impl crate::core::ports::Leases for MemoryLeases {
    async fn acquire(&self, key: &str, owner: &str, now: SystemTime, ttl: Duration) -> Result<bool, PortError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let now_ms = unix_millis(now);
        match leases.get(key) {
            Some((holder, until)) if holder != owner && *until > now_ms => Ok(false),
            _ => {
                leases.insert(key.to_owned(), (owner.to_owned(), now_ms + ttl.as_millis() as u64));
                Ok(true)
            }
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), PortError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.get(key).is_some_and(|(holder, _)| holder == owner) {
            leases.remove(key);
        }
        Ok(())
    }
}

/// 微信客服 reply windows in a map, with the DynamoDB adapter's rules.
#[derive(Debug, Default)]
pub struct MemoryCustomerWindows {
    windows: Mutex<HashMap<String, Window>>,
    /// Per `key:msgid`: (the part sent, the failure type WeChat reported).
    sends: Mutex<HashMap<String, SendRecord>>,
    sessions: Mutex<HashMap<String, Session>>,
}

type SendRecord = (Option<String>, Option<i64>);
/// (state, servicer, at).
type Session = (i64, Option<String>, u64);

/// A customer's last message (time, msgid) and the parts counted since.
type Window = (u64, String, std::collections::HashSet<String>);

#[async_trait]
impl crate::core::ports::CustomerWindows for MemoryCustomerWindows {
    async fn customer_wrote(&self, key: &str, msgid: &str, at: u64) -> Result<(), PortError> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.get(key).is_none_or(|(last, last_msgid, _)| *last < at || (*last == at && last_msgid != msgid)) {
            windows.insert(key.to_owned(), (at, msgid.to_owned(), Default::default()));
        }
        Ok(())
    }

    async fn count(
        &self,
        key: &str,
        part: &str,
        now: u64,
        window_s: u64,
        most: u32,
    ) -> Result<crate::core::ports::WindowVerdict, PortError> {
        use crate::core::ports::WindowVerdict;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Some((last, _, parts)) = windows.get_mut(key) else { return Ok(WindowVerdict::Closed) };
        if *last < now.saturating_sub(window_s) {
            return Ok(WindowVerdict::Closed);
        }
        if !parts.contains(part) && parts.len() >= most as usize {
            return Ok(WindowVerdict::Spent);
        }
        parts.insert(part.to_owned());
        Ok(WindowVerdict::Counted)
    }

    async fn uncount(&self, key: &str, part: &str) -> Result<(), PortError> {
        if let Some((_, _, parts)) = self.windows.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key) {
            parts.remove(part);
        }
        Ok(())
    }

    async fn sent(&self, key: &str, msgid: &str, part: &str, _at: u64) -> Result<(), PortError> {
        let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
        sends.entry(format!("{key}:{msgid}")).or_default().0 = Some(part.to_owned());
        Ok(())
    }

    async fn send_failed(&self, key: &str, msgid: &str, fail_type: i64, _at: u64) -> Result<Option<String>, PortError> {
        let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
        let record = sends.entry(format!("{key}:{msgid}")).or_default();
        record.1 = Some(fail_type);
        Ok(record.0.clone())
    }

    async fn session(&self, key: &str, state: i64, servicer: Option<&str>, at: u64) -> Result<(), PortError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.get(key).is_none_or(|(_, _, last)| *last <= at) {
            sessions.insert(key.to_owned(), (state, servicer.map(str::to_owned), at));
        }
        Ok(())
    }

    async fn last_session(&self, key: &str) -> Result<Option<(i64, Option<String>, u64)>, PortError> {
        Ok(self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned())
    }
}

/// Versioned cursors in a map, with the DynamoDB adapter's condition.
#[derive(Debug, Default)]
pub struct MemoryCursors {
    cursors: Mutex<HashMap<String, (String, u64)>>,
}

#[async_trait]
impl crate::core::ports::Cursors for MemoryCursors {
    async fn load(&self, key: &str) -> Result<Option<(String, u64)>, PortError> {
        Ok(self.cursors.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned())
    }

    async fn save(&self, key: &str, cursor: &str, previous: Option<u64>) -> Result<bool, PortError> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        if cursors.get(key).map(|(_, v)| *v) != previous {
            return Ok(false);
        }
        cursors.insert(key.to_owned(), (cursor.to_owned(), previous.map_or(1, |v| v + 1)));
        Ok(true)
    }
}

/// iLink poll state in a map.
#[derive(Debug, Default)]
pub struct MemoryPollState {
    cursors: Mutex<HashMap<String, String>>,
    paused: Mutex<HashMap<String, crate::core::ports::Paused>>,
}

#[async_trait]
impl crate::core::ports::PollState for MemoryPollState {
    async fn cursor(&self, account: &str) -> Result<Option<String>, PortError> {
        Ok(self.cursors.lock().unwrap_or_else(|p| p.into_inner()).get(account).cloned())
    }

    async fn save_cursor(&self, account: &str, cursor: &str) -> Result<(), PortError> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).insert(account.to_owned(), cursor.to_owned());
        Ok(())
    }

    async fn paused(&self, account: &str) -> Result<Option<crate::core::ports::Paused>, PortError> {
        Ok(self.paused.lock().unwrap_or_else(|p| p.into_inner()).get(account).cloned())
    }

    async fn pause(&self, account: &str, token: &str, at: SystemTime) -> Result<(), PortError> {
        let paused = crate::core::ports::Paused { at: unix_millis(at) / 1000, token: token.to_owned() };
        self.paused.lock().unwrap_or_else(|p| p.into_inner()).insert(account.to_owned(), paused);
        Ok(())
    }

    async fn resume(&self, account: &str) -> Result<(), PortError> {
        self.paused.lock().unwrap_or_else(|p| p.into_inner()).remove(account);
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).remove(account);
        Ok(())
    }
}

/// Tokens in a map, with the store's rules.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    items: Mutex<HashMap<String, (Option<crate::core::tokens::StoredToken>, Option<(String, u64)>)>>,
}

#[async_trait]
impl crate::core::tokens::TokenStore for MemoryTokenStore {
    async fn load(&self, key: &str) -> Result<Option<crate::core::tokens::StoredToken>, PortError> {
        Ok(self.items.lock().unwrap_or_else(|p| p.into_inner()).get(key).and_then(|(t, _)| t.clone()))
    }

    async fn lease(&self, key: &str, owner: &str, now_ms: u64, lease: Duration) -> Result<bool, PortError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let entry = items.entry(key.to_owned()).or_default();
        if entry.0.as_ref().is_some_and(|t| t.valid_until_ms > now_ms) {
            return Ok(false);
        }
        match &entry.1 {
            Some((_, until)) if *until > now_ms => Ok(false),
            _ => {
                entry.1 = Some((owner.to_owned(), now_ms + lease.as_millis() as u64));
                Ok(true)
            }
        }
    }

    async fn save(&self, key: &str, owner: &str, token: &crate::core::tokens::StoredToken) -> Result<(), PortError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let entry = items.entry(key.to_owned()).or_default();
        entry.0 = Some(token.clone());
        if entry.1.as_ref().is_some_and(|(o, _)| o == owner) {
            entry.1 = None;
        }
        Ok(())
    }

    async fn abandon(&self, key: &str, owner: &str) -> Result<(), PortError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = items.get_mut(key) {
            if entry.1.as_ref().is_some_and(|(o, _)| o == owner) {
                entry.1 = None;
            }
        }
        Ok(())
    }

    async fn invalidate(&self, key: &str, stale: &str) -> Result<(), PortError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = items.get_mut(key) {
            if entry.0.as_ref().is_some_and(|t| secrecy::ExposeSecret::expose_secret(&t.value) == stale) {
                entry.0 = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod token_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::{ExposeSecret, SecretString};

    use super::MemoryTokenStore;
    use crate::core::http::{ApiError, IssuedToken};
    use crate::core::ports::SystemClock;
    use crate::core::tokens::{TokenError, TokenStore, Tokens};

    fn issued(value: &str) -> IssuedToken {
        IssuedToken { value: SecretString::from(value.to_owned()), expires_in: 7200 }
    }

    #[tokio::test]
    async fn many_processes_on_one_store_cause_one_token_call() {
        let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let tokens = Tokens::new(store.clone(), Arc::new(SystemClock));
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                let fetch = || {
                    let calls = calls.clone();
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(issued("T1"))
                    }
                };
                tokens.get("wecom:ww1:hr", fetch).await.unwrap().expose_secret().to_owned()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "T1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidation_only_removes_the_token_that_was_used() {
        let store = Arc::new(MemoryTokenStore::default());
        let tokens = Tokens::new(store.clone(), Arc::new(SystemClock));
        let first = tokens.get("k", || async { Ok(issued("T1")) }).await.unwrap();
        // Someone else already replaced it: a late invalidation of T0 keeps T1.
        tokens.invalidate("k", &SecretString::from("T0".to_owned())).await.unwrap();
        assert_eq!(store.load("k").await.unwrap().unwrap().value.expose_secret(), "T1");
        tokens.invalidate("k", &first).await.unwrap();
        assert!(store.load("k").await.unwrap().is_none());
        let second = tokens.get("k", || async { Ok(issued("T2")) }).await.unwrap();
        assert_eq!(second.expose_secret(), "T2");
    }

    #[tokio::test]
    async fn a_failed_token_call_is_an_error_not_a_cached_token() {
        let tokens = Tokens::new(Arc::new(MemoryTokenStore::default()), Arc::new(SystemClock));
        let err = tokens
            .get("k", || async { Err(ApiError::Errcode { code: 40001, message: "invalid credential".into() }) })
            .await;
        assert!(matches!(err, Err(TokenError::Fetch(ApiError::Errcode { code: 40001, .. }))));
    }
}

#[derive(Debug, Clone)]
struct MemoryStream {
    stream: crate::core::ports::Stream,
    url: Option<String>,
    url_expires_ms: u64,
}

/// AI-bot answer streams in a map, with the DynamoDB adapter's conditions.
#[derive(Debug, Default)]
pub struct MemoryStreams {
    streams: Mutex<HashMap<String, MemoryStream>>,
}

impl MemoryStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemoryStream>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl crate::core::ports::Streams for MemoryStreams {
    async fn open(
        &self,
        key: &str,
        opened: SystemTime,
        response_url: Option<&str>,
        url_expires: SystemTime,
    ) -> Result<bool, PortError> {
        use crate::core::ports::{Stream, UrlState};
        let mut streams = self.lock();
        if streams.contains_key(key) {
            return Ok(false);
        }
        streams.insert(
            key.to_owned(),
            MemoryStream {
                stream: Stream {
                    content: String::new(),
                    finished: false,
                    handed_over: false,
                    version: 0,
                    opened_ms: unix_millis(opened),
                    url: if response_url.is_some() { UrlState::Unused } else { UrlState::None },
                    answer: None,
                    images: Vec::new(),
                },
                url: response_url.map(str::to_owned),
                url_expires_ms: unix_millis(url_expires),
            },
        );
        Ok(true)
    }

    async fn read(&self, key: &str) -> Result<Option<crate::core::ports::Stream>, PortError> {
        Ok(self.lock().get(key).map(|s| s.stream.clone()))
    }

    async fn write(&self, key: &str, content: &str, version: u64, finish: bool) -> Result<bool, PortError> {
        let mut streams = self.lock();
        let Some(item) = streams.get_mut(key) else { return Ok(false) };
        if item.stream.finished || item.stream.version >= version {
            return Ok(false);
        }
        item.stream.content = content.to_owned();
        item.stream.version = version;
        item.stream.finished = finish;
        Ok(true)
    }

    async fn finish(
        &self,
        key: &str,
        content: &str,
        version: u64,
        rest: &str,
        images: &[String],
    ) -> Result<bool, PortError> {
        let mut streams = self.lock();
        let Some(item) = streams.get_mut(key) else { return Ok(false) };
        if item.stream.finished || item.stream.version >= version || item.stream.answer.is_some() {
            return Ok(false);
        }
        item.stream.images = images.to_vec();
        item.stream.content = content.to_owned();
        item.stream.version = version;
        item.stream.finished = true;
        item.stream.answer = Some(rest.to_owned());
        Ok(true)
    }

    async fn record_answer(&self, key: &str, rest: &str) -> Result<bool, PortError> {
        let mut streams = self.lock();
        let Some(item) = streams.get_mut(key) else { return Ok(false) };
        if !item.stream.finished || item.stream.answer.is_some() {
            return Ok(false);
        }
        item.stream.answer = Some(rest.to_owned());
        Ok(true)
    }

    async fn hand_over(&self, key: &str, content: &str) -> Result<bool, PortError> {
        let mut streams = self.lock();
        let Some(item) = streams.get_mut(key) else { return Ok(false) };
        if item.stream.finished {
            return Ok(false);
        }
        item.stream.content = content.to_owned();
        item.stream.finished = true;
        item.stream.handed_over = true;
        Ok(true)
    }

    async fn claim_url(&self, key: &str, now: SystemTime) -> Result<crate::core::ports::UrlClaim, PortError> {
        use crate::core::ports::{UrlClaim, UrlState};
        let mut streams = self.lock();
        let Some(item) = streams.get_mut(key) else { return Ok(UrlClaim::Missing) };
        Ok(match (item.stream.url, &item.url) {
            (UrlState::Unused, Some(url)) if unix_millis(now) < item.url_expires_ms => {
                item.stream.url = UrlState::Claimed;
                UrlClaim::Claimed(url.clone())
            }
            (UrlState::Unused, Some(_)) => UrlClaim::Expired,
            (UrlState::Claimed | UrlState::Used, _) => UrlClaim::Used,
            _ => UrlClaim::Missing,
        })
    }

    async fn settle_url(&self, key: &str, used: bool) -> Result<(), PortError> {
        use crate::core::ports::UrlState;
        if let Some(item) = self.lock().get_mut(key) {
            if item.stream.url == UrlState::Claimed {
                item.stream.url = if used { UrlState::Used } else { UrlState::Unused };
            }
        }
        Ok(())
    }
}

/// Media ids in memory.
#[derive(Default)]
pub struct MemoryMediaIds {
    ids: Mutex<HashMap<String, (String, SystemTime)>>,
}

#[async_trait]
impl crate::core::ports::MediaIds for MemoryMediaIds {
    async fn get(&self, scope: &str, now: SystemTime) -> Result<Option<String>, PortError> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ids.get(scope).filter(|(_, until)| *until > now).map(|(id, _)| id.clone()))
    }

    async fn put(&self, scope: &str, media_id: &str, valid_until: SystemTime) -> Result<(), PortError> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).insert(scope.to_owned(), (media_id.to_owned(), valid_until));
        Ok(())
    }

    async fn forget(&self, scope: &str, media_id: &str) -> Result<(), PortError> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.get(scope).is_some_and(|(id, _)| id == media_id) {
            ids.remove(scope);
        }
        Ok(())
    }
}

/// Conversations in a map, with the DynamoDB adapter's version rule (no expiry: dev runs are
/// short).
#[derive(Debug, Default)]
pub struct MemoryConversations {
    conversations: Mutex<HashMap<String, crate::core::ports::ConversationState>>,
}

#[async_trait]
impl crate::core::ports::Conversations for MemoryConversations {
    async fn load(&self, key: &str) -> Result<crate::core::ports::ConversationState, PortError> {
        let conversations = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(conversations.get(key).cloned().unwrap_or_default())
    }

    async fn save(
        &self,
        key: &str,
        state: &crate::core::ports::ConversationState,
        _ttl: Duration,
    ) -> Result<bool, PortError> {
        let mut conversations = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        let stored = conversations.get(key).map_or(0, |c| c.version);
        if stored != state.version {
            return Ok(false);
        }
        let mut saved = state.clone();
        saved.version += 1;
        conversations.insert(key.to_owned(), saved);
        Ok(true)
    }
}

/// Spending-limit counters in a map (windows are in the keys; nothing expires in a dev run).
#[derive(Debug, Default)]
pub struct MemoryCounters {
    counts: Mutex<HashMap<String, std::collections::HashSet<String>>>,
}

#[async_trait]
impl crate::core::ports::Counters for MemoryCounters {
    async fn take(&self, windows: &[crate::core::ports::CounterWindow], id: &str) -> Result<Option<usize>, PortError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (i, window) in windows.iter().enumerate() {
            let ids = counts.entry(format!("count#{}", window.key)).or_default();
            if !ids.contains(id) && ids.len() >= window.limit as usize {
                return Ok(Some(i));
            }
        }
        for window in windows {
            counts.entry(format!("count#{}", window.key)).or_default().insert(id.to_owned());
        }
        Ok(None)
    }

    async fn first(&self, key: &str, _ttl: Duration) -> Result<bool, PortError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        Ok(counts.insert(format!("once#{key}"), Default::default()).is_none())
    }
}
