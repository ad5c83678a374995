//! iLink files out: getuploadurl, the CDN upload, and media items in sendmessage.

use std::sync::atomic::{AtomicU32, Ordering};

use aes::cipher::{BlockEncrypt, KeyInit};
use base64::Engine as _;
use fakes::{CdnUploadFault, FakeWechat, IlinkUploadAnswer};
use serde_json::{json, Value};

use crate::support::client;

const BOT: &str = "a1b2c3d4e5f6@im.bot:0601b2c3d4e5f6a7b8c9";
const USER: &str = "o9cq80_abcdef@im.wechat";
const CTX: &str = "AARzJWAFAAABAAAAAAAp2r1Lh0tU5qEJfPRa9cLdZcd+QA==";
const KEY: &str = "00112233445566778899aabbccddeeff";
const FILEKEY: &str = "8f0e1d2c3b4a59687766554433221100";

async fn setup() -> FakeWechat {
    let wx = FakeWechat::start().await;
    wx.add_ilink_bot(BOT);
    wx.add_ilink_user(BOT, USER, CTX);
    wx.add_ilink_user(BOT, "other@im.wechat", "ctx-other");
    wx
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_bytes(hex: &str) -> [u8; 16] {
    std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
}

fn seal(plain: &[u8], key: &str) -> Vec<u8> {
    let pad = 16 - plain.len() % 16;
    let mut data = plain.to_vec();
    data.resize(plain.len() + pad, pad as u8);
    let aes = aes::Aes128::new(&key_bytes(key).into());
    for block in data.chunks_exact_mut(16) {
        aes.encrypt_block(aes::Block::from_mut_slice(block));
    }
    data
}

fn md5(bytes: &[u8]) -> String {
    hex(&<md5::Md5 as md5::Digest>::digest(bytes))
}

/// A POST to a bot endpoint with every header the service wants.
async fn bot_post(wx: &FakeWechat, endpoint: &str, mut body: Value) -> Value {
    static NEXT: AtomicU32 = AtomicU32::new(1_070_591_193);
    let uin = base64::engine::general_purpose::STANDARD.encode(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
    body["base_info"] = json!({"channel_version": "0.1.0"});
    let response = client()
        .post(format!("{}/ilink/bot/{endpoint}", wx.base_url))
        .header("Content-Type", "application/json")
        .header("AuthorizationType", "ilink_bot_token")
        .header("Authorization", format!("Bearer {BOT}"))
        .header("X-WECHAT-UIN", uin)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    if text.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

fn reservation(plain: &[u8], media_type: u8, to: &str) -> Value {
    json!({"filekey": FILEKEY, "media_type": media_type, "to_user_id": to, "rawsize": plain.len(),
           "rawfilemd5": md5(plain), "filesize": plain.len() / 16 * 16 + 16, "no_need_thumb": true, "aeskey": KEY})
}

/// POSTs `body` to the CDN upload URL; returns the status, `x-encrypted-param` and
/// `x-error-message`.
async fn cdn_post(url: &str, body: Vec<u8>) -> (u16, Option<String>, Option<String>) {
    let response =
        client().post(url).header("Content-Type", "application/octet-stream").body(body).send().await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), header("x-encrypted-param"), header("x-error-message"))
}

fn file_message(to: &str, ctx: &str, param: &str, aes_key: &str, len: Value) -> Value {
    json!({"msg": {"from_user_id": "", "to_user_id": to, "client_id": "wxbridge-f1", "message_type": 2,
        "message_state": 2, "context_token": ctx, "item_list": [{"type": 4, "file_item": {
            "media": {"encrypt_query_param": param, "aes_key": aes_key, "encrypt_type": 1},
            "file_name": "报告.pdf", "len": len}}]}})
}

fn hex_key_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(KEY)
}

#[tokio::test]
async fn a_file_goes_up_decrypted_is_served_by_the_cdn_and_sent_to_its_recipient() {
    let wx = setup().await;
    let plain = b"%PDF-1.7 quarterly report".to_vec();
    let answer = bot_post(&wx, "getuploadurl", reservation(&plain, 3, USER)).await;
    let url = answer["upload_full_url"].as_str().expect("upload_full_url by default").to_owned();
    assert!(url.starts_with(&format!("{}/c2c/upload?encrypted_query_param=", wx.base_url)), "{url}");
    let (status, param, _) = cdn_post(&url, seal(&plain, KEY)).await;
    assert_eq!(status, 200);
    let param = param.expect("x-encrypted-param");
    let uploads = wx.ilink_uploads();
    assert_eq!(uploads[0].bytes.as_deref(), Some(&plain[..]), "decrypted with the announced key");
    assert_eq!((uploads[0].media_type, uploads[0].to_user_id.as_str()), (3, USER));
    let download = client()
        .get(format!("{}/c2c/download", wx.base_url))
        .query(&[("encrypted_query_param", &param)])
        .send()
        .await
        .unwrap();
    assert_eq!(download.bytes().await.unwrap().to_vec(), seal(&plain, KEY), "the CDN serves the ciphertext");

    let sent = bot_post(&wx, "sendmessage", file_message(USER, CTX, &param, &hex_key_b64(), json!("25"))).await;
    assert!(sent.get("ret").is_none_or(|r| r == 0), "{sent}");
    let sends = wx.ilink_media_sends();
    assert_eq!(sends.len(), 1);
    assert_eq!((sends[0].item_type, sends[0].file_name.as_deref()), (4, Some("报告.pdf")));
    assert_eq!(sends[0].bytes, plain);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
}

#[tokio::test]
async fn a_reservation_is_checked_field_by_field() {
    let wx = setup().await;
    let plain = vec![7u8; 40];
    let invalid = json!({"ret": -2, "errmsg": "invalid arguments"});
    let mut cases = Vec::new();
    let mut case = |edit: &dyn Fn(&mut Value)| {
        let mut body = reservation(&plain, 1, USER);
        edit(&mut body);
        cases.push(body);
    };
    case(&|b| b["filekey"] = json!("abc"));
    case(&|b| b["aeskey"] = json!(base64::engine::general_purpose::STANDARD.encode(KEY)));
    case(&|b| b["rawfilemd5"] = json!("not-md5"));
    case(&|b| b["filesize"] = json!(40));
    case(&|b| b["filesize"] = json!(64));
    case(&|b| b["media_type"] = json!(0));
    case(&|b| b["media_type"] = json!(5));
    case(&|b| {
        b.as_object_mut().unwrap().remove("no_need_thumb");
    });
    case(&|b| b["rawsize"] = json!("40"));
    let n = cases.len();
    for body in cases {
        assert_eq!(bot_post(&wx, "getuploadurl", body.clone()).await, invalid, "{body}");
    }
    let stranger = bot_post(&wx, "getuploadurl", reservation(&plain, 1, "stranger@im.wechat")).await;
    assert_eq!(stranger, json!({"ret": -2, "errmsg": "prepare failed"}));
    assert_eq!(wx.problems().len(), n + 1, "{:#?}", wx.problems());
    assert!(wx.ilink_uploads().is_empty());

    // VOICE uploads are taken, and reported: iLink shows no outbound voice.
    let voice = bot_post(&wx, "getuploadurl", reservation(&plain, 4, USER)).await;
    assert!(voice["upload_full_url"].is_string(), "{voice}");
    assert!(wx.problems().last().unwrap().contains("VOICE"), "{:#?}", wx.problems());
}

#[tokio::test]
async fn the_answer_can_be_a_param_only_another_host_or_a_refusal() {
    let wx = setup().await;
    let plain = b"hello ilink".to_vec();
    wx.set_ilink_upload_answer(IlinkUploadAnswer::ParamOnly);
    let answer = bot_post(&wx, "getuploadurl", reservation(&plain, 1, USER)).await;
    assert!(answer.get("upload_full_url").is_none(), "{answer}");
    let param = answer["upload_param"].as_str().unwrap();
    let url = reqwest::Url::parse_with_params(
        &format!("{}/c2c/upload", wx.base_url),
        [("encrypted_query_param", param), ("filekey", FILEKEY)],
    )
    .unwrap();
    assert_eq!(cdn_post(url.as_str(), seal(&plain, KEY)).await.0, 200, "{:#?}", wx.problems());

    wx.set_ilink_upload_answer(IlinkUploadAnswer::FullUrlOn("https://elsewhere.example".into()));
    let answer = bot_post(&wx, "getuploadurl", reservation(&plain, 1, USER)).await;
    assert!(answer["upload_full_url"].as_str().unwrap().starts_with("https://elsewhere.example/c2c/upload?"));

    wx.set_ilink_upload_answer(IlinkUploadAnswer::Ret(-2));
    assert_eq!(bot_post(&wx, "getuploadurl", reservation(&plain, 1, USER)).await, json!({"ret": -2}));
    assert_eq!(wx.ilink_uploads().len(), 2, "a refusal reserves nothing");
}

#[tokio::test]
async fn the_cdn_takes_only_the_reserved_ciphertext_and_its_faults_leave_the_reservation_pending() {
    let wx = setup().await;
    let plain = vec![42u8; 1000];
    let url = bot_post(&wx, "getuploadurl", reservation(&plain, 3, USER)).await["upload_full_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = client().get(&url).send().await.unwrap();
    assert_eq!(get.status(), 405, "POST only");
    let other_key = "ffeeddccbbaa99887766554433221100";
    let bad_param = url.replace("encrypted_query_param=", "encrypted_query_param=x");
    for (body, target, why) in [
        (seal(&plain, other_key), url.as_str(), "decrypt"),
        (seal(&plain[1..], KEY), url.as_str(), "filesize"),
        (seal(&plain, KEY), bad_param.as_str(), "encrypted_query_param"),
    ] {
        let (status, param, message) = cdn_post(target, body).await;
        assert_eq!((status, param), (400, None), "{why}");
        assert!(message.is_some(), "{why}: x-error-message");
    }
    assert!(wx.problems().iter().any(|p| p.contains("does not decrypt")), "{:#?}", wx.problems());

    wx.fail_ilink_cdn_uploads(1, CdnUploadFault::ServerError);
    wx.fail_ilink_cdn_uploads(1, CdnUploadFault::NoParam);
    wx.fail_ilink_cdn_uploads(1, CdnUploadFault::Refused(403, "quota".into()));
    assert_eq!(cdn_post(&url, seal(&plain, KEY)).await, (500, None, None));
    assert_eq!(cdn_post(&url, seal(&plain, KEY)).await, (200, None, None));
    assert_eq!(cdn_post(&url, seal(&plain, KEY)).await, (403, None, Some("quota".into())));
    let (status, param, _) = cdn_post(&url, seal(&plain, KEY)).await;
    assert_eq!((status, param.is_some()), (200, true), "the reservation was still pending");
    assert_eq!(cdn_post(&url, seal(&plain, KEY)).await.0, 400, "one upload per reservation");
}

#[tokio::test]
async fn a_media_item_must_name_an_upload_for_its_recipient_with_its_key() {
    let wx = setup().await;
    let plain = b"\x89PNG\r\n\x1a\n a picture".to_vec();
    let url = bot_post(&wx, "getuploadurl", reservation(&plain, 3, USER)).await["upload_full_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let param = cdn_post(&url, seal(&plain, KEY)).await.1.unwrap();
    let len = json!(plain.len().to_string());
    let invalid = json!({"ret": -2, "errmsg": "invalid arguments"});
    for (body, why) in [
        (file_message("other@im.wechat", "ctx-other", &param, &hex_key_b64(), len.clone()), "another recipient"),
        (file_message(USER, CTX, "never-uploaded", &hex_key_b64(), len.clone()), "an unknown upload"),
        (
            file_message(
                USER,
                CTX,
                &param,
                &base64::engine::general_purpose::STANDARD.encode("0".repeat(32)),
                len.clone(),
            ),
            "another key",
        ),
        (file_message(USER, CTX, &param, KEY, len.clone()), "bare hex, not base64"),
        (file_message(USER, CTX, &param, &hex_key_b64(), json!(plain.len())), "len as a number"),
    ] {
        assert_eq!(bot_post(&wx, "sendmessage", body).await, invalid, "{why}");
    }
    assert!(wx.ilink_media_sends().is_empty());
    // The 16 raw bytes in base64 are the key too.
    let raw = base64::engine::general_purpose::STANDARD.encode(key_bytes(KEY));
    let sent = bot_post(&wx, "sendmessage", file_message(USER, CTX, &param, &raw, len)).await;
    assert!(sent.get("ret").is_none_or(|r| r == 0), "{sent}");
    assert_eq!(wx.ilink_media_sends().len(), 1);

    // An image item is the same upload with its ciphertext size; a voice item is taken but noted.
    let mut image = file_message(USER, CTX, &param, &hex_key_b64(), json!(null));
    image["msg"]["item_list"] = json!([{"type": 2, "image_item": {
        "media": {"encrypt_query_param": param, "aes_key": hex_key_b64(), "encrypt_type": 1},
        "mid_size": plain.len() / 16 * 16 + 16}}]);
    let before = wx.problems().len();
    assert!(bot_post(&wx, "sendmessage", image.clone()).await.get("ret").is_none_or(|r| r == 0));
    assert!(wx.problems()[before..].iter().any(|p| p.contains("media_type 3, not 1")), "{:#?}", wx.problems());
    image["msg"]["item_list"][0]["image_item"]["mid_size"] = json!(plain.len());
    assert_eq!(bot_post(&wx, "sendmessage", image).await, invalid, "mid_size is the ciphertext size");
}
