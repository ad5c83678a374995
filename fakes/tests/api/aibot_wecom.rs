//! `AibotWecom`, WeCom's side of an AI bot, against a small bridge stand-in written here: its
//! crypto agrees with the vectors, a well-behaved stream is collected snapshot by snapshot, and
//! each broken rule in an answer is an error and a problem line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fakes::aibot::{event, refresh, text_message, AibotWecom, Answer, MsgCrypt};
use serde_json::{json, Value};

const CRYPTO: &str = include_str!("../../../fixtures/vectors/crypto.json");
const TOKEN: &str = "aiBotT0kenX";
/// The key of WeCom's own docs: its last character has non-zero unused bits.
const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const RESPONSE_URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RC";
/// What the stand-in's stream shows after each refresh; the fourth finishes it.
const SCRIPT: [&str; 4] = ["Hello", "Hello", "Hello, wor", "Hello, world"];

/// How the stand-in misbehaves. Envelope and stream slips happen on the second refresh only, so a
/// conversation is under way when they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slip {
    None,
    WrongNonce,
    BadSignature,
    ForeignReceiveId,
    StaleTimestamp,
    Http500,
    EncryptedEmpty,
    OtherStreamId,
    MsgItemBeforeFinish,
    ContentTooLong,
    /// A new stream id for every delivery of a message (a retry must get the same one).
    RandomStreamId,
    /// Refreshes after the finishing one show other content.
    EditAfterFinish,
    /// The GET verification answers the echostr in quotes.
    QuotedEcho,
    /// Timestamps as JSON numbers (allowed).
    NumericTimestamp,
}

struct Bridge {
    crypt: MsgCrypt,
    slip: Slip,
    /// Refreshes answered per stream id.
    polls: Mutex<HashMap<String, usize>>,
}

impl Bridge {
    /// The reply to a decrypted callback (`None`: an empty body) and whether the slip fires on it.
    fn reply(&self, payload: &Value) -> (Option<Value>, bool) {
        let msgid = payload["msgid"].as_str().unwrap_or_default();
        match payload["msgtype"].as_str() {
            Some("stream") => {
                let mut id = payload["stream"]["id"].as_str().unwrap_or_default().to_owned();
                let n = {
                    let mut polls = self.polls.lock().unwrap();
                    let n = polls.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                let mut content = SCRIPT[(n - 1).min(SCRIPT.len() - 1)].to_owned();
                let finish = n >= SCRIPT.len();
                let fires = n == 2;
                let mut stream = json!({});
                match self.slip {
                    Slip::EditAfterFinish if n > SCRIPT.len() => content.push_str(" (edited)"),
                    Slip::OtherStreamId if fires => id = "s-other".into(),
                    Slip::ContentTooLong if fires => content = "x".repeat(20_481),
                    Slip::MsgItemBeforeFinish if fires => {
                        stream["msg_item"] = json!([{"msgtype": "image", "image": {"base64": "", "md5": ""}}]);
                    }
                    _ => {}
                }
                stream["id"] = json!(id);
                stream["finish"] = json!(finish);
                stream["content"] = json!(content);
                (Some(json!({"msgtype": "stream", "stream": stream})), fires)
            }
            Some("event") if payload["event"]["eventtype"] == "enter_chat" => {
                (Some(json!({"msgtype": "text", "text": {"content": "Welcome!"}})), false)
            }
            Some("event") => (None, false),
            _ => {
                let id = if self.slip == Slip::RandomStreamId {
                    format!("s-{:016x}", rand::random::<u64>())
                } else {
                    format!("s-{msgid}")
                };
                (Some(json!({"msgtype": "stream", "stream": {"id": id, "finish": false, "content": ""}})), false)
            }
        }
    }

    /// The encrypted envelope, with the slip applied when it fires.
    fn seal(&self, reply: &Value, nonce: &str, fires: bool) -> Response {
        let slip = if fires { self.slip } else { Slip::None };
        match slip {
            Slip::Http500 => return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
            Slip::EncryptedEmpty => return self.seal(&json!({}), nonce, false),
            _ => {}
        }
        let receive_id = if slip == Slip::ForeignReceiveId { "ww5f2d8c1a9e3b7046" } else { "" };
        let encrypt = self.crypt.encrypt(rand::random(), &reply.to_string(), receive_id);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let timestamp = if slip == Slip::StaleTimestamp { now - 1_000 } else { now };
        let nonce = if slip == Slip::WrongNonce { "424242" } else { nonce };
        let signature = if slip == Slip::BadSignature {
            self.crypt.signature(&(timestamp + 1).to_string(), nonce, &encrypt)
        } else {
            self.crypt.signature(&timestamp.to_string(), nonce, &encrypt)
        };
        let timestamp =
            if self.slip == Slip::NumericTimestamp { json!(timestamp) } else { json!(timestamp.to_string()) };
        let body = json!({"encrypt": encrypt, "msgsignature": signature, "timestamp": timestamp, "nonce": nonce});
        body.to_string().into_response()
    }
}

/// `GET|POST /aibot/{bot}`: verify, decrypt, answer (the bridge's job, in a few lines).
async fn handle(
    State(bridge): State<Arc<Bridge>>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let field = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    let (signature, timestamp, nonce) = (field("msg_signature"), field("timestamp"), field("nonce"));
    let encrypt = if method == Method::GET {
        field("echostr").to_owned()
    } else {
        match serde_json::from_str::<Value>(&body) {
            Ok(envelope) if envelope["encrypt"].is_string() => envelope["encrypt"].as_str().unwrap().to_owned(),
            _ => return (StatusCode::BAD_REQUEST, "not a JSON AI bot callback").into_response(),
        }
    };
    if bridge.crypt.verify(signature, timestamp, nonce, &encrypt).is_err() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(plain) = bridge.crypt.decrypt(&encrypt, "") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if method == Method::GET {
        return if bridge.slip == Slip::QuotedEcho { format!("\"{plain}\"") } else { plain }.into_response();
    }
    let payload: Value = serde_json::from_str(&plain).expect("the client sends JSON");
    match bridge.reply(&payload) {
        (None, _) => StatusCode::OK.into_response(),
        (Some(reply), fires) => bridge.seal(&reply, nonce, fires),
    }
}

/// Starts a stand-in with `slip` and returns a client of it refreshing every 10 ms.
async fn start(slip: Slip) -> (AibotWecom, Arc<Bridge>) {
    let bridge = Arc::new(Bridge { crypt: MsgCrypt::new(TOKEN, KEY).unwrap(), slip, polls: Mutex::default() });
    let app = axum::Router::new().route("/aibot/{bot}", axum::routing::any(handle)).with_state(Arc::clone(&bridge));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let wecom =
        AibotWecom::new(&format!("http://{addr}/aibot/helpdesk"), TOKEN, KEY).refresh_every(Duration::from_millis(10));
    (wecom, bridge)
}

fn hello(msgid: &str) -> Value {
    text_message(msgid, Some("wrGroup"), "alice", "@bot hello", RESPONSE_URL)
}

fn polls(bridge: &Bridge, stream_id: &str) -> usize {
    bridge.polls.lock().unwrap().get(stream_id).copied().unwrap_or(0)
}

#[tokio::test]
async fn converse_collects_the_growing_snapshots_until_finish() {
    let (wecom, _bridge) = start(Slip::None).await;
    wecom.verify_url().await.unwrap();
    let talk = wecom.converse(&hello("m1")).await.unwrap();
    assert_eq!(talk.stream_id, "s-m1");
    assert!(talk.finished);
    assert_eq!(talk.refreshes, 4);
    assert_eq!(talk.answers.len(), 5);
    assert_eq!(talk.snapshots(), ["", "Hello", "Hello, wor", "Hello, world"]);
    assert_eq!(talk.final_text(), Some("Hello, world"));
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

#[tokio::test]
async fn converse_stops_when_the_window_ends() {
    let (wecom, _bridge) = start(Slip::None).await;
    let wecom = wecom.refresh_every(Duration::from_millis(40)).window(Duration::from_millis(100));
    let talk = wecom.converse(&hello("m1")).await.unwrap();
    assert!(!talk.finished);
    assert!((1..4).contains(&talk.refreshes), "{} refreshes in a 100 ms window at 40 ms", talk.refreshes);
    assert_eq!(talk.final_text(), None);
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

#[tokio::test]
async fn timestamps_may_be_numbers() {
    let (wecom, _bridge) = start(Slip::NumericTimestamp).await;
    let talk = wecom.converse(&hello("m1")).await.unwrap();
    assert_eq!(talk.final_text(), Some("Hello, world"));
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

/// Runs a conversation against `slip` and returns its error, checking it was recorded once and
/// that refreshing stopped at the bad answer.
async fn broken_conversation(slip: Slip) -> String {
    let (wecom, bridge) = start(slip).await;
    let err = wecom.converse(&hello("m1")).await.expect_err("the slip is an error");
    assert_eq!(wecom.problems(), std::slice::from_ref(&err), "{slip:?}");
    assert_eq!(polls(&bridge, "s-m1"), 2, "{slip:?}: no refresh after the bad answer");
    err
}

#[tokio::test]
async fn converse_catches_an_answer_with_the_wrong_nonce() {
    let err = broken_conversation(Slip::WrongNonce).await;
    assert!(err.contains(r#"nonce "424242" is not the request's"#), "{err}");
}

#[tokio::test]
async fn converse_catches_an_answer_with_a_bad_signature() {
    let err = broken_conversation(Slip::BadSignature).await;
    assert!(err.contains("msgsignature: signature_mismatch"), "{err}");
}

#[tokio::test]
async fn converse_catches_an_answer_encrypted_with_a_receive_id() {
    let err = broken_conversation(Slip::ForeignReceiveId).await;
    assert!(err.contains(r#"receive_id_mismatch: the frame ends in "ww5f2d8c1a9e3b7046", expected """#), "{err}");
}

#[tokio::test]
async fn converse_catches_every_other_broken_rule() {
    let cases = [
        (Slip::StaleTimestamp, "s from now"),
        (Slip::Http500, "HTTP 500 instead of 200"),
        (Slip::EncryptedEmpty, "no msgtype"),
        (Slip::OtherStreamId, r#"a refresh of stream "s-m1" was answered for stream "s-other""#),
        (Slip::MsgItemBeforeFinish, "msg_item is only allowed with finish: true"),
        (Slip::ContentTooLong, "20481 bytes, the limit is 20480"),
    ];
    for (slip, expected) in cases {
        let err = broken_conversation(slip).await;
        assert!(err.contains(expected), "{slip:?}: {err}");
        assert!(err.starts_with(r#"refresh of stream "s-m1""#), "{slip:?} names the request: {err}");
    }
}

#[tokio::test]
async fn a_retried_message_must_get_the_same_stream() {
    let (wecom, _bridge) = start(Slip::None).await;
    let first = wecom.post(&hello("m1")).await.unwrap();
    assert_eq!(wecom.post(&hello("m1")).await.unwrap(), first);
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());

    let (wecom, _bridge) = start(Slip::RandomStreamId).await;
    wecom.post(&hello("m1")).await.unwrap();
    let err = wecom.post(&hello("m1")).await.unwrap_err();
    assert!(err.contains("an earlier delivery of it with stream"), "{err}");
    assert_eq!(wecom.problems().len(), 1);
}

#[tokio::test]
async fn a_finished_stream_must_not_change() {
    let (wecom, _bridge) = start(Slip::EditAfterFinish).await;
    let talk = wecom.converse(&hello("m1")).await.unwrap();
    let err = wecom.post(&refresh("late", &talk.stream_id, Some("wrGroup"), "alice")).await.unwrap_err();
    assert!(err.contains(r#"stream "s-m1" changed after it finished"#), "{err}");

    let (wecom, _bridge) = start(Slip::None).await;
    let talk = wecom.converse(&hello("m1")).await.unwrap();
    let late = wecom.post(&refresh("late", &talk.stream_id, Some("wrGroup"), "alice")).await.unwrap();
    assert_eq!(Some(&late), talk.answers.last());
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

#[tokio::test]
async fn events_take_their_documented_answers() {
    let (wecom, _bridge) = start(Slip::None).await;
    let welcome = wecom.post(&event("e1", "enter_chat", "alice", Value::Null)).await.unwrap();
    assert_eq!(welcome, Answer::Text { content: "Welcome!".into() });
    let feedback = event("e2", "feedback_event", "alice", json!({"id": "fb-1", "type": 1}));
    assert_eq!(feedback["event"]["feedback_event"]["type"], 1);
    assert_eq!(wecom.post(&feedback).await.unwrap(), Answer::Empty);
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

#[tokio::test]
async fn verify_url_wants_exactly_the_plaintext_echostr() {
    let (wecom, _bridge) = start(Slip::QuotedEcho).await;
    let err = wecom.verify_url().await.unwrap_err();
    assert!(err.contains("is not exactly the decrypted echostr"), "{err}");
    assert_eq!(wecom.problems(), [err]);
}

#[tokio::test]
async fn post_raw_sends_anything_and_checks_nothing() {
    let (wecom, _bridge) = start(Slip::None).await;
    let (query, _) = wecom.seal("<xml><Content>hi</Content></xml>", "");
    let (status, _) = wecom.post_raw(&query, "<xml><Encrypt>x</Encrypt></xml>").await;
    assert_eq!(status, 400);
    let (query, body) = wecom.seal(&hello("m1").to_string(), "");
    let tampered = query.replacen("msg_signature=", "msg_signature=0", 1);
    assert_eq!(wecom.post_raw(&tampered, &body).await.0, 401);
    assert_eq!(wecom.post_raw(&query, &body).await.0, 200);
    assert!(wecom.problems().is_empty(), "{:#?}", wecom.problems());
}

#[test]
fn seal_round_trips_through_verify_and_decrypt() {
    let wecom = AibotWecom::new("http://127.0.0.1:9/aibot/x", TOKEN, KEY);
    let crypt = wecom.crypt();
    // 12 bytes of message + 20 of frame head: a whole block, so 32 bytes of padding.
    for plain in ["你好，世界！🚀 «quotes» & <tags>", "{\"a\":\"bcdefgh\"}", "123456789012"] {
        let (query, body) = wecom.seal(plain, "");
        let params: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
        let encrypt = serde_json::from_str::<Value>(&body).unwrap()["encrypt"].as_str().unwrap().to_owned();
        let signature = params["msg_signature"];
        assert_eq!(signature.len(), 40);
        crypt.verify(signature, params["timestamp"], params["nonce"], &encrypt).unwrap();
        assert_eq!(crypt.decrypt(&encrypt, "").unwrap(), plain);
    }
    let (_, body) = wecom.seal("hi", "wwcorp");
    let encrypt = serde_json::from_str::<Value>(&body).unwrap()["encrypt"].as_str().unwrap().to_owned();
    assert!(crypt.decrypt(&encrypt, "").unwrap_err().starts_with("receive_id_mismatch"));
    assert_eq!(crypt.decrypt(&encrypt, "wwcorp").unwrap(), "hi");
    let (query_a, _) = wecom.seal("hi", "");
    let (query_b, _) = wecom.seal("hi", "");
    assert_ne!(query_a, query_b, "a fresh nonce for every request");
}

#[test]
fn msg_crypt_agrees_with_every_encrypted_vector() {
    let doc: Value = serde_json::from_str(CRYPTO).unwrap();
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let (Some(key), Some(encrypt), Some(signature)) =
            (case["encoding_aes_key"].as_str(), case["encrypt"].as_str(), case["msg_signature"].as_str())
        else {
            continue;
        };
        let id = case["id"].as_str().unwrap();
        let (token, timestamp, nonce) =
            (case["token"].as_str().unwrap(), case["timestamp"].as_str().unwrap(), case["nonce"].as_str().unwrap());
        let receive_id = case["receive_id"].as_str().unwrap_or_default();
        let crypt = MsgCrypt::new(token, key).unwrap_or_else(|e| panic!("{id}: {e}"));
        let outcome =
            crypt.verify(signature, timestamp, nonce, encrypt).and_then(|()| crypt.decrypt(encrypt, receive_id));
        if case["expected"]["ok"] == true {
            let plaintext = case["expected"]["plaintext"].as_str().unwrap();
            assert_eq!(outcome.as_deref(), Ok(plaintext), "{id}");
            let random: [u8; 16] = hex(case["random_hex"].as_str().unwrap()).try_into().unwrap();
            assert_eq!(crypt.encrypt(random, plaintext, receive_id), encrypt, "{id}: re-encryption");
        } else {
            let kind = case["expected"]["error"].as_str().unwrap();
            let err = outcome.expect_err(id);
            assert!(err.starts_with(kind), "{id}: expected {kind}, got {err}");
        }
        checked += 1;
    }
    assert_eq!(checked, 31, "every vector with a ciphertext");
}

#[test]
fn msg_crypt_refuses_malformed_keys() {
    assert!(MsgCrypt::new(TOKEN, "short").unwrap_err().starts_with("illegal_aes_key"));
    assert!(MsgCrypt::new(TOKEN, &"*".repeat(43)).unwrap_err().starts_with("illegal_aes_key"));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
