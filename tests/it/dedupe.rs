//! The DynamoDB dedupe adapter against the emulator: claim, complete, release, lease takeover.

use std::time::{Duration, SystemTime};

use shared::adapters::aws::DynamoDedupe;
use shared::core::ports::{Claim, Dedupe, DEDUPE_TTL};

use crate::support::Stack;

const LEASE: Duration = Duration::from_secs(6);

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + seconds)
}

fn token(claim: Claim) -> String {
    match claim {
        Claim::Claimed { token, .. } => token,
        other => panic!("expected a claim, got {other:?}"),
    }
}

#[tokio::test]
async fn a_completed_marker_answers_published_until_it_expires() {
    let stack = Stack::new().await;
    let dedupe = DynamoDedupe::new(&shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table));
    let first = token(dedupe.claim("wecom:hr:1", at(0), LEASE).await.unwrap());
    let until_ms = shared::core::ports::unix_millis(at(0) + LEASE);
    assert_eq!(dedupe.claim("wecom:hr:1", at(1), LEASE).await.unwrap(), Claim::InFlight { until_ms });
    dedupe.complete("wecom:hr:1", &first, at(1)).await.unwrap();
    assert_eq!(dedupe.claim("wecom:hr:1", at(2), LEASE).await.unwrap(), Claim::Published);
    assert_eq!(dedupe.claim("wecom:hr:1", at(3600), LEASE).await.unwrap(), Claim::Published);
    // DynamoDB deletes expired items late: an expired marker must not count.
    let after_ttl = at(1 + DEDUPE_TTL.as_secs() + 1);
    assert!(matches!(dedupe.claim("wecom:hr:1", after_ttl, LEASE).await.unwrap(), Claim::Claimed { .. }));
}

#[tokio::test]
async fn a_released_claim_can_be_taken_at_once() {
    let stack = Stack::new().await;
    let dedupe = DynamoDedupe::new(&shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table));
    let first = token(dedupe.claim("k", at(0), LEASE).await.unwrap());
    dedupe.release("k", &first).await.unwrap();
    // A released claim is not a takeover: nothing was sent under it.
    assert!(matches!(dedupe.claim("k", at(0), LEASE).await.unwrap(), Claim::Claimed { taken_over: false, .. }));
}

#[tokio::test]
async fn a_dead_holders_claim_is_taken_over_after_its_lease_and_its_token_no_longer_counts() {
    let stack = Stack::new().await;
    let dedupe = DynamoDedupe::new(&shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table));
    let dead = token(dedupe.claim("k", at(0), LEASE).await.unwrap());
    // The retry learns when the dead holder's lease ends, so it can come back just after it.
    let until_ms = shared::core::ports::unix_millis(at(0) + LEASE);
    assert_eq!(dedupe.claim("k", at(5), LEASE).await.unwrap(), Claim::InFlight { until_ms });
    // The new holder learns that the outcome of the first is unknown.
    let Claim::Claimed { token: live, taken_over: true } = dedupe.claim("k", at(7), LEASE).await.unwrap() else {
        panic!("expected a takeover")
    };
    // The late first holder can neither release nor complete the new claim.
    dedupe.release("k", &dead).await.unwrap();
    dedupe.complete("k", &dead, at(8)).await.unwrap();
    let until_ms = shared::core::ports::unix_millis(at(7) + LEASE);
    assert_eq!(dedupe.claim("k", at(8), LEASE).await.unwrap(), Claim::InFlight { until_ms });
    dedupe.complete("k", &live, at(8)).await.unwrap();
    assert_eq!(dedupe.claim("k", at(9), LEASE).await.unwrap(), Claim::Published);
}

#[tokio::test]
async fn concurrent_claims_on_one_key_have_exactly_one_winner() {
    let stack = Stack::new().await;
    let dedupe =
        std::sync::Arc::new(DynamoDedupe::new(&shared::adapters::aws::Table::from_sdk(&stack.sdk, &stack.names.table)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let dedupe = dedupe.clone();
        tasks.push(tokio::spawn(async move { dedupe.claim("race", at(0), LEASE).await.unwrap() }));
    }
    let mut winners = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Claim::Claimed { .. }) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}
