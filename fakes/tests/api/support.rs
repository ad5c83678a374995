//! Small helpers shared by the API tests.

use std::time::Duration;

use serde_json::Value;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("reqwest client")
}

/// GET and parse the body as JSON (WeChat answers errors with HTTP 200 too).
pub async fn get_json(url: &str) -> Value {
    let resp = client().get(url).send().await.expect("GET");
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json().await.expect("JSON body")
}

pub async fn post_json(url: &str, body: &Value) -> Value {
    let resp = client().post(url).json(body).send().await.expect("POST");
    assert_eq!(resp.status(), 200, "POST {url}");
    resp.json().await.expect("JSON body")
}

pub async fn post_raw(url: &str, body: &'static str) -> Value {
    let resp = client().post(url).header("content-type", "application/json").body(body).send().await.expect("POST");
    resp.json().await.expect("JSON body")
}

/// Asserts an errcode body and returns its errmsg.
#[track_caller]
pub fn assert_errcode(body: &Value, code: i64) -> String {
    assert_eq!(body["errcode"], code, "expected errcode {code}, got {body}");
    body["errmsg"].as_str().unwrap_or_default().to_owned()
}
