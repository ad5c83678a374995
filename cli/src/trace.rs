//! The hops of a message as the feed shows them: wrappers around the bot, the queue handlers and
//! the sender's dead-letter queue that time and report each step, the same in memory and with
//! `--aws`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Value};
use shared::core::bot::{AnswerSink, Bot, BotError};
use shared::core::envelope::{Content, Inbound};
use shared::core::ports::{OutboundQueue, PortError, Record, Redeliver};

use crate::feed::{chat_of_inbound, emit, Stage};
use crate::sqs::BatchHandler;

/// The bot, timed: one `bot` event per call.
pub struct TracedBot(pub Arc<dyn Bot>);

impl TracedBot {
    fn report(inbound: &Inbound, started: Instant, answer: &Result<Vec<Content>, BotError>) {
        let chat = serde_json::to_value(inbound).ok().and_then(|v| chat_of_inbound(&v));
        let (outcome, detail) = match answer {
            Ok(replies) => ("ok", format!("{} repl{}", replies.len(), if replies.len() == 1 { "y" } else { "ies" })),
            Err(err) => ("error", err.to_string()),
        };
        emit(
            "bot",
            chat.as_deref(),
            Some(&inbound.id),
            json!({"ms": started.elapsed().as_millis() as u64, "outcome": outcome, "detail": detail}),
        );
    }
}

#[async_trait]
impl Bot for TracedBot {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let started = Instant::now();
        let answer = self.0.answer(inbound).await;
        Self::report(inbound, started, &answer);
        answer
    }

    async fn answer_streaming(&self, inbound: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let started = Instant::now();
        let answer = self.0.answer_streaming(inbound, sink).await;
        Self::report(inbound, started, &answer);
        answer
    }

    fn replies_later(&self, inbound: &Inbound) -> bool {
        self.0.replies_later(inbound)
    }
}

/// A short line for an Inbound on the queue: `wecom:demo:1 text from WangFang: "hi"`.
pub fn inbound_summary(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else { return "(not an Inbound)".to_owned() };
    let media = &v["media"];
    let what = v["text"]
        .as_str()
        .map(|t| format!("{t:?}"))
        .or_else(|| v["event"]["name"].as_str().map(|e| format!("event {e}")))
        .or_else(|| {
            let kind = media["type"].as_str().unwrap_or("media");
            match (media["size"].as_u64(), media["url"].as_str(), media["error"]["message"].as_str()) {
                // Without the query: a presigned link's signature is a credential.
                (Some(size), Some(url), _) => {
                    let url = url.split('?').next().unwrap_or_default();
                    Some(format!("[{kind} {}] {url}", crate::sandbox::size(size)))
                }
                (_, _, Some(error)) => Some(format!("[{kind}: {error}]")),
                _ => None,
            }
        });
    format!(
        "{} {} from {}: {}",
        v["id"].as_str().unwrap_or("?"),
        v["kind"].as_str().unwrap_or("?"),
        v["sender"]["id"].as_str().unwrap_or("?"),
        what.unwrap_or_default()
    )
}

/// A `queued` event for an Inbound the dispatcher takes.
pub fn queued(body: &str) {
    let inbound: Value = serde_json::from_str(body).unwrap_or_default();
    emit(
        "queued",
        chat_of_inbound(&inbound).as_deref(),
        inbound["id"].as_str(),
        json!({"summary": inbound_summary(body), "from": inbound["sender"]["id"], "text": inbound["text"],
               "group": inbound["conversation"]["kind"] == "group"}),
    );
}

/// The conversation and message an Outbound (as JSON) answers.
fn outbound_place(body: &str) -> (Value, Option<String>, Option<String>) {
    let out: Value = serde_json::from_str(body).unwrap_or_default();
    let msg = out["in_reply_to"].as_str().map(str::to_owned);
    let channel = match out["channel"].as_str().unwrap_or_default() {
        "wecom_app" => "wecom",
        other => other,
    };
    let chat = match (out["account"].as_str(), out["to"].as_str()) {
        (Some(account), Some(to)) if channel != "wecom_aibot" => Some(format!("{channel}:{account}:{to}")),
        _ => None,
    };
    (out, chat, msg)
}

/// A `send` event: the sender's outcome for one Outbound.
pub fn send(body: &str, outcome: &str, reason: Option<&str>) {
    send_with(body, outcome, reason, None);
}

fn send_with(body: &str, outcome: &str, reason: Option<&str>, errcode: Option<i64>) {
    let (out, chat, msg) = outbound_place(body);
    emit(
        "send",
        chat.as_deref(),
        msg.as_deref(),
        json!({"channel": out["channel"], "to": out["to"], "key": out["idempotency_key"], "outcome": outcome,
               "reason": reason, "errcode": errcode, "text": out["content"]["text"], "content": out["content"]["type"]}),
    );
    if let (Some(reason), "dead") = (reason, outcome) {
        emit("note", chat.as_deref(), msg.as_deref(), json!({"level": "error", "text": format!("not sent: {reason}")}));
    }
}

/// Marks the bridge as working on an Inbound (as JSON) at `stage` while the guard lives.
pub fn working_on_inbound(stage: Stage, body: &str) -> Option<crate::feed::Working> {
    let inbound: Value = serde_json::from_str(body).ok()?;
    Some(crate::feed::working(stage, chat_of_inbound(&inbound).as_deref(), inbound["id"].as_str()?))
}

/// Marks the bridge as working on the message an Outbound (as JSON) answers while the guard lives.
pub fn working_on_outbound(body: &str) -> Option<crate::feed::Working> {
    let (_, chat, msg) = outbound_place(body);
    Some(crate::feed::working(Stage::Send, chat.as_deref(), &msg?))
}

/// Which queue a [`Traced`] handler consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dispatcher,
    Sender,
    Media,
}

/// A queue handler on SQS, reporting each record it takes and marking the work on it.
pub struct Traced {
    pub inner: Arc<dyn BatchHandler>,
    pub role: Role,
    /// The sender's queue wrapper, which knows what it dead-lettered or put back.
    pub queue: Option<Arc<TracedQueue>>,
}

#[async_trait]
impl BatchHandler for Traced {
    async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        if self.role == Role::Dispatcher {
            records.iter().for_each(|r| queued(&r.body));
        }
        let working: Vec<_> = records
            .iter()
            .filter_map(|r| match self.role {
                Role::Sender => working_on_outbound(&r.body),
                Role::Dispatcher => working_on_inbound(Stage::Dispatch, &r.body),
                Role::Media => working_on_inbound(Stage::Media, &r.body),
            })
            .collect();
        let failed = self.inner.handle_batch(records).await;
        drop(working);
        for record in records {
            let again = failed.contains(&record.message_id);
            match (self.role, again) {
                (Role::Media, _) => {}
                (Role::Sender, true) => send(&record.body, "retry", None),
                // A dead letter or a fresh copy was reported by the queue wrapper.
                (Role::Sender, false) if self.queue.as_ref().is_some_and(|q| q.settled(&record.body)) => {}
                (Role::Sender, false) => send(&record.body, "sent", None),
                (Role::Dispatcher, true) => {
                    let inbound: Value = serde_json::from_str(&record.body).unwrap_or_default();
                    emit(
                        "note",
                        chat_of_inbound(&inbound).as_deref(),
                        inbound["id"].as_str(),
                        json!({"level": "warn", "text": "the dispatcher hands it back: the queue delivers it again"}),
                    );
                }
                (Role::Dispatcher, false) => {}
            }
        }
        failed
    }
}

/// The sender's queue, reporting what it dead-letters (and why) or puts back.
pub struct TracedQueue {
    pub inner: Arc<dyn OutboundQueue>,
    /// Bodies dead-lettered or requeued and not yet looked up by [`TracedQueue::settled`].
    settled: std::sync::Mutex<Vec<String>>,
}

impl TracedQueue {
    pub fn new(inner: Arc<dyn OutboundQueue>) -> Self {
        TracedQueue { inner, settled: std::sync::Mutex::default() }
    }

    /// Whether `body` was dead-lettered or requeued (once: the entry is taken).
    pub fn settled(&self, body: &str) -> bool {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        match settled.iter().position(|b| b == body) {
            Some(at) => {
                settled.swap_remove(at);
                true
            }
            None => false,
        }
    }

    fn settle(&self, body: &str) {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        settled.push(body.to_owned());
        // Bounded: a body is looked up right after its batch.
        if settled.len() > 1024 {
            settled.remove(0);
        }
    }
}

#[async_trait]
impl Redeliver for TracedQueue {
    async fn retry_later(&self, receipt_handle: &str, delay_s: u32) -> Result<(), PortError> {
        self.inner.retry_later(receipt_handle, delay_s).await
    }
}

#[async_trait]
impl OutboundQueue for TracedQueue {
    async fn dead_letter(&self, body: &str, attributes: &[(&'static str, String)]) -> Result<(), PortError> {
        self.inner.dead_letter(body, attributes).await?;
        self.settle(body);
        dead(body, attributes);
        Ok(())
    }

    async fn requeue(&self, body: &str, delay_s: u32) -> Result<(), PortError> {
        self.inner.requeue(body, delay_s).await?;
        self.settle(body);
        send(body, "retry", Some(&format!("waits {delay_s} s in a fresh copy")));
        Ok(())
    }
}

/// A `send` event for a dead-lettered Outbound, with its reason and errcode.
pub fn dead(body: &str, attributes: &[(&'static str, String)]) {
    let reason = attributes.iter().find(|(k, _)| *k == "reason").map(|(_, v)| v.as_str());
    let errcode = attributes.iter().find(|(k, _)| *k == "errcode").and_then(|(_, v)| v.parse::<i64>().ok());
    send_with(body, "dead", reason, errcode);
}
