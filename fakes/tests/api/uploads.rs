//! Outbound media: WeCom `media/upload` and the robot's `webhook/upload_media` keep what they
//! receive, and sends accept only media_ids the sender may use.

use fakes::{Api, FakeWechat};
use serde_json::{json, Value};

use crate::support::{assert_errcode, client, get_json, post_json};

const CORP: &str = "ww0123456789abcdef";
const SECRET: &str = "app-secret";
const AGENT: u32 = 1000002;
const UPLOAD: &str = "/cgi-bin/media/upload";
const ROBOT_A: &str = "robot-a-key";
const ROBOT_B: &str = "robot-b-key";

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n picture bytes";
const AMR: &[u8] = b"#!AMR\n voice frames";
const MP4: &[u8] = b"\0\0\0\x18ftypmp42 video";
const PDF: &[u8] = b"%PDF-1.7 report";

async fn setup() -> (FakeWechat, String) {
    let wx = FakeWechat::start().await;
    wx.add_wecom_app(CORP, SECRET, AGENT);
    wx.add_wecom_app("wwother", "other-secret", AGENT);
    wx.add_wecom_user("alice");
    wx.add_appchat("chat1", &["alice", "bob"]);
    wx.add_robot(ROBOT_A);
    wx.add_robot(ROBOT_B);
    let token = token_for(&wx, CORP, SECRET).await;
    (wx, token)
}

async fn token_for(wx: &FakeWechat, corp: &str, secret: &str) -> String {
    let body = get_json(&format!("{}/cgi-bin/gettoken?corpid={corp}&corpsecret={secret}", wx.base_url)).await;
    body["access_token"].as_str().expect("access_token").to_owned()
}

fn upload_url(wx: &FakeWechat, token: &str, media_type: &str) -> String {
    format!("{}{UPLOAD}?access_token={token}&type={media_type}", wx.base_url)
}

fn robot_upload_url(wx: &FakeWechat, key: &str, media_type: &str) -> String {
    format!("{}/cgi-bin/webhook/upload_media?key={key}&type={media_type}", wx.base_url)
}

/// Uploads as wxbridge does: one part `media`, the file name as raw UTF-8.
async fn upload_to(url: &str, filename: &str, bytes: &[u8]) -> Value {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(filename.to_owned());
    let form = reqwest::multipart::Form::new().percent_encode_noop().part("media", part);
    let resp = client().post(url).multipart(form).send().await.expect("POST");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("JSON body")
}

/// Uploads and returns the media_id, asserting the answer's shape.
async fn upload_id(url: &str, filename: &str, bytes: &[u8]) -> String {
    let answer = upload_to(url, filename, bytes).await;
    assert_errcode(&answer, 0);
    assert!(answer["created_at"].is_string(), "created_at is a string: {answer}");
    answer["media_id"].as_str().expect("media_id").to_owned()
}

/// A multipart body with one part whose Content-Disposition parameters are exactly `params`.
async fn raw_upload(url: &str, params: &[u8], data: &[u8]) -> Value {
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; ".to_vec();
    body.extend_from_slice(params);
    body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let resp = client()
        .post(url)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .expect("POST");
    resp.json().await.expect("JSON body")
}

fn send_url(wx: &FakeWechat, token: &str) -> String {
    format!("{}/cgi-bin/message/send?access_token={token}", wx.base_url)
}

fn app_message(msgtype: &str, media_id: &str) -> Value {
    let mut body = json!({"touser": "alice", "msgtype": msgtype, "agentid": AGENT});
    body[msgtype] = json!({"media_id": media_id});
    body
}

fn robot_send_url(wx: &FakeWechat, key: &str) -> String {
    format!("{}/cgi-bin/webhook/send?key={key}", wx.base_url)
}

#[tokio::test]
async fn uploads_are_kept_and_their_ids_send_and_download() {
    let (wx, token) = setup().await;
    let mut ids = Vec::new();
    for (media_type, name, bytes) in
        [("image", "a.png", PNG), ("voice", "a.amr", AMR), ("video", "a.mp4", MP4), ("file", "a.pdf", PDF)]
    {
        let answer = upload_to(&upload_url(&wx, &token, media_type), name, bytes).await;
        assert_errcode(&answer, 0);
        assert_eq!(answer["type"], media_type);
        let created = answer["created_at"].as_str().expect("created_at is a string");
        assert!(created.parse::<u64>().is_ok_and(|t| t > 1_700_000_000), "{answer}");
        let id = answer["media_id"].as_str().unwrap().to_owned();
        assert_eq!(wx.media(&id), Some((name.to_owned(), bytes.to_vec())));
        assert_errcode(&post_json(&send_url(&wx, &token), &app_message(media_type, &id)).await, 0);
        ids.push(id);
    }
    assert_eq!(wx.calls(UPLOAD), 4);
    assert_eq!(wx.deliveries_of(Api::WecomMessage).len(), 4);

    // The group chat takes them too, and a file message any type.
    let appchat = format!("{}/cgi-bin/appchat/send?access_token={token}", wx.base_url);
    for (msgtype, id) in [("image", &ids[0]), ("voice", &ids[1]), ("video", &ids[2]), ("file", &ids[0])] {
        let mut body = json!({"chatid": "chat1", "msgtype": msgtype});
        body[msgtype] = json!({"media_id": id});
        assert_errcode(&post_json(&appchat, &body).await, 0);
    }
    assert_eq!(wx.deliveries_of(Api::WecomAppchat).len(), 4);

    // Another app of the corp shares the media: it may send and fetch it.
    wx.add_wecom_app(CORP, "second", 1000003);
    let second = token_for(&wx, CORP, "second").await;
    let mut body = app_message("file", &ids[3]);
    body["agentid"] = json!(1000003);
    assert_errcode(&post_json(&send_url(&wx, &second), &body).await, 0);
    let resp = client()
        .get(format!("{}/cgi-bin/media/get?access_token={second}&media_id={}", wx.base_url, ids[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-disposition"].as_bytes(), b"attachment; filename=\"a.pdf\"");
    assert_eq!(resp.bytes().await.unwrap(), PDF);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
}

#[tokio::test]
async fn sends_with_an_unknown_foreign_or_mistyped_id_are_40007() {
    let (wx, token) = setup().await;
    let image = upload_id(&upload_url(&wx, &token, "image"), "a.png", PNG).await;
    let file = upload_id(&upload_url(&wx, &token, "file"), "a.pdf", PDF).await;
    let other = token_of_other(&wx).await;
    let foreign = upload_id(&upload_url(&wx, &other, "image"), "b.png", PNG).await;
    let robot = upload_id(&robot_upload_url(&wx, ROBOT_A, "file"), "r.pdf", PDF).await;
    let url = send_url(&wx, &token);
    let cases = [
        (app_message("image", "3MadeUpMediaId"), "was never issued"),
        (app_message("image", &foreign), "belongs to WeCom corp wwother"),
        (app_message("file", &robot), "belongs to group robot"),
        (app_message("voice", &image), "has type image, this message needs type voice"),
        (app_message("video", &image), "needs type video"),
        (app_message("image", &file), "has type file"),
    ];
    for (body, why) in &cases {
        let answer = post_json(&url, body).await;
        assert!(assert_errcode(&answer, 40007).starts_with("invalid media_id"), "{answer}");
        let problems = wx.problems();
        let last = problems.last().unwrap();
        assert!(last.starts_with("POST /cgi-bin/message/send: errcode 40007") && last.contains(why), "{last}");
    }
    let appchat = format!("{}/cgi-bin/appchat/send?access_token={token}", wx.base_url);
    let body = json!({"chatid": "chat1", "msgtype": "file", "file": {"media_id": "nope"}});
    assert_errcode(&post_json(&appchat, &body).await, 40007);
    assert_eq!(wx.problems().len(), cases.len() + 1, "{:#?}", wx.problems());
    assert!(wx.deliveries().is_empty());
}

async fn token_of_other(wx: &FakeWechat) -> String {
    token_for(wx, "wwother", "other-secret").await
}

#[tokio::test]
async fn an_expired_id_is_40007_for_sends_and_downloads() {
    let (wx, token) = setup().await;
    let first = upload_id(&upload_url(&wx, &token, "image"), "a.png", PNG).await;
    let second = upload_id(&upload_url(&wx, &token, "image"), "b.png", PNG).await;
    let added = wx.add_wecom_media(CORP, PNG.to_vec(), "c.png", "image/png");
    wx.expire_media(&first);
    let answer = post_json(&send_url(&wx, &token), &app_message("image", &first)).await;
    assert_errcode(&answer, 40007);
    assert!(wx.problems()[0].contains("has expired"), "{:#?}", wx.problems());
    let get = |id: &str| format!("{}/cgi-bin/media/get?access_token={token}&media_id={id}", wx.base_url);
    assert_errcode(&get_json(&get(&first)).await, 40007);
    // Only that one.
    assert_errcode(&post_json(&send_url(&wx, &token), &app_message("image", &second)).await, 0);
    assert_errcode(&post_json(&send_url(&wx, &token), &app_message("image", &added)).await, 0);
    assert_eq!(wx.media(&first).unwrap().1, PNG, "the bytes stay readable for the test");

    wx.expire_all_media();
    for id in [&second, &added] {
        assert_errcode(&post_json(&send_url(&wx, &token), &app_message("image", id)).await, 40007);
        assert_errcode(&get_json(&get(id)).await, 40007);
    }
    // A fresh upload works again.
    let fresh = upload_id(&upload_url(&wx, &token, "image"), "a.png", PNG).await;
    assert_errcode(&post_json(&send_url(&wx, &token), &app_message("image", &fresh)).await, 0);
    assert_eq!(wx.deliveries().len(), 3);
    assert_eq!(wx.problems().len(), 6, "{:#?}", wx.problems());
}

#[tokio::test]
async fn a_robot_sends_only_its_own_uploads() {
    let (wx, _) = setup().await;
    let file = upload_id(&robot_upload_url(&wx, ROBOT_A, "file"), "logs.zip", b"PK\x03\x04 zip").await;
    let voice = upload_id(&robot_upload_url(&wx, ROBOT_A, "voice"), "v.amr", AMR).await;
    assert_eq!(wx.media(&file), Some(("logs.zip".to_owned(), b"PK\x03\x04 zip".to_vec())));
    let a = robot_send_url(&wx, ROBOT_A);
    let b = robot_send_url(&wx, ROBOT_B);
    assert_errcode(&post_json(&a, &json!({"msgtype": "file", "file": {"media_id": file}})).await, 0);
    assert_errcode(&post_json(&a, &json!({"msgtype": "voice", "voice": {"media_id": voice}})).await, 0);
    assert_errcode(&post_json(&a, &json!({"msgtype": "file", "file": {"media_id": voice}})).await, 0);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());

    let refused = [
        (&b, json!({"msgtype": "file", "file": {"media_id": file}}), "belongs to group robot robot-a-key"),
        (&a, json!({"msgtype": "voice", "voice": {"media_id": file}}), "has type file"),
        (&a, json!({"msgtype": "file", "file": {"media_id": "3a8asd892asd8asd"}}), "never issued"),
    ];
    for (url, body, why) in &refused {
        assert_errcode(&post_json(url, body).await, 40007);
        let problems = wx.problems();
        assert!(problems.last().unwrap().contains(why), "{problems:#?}");
    }
    // A WeCom app cannot use or fetch a robot's media.
    let token = token_for(&wx, CORP, SECRET).await;
    assert_errcode(&post_json(&send_url(&wx, &token), &app_message("file", &file)).await, 40007);
    let get = format!("{}/cgi-bin/media/get?access_token={token}&media_id={file}", wx.base_url);
    assert_errcode(&get_json(&get).await, 40007);
    wx.expire_media(&file);
    assert_errcode(&post_json(&a, &json!({"msgtype": "file", "file": {"media_id": file}})).await, 40007);
    assert_eq!(wx.deliveries_of(Api::WecomWebhook).len(), 3);
    assert_eq!(wx.problems().len(), 6, "{:#?}", wx.problems());
}

#[tokio::test]
async fn a_raw_utf8_file_name_round_trips() {
    let (wx, token) = setup().await;
    let name = "季度报告 2026（终稿）.pdf";
    let id = upload_id(&upload_url(&wx, &token, "file"), name, PDF).await;
    assert_eq!(wx.media(&id), Some((name.to_owned(), PDF.to_vec())));
    let resp = client()
        .get(format!("{}/cgi-bin/media/get?access_token={token}&media_id={id}", wx.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-disposition"].as_bytes(), format!("attachment; filename=\"{name}\"").as_bytes());
    // The robot keeps names the same way; quoted-pairs are undone.
    let id = upload_id(&robot_upload_url(&wx, ROBOT_A, "file"), "说明 \"v2\".txt", b"robot notes").await;
    assert_eq!(wx.media(&id).unwrap().0, "说明 \"v2\".txt");
    // A name percent-encoded by the client is kept encoded, as WeCom would show it.
    let answer = raw_upload(&upload_url(&wx, &token, "file"), b"name=\"media\"; filename=\"%E6%8A%A5.pdf\"", PDF).await;
    let id = answer["media_id"].as_str().unwrap();
    assert_eq!(wx.media(id).unwrap().0, "%E6%8A%A5.pdf");
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());

    // Bytes that are not UTF-8 are accepted but reported.
    let answer = raw_upload(&upload_url(&wx, &token, "file"), b"name=\"media\"; filename=\"\xB1\xA8.pdf\"", PDF).await;
    assert_errcode(&answer, 0);
    let problems = wx.problems();
    assert!(problems.len() == 1 && problems[0].contains("not UTF-8"), "{problems:#?}");
}

#[tokio::test]
async fn uploads_are_refused_as_wecom_refuses_them() {
    let (wx, token) = setup().await;
    let file = upload_url(&wx, &token, "file");
    let rfc2231 = raw_upload(&file, b"name=\"media\"; filename*=utf-8''%E6%8A%A5%E5%91%8A.pdf", PDF).await;
    assert!(assert_errcode(&rfc2231, 44001).starts_with("empty media data"), "{rfc2231}");
    assert!(wx.problems()[0].contains("filename*="), "{:#?}", wx.problems());
    // With a raw filename as well, WeCom reads the raw one.
    let both = raw_upload(&file, b"name=\"media\"; filename=\"r.pdf\"; filename*=utf-8''r.pdf", PDF).await;
    assert_errcode(&both, 0);
    assert_eq!(wx.media(both["media_id"].as_str().unwrap()).unwrap().0, "r.pdf");

    let voice_cap = vec![b'#'; 2 * 1024 * 1024 + 1];
    let mut amr_over_cap = AMR.to_vec();
    amr_over_cap.extend_from_slice(&voice_cap);
    let cases: Vec<(String, &[u8], &[u8], i64)> = vec![
        (file.clone(), b"name=\"media\"", PDF, 41005),
        (file.clone(), b"name=\"file\"; filename=\"a.pdf\"", PDF, 41005),
        (file.clone(), b"name=\"media\"; filename=\"\"", PDF, 41005),
        (file.clone(), b"name=\"media\"; filename=\"a.pdf\"", b"12345", 40006),
        (upload_url(&wx, &token, "voice"), b"name=\"media\"; filename=\"a.amr\"", &amr_over_cap, 45001),
        (upload_url(&wx, &token, "voice"), b"name=\"media\"; filename=\"a.mp3\"", b"ID3\x03 mp3 bytes", 40004),
        (upload_url(&wx, &token, "image"), b"name=\"media\"; filename=\"a.gif\"", b"GIF89a image", 40004),
        (upload_url(&wx, &token, "video"), b"name=\"media\"; filename=\"a.mov\"", PDF, 40004),
        (upload_url(&wx, &token, "thumb"), b"name=\"media\"; filename=\"a.jpg\"", PNG, 40005),
        (format!("{}{UPLOAD}?access_token={token}", wx.base_url), b"name=\"media\"; filename=\"a\"", PNG, 40005),
        (robot_upload_url(&wx, ROBOT_A, "image"), b"name=\"media\"; filename=\"a.png\"", PNG, 40005),
        (robot_upload_url(&wx, ROBOT_A, "voice"), b"name=\"media\"; filename=\"a.wav\"", b"RIFF wav bytes", 40004),
        (robot_upload_url(&wx, "nope", "file"), b"name=\"media\"; filename=\"a.pdf\"", PDF, 93000),
        (upload_url(&wx, "made-up", "file"), b"name=\"media\"; filename=\"a.pdf\"", PDF, 40014),
    ];
    let n = cases.len();
    for (url, params, data, code) in cases {
        let answer = raw_upload(&url, params, data).await;
        assert_eq!(answer["errcode"], code, "{url} {} answered {answer}", String::from_utf8_lossy(params));
    }
    // Not multipart at all.
    let answer: Value = client().post(&file).body(PDF).send().await.unwrap().json().await.unwrap();
    assert_errcode(&answer, 41005);
    assert_eq!(wx.problems().len(), n + 2, "{:#?}", wx.problems());
    assert_eq!(wx.calls(UPLOAD), n, "every WeCom upload counted, refused or not (3 cases are the robot's)");
}

#[tokio::test]
async fn a_20_mb_file_is_the_largest_upload() {
    let (wx, token) = setup().await;
    let url = upload_url(&wx, &token, "file");
    let mut big = vec![0u8; 20 << 20];
    big[..8].copy_from_slice(b"%PDF-1.7");
    let id = upload_id(&url, "big.pdf", &big).await;
    assert_eq!(wx.media(&id).unwrap().1.len(), big.len());
    big.push(0);
    assert_errcode(&upload_to(&url, "big.pdf", &big).await, 45001);
    assert_eq!(wx.problems().len(), 1, "{:#?}", wx.problems());
}

#[tokio::test]
async fn robot_inline_images_are_checked() {
    use base64::Engine as _;
    let (wx, _) = setup().await;
    let url = robot_send_url(&wx, ROBOT_A);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let md5 = |bytes: &[u8]| -> String {
        <md5::Md5 as md5::Digest>::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    let ok = json!({"msgtype": "image", "image": {"base64": b64(PNG), "md5": md5(PNG)}});
    assert_errcode(&post_json(&url, &ok).await, 0);
    let upper = json!({"msgtype": "image", "image": {"base64": b64(PNG), "md5": md5(PNG).to_uppercase()}});
    assert_errcode(&post_json(&url, &upper).await, 0);
    assert!(wx.problems().is_empty(), "{:#?}", wx.problems());

    let mut big = vec![0u8; 2 * 1024 * 1024 + 1];
    big[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    let gif = b"GIF89a picture".as_slice();
    let cases = [
        (json!({"msgtype": "image", "image": {"base64": b64(PNG), "md5": md5(b"other bytes")}}), 40009, "not the md5"),
        (json!({"msgtype": "image", "image": {"base64": b64(&big), "md5": md5(&big)}}), 40009, "1..=2097152"),
        (json!({"msgtype": "image", "image": {"base64": b64(gif), "md5": md5(gif)}}), 40004, "JPG or PNG"),
    ];
    for (body, code, why) in &cases {
        assert_errcode(&post_json(&url, body).await, *code);
        let problems = wx.problems();
        assert!(problems.last().unwrap().contains(why), "{problems:#?}");
    }
    assert_eq!(wx.deliveries().len(), 2);
}

/// The Official Account's temporary media share WeCom's path on their own host: the account's
/// token, its own types and caps (images JPG/PNG/GIF ≤ 2 MB, voice AMR/MP3, no files), an answer
/// without errcode and a numeric `created_at`; a send checks the id is the account's.
#[tokio::test]
async fn official_account_uploads_take_its_types_and_caps_and_sends_take_only_its_ids() {
    const APP: &str = "wx1234567890abcdef";
    const FOLLOWER: &str = "oFollower1";
    let (wx, _) = setup().await;
    wx.add_oa(APP, "oa-secret");
    wx.add_oa_user(FOLLOWER);
    let body = json!({"grant_type": "client_credential", "appid": APP, "secret": "oa-secret"});
    let token = post_json(&format!("{}/cgi-bin/stable_token", wx.base_url), &body).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let gif = b"GIF89a animated";
    let answer = upload_to(&upload_url(&wx, &token, "image"), "a.gif", gif).await;
    assert!(answer.get("errcode").is_none() && answer["created_at"].is_u64(), "{answer}");
    let image_id = answer["media_id"].as_str().unwrap().to_owned();
    assert_eq!(wx.media(&image_id).unwrap().1, gif);
    let mp3 = b"ID3\x04\0\0\0\0\0\0 frames";
    assert!(upload_to(&upload_url(&wx, &token, "voice"), "v.mp3", mp3).await["media_id"].is_string());
    let over: Vec<u8> = PNG.iter().copied().chain(std::iter::repeat_n(0, 2 * 1024 * 1024)).collect();
    for (kind, name, bytes, code) in
        [("file", "r.pdf", PDF, 40005), ("image", "big.png", over.as_slice(), 45001), ("voice", "x.png", PNG, 40004)]
    {
        let answer = upload_to(&upload_url(&wx, &token, kind), name, bytes).await;
        assert_errcode(&answer, code);
    }
    let send = format!("{}/cgi-bin/message/custom/send?access_token={token}", wx.base_url);
    let image = |id: &str| json!({"touser": FOLLOWER, "msgtype": "image", "image": {"media_id": id}});
    assert_errcode(&post_json(&send, &image(&image_id)).await, 0);
    let wecom_token = token_for(&wx, CORP, SECRET).await;
    let wecom_id = upload_id(&upload_url(&wx, &wecom_token, "image"), "p.png", PNG).await;
    assert_errcode(&post_json(&send, &image(&wecom_id)).await, 40007);
    assert_eq!(wx.deliveries_of(Api::OaCustom).len(), 1);
}
