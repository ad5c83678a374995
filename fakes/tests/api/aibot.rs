//! The AI bot's single-use `response_url`.

use std::time::Duration;

use fakes::{Api, FakeWechat, Fault};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, post_json};

const PATH: &str = "/cgi-bin/aibot/response";

fn markdown(content: &str) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": content}})
}

fn code_of(url: &str) -> &str {
    url.split_once("response_code=").map(|(_, code)| code).expect("a response_code in the URL")
}

async fn post_with_type(url: &str, content_type: &str, body: &str) -> Value {
    let resp =
        client().post(url).header("content-type", content_type).body(body.to_owned()).send().await.expect("POST");
    assert_eq!(resp.status(), 200, "WeCom answers errors with HTTP 200");
    resp.json().await.expect("JSON body")
}

#[tokio::test]
async fn response_url_takes_one_message_and_refuses_the_second() {
    let wx = FakeWechat::start().await;
    let url = wx.aibot_response_url();
    assert!(url.starts_with(&format!("{}{PATH}?response_code=", wx.base_url)), "{url}");
    assert_ne!(url, wx.aibot_response_url(), "each call issues a new code");

    assert_eq!(post_json(&url, &markdown("**done**")).await, json!({"errcode": 0, "errmsg": "ok"}));
    let msg = assert_errcode(&post_json(&url, &markdown("again")).await, 846603);
    assert!(msg.starts_with("response_code already used"), "{msg}");

    let sent = wx.deliveries_of(Api::AibotResponse);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].account, code_of(&url));
    assert_eq!(sent[0].body, markdown("**done**"));
    assert_eq!(wx.aibot_response_refusals(), 1);
    assert_eq!(wx.problems().len(), 1, "{:#?}", wx.problems());
    assert!(wx.problems()[0].contains("already used"), "{:?}", wx.problems());
}

#[tokio::test]
async fn response_url_takes_a_template_card_and_markdown_with_feedback() {
    let wx = FakeWechat::start().await;
    let card =
        json!({"msgtype": "template_card", "template_card": {"card_type": "button_interaction", "task_id": "t1"}});
    assert_errcode(&post_json(&wx.aibot_response_url(), &card).await, 0);
    let with_feedback = json!({"msgtype": "markdown", "markdown": {"content": "hi", "feedback": {"id": "fb-1"}}});
    assert_errcode(&post_json(&wx.aibot_response_url(), &with_feedback).await, 0);
    assert_eq!(wx.deliveries_of(Api::AibotResponse).len(), 2);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
}

#[tokio::test]
async fn response_url_expires_after_its_ttl() {
    let wx = FakeWechat::start().await;
    wx.set_aibot_response_ttl(Duration::from_millis(100));
    let url = wx.aibot_response_url();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let msg = assert_errcode(&post_json(&url, &markdown("late")).await, 846602);
    assert!(msg.starts_with("response_code expired"), "{msg}");
    assert!(wx.deliveries().is_empty());
    assert_eq!(wx.aibot_response_refusals(), 0, "an expired code is not a reuse");
    assert_eq!(wx.problems().len(), 1, "{:#?}", wx.problems());
}

#[tokio::test]
async fn response_url_refuses_unknown_codes() {
    let wx = FakeWechat::start().await;
    let base = &wx.base_url;
    assert_errcode(&post_json(&format!("{base}{PATH}?response_code=nope"), &markdown("x")).await, 846601);
    assert_errcode(&post_json(&format!("{base}{PATH}"), &markdown("x")).await, 846601);
    assert_eq!(wx.problems().len(), 2, "{:#?}", wx.problems());
    assert_eq!(wx.aibot_response_refusals(), 0);
}

#[tokio::test]
async fn response_url_checks_type_body_and_limits_without_using_the_code_up() {
    let wx = FakeWechat::start().await;
    let url = wx.aibot_response_url();
    let body = markdown("x").to_string();
    assert_errcode(&post_with_type(&url, "text/plain", &body).await, 47001);
    assert_errcode(&post_with_type(&url, "application/json", "{not json").await, 47001);
    assert_errcode(&post_with_type(&url, "application/json", "").await, 44002);
    let over = format!("{}abc", "字".repeat(6826)); // 20 481 bytes
    let cases: Vec<(Value, i64)> = vec![
        (markdown(&over), 45002),
        (markdown(""), 44004),
        (json!({"msgtype": "markdown", "markdown": {}}), 44004),
        (json!({"msgtype": "text", "text": {"content": "x"}}), 40008),
        (json!({"msgtype": "stream", "stream": {"id": "s", "finish": true, "content": "x"}}), 40008),
        (json!({"msgtype": "template_card", "template_card": {"card_type": "nope"}}), 40058),
        (json!({"msgtype": "markdown", "markdown": {"content": "x", "feedback": {"id": "f".repeat(257)}}}), 40058),
    ];
    let n = cases.len();
    for (body, code) in cases {
        let answer = post_json(&url, &body).await;
        assert_eq!(answer["errcode"], code, "request {body} answered {answer}");
    }
    let get = client().get(&url).send().await.expect("GET").json::<Value>().await.expect("JSON");
    assert_errcode(&get, 43002);
    assert_eq!(wx.problems().len(), n + 4, "{:#?}", wx.problems());
    assert!(wx.deliveries().is_empty());

    // 20 480 bytes exactly is accepted, on the same URL: refused requests did not use it.
    let full = format!("{}ab", "字".repeat(6826));
    assert_eq!(full.len(), 20_480);
    assert_errcode(&post_with_type(&url, "application/json; charset=utf-8", &markdown(&full).to_string()).await, 0);
    assert_eq!(wx.deliveries_of(Api::AibotResponse).len(), 1);
    assert_eq!(wx.aibot_response_refusals(), 0);
}

#[tokio::test]
async fn injected_faults_apply_to_the_response_url() {
    let wx = FakeWechat::start().await;
    let url = wx.aibot_response_url();
    wx.inject(PATH, Fault::Errcode(-1));
    wx.inject(PATH, Fault::HttpStatus(502));
    assert_errcode(&post_json(&url, &markdown("x")).await, -1);
    let resp = client().post(&url).json(&markdown("x")).send().await.expect("POST");
    assert_eq!(resp.status(), 502);
    // A fault does not reach the handler, so the code is still unused.
    assert_errcode(&post_json(&url, &markdown("x")).await, 0);
    assert_eq!(wx.calls(PATH), 3);
    assert_eq!(wx.deliveries_of(Api::AibotResponse).len(), 1);
    assert!(wx.problems().is_empty(), "faults are not problems: {:?}", wx.problems());
}
