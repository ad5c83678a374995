//! Media in: every channel's files fetched once into the media bucket (S3 on the emulator)
//! before the dispatcher sees the message, against the fake WeChat servers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use fakes::{FakeWechat, Fault};
use serde_json::{json, Value};
use shared::adapters::aws::sqs::SqsRedeliver;
use shared::adapters::aws::{DynamoDedupe, DynamoTokenStore, SqsPublisher, Table};
use shared::channels::aibot::AibotCallback;
use shared::channels::ilink::message::WeixinMessage;
use shared::channels::oa::message::OaCallbackMessage;
use shared::channels::wecom::simulate;
use shared::channels::wecom::WecomCallback;
use shared::channels::{Apis, Config, MediaSources};
use shared::core::callback::InboundQueues;
use shared::core::config::Env;
use shared::core::envelope::{Inbound, Media};
use shared::core::http::{Http, HttpSettings};
use shared::core::ports::{MediaStore, Publisher, Record, SystemClock};
use shared::core::tokens::Tokens;
use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
use shared::services::media::{MediaService, MediaSettings};
use shared::testing::fixtures::{OA_APP_ID, OA_TOKEN, WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

use crate::support::Stack;

const INBOUND_SCHEMA: &str = include_str!("../../schemas/inbound.v1.json");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `len` bytes that read as a PNG, different for each `seed`.
pub(crate) fn png(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push(x as u8);
    }
    bytes.truncate(len);
    bytes
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    shared::protocol::hex::hex(&sha2::Sha256::digest(bytes))
}

fn config(wx: &FakeWechat) -> Config {
    Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}", "secret": "wecom-secret"}}],
             "oa": [{{"app": "news", "app_id": "{OA_APP_ID}", "token": "{OA_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}", "app_secret": "oa-secret"}}],
             "aibots": [{{"name": "helper", "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}", "bot_name": "Helper"}}],
             "ilink": [{{"account": "bot1", "bot_token": "ilink-token", "base_url": "{}"}}],
             "robots": [{{"name": "ops", "key": "robot-key"}}]}}"#,
        wx.base_url
    ))
    .unwrap()
}

/// The fake WeChat with the config's accounts, and the media step on the test's stack.
struct Rig {
    stack: Stack,
    wx: FakeWechat,
    config: Config,
    service: MediaService,
}

impl Rig {
    async fn new() -> Self {
        Self::with(MediaSettings::default()).await
    }

    async fn with(settings: MediaSettings) -> Self {
        let stack = Stack::new().await;
        let wx = FakeWechat::start().await;
        wx.add_wecom_app(WECOM_CORP_ID, "wecom-secret", 1_000_002);
        wx.add_oa(OA_APP_ID, "oa-secret");
        wx.add_robot("robot-key");
        wx.add_wecom_user("WangFang");
        let config = config(&wx);
        let env = Env::from_vars([
            ("WXBRIDGE_WECOM_API_BASE", wx.base_url.clone()),
            ("WXBRIDGE_OA_API_BASE", wx.base_url.clone()),
            ("WXBRIDGE_ILINK_CDN_BASE", wx.base_url.clone()),
        ]);
        let apis = Apis::new(&Http::new(&HttpSettings::default()).unwrap(), &env);
        let table = Table::from_sdk(&stack.sdk, &stack.names.table);
        let tokens = Arc::new(Tokens::new(Arc::new(DynamoTokenStore::new(&table)), Arc::new(SystemClock)));
        let service = MediaService {
            sources: Arc::new(MediaSources::new(&config, &apis, &tokens, MediaSources::trusted_hosts(&env))),
            store: Arc::new(stack.media.clone()),
            inbound: Arc::new(SqsPublisher::from_sdk(&stack.sdk, &stack.urls.inbound)),
            clock: Arc::new(SystemClock),
            settings,
            requeue: Some(Arc::new(SqsRedeliver::from_sdk(&stack.sdk, &stack.urls.media))),
            max_receives: Some(6),
        };
        Self { stack, wx, config, service }
    }

    /// Puts `inbound` on the media queue as the callbacks do.
    async fn publish(&self, inbound: &Inbound) {
        let queues = self.queues();
        queues.publish(shared::core::callback::inbound_message(inbound)).await.unwrap();
    }

    fn queues(&self) -> InboundQueues {
        InboundQueues {
            inbound: Arc::new(SqsPublisher::from_sdk(&self.stack.sdk, &self.stack.urls.inbound)),
            media: Some(Arc::new(SqsPublisher::from_sdk(&self.stack.sdk, &self.stack.urls.media))),
            kf: None,
        }
    }

    /// Receives what is on the media queue (waiting up to `wait_s` for the first) as Lambda
    /// would get it, and runs the media step on it; returns the ids it failed.
    async fn run_media(&self, wait_s: i32) -> (usize, Vec<String>) {
        // Short long polls: the SDK's operation timeout (3 s) is shorter than a long one.
        let deadline = std::time::Instant::now() + Duration::from_secs(wait_s as u64);
        let mut records = receive(&self.stack, &self.stack.urls.media, 1).await;
        while records.is_empty() && std::time::Instant::now() < deadline {
            records = receive(&self.stack, &self.stack.urls.media, 1).await;
        }
        let failed = self.service.handle_batch(&records).await;
        (records.len(), failed)
    }

    /// Every resolved message on the inbound queue.
    async fn resolved(&self) -> Vec<Inbound> {
        let messages = self.stack.drain(&self.stack.urls.inbound).await;
        messages.iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect()
    }

    async fn one_resolved(&self, inbound: &Inbound) -> Inbound {
        self.publish(inbound).await;
        let (received, failed) = self.run_media(5).await;
        assert_eq!((received, failed.len()), (1, 0), "one record, handled");
        let mut resolved = self.resolved().await;
        assert_eq!(resolved.len(), 1, "{resolved:#?}");
        resolved.remove(0)
    }
}

pub(crate) async fn receive(stack: &Stack, url: &str, wait_s: i32) -> Vec<Record> {
    let out = stack
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_s)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| {
            let attribute = |name| m.attributes().and_then(|a| a.get(&name));
            Record {
                message_id: m.message_id().unwrap().to_owned(),
                receipt_handle: m.receipt_handle().unwrap().to_owned(),
                body: m.body().unwrap().to_owned(),
                receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                group: attribute(MessageSystemAttributeName::MessageGroupId).cloned(),
            }
        })
        .collect()
}

pub(crate) fn assert_valid(inbound: &Inbound) {
    let schema: Value = serde_json::from_str(INBOUND_SCHEMA).unwrap();
    let value = serde_json::to_value(inbound).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{value:#}");
}

/// The stored media: its link serves the original bytes, named and hashed as they are.
pub(crate) async fn assert_stored(media: &Media, original: &[u8]) {
    assert_eq!(media.error, None, "{media:#?}");
    assert_eq!(media.sha256.as_deref(), Some(sha256(original).as_str()));
    assert_eq!(media.size, Some(original.len() as u64));
    assert_eq!(media.key.as_deref(), Some(format!("media/{}", sha256(original)).as_str()));
    let url = media.url.as_deref().expect("a link");
    assert!(media.url_expires_at.unwrap() > now() + 3600, "{media:#?}");
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let body = response.bytes().await.unwrap();
    assert!(body.as_ref() == original, "the link serves other bytes ({} vs {})", body.len(), original.len());
}

fn aibot_inbound(payload: Value, received_at: u64) -> Inbound {
    match AibotCallback::parse(&payload.to_string()).unwrap() {
        AibotCallback::Message(message) => message.to_inbound("helper", "Helper", received_at),
        other => panic!("{other:?}"),
    }
}

/// An iLink message carrying `item`, with an id of its own (the queues drop a repeated id).
fn ilink_inbound(item: Value) -> Inbound {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7_400_000_000_000_000_002);
    let message_id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let raw = json!({"message_id": message_id, "from_user_id": "u1@im.wechat", "to_user_id": "bot1",
        "create_time_ms": now() * 1000, "message_type": 1, "message_state": 2, "item_list": [item], "context_token": "ctx"});
    WeixinMessage::from_value(&raw).unwrap().to_inbound("bot1", now(), raw)
}

#[tokio::test]
async fn a_wecom_app_image_goes_by_the_media_queue_into_the_bucket_and_on_to_the_dispatcher() {
    let rig = Rig::new().await;
    let photo = png(34 * 1024, 1);
    let media_id = rig.wx.add_wecom_media(WECOM_CORP_ID, photo.clone(), "IMG_0001.png", "image/png");
    // The callback, as WeCom sends it: acknowledged once the media queue has the message.
    let crypt = MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), WECOM_CORP_ID);
    let xml =
        simulate::image_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", &media_id, 7_450_000_000_000_000_001, now());
    let callback = simulate::sign_callback(&crypt, &xml, now(), "n1", [5; 16]);
    let service = WecomCallback::new(
        &rig.config.wecom,
        shared::core::callback::DEFAULT_REPLAY_WINDOW_SECS,
        Arc::new(rig.queues()),
        Arc::new(SystemClock),
    );
    use shared::core::callback::{CallbackRequest, CallbackService};
    let answer = service
        .serve(CallbackRequest {
            method: "POST",
            app: "hr",
            raw_query: &callback.query,
            body: callback.body.as_bytes(),
        })
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(rig.stack.drain(&rig.stack.urls.inbound).await.is_empty(), "nothing reaches the dispatcher unfetched");
    // WeCom's retries of the callback: the media queue keeps one copy (its deduplication).
    for _ in 0..3 {
        let request =
            CallbackRequest { method: "POST", app: "hr", raw_query: &callback.query, body: callback.body.as_bytes() };
        assert_eq!(service.serve(request).await.status, 200);
    }

    let (received, failed) = rig.run_media(5).await;
    assert_eq!((received, failed.len()), (1, 0));
    let resolved = rig.resolved().await;
    assert_eq!(resolved.len(), 1);
    let media = resolved[0].media.as_ref().unwrap();
    assert_stored(media, &photo).await;
    assert_eq!(media.mime.as_deref(), Some("image/png"));
    assert_eq!(media.file_name.as_deref(), Some("IMG_0001.png"));
    assert_eq!(media.media_id.as_deref(), Some(media_id.as_str()), "the channel's reference stays");
    assert_valid(&resolved[0]);
    assert_eq!(rig.wx.calls("/cgi-bin/media/get"), 1, "fetched once");
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn the_media_steps_republish_keeps_the_conversations_group_and_the_dedup_id() {
    use shared::core::callback::{conversation_group, dedup_id};
    let rig = Rig::new().await;
    let media_id = rig.wx.add_wecom_media(WECOM_CORP_ID, png(2048, 9), "p.png", "image/png");
    let xml =
        simulate::image_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", &media_id, 7_450_000_000_000_000_009, now());
    let inbound = shared::channels::wecom::WecomCallbackMessage::parse(&xml).unwrap().to_inbound("hr", now());
    rig.publish(&inbound).await;
    // On the media queue the message has a group of its own: no fetch waits for another.
    let records = receive(&rig.stack, &rig.stack.urls.media, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].group.as_deref(), Some(dedup_id(&inbound.id).as_str()));
    // The step runs twice on the record (a redelivery within five minutes, say after a delete
    // that failed): the inbound queue keeps one copy.
    for _ in 0..2 {
        rig.service.handle(&records[0]).await.unwrap();
    }
    let messages = rig.stack.drain(&rig.stack.urls.inbound).await;
    assert_eq!(messages.len(), 1);
    let system = |name| messages[0].attributes().and_then(|a| a.get(&name)).cloned();
    // Back in its conversation's group, under the Inbound's deduplication id.
    assert_eq!(system(MessageSystemAttributeName::MessageGroupId), Some(conversation_group(&inbound)));
    assert_eq!(system(MessageSystemAttributeName::MessageDeduplicationId), Some(dedup_id(&inbound.id)));
    let resolved: Inbound = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert!(resolved.media.as_ref().and_then(|m| m.key.as_ref()).is_some(), "resolved: {resolved:#?}");
}

#[tokio::test]
async fn a_wecom_file_over_one_range_is_fetched_in_ranges_and_stored_whole() {
    let rig = Rig::new().await;
    // 25 MB: two ranges of at most 20 MB, so WeCom's 830002 ("use Range") never comes up.
    let file = png(25 * 1024 * 1024, 2);
    let media_id = rig.wx.add_wecom_media(WECOM_CORP_ID, file.clone(), "大文件.bin", "application/octet-stream");
    let xml =
        simulate::image_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", &media_id, 7_450_000_000_000_000_002, now());
    let inbound = shared::channels::wecom::WecomCallbackMessage::parse(&xml).unwrap().to_inbound("hr", now());
    let resolved = rig.one_resolved(&inbound).await;
    assert_stored(resolved.media.as_ref().unwrap(), &file).await;
    assert_eq!(resolved.media.as_ref().unwrap().file_name.as_deref(), Some("大文件.bin"), "raw UTF-8 file names read");
    assert_eq!(rig.wx.calls("/cgi-bin/media/get"), 2);
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn an_unknown_or_foreign_media_id_reaches_the_bot_as_a_media_error_not_a_lost_message() {
    let rig = Rig::new().await;
    let foreign = rig.wx.add_wecom_media("ww-other-corp", png(100, 3), "x.png", "image/png");
    let xml = simulate::image_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", &foreign, 7_450_000_000_000_000_003, now());
    let inbound = shared::channels::wecom::WecomCallbackMessage::parse(&xml).unwrap().to_inbound("hr", now());
    let resolved = rig.one_resolved(&inbound).await;
    let media = resolved.media.as_ref().unwrap();
    let error = media.error.as_ref().expect("a media error");
    assert_eq!(error.code, "refused");
    assert!(error.message.contains("40007"), "{error:?}");
    assert!(!error.message.contains("access_token") && media.url.is_none() && media.key.is_none(), "{media:#?}");
    assert_valid(&resolved);
}

#[tokio::test]
async fn an_official_account_video_is_fetched_through_its_video_url_and_a_voice_keeps_its_transcript() {
    let rig = Rig::new().await;
    let video = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".iter().copied().chain(png(200_000, 4)).collect::<Vec<u8>>();
    let media_id = rig.wx.add_oa_media(OA_APP_ID, video.clone(), "v.mp4", "video/mp4");
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUSER]]></FromUserName><CreateTime>{}</CreateTime>\
         <MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[{media_id}]]></MediaId><ThumbMediaId><![CDATA[t1]]></ThumbMediaId><MsgId>24000000000000001</MsgId></xml>",
        now()
    );
    let inbound = OaCallbackMessage::parse(&xml).unwrap().to_inbound("news", now());
    let resolved = rig.one_resolved(&inbound).await;
    let media = resolved.media.as_ref().unwrap();
    assert_stored(media, &video).await;
    assert_eq!(media.mime.as_deref(), Some("video/mp4"));
    assert_eq!(rig.wx.calls("/oa/video"), 1);

    let amr = b"#!AMR\n".iter().copied().chain(png(3000, 5)).collect::<Vec<u8>>();
    let voice_id = rig.wx.add_oa_media(OA_APP_ID, amr.clone(), "v.amr", "audio/amr");
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUSER]]></FromUserName><CreateTime>{}</CreateTime>\
         <MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[{voice_id}]]></MediaId><Format><![CDATA[amr]]></Format>\
         <Recognition><![CDATA[明天天气怎么样]]></Recognition><MsgId>24000000000000002</MsgId></xml>",
        now()
    );
    let inbound = OaCallbackMessage::parse(&xml).unwrap().to_inbound("news", now());
    let resolved = rig.one_resolved(&inbound).await;
    let media = resolved.media.as_ref().unwrap();
    assert_stored(media, &amr).await;
    assert_eq!((media.mime.as_deref(), media.transcript.as_deref()), (Some("audio/amr"), Some("明天天气怎么样")));
    assert_valid(&resolved);
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn an_ai_bot_image_is_decrypted_with_the_bot_key_while_the_dispatchers_queue_is_backed_up() {
    let rig = Rig::new().await;
    // A backlog on the inbound queue (slow bots) does not hold the fetch up: the media step
    // reads its own queue, so the five-minute URL (here five seconds) is fetched in time.
    for i in 0..30 {
        let backlog = aibot_inbound(
            json!({"msgid": format!("b{i}"), "aibotid": "aib1", "chattype": "single",
            "from": {"userid": "lisi"}, "msgtype": "text", "text": {"content": "排队"}}),
            now(),
        );
        let queue = SqsPublisher::from_sdk(&rig.stack.sdk, &rig.stack.urls.inbound);
        queue.publish(shared::core::callback::inbound_message(&backlog)).await.unwrap();
    }
    rig.wx.set_aibot_media_ttl(Duration::from_secs(5));
    let photo = png(180_000, 6);
    let url = rig.wx.aibot_media_url(&photo, WECOM_AES_KEY, None);
    let inbound = aibot_inbound(
        json!({"msgid": "m-img", "aibotid": "aib1", "chattype": "single", "from": {"userid": "zhangsan"},
               "msgtype": "image", "image": {"url": url}}),
        now(),
    );
    rig.publish(&inbound).await;
    let (received, failed) = rig.run_media(5).await;
    assert_eq!((received, failed.len()), (1, 0));
    let resolved: Vec<Inbound> = rig.resolved().await.into_iter().filter(|i| i.id == inbound.id).collect();
    let media = resolved[0].media.as_ref().unwrap();
    assert_stored(media, &photo).await;
    assert_eq!(media.mime.as_deref(), Some("image/png"), "sniffed from the decrypted bytes");
    assert!(!media.url.as_deref().unwrap().contains("/aibot/media"), "the bot gets our link, not WeCom's");
    assert_valid(&resolved[0]);
}

#[tokio::test]
async fn an_ai_bot_url_past_its_five_minutes_gives_expired_and_a_group_mixed_image_is_fetched() {
    let rig = Rig::new().await;
    rig.wx.set_aibot_media_ttl(Duration::ZERO);
    let url = rig.wx.aibot_media_url(&png(1000, 7), WECOM_AES_KEY, None);
    let late = aibot_inbound(
        json!({"msgid": "m-late", "aibotid": "aib1", "chattype": "single", "from": {"userid": "zhangsan"},
               "msgtype": "file", "file": {"url": url}}),
        now() - 400,
    );
    let resolved = rig.one_resolved(&late).await;
    let error = resolved.media.as_ref().unwrap().error.clone().expect("an error");
    assert_eq!(error.code, "expired", "{error:?}");
    assert_valid(&resolved);

    rig.wx.set_aibot_media_ttl(Duration::from_secs(300));
    let photo = png(5000, 8);
    let url = rig.wx.aibot_media_url(&photo, WECOM_AES_KEY, None);
    let mixed = aibot_inbound(
        json!({"msgid": "m-mixed", "aibotid": "aib1", "chatid": "wr1", "chattype": "group", "from": {"userid": "zhangsan"},
               "msgtype": "mixed", "mixed": {"msg_item": [{"msgtype": "text", "text": {"content": "@Helper 这是什么"}},
                                                        {"msgtype": "image", "image": {"url": url}}]}}),
        now(),
    );
    let resolved = rig.one_resolved(&mixed).await;
    assert_eq!(resolved.text.as_deref(), Some("这是什么"));
    assert_stored(resolved.media.as_ref().unwrap(), &photo).await;
}

#[tokio::test]
async fn ilink_cdn_files_decrypt_with_every_key_form_and_plain_images_pass_as_sent() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let rig = Rig::new().await;
    let key: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3));
    let hex = shared::protocol::hex::hex(&key);
    let cases = [
        ("image aeskey", json!({"aeskey": hex}), None),
        ("base64 of the raw key", json!({}), Some(b64.encode(key))),
        ("base64 of the hex key", json!({}), Some(b64.encode(&hex))),
    ];
    for (i, (why, extra, aes_key)) in cases.into_iter().enumerate() {
        let photo = png(20_000 + i * 17, 10 + i as u64);
        let param = rig.wx.ilink_cdn_media(&photo, key);
        let mut image = json!({"media": {"encrypt_query_param": param, "encrypt_type": 1}});
        if let Some(aes_key) = aes_key {
            image["media"]["aes_key"] = json!(aes_key);
        }
        image.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let inbound = ilink_inbound(json!({"type": 2, "image_item": image}));
        let resolved = rig.one_resolved(&inbound).await;
        assert_stored(resolved.media.as_ref().unwrap(), &photo).await;
        assert!(!resolved.media.as_ref().unwrap().url.as_deref().unwrap().contains("encrypted_query_param"), "{why}");
    }
    let plain = png(4000, 20);
    let param = rig.wx.ilink_cdn_plain(&plain);
    let inbound = ilink_inbound(json!({"type": 2, "image_item": {"media": {"encrypt_query_param": param}}}));
    assert_stored(rig.one_resolved(&inbound).await.media.as_ref().unwrap(), &plain).await;

    let file = b"%PDF-1.7\n".iter().copied().chain(png(9000, 21)).collect::<Vec<u8>>();
    let param = rig.wx.ilink_cdn_media(&file, key);
    let inbound = ilink_inbound(
        json!({"type": 4, "file_item": {"media": {"encrypt_query_param": param, "aes_key": b64.encode(key)},
        "file_name": "季度报告.pdf", "len": file.len().to_string()}}),
    );
    let resolved = rig.one_resolved(&inbound).await;
    let media = resolved.media.as_ref().unwrap();
    assert_stored(media, &file).await;
    assert_eq!((media.mime.as_deref(), media.file_name.as_deref()), (Some("application/pdf"), Some("季度报告.pdf")));
    assert_valid(&resolved);
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn a_transient_cdn_failure_comes_back_through_the_queue_and_is_delivered_once() {
    let rig = Rig::new().await;
    let key = [9u8; 16];
    let photo = png(50_000, 30);
    let param = rig.wx.ilink_cdn_media(&photo, key);
    let inbound = ilink_inbound(json!({"type": 2, "image_item": {"media": {"encrypt_query_param": param,
        "aes_key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)}}}));
    rig.wx.inject("/c2c/download", Fault::HttpStatus(500));
    rig.publish(&inbound).await;
    let (received, failed) = rig.run_media(5).await;
    assert_eq!((received, failed.len()), (1, 1), "the CDN's 500 fails the record");
    assert!(rig.stack.drain(&rig.stack.urls.inbound).await.is_empty(), "nothing passed on yet");
    // The media step's backoff (10 s for iLink), not the queue's visibility timeout, brings it back.
    let (received, failed) = rig.run_media(20).await;
    assert_eq!((received, failed.len()), (1, 0));
    let resolved = rig.resolved().await;
    assert_eq!(resolved.len(), 1, "delivered once");
    assert_stored(resolved[0].media.as_ref().unwrap(), &photo).await;
    assert_eq!(rig.wx.calls("/c2c/download"), 2);
}

#[tokio::test]
async fn oversized_media_and_a_fetch_failing_on_the_last_receive_still_reach_the_bot_with_the_reason() {
    let rig = Rig::with(MediaSettings { max_bytes: 10_000, ..MediaSettings::default() }).await;
    let big = rig.wx.add_wecom_media(WECOM_CORP_ID, png(10_001, 40), "big.png", "image/png");
    let xml = simulate::image_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", &big, 7_450_000_000_000_000_010, now());
    let inbound = shared::channels::wecom::WecomCallbackMessage::parse(&xml).unwrap().to_inbound("hr", now());
    let resolved = rig.one_resolved(&inbound).await;
    let error = resolved.media.as_ref().unwrap().error.clone().unwrap();
    assert_eq!(error.code, "too_large", "{error:?}");
    assert!(
        rig.stack.media.size(&format!("media/{}", sha256(&png(10_001, 40)))).await.unwrap().is_none(),
        "nothing stored"
    );

    // On the queue's last receive a transient failure gives up with the reason.
    let exact = rig.wx.add_wecom_media(WECOM_CORP_ID, png(10_000, 41), "ok.png", "image/png");
    let xml = simulate::image_message(WECOM_CORP_ID, 1_000_002, "ZhangWei", &exact, 7_450_000_000_000_000_011, now());
    let mut inbound = shared::channels::wecom::WecomCallbackMessage::parse(&xml).unwrap().to_inbound("hr", now());
    rig.wx.inject("/cgi-bin/media/get", Fault::HttpStatus(502));
    let mut last = inbound.clone();
    rig.service.resolve(&mut last, true).await.unwrap();
    assert_eq!(last.media.as_ref().unwrap().error.as_ref().unwrap().code, "unavailable");
    // Before the last receive the same failure is an error (the record comes again), and a
    // file of exactly the cap is taken.
    rig.wx.inject("/cgi-bin/media/get", Fault::HttpStatus(502));
    assert!(rig.service.resolve(&mut inbound.clone(), false).await.is_err());
    rig.service.resolve(&mut inbound, false).await.unwrap();
    assert_stored(inbound.media.as_ref().unwrap(), &png(10_000, 41)).await;
}

#[tokio::test]
async fn a_queue_bot_reads_each_resolved_inbound_once_and_the_dispatcher_answers_nothing_itself() {
    use shared::adapters::memory::{MemoryReplySlots, MemoryStreams};
    use shared::core::ports::Streams;
    use shared::services::bots::QueueBot;
    use shared::services::dispatcher::{BotCalls, Dispatcher};
    let rig = Rig::new().await;
    let photo = png(3000, 50);
    let url = rig.wx.aibot_media_url(&photo, WECOM_AES_KEY, None);
    let inbound = aibot_inbound(
        json!({"msgid": "m-q", "aibotid": "aib1", "chattype": "single", "from": {"userid": "zhangsan"},
               "msgtype": "image", "image": {"url": url}}),
        now(),
    );
    let resolved = rig.one_resolved(&inbound).await;
    let streams = Arc::new(MemoryStreams::default());
    let (stream, _) = shared::channels::aibot::stream_key("helper", &resolved.id);
    streams.open(&stream, SystemTime::now(), None, SystemTime::now() + Duration::from_secs(3600)).await.unwrap();
    let table = Table::from_sdk(&rig.stack.sdk, &rig.stack.names.table);
    let dispatcher = Dispatcher {
        bot: Arc::new(QueueBot::new(Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &rig.stack.urls.bot)))),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &rig.stack.urls.outbound)),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: Some(streams.clone()),
        calls: Some(BotCalls { leases: Arc::new(DynamoDedupe::new(&table)), timeout: Duration::from_secs(30) }),
        files: None,
    };
    let body = resolved.to_json();
    assert_eq!(dispatcher.dispatch(&body).await.unwrap(), 0);
    assert_eq!(dispatcher.dispatch(&body).await.unwrap(), 0, "a redelivery is acknowledged");
    let read = rig.stack.drain(&rig.stack.urls.bot).await;
    assert_eq!(read.len(), 1, "the consumer reads the message once");
    let got: Inbound = serde_json::from_str(read[0].body().unwrap()).unwrap();
    assert_eq!(got, resolved, "the same resolved Inbound, media link included");
    let attributes = read[0].message_attributes();
    assert!(attributes.is_none_or(|a| !a.contains_key("media")), "no fetch is asked of anyone");
    assert!(rig.stack.drain(&rig.stack.urls.outbound).await.is_empty(), "the dispatcher sends nothing itself");
    let open = streams.read(&stream).await.unwrap().unwrap();
    assert!(!open.finished, "the stream stays open for the consumer's in_reply_to answer");
}

/// The sender of the rig's stack: DynamoDB, SQS, the media bucket, the fake WeChat.
fn sender(rig: &Rig) -> shared::services::sender::Sender {
    let env = Env::from_vars([
        ("WXBRIDGE_TABLE", rig.stack.names.table.clone()),
        ("WXBRIDGE_OUTBOUND_QUEUE_URL", rig.stack.urls.outbound.clone()),
        ("WXBRIDGE_DLQ_URL", rig.stack.urls.outbound.clone()),
        ("WXBRIDGE_MEDIA_BUCKET", rig.stack.names.bucket.clone()),
        ("WXBRIDGE_WECOM_API_BASE", rig.wx.base_url.clone()),
        ("WXBRIDGE_OA_API_BASE", rig.wx.base_url.clone()),
        ("AWS_ENDPOINT_URL", crate::support::endpoint()),
    ]);
    sender::build(rig.config.clone(), &env, &rig.stack.sdk).expect("the sender builds")
}

pub(crate) async fn send(
    sender: &shared::services::sender::Sender,
    outbound: Value,
) -> shared::services::sender::Outcome {
    let record = Record {
        message_id: "m".into(),
        receipt_handle: "r".into(),
        body: outbound.to_string(),
        receive_count: 1,
        group: None,
    };
    sender.send_record(&record).await.1
}

fn outbound(channel: &str, key: &str, content: Value) -> Value {
    let to = if channel == "wecom_webhook" { json!("") } else { json!("WangFang") };
    let account = if channel == "wecom_webhook" { "ops" } else { "hr" };
    json!({"v": 1, "channel": channel, "account": account, "to": to, "content": content, "idempotency_key": key})
}

async fn store(rig: &Rig, bytes: &[u8], mime: &str) -> String {
    let key = format!("media/{}", sha256(bytes));
    rig.stack.media.put_bytes(&key, bytes.to_vec(), mime).await.unwrap();
    key
}

pub(crate) fn sent(outcome: &shared::services::sender::Outcome) -> bool {
    matches!(outcome, shared::services::sender::Outcome::Sent { .. })
}

#[tokio::test]
async fn a_stored_picture_is_uploaded_once_sent_by_its_id_and_uploaded_again_once_its_id_expired() {
    let rig = Rig::new().await;
    let sender = sender(&rig);
    let photo = png(120_000, 60);
    let key = store(&rig, &photo, "image/png").await;
    let image = json!({"type": "image", "media": {"key": key}});
    let outcome = send(&sender, outbound("wecom_app", "out-1", image.clone())).await;
    assert!(sent(&outcome), "{outcome:?}");
    let sends = rig.wx.deliveries_of(fakes::Api::WecomMessage);
    let id = sends[0].body["image"]["media_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.wx.media(&id).expect("the upload is kept").1, photo, "WeCom got the same bytes");
    assert_eq!(rig.wx.calls("/cgi-bin/media/upload"), 1);

    // The same picture again: the cached id, no upload.
    assert!(sent(&send(&sender, outbound("wecom_app", "out-2", image.clone())).await));
    assert_eq!(rig.wx.calls("/cgi-bin/media/upload"), 1, "uploaded once");
    assert_eq!(rig.wx.deliveries_of(fakes::Api::WecomMessage)[1].body["image"]["media_id"], json!(id));

    // WeCom forgets the id before its three days: the id is dropped and the message comes back
    // at once, to upload again before its part is claimed; then it goes through.
    rig.wx.expire_media(&id);
    let outcome = send(&sender, outbound("wecom_app", "out-3", image.clone())).await;
    assert!(matches!(outcome, shared::services::sender::Outcome::Retry { min_backoff_s: 0, .. }), "{outcome:?}");
    assert_eq!(rig.wx.calls("/cgi-bin/media/upload"), 1, "no upload while the part is claimed");
    let outcome = send(&sender, outbound("wecom_app", "out-3", image)).await;
    assert!(sent(&outcome), "{outcome:?}");
    assert_eq!(rig.wx.calls("/cgi-bin/media/upload"), 2, "uploaded once more");
    let sends = rig.wx.deliveries_of(fakes::Api::WecomMessage);
    assert_eq!(sends.len(), 3, "each message delivered once");
    let fresh = sends[2].body["image"]["media_id"].as_str().unwrap();
    assert_ne!(fresh, id);
    assert_eq!(rig.wx.media(fresh).unwrap().1, photo);

    // A redelivery of a sent message whose file is gone from the store is acknowledged, not
    // dead-lettered.
    rig.stack.media.client().delete_object().bucket(&rig.stack.names.bucket).key(&key).send().await.unwrap();
    let outcome = send(&sender, outbound("wecom_app", "out-3", json!({"type": "image", "media": {"key": key}}))).await;
    assert!(matches!(outcome, shared::services::sender::Outcome::Sent { already_sent: 1, .. }), "{outcome:?}");
    assert_eq!(rig.wx.deliveries_of(fakes::Api::WecomMessage).len(), 3, "nothing sent twice");
}

#[tokio::test]
async fn files_go_by_base64_with_their_chinese_name_and_over_a_cap_or_in_the_wrong_format_to_the_dlq() {
    use base64::Engine as _;
    let rig = Rig::new().await;
    let sender = sender(&rig);
    let report = b"%PDF-1.7\n".iter().copied().chain(png(30_000, 61)).collect::<Vec<u8>>();
    let file = json!({"type": "file", "media": {"base64": base64::engine::general_purpose::STANDARD.encode(&report), "file_name": "季度报告.pdf"}});
    // The app group chat the file goes to ("WangFang" is its chat id here).
    rig.wx.add_appchat("WangFang", &["WangFang", "ZhangWei"]);
    let outcome = send(&sender, outbound("wecom_appchat", "f-1", file)).await;
    assert!(sent(&outcome), "{outcome:?}");
    let id = rig.wx.deliveries_of(fakes::Api::WecomAppchat)[0].body["file"]["media_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.wx.media(&id).unwrap(), ("季度报告.pdf".to_owned(), report.clone()), "raw UTF-8 name, same bytes");
    // The same bytes under another name are another upload: WeCom shows the uploaded name.
    let renamed = json!({"type": "file", "media": {"base64": base64::engine::general_purpose::STANDARD.encode(&report), "file_name": "副本.pdf"}});
    assert!(sent(&send(&sender, outbound("wecom_appchat", "f-1c", renamed)).await));
    let id = rig.wx.deliveries_of(fakes::Api::WecomAppchat)[1].body["file"]["media_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.wx.media(&id).unwrap().0, "副本.pdf");

    let uploads = rig.wx.calls("/cgi-bin/media/upload");
    let big = store(&rig, &png(20 * 1024 * 1024 + 1, 62), "image/png").await;
    let outcome = send(&sender, outbound("wecom_app", "f-2", json!({"type": "file", "media": {"key": big}}))).await;
    let shared::services::sender::Outcome::Permanent { reason, .. } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("20.0 MB"), "{reason}");
    let not_amr = store(&rig, &png(5000, 63), "image/png").await;
    let outcome =
        send(&sender, outbound("wecom_app", "f-3", json!({"type": "voice", "media": {"key": not_amr}}))).await;
    let shared::services::sender::Outcome::Permanent { reason, .. } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("AMR"), "{reason}");
    let missing = format!("media/{}", "0".repeat(64));
    let outcome =
        send(&sender, outbound("wecom_app", "f-4", json!({"type": "image", "media": {"key": missing}}))).await;
    assert!(matches!(outcome, shared::services::sender::Outcome::Permanent { .. }), "{outcome:?}");
    assert_eq!(rig.wx.calls("/cgi-bin/media/upload"), uploads, "nothing refused was uploaded");
}

#[tokio::test]
async fn a_group_robot_sends_a_picture_inline_with_its_md5_and_a_file_by_its_own_upload() {
    use base64::Engine as _;
    let rig = Rig::new().await;
    let sender = sender(&rig);
    let photo = png(50_000, 70);
    let key = store(&rig, &photo, "image/png").await;
    let outcome =
        send(&sender, outbound("wecom_webhook", "r-1", json!({"type": "image", "media": {"key": key}}))).await;
    assert!(sent(&outcome), "{outcome:?}");
    let body = &rig.wx.deliveries_of(fakes::Api::WecomWebhook)[0].body;
    let inline = base64::engine::general_purpose::STANDARD.decode(body["image"]["base64"].as_str().unwrap()).unwrap();
    assert_eq!(inline, photo);
    let md5 = shared::protocol::hex::hex(&<md5::Md5 as md5::Digest>::digest(&photo));
    assert_eq!(body["image"]["md5"], json!(md5));
    assert_eq!(rig.wx.calls("/cgi-bin/webhook/upload_media"), 0, "a robot image needs no upload");

    let doc = b"PK\x03\x04".iter().copied().chain(png(8000, 71)).collect::<Vec<u8>>();
    let key = store(&rig, &doc, "application/zip").await;
    let outcome = send(
        &sender,
        outbound("wecom_webhook", "r-2", json!({"type": "file", "media": {"key": key, "file_name": "logs.zip"}})),
    )
    .await;
    assert!(sent(&outcome), "{outcome:?}");
    let id = rig.wx.deliveries_of(fakes::Api::WecomWebhook)[1].body["file"]["media_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.wx.media(&id).unwrap(), ("logs.zip".to_owned(), doc));
    let big = store(&rig, &png(2 * 1024 * 1024 + 1, 72), "image/png").await;
    let outcome =
        send(&sender, outbound("wecom_webhook", "r-3", json!({"type": "image", "media": {"key": big}}))).await;
    assert!(
        matches!(outcome, shared::services::sender::Outcome::Permanent { .. }),
        "over the robot's 2 MB: {outcome:?}"
    );
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn a_file_by_url_is_fetched_with_the_cap_and_redirects_and_failures_are_refused() {
    use axum::http::StatusCode;
    use axum::routing::get;
    use shared::core::envelope::{MediaType, OutMedia};
    let photo = png(5000, 80);
    let served = photo.clone();
    let router = axum::Router::new()
        .route("/ok.png", get(move || async move { served.clone() }))
        .route("/moved", get(|| async { (StatusCode::FOUND, [("location", "https://example.com/x.png")], "") }))
        .route("/gone", get(|| async { StatusCode::NOT_FOUND }))
        .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/big", get(|| async { vec![0u8; 6000] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().unwrap();
    let files = |allow_loopback| shared::services::files::OutFiles {
        store: Arc::new(shared::adapters::folder::FolderMediaStore::new(dir.path(), "http://127.0.0.1:1").unwrap()),
        ids: Arc::new(shared::adapters::memory::MemoryMediaIds::default()),
        http: Http::new(&HttpSettings::default()).unwrap(),
        allow_loopback,
    };
    let by_url = |path: &str| OutMedia { url: Some(format!("{base}{path}")), ..OutMedia::default() };
    let dev = files(true);
    let file = dev.load(&by_url("/ok.png"), MediaType::Image, 5000).await.unwrap();
    assert_eq!((file.bytes, file.mime.as_str()), (photo, "image/png"));
    for (path, permanent, why) in [
        ("/moved", true, "redirects"),
        ("/gone", true, "HTTP 404"),
        ("/big", true, "over this channel's"),
        ("/busy", false, "HTTP 503"),
    ] {
        let failure = dev.load(&by_url(path), MediaType::Image, 5000).await.unwrap_err();
        let is_permanent = failure.verdict == shared::core::retry::Verdict::Permanent;
        assert_eq!(is_permanent, permanent, "{path}: {failure:?}");
        assert!(failure.message.contains(why), "{path}: {}", failure.message);
    }
    // On Lambda a loopback URL (the runtime API) is never fetched.
    let failure = files(false).load(&by_url("/ok.png"), MediaType::Image, 5000).await.unwrap_err();
    assert!(failure.message.contains("public host"), "{}", failure.message);
}

/// An Official Account follower's OpenID in these tests.
const FOLLOWER: &str = "oFollower000000000000000001";

fn oa_outbound(key: &str, content: Value) -> Value {
    json!({"v": 1, "channel": "oa", "account": "news", "to": FOLLOWER, "content": content, "idempotency_key": key})
}

fn permanent_reason(outcome: shared::services::sender::Outcome) -> String {
    match outcome {
        shared::services::sender::Outcome::Permanent { reason, .. } => reason,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn official_account_media_goes_up_as_temporary_media_and_out_by_customer_service() {
    let rig = Rig::new().await;
    rig.wx.add_oa_user(FOLLOWER);
    let sender = sender(&rig);
    let uploads = || rig.wx.calls("/cgi-bin/media/upload");

    // An image by key: uploaded with the account's token, then sent by its id; the same
    // picture again reuses the id.
    let photo = png(150_000, 80);
    let key = store(&rig, &photo, "image/png").await;
    let image = json!({"type": "image", "media": {"key": key}});
    assert!(sent(&send(&sender, oa_outbound("oa-1", image.clone())).await));
    let sends = rig.wx.deliveries_of(fakes::Api::OaCustom);
    let id = sends[0].body["image"]["media_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.wx.media(&id).expect("the account's upload").1, photo, "the same bytes");
    assert!(sent(&send(&sender, oa_outbound("oa-2", image.clone())).await));
    assert_eq!(uploads(), 1, "the cached id is reused");
    assert_eq!(rig.wx.deliveries_of(fakes::Api::OaCustom)[1].body["image"]["media_id"], json!(id));
    // The account forgets the id early: 40007, the id is dropped, the message comes back at once
    // and goes with a fresh upload.
    rig.wx.expire_media(&id);
    let outcome = send(&sender, oa_outbound("oa-2b", image.clone())).await;
    assert!(matches!(outcome, shared::services::sender::Outcome::Retry { min_backoff_s: 0, .. }), "{outcome:?}");
    assert!(sent(&send(&sender, oa_outbound("oa-2b", image)).await));
    let fresh = rig.wx.deliveries_of(fakes::Api::OaCustom)[2].body["image"]["media_id"].as_str().unwrap().to_owned();
    assert_ne!(fresh, id);
    assert_eq!(rig.wx.media(&fresh).unwrap().1, photo);
    assert_eq!(uploads(), 2);

    // MP3 voice by base64 and an MP4 video with its title (no thumb).
    use base64::Engine as _;
    let mp3: Vec<u8> = b"ID3\x04\0\0\0\0\0\0".iter().copied().chain(png(8_000, 81)).collect();
    let voice = json!({"type": "voice", "media": {"base64": base64::engine::general_purpose::STANDARD.encode(&mp3)}});
    assert!(sent(&send(&sender, oa_outbound("oa-3", voice)).await));
    let mp4: Vec<u8> = b"\0\0\0\x18ftypmp42".iter().copied().chain(png(40_000, 82)).collect();
    let video_key = store(&rig, &mp4, "video/mp4").await;
    let video = json!({"type": "video", "media": {"key": video_key}, "title": "演示"});
    assert!(sent(&send(&sender, oa_outbound("oa-4", video)).await));
    let sends = rig.wx.deliveries_of(fakes::Api::OaCustom);
    assert_eq!(rig.wx.media(sends[3].body["voice"]["media_id"].as_str().unwrap()).unwrap().1, mp3);
    assert_eq!(sends[4].body["video"]["title"], "演示");
    assert_eq!(rig.wx.media(sends[4].body["video"]["media_id"].as_str().unwrap()).unwrap().1, mp4);
    assert_eq!(uploads(), 4);

    // Refused before any upload: files, an image over 2 MB, a WebP image, voice that is neither
    // AMR nor MP3.
    let reason =
        permanent_reason(send(&sender, oa_outbound("oa-5", json!({"type": "file", "media": {"key": key}}))).await);
    assert!(reason.contains("send no files"), "{reason}");
    let big = store(&rig, &png(2 * 1024 * 1024 + 1, 83), "image/png").await;
    let reason =
        permanent_reason(send(&sender, oa_outbound("oa-6", json!({"type": "image", "media": {"key": big}}))).await);
    assert!(reason.contains("2.0 MB"), "{reason}");
    let webp: Vec<u8> = b"RIFF\0\0\0\0WEBPVP8 ".iter().copied().chain(png(1_000, 84)).collect();
    let webp = store(&rig, &webp, "image/webp").await;
    let reason =
        permanent_reason(send(&sender, oa_outbound("oa-7", json!({"type": "image", "media": {"key": webp}}))).await);
    assert!(reason.contains("JPG, PNG or GIF"), "{reason}");
    let reason =
        permanent_reason(send(&sender, oa_outbound("oa-8", json!({"type": "voice", "media": {"key": key}}))).await);
    assert!(reason.contains("AMR or MP3"), "{reason}");
    assert_eq!(uploads(), 4, "nothing refused was uploaded");
    assert_eq!(rig.wx.deliveries_of(fakes::Api::OaCustom).len(), 5);
}

/// The media step dies after it stored the file and passed the message on, before SQS learned
/// it was done: the message comes back and is fetched and passed on again. Within five minutes
/// the inbound queue drops the second copy; later (the media queue's visibility timeout is
/// 330 s) the dispatcher gets both, and the echo still reaches the user once, its picture
/// uploaded once.
#[tokio::test]
async fn a_media_step_that_dies_after_passing_the_message_on_leads_to_one_answer() {
    use shared::adapters::aws::DynamoMediaIds;
    use shared::adapters::memory::MemoryReplySlots;
    use shared::services::bots::EchoBot;
    use shared::services::dispatcher::Dispatcher;
    use shared::services::files::OutFiles;
    let rig = Rig::new().await;
    let photo = png(20_000, 90);
    let media_id = rig.wx.add_wecom_media(WECOM_CORP_ID, photo.clone(), "p.png", "image/png");
    use shared::core::envelope::{Channel, Kind, MediaType};
    let id = "wecom:hr:7450000000000000090".to_owned();
    let mut inbound = Inbound::direct(Channel::Wecom, "hr", id, "WangFang", now(), now(), json!({}));
    inbound.kind = Kind::Image;
    inbound.media = Some(Media { media_id: Some(media_id), media_type: Some(MediaType::Image), ..Media::default() });
    rig.publish(&inbound).await;
    for run in 1..=2 {
        let records = receive(&rig.stack, &rig.stack.urls.media, 2).await;
        assert_eq!(records.len(), 1, "run {run}: the media message");
        assert!(rig.service.handle_batch(&records).await.is_empty(), "run {run}: handled");
        if run == 1 {
            // Killed before the batch answer: the message is not deleted and comes back once
            // its visibility ends (made to end now).
            rig.stack
                .sqs
                .change_message_visibility()
                .queue_url(&rig.stack.urls.media)
                .receipt_handle(&records[0].receipt_handle)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        }
    }
    let resolved = rig.resolved().await;
    assert_eq!(resolved.len(), 1, "passed on twice within five minutes: the inbound queue keeps one");
    // Past the five minutes the second run's copy is taken too: the dispatcher gets both.
    let resolved = [resolved[0].clone(), resolved[0].clone()];

    let table = Table::from_sdk(&rig.stack.sdk, &rig.stack.names.table);
    let files = OutFiles {
        store: Arc::new(rig.stack.media.clone()),
        ids: Arc::new(DynamoMediaIds::new(&table)),
        http: Http::new(&HttpSettings::default()).unwrap(),
        allow_loopback: false,
    };
    let dispatcher = Dispatcher {
        bot: Arc::new(EchoBot),
        slots: Arc::new(MemoryReplySlots::default()),
        outbound: Arc::new(SqsPublisher::from_sdk(&rig.stack.sdk, &rig.stack.urls.outbound)),
        typing: None,
        requeue: None,
        dead_letter: None,
        max_receives: None,
        streams: None,
        calls: None,
        files: Some(Arc::new(files)),
    };
    for copy in &resolved {
        dispatcher.dispatch(&copy.to_json()).await.unwrap();
    }
    let sender = sender(&rig);
    let queued = rig.stack.drain(&rig.stack.urls.outbound).await;
    assert_eq!(queued.len(), 2, "the echo was queued by both runs, under one key");
    for message in &queued {
        let record = Record {
            message_id: message.message_id().unwrap().into(),
            receipt_handle: "r".into(),
            body: message.body().unwrap().into(),
            receive_count: 1,
            group: None,
        };
        assert!(sent(&sender.send_record(&record).await.1));
    }
    let sends = rig.wx.deliveries_of(fakes::Api::WecomMessage);
    assert_eq!(sends.len(), 1, "the user gets the picture once");
    assert_eq!(rig.wx.media(sends[0].body["image"]["media_id"].as_str().unwrap()).unwrap().1, photo);
    assert_eq!(rig.wx.calls("/cgi-bin/media/upload"), 1);
}
