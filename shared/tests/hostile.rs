//! Hostile input: thousands of mutated callbacks, bodies and queries. Nothing may panic, nothing
//! mutated may be accepted, and every refusal is a client error.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shared::adapters::memory::MemoryQueue;
use shared::channels::wecom::simulate::{sign_callback, text_message};
use shared::channels::wecom::WecomCallback;
use shared::channels::Config;
use shared::core::callback::CallbackRequest;
use shared::core::ports::Clock;
use shared::protocol::crypto::{EncodingAesKey, MsgCrypt};
use shared::protocol::query::Query;
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

const NOW: u64 = 1_767_225_600;

struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
}

fn crypt() -> MsgCrypt {
    MsgCrypt::new(WECOM_TOKEN, &EncodingAesKey::parse(WECOM_AES_KEY).unwrap(), WECOM_CORP_ID)
}

/// A seeded generator: failures reproduce.
fn rng() -> StdRng {
    StdRng::seed_from_u64(0x5758_4252_4944_4745)
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    match rng.random_range(0..5) {
        0 if !out.is_empty() => {
            let i = rng.random_range(0..out.len());
            out[i] ^= 1 << rng.random_range(0..8);
        }
        1 => out.truncate(rng.random_range(0..=out.len())),
        2 => {
            let i = rng.random_range(0..=out.len());
            let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            out.splice(i..i, junk);
        }
        3 if out.len() > 1 => {
            let i = rng.random_range(0..out.len() - 1);
            out.swap(i, i + 1);
        }
        _ => out.extend_from_slice(b"]]></xml><xml>&amp;&bogus;<!--"),
    }
    out
}

#[test]
fn a_mutated_ciphertext_never_passes_the_original_signature() {
    let c = crypt();
    let mut rng = rng();
    let genuine = c.encrypt(&text_message(WECOM_CORP_ID, 1, "u", "hi", 42, NOW), [5; 16]);
    let signature = c.signature("1", "n", &genuine);
    for _ in 0..5000 {
        let Ok(encrypt) = String::from_utf8(mutate(&mut rng, genuine.as_bytes())) else { continue };
        assert_eq!(c.verify(signature.as_str(), "1", "n", &encrypt).is_ok(), encrypt == genuine);
    }
}

#[test]
fn decrypting_mutated_ciphertexts_signed_anew_never_panics() {
    // WXBizMsgCrypt has no MAC: integrity is the signature's job, and CBC lets a re-signed,
    // bit-flipped ciphertext decrypt to altered text. What must hold is that every layer's check
    // runs without panicking and most damage is caught.
    let c = crypt();
    let mut rng = rng();
    let genuine = c.encrypt(&text_message(WECOM_CORP_ID, 1, "u", "你好 hostile ]]> input", 42, NOW), [5; 16]);
    let mut refused = 0;
    let mut total = 0;
    for _ in 0..5000 {
        let Ok(encrypt) = String::from_utf8(mutate(&mut rng, genuine.as_bytes())) else { continue };
        let proof = c.verify(c.signature("1", "n", &encrypt).as_str(), "1", "n", &encrypt).unwrap();
        total += 1;
        if c.decrypt(proof).is_err() {
            refused += 1;
        }
    }
    assert!(refused * 10 > total * 8, "only {refused} of {total} mutations were caught");
}

#[test]
fn random_documents_never_panic_the_xml_parser() {
    let mut rng = rng();
    let pieces = [
        "<xml>",
        "</xml>",
        "<A>",
        "</A>",
        "<B/>",
        "<![CDATA[",
        "]]>",
        "&amp;",
        "&#x1F680;",
        "&#xD800;",
        "&x;",
        "<!DOCTYPE x>",
        "<?pi?>",
        "<!--c-->",
        "text",
        "你好",
        "<",
        ">",
        "\"",
        "'",
        " ",
        "\n",
    ];
    for _ in 0..20_000 {
        let doc: String = (0..rng.random_range(0..24)).map(|_| pieces[rng.random_range(0..pieces.len())]).collect();
        let _ = shared::protocol::xml::parse(&doc);
        let _ = shared::protocol::xml::top_level_text(&doc, "A");
    }
}

#[tokio::test]
async fn mutated_callbacks_are_refused_with_4xx_and_never_published() {
    let config = Config::parse(&format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1, "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}"}}]}}"#
    ))
    .unwrap();
    let (queue, mut rx) = MemoryQueue::fifo();
    let service = WecomCallback::new(&config.wecom, config.replay_window_secs, Arc::new(queue), Arc::new(Fixed));
    let genuine =
        sign_callback(&crypt(), &text_message(WECOM_CORP_ID, 1, "u", "hi", 7, NOW), NOW, "1320562132", [8; 16]);
    let genuine_query = Query::parse(&genuine.query).unwrap();
    let genuine_encrypt =
        shared::protocol::xml::top_level_text(&genuine.body, "Encrypt").unwrap().unwrap().into_owned();
    let mut rng = rng();
    for round in 0..3000 {
        let (query, body) = if round % 2 == 0 {
            (
                String::from_utf8_lossy(&mutate(&mut rng, genuine.query.as_bytes())).into_owned(),
                genuine.body.clone().into_bytes(),
            )
        } else {
            (genuine.query.clone(), mutate(&mut rng, genuine.body.as_bytes()))
        };
        let response =
            service.handle(CallbackRequest { method: "POST", app: "hr", raw_query: &query, body: &body }).await;
        if response.status == 200 {
            // Only what the signature does not cover (e.g. the outer ToUserName) may have changed.
            let q = Query::parse(&query).unwrap();
            let signed_parts = ["msg_signature", "timestamp", "nonce"].map(|name| q.get(name).map(str::to_owned));
            assert_eq!(
                signed_parts,
                ["msg_signature", "timestamp", "nonce"].map(|name| genuine_query.get(name).map(str::to_owned))
            );
            let encrypt =
                shared::protocol::xml::top_level_text(std::str::from_utf8(&body).unwrap(), "Encrypt").unwrap().unwrap();
            assert_eq!(encrypt.trim(), genuine_encrypt);
        } else {
            assert!((400..500).contains(&response.status), "{} for {query}", response.status);
        }
    }
    // At most the genuine callback itself reached the queue, once.
    let mut published = 0;
    while rx.try_recv().is_ok() {
        published += 1;
    }
    assert!(published <= 1);
}
