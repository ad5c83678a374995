//! `schemas/outbound.v1.json` and `Outbound::parse` agree on what a valid Outbound is.

use serde_json::{json, Value};
use shared::core::envelope::Outbound;

const SCHEMA: &str = include_str!("../../schemas/outbound.v1.json");

fn valid() -> Vec<Value> {
    let article =
        json!({"title": "t", "url": "https://example.com", "description": "d", "picurl": "https://example.com/p.png"});
    vec![
        json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": "WangFang", "content": {"type": "text", "text": "pong"},
               "idempotency_key": "reply-1", "in_reply_to": "wecom:hr:7450000000000000230"}),
        json!({"v": 1, "channel": "wecom_appchat", "account": "hr", "to": "chat1", "content": {"type": "markdown", "text": "# hi"}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_webhook", "account": "ops", "content": {"type": "image", "base64": "QQ=="}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": "@all", "content": {"type": "file", "media_id": "m"}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "oa", "account": "news", "to": "o1", "content": {"type": "news", "articles": [article]}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": "u", "content": {"type": "textcard", "title": "t", "description": "d", "url": "https://x"}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_webhook", "account": "ops", "content": {"type": "template_card", "card": {"card_type": "text_notice"}}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "ilink", "account": "b@im.bot", "to": "u@im.wechat", "content": {"type": "text", "text": "hi"}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": "u", "content": {"type": "image", "media": {"key": format!("media/{}", "a".repeat(64))}}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_appchat", "account": "hr", "to": "c", "content": {"type": "file", "media": {"url": "https://example.com/r.pdf", "file_name": "报告.pdf"}}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_webhook", "account": "ops", "content": {"type": "voice", "media": {"base64": "IyFBTVIK"}}, "idempotency_key": "k"}),
        json!({"v": 1, "channel": "wecom_app", "account": "hr", "to": "u", "content": {"type": "video", "media_id": "m", "title": "t"}, "idempotency_key": "k"}),
    ]
}

fn invalid() -> Vec<Value> {
    let base = valid().remove(0);
    let with = |field: &str, value: Value| {
        let mut v = base.clone();
        v[field] = value;
        v
    };
    let without = |field: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        v
    };
    vec![
        with("v", json!(2)),
        with("channel", json!("telegram")),
        with("to", json!("")),
        with("idempotency_key", json!("")),
        with("content", json!({"type": "sticker"})),
        with("content", json!({"type": "text"})),
        with("content", json!({"type": "image", "media": {"path": "/etc/passwd"}})),
        with("content", json!({"type": "video", "media_id": "m", "caption": "x"})),
        with("surprise", json!(true)),
        without("to"),
        without("account"),
        without("idempotency_key"),
    ]
}

#[test]
fn the_schema_and_the_parser_accept_the_same_envelopes() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for good in valid() {
        let errors: Vec<String> = validator.iter_errors(&good).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{good}: {errors:?}");
        let parsed = Outbound::parse(&good.to_string()).unwrap_or_else(|e| panic!("{good}: {e}"));
        // What the sender re-serialises (e.g. for the DLQ) still validates.
        assert!(validator.is_valid(&serde_json::from_str(&parsed.to_json()).unwrap()));
    }
    for bad in invalid() {
        assert!(!validator.is_valid(&bad), "schema accepted {bad}");
        assert!(Outbound::parse(&bad.to_string()).is_err(), "parser accepted {bad}");
    }
}
