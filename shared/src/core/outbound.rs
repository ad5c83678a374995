//! What every outbound channel shares: the [`Delivery`] each channel implements, how an
//! `Outbound` becomes the parts to send (long text split at the channel's limit), and the
//! idempotency key of each part. Pure code but for the trait.

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::core::config::ListSection;
use crate::core::envelope::{Article, Content, MediaType, OutChannel, Outbound};
use crate::core::retry::Failure;

/// How a channel measures text length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Chars,
}

/// A content type a channel cannot send: a permanent error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel} cannot send {content}: {why}")]
pub struct Unsupported {
    pub channel: &'static str,
    pub content: &'static str,
    pub why: &'static str,
}

/// What became of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Sent; the recipients the platform reported it could not deliver to (a partial failure
    /// still answers success).
    Sent { undelivered: Vec<String> },
    /// Not sent, but kept to be given another way (an Official Account reply parked for the
    /// user's next message) because the platform refused with `errcode`; recorded like a sent
    /// part.
    Parked { errcode: i64 },
}

/// One outbound channel: which content it takes, how long its text may be, and how a part goes
/// out through its API. The sender knows nothing else of a channel.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// Whether the config has the account an `Outbound` names.
    fn has_account(&self, account: &str) -> bool;
    /// Why this channel cannot send `content`, if it cannot.
    fn refuse(&self, content: &Content) -> Option<&'static str>;
    /// The longest text one message may carry.
    fn text_limit(&self, markdown: bool) -> (usize, Unit);
    /// Whether markdown goes out as text (a channel that renders markdown in text messages).
    fn markdown_as_text(&self) -> bool {
        false
    }
    /// Whether markdown goes as its plain text, the marks dropped (a channel that shows text
    /// only); implies [`Self::markdown_as_text`].
    fn markdown_to_plain(&self) -> bool {
        false
    }
    /// Whether the platform drops a repeat of a part when asked to (`retry` in [`Self::deliver`]),
    /// so that a part whose earlier send has an unknown outcome can go again without reaching
    /// the user twice.
    fn drops_repeats(&self) -> bool {
        false
    }
    /// The largest file of `media_type` the channel takes, or `None` when it sends no such files.
    fn media_cap(&self, media_type: MediaType) -> Option<u64> {
        let _ = media_type;
        None
    }
    /// Whether a file of `media_type` goes inline in the message (a group robot's image) instead
    /// of being uploaded first.
    fn inline_media(&self, media_type: MediaType) -> bool {
        let _ = media_type;
        false
    }
    /// Why the channel would refuse `file` (its format), said before any upload.
    fn refuse_file(&self, file: &OutFile) -> Option<String> {
        let _ = file;
        None
    }
    /// Whether a message with a file of `media_type` shows the name it was uploaded with (then
    /// the name is part of the media id cache entry).
    fn shows_file_name(&self, media_type: MediaType) -> bool {
        media_type == MediaType::File
    }
    /// Who a media id uploaded for `out` belongs to, for the id cache (WeCom: the corp; a
    /// robot: its key's hash), so a renamed or re-keyed account never gets another's id.
    fn media_scope(&self, out: &Outbound) -> String {
        out.account.clone()
    }
    /// Uploads `file` for `out`'s account: the channel's media id for it.
    async fn upload(&self, out: &Outbound, file: &OutFile) -> Result<String, Failure> {
        let _ = (out, file);
        Err(Failure::permanent(format!("{} uploads no files", out.channel.as_str())))
    }
    /// Whether `failure` of a send means the media id it named is no good (unknown, expired):
    /// a cached one is then forgotten and the file uploaded again. WeCom and the Official
    /// Account answer 40007.
    fn refuses_media_id(&self, failure: &Failure) -> bool {
        failure.errcode == Some(40007)
    }
    /// How long a media id of this channel stays valid (WeCom's and the Official Account's
    /// temporary media: three days; kept six hours less).
    fn media_id_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3 * 24 * 3600 - 6 * 3600)
    }
    /// Sends one part. `key` identifies the part across attempts; `retry` is true when an
    /// earlier attempt may have reached the platform (ask it to drop a repeat where it can).
    async fn deliver(&self, out: &Outbound, part: &Content, key: &str, retry: bool) -> Result<Delivered, Failure>;
}

/// A file on its way out, loaded by the sender.
#[derive(Clone)]
pub struct OutFile {
    pub media_type: MediaType,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
    /// From the bytes (`application/octet-stream` when they do not tell).
    pub mime: String,
    /// The name a file message shows.
    pub file_name: String,
}

impl std::fmt::Debug for OutFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutFile({} {} {} bytes {})", self.media_type.as_str(), self.mime, self.bytes.len(), self.sha256)
    }
}

/// A size for reasons: `2.0 MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// Splits `text` into pieces of at most `limit` units, preferring line breaks, never inside a
/// character.
pub fn split_text(text: &str, limit: usize, unit: Unit) -> Vec<String> {
    let measure = |s: &str| match unit {
        Unit::Bytes => s.len(),
        Unit::Chars => s.chars().count(),
    };
    let mut parts = Vec::new();
    let mut rest = text;
    while measure(rest) > limit {
        // The longest prefix within the limit, cut at a character boundary.
        let mut end = match unit {
            Unit::Bytes => limit,
            Unit::Chars => rest.char_indices().nth(limit).map(|(i, _)| i).unwrap_or(rest.len()),
        };
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        // Prefer to end after the last line break in the second half of the piece.
        if let Some(newline) = rest[..end].rfind('\n').filter(|&i| i + 1 >= end / 2) {
            end = newline + 1;
        }
        parts.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

/// The messages to send for `out` through `delivery`, in order: long text split at the
/// channel's limit.
pub fn parts(delivery: &dyn Delivery, out: &Outbound) -> Result<Vec<Content>, Unsupported> {
    let content = &out.content;
    let refused = |why| Unsupported { channel: out.channel.as_str(), content: content.kind(), why };
    if let Some(why) = delivery.refuse(content) {
        return Err(refused(why));
    }
    Ok(match content {
        Content::Text { text } | Content::Markdown { text } if text.is_empty() => return Err(refused("text is empty")),
        Content::Text { text } => {
            let (limit, unit) = delivery.text_limit(false);
            split_text(text, limit, unit).into_iter().map(|text| Content::Text { text }).collect()
        }
        Content::Markdown { text } if delivery.markdown_to_plain() => {
            // Plain text where the channel shows no markdown: the marks would show as typed.
            let (limit, unit) = delivery.text_limit(false);
            split_text(&plain_or_raw(text), limit, unit).into_iter().map(|text| Content::Text { text }).collect()
        }
        Content::Markdown { text } => {
            let (limit, unit) = delivery.text_limit(true);
            let as_text = delivery.markdown_as_text();
            split_text(text, limit, unit)
                .into_iter()
                .map(|text| if as_text { Content::Text { text } } else { Content::Markdown { text } })
                .collect()
        }
        other => vec![other.clone()],
    })
}

/// [`markdown_to_text`], or the text as written when nothing would be left (a message of marks
/// only).
pub fn plain_or_raw(markdown: &str) -> String {
    let plain = markdown_to_text(markdown);
    if plain.trim().is_empty() {
        markdown.to_owned()
    } else {
        plain
    }
}

/// How far a link's `](`, its `)` and a tag's `>` are looked for: a line of brackets costs a
/// bounded search each, not one to the end of the line.
const LINK_LABEL_MAX: usize = 512;
const LINK_URL_MAX: usize = 2048;
const TAG_MAX: usize = 256;

/// The first `needle` in the first `max` bytes of `text` (a boundary-safe cut).
fn find_within(text: &str, needle: &str, max: usize) -> Option<usize> {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].find(needle)
}

/// Markdown as plain text for a channel that shows none: headings, emphasis, code marks and
/// WeCom's `<font>` tags dropped, links as `text (url)`, list items as `• `, code blocks kept as
/// their lines. What is not markdown passes unchanged.
pub fn markdown_to_text(markdown: &str) -> String {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            out.push(line.to_owned());
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let body = match trimmed {
            t if t.starts_with('#') && t.trim_start_matches('#').starts_with(' ') => {
                t.trim_start_matches('#').trim_start()
            }
            t if t.starts_with("> ") => &t[2..],
            ">" => "",
            t => t,
        };
        let (bullet, body) =
            match body.strip_prefix("- ").or_else(|| body.strip_prefix("* ")).or_else(|| body.strip_prefix("+ ")) {
                Some(rest) => ("• ", rest),
                None => ("", body),
            };
        if matches!(body.trim(), "---" | "***" | "___") {
            out.push(String::new());
            continue;
        }
        out.push(format!("{indent}{bullet}{}", inline_to_text(body)));
    }
    out.join("\n")
}

/// One line's inline markdown as text: links and images, emphasis, code and `<font>` tags.
fn inline_to_text(line: &str) -> String {
    let mut text = String::with_capacity(line.len());
    let mut rest = line;
    while !rest.is_empty() {
        // `[label](url)` and `![alt](url)`.
        let image = rest.starts_with("![");
        if rest.starts_with('[') || image {
            let open = if image { 2 } else { 1 };
            if let Some((label, url, used)) = link_at(&rest[open..]) {
                text.push_str(label);
                if !url.is_empty() && url != label {
                    text.push_str(&format!(" ({url})"));
                }
                rest = &rest[open + used..];
                continue;
            }
        }
        if let Some(tag) = ["<font", "</font>"].iter().find(|tag| rest.starts_with(**tag)) {
            match find_within(rest, ">", TAG_MAX) {
                Some(end) if end >= tag.len() - 1 => {
                    rest = &rest[end + 1..];
                    continue;
                }
                _ => {}
            }
        }
        if let Some(mark) = ["**", "__", "~~", "`"].iter().find(|mark| rest.starts_with(**mark)) {
            rest = &rest[mark.len()..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            text.push(c);
        }
        rest = chars.as_str();
    }
    text
}

/// After a link's `[`: its label, its URL and the bytes used up to the closing `)`.
fn link_at(after: &str) -> Option<(&str, &str, usize)> {
    let close = find_within(after, "](", LINK_LABEL_MAX)?;
    let label = &after[..close];
    if label.contains(['[', ']', '\n']) {
        return None;
    }
    let url_start = close + 2;
    let url_len = find_within(&after[url_start..], ")", LINK_URL_MAX)?;
    let url = after[url_start..url_start + url_len].trim();
    // A title after the URL (`(url "title")`) is dropped.
    let url = url.split_whitespace().next().unwrap_or_default();
    Some((label, url, url_start + url_len + 1))
}

/// Where the replies to a channel's messages go, and how.
#[derive(Debug, Clone, Copy)]
pub struct ReplyRoute {
    /// The channel of a reply in a one-to-one conversation.
    pub direct: OutChannel,
    /// The channel of a reply in a group chat.
    pub group: OutChannel,
    /// Whether the first reply can be the passive reply of the callback (reply slots), and
    /// which content fits one (`true` when the message is an event).
    pub passive: Option<fn(&Content, bool) -> bool>,
    /// Whether the user sees "typing…" while the bot works.
    pub typing: bool,
    /// Whether the answer grows in a stream the user watches (the WeCom AI bot).
    pub stream: bool,
}

/// The configured account an `Outbound` names, or a permanent failure naming what is missing.
pub fn account_of<'a, T: ListSection>(accounts: &'a [T], out: &Outbound) -> Result<&'a T, Failure> {
    accounts.iter().find(|a| a.key() == out.account).ok_or_else(|| Failure::permanent(unknown_account(out)))
}

/// Why an `Outbound` naming an account the config does not have is refused.
pub fn unknown_account(out: &Outbound) -> String {
    format!("no {} account named '{}' in the config", out.channel.as_str(), out.account)
}

/// Whether `accounts` has one named `name`.
pub fn has_account<T: ListSection>(accounts: &[T], name: &str) -> bool {
    accounts.iter().any(|a| a.key() == name)
}

/// The idempotency key of part `index` of `total`.
pub fn part_key(key: &str, index: usize, total: usize) -> String {
    if total == 1 {
        key.to_owned()
    } else {
        format!("{key}#{}/{total}", index + 1)
    }
}

/// The marker key of a part: per channel and account, so two channels never share one.
pub fn sent_key(channel: OutChannel, account: &str, part_key: &str) -> String {
    format!("sent:{}:{account}:{part_key}", channel.as_str())
}

/// The media id cache entry of a file: per channel, the id's owner ([`Delivery::media_scope`]),
/// type and content, and the file's name where the message shows it
/// ([`Delivery::shows_file_name`]; `None` elsewhere, so one upload serves every name).
pub fn media_id_scope(
    channel: OutChannel,
    owner: &str,
    media_type: MediaType,
    sha256: &str,
    shown_name: Option<&str>,
) -> String {
    let scope = format!("{}:{owner}:{}:{sha256}", channel.as_str(), media_type.as_str());
    match shown_name {
        Some(name) => format!("{scope}:{}", short_hash(name)),
        None => scope,
    }
}

/// A short, stable name for `text` (12 bytes of its SHA-1, hex): ids that must repeat across
/// retries without showing what they name.
pub fn short_hash(text: &str) -> String {
    use sha1::Digest as _;
    crate::protocol::hex::hex(&sha1::Sha1::digest(text.as_bytes())[..12])
}

/// News articles as WeCom and the Official Account take them.
pub fn articles_json(articles: &[Article]) -> Value {
    Value::Array(
        articles
            .iter()
            .map(|a| {
                json!({"title": a.title, "description": a.description.clone().unwrap_or_default(),
                       "url": a.url, "picurl": a.picurl.clone().unwrap_or_default()})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel of 2048-byte text that refuses files and takes markdown as text.
    struct Plain;

    #[async_trait]
    impl Delivery for Plain {
        fn has_account(&self, _: &str) -> bool {
            true
        }
        fn refuse(&self, content: &Content) -> Option<&'static str> {
            matches!(content, Content::File { .. }).then_some("not available on this channel")
        }
        fn text_limit(&self, _: bool) -> (usize, Unit) {
            (2048, Unit::Bytes)
        }
        fn markdown_as_text(&self) -> bool {
            true
        }
        async fn deliver(&self, _: &Outbound, _: &Content, _: &str, _: bool) -> Result<Delivered, Failure> {
            unreachable!("parts never sends")
        }
    }

    fn out(content: Content) -> Outbound {
        Outbound {
            v: 1,
            channel: OutChannel::WecomApp,
            account: "a".into(),
            to: "u".into(),
            content,
            idempotency_key: "k".into(),
            in_reply_to: None,
        }
    }

    #[test]
    fn long_text_becomes_ordered_parts_and_markdown_goes_as_text_where_the_channel_says() {
        let long = parts(&Plain, &out(Content::Text { text: "x".repeat(5000) })).unwrap();
        assert_eq!(long.len(), 3);
        assert!(long.iter().all(|p| matches!(p, Content::Text { text } if text.len() <= 2048)));
        let markdown = parts(&Plain, &out(Content::Markdown { text: "**hi** [x](https://e.x)".into() })).unwrap();
        assert_eq!(markdown, [Content::Text { text: "**hi** [x](https://e.x)".into() }], "as written, sent as text");
    }

    #[test]
    fn refusals_name_the_channel_the_content_and_why() {
        let err = parts(&Plain, &out(Content::File { media_id: Some("m".into()), media: None })).unwrap_err();
        assert_eq!(err.to_string(), "wecom_app cannot send file: not available on this channel");
        let err = parts(&Plain, &out(Content::Text { text: String::new() })).unwrap_err();
        assert_eq!(err.to_string(), "wecom_app cannot send text: text is empty");
    }

    #[test]
    fn splits_at_bytes_or_chars_never_inside_a_character() {
        let text = "你".repeat(1000); // 3000 bytes
        let parts = split_text(&text, 2048, Unit::Bytes);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= 2048));
        assert_eq!(parts.concat(), text);
        let parts = split_text(&text, 300, Unit::Chars);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.chars().count() <= 300));
        assert_eq!(split_text("short", 10, Unit::Bytes), ["short"]);
    }

    #[test]
    fn prefers_line_breaks_in_the_second_half() {
        let text = format!("{}\n{}", "a".repeat(1500), "b".repeat(1500));
        let parts = split_text(&text, 2048, Unit::Bytes);
        assert_eq!(parts, [format!("{}\n", "a".repeat(1500)), "b".repeat(1500)]);
    }

    /// Markdown for a channel without it reads as text: no marks, links with their URL.
    #[test]
    fn markdown_becomes_plain_text() {
        let markdown = "# 标题\n\n**粗体** and __bold__, `code`, ~~gone~~\n- one\n* two\n> quoted\n\
                        [docs](https://example.com/d \"t\") and ![图](https://example.com/p.png)\n\
                        <font color=\"warning\">注意</font>\n```rust\nlet **x** = 1;\n```\n---\nsnake_case_name stays";
        assert_eq!(
            markdown_to_text(markdown),
            "标题\n\n粗体 and bold, code, gone\n• one\n• two\nquoted\n\
             docs (https://example.com/d) and 图 (https://example.com/p.png)\n注意\nlet **x** = 1;\n\nsnake_case_name stays"
        );
        for plain in ["1 * 2 = 2", "a [bracket] here", "[unclosed](x", "x < y > z", "#hashtag", ""] {
            assert_eq!(markdown_to_text(plain), plain, "{plain}");
        }
        assert_eq!(markdown_to_text("pick [a] or (b](c)"), "pick [a] or (b](c)", "a label holds no bracket");
        // Marks only: the text as written, not an empty message.
        assert_eq!(plain_or_raw("---"), "---");
        // Hostile lines convert in bounded time, and never split a character.
        let brackets = "[".repeat(256 * 1024);
        assert_eq!(markdown_to_text(&brackets), brackets);
        let tags = "<font 长".repeat(20_000);
        assert_eq!(markdown_to_text(&tags).len(), tags.len());
    }

    #[test]
    fn part_keys_derive_from_the_message_key() {
        assert_eq!(
            (part_key("k", 0, 3), part_key("k", 2, 3), part_key("k", 0, 1)),
            ("k#1/3".into(), "k#3/3".into(), "k".into())
        );
        assert_eq!(sent_key(OutChannel::Oa, "news", "k#1/3"), "sent:oa:news:k#1/3");
    }
}
