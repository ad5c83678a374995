//! The http and openai bots against local endpoints that check what a real one would.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use serde_json::{json, Value};
use shared::core::bot::BotConfig;
use shared::core::envelope::{Content, Inbound};
use shared::services::bots::{webhook_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn inbound(text: Option<&str>) -> Inbound {
    let mut value = json!({"v": 1, "id": "wecom:hr:1", "channel": "wecom", "account": "hr",
        "conversation": {"kind": "direct", "id": "WangFang"}, "sender": {"id": "WangFang"}, "kind": "text",
        "received_at": "2026-11-21T00:00:00Z", "sent_at": 1, "raw": {}});
    match text {
        Some(text) => value["text"] = text.into(),
        None => value["kind"] = "image".into(),
    }
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn the_http_bot_signs_its_call_and_reads_replies_or_no_content() {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .route(
            "/bot",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                seen.lock().unwrap().push((headers.clone(), body.clone()));
                let timestamp = headers[TIMESTAMP_HEADER].to_str().unwrap().to_owned();
                let expected = webhook_signature(&SecretString::from("hook-secret".to_owned()), &timestamp, &body);
                if headers[SIGNATURE_HEADER].to_str().unwrap() != expected {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                let inbound: Value = serde_json::from_str(&body).unwrap();
                match inbound["text"].as_str() {
                    Some("quiet") => (StatusCode::NO_CONTENT, String::new()),
                    Some("break") => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    Some("shrug") => (StatusCode::OK, "{}".to_owned()),
                    Some(text) => (StatusCode::OK, json!({"replies": [{"type": "text", "text": format!("got {text}")}, {"type": "markdown", "text": "**2**"}]}).to_string()),
                    None => (StatusCode::OK, json!({"replies": [{"type": "sticker"}]}).to_string()),
                }
            }),
        )
        .with_state(seen.clone());
    let url = serve(router).await;
    let bot = shared::services::bots::from_config(
        &BotConfig::Http { url: format!("{url}/bot"), secret: SecretString::from("hook-secret".to_owned()) },
        &shared::services::bots::http_client().unwrap(),
    );
    let replies = bot.answer(&inbound(Some("ping"))).await.unwrap();
    assert_eq!(replies, [Content::Text { text: "got ping".into() }, Content::Markdown { text: "**2**".into() }]);
    assert!(bot.answer(&inbound(Some("quiet"))).await.unwrap().is_empty());
    assert!(bot.answer(&inbound(Some("break"))).await.is_err(), "a failing bot is retried, not ignored");
    assert!(
        bot.answer(&inbound(Some("shrug"))).await.is_err(),
        "an answer without replies is retried, not taken as silence"
    );
    assert!(bot.answer(&inbound(None)).await.is_err(), "replies that are not Outbound contents are an error");
    let wrong = shared::services::bots::from_config(
        &BotConfig::Http { url: format!("{url}/bot"), secret: SecretString::from("other".to_owned()) },
        &shared::services::bots::http_client().unwrap(),
    );
    assert!(wrong.answer(&inbound(Some("ping"))).await.is_err());
    let (headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], "wecom:hr:1");
}

#[tokio::test]
async fn the_openai_bot_keeps_one_session_per_conversation() {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                seen.lock().unwrap().push((headers.clone(), body.clone()));
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
                    return (StatusCode::UNAUTHORIZED, json!({"error": {"message": "bad key"}}).to_string());
                }
                let request: Value = serde_json::from_str(&body).unwrap();
                let text =
                    request["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
                (
                    StatusCode::OK,
                    json!({"choices": [{"message": {"role": "assistant", "content": format!("  you said {text} ")}}]})
                        .to_string(),
                )
            }),
        )
        .with_state(seen.clone());
    let url = serve(router).await;
    let config = BotConfig::OpenAi {
        base_url: url.clone(),
        api_key: SecretString::from("sk-test".to_owned()),
        model: "claw-1".into(),
        system_prompt: Some("Be brief.".into()),
    };
    let bot = shared::services::bots::from_config(&config, &shared::services::bots::http_client().unwrap());
    assert_eq!(bot.answer(&inbound(Some("你好"))).await.unwrap(), [Content::Text { text: "you said 你好".into() }]);
    assert!(bot.answer(&inbound(None)).await.unwrap().is_empty(), "nothing to say to an image");
    assert_eq!(seen.lock().unwrap().len(), 1, "no call without text");
    let request: Value = serde_json::from_str(&seen.lock().unwrap()[0].1).unwrap();
    assert_eq!(request["model"], "claw-1");
    assert_eq!(request["user"], "wxbridge:wecom:hr:WangFang");
    assert_eq!(request["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(request["messages"][1], json!({"role": "user", "content": "你好"}));
    let wrong_key = shared::services::bots::from_config(
        &BotConfig::OpenAi {
            base_url: url,
            api_key: SecretString::from("sk-wrong".to_owned()),
            model: "m".into(),
            system_prompt: None,
        },
        &shared::services::bots::http_client().unwrap(),
    );
    let err = wrong_key.answer(&inbound(Some("x"))).await.unwrap_err();
    assert!(!err.to_string().contains("sk-wrong"), "{err}");
}
