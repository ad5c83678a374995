//! From an `Outbound` to the requests each WeChat API expects: which content a channel takes,
//! how long text is split, and the JSON bodies. Pure code.

use serde_json::{json, Value};

use crate::core::envelope::{Article, Content, OutChannel, Outbound};

/// How a channel measures text length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Chars,
}

/// The longest text one message may carry on `channel`.
pub fn text_limit(channel: OutChannel, markdown: bool) -> (usize, Unit) {
    match (channel, markdown) {
        // WeCom counts UTF-8 bytes: 2048 for app/appchat text and markdown, 4096 for robot markdown.
        (OutChannel::WecomWebhook, true) => (4096, Unit::Bytes),
        (OutChannel::WecomApp | OutChannel::WecomAppchat | OutChannel::WecomWebhook, _) => (2048, Unit::Bytes),
        // Official Account customer-service text: ~2048 bytes in the field.
        (OutChannel::Oa, _) => (2048, Unit::Bytes),
        // iLink chunks at ~2000 characters.
        (OutChannel::Ilink, _) => (2000, Unit::Chars),
    }
}

/// A content type a channel cannot send: a permanent error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel} cannot send {content}: {why}")]
pub struct Unsupported {
    pub channel: &'static str,
    pub content: &'static str,
    pub why: &'static str,
}

fn unsupported(channel: OutChannel, content: &Content, why: &'static str) -> Unsupported {
    Unsupported { channel: channel.as_str(), content: content.kind(), why }
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

/// The messages to send for `out`, in order: long text split at the channel's limit.
pub fn parts(out: &Outbound) -> Result<Vec<Content>, Unsupported> {
    let channel = out.channel;
    let content = &out.content;
    use OutChannel::*;
    let supported = match content {
        Content::Text { .. } => true,
        Content::Markdown { .. } => channel != Oa,
        Content::Image { media_id, base64 } => match channel {
            WecomWebhook => base64.is_some(),
            WecomApp | WecomAppchat | Oa => media_id.is_some(),
            Ilink => false,
        },
        Content::File { .. } => matches!(channel, WecomApp | WecomAppchat | WecomWebhook),
        Content::News { articles } => match channel {
            Oa => articles.len() == 1,
            Ilink => false,
            _ => (1..=8).contains(&articles.len()),
        },
        Content::Textcard { .. } => matches!(channel, WecomApp | WecomAppchat),
        Content::TemplateCard { .. } => matches!(channel, WecomApp | WecomWebhook),
    };
    if !supported {
        let why = match content {
            Content::Image { .. } if channel == WecomWebhook => "a robot image needs base64",
            Content::Image { .. } if channel != Ilink => "an image needs media_id",
            Content::News { .. } if channel == Oa => "a customer-service news message has exactly one article",
            Content::News { .. } if channel != Ilink => "news has 1 to 8 articles",
            _ => "not available on this channel",
        };
        return Err(unsupported(channel, content, why));
    }
    Ok(match content {
        Content::Text { text } if text.is_empty() => return Err(unsupported(channel, content, "text is empty")),
        Content::Text { text } => {
            let (limit, unit) = text_limit(channel, false);
            split_text(text, limit, unit).into_iter().map(|text| Content::Text { text }).collect()
        }
        Content::Markdown { text } if text.is_empty() => return Err(unsupported(channel, content, "text is empty")),
        Content::Markdown { text } => {
            let (limit, unit) = text_limit(channel, true);
            split_text(text, limit, unit)
                .into_iter()
                // iLink renders a Markdown subset in plain text messages.
                .map(|text| if channel == Ilink { Content::Text { text } } else { Content::Markdown { text } })
                .collect()
        }
        other => vec![other.clone()],
    })
}

/// The idempotency key of part `index` of `total`.
pub fn part_key(key: &str, index: usize, total: usize) -> String {
    if total == 1 {
        key.to_owned()
    } else {
        format!("{key}#{}/{total}", index + 1)
    }
}

fn articles(articles: &[Article]) -> Value {
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

/// `msgtype` and its object, shared by WeCom app messages and app group chats.
fn wecom_payload(content: &Content) -> (&'static str, Value) {
    match content {
        Content::Text { text } => ("text", json!({"content": text})),
        Content::Markdown { text } => ("markdown", json!({"content": text})),
        Content::Image { media_id, .. } => ("image", json!({"media_id": media_id})),
        Content::File { media_id } => ("file", json!({"media_id": media_id})),
        Content::News { articles: list } => ("news", json!({"articles": articles(list)})),
        Content::Textcard { title, description, url, btntxt } => (
            "textcard",
            json!({"title": title, "description": description, "url": url, "btntxt": btntxt.clone().unwrap_or_else(|| "详情".to_owned())}),
        ),
        Content::TemplateCard { card } => ("template_card", card.clone()),
    }
}

/// `POST cgi-bin/message/send`.
pub fn wecom_app_body(agent_id: u32, to: &str, content: &Content) -> Value {
    let (msgtype, payload) = wecom_payload(content);
    let mut body = json!({"touser": to, "msgtype": msgtype, "agentid": agent_id});
    body[msgtype] = payload;
    body
}

/// `POST cgi-bin/appchat/send`.
pub fn appchat_body(chat_id: &str, content: &Content) -> Value {
    let (msgtype, payload) = wecom_payload(content);
    let mut body = json!({"chatid": chat_id, "msgtype": msgtype});
    body[msgtype] = payload;
    body
}

/// `POST cgi-bin/webhook/send` (group robot).
pub fn webhook_body(content: &Content) -> Value {
    match content {
        Content::Image { base64: Some(data), .. } => {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
            let md5 = hex_lower(&<md5::Md5 as md5::Digest>::digest(&raw));
            json!({"msgtype": "image", "image": {"base64": data, "md5": md5}})
        }
        other => {
            let (msgtype, payload) = wecom_payload(other);
            let mut body = json!({"msgtype": msgtype});
            body[msgtype] = payload;
            body
        }
    }
}

/// `POST cgi-bin/message/custom/send` (Official Account customer service).
pub fn oa_body(open_id: &str, content: &Content) -> Value {
    match content {
        Content::Text { text } | Content::Markdown { text } => {
            json!({"touser": open_id, "msgtype": "text", "text": {"content": text}})
        }
        Content::Image { media_id, .. } => {
            json!({"touser": open_id, "msgtype": "image", "image": {"media_id": media_id}})
        }
        Content::News { articles: list } => {
            json!({"touser": open_id, "msgtype": "news", "news": {"articles": articles(list)}})
        }
        other => json!({"touser": open_id, "msgtype": other.kind()}),
    }
}

/// The `msg` of `POST ilink/bot/sendmessage`: one text item, sent by the bot.
pub fn ilink_text_msg(to: &str, context_token: &str, client_id: &str, text: &str) -> Value {
    json!({
        "from_user_id": "",
        "to_user_id": to,
        "client_id": client_id,
        "message_type": 2,
        "message_state": 2,
        "item_list": [{"type": 1, "text_item": {"text": text}}],
        "context_token": context_token,
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(channel: OutChannel, content: Content) -> Outbound {
        Outbound {
            v: 1,
            channel,
            account: "a".into(),
            to: "u".into(),
            content,
            idempotency_key: "k".into(),
            in_reply_to: None,
        }
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

    #[test]
    fn long_text_becomes_ordered_parts_with_derived_keys() {
        let o = out(OutChannel::WecomApp, Content::Text { text: "x".repeat(5000) });
        let p = parts(&o).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (part_key("k", 0, 3), part_key("k", 2, 3), part_key("k", 0, 1)),
            ("k#1/3".into(), "k#3/3".into(), "k".into())
        );
    }

    #[test]
    fn refuses_what_a_channel_cannot_send_with_a_reason() {
        let cases = [
            (OutChannel::Oa, Content::Markdown { text: "**x**".into() }, "not available"),
            (OutChannel::WecomWebhook, Content::Image { media_id: Some("m".into()), base64: None }, "base64"),
            (OutChannel::WecomApp, Content::Image { media_id: None, base64: Some("QQ==".into()) }, "media_id"),
            (OutChannel::Ilink, Content::File { media_id: "m".into() }, "not available"),
            (OutChannel::Oa, Content::News { articles: vec![] }, "exactly one"),
            (
                OutChannel::WecomAppchat,
                Content::TemplateCard { card: json!({"card_type": "text_notice"}) },
                "not available",
            ),
            (OutChannel::WecomApp, Content::Text { text: String::new() }, "empty"),
        ];
        for (channel, content, why) in cases {
            let err = parts(&out(channel, content)).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn renders_bodies_as_each_api_expects() {
        let text = Content::Text { text: "hi".into() };
        assert_eq!(
            wecom_app_body(1000002, "a|b", &text),
            json!({"touser": "a|b", "msgtype": "text", "agentid": 1000002, "text": {"content": "hi"}})
        );
        assert_eq!(appchat_body("c1", &text), json!({"chatid": "c1", "msgtype": "text", "text": {"content": "hi"}}));
        assert_eq!(oa_body("o1", &text), json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}));
        let image = webhook_body(&Content::Image { media_id: None, base64: Some("aGVsbG8=".into()) });
        assert_eq!(image["image"]["md5"], "5d41402abc4b2a76b9719d911017c592"); // md5("hello")
        let msg = ilink_text_msg("u@im.wechat", "ctx", "cid", "hi");
        assert_eq!(msg["item_list"].as_array().unwrap().len(), 1);
        assert_eq!((msg["from_user_id"].as_str(), msg["message_type"].as_i64()), (Some(""), Some(2)));
    }
}
