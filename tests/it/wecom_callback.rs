//! The WeCom callback Lambda against the real emulator: what reaches the inbound queue.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use shared::adapters::aws::SqsPublisher;
use shared::channels::wecom::simulate::{self, SignedCallback};
use shared::channels::wecom::WecomCallback;
use shared::core::callback::{dedup_id, DEFAULT_REPLAY_WINDOW_SECS};
use shared::core::ports::SystemClock;
use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

use crate::support::{config, settle, Proxy, Stack};

const INBOUND_SCHEMA: &str = include_str!("../../schemas/inbound.v1.json");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn text_message(msg_id: u64, content: &str) -> String {
    simulate::text_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", content, msg_id, now())
}

fn signed_with(crypt: &MsgCrypt, plaintext: &str, timestamp: u64) -> SignedCallback {
    simulate::sign_callback(crypt, plaintext, timestamp, "1320562132", shared::protocol::crypto::random_prefix())
}

fn our_crypt() -> MsgCrypt {
    MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), WECOM_CORP_ID)
}

fn signed(plaintext: &str) -> SignedCallback {
    signed_with(&our_crypt(), plaintext, now())
}

/// An API Gateway HTTP API (v2) event for `POST /wecom/hr`.
fn post(callback: &SignedCallback) -> lambda_http::Request {
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "POST /wecom/{app}",
        "rawPath": "/wecom/hr",
        "rawQueryString": callback.query,
        "headers": {"content-type": "text/xml", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {"method": "POST", "path": "/wecom/hr", "protocol": "HTTP/1.1", "sourceIp": "101.226.103.0", "userAgent": "Mozilla/4.0"},
            "requestId": "r1", "routeKey": "POST /wecom/{app}", "stage": "$default", "time": "21/Nov/2026:05:00:00 +0000", "timeEpoch": 0
        },
        "pathParameters": {"app": "hr"},
        "body": callback.body,
        "isBase64Encoded": false
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

async fn deliver(service: &WecomCallback, callback: &SignedCallback) -> (u16, String) {
    let response = wecom_callback::handle(service, post(callback)).await;
    (response.status().as_u16(), String::from_utf8(response.body().as_ref().to_vec()).unwrap())
}

/// The service exactly as the Lambda's main builds it.
fn deployed(stack: &Stack) -> WecomCallback {
    wecom_callback::build(&config(DEFAULT_REPLAY_WINDOW_SECS), &stack.env(), &stack.sdk).unwrap()
}

#[tokio::test]
async fn a_signed_encrypted_callback_ends_as_one_schema_valid_message_on_the_inbound_queue() {
    let stack = Stack::new().await;
    let service = deployed(&stack);
    let (status, body) = deliver(&service, &signed(&text_message(7_460_058_143_020_297_664, "你好 wxbridge 🚀"))).await;
    assert_eq!((status, body.as_str()), (200, ""));

    let messages = stack.drain(&stack.urls.inbound).await;
    assert_eq!(messages.len(), 1);
    let inbound: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    let schema: Value = serde_json::from_str(INBOUND_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&inbound).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(inbound["id"], "wecom:hr:7460058143020297664");
    assert_eq!(inbound["text"], "你好 wxbridge 🚀");
    assert_eq!(inbound["raw"]["MsgId"], "7460058143020297664", "64-bit ids stay exact");
    let attributes = messages[0].message_attributes().unwrap();
    assert_eq!(attributes["channel"].string_value(), Some("wecom"));
    assert_eq!(attributes["account"].string_value(), Some("hr"));
}

#[tokio::test]
async fn four_deliveries_of_one_callback_still_give_one_inbound() {
    let stack = Stack::new().await;
    let service = deployed(&stack);
    let message = text_message(7_460_000_000_000_000_001, "once");
    // WeChat re-encrypts each delivery with a fresh prefix, timestamp and signature; each is
    // answered 200 only once the FIFO queue has the message, and the queue keeps one copy.
    for _ in 0..4 {
        assert_eq!(deliver(&service, &signed(&message)).await.0, 200);
    }
    let messages = stack.drain(&stack.urls.inbound).await;
    assert_eq!(messages.len(), 1);
    let system = |name| messages[0].attributes().and_then(|a| a.get(&name)).cloned().unwrap_or_default();
    assert_eq!(
        system(aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId),
        dedup_id("wecom:hr:7460000000000000001")
    );
    assert!(system(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId).starts_with("wecom:"));
    // No marker of our own: the callback wrote nothing to the table.
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let items = dynamodb.scan().table_name(&stack.names.table).send().await.unwrap();
    assert_eq!(items.count(), 0, "no dedupe write on the callback path");
}

#[tokio::test]
async fn concurrent_deliveries_from_two_instances_publish_once() {
    let stack = Stack::new().await;
    let (a, b) = (Arc::new(deployed(&stack)), Arc::new(deployed(&stack)));
    let message = text_message(7_460_000_000_000_000_002, "race");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let service = if i % 2 == 0 { a.clone() } else { b.clone() };
        let callback = signed(&message);
        tasks.push(tokio::spawn(async move { deliver(&service, &callback).await.0 }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    // Every delivery puts the message on the queue itself, so each may answer 200.
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(stack.drain(&stack.urls.inbound).await.len(), 1);
    // And a later retry is answered 200 without a second message.
    assert_eq!(deliver(&a, &signed(&message)).await.0, 200);
    assert!(stack.drain(&stack.urls.inbound).await.is_empty());
}

#[tokio::test]
async fn an_sqs_outage_answers_5xx_and_the_retry_after_recovery_is_published() {
    let stack = Stack::new().await;
    let sqs_link = Proxy::to(&crate::support::endpoint()).await;
    let config = config(DEFAULT_REPLAY_WINDOW_SECS);
    let service = WecomCallback::new(
        &config.wecom,
        config.replay_window_secs,
        Arc::new(SqsPublisher::new(sqs_link.sqs(&stack.sdk), &stack.urls.inbound)),
        Arc::new(SystemClock),
    );
    let message = text_message(7_460_000_000_000_000_003, "outage");
    sqs_link.set_down(true);
    settle().await;
    let (status, _) = deliver(&service, &signed(&message)).await;
    assert!(status >= 500, "{status}");
    assert!(stack.drain(&stack.urls.inbound).await.is_empty());

    sqs_link.set_down(false);
    assert_eq!(deliver(&service, &signed(&message)).await.0, 200);
    assert_eq!(stack.drain(&stack.urls.inbound).await.len(), 1, "nothing swallowed the retry");
}

#[tokio::test]
async fn the_callback_needs_no_table() {
    // Deployed without WXBRIDGE_TABLE (nor DynamoDB permissions): the queues do the dedupe.
    let stack = Stack::new().await;
    let env = shared::core::config::Env::from_vars([("WXBRIDGE_INBOUND_QUEUE_URL", stack.urls.inbound.clone())]);
    let service = wecom_callback::build(&config(DEFAULT_REPLAY_WINDOW_SECS), &env, &stack.sdk).unwrap();
    let message = text_message(7_460_000_000_000_000_004, "no table");
    assert_eq!(deliver(&service, &signed(&message)).await.0, 200);
    assert_eq!(stack.drain(&stack.urls.inbound).await.len(), 1);
}

#[tokio::test]
async fn bad_signature_receive_id_padding_or_replayed_timestamp_get_4xx_and_nothing_is_enqueued() {
    let stack = Stack::new().await;
    let service = deployed(&stack);
    let message = text_message(7_460_000_000_000_000_005, "forged");

    let mut bad_signature = signed(&message);
    // Flip the first hex digit of msg_signature.
    let first = "msg_signature=".len();
    let flipped = if &bad_signature.query[first..first + 1] == "0" { "1" } else { "0" };
    bad_signature.query.replace_range(first..first + 1, flipped);

    // Same key and token, but encrypted for another corp.
    let other_corp = MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), "wwAnotherCorp0001");
    let wrong_receive_id = signed_with(&other_corp, &message, now());

    let replayed = signed_with(&our_crypt(), &message, now() - 3600);

    // A correctly signed ciphertext whose padding bytes disagree: pick a message that is padded
    // with at least 3 bytes, then flip the second-to-last plaintext byte through CBC's previous block.
    let crypt = our_crypt();
    let mut padded = message.clone();
    while 32 - (20 + padded.len() + WECOM_CORP_ID.len()) % 32 < 3 {
        padded = padded.replace("forged", "forged!");
    }
    let mut bytes = base64_decode(&crypt.encrypt(&padded, [1; 16]));
    let n = bytes.len();
    bytes[n - 18] ^= 0x01;
    let encrypt = base64_encode(&bytes);
    let ts = now().to_string();
    let bad_padding = SignedCallback {
        query: format!("msg_signature={}&timestamp={ts}&nonce=1", crypt.signature(&ts, "1", &encrypt)),
        body: format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
    };

    for (callback, expected_status, expected_body) in [
        (&bad_signature, 401, "signature mismatch"),
        (&wrong_receive_id, 400, "ciphertext: receive id does not match"),
        (&bad_padding, 400, "ciphertext: bad PKCS#7 padding"),
        (&replayed, 403, "timestamp outside the replay window"),
    ] {
        assert_eq!(deliver(&service, callback).await, (expected_status, expected_body.to_owned()));
    }
    assert!(stack.drain(&stack.urls.inbound).await.is_empty());
    // The genuine message still goes through afterwards.
    assert_eq!(deliver(&service, &signed(&message)).await.0, 200);
    assert_eq!(stack.drain(&stack.urls.inbound).await.len(), 1);
}

#[tokio::test]
async fn the_inbound_queue_redrives_to_its_dlq() {
    let stack = Stack::new().await;
    let policy: Value =
        serde_json::from_str(&stack.queue_attribute(&stack.urls.inbound, QueueAttributeName::RedrivePolicy).await)
            .unwrap();
    let dlq_arn = stack.queue_attribute(&stack.urls.inbound_dlq, QueueAttributeName::QueueArn).await;
    assert_eq!(policy["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "5");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
