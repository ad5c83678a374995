//! Injected faults, call counting and unknown paths.

use std::time::{Duration, Instant};

use fakes::{FakeWechat, Fault};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, get_json};

const SEND: &str = "/cgi-bin/webhook/send";

async fn setup() -> (FakeWechat, String) {
    let wx = FakeWechat::start().await;
    wx.add_robot("k");
    let url = format!("{}{SEND}?key=k", wx.base_url);
    (wx, url)
}

fn text() -> Value {
    json!({"msgtype": "text", "text": {"content": "hi"}})
}

async fn post(url: &str) -> reqwest::Result<reqwest::Response> {
    client().post(url).json(&text()).send().await
}

#[tokio::test]
async fn errcode_fault_answers_the_code_once_then_handles_normally() {
    let (wx, url) = setup().await;
    wx.inject(SEND, Fault::Errcode(-1));
    let body: Value = post(&url).await.unwrap().json().await.unwrap();
    let msg = assert_errcode(&body, -1);
    assert!(msg.starts_with("system busy"), "{msg}");
    let body: Value = post(&url).await.unwrap().json().await.unwrap();
    assert_errcode(&body, 0);
    assert_eq!(wx.calls(SEND), 2);
    assert_eq!(wx.deliveries().len(), 1);
    assert!(wx.problems().is_empty(), "faults are not problems: {:?}", wx.problems());
}

#[tokio::test]
async fn faults_fire_in_fifo_order_per_path() {
    let (wx, url) = setup().await;
    wx.inject(SEND, Fault::Errcode(45009));
    wx.inject(SEND, Fault::HttpStatus(502));
    wx.inject("/cgi-bin/gettoken", Fault::Errcode(-1));
    let first: Value = post(&url).await.unwrap().json().await.unwrap();
    assert_errcode(&first, 45009);
    let second = post(&url).await.unwrap();
    assert_eq!(second.status(), 502);
    assert!(second.text().await.unwrap().contains("502 Bad Gateway"));
    assert_eq!(post(&url).await.unwrap().status(), 200);
    assert_eq!(wx.deliveries().len(), 1);
    // The gettoken fault is still waiting for its own path.
    let token = get_json(&format!("{}/cgi-bin/gettoken?corpid=a&corpsecret=b", wx.base_url)).await;
    assert_errcode(&token, -1);
}

#[tokio::test]
async fn delay_fault_sleeps_then_handles_normally() {
    let (wx, url) = setup().await;
    wx.inject(SEND, Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let body: Value = post(&url).await.unwrap().json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_errcode(&body, 0);
    assert_eq!(wx.deliveries().len(), 1);
}

#[tokio::test]
async fn delay_longer_than_the_client_timeout_is_a_client_timeout() {
    let (wx, url) = setup().await;
    wx.inject(SEND, Fault::Delay(Duration::from_millis(800)));
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let err = quick.post(&url).json(&text()).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn drop_fault_gives_the_client_an_error_not_a_response() {
    let (wx, url) = setup().await;
    wx.inject(SEND, Fault::Drop);
    let outcome = post(&url).await;
    assert!(outcome.is_err(), "expected a transport error, got {outcome:?}");
    assert_eq!(wx.calls(SEND), 1);
    assert!(wx.deliveries().is_empty());
    // The server is still fine afterwards.
    assert_eq!(post(&url).await.unwrap().status(), 200);
}

#[tokio::test]
async fn drop_fault_on_a_get_and_an_ilink_path() {
    let wx = FakeWechat::start().await;
    wx.inject("/cgi-bin/gettoken", Fault::Drop);
    wx.inject("/ilink/bot/sendmessage", Fault::Drop);
    let get = client().get(format!("{}/cgi-bin/gettoken?corpid=a&corpsecret=b", wx.base_url)).send().await;
    assert!(get.is_err(), "{get:?}");
    let ilink = client().post(format!("{}/ilink/bot/sendmessage", wx.base_url)).body("{}").send().await;
    assert!(ilink.is_err(), "{ilink:?}");
}

#[tokio::test]
async fn errcode_faults_take_each_platform_shape() {
    let wx = FakeWechat::start().await;
    let ilink = format!("{}/ilink/bot/sendmessage", wx.base_url);
    wx.inject("/ilink/bot/sendmessage", Fault::Errcode(-14));
    wx.inject("/ilink/bot/sendmessage", Fault::Errcode(-2));
    let first: Value = client().post(&ilink).body("{}").send().await.unwrap().json().await.unwrap();
    assert_eq!(first, json!({"errcode": -14, "errmsg": "session timeout"}));
    let second: Value = client().post(&ilink).body("{}").send().await.unwrap().json().await.unwrap();
    assert_eq!(second, json!({"ret": -2, "errmsg": "prepare failed"}));

    wx.inject("/cgi-bin/message/custom/send", Fault::Errcode(45015));
    let oa: Value = client()
        .post(format!("{}/cgi-bin/message/custom/send?access_token=x", wx.base_url))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msg = assert_errcode(&oa, 45015);
    assert!(msg.starts_with("response out of time limit"), "{msg}");
    assert!(msg.contains("rid: "), "{msg}");
}

#[tokio::test]
async fn unknown_paths_are_404_and_reported() {
    let wx = FakeWechat::start().await;
    let resp = client().post(format!("{}/cgi-bin/nothing/here", wx.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client().post(format!("{}/ilink/bot/msg/notifystart", wx.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(wx.calls("/cgi-bin/nothing/here"), 1);
    assert_eq!(wx.problems().len(), 2, "{:?}", wx.problems());
}

#[tokio::test]
async fn base_url_has_no_trailing_slash() {
    let wx = FakeWechat::start().await;
    assert!(wx.base_url.starts_with("http://127.0.0.1:"));
    assert!(!wx.base_url.ends_with('/'));
}

/// Once asked to, the fake logs each request with its answer: JSON bodies as JSON, the query as
/// sent, and a dropped connection as such; nothing is logged before.
#[tokio::test]
async fn recorded_exchanges_keep_each_request_and_its_answer() {
    let (wx, url) = setup().await;
    post(&url).await.unwrap();
    wx.record_exchanges();
    post(&url).await.unwrap();
    wx.inject(SEND, Fault::Drop);
    let _ = post(&url).await;
    wx.inject(SEND, Fault::Errcode(-1));
    post(&url).await.unwrap();
    let log = wx.take_exchanges();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!((log[0].method.as_str(), log[0].path.as_str(), log[0].status), ("POST", SEND, 200));
    assert_eq!(log[0].query, vec![("key".to_owned(), "k".to_owned())]);
    assert_eq!(log[0].request, text());
    assert_eq!(log[0].response["errcode"], 0);
    assert_eq!(log[1].response, json!("(connection dropped)"));
    assert_eq!(log[2].response["errcode"], -1);
    assert_eq!(wx.take_exchanges(), vec![], "taken once");
    post(&url).await.unwrap();
    assert_eq!(wx.take_exchanges().len(), 1, "logging goes on");
}

/// A long answer (here a 微信客服 pull of a 70 KB message) passes through whole while the fake
/// logs it by its size.
#[tokio::test]
async fn a_long_answer_passes_through_while_logged_by_size() {
    let wx = FakeWechat::start().await;
    wx.add_wecom_app("ww1", "s3cret", 1000002);
    wx.add_kf_account("ww1", "wk1");
    let long = "长".repeat(24_000);
    wx.kf_customer_says("wk1", "wm1", &long);
    wx.record_exchanges();
    let token = get_json(&format!("{}/cgi-bin/gettoken?corpid=ww1&corpsecret=s3cret", wx.base_url)).await;
    let url = format!("{}/cgi-bin/kf/sync_msg?access_token={}", wx.base_url, token["access_token"].as_str().unwrap());
    let pulled: Value =
        client().post(&url).json(&json!({"open_kfid": "wk1"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(pulled["msg_list"][0]["text"]["content"], long.as_str(), "the answer is whole");
    let log = wx.take_exchanges();
    let logged = log[1].response.as_str().unwrap();
    assert!(logged.starts_with('(') && logged.ends_with(" bytes)"), "{logged}");
}
