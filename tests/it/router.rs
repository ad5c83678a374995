//! The router in front of the bots, against a local chat-completions endpoint and the
//! emulator's DynamoDB: bots picked per account and group, allow-lists, spending limits,
//! conversation memory (bridge history, a gateway's own sessions) and the reset command.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use shared::adapters::aws::{DynamoConversations, DynamoCounters, Table};
use shared::adapters::memory::MemoryMetrics;
use shared::channels::Config;
use shared::core::bot::Bot;
use shared::core::envelope::{Content, Inbound};
use shared::core::ports::{Conversations, SystemClock};
use shared::services::bots::BotPorts;
use shared::services::router::{Router, RouterPorts};
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

use crate::support::Stack;

/// What the endpoint saw: each request's headers and JSON body.
type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A chat-completions endpoint that checks the key and answers "<model>: <last user text>",
/// after `delay_ms` when the text asks for it ("slow").
async fn endpoint(seen: Seen) -> String {
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                let request: Value = match serde_json::from_str(&body) {
                    Ok(request) => request,
                    Err(_) => return (StatusCode::BAD_REQUEST, String::new()),
                };
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                let messages = request["messages"].as_array().cloned().unwrap_or_default();
                let last = messages.last().and_then(|m| m["content"].as_str()).unwrap_or_default().to_owned();
                seen.lock().unwrap().push((headers, request.clone()));
                if last.contains("slow") {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                let answer = format!("{}: {last}", request["model"].as_str().unwrap_or_default());
                let choice =
                    json!({"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"});
                (StatusCode::OK, json!({"choices": [choice]}).to_string())
            }),
        )
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A config with the WeCom app `hr` (its fields `extra` added) and the `bots` given.
fn config(extra: &str, bots: Value) -> Config {
    let document = format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}",
                        "encoding_aes_key": "{WECOM_AES_KEY}"{extra}}}],
            "bots": {bots}}}"#
    );
    Config::parse(&document).unwrap()
}

fn openai(url: &str, model: &str, more: Value) -> Value {
    let mut bot = json!({"kind": "openai", "base_url": url, "api_key": "sk-test", "model": model});
    for (key, value) in more.as_object().cloned().unwrap_or_default() {
        bot[key] = value;
    }
    bot
}

struct Rig {
    router: Router,
    metrics: Arc<MemoryMetrics>,
    conversations: Arc<DynamoConversations>,
}

fn rig(stack: &Stack, config: &Config) -> Rig {
    rig_at(stack, config, Arc::new(SystemClock))
}

/// A clock a test moves.
struct Manual(std::sync::atomic::AtomicU64);

impl shared::core::ports::Clock for Manual {
    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

fn rig_at(stack: &Stack, config: &Config, clock: Arc<dyn shared::core::ports::Clock>) -> Rig {
    let table = Table::from_sdk(&stack.sdk, &stack.names.table);
    let metrics = Arc::new(MemoryMetrics::default());
    let conversations = Arc::new(DynamoConversations::new(&table));
    let ports = RouterPorts {
        bots: BotPorts { media: None, conversations: Some(conversations.clone()), queue: None },
        counters: Some(Arc::new(DynamoCounters::new(&table))),
        metrics: metrics.clone(),
        clock,
    };
    let http = shared::services::bots::http_client().unwrap();
    Rig { router: Router::new(config, &http, ports), metrics, conversations }
}

/// A message to the app `hr`: in group `group` when given, from `sender`.
fn message(id: &str, group: Option<&str>, sender: &str, text: &str) -> Inbound {
    let conversation = match group {
        Some(group) => json!({"kind": "group", "id": group}),
        None => json!({"kind": "direct", "id": sender}),
    };
    serde_json::from_value(json!({"v": 1, "id": format!("wecom:hr:{id}"), "channel": "wecom", "account": "hr",
        "conversation": conversation, "sender": {"id": sender}, "kind": "text", "text": text,
        "received_at": "2026-11-29T00:00:00Z", "sent_at": 1, "raw": {}}))
    .unwrap()
}

fn texts(replies: &[Content]) -> Vec<String> {
    replies
        .iter()
        .map(|c| match c {
            Content::Text { text } => text.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The roles and texts of a request's messages.
fn said(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test]
async fn bridge_history_is_sent_capped_by_turns_and_bytes_and_cleared_by_the_reset_command() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let bots = json!({"default": openai(&url, "llm", json!({"history_turns": 4, "history_bytes": 1024}))});
    let rig = rig(&stack, &config("", bots));
    for (i, text) in ["一", "二", "三"].into_iter().enumerate() {
        let replies = rig.router.answer(&message(&format!("m{i}"), None, "WangFang", text)).await.unwrap();
        assert_eq!(texts(&replies), [format!("llm: {text}")]);
    }
    let requests: Vec<Value> = seen.lock().unwrap().iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(said(&requests[0]), [("user".into(), "一".into())]);
    assert_eq!(
        said(&requests[2]),
        [
            ("user".into(), "一".into()),
            ("assistant".into(), "llm: 一".into()),
            ("user".into(), "二".into()),
            ("assistant".into(), "llm: 二".into()),
            ("user".into(), "三".into()),
        ],
        "the last four turns, then the message"
    );
    // A message handled again (a redelivery) replaces its own turns instead of adding them.
    rig.router.answer(&message("m2", None, "WangFang", "三")).await.unwrap();
    rig.router.answer(&message("m3", None, "WangFang", "四")).await.unwrap();
    let last = said(&seen.lock().unwrap().last().unwrap().1);
    assert_eq!(last.iter().filter(|(_, t)| t == "三").count(), 1, "{last:?}");
    assert_eq!(last.len(), 5, "four turns kept: {last:?}");

    // The byte cap: one long turn pushes the older ones out.
    let long = "长".repeat(300);
    rig.router.answer(&message("m4", None, "WangFang", &long)).await.unwrap();
    rig.router.answer(&message("m5", None, "WangFang", "短")).await.unwrap();
    let last = said(&seen.lock().unwrap().last().unwrap().1);
    let bytes: usize = last[..last.len() - 1].iter().map(|(_, t)| t.len()).sum();
    assert!(bytes <= 1024, "{bytes} bytes of history");

    // The reset command: answered by the bridge, no call, and the history is gone.
    let calls = seen.lock().unwrap().len();
    let replies = rig.router.answer(&message("m6", None, "WangFang", " /new ")).await.unwrap();
    assert_eq!(texts(&replies), ["好的，我们重新开始吧。"]);
    assert_eq!(seen.lock().unwrap().len(), calls, "the reset calls no bot");
    rig.router.answer(&message("m7", None, "WangFang", "你好")).await.unwrap();
    assert_eq!(said(&seen.lock().unwrap().last().unwrap().1), [("user".into(), "你好".into())]);
}

/// Two messages of one conversation answered at the same time: both turns are kept.
#[tokio::test]
async fn two_turns_answered_at_once_are_both_remembered() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let rig = rig(&stack, &config("", json!({"default": openai(&url, "llm", json!({}))})));
    let (first, second) = (message("a", None, "LiLei", "slow 甲"), message("b", None, "LiLei", "slow 乙"));
    let (a, b) = tokio::join!(rig.router.answer(&first), rig.router.answer(&second));
    a.unwrap();
    b.unwrap();
    let state = rig.conversations.load("default#wxbridge:wecom:hr:LiLei").await.unwrap();
    let kept: Vec<&str> = state.turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(kept.len(), 4, "{kept:?}");
    for text in ["slow 甲", "slow 乙", "llm: slow 甲", "llm: slow 乙"] {
        assert!(kept.contains(&text), "{text} lost: {kept:?}");
    }
}

/// An OpenClaw gateway keeps the history itself: the bridge sends only the new message, the
/// stable `user` and the same key as `x-openclaw-session-key`; a reset moves to a new key. A
/// group's messages name their sender.
#[tokio::test]
async fn a_gateway_gets_the_session_key_and_a_new_one_after_a_reset() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let rig = rig(&stack, &config("", json!({"default": openai(&url, "openclaw/wechat", json!({}))})));
    rig.router.answer(&message("g1", Some("wrGroup1"), "ZhangSan", "明天开会吗")).await.unwrap();
    rig.router.answer(&message("g2", Some("wrGroup1"), "LiSi", "几点")).await.unwrap();
    let requests = seen.lock().unwrap().clone();
    for (headers, request) in &requests {
        assert_eq!(request["user"], "wxbridge:wecom:hr:wrGroup1");
        // The agent the model names owns the session (a bare key would be the default agent's).
        assert_eq!(headers["x-openclaw-session-key"], "agent:wechat:wxbridge:wecom:hr:wrGroup1");
    }
    assert_eq!(said(&requests[1].1), [("user".into(), "LiSi: 几点".into())], "no history resent, the speaker named");
    rig.router.answer(&message("g3", Some("wrGroup1"), "LiSi", "@bot /new")).await.unwrap();
    rig.router.answer(&message("g4", Some("wrGroup1"), "LiSi", "重新开始")).await.unwrap();
    let (headers, request) = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(request["user"], "wxbridge:wecom:hr:wrGroup1:1");
    assert_eq!(headers["x-openclaw-session-key"], "agent:wechat:wxbridge:wecom:hr:wrGroup1:1");
}

/// The account's bot, a group's own bot, and the default for the rest.
#[tokio::test]
async fn each_account_and_group_reaches_its_own_bot() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let bots = json!({"default": {"kind": "echo"},
                      "support": openai(&url, "support-llm", json!({"history": "none"})),
                      "ops": openai(&url, "ops-llm", json!({"history": "none"}))});
    let rig = rig(&stack, &config(r#", "bot": "support", "group_bots": {"wrOps": "ops"}"#, bots.clone()));
    let direct = rig.router.answer(&message("1", None, "WangFang", "请假")).await.unwrap();
    assert_eq!(texts(&direct), ["support-llm: 请假"]);
    let ops = rig.router.answer(&message("2", Some("wrOps"), "WangFang", "告警")).await.unwrap();
    assert_eq!(texts(&ops), ["ops-llm: WangFang: 告警"]);
    let other = rig.router.answer(&message("3", Some("wrOther"), "WangFang", "午饭")).await.unwrap();
    assert_eq!(texts(&other), ["support-llm: WangFang: 午饭"]);
    // An account that names no bot gets the default.
    let plain = rig_plain(&stack, bots);
    assert_eq!(texts(&plain.router.answer(&message("4", None, "WangFang", "你好")).await.unwrap()), ["你好"]);
    // A name the bots section does not have is a config error.
    let document = format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1, "token": "{WECOM_TOKEN}",
             "encoding_aes_key": "{WECOM_AES_KEY}", "bot": "nobody"}}]}}"#
    );
    let err = Config::parse(&document).unwrap_err().to_string();
    assert!(err.contains("wecom:hr.bot") && err.contains("nobody"), "{err}");
    let twice = Config::parse(r#"{"bot": {"kind": "echo"}, "bots": {"default": {"kind": "echo"}}}"#);
    assert!(twice.unwrap_err().to_string().contains("bots.default"));
}

fn rig_plain(stack: &Stack, bots: Value) -> Rig {
    rig(stack, &config("", bots))
}

/// Allow-lists: a stranger is refused with the configured reply, or silently; each refusal
/// is counted.
#[tokio::test]
async fn strangers_are_refused_with_the_reply_or_silently_and_counted() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let bots = json!({"default": openai(&url, "llm", json!({"history": "none"}))});
    let allow = r#", "allow": {"users": ["WangFang"], "groups": ["wrTeam"], "refusal": "抱歉，本助手仅对团队开放。"}"#;
    let rig = rig(&stack, &config(allow, bots.clone()));
    assert_eq!(texts(&rig.router.answer(&message("1", None, "WangFang", "hi")).await.unwrap()), ["llm: hi"]);
    let team = rig.router.answer(&message("2", Some("wrTeam"), "Stranger", "hi")).await.unwrap();
    assert_eq!(texts(&team), ["llm: Stranger: hi"], "anyone in a listed group");
    let refused = rig.router.answer(&message("3", None, "Stranger", "hi")).await.unwrap();
    assert_eq!(texts(&refused), ["抱歉，本助手仅对团队开放。"]);
    assert_eq!(seen.lock().unwrap().len(), 2, "no call for the stranger");
    let counted = rig.metrics.counts("Refused");
    assert_eq!(counted.len(), 1);
    assert!(counted[0].contains(&("reason".to_owned(), "user".to_owned())), "{counted:?}");

    let silent = rig_with(&stack, r#", "allow": {"chats": "groups"}"#, bots);
    assert!(silent.router.answer(&message("4", None, "WangFang", "hi")).await.unwrap().is_empty());
    assert_eq!(silent.metrics.counts("Refused").len(), 1);
}

fn rig_with(stack: &Stack, extra: &str, bots: Value) -> Rig {
    rig(stack, &config(extra, bots))
}

/// A burst over the per-minute limit: the bot is called exactly the allowed number of times,
/// whatever the concurrency, and the sender is told once.
#[tokio::test]
async fn a_burst_over_the_limit_calls_the_bot_the_allowed_times_and_notices_once() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let bot = openai(
        &url,
        "llm",
        json!({"history": "none",
        "limits": {"user_per_minute": 3, "notice": "太快了，请稍后再试。"}}),
    );
    let rig = rig(&stack, &config("", json!({"default": bot})));
    let burst: Vec<Inbound> = (0..10).map(|i| message(&format!("b{i}"), None, "Burst", &format!("第{i}条"))).collect();
    let answers = futures_util::future::join_all(burst.iter().map(|m| rig.router.answer(m))).await;
    let answers: Vec<Vec<String>> = answers.into_iter().map(|a| texts(&a.unwrap())).collect();
    let replies: Vec<String> = answers.iter().flatten().cloned().collect();
    assert_eq!(seen.lock().unwrap().len(), 3, "the bot was called the allowed number of times");
    assert_eq!(replies.iter().filter(|r| r.starts_with("llm: ")).count(), 3);
    assert_eq!(replies.iter().filter(|r| *r == "太快了，请稍后再试。").count(), 1, "{replies:?}");
    assert_eq!(rig.metrics.counts("OverLimit").len(), 7);
    // A message handled again (the queue delivering it twice) is not counted twice: one that
    // got through gets through again, one held back stays held back.
    let passed = answers.iter().position(|a| a.iter().any(|r| r.starts_with("llm: "))).unwrap();
    let held = answers.iter().position(|a| !a.iter().any(|r| r.starts_with("llm: "))).unwrap();
    assert_eq!(texts(&rig.router.answer(&burst[passed]).await.unwrap()), answers[passed]);
    assert!(rig
        .router
        .answer(&burst[held])
        .await
        .unwrap()
        .iter()
        .all(|r| !texts(std::slice::from_ref(r))[0].starts_with("llm: ")));
    assert_eq!(seen.lock().unwrap().len(), 4);
    // Another user is not held back by this one.
    let other = rig.router.answer(&message("o1", None, "Calm", "你好")).await.unwrap();
    assert_eq!(texts(&other), ["llm: 你好"]);
}

/// Every bot entry the README's "Choosing and wiring a bot" gives is a valid config.
#[test]
fn the_readmes_bot_entries_are_valid_configs() {
    let readme = include_str!("../../README.md");
    let start = readme.find("## Choosing and wiring a bot").expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let entries: Vec<&str> = section.split('`').filter(|span| span.starts_with(r#"{"kind""#)).collect();
    assert!(entries.len() >= 6, "{entries:?}");
    for entry in entries {
        let document = format!(r#"{{"bots": {{"default": {entry}}}}}"#);
        if let Err(err) = Config::parse(&document) {
            panic!("{entry}: {err}");
        }
    }
    let limits = section.split('`').find(|span| span.starts_with(r#""limits""#)).expect("the limits example");
    let document = format!(r#"{{"bots": {{"default": {{"kind": "echo", {limits}}}}}}}"#);
    assert!(Config::parse(&document).unwrap().bots.limits.contains_key("default"));
}

/// A message held back by the minute limit uses up nothing of the day's: the next minute, the
/// day still has room for what it allows.
#[tokio::test]
async fn a_message_held_back_by_one_window_is_counted_in_none() {
    let stack = Stack::new().await;
    let seen: Seen = Arc::default();
    let url = endpoint(seen.clone()).await;
    let bot = openai(&url, "llm", json!({"history": "none", "limits": {"user_per_minute": 1, "user_per_day": 2}}));
    let clock = Arc::new(Manual(std::sync::atomic::AtomicU64::new(1_800_000_000)));
    let rig = rig_at(&stack, &config("", json!({"default": bot})), clock.clone());
    let answered = |replies: Vec<Content>| texts(&replies).iter().any(|r| r.starts_with("llm: "));
    assert!(answered(rig.router.answer(&message("d1", None, "Day", "一")).await.unwrap()));
    for i in 0..3 {
        let held = rig.router.answer(&message(&format!("d-held{i}"), None, "Day", "再来")).await.unwrap();
        assert!(!answered(held), "the minute's one is used");
    }
    clock.0.fetch_add(60, std::sync::atomic::Ordering::SeqCst);
    assert!(answered(rig.router.answer(&message("d2", None, "Day", "二")).await.unwrap()), "the day had room");
    clock.0.fetch_add(60, std::sync::atomic::Ordering::SeqCst);
    assert!(!answered(rig.router.answer(&message("d3", None, "Day", "三")).await.unwrap()), "the day's two are used");
    assert_eq!(seen.lock().unwrap().len(), 2);
}
