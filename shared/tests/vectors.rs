//! Every case of `fixtures/vectors/crypto.json` and every WeCom sample of `messages.json`.

use serde_json::Value;
use shared::channels::wecom::message::{MsgId, WecomCallbackMessage, WecomEvent, WecomMessage};
use shared::channels::wecom::TextReply;
use shared::core::envelope::Kind;
use shared::protocol::crypto::{plain_signature, CryptoError, EncodingAesKey, MsgCrypt};
use shared::protocol::xml;

const CRYPTO: &str = include_str!("../../fixtures/vectors/crypto.json");
const MESSAGES: &str = include_str!("../../fixtures/vectors/messages.json");
const INBOUND_SCHEMA: &str = include_str!("../../schemas/inbound.v1.json");

fn cases() -> Vec<Value> {
    let doc: Value = serde_json::from_str(CRYPTO).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn s<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field].as_str().unwrap_or_else(|| panic!("{}: no string {field}", case["id"]))
}

fn random(case: &Value) -> [u8; 16] {
    let hex = s(case, "random_hex");
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn crypt(case: &Value) -> MsgCrypt {
    let key = EncodingAesKey::parse(s(case, "encoding_aes_key")).unwrap();
    MsgCrypt::new(s(case, "token"), &key, s(case, "receive_id"))
}

fn error_kind(err: CryptoError) -> &'static str {
    err.kind()
}

#[test]
fn every_positive_case_decrypts_and_re_encrypts_byte_for_byte() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c["expected"]["ok"] == true && c.get("encrypt").is_some()) {
        let id = s(case, "id");
        let c = crypt(case);
        let (ts, nonce, encrypt) = (s(case, "timestamp"), s(case, "nonce"), s(case, "encrypt"));
        assert_eq!(c.signature(ts, nonce, encrypt).as_str(), s(case, "msg_signature"), "{id}: signature");
        let proof = c.verify(s(case, "msg_signature"), ts, nonce, encrypt).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(c.decrypt(proof).unwrap_or_else(|e| panic!("{id}: {e}")), s(case, "plaintext"), "{id}: plaintext");
        assert_eq!(c.encrypt(s(case, "plaintext"), random(case)), encrypt, "{id}: re-encryption");
        checked += 1;
    }
    assert_eq!(checked, 18, "all positive ciphertext cases");
}

#[test]
fn encrypted_xml_replies_match_the_reference_byte_for_byte() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c["kind"] == "wecom.encrypt_reply" || c["kind"] == "oa.encrypt_reply") {
        let reply =
            crypt(case).encrypt_reply(s(case, "plaintext"), random(case), s(case, "timestamp"), s(case, "nonce"));
        assert_eq!(reply, case["expected"]["reply_body"].as_str().unwrap(), "{}", case["id"]);
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn ai_bot_json_reply_carries_our_ciphertext_and_signature() {
    let case = cases().into_iter().find(|c| c["kind"] == "aibot.encrypt_reply").unwrap();
    let body: Value = serde_json::from_str(case["expected"]["reply_body"].as_str().unwrap()).unwrap();
    let c = crypt(&case);
    let encrypt = c.encrypt(s(&case, "plaintext"), random(&case));
    assert_eq!(body["encrypt"], encrypt.as_str());
    assert_eq!(body["msgsignature"], c.signature(s(&case, "timestamp"), s(&case, "nonce"), &encrypt).as_str());
}

#[test]
fn plain_signatures_match_and_a_wrong_one_does_not() {
    for case in cases().iter().filter(|c| c.get("signature").is_some()) {
        let computed = plain_signature(s(case, "token"), s(case, "timestamp"), s(case, "nonce"));
        let ok = case["expected"]["ok"] == true;
        assert_eq!(computed.matches(s(case, "signature")), ok, "{}", case["id"]);
        if !ok {
            assert_eq!(case["expected"]["error"], "signature_mismatch");
        }
    }
}

#[test]
fn every_negative_case_fails_with_its_error_kind() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c["expected"]["ok"] == false && c.get("encrypt").is_some()) {
        let id = s(case, "id");
        let c = crypt(case);
        let result = c
            .verify(s(case, "msg_signature"), s(case, "timestamp"), s(case, "nonce"), s(case, "encrypt"))
            .and_then(|proof| c.decrypt(proof));
        let err = result.expect_err(id);
        assert_eq!(error_kind(err), s(&case["expected"], "error"), "{id}");
        checked += 1;
    }
    assert_eq!(checked, 13, "all negative ciphertext cases");
}

#[test]
fn a_valid_message_for_another_receive_id_is_refused() {
    let case = cases().into_iter().find(|c| c["id"] == "wecom_callback_text").unwrap();
    let key = EncodingAesKey::parse(s(&case, "encoding_aes_key")).unwrap();
    let other = MsgCrypt::new(s(&case, "token"), &key, "wwOtherCorp");
    let proof =
        other.verify(s(&case, "msg_signature"), s(&case, "timestamp"), s(&case, "nonce"), s(&case, "encrypt")).unwrap();
    assert_eq!(other.decrypt(proof).unwrap_err(), CryptoError::ReceiveIdMismatch);
}

#[test]
fn keys_with_and_without_trailing_bits_are_both_exercised() {
    let flags: Vec<bool> =
        cases().iter().filter_map(|c| c["layout"]["encoding_aes_key_canonical_base64"].as_bool()).collect();
    assert!(flags.contains(&true) && flags.contains(&false), "{flags:?}");
}

fn wecom_samples() -> Vec<Value> {
    let doc: Value = serde_json::from_str(MESSAGES).unwrap();
    doc["messages"].as_array().unwrap().iter().filter(|m| m["channel"] == "wecom").cloned().collect()
}

fn field<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["fields"][name].as_str().unwrap_or_else(|| panic!("{}: no field {name}", sample["id"]))
}

#[test]
fn every_wecom_sample_parses_into_its_typed_variant() {
    let samples = wecom_samples();
    assert_eq!(samples.len(), 20);
    for sample in &samples {
        let id = s(sample, "id");
        let m = WecomCallbackMessage::parse(s(sample, "raw")).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(m.header.to, field(sample, "ToUserName"), "{id}");
        assert_eq!(m.header.from, field(sample, "FromUserName"), "{id}");
        assert_eq!(m.header.create_time.to_string(), field(sample, "CreateTime"), "{id}");
        assert_eq!(m.header.msg_type, field(sample, "MsgType"), "{id}");
        assert_eq!(m.header.agent_id.map(|a| a.to_string()).as_deref(), sample["fields"]["AgentID"].as_str(), "{id}");
        assert_eq!(
            m.header.msg_id.map(|MsgId(n)| n.to_string()).as_deref(),
            sample["fields"]["MsgId"].as_str(),
            "{id}"
        );
        // Every listed field survives, with the file's shape (objects, lists, empty strings).
        assert_eq!(m.fields.to_json(), sample["fields"], "{id}: raw fields");

        let opt = |name: &str| sample["fields"][name].as_str().map(str::to_owned);
        match &m.body {
            WecomMessage::Text { content } => assert_eq!(content, field(sample, "Content")),
            WecomMessage::Image { pic_url, media_id } => {
                assert_eq!(media_id, field(sample, "MediaId"));
                assert_eq!(pic_url, &opt("PicUrl"));
            }
            WecomMessage::Voice { media_id, format } => {
                assert_eq!(media_id, field(sample, "MediaId"));
                assert_eq!(format, &opt("Format"));
            }
            WecomMessage::Video { media_id, thumb_media_id } => {
                assert_eq!(media_id, field(sample, "MediaId"));
                assert_eq!(thumb_media_id, &opt("ThumbMediaId"));
            }
            WecomMessage::Location { latitude, longitude, scale, label } => {
                assert_eq!(latitude.to_string(), field(sample, "Location_X"));
                assert_eq!(longitude.to_string(), field(sample, "Location_Y"));
                assert_eq!(scale.map(|s| s.to_string()), opt("Scale"));
                assert_eq!(label, &opt("Label"));
            }
            WecomMessage::Link { title, description, url, pic_url } => {
                assert_eq!(url, field(sample, "Url"));
                assert_eq!((title, description, pic_url), (&opt("Title"), &opt("Description"), &opt("PicUrl")));
            }
            WecomMessage::Event(event) => {
                assert_eq!(sample["msg_type"], "event", "{id}");
                assert_eq!(event.name(&m.fields), s(sample, "event"), "{id}");
                check_event(sample, event);
            }
            other => panic!("{id}: unexpected {other:?}"),
        }
    }
}

fn check_event(sample: &Value, event: &WecomEvent) {
    let f = |name: &str| sample["fields"][name].as_str().map(str::to_owned);
    let id = sample["id"].as_str().unwrap();
    match event {
        WecomEvent::Subscribe => assert_eq!(f("Event").unwrap(), "subscribe"),
        WecomEvent::EnterAgent { key } => assert_eq!(Some(key.clone()), f("EventKey")),
        WecomEvent::Location { latitude, longitude, precision } => {
            assert_eq!(latitude.map(|v| v.to_string()), f("Latitude"));
            assert_eq!(longitude.map(|v| v.to_string()), f("Longitude"));
            assert_eq!(*precision, f("Precision").map(|p| p.parse::<f64>().unwrap()));
        }
        WecomEvent::Click { key } => assert_eq!(Some(key.clone()), f("EventKey")),
        WecomEvent::View { url } => assert_eq!(Some(url.clone()), f("EventKey")),
        WecomEvent::ChangeContact { change_type, user_id, party_id } => {
            assert_eq!(Some(change_type.clone()), f("ChangeType"));
            assert_eq!(user_id, &f("UserID"));
            assert_eq!(party_id, &f("Id"));
        }
        WecomEvent::ChangeExternalContact { change_type, user_id, external_user_id, welcome_code } => {
            assert_eq!(Some(change_type.clone()), f("ChangeType"));
            assert_eq!(
                (user_id, external_user_id, welcome_code),
                (&f("UserID"), &f("ExternalUserID"), &f("WelcomeCode"))
            );
        }
        WecomEvent::ChangeExternalChat { change_type, chat_id, update_detail, members } => {
            assert_eq!(Some(change_type.clone()), f("ChangeType"));
            assert_eq!(Some(chat_id.clone()), f("ChatId"));
            assert_eq!(update_detail, &f("UpdateDetail"));
            let listed: Vec<String> = sample["fields"]["MemChangeList"]["Item"]
                .as_array()
                .map(|items| items.iter().map(|i| i.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            assert_eq!(members, &listed, "{id}");
        }
        WecomEvent::TemplateCard { event_key, task_id, card_type, response_code, selected, .. } => {
            assert_eq!((Some(event_key.clone()), Some(task_id.clone())), (f("EventKey"), f("TaskId")));
            assert_eq!((card_type, response_code), (&f("CardType"), &f("ResponseCode")));
            let item = &sample["fields"]["SelectedItems"]["SelectedItem"];
            assert_eq!(selected.len(), 1);
            assert_eq!(selected[0].question_key, item["QuestionKey"].as_str().unwrap());
            let options: Vec<&str> =
                item["OptionIds"]["OptionId"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
            assert_eq!(selected[0].option_ids, options);
        }
        other => panic!("{id}: unexpected event {other:?}"),
    }
}

#[test]
fn inbound_ids_extend_the_documented_dedupe_keys() {
    for sample in wecom_samples() {
        let m = WecomCallbackMessage::parse(s(&sample, "raw")).unwrap();
        let inbound = m.to_inbound("hr", 1_767_225_600);
        let documented = s(&sample, "dedupe_key");
        let expected_prefix = if let Some(msg_id) = documented.strip_prefix("msgid:") {
            format!("wecom:hr:{msg_id}")
        } else {
            let (from, time) = documented.strip_prefix("from_time:").unwrap().split_once('|').unwrap();
            format!("wecom:hr:{from}:{time}:")
        };
        assert!(inbound.id.starts_with(&expected_prefix), "{} does not extend {documented}", inbound.id);
        assert_eq!(inbound.id == expected_prefix, documented.starts_with("msgid:"), "{}", inbound.id);
    }
}

#[test]
fn every_inbound_built_from_the_samples_validates_against_the_schema() {
    let schema: Value = serde_json::from_str(INBOUND_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for sample in wecom_samples() {
        let inbound = WecomCallbackMessage::parse(s(&sample, "raw")).unwrap().to_inbound("hr", 1_767_225_600);
        kinds.insert(format!("{:?}", inbound.kind));
        let json: Value = serde_json::from_str(&inbound.to_json()).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", sample["id"]);
        // The envelope reads back into the same value.
        let back: shared::core::envelope::Inbound = serde_json::from_value(json).unwrap();
        assert_eq!(back, inbound);
    }
    assert!(kinds.contains("Event") && kinds.contains("Text") && kinds.contains("Location"));
}

#[test]
fn the_schema_rejects_envelopes_that_break_the_contract() {
    let schema: Value = serde_json::from_str(INBOUND_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let sample = &wecom_samples()[0];
    let good: Value =
        serde_json::from_str(&WecomCallbackMessage::parse(s(sample, "raw")).unwrap().to_inbound("hr", 1).to_json())
            .unwrap();
    assert!(validator.is_valid(&good));
    let mut no_text = good.clone();
    no_text.as_object_mut().unwrap().remove("text");
    let mut wrong_version = good.clone();
    wrong_version["v"] = 2.into();
    let mut bad_kind = good.clone();
    bad_kind["kind"] = "sticker".into();
    let mut float_time = good;
    float_time["sent_at"] = 1.5.into();
    for bad in [no_text, wrong_version, bad_kind, float_time] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
}

#[test]
fn text_kind_carries_text_and_events_carry_event() {
    for sample in wecom_samples() {
        let inbound = WecomCallbackMessage::parse(s(&sample, "raw")).unwrap().to_inbound("hr", 0);
        match inbound.kind {
            Kind::Text => assert_eq!(inbound.text.as_deref(), sample["fields"]["Content"].as_str()),
            Kind::Event => assert_eq!(inbound.event.unwrap().name, s(&sample, "event")),
            _ => {}
        }
    }
}

#[test]
fn text_reply_renders_the_reference_fields() {
    let doc: Value = serde_json::from_str(MESSAGES).unwrap();
    let mut checked = 0;
    for reply in doc["replies"].as_array().unwrap().iter().filter(|r| r["msg_type"] == "text") {
        let f = &reply["fields"];
        let get = |name: &str| f[name].as_str().unwrap();
        let rendered = TextReply {
            to: get("ToUserName"),
            from: get("FromUserName"),
            create_time: get("CreateTime").parse().unwrap(),
            content: get("Content"),
            agent_id: f["AgentID"].as_str().map(|a| a.parse().unwrap()),
        }
        .render();
        let ours = xml::parse(&rendered).unwrap().to_json();
        let reference = xml::parse(reply["xml"].as_str().unwrap()).unwrap().to_json();
        assert_eq!(ours, reference, "{}", reply["id"]);
        assert_eq!(ours, *f, "{}", reply["id"]);
        checked += 1;
    }
    assert_eq!(checked, 2, "the WeCom and the Official Account text reply");
}

#[test]
fn text_reply_keeps_cdata_terminators_and_markup_in_content() {
    let rendered =
        TextReply { to: "u", from: "ww1", create_time: 1, content: "a]]>b <i>&amp;", agent_id: None }.render();
    assert_eq!(xml::parse(&rendered).unwrap().text("Content"), Some("a]]>b <i>&amp;"));
}
