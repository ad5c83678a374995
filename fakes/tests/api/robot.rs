//! The group robot webhook.

use fakes::{Api, FakeWechat};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, post_json};

const KEY: &str = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa";
/// PNG signature + "fake image data", and its md5.
const PNG_B64: &str = "iVBORw0KGgpmYWtlIGltYWdlIGRhdGE=";
const PNG_MD5: &str = "47d1f88db17ee56e71cec0b367f50ce2";
/// "GIF89a fake" and its md5: a valid pair, but not a JPG/PNG.
const GIF_B64: &str = "R0lGODlhIGZha2U=";
const GIF_MD5: &str = "fa9f1bd5fd4f33c0592f5963a7a315a0";

/// Uploads a small text file as robot `key`; returns its media_id.
async fn upload_file(wx: &FakeWechat, key: &str) -> String {
    let part = reqwest::multipart::Part::bytes(b"hello robot".to_vec()).file_name("notes.txt");
    let form = reqwest::multipart::Form::new().part("media", part);
    let url = format!("{}/cgi-bin/webhook/upload_media?key={key}&type=file", wx.base_url);
    let answer: Value = client().post(url).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_errcode(&answer, 0);
    answer["media_id"].as_str().expect("media_id").to_owned()
}

async fn setup() -> (FakeWechat, String) {
    let wx = FakeWechat::start().await;
    wx.add_robot(KEY);
    let url = format!("{}/cgi-bin/webhook/send?key={KEY}", wx.base_url);
    (wx, url)
}

#[tokio::test]
async fn accepts_each_msgtype() {
    let (wx, url) = setup().await;
    let file = upload_file(&wx, KEY).await;
    let bodies = [
        json!({"msgtype": "text", "text": {"content": "x".repeat(2048), "mentioned_list": ["alice", "@all"]}}),
        json!({"msgtype": "markdown", "markdown": {"content": "x".repeat(4096)}}),
        json!({"msgtype": "image", "image": {"base64": PNG_B64, "md5": PNG_MD5}}),
        json!({"msgtype": "news", "news": {"articles": [{"title": "t", "url": "https://example.com"}]}}),
        json!({"msgtype": "file", "file": {"media_id": file}}),
        json!({"msgtype": "template_card", "template_card": {"card_type": "text_notice"}}),
    ];
    for body in &bodies {
        let answer = post_json(&url, body).await;
        assert_errcode(&answer, 0);
        assert_eq!(answer["errmsg"], "ok");
    }
    let sent = wx.deliveries_of(Api::WecomWebhook);
    assert_eq!(sent.len(), bodies.len());
    assert!(sent.iter().all(|d| d.account == KEY));
    assert!(wx.problems().is_empty(), "{:?}", wx.problems());
}

#[tokio::test]
async fn rejects_what_the_robot_rejects() {
    let (wx, url) = setup().await;
    let unknown = format!("{}/cgi-bin/webhook/send?key=nope", wx.base_url);
    let msg = assert_errcode(&post_json(&unknown, &json!({"msgtype": "text", "text": {"content": "x"}})).await, 93000);
    assert!(msg.starts_with("invalid webhook url"), "{msg}");
    let no_key = format!("{}/cgi-bin/webhook/send", wx.base_url);
    assert_errcode(&post_json(&no_key, &json!({"msgtype": "text", "text": {"content": "x"}})).await, 93000);

    let cases: Vec<(Value, i64)> = vec![
        (json!({"msgtype": "text", "text": {"content": "x".repeat(2049)}}), 45002),
        (json!({"msgtype": "text", "text": {"content": ""}}), 44004),
        (json!({"msgtype": "text", "text": {"content": "x", "mentioned_list": "alice"}}), 40058),
        (json!({"msgtype": "markdown", "markdown": {"content": "x".repeat(4097)}}), 45002),
        (json!({"msgtype": "image", "image": {"base64": PNG_B64, "md5": GIF_MD5}}), 40009),
        (json!({"msgtype": "image", "image": {"base64": "***", "md5": PNG_MD5}}), 40009),
        (json!({"msgtype": "image", "image": {"base64": PNG_B64}}), 40009),
        (json!({"msgtype": "image", "image": {"base64": GIF_B64, "md5": GIF_MD5}}), 40004),
        (json!({"msgtype": "news", "news": {"articles": vec![json!({"title": "t", "url": "u"}); 9]}}), 45008),
        (json!({"msgtype": "file", "file": {}}), 40007),
        (json!({"msgtype": "template_card", "template_card": {"card_type": "vote_interaction"}}), 40058),
        (json!({"msgtype": "textcard", "textcard": {}}), 40008),
    ];
    let n = cases.len();
    for (body, code) in cases {
        let answer = post_json(&url, &body).await;
        assert_eq!(answer["errcode"], code, "request {body} answered {answer}");
    }
    assert_eq!(wx.problems().len(), n + 2, "{:#?}", wx.problems());
    assert!(wx.deliveries().is_empty());
}

#[tokio::test]
async fn more_than_20_messages_a_minute_is_45009() {
    let (wx, url) = setup().await;
    let body = json!({"msgtype": "text", "text": {"content": "tick"}});
    for _ in 0..20 {
        assert_errcode(&post_json(&url, &body).await, 0);
    }
    assert_errcode(&post_json(&url, &body).await, 45009);
    assert_eq!(wx.deliveries().len(), 20);
    assert_eq!(wx.calls("/cgi-bin/webhook/send"), 21);
    assert_eq!(wx.problems().len(), 1);
    // The limit is per robot.
    wx.add_robot("second");
    let other = format!("{}/cgi-bin/webhook/send?key=second", wx.base_url);
    assert_errcode(&post_json(&other, &body).await, 0);
}
