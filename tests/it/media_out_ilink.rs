//! Files out through an iLink bot: the sender Lambda's build (DynamoDB, the media bucket) against
//! the fake iLink and its CDN. Each file is reserved for its recipient, uploaded encrypted, and
//! sent as one item; the fake decrypts what it got and checks each item names that upload.

use base64::Engine as _;
use fakes::{CdnUploadFault, FakeWechat, IlinkUpload, IlinkUploadAnswer};
use serde_json::{json, Value};
use shared::adapters::aws::{DynamoContextTokens, DynamoMediaIds, Table};
use shared::channels::Config;
use shared::core::config::Env;
use shared::core::ports::{ContextTokens, MediaIds, MediaStore};
use shared::services::sender::{Outcome, Sender};

use crate::media::{png, send, sent, sha256};
use crate::support::Stack;

const TOKEN: &str = "a1b2c3@im.bot:0601b2c3d4e5f6a7b8c9";
const BOT: &str = "a1b2c3@im.bot";
const ALICE: &str = "o9cq80_alice@im.wechat";
const BOB: &str = "o9cq80_bob@im.wechat";

/// The fake iLink with one bot both users wrote to, and the sender Lambda's build.
struct Rig {
    stack: Stack,
    wx: FakeWechat,
    sender: Sender,
}

impl Rig {
    async fn new() -> Self {
        let stack = Stack::new().await;
        let wx = FakeWechat::start().await;
        wx.add_ilink_bot(TOKEN);
        let config = Config::parse(&format!(
            r#"{{"ilink": [{{"account": "{BOT}", "bot_token": "{TOKEN}", "base_url": "{}"}}]}}"#,
            wx.base_url
        ))
        .unwrap();
        let contexts = DynamoContextTokens::new(&Table::from_sdk(&stack.sdk, &stack.names.table));
        let now_ms = shared::core::ports::unix_millis(std::time::SystemTime::now());
        for (user, context) in [(ALICE, "ctx-alice"), (BOB, "ctx-bob")] {
            wx.add_ilink_user(TOKEN, user, context);
            contexts.store(BOT, user, context, now_ms).await.unwrap();
        }
        let env = Env::from_vars([
            ("WXBRIDGE_TABLE", stack.names.table.clone()),
            ("WXBRIDGE_OUTBOUND_QUEUE_URL", stack.urls.outbound.clone()),
            ("WXBRIDGE_DLQ_URL", stack.urls.outbound.clone()),
            ("WXBRIDGE_MEDIA_BUCKET", stack.names.bucket.clone()),
            ("WXBRIDGE_ILINK_CDN_BASE", wx.base_url.clone()),
            ("AWS_ENDPOINT_URL", crate::support::endpoint()),
        ]);
        let sender = sender::build(config, &env, &stack.sdk).expect("the sender builds");
        Self { stack, wx, sender }
    }

    /// Puts `bytes` in the media bucket; returns its key.
    async fn store(&self, bytes: &[u8], mime: &str) -> String {
        let key = format!("media/{}", sha256(bytes));
        self.stack.media.put_bytes(&key, bytes.to_vec(), mime).await.unwrap();
        key
    }

    /// Sends `content` to `to` through the bot under idempotency key `key`.
    async fn send(&self, key: &str, to: &str, content: Value) -> Outcome {
        let outbound =
            json!({"v": 1, "channel": "ilink", "account": BOT, "to": to, "content": content, "idempotency_key": key});
        send(&self.sender, outbound).await
    }

    fn uploads(&self) -> Vec<IlinkUpload> {
        self.wx.ilink_uploads()
    }

    fn calls(&self) -> (usize, usize) {
        (self.wx.calls("/ilink/bot/getuploadurl"), self.wx.calls("/c2c/upload"))
    }
}

fn base64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Asserts that no form of any upload's AES key shows in `text`.
#[track_caller]
fn assert_no_key(text: &str, uploads: &[IlinkUpload]) {
    assert!(!uploads.is_empty(), "a key to look for");
    for upload in uploads {
        let raw: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&upload.aeskey[2 * i..2 * i + 2], 16).unwrap()).collect();
        for form in [upload.aeskey.clone(), upload.aeskey.to_uppercase(), base64(&upload.aeskey), base64(&raw)] {
            assert!(!text.contains(&form), "the key ({form}) shows in {text:?}");
        }
    }
}

/// An MP4's first bytes, then filler.
fn mp4(len: usize) -> Vec<u8> {
    let mut bytes = b"\0\0\0\x18ftypmp42".to_vec();
    bytes.extend(png(len - bytes.len(), 90));
    bytes
}

#[tokio::test]
async fn an_image_by_key_goes_up_encrypted_for_its_recipient_and_out_as_one_image_item() {
    let rig = Rig::new().await;
    let photo = png(34_000, 1);
    let key = rig.store(&photo, "image/png").await;
    let outcome = rig.send("img-1", ALICE, json!({"type": "image", "media": {"key": key}})).await;
    assert!(sent(&outcome), "{outcome:?}");

    let uploads = rig.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!((uploads[0].media_type, uploads[0].to_user_id.as_str()), (1, ALICE));
    assert_eq!(uploads[0].bytes.as_deref(), Some(&photo[..]), "the CDN decrypted the same bytes");
    let sends = rig.wx.ilink_media_sends();
    assert_eq!(sends.len(), 1);
    assert_eq!((sends[0].item_type, sends[0].to_user_id.as_str()), (2, ALICE));
    assert_eq!(Some(&sends[0].encrypt_query_param), uploads[0].encrypt_query_param.as_ref(), "that upload");
    assert_eq!(sends[0].bytes, photo);
    let msg = &rig.wx.deliveries_of(fakes::Api::Ilink)[0].body["msg"];
    assert_eq!(msg["context_token"], "ctx-alice");
    assert_eq!(msg["item_list"].as_array().unwrap().len(), 1, "one item per message");
    assert!(msg["client_id"].as_str().unwrap().starts_with("wxbridge:"), "{msg}");
    assert_eq!(rig.calls(), (1, 1));
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn a_file_keeps_its_chinese_name_audio_goes_as_a_file_and_a_video_as_a_video() {
    let rig = Rig::new().await;
    let report = b"%PDF-1.7\n".iter().copied().chain(png(20_000, 2)).collect::<Vec<u8>>();
    let file = json!({"type": "file", "media": {"base64": base64(&report), "file_name": "季度报告.pdf"}});
    let outcome = rig.send("f-1", ALICE, file).await;
    assert!(sent(&outcome), "{outcome:?}");
    let amr = b"#!AMR\n".iter().copied().chain(png(3_000, 3)).collect::<Vec<u8>>();
    let voice = json!({"type": "voice", "media": {"base64": base64(&amr)}});
    let outcome = rig.send("v-1", ALICE, voice).await;
    assert!(sent(&outcome), "{outcome:?}");
    let movie = mp4(50_000);
    let key = rig.store(&movie, "video/mp4").await;
    let outcome = rig.send("m-1", ALICE, json!({"type": "video", "media": {"key": key}, "title": "t"})).await;
    assert!(sent(&outcome), "{outcome:?}");

    let types: Vec<u8> = rig.uploads().iter().map(|u| u.media_type).collect();
    assert_eq!(types, [3, 3, 2], "audio is uploaded as a FILE, never as VOICE (4)");
    let sends = rig.wx.ilink_media_sends();
    let shown: Vec<(u8, Option<&str>, &[u8])> =
        sends.iter().map(|s| (s.item_type, s.file_name.as_deref(), &s.bytes[..])).collect();
    let amr_name = format!("{}.amr", &sha256(&amr)[..12]);
    assert_eq!(
        shown,
        [(4, Some("季度报告.pdf"), &report[..]), (4, Some(amr_name.as_str()), &amr[..]), (5, None, &movie[..])]
    );
    assert!(rig.wx.problems().is_empty(), "no voice item, no mismatch: {:#?}", rig.wx.problems());

    // The same audio under another name: a file item shows its name, so it is another upload.
    let renamed = json!({"type": "voice", "media": {"base64": base64(&amr), "file_name": "语音.amr"}});
    assert!(sent(&rig.send("v-2", ALICE, renamed).await));
    assert_eq!(rig.uploads().len(), 4);
    assert_eq!(rig.wx.ilink_media_sends()[3].file_name.as_deref(), Some("语音.amr"));
}

#[tokio::test]
async fn an_answer_with_only_upload_param_is_built_into_the_cdn_url() {
    let rig = Rig::new().await;
    rig.wx.set_ilink_upload_answer(IlinkUploadAnswer::ParamOnly);
    let photo = png(5_000, 4);
    let outcome = rig.send("p-1", ALICE, json!({"type": "image", "media": {"base64": base64(&photo)}})).await;
    assert!(sent(&outcome), "{outcome:?}");
    assert_eq!(rig.uploads()[0].bytes.as_deref(), Some(&photo[..]));
    assert_eq!(rig.wx.ilink_media_sends().len(), 1);
    assert!(rig.wx.problems().is_empty(), "{:#?}", rig.wx.problems());
}

#[tokio::test]
async fn a_cdn_failing_twice_with_500_is_tried_again_and_the_file_is_delivered_once() {
    let rig = Rig::new().await;
    rig.wx.fail_ilink_cdn_uploads(2, CdnUploadFault::ServerError);
    let photo = png(8_000, 5);
    let outcome = rig.send("r-1", ALICE, json!({"type": "image", "media": {"base64": base64(&photo)}})).await;
    assert!(sent(&outcome), "{outcome:?}");
    assert_eq!(rig.calls(), (1, 3), "one reservation, three CDN attempts");
    assert_eq!(rig.wx.ilink_media_sends().len(), 1);
    assert_eq!(rig.wx.deliveries_of(fakes::Api::Ilink).len(), 1, "delivered once");
}

#[tokio::test]
async fn a_cdn_answering_three_times_without_x_encrypted_param_is_retried_later_and_nothing_is_sent() {
    let rig = Rig::new().await;
    rig.wx.fail_ilink_cdn_uploads(3, CdnUploadFault::NoParam);
    let photo = png(8_000, 6);
    let image = json!({"type": "image", "media": {"base64": base64(&photo)}});
    let outcome = rig.send("n-1", ALICE, image.clone()).await;
    let Outcome::Retry { reason, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("x-encrypted-param"), "{reason}");
    assert_no_key(reason, &rig.uploads());
    assert_eq!(rig.calls(), (1, 3), "three attempts, then the queue's retry");
    assert!(rig.wx.deliveries_of(fakes::Api::Ilink).is_empty(), "nothing sent");

    // The queue brings it back: a new reservation, and this time the CDN takes it.
    let outcome = rig.send("n-1", ALICE, image).await;
    assert!(sent(&outcome), "{outcome:?}");
    assert_eq!(rig.calls(), (2, 4));
    assert_eq!(rig.wx.ilink_media_sends().len(), 1);
}

#[tokio::test]
async fn an_upload_url_off_the_cdn_host_is_refused_for_good_without_calling_it() {
    let rig = Rig::new().await;
    let elsewhere = FakeWechat::start().await;
    rig.wx.set_ilink_upload_answer(IlinkUploadAnswer::FullUrlOn(elsewhere.base_url.clone()));
    let photo = png(4_000, 7);
    let outcome = rig.send("x-1", ALICE, json!({"type": "image", "media": {"base64": base64(&photo)}})).await;
    let Outcome::Permanent { reason, errmsg, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("not on the iLink CDN"), "{reason}");
    assert_no_key(&format!("{reason} {errmsg}"), &rig.uploads());
    assert_eq!(elsewhere.calls("/c2c/upload"), 0, "the foreign host is never called");
    assert_eq!(rig.calls(), (1, 0));
    assert!(rig.wx.deliveries().is_empty());
}

#[tokio::test]
async fn refusals_of_the_reservation_and_the_cdn_are_final_and_name_no_key() {
    let rig = Rig::new().await;
    let photo = png(4_000, 8);
    let image = json!({"type": "image", "media": {"base64": base64(&photo)}});

    rig.wx.fail_ilink_cdn_uploads(1, CdnUploadFault::Refused(403, "quota exceeded".into()));
    let outcome = rig.send("q-1", ALICE, image.clone()).await;
    let Outcome::Permanent { reason, errmsg, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("HTTP 403: quota exceeded"), "{reason}");
    assert_no_key(&format!("{reason} {errmsg}"), &rig.uploads());
    assert_eq!(rig.calls(), (1, 1), "a 4xx is not tried again");

    rig.wx.set_ilink_upload_answer(IlinkUploadAnswer::Ret(-2));
    let outcome = rig.send("q-2", ALICE, image).await;
    let Outcome::Permanent { reason, errcode, errmsg } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("getuploadurl ret -2"), "{reason}");
    assert_eq!(*errcode, Some(-2));
    assert_no_key(&format!("{reason} {errmsg}"), &rig.uploads());
    assert!(rig.wx.deliveries().is_empty());
    // The check itself sees a key in any of its forms.
    let uploads = rig.uploads();
    let key = uploads[0].aeskey.clone();
    for shown in [key.clone(), format!("aes_key {}", base64(&key))] {
        let caught = std::panic::catch_unwind(|| assert_no_key(&shown, &uploads));
        assert!(caught.is_err(), "{shown}");
    }
}

#[tokio::test]
async fn an_upload_is_reused_for_its_recipient_but_never_for_another() {
    let rig = Rig::new().await;
    let photo = png(12_000, 9);
    let key = rig.store(&photo, "image/png").await;
    let image = json!({"type": "image", "media": {"key": key}});
    assert!(sent(&rig.send("c-1", ALICE, image.clone()).await));
    assert!(sent(&rig.send("c-2", ALICE, image.clone()).await));
    assert_eq!(rig.calls(), (1, 1), "Alice's second picture reuses her upload");
    let outcome = rig.send("c-3", BOB, image).await;
    assert!(sent(&outcome), "{outcome:?}");
    assert_eq!(rig.calls(), (2, 2), "Bob gets his own upload");
    let sends = rig.wx.ilink_media_sends();
    assert_eq!(sends[0].encrypt_query_param, sends[1].encrypt_query_param);
    assert_ne!(sends[2].encrypt_query_param, sends[0].encrypt_query_param);
    assert_eq!((sends[2].to_user_id.as_str(), &sends[2].bytes), (BOB, &photo));
    assert_eq!(rig.uploads()[1].to_user_id, BOB);
    assert!(rig.wx.problems().is_empty(), "each item names its recipient's upload: {:#?}", rig.wx.problems());
}

#[tokio::test]
async fn a_file_over_twenty_megabytes_goes_to_the_dlq_and_a_cached_id_of_another_format_is_uploaded_anew() {
    let rig = Rig::new().await;
    let big = rig.store(&png(20 * 1024 * 1024 + 1, 10), "image/png").await;
    let outcome = rig.send("b-1", ALICE, json!({"type": "file", "media": {"key": big}})).await;
    let Outcome::Permanent { reason, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("20.0 MB"), "{reason}");

    // An id cached by another version (the scope as the sender builds it) is refused, unread.
    let photo = png(3_000, 11);
    let owner = format!("{BOT}:{}", shared::core::outbound::short_hash(ALICE));
    let scope = shared::core::outbound::media_id_scope(
        shared::core::envelope::OutChannel::Ilink,
        &owner,
        shared::core::envelope::MediaType::Image,
        &sha256(&photo),
        None,
    );
    let ids = DynamoMediaIds::new(&Table::from_sdk(&rig.stack.sdk, &rig.stack.names.table));
    let until = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
    ids.put(&scope, "3a1b2c-old-format-id", until).await.unwrap();
    let image = json!({"type": "image", "media": {"base64": base64(&photo), "file_name": "old.png"}});
    let outcome = rig.send("b-2", ALICE, image.clone()).await;
    // Forgotten, and the message comes back at once to upload again; nothing uploaded yet.
    let Outcome::Retry { reason, min_backoff_s: 0, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(!reason.contains("3a1b2c"), "{reason}");
    assert_eq!(rig.calls(), (0, 0), "nothing uploaded while the part was claimed");
    assert!(rig.wx.deliveries().is_empty());
    let outcome = rig.send("b-2", ALICE, image).await;
    assert!(sent(&outcome), "{outcome:?}");
    assert_eq!(rig.uploads().len(), 1, "uploaded anew");
    assert_eq!(rig.wx.ilink_media_sends().len(), 1);
}
