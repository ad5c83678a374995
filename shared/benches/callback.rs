//! The callback hot path over `fixtures/bench/corpus.jsonl` (1,000 WeCom text callbacks of
//! 320 B, 1 KB and 8 KB inner XML):
//!
//! - `callback/verify_decrypt/<size>`: take Encrypt from the outer XML, SHA-1 verify, base64
//!   decode, AES-256-CBC decrypt, check padding, frame and receive id;
//! - `callback/full/<size>`: that, then parse the message, build a passive text reply echoing
//!   Content, encrypt it with a fresh CSPRNG prefix, sign it and render the outer reply XML.
//!
//! Keys and ciphers are built once, as a warm Lambda keeps them. After criterion's runs, with
//! `--bench`, each message is also timed on its own and the median per size class and overall is
//! printed with messages/second on one core.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use serde::Deserialize;
use shared::channels::wecom::{TextReply, WecomCallbackMessage, WecomMessage};
use shared::protocol::crypto::{random_prefix, EncodingAesKey, MsgCrypt};

const CORPUS: &str = include_str!("../../fixtures/bench/corpus.jsonl");
const SIZES: [&str; 3] = ["320B", "1KB", "8KB"];

#[derive(Deserialize)]
struct Line {
    token: String,
    encoding_aes_key: String,
    receive_id: String,
    msg_signature: String,
    timestamp: String,
    nonce: String,
    body_xml: String,
    size_class: String,
}

struct Case {
    crypt: usize,
    line: Line,
}

struct Corpus {
    crypts: Vec<MsgCrypt>,
    cases: Vec<Case>,
}

fn load() -> Corpus {
    let mut crypts = Vec::new();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    let mut cases = Vec::new();
    for text in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
        let line: Line = serde_json::from_str(text).expect("corpus line");
        let key = (line.token.clone(), line.encoding_aes_key.clone(), line.receive_id.clone());
        let crypt = *index.entry(key).or_insert_with(|| {
            let aes = EncodingAesKey::parse(&line.encoding_aes_key).expect("corpus key");
            crypts.push(MsgCrypt::new(&line.token, &aes, &line.receive_id));
            crypts.len() - 1
        });
        cases.push(Case { crypt, line });
    }
    Corpus { crypts, cases }
}

/// Path (a): the decrypted message text.
fn verify_decrypt(crypt: &MsgCrypt, line: &Line) -> String {
    let encrypt =
        shared::protocol::xml::top_level_text(&line.body_xml, "Encrypt").expect("outer xml").expect("Encrypt");
    let proof = crypt.verify(&line.msg_signature, &line.timestamp, &line.nonce, encrypt.trim()).expect("signature");
    crypt.decrypt(proof).expect("decrypt")
}

/// Path (b): the encrypted, signed passive reply body.
fn full(crypt: &MsgCrypt, line: &Line) -> String {
    let plaintext = verify_decrypt(crypt, line);
    let message = WecomCallbackMessage::parse(&plaintext).expect("message");
    let WecomMessage::Text { content } = &message.body else { panic!("corpus holds text messages") };
    let reply = TextReply {
        to: &message.header.from,
        from: &message.header.to,
        create_time: message.header.create_time,
        content,
        agent_id: message.header.agent_id,
    }
    .render();
    crypt.encrypt_reply(&reply, random_prefix(), &line.timestamp, &line.nonce)
}

fn criterion_runs(c: &mut Criterion, corpus: &Corpus) {
    let mut group = c.benchmark_group("callback");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let cases: Vec<&Case> = corpus.cases.iter().filter(|c| c.line.size_class == size).collect();
        assert!(!cases.is_empty(), "no {size} messages in the corpus");
        let mut next = 0usize;
        group.bench_with_input(BenchmarkId::new("verify_decrypt", size), &cases, |b, cases| {
            b.iter(|| {
                let case = cases[next % cases.len()];
                next += 1;
                black_box(verify_decrypt(&corpus.crypts[case.crypt], &case.line))
            })
        });
        group.bench_with_input(BenchmarkId::new("full", size), &cases, |b, cases| {
            b.iter(|| {
                let case = cases[next % cases.len()];
                next += 1;
                black_box(full(&corpus.crypts[case.crypt], &case.line))
            })
        });
    }
    group.finish();
}

fn median(mut nanos: Vec<u64>) -> f64 {
    nanos.sort_unstable();
    let mid = nanos.len() / 2;
    if nanos.len() % 2 == 0 {
        (nanos[mid - 1] + nanos[mid]) as f64 / 2.0
    } else {
        nanos[mid] as f64
    }
}

/// Times every message on its own, `rounds` times, and prints the medians.
fn per_message_summary(corpus: &Corpus, rounds: usize) {
    println!("\nper-message medians over {} messages × {rounds} rounds (one core):", corpus.cases.len());
    println!("{:<8} {:>10} {:>12} {:>10} {:>12}", "size", "(a) µs", "(a) msgs/s", "(b) µs", "(b) msgs/s");
    let mut all = (Vec::new(), Vec::new());
    for size in SIZES.iter().copied().chain(["all"]) {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..rounds {
            for case in corpus.cases.iter().filter(|c| size == "all" || c.line.size_class == size) {
                let crypt = &corpus.crypts[case.crypt];
                let start = Instant::now();
                black_box(verify_decrypt(crypt, &case.line));
                a.push(start.elapsed().as_nanos() as u64);
                let start = Instant::now();
                black_box(full(crypt, &case.line));
                b.push(start.elapsed().as_nanos() as u64);
            }
        }
        let (ma, mb) = if size == "all" {
            (median(std::mem::take(&mut all.0)), median(std::mem::take(&mut all.1)))
        } else {
            all.0.extend(&a);
            all.1.extend(&b);
            (median(a), median(b))
        };
        println!("{size:<8} {:>10.2} {:>12.0} {:>10.2} {:>12.0}", ma / 1000.0, 1e9 / ma, mb / 1000.0, 1e9 / mb);
    }
}

fn main() {
    let corpus = load();
    let mut c = Criterion::default().configure_from_args();
    criterion_runs(&mut c, &corpus);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once without --bench: skip the long summary.
    if std::env::args().any(|arg| arg == "--bench") {
        per_message_summary(&corpus, 20);
    }
}
