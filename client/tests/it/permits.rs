//! `acquire_permit`: granted at once, after waiting in the fair queue, or
//! refused with the broker's `retry_after` once the wait is over.

use std::time::{Duration, Instant};

use clerk_broker_client::{Client, Code, Error, PermitRequest};

use crate::harness::{Options, TOKEN, start, token_policy};

#[tokio::test]
async fn a_permit_on_the_upstream_budget_is_granted_at_once() {
    let (_upstream, broker) = start(Options::default()).await;
    let client = broker.client().await;
    let grant = client.acquire_permit(PermitRequest::new(2)).await.unwrap();
    assert_eq!(grant.budget, "clerk");
    assert_eq!(grant.limit, 1_000);
    assert_eq!(grant.window, Duration::from_secs(1));
    let unknown = client
        .acquire_permit(PermitRequest::new(1).budget("no-such-budget"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(Code::NotFound), "{unknown}");
    broker.stop().await;
}

#[tokio::test]
async fn a_full_budget_refuses_without_wait_and_grants_within_one() {
    let options = Options {
        policy: token_policy(),
        ..Options::default()
    };
    let (_upstream, broker) = start(options).await;
    let client = Client::builder(broker.url())
        .token(TOKEN)
        .connect()
        .await
        .unwrap();
    // "writes" allows 2 per second: take both.
    let writes = || PermitRequest::new(1).budget("writes");
    client.acquire_permit(writes()).await.unwrap();
    client.acquire_permit(writes()).await.unwrap();

    let refused = client.acquire_permit(writes()).await.unwrap_err();
    let Error::PermitRefused {
        budget,
        retry_after,
    } = &refused
    else {
        panic!("expected a refusal, got {refused}");
    };
    assert_eq!(budget, "writes");
    assert!(
        *retry_after > Duration::ZERO && *retry_after <= Duration::from_millis(1_100),
        "{retry_after:?}"
    );

    let started = Instant::now();
    let grant = client
        .acquire_permit(writes().wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(grant.waited >= Duration::from_millis(200), "{grant:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{grant:?}");

    // Both slots are now fresh again once the second one is taken: the wait
    // is a ceiling, refused when it cannot be met.
    client
        .acquire_permit(writes().wait(Duration::from_secs(5)))
        .await
        .unwrap();
    let started = Instant::now();
    let short = client
        .acquire_permit(writes().wait(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert!(matches!(short, Error::PermitRefused { .. }), "{short}");
    assert!(started.elapsed() < Duration::from_millis(500));
    broker.stop().await;
}
