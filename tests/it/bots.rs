//! The http and openai bots against local endpoints that check what a real one would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use serde_json::{json, Value};
use shared::channels::Config;
use shared::core::bot::{Bot, BotConfig, DEFAULT_BOT_TIMEOUT};
use shared::core::envelope::Content;
use shared::services::bots::{webhook_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{inbound, Snapshots};

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
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
        &BotConfig::Http {
            url: format!("{url}/bot"),
            secret: SecretString::from("hook-secret".to_owned()),
            timeout: DEFAULT_BOT_TIMEOUT,
        },
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
        &BotConfig::Http {
            url: format!("{url}/bot"),
            secret: SecretString::from("other".to_owned()),
            timeout: DEFAULT_BOT_TIMEOUT,
        },
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
                let (message, finish_reason) = match text.as_str() {
                    "fail" => (json!({"role": "assistant", "content": "Error: internal error"}), "stop"),
                    "nothing" => (json!({"role": "assistant", "content": "No response from OpenClaw."}), "stop"),
                    "tools" => (
                        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"}}]}),
                        "tool_calls",
                    ),
                    _ => (json!({"role": "assistant", "content": format!("  you said {text} ")}), "stop"),
                };
                let answer = json!({"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]});
                (StatusCode::OK, answer.to_string())
            }),
        )
        .with_state(seen.clone());
    let url = serve(router).await;
    let config = BotConfig::OpenAi {
        base_url: url.clone(),
        api_key: SecretString::from("sk-test".to_owned()),
        model: "claw-1".into(),
        system_prompt: Some("Be brief.".into()),
        timeout: DEFAULT_BOT_TIMEOUT,
        stream: false,
        history: shared::core::bot::History::Server,
        reset: shared::core::bot::Reset::default(),
    };
    let bot = shared::services::bots::from_config(&config, &shared::services::bots::http_client().unwrap());
    assert_eq!(bot.answer(&inbound(Some("你好"))).await.unwrap(), [Content::Text { text: "you said 你好".into() }]);
    assert!(bot.answer(&inbound(None)).await.unwrap().is_empty(), "nothing to say to an image");
    assert_eq!(seen.lock().unwrap().len(), 1, "no call without text");
    assert!(!seen.lock().unwrap()[0].1.contains("\"stream\""), "not streaming unless configured");
    for (text, why) in [
        ("fail", "OpenClaw's failed run is an error, not an answer"),
        ("nothing", "OpenClaw's empty run is an error, not an answer"),
        ("tools", "tool calls are no answer: wxbridge offers no tools"),
    ] {
        let err = bot.answer(&inbound(Some(text))).await.unwrap_err().to_string();
        assert!(!err.contains("internal error") && !err.contains("No response") && !err.contains("lookup"), "{err}");
        let snapshots = Snapshots::default();
        assert!(bot.answer_streaming(&inbound(Some(text)), &snapshots).await.is_err(), "{why}");
        assert!(snapshots.seen().is_empty());
    }
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
            timeout: DEFAULT_BOT_TIMEOUT,
            stream: false,
            history: shared::core::bot::History::Server,
            reset: shared::core::bot::Reset::default(),
        },
        &shared::services::bots::http_client().unwrap(),
    );
    let err = wrong_key.answer(&inbound(Some("x"))).await.unwrap_err();
    assert!(!err.to_string().contains("sk-wrong"), "{err}");
}

/// A streaming bot of `base_url` with the key, model and conversation the SSE endpoint expects.
fn streaming_bot(base_url: &str, timeout: Duration) -> Arc<dyn Bot> {
    let config = BotConfig::OpenAi {
        base_url: base_url.to_owned(),
        api_key: SecretString::from("sk-test".to_owned()),
        model: "claw-1".into(),
        system_prompt: None,
        timeout,
        stream: true,
        history: shared::core::bot::History::Server,
        reset: shared::core::bot::Reset::default(),
    };
    shared::services::bots::from_config(&config, &shared::services::bots::http_client().unwrap())
}

/// One `chat.completion.chunk` event as OpenClaw writes it.
fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let chunk = json!({"id": "chatcmpl_1", "object": "chat.completion.chunk", "created": 1763700000, "model": "claw-1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
    format!("data: {chunk}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

/// A response body as the endpoint writes it: each piece after its pause (ms), in a TCP write
/// (an HTTP/1.1 chunk) of its own.
type Script = Vec<(u64, Vec<u8>)>;

/// Events 50 ms apart, each event whose text is not ASCII written in two pieces that split a
/// character between them.
fn spaced(events: &[String]) -> Script {
    let mut script = Script::new();
    for event in events {
        let bytes = event.as_bytes();
        match bytes.iter().position(|b| !b.is_ascii()) {
            Some(at) => {
                script.push((50, bytes[..at + 1].to_vec()));
                script.push((10, bytes[at + 1..].to_vec()));
            }
            None => script.push((50, bytes.to_vec())),
        }
    }
    script
}

/// An OpenAI-compatible endpoint that streams `script` after checking the request as a gateway
/// would (path, bearer token, `stream: true`, model, session key). It writes HTTP/1.1 on the
/// bare socket, so that every piece is its own TCP write: axum's streaming body needs a `Stream`
/// type this crate has no dependency to name.
async fn sse_endpoint(script: Script) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let (script, requests) = (Arc::new(script), seen.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (script, requests) = (script.clone(), requests.clone());
            // A client that hangs up (a timeout) ends the write; nothing to report.
            tokio::spawn(async move { drop(stream_reply(socket, &script, &requests).await) });
        }
    });
    (url, seen)
}

async fn stream_reply(mut socket: TcpStream, script: &Script, seen: &Seen) -> std::io::Result<()> {
    let (request_line, headers, body) = read_request(&mut socket).await?;
    seen.lock().unwrap().push((headers.clone(), body.clone()));
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    let problem = if request_line != "POST /v1/chat/completions HTTP/1.1" {
        Some((404, "no such route"))
    } else if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
        Some((401, "bad key"))
    } else if request["stream"] != true || request["model"] != "claw-1" {
        Some((400, "expected a stream of model claw-1"))
    } else if request["user"] != "wxbridge:wecom:hr:WangFang" || request["messages"][0]["role"] != "user" {
        Some((400, "expected the conversation's session key and a user message"))
    } else {
        None
    };
    if let Some((status, message)) = problem {
        let body = json!({"error": {"message": message, "type": "invalid_request_error"}}).to_string();
        let head = format!("HTTP/1.1 {status} Problem\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
        return socket.write_all(format!("{head}{body}").as_bytes()).await;
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    for (pause_ms, bytes) in script {
        tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
        socket.write_all(&[format!("{:x}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat()).await?;
        socket.flush().await?;
    }
    socket.write_all(b"0\r\n\r\n").await
}

/// The request line, headers and body of one HTTP/1.1 request with a `content-length`.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<(String, HeaderMap, String)> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut headers = HeaderMap::new();
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let length: usize = headers.get("content-length").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    Ok((request_line, headers, String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned()))
}

const ANSWER_PIECES: [&str; 5] = ["明天的会", "在十点，", "三楼", "会议室 ", "🦀。"];

#[tokio::test]
async fn the_openai_bot_shows_a_streamed_answer_as_it_grows() {
    let mut events = vec![chunk(json!({"role": "assistant"}), None), ": keep-alive\n\n".to_owned()];
    events.extend(ANSWER_PIECES.iter().map(|piece| chunk(json!({"content": piece}), None)));
    events.push(chunk(json!({}), Some("stop")));
    events.push(DONE.to_owned());
    let (url, seen) = sse_endpoint(spaced(&events)).await;
    let bot = streaming_bot(&url, DEFAULT_BOT_TIMEOUT);
    let snapshots = Snapshots::default();
    let replies = bot.answer_streaming(&inbound(Some("明天的会几点？")), &snapshots).await.unwrap();
    let whole = ANSWER_PIECES.concat();
    assert_eq!(replies, [Content::Text { text: whole.clone() }]);
    let snapshots = snapshots.seen();
    assert!(snapshots.len() >= 3, "the answer grew in front of the user: {snapshots:?}");
    assert!(snapshots.windows(2).all(|w| w[1].starts_with(&w[0]) && w[1] != w[0]), "{snapshots:?}");
    assert_eq!(snapshots.last().unwrap(), &whole);
    let (headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["messages"][0]["content"], "明天的会几点？");
    assert_eq!(bot.answer(&inbound(Some("明天的会几点？"))).await.unwrap(), replies, "a whole answer from the stream");
}

#[tokio::test]
async fn streamed_reasoning_is_shown_as_thinking_but_is_not_the_reply() {
    let events = [
        chunk(json!({"role": "assistant", "reasoning_content": "想一想"}), None),
        chunk(json!({"reasoning": "日程……"}), None),
        chunk(json!({"content": "十点。"}), None),
        chunk(json!({}), Some("stop")),
        DONE.to_owned(),
    ];
    let (url, _) = sse_endpoint(spaced(&events)).await;
    let snapshots = Snapshots::default();
    let replies =
        streaming_bot(&url, DEFAULT_BOT_TIMEOUT).answer_streaming(&inbound(Some("几点？")), &snapshots).await.unwrap();
    assert_eq!(replies, [Content::Text { text: "十点。".into() }]);
    assert_eq!(
        snapshots.seen(),
        ["<think>想一想</think>\n\n", "<think>想一想日程……</think>\n\n", "<think>想一想日程……</think>\n\n十点。"]
    );
}

#[tokio::test]
async fn openclaws_in_stream_failure_is_an_error_the_user_never_sees() {
    let whole = [
        chunk(json!({"role": "assistant"}), None),
        chunk(json!({"content": "Error: internal error"}), Some("stop")),
        DONE.to_owned(),
    ];
    let piecewise = [
        chunk(json!({"content": "Error"}), None),
        chunk(json!({"content": ": internal"}), None),
        chunk(json!({"content": " error"}), Some("stop")),
        DONE.to_owned(),
    ];
    let empty_run = [chunk(json!({"content": "No response from OpenClaw."}), Some("stop")), DONE.to_owned()];
    for events in [&whole[..], &piecewise[..], &empty_run[..]] {
        let (url, _) = sse_endpoint(spaced(events)).await;
        let snapshots = Snapshots::default();
        let err = streaming_bot(&url, DEFAULT_BOT_TIMEOUT)
            .answer_streaming(&inbound(Some("明天的会几点？")), &snapshots)
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("internal error"), "{err}");
        assert_eq!(snapshots.seen(), Vec::<String>::new(), "the failure text was never shown");
    }
}

#[tokio::test]
async fn a_stream_that_asks_for_tools_errs_or_breaks_off_is_an_error() {
    let tool_call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": ""}}]});
    let cases = [
        ("tool calls", vec![chunk(json!({"content": "Let me check"}), None), chunk(tool_call, None), DONE.to_owned()]),
        ("finish_reason tool_calls", vec![chunk(json!({}), Some("tool_calls")), DONE.to_owned()]),
        (
            "an error event",
            vec![
                chunk(json!({"content": "明天"}), None),
                format!("data: {}\n\n", json!({"error": {"message": "secret detail", "type": "api_error"}})),
            ],
        ),
        (
            "cut before [DONE]",
            vec![chunk(json!({"role": "assistant"}), None), chunk(json!({"content": "明天的会"}), None)],
        ),
    ];
    for (case, events) in cases {
        let (url, _) = sse_endpoint(spaced(&events)).await;
        let err = streaming_bot(&url, DEFAULT_BOT_TIMEOUT).answer(&inbound(Some("明天的会几点？"))).await.unwrap_err();
        assert!(!err.to_string().contains("secret detail") && !err.to_string().contains("lookup"), "{case}: {err}");
        if case == "cut before [DONE]" {
            assert!(err.to_string().contains("ended early"), "{err}");
        }
    }
}

#[tokio::test]
async fn a_failing_status_is_an_error_without_the_body() {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let body = json!({"error": {"message": "internal error", "type": "api_error"}}).to_string();
            (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], body)
        }),
    );
    let url = serve(router).await;
    let snapshots = Snapshots::default();
    let err =
        streaming_bot(&url, DEFAULT_BOT_TIMEOUT).answer_streaming(&inbound(Some("x")), &snapshots).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert!(!err.to_string().contains("internal error") && !err.to_string().contains("api_error"), "{err}");
    assert!(snapshots.seen().is_empty());
}

#[tokio::test]
async fn each_call_has_the_configured_timeout_the_whole_stream_included() {
    let late = || async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        json!({"replies": [], "choices": [{"index": 0, "message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}]})
            .to_string()
    };
    let slow = serve(Router::new().route("/v1/chat/completions", post(late)).route("/bot", post(late))).await;
    let second = Duration::from_secs(1);
    let http = shared::services::bots::http_client().unwrap();
    let openai = BotConfig::OpenAi {
        base_url: slow.clone(),
        api_key: SecretString::from("sk-test".to_owned()),
        model: "claw-1".into(),
        system_prompt: None,
        timeout: second,
        stream: false,
        history: shared::core::bot::History::Server,
        reset: shared::core::bot::Reset::default(),
    };
    let webhook =
        BotConfig::Http { url: format!("{slow}/bot"), secret: SecretString::from("s".to_owned()), timeout: second };
    for config in [openai, webhook] {
        let bot = shared::services::bots::from_config(&config, &http);
        assert!(bot.answer(&inbound(Some("x"))).await.is_err(), "{config:?} waited past its timeout");
    }
    // A stream that starts at once, then stalls past the timeout.
    let mut script = spaced(&[chunk(json!({"content": "明天"}), None)]);
    script.push((3000, chunk(json!({"content": "的会"}), Some("stop")).into_bytes()));
    script.push((0, DONE.as_bytes().to_vec()));
    let (stalling, _) = sse_endpoint(script).await;
    let snapshots = Snapshots::default();
    assert!(streaming_bot(&stalling, second)
        .answer_streaming(&inbound(Some("明天的会几点？")), &snapshots)
        .await
        .is_err());
    assert_eq!(snapshots.seen(), ["明天"]);
}

#[test]
fn the_bot_timeout_is_1_to_840_seconds_and_streaming_is_opt_in() {
    let openai = |extra: &str| {
        format!(
            r#"{{"bot": {{"kind": "openai", "base_url": "http://127.0.0.1:1", "api_key": "sk", "model": "m"{extra}}}}}"#
        )
    };
    for extra in [r#", "timeout_s": 0"#, r#", "timeout_s": 841"#] {
        let err = Config::parse(&openai(extra)).unwrap_err().to_string();
        assert!(err.contains("bot.timeout_s"), "{err}");
    }
    let err =
        Config::parse(r#"{"bot": {"kind": "http", "url": "http://127.0.0.1:1", "secret": "s", "timeout_s": 841}}"#)
            .unwrap_err()
            .to_string();
    assert!(err.contains("bot.timeout_s"), "{err}");
    let config = Config::parse(&openai("")).unwrap();
    assert!(
        matches!(config.bots.default_bot(), BotConfig::OpenAi { stream: false, .. }),
        "{:?}",
        config.bots.default_bot()
    );
    assert_eq!(config.bots.default_bot().timeout(), Duration::from_secs(45));
    let config = Config::parse(&openai(r#", "timeout_s": 840, "stream": true"#)).unwrap();
    assert!(matches!(config.bots.default_bot(), BotConfig::OpenAi { stream: true, .. }));
    assert_eq!(config.bots.default_bot().timeout(), Duration::from_secs(840));
    assert_eq!(Config::parse("{}").unwrap().bots.default_bot().timeout(), DEFAULT_BOT_TIMEOUT);
}

#[tokio::test]
async fn a_runaway_stream_is_cut_off_before_it_exhausts_memory() {
    // One endless line: 9 MB without a line break, in 64 KB writes.
    let script: Script = (0..144).map(|_| (0, vec![b'x'; 64 * 1024])).collect();
    let (url, _) = sse_endpoint(script).await;
    let err = streaming_bot(&url, DEFAULT_BOT_TIMEOUT).answer(&inbound(Some("明天的会几点？"))).await.unwrap_err();
    assert!(err.to_string().contains("exceeds 8 MB"), "{err}");
}

#[tokio::test]
async fn openclaws_failure_after_partial_output_is_an_error_and_never_shown() {
    let events = vec![
        chunk(json!({"role": "assistant"}), None),
        chunk(json!({"content": "让我查一下"}), None),
        chunk(json!({"content": "Error: internal error"}), Some("stop")),
        DONE.to_owned(),
    ];
    let (url, _) = sse_endpoint(spaced(&events)).await;
    let sink = Snapshots::default();
    let result =
        streaming_bot(&url, DEFAULT_BOT_TIMEOUT).answer_streaming(&inbound(Some("明天的会几点？")), &sink).await;
    assert!(result.is_err(), "{result:?}");
    assert!(sink.seen().iter().all(|s| !s.contains("Error")), "{:?}", sink.seen());
}

#[tokio::test]
async fn the_openai_bot_sends_the_messages_image_inline_and_text_only_when_it_cannot() {
    use base64::Engine as _;
    use shared::core::ports::MediaStore;
    let seen: Seen = Arc::default();
    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                seen.lock().unwrap().push((headers, body));
                let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "a cat"}, "finish_reason": "stop"}]});
                (StatusCode::OK, answer.to_string())
            }),
        )
        .with_state(seen.clone());
    let url = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(shared::adapters::folder::FolderMediaStore::new(dir.path(), "http://127.0.0.1:1").unwrap());
    let photo: Vec<u8> = b"\x89PNG\r\n\x1a\n".iter().copied().chain((0..5000u32).map(|i| (i * 7) as u8)).collect();
    let sha = {
        use sha2::Digest;
        shared::protocol::hex::hex(&sha2::Sha256::digest(&photo))
    };
    let key = format!("media/{sha}");
    store.put_bytes(&key, photo.clone(), "image/png").await.unwrap();
    let config = BotConfig::OpenAi {
        base_url: url,
        api_key: SecretString::from("sk-test".to_owned()),
        model: "vision-1".into(),
        system_prompt: None,
        timeout: DEFAULT_BOT_TIMEOUT,
        stream: false,
        history: shared::core::bot::History::Server,
        reset: shared::core::bot::Reset::default(),
    };
    let bot = shared::services::bots::from_config_with_media(
        &config,
        &shared::services::bots::http_client().unwrap(),
        Some(store.clone()),
    );
    let with_image = |text: Option<&str>, mime: &str, size: u64| {
        let mut inbound = inbound(text);
        inbound.media = Some(shared::core::envelope::Media {
            key: Some(key.clone()),
            mime: Some(mime.into()),
            size: Some(size),
            ..Default::default()
        });
        inbound
    };
    let request = |i: usize| -> Value { serde_json::from_str(&seen.lock().unwrap()[i].1).unwrap() };

    assert_eq!(bot.answer(&with_image(Some("这是什么"), "image/png", 5008)).await.unwrap().len(), 1);
    let content = &request(0)["messages"][0]["content"];
    assert_eq!(content[0], json!({"type": "text", "text": "这是什么"}));
    let data = content[1]["image_url"]["url"].as_str().unwrap();
    let encoded = data.strip_prefix("data:image/png;base64,").expect("a PNG data URL");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap(), photo);

    bot.answer(&with_image(None, "image/png", 5008)).await.unwrap();
    let content = &request(1)["messages"][0]["content"];
    assert_eq!(
        (content.as_array().unwrap().len(), &content[0]["type"]),
        (1, &json!("image_url")),
        "an image alone is asked about"
    );

    let too_big = shared::services::bots::MAX_INLINE_IMAGE + 1;
    bot.answer(&with_image(Some("大图"), "image/png", too_big)).await.unwrap();
    assert_eq!(request(2)["messages"][0]["content"], json!("大图"), "too large to inline: text only");
    bot.answer(&with_image(Some("听听"), "audio/amr", 5008)).await.unwrap();
    assert_eq!(request(3)["messages"][0]["content"], json!("听听"), "no audio parts");
    assert!(bot.answer(&with_image(None, "audio/amr", 5008)).await.unwrap().is_empty());
    assert_eq!(seen.lock().unwrap().len(), 4, "nothing to ask without text or an image");
}
