//! Every Official Account sample of `messages.json`, every rendered reply, and every `oa*` case of
//! `crypto.json` through mode detection and authentication.

use secrecy::SecretString;
use serde_json::Value;
use shared::channels::oa::callback::{Mode, OaAuth, OaError};
use shared::channels::oa::{OaCallbackMessage, OaEvent, OaMessage, PassiveReply};
use shared::core::envelope::{Article, Kind};
use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
use shared::protocol::query::Query;
use shared::protocol::xml;
use shared::testing::fixtures::{OA_AES_KEY, OA_APP_ID};

const MESSAGES: &str = include_str!("../../fixtures/vectors/messages.json");
const CRYPTO: &str = include_str!("../../fixtures/vectors/crypto.json");
const INBOUND_SCHEMA: &str = include_str!("../../schemas/inbound.v1.json");

fn samples() -> Vec<Value> {
    let doc: Value = serde_json::from_str(MESSAGES).unwrap();
    doc["messages"].as_array().unwrap().iter().filter(|m| m["channel"] == "oa").cloned().collect()
}

#[test]
fn every_official_account_sample_parses_into_its_typed_variant() {
    let samples = samples();
    assert_eq!(samples.len(), 14);
    let schema: Value = serde_json::from_str(INBOUND_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for sample in &samples {
        let id = sample["id"].as_str().unwrap();
        let f = |name: &str| sample["fields"][name].as_str().map(str::to_owned);
        let m = OaCallbackMessage::parse(sample["raw"].as_str().unwrap()).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(m.fields.to_json(), sample["fields"], "{id}: raw fields");
        assert_eq!(
            (Some(m.header.to.clone()), Some(m.header.from.clone())),
            (f("ToUserName"), f("FromUserName")),
            "{id}"
        );
        assert_eq!(Some(m.header.create_time.to_string()), f("CreateTime"));
        assert_eq!(m.header.msg_id.map(|n| n.to_string()), f("MsgId"), "{id}: 64-bit MsgId");
        match &m.body {
            OaMessage::Text { content } => assert_eq!(Some(content.clone()), f("Content")),
            OaMessage::Image { pic_url, media_id } => {
                assert_eq!((pic_url.clone(), Some(media_id.clone())), (f("PicUrl"), f("MediaId")))
            }
            OaMessage::Voice { media_id, format, recognition } => {
                assert_eq!(
                    (Some(media_id.clone()), format.clone(), recognition.clone()),
                    (f("MediaId"), f("Format"), f("Recognition"))
                )
            }
            OaMessage::Video { media_id, thumb_media_id, short } => {
                assert_eq!((Some(media_id.clone()), thumb_media_id.clone()), (f("MediaId"), f("ThumbMediaId")));
                assert_eq!(*short, sample["msg_type"] == "shortvideo");
            }
            OaMessage::Location { latitude, longitude, scale, label } => {
                assert_eq!(
                    (Some(latitude.to_string()), Some(longitude.to_string())),
                    (f("Location_X"), f("Location_Y").map(|v| v.trim_end_matches('0').to_owned()))
                );
                assert_eq!((scale.map(|s| s.to_string()), label.clone()), (f("Scale"), f("Label")));
            }
            OaMessage::Link { title, description, url } => {
                assert_eq!(
                    (title.clone(), description.clone(), Some(url.clone())),
                    (f("Title"), f("Description"), f("Url"))
                )
            }
            OaMessage::Event(event) => match event {
                OaEvent::Subscribe { scene, ticket } => {
                    assert_eq!(
                        scene.clone(),
                        f("EventKey").map(|k| k.trim_start_matches("qrscene_").to_owned()),
                        "{id}"
                    );
                    assert_eq!(ticket.clone(), f("Ticket"));
                }
                OaEvent::Unsubscribe => assert_eq!(f("Event").as_deref(), Some("unsubscribe")),
                OaEvent::Scan { scene, ticket } => {
                    assert_eq!((Some(scene.clone()), ticket.clone()), (f("EventKey"), f("Ticket")))
                }
                OaEvent::Location { latitude, longitude, precision } => {
                    assert_eq!(latitude.map(|v| v.to_string()), f("Latitude"));
                    assert_eq!(longitude.map(|v| v.to_string()), f("Longitude"));
                    assert_eq!(*precision, f("Precision").map(|p| p.parse::<f64>().unwrap()));
                }
                OaEvent::Click { key } => assert_eq!(Some(key.clone()), f("EventKey")),
                OaEvent::View { url, menu_id } => {
                    assert_eq!((Some(url.clone()), menu_id.clone()), (f("EventKey"), f("MenuId")))
                }
                OaEvent::Other { name } => panic!("{id}: unexpected other event {name}"),
            },
            OaMessage::Unsupported { msg_type } => panic!("{id}: unsupported {msg_type}"),
        }
        let inbound = m.to_inbound("news", 1_767_225_600);
        let documented = sample["dedupe_key"].as_str().unwrap();
        let expected = match documented.strip_prefix("msgid:") {
            Some(msg_id) => format!("oa:news:{msg_id}"),
            None => {
                let (from, time) = documented.strip_prefix("from_time:").unwrap().split_once('|').unwrap();
                format!("oa:news:{from}:{time}:")
            }
        };
        assert!(inbound.id.starts_with(&expected), "{id}: {} does not extend {documented}", inbound.id);
        if inbound.kind == Kind::Event {
            assert_eq!(inbound.event.as_ref().unwrap().name, sample["event"].as_str().unwrap());
        }
        let json: Value = serde_json::from_str(&inbound.to_json()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{id}: {errors:?}");
    }
}

#[test]
fn every_passive_reply_renders_the_reference_fields() {
    let doc: Value = serde_json::from_str(MESSAGES).unwrap();
    let mut checked = 0;
    for reply in doc["replies"].as_array().unwrap().iter().filter(|r| r["channel"] == "oa") {
        let f = &reply["fields"];
        let s = |path: &[&str]| {
            let mut v = f;
            for p in path {
                v = &v[*p];
            }
            v.as_str().map(str::to_owned)
        };
        let content = match reply["msg_type"].as_str().unwrap() {
            "text" => PassiveReply::Text { content: s(&["Content"]).unwrap() },
            "image" => PassiveReply::Image { media_id: s(&["Image", "MediaId"]).unwrap() },
            "voice" => PassiveReply::Voice { media_id: s(&["Voice", "MediaId"]).unwrap() },
            "video" => PassiveReply::Video {
                media_id: s(&["Video", "MediaId"]).unwrap(),
                title: s(&["Video", "Title"]),
                description: s(&["Video", "Description"]),
            },
            "music" => PassiveReply::Music {
                thumb_media_id: s(&["Music", "ThumbMediaId"]).unwrap(),
                title: s(&["Music", "Title"]),
                description: s(&["Music", "Description"]),
                music_url: s(&["Music", "MusicUrl"]),
                hq_music_url: s(&["Music", "HQMusicUrl"]),
            },
            "news" => PassiveReply::News {
                articles: vec![Article {
                    title: s(&["Articles", "item", "Title"]).unwrap(),
                    url: s(&["Articles", "item", "Url"]).unwrap(),
                    description: s(&["Articles", "item", "Description"]),
                    picurl: s(&["Articles", "item", "PicUrl"]),
                }],
            },
            other => panic!("unexpected reply type {other}"),
        };
        let rendered = content.render(
            &s(&["ToUserName"]).unwrap(),
            &s(&["FromUserName"]).unwrap(),
            s(&["CreateTime"]).unwrap().parse().unwrap(),
        );
        let ours = xml::parse(&rendered).unwrap().to_json();
        assert_eq!(ours, xml::parse(reply["xml"].as_str().unwrap()).unwrap().to_json(), "{}", reply["id"]);
        assert_eq!(ours, *f, "{}", reply["id"]);
        checked += 1;
    }
    assert_eq!(checked, 6);
}

fn crypto_case(id: &str) -> Value {
    let doc: Value = serde_json::from_str(CRYPTO).unwrap();
    doc["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone()
}

fn auth(case: &Value) -> OaAuth {
    let crypt = case["encoding_aes_key"].as_str().map(|key| {
        MsgCrypt::new(
            case["token"].as_str().unwrap(),
            &EncodingAesKey::parse(key).unwrap(),
            case["receive_id"].as_str().unwrap(),
        )
    });
    OaAuth::new(&SecretString::from(case["token"].as_str().unwrap().to_owned()), crypt)
}

#[test]
fn modes_are_told_apart_and_each_authenticates_what_it_should() {
    for (id, mode) in [
        ("oa_callback_plain", Mode::Plain),
        ("oa_callback_safe", Mode::Safe),
        ("oa_callback_compat", Mode::Compatible),
        ("oa_callback_safe_event", Mode::Safe),
    ] {
        let case = crypto_case(id);
        let query = Query::parse(case["request"]["query"].as_str().unwrap()).unwrap();
        let (got, plaintext) =
            auth(&case).open(&query, case["request"]["body"].as_str().unwrap()).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(got, mode, "{id}");
        assert_eq!(plaintext, case["expected"]["plaintext"].as_str().unwrap(), "{id}");
        OaCallbackMessage::parse(&plaintext).unwrap();
    }
}

#[test]
fn a_valid_plain_signature_does_not_authenticate_a_forged_ciphertext() {
    let case = crypto_case("neg_oa_safe_msg_signature");
    let query = Query::parse(case["request"]["query"].as_str().unwrap()).unwrap();
    let err = auth(&case).open(&query, case["request"]["body"].as_str().unwrap()).unwrap_err();
    assert!(matches!(err, OaError::Signature), "{err}");
}

#[test]
fn url_verification_echoes_unchanged_only_with_a_valid_signature() {
    let case = crypto_case("oa_verify_url_plain");
    let query = Query::parse(case["request"]["query"].as_str().unwrap()).unwrap();
    assert_eq!(auth(&case).verify_url(&query).unwrap(), case["expected"]["response_body"].as_str().unwrap());
    let bad = crypto_case("neg_oa_plain_bad_signature");
    let raw = format!(
        "signature={}&echostr={}&timestamp={}&nonce={}",
        bad["signature"].as_str().unwrap(),
        bad["echostr"].as_str().unwrap(),
        bad["timestamp"].as_str().unwrap(),
        bad["nonce"].as_str().unwrap()
    );
    let query = Query::parse(&raw).unwrap();
    assert!(matches!(auth(&bad).verify_url(&query).unwrap_err(), OaError::Signature));
}

#[test]
fn replies_are_sealed_in_the_request_mode_and_match_the_reference() {
    let case = crypto_case("oa_encrypt_reply");
    let random = {
        let hex = case["random_hex"].as_str().unwrap();
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    };
    let (ts, nonce, plaintext) =
        (case["timestamp"].as_str().unwrap(), case["nonce"].as_str().unwrap(), case["plaintext"].as_str().unwrap());
    let auth = auth(&case);
    assert_eq!(auth.seal(Mode::Safe, plaintext, random, ts, nonce), case["expected"]["reply_body"].as_str().unwrap());
    assert_eq!(
        auth.seal(Mode::Compatible, plaintext, random, ts, nonce),
        case["expected"]["reply_body"].as_str().unwrap()
    );
    assert_eq!(auth.seal(Mode::Plain, plaintext, random, ts, nonce), plaintext);
    let no_key = OaAuth::new(&SecretString::from("t".to_owned()), None);
    let query = Query::parse("signature=x&timestamp=1&nonce=2&encrypt_type=aes&msg_signature=y").unwrap();
    assert!(matches!(no_key.open(&query, "<xml><Encrypt>x</Encrypt></xml>").unwrap_err(), OaError::NoKey));
}

#[test]
fn an_account_with_a_key_refuses_plaintext_requests() {
    // In compatible and safe mode WeChat always encrypts; a plaintext body is covered by no
    // signature, so a captured URL must not carry a forged message.
    let case = crypto_case("oa_callback_plain");
    let with_key = OaAuth::new(
        &SecretString::from(case["token"].as_str().unwrap().to_owned()),
        Some(MsgCrypt::new(case["token"].as_str().unwrap(), &EncodingAesKey::parse(OA_AES_KEY).unwrap(), OA_APP_ID)),
    );
    let query = Query::parse(case["request"]["query"].as_str().unwrap()).unwrap();
    assert!(matches!(
        with_key.open(&query, case["request"]["body"].as_str().unwrap()).unwrap_err(),
        OaError::Signature
    ));
}
