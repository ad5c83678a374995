//! iLink sendmessage.

use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use fakes::{Api, FakeWechat};
use serde_json::{json, Value};

use crate::support::client;

const BOT: &str = "a1b2c3d4e5f6@im.bot:0601b2c3d4e5f6a7b8c9";
const USER: &str = "o9cq80_abcdef@im.wechat";
const CTX: &str = "AARzJWAFAAABAAAAAAAp2r1Lh0tU5qEJfPRa9cLdZcd+QA==";

async fn setup() -> (FakeWechat, String) {
    let wx = FakeWechat::start().await;
    wx.add_ilink_bot(BOT);
    wx.add_ilink_user(BOT, USER, CTX);
    let url = format!("{}/ilink/bot/sendmessage", wx.base_url);
    (wx, url)
}

/// A fresh X-WECHAT-UIN per call, as the official client makes.
fn fresh_uin() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(2_070_591_193);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    base64::engine::general_purpose::STANDARD.encode(n.to_string())
}

fn message(text: &str) -> Value {
    json!({
        "msg": {
            "from_user_id": "", "to_user_id": USER, "client_id": "wxbridge-1",
            "message_type": 2, "message_state": 2,
            "item_list": [{"type": 1, "text_item": {"text": text}}],
            "context_token": CTX
        },
        "base_info": {"channel_version": "0.1.0", "bot_agent": "wxbridge/0.1.0"}
    })
}

/// Sends with correct headers, except the ones `tweak` overrides (a `None` value drops it).
async fn send_with(url: &str, body: &Value, tweak: &[(&str, Option<&str>)]) -> (u16, String) {
    let bearer = format!("Bearer {BOT}");
    let uin = fresh_uin();
    let mut headers: Vec<(&str, Option<String>)> = vec![
        ("Content-Type", Some("application/json".to_owned())),
        ("AuthorizationType", Some("ilink_bot_token".to_owned())),
        ("Authorization", Some(bearer)),
        ("X-WECHAT-UIN", Some(uin)),
        ("iLink-App-Id", Some("bot".to_owned())),
    ];
    for (name, value) in tweak {
        match headers.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.map(str::to_owned),
            None => headers.push((name, value.map(str::to_owned))),
        }
    }
    let mut request = client().post(url).body(body.to_string());
    for (name, value) in headers {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let resp = request.send().await.expect("POST sendmessage");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn send(url: &str, body: &Value) -> Value {
    let (status, text) = send_with(url, body, &[]).await;
    assert_eq!(status, 200);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

#[tokio::test]
async fn accepted_sends_rotate_through_every_success_shape() {
    let (wx, url) = setup().await;
    let mut bodies = Vec::new();
    for i in 0..4 {
        let (status, text) = send_with(&url, &message(&format!("hello {i}")), &[]).await;
        assert_eq!(status, 200);
        bodies.push(text);
    }
    assert_eq!(bodies[0], "");
    assert_eq!(bodies[1], "{}");
    assert_eq!(serde_json::from_str::<Value>(&bodies[2]).unwrap(), json!({"ret": 0}));
    let last: Value = serde_json::from_str(&bodies[3]).unwrap();
    assert_eq!(last["ret"], 0);
    assert!(last["message_id"].as_u64().is_some_and(|id| id > 1 << 53), "{last}");

    let sent = wx.deliveries_of(Api::Ilink);
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[0].account, BOT);
    assert_eq!(sent[0].body, message("hello 0"));
    assert!(wx.problems().is_empty(), "{:?}", wx.problems());
}

#[tokio::test]
async fn bad_auth_is_session_timeout_with_http_200() {
    let (wx, url) = setup().await;
    let body = message("x");
    let expired = json!({"errcode": -14, "errmsg": "session timeout"});
    for tweak in [
        vec![("Authorization", Some("Bearer not-a-token"))],
        vec![("Authorization", None)],
        vec![("Authorization", Some(BOT))],
        vec![("AuthorizationType", None)],
        vec![("AuthorizationType", Some("bearer"))],
    ] {
        let (status, text) = send_with(&url, &body, &tweak).await;
        assert_eq!(status, 200, "{tweak:?}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expired, "{tweak:?}");
    }
    assert_eq!(wx.problems().len(), 5);
    assert!(wx.deliveries().is_empty());
}

#[tokio::test]
async fn header_shape_checks() {
    let (wx, url) = setup().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (eleven, too_big, letters, empty) = (b64("12345678901"), b64("4294967296"), b64("12ab"), b64(""));
    let body = message("x");
    let invalid = json!({"ret": -2, "errmsg": "invalid arguments"});
    for tweak in [
        vec![("Content-Type", Some("text/plain"))],
        vec![("Content-Type", None)],
        vec![("X-WECHAT-UIN", None)],
        vec![("X-WECHAT-UIN", Some("1234"))], // not base64 of digits: "1234" decodes to binary
        vec![("X-WECHAT-UIN", Some("%%%"))],
        vec![("X-WECHAT-UIN", Some(eleven.as_str()))],
        vec![("X-WECHAT-UIN", Some(too_big.as_str()))],
        vec![("X-WECHAT-UIN", Some(letters.as_str()))],
        vec![("X-WECHAT-UIN", Some(empty.as_str()))],
    ] {
        let (status, text) = send_with(&url, &body, &tweak).await;
        assert_eq!(status, 200, "{tweak:?}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), invalid, "{tweak:?}");
    }
    assert_eq!(wx.problems().len(), 9, "{:#?}", wx.problems());
    // The largest u32 is fine; charset parameters on the content type too.
    let max = b64("4294967295");
    let (status, _) = send_with(
        &url,
        &body,
        &[("X-WECHAT-UIN", Some(max.as_str())), ("Content-Type", Some("application/json; charset=utf-8"))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(wx.deliveries().len(), 1);
}

#[tokio::test]
async fn reused_uin_is_reported_but_delivered() {
    let (wx, url) = setup().await;
    let uin = base64::engine::general_purpose::STANDARD.encode("1234567");
    for _ in 0..2 {
        send_with(&url, &message("x"), &[("X-WECHAT-UIN", Some(uin.as_str()))]).await;
    }
    assert_eq!(wx.deliveries().len(), 2);
    let problems = wx.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("reused"), "{problems:?}");
}

#[tokio::test]
async fn body_checks() {
    let (wx, url) = setup().await;
    let invalid = json!({"ret": -2, "errmsg": "invalid arguments"});
    let mut cases = Vec::new();
    let mut case = |edit: &dyn Fn(&mut Value)| {
        let mut body = message("x");
        edit(&mut body);
        cases.push(body);
    };
    case(&|b| b["base_info"] = json!({}));
    case(&|b| b["base_info"]["channel_version"] = json!(2));
    case(&|b| b["msg"]["from_user_id"] = json!("a1b2c3d4e5f6@im.bot"));
    case(&|b| {
        b["msg"].as_object_mut().unwrap().remove("from_user_id");
    });
    case(&|b| b["msg"]["client_id"] = json!(""));
    case(&|b| b["msg"]["message_type"] = json!(1));
    case(&|b| b["msg"]["message_state"] = json!(0));
    case(&|b| b["msg"]["item_list"] = json!([]));
    case(&|b| {
        b["msg"]["item_list"] =
            json!([{"type": 1, "text_item": {"text": "a"}}, {"type": 1, "text_item": {"text": "b"}}])
    });
    case(&|b| b["msg"]["item_list"][0]["text_item"]["text"] = json!(""));
    case(&|b| b["msg"]["item_list"][0]["type"] = json!(3));
    case(&|b| b["msg"] = json!("hello"));
    let n = cases.len();
    for body in cases {
        assert_eq!(send(&url, &body).await, invalid, "request {body}");
    }
    let (_, text) = send_with(&url, &json!([1, 2]), &[]).await;
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), invalid);
    assert_eq!(wx.problems().len(), n + 1, "{:#?}", wx.problems());
    assert!(wx.deliveries().is_empty());
}

#[tokio::test]
async fn unknown_user_or_stale_context_token_is_prepare_failed() {
    let (wx, url) = setup().await;
    let failed = json!({"ret": -2, "errmsg": "prepare failed"});
    let mut stranger = message("x");
    stranger["msg"]["to_user_id"] = json!("stranger@im.wechat");
    assert_eq!(send(&url, &stranger).await, failed);
    let mut no_ctx = message("x");
    no_ctx["msg"].as_object_mut().unwrap().remove("context_token");
    assert_eq!(send(&url, &no_ctx).await, failed);

    // A newer inbound message issues a new context_token; the old one is stale from then on.
    wx.add_ilink_user(BOT, USER, "NEWER");
    assert_eq!(send(&url, &message("x")).await, failed);
    let mut fresh = message("x");
    fresh["msg"]["context_token"] = json!("NEWER");
    let (status, _) = send_with(&url, &fresh, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(wx.deliveries().len(), 1);
    assert_eq!(wx.problems().len(), 3, "{:#?}", wx.problems());

    // Users belong to a bot: the same user id under another bot is unknown.
    wx.add_ilink_bot("other-bot");
    let (_, text) = send_with(&url, &fresh, &[("Authorization", Some("Bearer other-bot"))]).await;
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), failed);
}
