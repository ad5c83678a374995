//! The sender Lambda against the emulator (tokens, markers, queues) and the fake WeChat servers.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use fakes::{Api, FakeWechat, Fault};
use serde_json::{json, Value};
use shared::adapters::memory::MemoryMetrics;
use shared::channels::Config;
use shared::core::config::Env;
use shared::services::sender::Sender;
use shared::testing::fixtures::{OA_APP_ID, OA_TOKEN, WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

use crate::support::Stack;

const APP_SECRET: &str = "app-secret-0001";
const OA_SECRET: &str = "oa-secret-0001";
const ROBOT_KEY: &str = "robot-key-0001";
const BOT_TOKEN: &str = "0123abcd@im.bot:bot-secret";
const ILINK_USER: &str = "o9cq80_user@im.wechat";
/// A 1×1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

struct World {
    stack: Stack,
    fake: FakeWechat,
    env: Env,
    config_json: String,
}

impl World {
    async fn new() -> Self {
        let stack = Stack::new().await;
        let fake = FakeWechat::start().await;
        fake.add_wecom_app(WECOM_CORP_ID, APP_SECRET, 1_000_002);
        for user in ["ZhangWei", "WangFang"] {
            fake.add_wecom_user(user);
        }
        fake.add_appchat("chat0001", &["ZhangWei", "WangFang"]);
        fake.add_robot(ROBOT_KEY);
        fake.add_oa(OA_APP_ID, OA_SECRET);
        fake.add_oa_user("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        fake.add_ilink_bot(BOT_TOKEN);
        fake.add_ilink_user(BOT_TOKEN, ILINK_USER, "ctx-latest");
        let config_json = format!(
            r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}",
                  "encoding_aes_key": "{WECOM_AES_KEY}", "secret": "{APP_SECRET}"}}],
                 "oa": [{{"app": "news", "app_id": "{OA_APP_ID}", "token": "{OA_TOKEN}", "app_secret": "{OA_SECRET}"}}],
                 "ilink": [{{"account": "0123abcd@im.bot", "bot_token": "{BOT_TOKEN}", "base_url": "{}"}}],
                 "robots": [{{"name": "ops", "key": "{ROBOT_KEY}"}}]}}"#,
            fake.base_url
        );
        let (table, outbound, dlq, base) = (
            stack.names.table.clone(),
            stack.urls.outbound.clone(),
            stack.urls.outbound_dlq.clone(),
            fake.base_url.clone(),
        );
        let env = Env::from_vars([
            ("WXBRIDGE_TABLE", table.clone()),
            ("WXBRIDGE_OUTBOUND_QUEUE_URL", outbound.clone()),
            ("WXBRIDGE_DLQ_URL", dlq.clone()),
            ("WXBRIDGE_WECOM_API_BASE", base.clone()),
            ("WXBRIDGE_OA_API_BASE", base.clone()),
        ]);
        Self { stack, fake, env, config_json }
    }

    /// A sender process as the Lambda builds it, with its metrics kept for assertions.
    fn sender(&self) -> (Sender, Arc<MemoryMetrics>) {
        let mut sender = sender::build(Config::parse(&self.config_json).unwrap(), &self.env, &self.stack.sdk).unwrap();
        let metrics = Arc::new(MemoryMetrics::default());
        sender.metrics = metrics.clone();
        (sender, metrics)
    }

    async fn enqueue(&self, outbound: &Value) {
        self.stack
            .sqs
            .send_message()
            .queue_url(&self.stack.urls.outbound)
            .message_body(outbound.to_string())
            .send()
            .await
            .unwrap();
    }

    /// What SQS hands the Lambda now: up to 10 visible messages as an event.
    async fn receive(&self) -> SqsEvent {
        let mut records = Vec::new();
        for _ in 0..3 {
            let out = self
                .stack
                .sqs
                .receive_message()
                .queue_url(&self.stack.urls.outbound)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                let count =
                    m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount)).cloned();
                records.push(json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": {"ApproximateReceiveCount": count.unwrap_or_else(|| "1".into())},
                    "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1"
                }));
            }
            if records.len() >= 10 || !records.is_empty() && out.messages().is_empty() {
                break;
            }
        }
        serde_json::from_value(json!({"Records": records})).unwrap()
    }

    /// Makes every message on the outbound queue visible now (instead of waiting out a backoff).
    async fn make_visible(&self, event: &SqsEvent) {
        for record in &event.records {
            let _ = self
                .stack
                .sqs
                .change_message_visibility()
                .queue_url(&self.stack.urls.outbound)
                .receipt_handle(record.receipt_handle.clone().unwrap())
                .visibility_timeout(0)
                .send()
                .await;
        }
    }

    /// Deletes what the Lambda service would delete: the records not reported as failed.
    async fn settle(&self, event: &SqsEvent, failed: &[String]) {
        for record in &event.records {
            if !failed.contains(record.message_id.as_ref().unwrap()) {
                self.stack
                    .sqs
                    .delete_message()
                    .queue_url(&self.stack.urls.outbound)
                    .receipt_handle(record.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// One Lambda invocation over what is on the queue; returns the reported failures.
    async fn invoke(&self, sender: &Sender) -> (SqsEvent, Vec<String>) {
        let event = self.receive().await;
        // A fresh 60 s invocation, as Lambda gives the sender.
        let deadline_ms = shared::core::ports::unix_millis(std::time::SystemTime::now()) + 60_000;
        let response = sender::handle(sender, event.clone(), deadline_ms).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        self.settle(&event, &failed).await;
        (event, failed)
    }

    fn problems_free(&self) {
        assert!(self.fake.problems().is_empty(), "the fake saw bad requests: {:#?}", self.fake.problems());
    }
}

fn outbound(channel: &str, account: &str, to: &str, content: Value, key: &str) -> Value {
    json!({"v": 1, "channel": channel, "account": account, "to": to, "content": content, "idempotency_key": key})
}

#[tokio::test]
async fn every_channel_and_content_type_arrives_as_the_real_api_expects() {
    let world = World::new().await;
    let (sender, metrics) = world.sender();
    let card = json!({"card_type": "text_notice", "main_title": {"title": "t"}, "card_action": {"type": 1, "url": "https://example.com"}});
    let article = json!([{"title": "标题", "url": "https://example.com/a", "description": "d", "picurl": "https://example.com/p.png"}]);
    // Media ids WeCom issued (a send naming an id it never issued is refused, 40007).
    let png = b"\x89PNG\r\n\x1a\n0123456789".to_vec();
    let image_id = world.fake.add_wecom_media(WECOM_CORP_ID, png, "p.png", "image/png");
    let file_id = world.fake.add_wecom_media(WECOM_CORP_ID, b"%PDF-1.7 report".to_vec(), "r.pdf", "application/pdf");
    let oa_image_id = world.fake.add_oa_media(OA_APP_ID, b"\xFF\xD8\xFF\xE0 jpeg".to_vec(), "p.jpg", "image/jpeg");
    let cases = [
        ("wecom_app", "hr", "ZhangWei|WangFang", json!({"type": "text", "text": "你好 🚀"}), Api::WecomMessage, "text"),
        ("wecom_app", "hr", "ZhangWei", json!({"type": "markdown", "text": "**bold**"}), Api::WecomMessage, "markdown"),
        ("wecom_app", "hr", "ZhangWei", json!({"type": "image", "media_id": image_id}), Api::WecomMessage, "image"),
        ("wecom_app", "hr", "ZhangWei", json!({"type": "file", "media_id": file_id}), Api::WecomMessage, "file"),
        ("wecom_app", "hr", "ZhangWei", json!({"type": "news", "articles": article}), Api::WecomMessage, "news"),
        (
            "wecom_app",
            "hr",
            "ZhangWei",
            json!({"type": "textcard", "title": "t", "description": "d", "url": "https://example.com"}),
            Api::WecomMessage,
            "textcard",
        ),
        (
            "wecom_app",
            "hr",
            "ZhangWei",
            json!({"type": "template_card", "card": card}),
            Api::WecomMessage,
            "template_card",
        ),
        ("wecom_appchat", "hr", "chat0001", json!({"type": "text", "text": "群消息"}), Api::WecomAppchat, "text"),
        ("wecom_appchat", "hr", "chat0001", json!({"type": "markdown", "text": "# h"}), Api::WecomAppchat, "markdown"),
        ("wecom_appchat", "hr", "chat0001", json!({"type": "news", "articles": article}), Api::WecomAppchat, "news"),
        ("wecom_webhook", "ops", "", json!({"type": "text", "text": "deploy done"}), Api::WecomWebhook, "text"),
        ("wecom_webhook", "ops", "", json!({"type": "markdown", "text": "**ok**"}), Api::WecomWebhook, "markdown"),
        ("wecom_webhook", "ops", "", json!({"type": "image", "base64": PNG}), Api::WecomWebhook, "image"),
        ("wecom_webhook", "ops", "", json!({"type": "news", "articles": article}), Api::WecomWebhook, "news"),
        (
            "wecom_webhook",
            "ops",
            "",
            json!({"type": "template_card", "card": card}),
            Api::WecomWebhook,
            "template_card",
        ),
        (
            "oa",
            "news",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            json!({"type": "text", "text": "客服消息"}),
            Api::OaCustom,
            "text",
        ),
        // A slow bot's markdown answer goes by customer service as its text.
        (
            "oa",
            "news",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            json!({"type": "markdown", "text": "**加粗** and [docs](https://x.example)"}),
            Api::OaCustom,
            "text",
        ),
        (
            "oa",
            "news",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            json!({"type": "image", "media_id": oa_image_id}),
            Api::OaCustom,
            "image",
        ),
        (
            "oa",
            "news",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            json!({"type": "news", "articles": article}),
            Api::OaCustom,
            "news",
        ),
        (
            "ilink",
            "0123abcd@im.bot",
            ILINK_USER,
            json!({"type": "text", "text": "hi from the bot"}),
            Api::Ilink,
            "text",
        ),
    ];
    shared::core::ports::ContextTokens::store(
        &shared::adapters::aws::DynamoContextTokens::new(&shared::adapters::aws::Table::from_sdk(
            &world.stack.sdk,
            &world.stack.names.table,
        )),
        "0123abcd@im.bot",
        ILINK_USER,
        "ctx-latest",
        1,
    )
    .await
    .unwrap();
    for (i, (channel, account, to, content, _, _)) in cases.iter().enumerate() {
        world.enqueue(&outbound(channel, account, to, content.clone(), &format!("k{i}"))).await;
    }
    let mut rounds = 0;
    while world.fake.deliveries().len() < cases.len() && rounds < 5 {
        let (_, failed) = world.invoke(&sender).await;
        assert!(failed.is_empty(), "{failed:?}");
        rounds += 1;
    }
    world.problems_free();
    let deliveries = world.fake.deliveries();
    assert_eq!(deliveries.len(), cases.len());
    for (channel, _, _, content, api, msgtype) in &cases {
        let found = deliveries.iter().any(|d| {
            d.api == *api
                && (d.body["msgtype"] == *msgtype
                    || d.body["msg"]["item_list"][0]["text_item"]["text"] == content["text"])
        });
        assert!(found, "{channel} {msgtype} did not arrive");
    }
    let oa_texts: Vec<Value> =
        world.fake.deliveries_of(Api::OaCustom).iter().map(|d| d.body["text"]["content"].clone()).collect();
    assert!(oa_texts.contains(&json!("加粗 and docs (https://x.example)")), "{oa_texts:?}");
    let ilink = world.fake.deliveries_of(Api::Ilink);
    assert_eq!(ilink[0].body["msg"]["context_token"], "ctx-latest");
    assert_eq!(metrics.recorded.lock().unwrap().iter().filter(|m| m.outcome == "sent").count(), cases.len());
    // Exactly one token call per account for the whole run.
    assert_eq!(world.fake.calls("/cgi-bin/gettoken"), 1);
    assert_eq!(world.fake.calls("/cgi-bin/stable_token"), 1);
    assert_eq!(world.fake.calls("/cgi-bin/token"), 0, "the plain OA token endpoint invalidates other holders");
}

#[tokio::test]
async fn an_expired_token_mid_flight_is_refreshed_once_and_the_send_retried_once() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    world.enqueue(&outbound("wecom_app", "hr", "ZhangWei", json!({"type": "text", "text": "one"}), "a")).await;
    world.invoke(&sender).await;
    world.fake.expire_tokens();
    world.enqueue(&outbound("wecom_app", "hr", "ZhangWei", json!({"type": "text", "text": "two"}), "b")).await;
    let (_, failed) = world.invoke(&sender).await;
    assert!(failed.is_empty());
    assert_eq!(world.fake.deliveries().len(), 2);
    assert_eq!(world.fake.calls("/cgi-bin/gettoken"), 2);
    // One rejected attempt with the old token, one accepted retry.
    assert_eq!(world.fake.calls("/cgi-bin/message/send"), 3);
}

#[tokio::test]
async fn twenty_concurrent_senders_on_an_expired_token_make_one_token_call() {
    let world = Arc::new(World::new().await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let world = world.clone();
        tasks.push(tokio::spawn(async move {
            let (sender, _) = world.sender();
            let body = outbound(
                "wecom_app",
                "hr",
                "ZhangWei",
                json!({"type": "text", "text": format!("m{i}")}),
                &format!("c{i}"),
            );
            let record = shared::core::ports::Record {
                message_id: format!("id{i}"),
                receipt_handle: format!("r{i}"),
                body: body.to_string(),
                receive_count: 1,
                group: None,
            };
            sender.handle(&record).await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(
        world.fake.calls("/cgi-bin/gettoken"),
        1,
        "message/send calls: {}, problems: {:?}",
        world.fake.calls("/cgi-bin/message/send"),
        world.fake.problems()
    );
    assert_eq!(world.fake.deliveries().len(), 20);
}

#[tokio::test]
async fn a_rate_limit_is_retried_after_a_backoff_and_delivered_not_lost() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    world.fake.inject("/cgi-bin/webhook/send", Fault::Errcode(45009));
    world.enqueue(&outbound("wecom_webhook", "ops", "", json!({"type": "text", "text": "later"}), "rl")).await;
    let (event, failed) = world.invoke(&sender).await;
    assert_eq!(failed.len(), 1);
    assert!(world.fake.deliveries().is_empty());
    // The sender pushed the message's visibility out by at least a minute.
    assert!(world.receive().await.records.is_empty(), "the message came back before its backoff");
    world.make_visible(&event).await;
    let (event, failed) = world.invoke(&sender).await;
    assert!(failed.is_empty());
    assert_eq!(event.records[0].attributes["ApproximateReceiveCount"], "2");
    assert_eq!(world.fake.deliveries().len(), 1);
}

#[tokio::test]
async fn three_server_errors_then_success_deliver_exactly_once() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    for _ in 0..3 {
        world.fake.inject("/cgi-bin/message/send", Fault::HttpStatus(502));
    }
    world.enqueue(&outbound("wecom_app", "hr", "ZhangWei", json!({"type": "text", "text": "persist"}), "5xx")).await;
    for attempt in 1..=4 {
        let (event, failed) = world.invoke(&sender).await;
        assert_eq!(event.records.len(), 1, "attempt {attempt}");
        assert_eq!(failed.is_empty(), attempt == 4, "attempt {attempt}");
        world.make_visible(&event).await;
    }
    assert_eq!(world.fake.deliveries().len(), 1);
}

#[tokio::test]
async fn the_same_record_delivered_twice_by_sqs_is_sent_once() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    let body = outbound("oa", "news", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", json!({"type": "text", "text": "once"}), "dup");
    let record = shared::core::ports::Record {
        message_id: "m1".into(),
        receipt_handle: "r1".into(),
        body: body.to_string(),
        receive_count: 1,
        group: None,
    };
    assert!(sender.handle(&record).await);
    let (other_process, _) = world.sender();
    assert!(other_process.handle(&shared::core::ports::Record { receive_count: 2, ..record.clone() }).await);
    assert_eq!(world.fake.deliveries().len(), 1);
}

#[tokio::test]
async fn a_permanent_error_lands_in_the_dlq_with_its_reason_and_is_not_retried() {
    let world = World::new().await;
    let (sender, metrics) = world.sender();
    world.enqueue(&outbound("wecom_app", "hr", "NoSuchUser", json!({"type": "text", "text": "x"}), "perm")).await;
    world
        .enqueue(&outbound(
            "oa",
            "news",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            json!({"type": "textcard", "title": "t", "description": "d", "url": "https://example.com"}),
            "unsupported",
        ))
        .await;
    world.enqueue(&json!({"v": 1, "channel": "wecom_app"})).await;
    let (_, failed) = world.invoke(&sender).await;
    assert!(failed.is_empty(), "permanent failures are not retried");
    let dead = world.stack.drain(&world.stack.urls.outbound_dlq).await;
    assert_eq!(dead.len(), 3);
    let attribute = |m: &aws_sdk_sqs::types::Message, name: &str| {
        m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).unwrap_or_default().to_owned()
    };
    let by_reason: Vec<(String, String, String)> =
        dead.iter().map(|m| (attribute(m, "channel"), attribute(m, "errcode"), attribute(m, "reason"))).collect();
    assert!(by_reason.iter().any(|(c, e, _)| c == "wecom_app" && e == "81013"), "{by_reason:?}");
    assert!(by_reason.iter().any(|(c, _, r)| c == "oa" && r.contains("cannot send textcard")), "{by_reason:?}");
    assert!(by_reason.iter().any(|(_, _, r)| r.contains("invalid envelope")), "{by_reason:?}");
    assert!(world.stack.drain(&world.stack.urls.outbound).await.is_empty());
    assert_eq!(metrics.recorded.lock().unwrap().iter().filter(|m| m.outcome == "dead_letter").count(), 3);
}

#[tokio::test]
async fn a_batch_of_ten_with_three_failures_reports_exactly_those_three() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    for _ in 0..3 {
        world.fake.inject("/cgi-bin/webhook/send", Fault::HttpStatus(503));
    }
    let mut robot_bodies = Vec::new();
    for i in 0..10 {
        let message = if i % 3 == 0 && robot_bodies.len() < 3 {
            let m = outbound(
                "wecom_webhook",
                "ops",
                "",
                json!({"type": "text", "text": format!("r{i}")}),
                &format!("b{i}"),
            );
            robot_bodies.push(m.to_string());
            m
        } else {
            outbound("wecom_app", "hr", "ZhangWei", json!({"type": "text", "text": format!("a{i}")}), &format!("b{i}"))
        };
        world.enqueue(&message).await;
    }
    let (event, failed) = world.invoke(&sender).await;
    assert_eq!(event.records.len(), 10);
    let failed_bodies: Vec<String> = event
        .records
        .iter()
        .filter(|r| failed.contains(r.message_id.as_ref().unwrap()))
        .map(|r| r.body.clone().unwrap())
        .collect();
    assert_eq!(failed.len(), 3);
    for body in &robot_bodies {
        assert!(failed_bodies.contains(body));
    }
    assert_eq!(world.fake.deliveries().len(), 7);
}

#[tokio::test]
async fn long_text_is_split_in_order_with_each_part_sent_once() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    let text = format!("{}\n{}\n{}", "一".repeat(600), "二".repeat(600), "三".repeat(600));
    world.enqueue(&outbound("wecom_app", "hr", "ZhangWei", json!({"type": "text", "text": text}), "long")).await;
    // The second part fails once: the retry must not send the first part again.
    world.fake.inject("/cgi-bin/message/send", Fault::Delay(Duration::ZERO));
    world.fake.inject("/cgi-bin/message/send", Fault::HttpStatus(500));
    let (event, failed) = world.invoke(&sender).await;
    assert_eq!(failed.len(), 1);
    world.make_visible(&event).await;
    let (_, failed) = world.invoke(&sender).await;
    assert!(failed.is_empty());
    let parts: Vec<String> =
        world.fake.deliveries().iter().map(|d| d.body["text"]["content"].as_str().unwrap().to_owned()).collect();
    // Three parts, split at the line breaks; the first was not sent twice.
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.len() <= 2048));
    assert_eq!(parts.concat(), text);
    world.problems_free();
}

#[tokio::test]
async fn a_dropped_connection_is_retried_and_delivered_once() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    world.fake.inject("/cgi-bin/message/custom/send", Fault::Drop);
    world
        .enqueue(&outbound(
            "oa",
            "news",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            json!({"type": "text", "text": "again"}),
            "drop",
        ))
        .await;
    let (event, failed) = world.invoke(&sender).await;
    assert_eq!(failed.len(), 1, "a connection error is transient");
    world.make_visible(&event).await;
    let (_, failed) = world.invoke(&sender).await;
    assert!(failed.is_empty());
    assert_eq!(world.fake.deliveries_of(Api::OaCustom).len(), 1);
}

#[tokio::test]
async fn recipients_wecom_could_not_reach_are_reported_and_the_rest_is_not_resent() {
    let world = World::new().await;
    let (sender, _) = world.sender();
    let message = outbound("wecom_app", "hr", "ZhangWei|Ghost", json!({"type": "text", "text": "partial"}), "partial");
    world.enqueue(&message).await;
    let (_, failed) = world.invoke(&sender).await;
    assert!(failed.is_empty(), "a partial delivery is not retried");
    assert_eq!(world.fake.deliveries().len(), 1, "ZhangWei got it");
    let dead = world.stack.drain(&world.stack.urls.outbound_dlq).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].message_attributes().unwrap()["reason"].string_value().unwrap().to_owned();
    assert!(reason.contains("invaliduser=Ghost"), "{reason}");
    // An operator redriving it from the DLQ does not send ZhangWei a second copy.
    world.enqueue(&message).await;
    world.invoke(&sender).await;
    assert_eq!(world.fake.deliveries().len(), 1);
}
