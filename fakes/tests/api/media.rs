//! Inbound media downloads: WeCom and OA media/get, the OA video URL, the AI bot's encrypted media
//! URLs and the iLink CDN.

use std::time::Duration;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecrypt, BlockDecryptMut, KeyInit, KeyIvInit};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine as _};
use fakes::{FakeWechat, Fault};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, get_json, post_json};

const CORP: &str = "ww0123456789abcdef";
const SECRET: &str = "app-secret";
const OA_APP: &str = "wx1234567890abcdef";
const OA_SECRET: &str = "oa-secret";
const GET: &str = "/cgi-bin/media/get";
/// Its last character carries non-zero unused bits, as most real keys' do.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFz";

async fn setup() -> FakeWechat {
    let wx = FakeWechat::start().await;
    wx.add_wecom_app(CORP, SECRET, 1000002);
    wx.add_wecom_app("wwother", "other-secret", 1000002);
    wx.add_oa(OA_APP, OA_SECRET);
    wx
}

async fn wecom_token(wx: &FakeWechat, corp: &str, secret: &str) -> String {
    let body = get_json(&format!("{}/cgi-bin/gettoken?corpid={corp}&corpsecret={secret}", wx.base_url)).await;
    body["access_token"].as_str().expect("access_token").to_owned()
}

async fn oa_token(wx: &FakeWechat) -> String {
    let body = post_json(
        &format!("{}/cgi-bin/stable_token", wx.base_url),
        &json!({"grant_type": "client_credential", "appid": OA_APP, "secret": OA_SECRET}),
    )
    .await;
    body["access_token"].as_str().expect("access_token").to_owned()
}

fn get_url(wx: &FakeWechat, token: &str, media_id: &str) -> String {
    format!("{}{GET}?access_token={token}&media_id={media_id}", wx.base_url)
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a [u8] {
    resp.headers().get(name).map_or(&[][..], |v| v.as_bytes())
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn wecom_get_sends_the_file_with_its_type_and_raw_utf8_name() {
    let wx = setup().await;
    let token = wecom_token(&wx, CORP, SECRET).await;
    let data = sample(1000);
    let id = wx.add_wecom_media(CORP, data.clone(), "报告 2026.pdf", "application/pdf");
    let resp = client().get(get_url(&wx, &token, &id)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), b"application/pdf");
    assert_eq!(header(&resp, "content-disposition"), "attachment; filename=\"报告 2026.pdf\"".as_bytes());
    assert_eq!(header(&resp, "content-length"), b"1000");
    assert_eq!(resp.bytes().await.unwrap(), data);
    // Another app of the same corp may fetch it too.
    wx.add_wecom_app(CORP, "second-app", 1000003);
    let second = wecom_token(&wx, CORP, "second-app").await;
    let resp = client().get(get_url(&wx, &second, &id)).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), data);
    assert_eq!(wx.calls(GET), 2);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
}

#[tokio::test]
async fn wecom_range_answers_206_with_the_slice() {
    let wx = setup().await;
    let token = wecom_token(&wx, CORP, SECRET).await;
    let data = sample(100);
    let id = wx.add_wecom_media(CORP, data.clone(), "a.bin", "application/octet-stream");
    let url = get_url(&wx, &token, &id);
    for (range, first, last) in [("bytes=10-19", 10, 19), ("bytes=90-", 90, 99), ("bytes=95-500", 95, 99)] {
        let resp = client().get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(header(&resp, "content-range"), format!("bytes {first}-{last}/100").as_bytes());
        assert_eq!(header(&resp, "content-type"), b"application/octet-stream");
        assert_eq!(resp.bytes().await.unwrap(), data[first..=last], "{range}");
    }
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
    for range in ["bytes=100-", "bytes=20-10", "items=0-1", "bytes=0-1,5-6"] {
        let resp = client().get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(header(&resp, "content-range"), b"bytes */100");
    }
    assert_eq!(wx.problems().len(), 4, "{:#?}", wx.problems());
}

#[tokio::test]
async fn wecom_file_over_the_limit_needs_range() {
    let wx = setup().await;
    let token = wecom_token(&wx, CORP, SECRET).await;
    wx.set_wecom_media_get_limit(1000);
    let data = sample(2500);
    let id = wx.add_wecom_media(CORP, data.clone(), "big.mp4", "video/mp4");
    let url = get_url(&wx, &token, &id);
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(assert_errcode(&body, 830002).starts_with("file too large, use Range"), "{body}");
    let mut fetched = Vec::new();
    while fetched.len() < data.len() {
        let range = format!("bytes={}-{}", fetched.len(), fetched.len() + 999);
        let resp = client().get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 206);
        fetched.extend_from_slice(&resp.bytes().await.unwrap());
    }
    assert_eq!(fetched, data);
    assert_eq!(wx.problems().len(), 1, "only the GET without Range: {:#?}", wx.problems());
}

#[tokio::test]
async fn a_large_file_downloads_in_20_mib_ranges() {
    let wx = setup().await;
    let token = wecom_token(&wx, CORP, SECRET).await;
    let data = sample(26 << 20);
    let id = wx.add_wecom_media(CORP, data.clone(), "big.zip", "application/zip");
    let url = get_url(&wx, &token, &id);
    let first = client().get(&url).header("range", "bytes=0-20971519").send().await.unwrap();
    assert_eq!(first.status(), 206);
    let second = client().get(&url).header("range", "bytes=20971520-").send().await.unwrap();
    assert_eq!(
        header(&second, "content-range"),
        format!("bytes 20971520-{}/{}", data.len() - 1, data.len()).as_bytes()
    );
    let mut fetched = first.bytes().await.unwrap().to_vec();
    fetched.extend_from_slice(&second.bytes().await.unwrap());
    assert!(fetched == data, "the two ranges are the file");
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
}

#[tokio::test]
async fn media_of_another_corp_or_unknown_is_40007_labelled_text_plain() {
    let wx = setup().await;
    let other = wecom_token(&wx, "wwother", "other-secret").await;
    let id = wx.add_wecom_media(CORP, sample(10), "a.jpg", "image/jpeg");
    for media_id in [id.as_str(), "3nosuchmedia"] {
        let resp = client().get(get_url(&wx, &other, media_id)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), b"text/plain");
        assert!(resp.headers().get("content-disposition").is_none());
        let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).expect("a JSON body");
        assert!(assert_errcode(&body, 40007).starts_with("invalid media_id"), "{body}");
    }
    let problems = wx.problems();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("belongs to WeCom corp ww0123456789abcdef"), "{problems:#?}");
}

#[tokio::test]
async fn token_and_method_are_checked_first() {
    let wx = setup().await;
    let token = wecom_token(&wx, CORP, SECRET).await;
    let id = wx.add_wecom_media(CORP, sample(10), "a.jpg", "image/jpeg");
    let body = get_json(&get_url(&wx, "made-up", &id)).await;
    assert_errcode(&body, 40014);
    let body: Value = client().post(get_url(&wx, &token, &id)).send().await.unwrap().json().await.unwrap();
    assert_errcode(&body, 43001);
    let body = get_json(&format!("{}{GET}?access_token={token}", wx.base_url)).await;
    assert_errcode(&body, 41006);
    wx.expire_tokens();
    let body = get_json(&get_url(&wx, &token, &id)).await;
    assert_errcode(&body, 42001);
    let oa = oa_token(&wx).await;
    wx.expire_tokens();
    let body = get_json(&get_url(&wx, &oa, &id)).await;
    assert!(assert_errcode(&body, 42001).contains(" rid: "), "OA callers get OA-style errors: {body}");
    assert_eq!(wx.problems().len(), 5, "{:#?}", wx.problems());
}

#[tokio::test]
async fn oa_get_sends_files_and_answers_videos_with_a_url() {
    let wx = setup().await;
    let token = oa_token(&wx).await;
    let image = sample(300);
    let image_id = wx.add_oa_media(OA_APP, image.clone(), "pic.jpg", "image/jpeg");
    let resp = client().get(get_url(&wx, &token, &image_id)).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(resp.status(), 200, "the OA ignores Range");
    assert_eq!(header(&resp, "content-type"), b"image/jpeg");
    assert_eq!(header(&resp, "content-disposition"), b"attachment; filename=\"pic.jpg\"");
    assert_eq!(resp.bytes().await.unwrap(), image);

    let video = sample(5000);
    let video_id = wx.add_oa_media(OA_APP, video.clone(), "clip.mp4", "video/mp4");
    let body = get_json(&get_url(&wx, &token, &video_id)).await;
    let video_url = body["video_url"].as_str().expect("video_url");
    assert!(video_url.starts_with(&format!("{}/oa/video?id=", wx.base_url)), "{body}");
    let resp = client().get(video_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), b"video/mp4");
    assert_eq!(resp.bytes().await.unwrap(), video);
    assert_eq!(wx.calls("/oa/video"), 1);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());

    // A WeCom token cannot fetch OA media, nor an OA token WeCom media.
    let wecom = wecom_token(&wx, CORP, SECRET).await;
    let wecom_id = wx.add_wecom_media(CORP, sample(10), "a.jpg", "image/jpeg");
    for url in [get_url(&wx, &wecom, &image_id), get_url(&wx, &token, &wecom_id)] {
        let resp = client().get(url).send().await.unwrap();
        assert_eq!(header(&resp, "content-type"), b"text/plain");
        let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_errcode(&body, 40007);
    }
    let resp = client().get(format!("{}/oa/video?id=nope", wx.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(wx.problems().len(), 3, "{:#?}", wx.problems());
}

fn key_bytes() -> [u8; 32] {
    let engine =
        GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));
    engine.decode(format!("{AES_KEY}=")).unwrap().try_into().unwrap()
}

/// Decrypts an AI bot media body, checking the padding is 1..=32 bytes to a multiple of 32.
fn aibot_decrypt(mut body: Vec<u8>) -> Vec<u8> {
    assert!(!body.is_empty() && body.len() % 32 == 0, "{} bytes is not a multiple of 32", body.len());
    let key = key_bytes();
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    let plain = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut body)
        .unwrap()
        .to_vec();
    let pad = usize::from(*plain.last().unwrap());
    assert!((1..=32).contains(&pad), "pad {pad}");
    assert!(plain[plain.len() - pad..].iter().all(|&b| usize::from(b) == pad), "pad bytes");
    plain[..plain.len() - pad].to_vec()
}

#[tokio::test]
async fn aibot_media_url_serves_the_ciphertext_padded_to_32() {
    let wx = setup().await;
    // 40 bytes pad with 24 (not 8, as a 16-byte block would), 64 with a whole block of 32.
    for len in [40usize, 64, 0, 100_000] {
        let plain = sample(len);
        let url = wx.aibot_media_url(&plain, AES_KEY, Some("图片 1.png"));
        assert!(url.starts_with(&format!("{}/aibot/media?id=", wx.base_url)), "{url}");
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), b"application/octet-stream");
        assert_eq!(header(&resp, "content-disposition"), b"attachment; filename*=UTF-8''%E5%9B%BE%E7%89%87%201.png");
        let body = resp.bytes().await.unwrap().to_vec();
        assert_eq!(body.len(), (len / 32 + 1) * 32);
        assert_eq!(aibot_decrypt(body), plain, "len {len}");
    }
    let url = wx.aibot_media_url(b"no name", AES_KEY, None);
    let resp = client().get(&url).send().await.unwrap();
    assert!(resp.headers().get("content-disposition").is_none());
    assert_eq!(aibot_decrypt(resp.bytes().await.unwrap().to_vec()), b"no name");
    assert_eq!(wx.calls("/aibot/media"), 5);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
}

#[tokio::test]
async fn aibot_media_url_expires_with_a_cos_403() {
    let wx = setup().await;
    wx.set_aibot_media_ttl(Duration::from_millis(50));
    let url = wx.aibot_media_url(b"soon gone", AES_KEY, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "content-type"), b"application/xml");
    let text = resp.text().await.unwrap();
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    assert_eq!(wx.aibot_media_expired_hits(), 1);
    assert!(wx.problems().is_empty(), "expiry is not a problem: {:#?}", wx.problems());
    let resp = client().get(format!("{}/aibot/media?id=nope", wx.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("<Code>NoSuchKey</Code>"));
    assert_eq!(wx.problems().len(), 1);
}

fn cdn_url(wx: &FakeWechat) -> String {
    format!("{}/c2c/download", wx.base_url)
}

#[tokio::test]
async fn ilink_cdn_serves_ecb_ciphertext_for_a_percent_encoded_param() {
    let wx = setup().await;
    let key: [u8; 16] = *b"0123456789abcdef";
    for len in [0usize, 15, 16, 33, 70_000] {
        let plain = sample(len);
        let param = wx.ilink_cdn_media(&plain, key);
        assert!(param.contains('+') && param.contains('/') && param.contains('='), "{param}");
        let resp = client().get(cdn_url(&wx)).query(&[("encrypted_query_param", &param)]).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), b"application/octet-stream");
        let mut body = resp.bytes().await.unwrap().to_vec();
        assert_eq!(body.len(), (len / 16 + 1) * 16);
        let cipher = aes::Aes128::new(&key.into());
        for block in body.chunks_exact_mut(16) {
            cipher.decrypt_block(aes::Block::from_mut_slice(block));
        }
        let pad = usize::from(*body.last().unwrap());
        assert!((1..=16).contains(&pad) && body[body.len() - pad..].iter().all(|&b| usize::from(b) == pad));
        body.truncate(body.len() - pad);
        assert_eq!(body, plain, "len {len}");
    }
    let image = b"\xFF\xD8\xFF plain jpeg".to_vec();
    let param = wx.ilink_cdn_plain(&image);
    let resp = client().get(cdn_url(&wx)).query(&[("encrypted_query_param", &param)]).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), image);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());

    // Not percent-encoded: '+' arrives as a space.
    let resp = client().get(format!("{}?encrypted_query_param={param}", cdn_url(&wx))).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.bytes().await.unwrap().is_empty());
    let problems = wx.problems();
    assert!(problems.len() == 1 && problems[0].contains("not percent-encoded"), "{problems:#?}");
}

#[tokio::test]
async fn faults_apply_to_the_download_paths() {
    let wx = setup().await;
    let param = wx.ilink_cdn_plain(b"image");
    wx.inject("/c2c/download", Fault::HttpStatus(500));
    let get = || client().get(cdn_url(&wx)).query(&[("encrypted_query_param", &param)]).send();
    let resp = get().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.bytes().await.unwrap().is_empty(), "the CDN's 500 has an empty body");
    assert_eq!(get().await.unwrap().bytes().await.unwrap(), &b"image"[..]);
    assert_eq!(wx.calls("/c2c/download"), 2);

    let url = wx.aibot_media_url(b"x", AES_KEY, None);
    wx.inject("/aibot/media", Fault::HttpStatus(503));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("<Code>ServiceUnavailable</Code>"));

    let token = wecom_token(&wx, CORP, SECRET).await;
    let id = wx.add_wecom_media(CORP, sample(10), "a.jpg", "image/jpeg");
    wx.inject(GET, Fault::Errcode(-1));
    assert_errcode(&get_json(&get_url(&wx, &token, &id)).await, -1);
    wx.inject(GET, Fault::Drop);
    assert!(client().get(get_url(&wx, &token, &id)).send().await.is_err());
    assert_eq!(client().get(get_url(&wx, &token, &id)).send().await.unwrap().status(), 200);
    assert_eq!(wx.calls(GET), 3);
    assert!(wx.problems().is_empty(), "faults are not problems: {:#?}", wx.problems());
}
