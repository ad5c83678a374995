//! WeCom gettoken, message/send and appchat.

use fakes::{Api, FakeWechat};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, get_json, post_json, post_raw};

const CORP: &str = "ww0123456789abcdef";
const SECRET: &str = "app-secret";
const AGENT: u32 = 1000002;

async fn setup() -> FakeWechat {
    let wx = FakeWechat::start().await;
    wx.add_wecom_app(CORP, SECRET, AGENT);
    wx.add_wecom_user("alice");
    wx.add_wecom_user("bob");
    wx
}

async fn token(wx: &FakeWechat) -> String {
    let body = get_json(&format!("{}/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRET}", wx.base_url)).await;
    assert_errcode(&body, 0);
    body["access_token"].as_str().expect("access_token").to_owned()
}

fn send_url(wx: &FakeWechat, token: &str) -> String {
    format!("{}/cgi-bin/message/send?access_token={token}", wx.base_url)
}

fn text(content: &str) -> Value {
    json!({"touser": "alice", "msgtype": "text", "agentid": AGENT, "text": {"content": content}})
}

#[tokio::test]
async fn gettoken_returns_the_same_token_while_valid_and_counts_calls() {
    let wx = setup().await;
    let url = format!("{}/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRET}", wx.base_url);
    let first = get_json(&url).await;
    assert_eq!(first["errmsg"], "ok");
    assert_eq!(first["expires_in"], 7200);
    let second = get_json(&url).await;
    assert_eq!(first["access_token"], second["access_token"]);
    assert_eq!(wx.calls("/cgi-bin/gettoken"), 2);
    assert!(wx.problems().is_empty(), "{:?}", wx.problems());
}

#[tokio::test]
async fn gettoken_rejects_bad_credentials() {
    let wx = setup().await;
    let base = &wx.base_url;
    let msg =
        assert_errcode(&get_json(&format!("{base}/cgi-bin/gettoken?corpid=nope&corpsecret={SECRET}")).await, 40013);
    assert!(msg.contains("devtool/query?e=40013"), "{msg}");
    assert_errcode(&get_json(&format!("{base}/cgi-bin/gettoken?corpid={CORP}&corpsecret=wrong")).await, 40001);
    assert_errcode(&get_json(&format!("{base}/cgi-bin/gettoken?corpsecret=x")).await, 41002);
    assert_errcode(&get_json(&format!("{base}/cgi-bin/gettoken?corpid={CORP}")).await, 41004);
    assert_eq!(wx.problems().len(), 4, "{:?}", wx.problems());
}

#[tokio::test]
async fn token_ttl_and_expiry() {
    let wx = setup().await;
    wx.set_token_ttl(600);
    let url = format!("{}/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRET}", wx.base_url);
    let body = get_json(&url).await;
    assert_eq!(body["expires_in"], 600);
    let old = body["access_token"].as_str().unwrap().to_owned();

    wx.expire_tokens();
    assert_errcode(&post_json(&send_url(&wx, &old), &text("hi")).await, 42001);
    let fresh = token(&wx).await;
    assert_ne!(fresh, old, "an expired token is not handed out again");
    assert_errcode(&post_json(&send_url(&wx, &fresh), &text("hi")).await, 0);
}

#[tokio::test]
async fn message_send_accepts_a_well_formed_text() {
    let wx = setup().await;
    let t = token(&wx).await;
    let body = post_json(&send_url(&wx, &t), &text("hello")).await;
    assert_errcode(&body, 0);
    assert_eq!(body["invaliduser"], "");
    assert!(body["msgid"].as_str().is_some_and(|m| !m.is_empty()));
    let deliveries = wx.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].api, Api::WecomMessage);
    assert_eq!(deliveries[0].account, CORP);
    assert_eq!(deliveries[0].body, text("hello"));
    assert!(wx.problems().is_empty(), "{:?}", wx.problems());
}

#[tokio::test]
async fn message_send_token_checks() {
    let wx = setup().await;
    let base = &wx.base_url;
    assert_errcode(&post_json(&format!("{base}/cgi-bin/message/send"), &text("x")).await, 41001);
    assert_errcode(&post_json(&send_url(&wx, "made-up"), &text("x")).await, 40014);
    // An OA token is no WeCom token.
    wx.add_oa("wxoa", "oasecret");
    let oa = post_json(
        &format!("{base}/cgi-bin/stable_token"),
        &json!({"grant_type": "client_credential", "appid": "wxoa", "secret": "oasecret", "force_refresh": false}),
    )
    .await;
    let oa_token = oa["access_token"].as_str().unwrap();
    assert_errcode(&post_json(&send_url(&wx, oa_token), &text("x")).await, 40014);
    assert_eq!(wx.problems().len(), 3, "{:?}", wx.problems());
    assert!(wx.deliveries().is_empty());
}

#[tokio::test]
async fn message_send_field_checks() {
    let wx = setup().await;
    wx.add_wecom_app(CORP, "other-secret", 1000005);
    let t = token(&wx).await;
    let url = send_url(&wx, &t);
    let cases: Vec<(Value, i64)> = vec![
        (json!({"touser": "alice", "msgtype": "text", "agentid": 1000005, "text": {"content": "x"}}), 40056),
        (json!({"touser": "alice", "msgtype": "text", "agentid": "1000002", "text": {"content": "x"}}), 40056),
        (json!({"touser": "alice", "msgtype": "text", "text": {"content": "x"}}), 40056),
        (json!({"touser": "alice", "msgtype": "sticker", "agentid": AGENT}), 40008),
        (json!({"touser": "alice", "agentid": AGENT, "text": {"content": "x"}}), 40008),
        (text(""), 44004),
        (json!({"touser": "alice", "msgtype": "text", "agentid": AGENT}), 44004),
        (json!({"touser": "alice", "msgtype": "text", "agentid": AGENT, "text": {"content": 5}}), 40058),
        (text(&"x".repeat(2049)), 45002),
        (
            json!({"touser": "alice", "msgtype": "markdown", "agentid": AGENT, "markdown": {"content": "é".repeat(1025)}}),
            45002,
        ),
        (json!({"msgtype": "text", "agentid": AGENT, "text": {"content": "x"}}), 40003),
        (json!({"touser": "mallory|eve", "msgtype": "text", "agentid": AGENT, "text": {"content": "x"}}), 81013),
        (json!({"toparty": "2", "msgtype": "text", "agentid": AGENT, "text": {"content": "x"}}), 81013),
        (json!({"touser": ["alice"], "msgtype": "text", "agentid": AGENT, "text": {"content": "x"}}), 40058),
        (json!({"touser": "alice", "msgtype": "image", "agentid": AGENT, "image": {}}), 40007),
        (json!({"touser": "alice", "msgtype": "file", "agentid": AGENT, "file": {"media_id": 1}}), 40007),
        (json!({"touser": "alice", "msgtype": "news", "agentid": AGENT, "news": {"articles": []}}), 44003),
        (
            json!({"touser": "alice", "msgtype": "news", "agentid": AGENT,
                "news": {"articles": vec![json!({"title": "t", "url": "https://x"}); 9]}}),
            45008,
        ),
        (
            json!({"touser": "alice", "msgtype": "news", "agentid": AGENT,
                "news": {"articles": [{"title": "t"}]}}),
            40058,
        ),
        (
            json!({"touser": "alice", "msgtype": "textcard", "agentid": AGENT,
                "textcard": {"title": "t", "description": "d"}}),
            40058,
        ),
        (json!({"touser": "alice", "msgtype": "template_card", "agentid": AGENT, "template_card": {}}), 40058),
    ];
    let n = cases.len();
    for (body, code) in cases {
        let answer = post_json(&url, &body).await;
        assert_eq!(answer["errcode"], code, "request {body} answered {answer}");
    }
    assert_errcode(&post_raw(&url, "{not json").await, 47001);
    let get = client().get(&url).send().await.unwrap().json::<Value>().await.unwrap();
    assert_errcode(&get, 43002);
    assert_eq!(wx.problems().len(), n + 2, "{:#?}", wx.problems());
    assert!(wx.deliveries().is_empty());
}

#[tokio::test]
async fn message_send_accepts_every_supported_msgtype() {
    let wx = setup().await;
    let t = token(&wx).await;
    let url = send_url(&wx, &t);
    let image = wx.add_wecom_media(CORP, b"\x89PNG\r\n\x1a\n image".to_vec(), "a.png", "image/png");
    let voice = wx.add_wecom_media(CORP, b"#!AMR\n voice".to_vec(), "a.amr", "audio/amr");
    let video = wx.add_wecom_media(CORP, b"\0\0\0\x18ftypmp42 video".to_vec(), "a.mp4", "video/mp4");
    let file = wx.add_wecom_media(CORP, b"%PDF-1.7 file".to_vec(), "a.pdf", "application/pdf");
    let objects = [
        ("text", json!({"content": "x".repeat(2048)})),
        ("markdown", json!({"content": "**hi**"})),
        ("image", json!({"media_id": image})),
        ("voice", json!({"media_id": voice})),
        ("video", json!({"media_id": video, "title": "t", "description": "d"})),
        ("file", json!({"media_id": file})),
        ("news", json!({"articles": [{"title": "t", "url": "https://example.com"}]})),
        ("textcard", json!({"title": "t", "description": "d", "url": "https://example.com", "btntxt": "more"})),
        ("template_card", json!({"card_type": "text_notice"})),
    ];
    for (msgtype, object) in objects {
        let mut body = json!({"touser": "alice|bob", "msgtype": msgtype, "agentid": AGENT});
        body[msgtype] = object;
        let answer = post_json(&url, &body).await;
        assert_errcode(&answer, 0);
    }
    assert_eq!(wx.deliveries_of(Api::WecomMessage).len(), 9);
    assert!(wx.problems().is_empty(), "{:?}", wx.problems());
}

#[tokio::test]
async fn message_send_partial_failure_is_errcode_0() {
    let wx = setup().await;
    let t = token(&wx).await;
    let body = json!({"touser": "alice|mallory|eve", "toparty": "7", "msgtype": "text", "agentid": AGENT,
                      "text": {"content": "x"}});
    let answer = post_json(&send_url(&wx, &t), &body).await;
    assert_errcode(&answer, 0);
    assert_eq!(answer["invaliduser"], "mallory|eve");
    assert_eq!(answer["invalidparty"], "7");
    let all = json!({"touser": "@all", "msgtype": "text", "agentid": AGENT, "text": {"content": "x"}});
    assert_errcode(&post_json(&send_url(&wx, &t), &all).await, 0);
    assert_eq!(wx.deliveries().len(), 2);
}

#[tokio::test]
async fn appchat_create_get_send() {
    let wx = setup().await;
    let t = token(&wx).await;
    let base = &wx.base_url;
    let create = format!("{base}/cgi-bin/appchat/create?access_token={t}");
    assert_errcode(&post_json(&create, &json!({"userlist": ["alice"]})).await, 86216);
    assert_errcode(&post_json(&create, &json!({"userlist": ["alice", "mallory"]})).await, 86216);
    assert_errcode(&post_json(&create, &json!({"userlist": ["alice", "bob"], "chatid": "bad-id!"})).await, 86001);
    let made = post_json(&create, &json!({"name": "ops", "userlist": ["alice", "bob"], "chatid": "ops1"})).await;
    assert_errcode(&made, 0);
    assert_eq!(made["chatid"], "ops1");
    assert_errcode(&post_json(&create, &json!({"userlist": ["alice", "bob"], "chatid": "ops1"})).await, 86215);
    let random = post_json(&create, &json!({"userlist": ["alice", "bob"]})).await;
    assert!(random["chatid"].as_str().is_some_and(|c| !c.is_empty()));

    let info = get_json(&format!("{base}/cgi-bin/appchat/get?access_token={t}&chatid=ops1")).await;
    assert_errcode(&info, 0);
    assert_eq!(info["chat_info"]["userlist"], json!(["alice", "bob"]));
    assert_eq!(info["chat_info"]["owner"], "alice");
    assert_errcode(&get_json(&format!("{base}/cgi-bin/appchat/get?access_token={t}&chatid=zzz")).await, 86003);

    let send = format!("{base}/cgi-bin/appchat/send?access_token={t}");
    let ok = json!({"chatid": "ops1", "msgtype": "text", "text": {"content": "hi"}});
    assert_errcode(&post_json(&send, &ok).await, 0);
    wx.add_appchat("preset", &["alice", "bob"]);
    let md = json!({"chatid": "preset", "msgtype": "markdown", "markdown": {"content": "# hi"}});
    assert_errcode(&post_json(&send, &md).await, 0);
    let unknown = json!({"chatid": "nochat", "msgtype": "text", "text": {"content": "hi"}});
    assert_errcode(&post_json(&send, &unknown).await, 86003);
    let card = json!({"chatid": "ops1", "msgtype": "template_card", "template_card": {"card_type": "text_notice"}});
    assert_errcode(&post_json(&send, &card).await, 40008);
    let empty = json!({"chatid": "ops1", "msgtype": "text", "text": {"content": ""}});
    assert_errcode(&post_json(&send, &empty).await, 44004);
    assert_errcode(&post_json(&format!("{base}/cgi-bin/appchat/send?access_token=nope"), &ok).await, 40014);

    let sent = wx.deliveries_of(Api::WecomAppchat);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].account, CORP);
    assert_eq!(wx.problems().len(), 9, "{:#?}", wx.problems());
}
