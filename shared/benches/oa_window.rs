//! The passive-reply rate of the stretched window: for bot latencies of 0.5, 3, 6, 9, 13 and 20 s,
//! how often the user gets the bot's answer as a passive reply (and on which delivery), and how
//! often it goes by customer service instead. Timings are scaled to 1/10 (WeChat's 5 s wait is
//! 500 ms; hold_ms, answer_by_ms and the latencies alike), which keeps every ratio the same.
//!
//! `cargo bench -p shared --bench oa_window` runs 100 messages per latency; `cargo test` runs 3.

use std::time::Duration;

use shared::testing::oa_window::{run, Timings};

const LATENCIES_S: [f64; 6] = [0.5, 3.0, 6.0, 9.0, 13.0, 20.0];
const SCALE: f64 = 0.1;

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let runs = if full { 100 } else { 3 };
    println!("stretched window at 1/10 scale, {runs} messages per latency (real-time equivalents):");
    println!(
        "{:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>16}",
        "latency", "passive", "1st", "2nd", "3rd", "customer service"
    );
    for latency_s in LATENCIES_S {
        let latency = Duration::from_secs_f64(latency_s * SCALE);
        let tasks: Vec<_> = (0..runs)
            .map(|i| tokio::spawn(run(Timings::scaled(SCALE), latency, i % 2 == 0, 90_000_000 + i as u64)))
            .collect();
        let (mut on, mut cs, mut both, mut neither) = ([0usize; 3], 0usize, 0usize, 0usize);
        for task in tasks {
            let outcome = task.await.expect("simulation");
            let passive = outcome.passive_on();
            if let Some(delivery) = passive {
                on[delivery.min(2)] += 1;
            }
            match (passive.is_some(), outcome.customer_service.len()) {
                (true, 0) => {}
                (false, 1) => cs += 1,
                (true, _) => both += 1,
                (false, _) => neither += 1,
            }
        }
        let pct = |n: usize| format!("{:.0}%", 100.0 * n as f64 / runs as f64);
        println!(
            "{:>8.1}s  {:>9}  {:>9}  {:>9}  {:>9}  {:>16}",
            latency_s,
            pct(on.iter().sum()),
            pct(on[0]),
            pct(on[1]),
            pct(on[2]),
            pct(cs)
        );
        // Exactly one of the two, never both, never neither.
        assert_eq!(
            (both, neither),
            (0, 0),
            "latency {latency_s}s: {both} messages answered twice, {neither} not at all"
        );
    }
}
