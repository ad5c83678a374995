//! What the chat bots (`openai`, `dify`) share: what the user said, the answer as replies,
//! transport errors without their URL, and a response read as server-sent events under a size
//! cap.

use async_trait::async_trait;

use crate::core::bot::{AnswerSink, BotError};
use crate::core::envelope::{Content, ConversationKind, Inbound};
use crate::core::http::ApiError;

/// A transport failure (a timeout too) as a bot error, without the URL.
pub(crate) fn transport(err: reqwest::Error) -> BotError {
    BotError(ApiError::transport(err).to_string())
}

/// What the user said, as the bot reads it: the text (a voice message's transcript), in a group
/// chat prefixed with who said it (one conversation is shared by the group).
pub(crate) fn said(inbound: &Inbound) -> Option<String> {
    let text = inbound.text.as_deref().filter(|t| !t.trim().is_empty())?;
    Some(match inbound.conversation.kind {
        ConversationKind::Group => format!("{}: {text}", inbound.sender.id),
        _ => text.to_owned(),
    })
}

/// The answer text as replies: none when empty.
pub(crate) fn replies(text: &str) -> Vec<Content> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![Content::Text { text: text.to_owned() }]
    }
}

/// Shows nothing: [`crate::core::bot::Bot::answer`] on a streaming bot reads the stream to its
/// end.
pub(crate) struct Unseen;

#[async_trait]
impl AnswerSink for Unseen {
    async fn grow(&self, _text: &str) {}
}

/// One server-sent event: its `event` name (empty when unnamed) and its `data` lines joined
/// with "\n".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
}

/// The most a streamed answer may send, events and all (answers are kilobytes).
pub(crate) const MAX_STREAM_BYTES: usize = 8 << 20;

/// A response body read as server-sent events, at most [`MAX_STREAM_BYTES`] of it: a runaway
/// endpoint (one endless line, say) must not exhaust the function's memory.
pub(crate) struct SseStream {
    response: reqwest::Response,
    decoder: SseDecoder,
    read: usize,
}

impl SseStream {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self { response, decoder: SseDecoder::default(), read: 0 }
    }

    /// The events the next read completes (maybe none); `None` once the body has ended.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<SseEvent>>, BotError> {
        let Some(bytes) = self.response.chunk().await.map_err(transport)? else { return Ok(None) };
        self.read += bytes.len();
        if self.read > MAX_STREAM_BYTES {
            return Err(BotError(format!("the streamed answer exceeds {} MB", MAX_STREAM_BYTES >> 20)));
        }
        Ok(Some(self.decoder.push(&bytes)))
    }
}

/// Server-sent events from a `text/event-stream` body, fed as it arrives. Bytes wait until
/// their line is complete, so a read may end anywhere, inside a UTF-8 character too. Lines end
/// with "\n" or "\r\n", ":" starts a comment, an event ends at a blank line (one cut off before
/// it is dropped, and so is one without data), and `id`/`retry` are ignored: an answer is never
/// resumed.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    pending: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// The events that `bytes` complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut used = 0;
        while let Some(end) = self.pending[used..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[used..used + end];
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned();
            used += end + 1;
            events.extend(self.line(&line));
        }
        self.pending.drain(..used);
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = SseEvent { event: std::mem::take(&mut self.event), data: std::mem::take(&mut self.data) };
            return std::mem::take(&mut self.has_data).then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_owned(),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream as servers write it: a comment, CRLF and LF lines, a named event, multi-line
    /// data, and characters of 3 and 4 bytes in UTF-8.
    const SAMPLE: &str = ": keep-alive\r\n\r\ndata: {\"a\":\"明天\"}\r\n\r\nevent: note\ndata: first\ndata:second 🦀\n\ndata\n\nid: 7\nretry: 10\ndata: [DONE]\n\n";

    fn sample_events() -> Vec<SseEvent> {
        let event = |event: &str, data: &str| SseEvent { event: event.into(), data: data.into() };
        vec![event("", "{\"a\":\"明天\"}"), event("note", "first\nsecond 🦀"), event("", ""), event("", "[DONE]")]
    }

    #[test]
    fn sse_events_end_at_blank_lines_and_join_their_data_lines() {
        assert_eq!(SseDecoder::default().push(SAMPLE.as_bytes()), sample_events());
    }

    #[test]
    fn sse_reads_may_end_at_any_byte_even_inside_a_character() {
        let bytes = SAMPLE.as_bytes();
        for cut in 0..=bytes.len() {
            let mut decoder = SseDecoder::default();
            let mut events = decoder.push(&bytes[..cut]);
            events.extend(decoder.push(&bytes[cut..]));
            assert_eq!(events, sample_events(), "cut at byte {cut}");
        }
        let mut decoder = SseDecoder::default();
        let events: Vec<SseEvent> = bytes.iter().flat_map(|b| decoder.push(std::slice::from_ref(b))).collect();
        assert_eq!(events, sample_events(), "one byte at a time");
    }

    #[test]
    fn an_sse_event_cut_off_before_its_blank_line_is_dropped() {
        let mut decoder = SseDecoder::default();
        assert!(decoder.push(b"data: {\"partial\": tr").is_empty());
        assert!(decoder.push(b"ue}\n").is_empty());
    }

    #[test]
    fn an_sse_event_without_data_is_dropped() {
        // Dify's keep-alive: `event: ping` and a blank line.
        assert!(SseDecoder::default().push(b"event: ping\n\n").is_empty());
    }

    #[test]
    fn a_group_message_is_said_by_its_sender() {
        let mut inbound: Inbound = serde_json::from_value(serde_json::json!({"v": 1, "id": "wecom:hr:1",
            "channel": "wecom", "account": "hr", "conversation": {"kind": "group", "id": "wr1"},
            "sender": {"id": "WangFang"}, "kind": "text", "text": "几点？", "received_at": "2026-11-21T00:00:00Z",
            "sent_at": 1, "raw": {}}))
        .unwrap();
        assert_eq!(said(&inbound).as_deref(), Some("WangFang: 几点？"));
        inbound.conversation.kind = ConversationKind::Direct;
        assert_eq!(said(&inbound).as_deref(), Some("几点？"));
        inbound.text = Some("  ".into());
        assert_eq!(said(&inbound), None);
    }
}
