//! Official Account: stable_token, the refused cgi-bin/token, custom/send and custom/typing.

use fakes::{Api, FakeWechat};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, post_json};

const APP: &str = "wx1234567890abcdef";
const SECRET: &str = "oa-secret";
const USER: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

async fn setup() -> FakeWechat {
    let wx = FakeWechat::start().await;
    wx.add_oa(APP, SECRET);
    wx.add_oa_user(USER);
    wx
}

async fn stable_token(wx: &FakeWechat, force: bool) -> Value {
    post_json(
        &format!("{}/cgi-bin/stable_token", wx.base_url),
        &json!({"grant_type": "client_credential", "appid": APP, "secret": SECRET, "force_refresh": force}),
    )
    .await
}

fn send_url(wx: &FakeWechat, token: &str) -> String {
    format!("{}/cgi-bin/message/custom/send?access_token={token}", wx.base_url)
}

fn text(content: &str) -> Value {
    json!({"touser": USER, "msgtype": "text", "text": {"content": content}})
}

#[tokio::test]
async fn stable_token_normal_mode_and_force_refresh() {
    let wx = setup().await;
    let first = stable_token(&wx, false).await;
    assert!(first.get("errcode").is_none(), "success has no errcode: {first}");
    assert_eq!(first["expires_in"], 7200);
    let again = stable_token(&wx, false).await;
    assert_eq!(first["access_token"], again["access_token"]);

    let forced = stable_token(&wx, true).await;
    assert_ne!(forced["access_token"], first["access_token"]);
    let old = first["access_token"].as_str().unwrap();
    assert_errcode(&post_json(&send_url(&wx, old), &text("hi")).await, 40001);
    let new = forced["access_token"].as_str().unwrap();
    assert_errcode(&post_json(&send_url(&wx, new), &text("hi")).await, 0);
}

#[tokio::test]
async fn stable_token_rejects_bad_credentials() {
    let wx = setup().await;
    let url = format!("{}/cgi-bin/stable_token", wx.base_url);
    let wrong = post_json(&url, &json!({"grant_type": "client_credential", "appid": APP, "secret": "x"})).await;
    let msg = assert_errcode(&wrong, 40125);
    assert!(msg.contains("rid: "), "{msg}");
    assert_errcode(
        &post_json(&url, &json!({"grant_type": "client_credential", "appid": "wxnope", "secret": SECRET})).await,
        40013,
    );
    assert_errcode(&post_json(&url, &json!({"grant_type": "password", "appid": APP, "secret": SECRET})).await, 40002);
    assert_errcode(&post_json(&url, &json!({"grant_type": "client_credential", "secret": SECRET})).await, 41002);
    assert_eq!(wx.problems().len(), 4, "{:?}", wx.problems());
}

#[tokio::test]
async fn plain_token_endpoint_is_refused_and_reported() {
    let wx = setup().await;
    let url = format!("{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={SECRET}", wx.base_url);
    let body: Value = client().get(&url).send().await.unwrap().json().await.unwrap();
    let msg = assert_errcode(&body, 48001);
    assert!(msg.contains("stable_token"), "{msg}");
    let problems = wx.problems();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("stable_token"), "{problems:?}");
}

#[tokio::test]
async fn custom_send_accepts_text_image_and_one_article() {
    let wx = setup().await;
    wx.set_token_ttl(300);
    let token = stable_token(&wx, false).await;
    assert_eq!(token["expires_in"], 300);
    let url = send_url(&wx, token["access_token"].as_str().unwrap());
    let image_id = wx.add_oa_media(APP, b"\xFF\xD8\xFF\xE0 jpeg".to_vec(), "p.jpg", "image/jpeg");
    let bodies = [
        text("hello"),
        json!({"touser": USER, "msgtype": "image", "image": {"media_id": image_id}}),
        json!({"touser": USER, "msgtype": "news", "news": {"articles": [{"title": "t", "url": "https://example.com"}]}}),
    ];
    for body in &bodies {
        let answer = post_json(&url, body).await;
        assert_errcode(&answer, 0);
        assert_eq!(answer["errmsg"], "ok");
    }
    let sent = wx.deliveries_of(Api::OaCustom);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].account, APP);
    assert_eq!(sent[0].body, text("hello"));
    assert!(wx.problems().is_empty(), "{:?}", wx.problems());
}

#[tokio::test]
async fn custom_send_checks() {
    let wx = setup().await;
    let token = stable_token(&wx, false).await["access_token"].as_str().unwrap().to_owned();
    let base = &wx.base_url;
    assert_errcode(&post_json(&format!("{base}/cgi-bin/message/custom/send"), &text("x")).await, 41001);
    assert_errcode(&post_json(&send_url(&wx, "bogus"), &text("x")).await, 40001);

    wx.add_wecom_app("ww1", "s", 1);
    let wecom: Value = client()
        .get(format!("{base}/cgi-bin/gettoken?corpid=ww1&corpsecret=s"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_errcode(&post_json(&send_url(&wx, wecom["access_token"].as_str().unwrap()), &text("x")).await, 40001);

    let url = send_url(&wx, &token);
    let cases: Vec<(Value, i64)> = vec![
        (json!({"touser": "oSomeoneElse", "msgtype": "text", "text": {"content": "x"}}), 40003),
        (json!({"msgtype": "text", "text": {"content": "x"}}), 40003),
        (text(""), 44004),
        (text(&"x".repeat(2049)), 45002),
        (json!({"touser": USER, "msgtype": "file", "file": {"media_id": "m"}}), 40008),
        (json!({"touser": USER, "msgtype": "voice", "voice": {"media_id": "m"}}), 40007),
        (json!({"touser": USER, "msgtype": "image", "image": {}}), 40007),
        (json!({"touser": USER, "msgtype": "news", "news": {"articles": []}}), 44003),
        (
            json!({"touser": USER, "msgtype": "news", "news": {"articles": [
            {"title": "a", "url": "https://a"}, {"title": "b", "url": "https://b"}]}}),
            45008,
        ),
        (json!({"touser": USER, "msgtype": "news", "news": {"articles": [{"title": "a"}]}}), 47001),
    ];
    let n = cases.len();
    for (body, code) in cases {
        let answer = post_json(&url, &body).await;
        assert_eq!(answer["errcode"], code, "request {body} answered {answer}");
    }
    wx.expire_tokens();
    assert_errcode(&post_json(&url, &text("x")).await, 42001);
    assert_eq!(wx.problems().len(), n + 4, "{:#?}", wx.problems());
    assert!(wx.deliveries().is_empty());
}

#[tokio::test]
async fn typing() {
    let wx = setup().await;
    let token = stable_token(&wx, false).await["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/cgi-bin/message/custom/typing?access_token={token}", wx.base_url);
    assert_errcode(&post_json(&url, &json!({"touser": USER, "command": "Typing"})).await, 0);
    assert_errcode(&post_json(&url, &json!({"touser": USER, "command": "CancelTyping"})).await, 0);
    assert_errcode(&post_json(&url, &json!({"touser": USER, "command": "typing"})).await, 45072);
    assert_errcode(&post_json(&url, &json!({"touser": "oNobody", "command": "Typing"})).await, 40003);
    assert_eq!(wx.deliveries_of(Api::OaTyping).len(), 2);
    assert_eq!(wx.problems().len(), 2);
}
