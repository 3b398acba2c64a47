//! The upstream budget holds under oversubscription, and a 429 from Clerk
//! (someone else spending the key) pauses all upstream traffic.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clerk_broker::{
    admission::Rate,
    pb::{AcquirePermitRequest, GetUserRequest},
};

use crate::harness::{Harness, Options, with_deadline};

fn rate(limit: u32, window_ms: u64) -> Rate {
    Rate {
        limit,
        window: Duration::from_millis(window_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_oversubscribed_causes_no_429() {
    let limit = rate(20, 1_000);
    let harness = Arc::new(
        Harness::start(Options {
            rate: limit,
            margin: Duration::from_millis(30),
            fake_limit: Some(limit),
            ..Options::default()
        })
        .await,
    );
    let permits = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let run_for = Duration::from_secs(3);
    let mut callers = Vec::new();
    // 50 callers, each asking several times per second: about 10x the budget.
    for caller in 0..50usize {
        let harness = harness.clone();
        let permits = permits.clone();
        callers.push(tokio::spawn(async move {
            let mut users = harness.users().await;
            let mut quota = harness.quota().await;
            let mut round = 0;
            while start.elapsed() < run_for {
                round += 1;
                if caller % 5 == 0 {
                    let request = AcquirePermitRequest {
                        max_wait: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 300_000_000,
                        }),
                        ..Default::default()
                    };
                    if quota
                        .acquire_permit(request)
                        .await
                        .unwrap()
                        .into_inner()
                        .granted
                    {
                        permits.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let id = harness.ids[(caller * 13 + round) % harness.ids.len()].clone();
                    let request =
                        with_deadline(GetUserRequest { user_id: id }, Duration::from_millis(400));
                    let _ = users.get_user(request).await;
                }
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let elapsed = start.elapsed();
    let stats = harness.fake.stats();
    let granted = permits.load(Ordering::Relaxed);
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert!(stats.max_in_window <= 20, "{stats:?}");
    // Permits and the broker's own requests share one budget.
    let windows = elapsed.as_secs_f64() / 1.03;
    let ceiling = (20.0 * (windows.ceil() + 1.0)) as u64;
    assert!(
        stats.requests + granted <= ceiling,
        "{} requests + {granted} permits in {elapsed:?}",
        stats.requests
    );
    assert!(
        stats.requests + granted >= 50,
        "the budget was used: {granted} permits, {stats:?}"
    );
}

#[tokio::test]
async fn a_429_pauses_all_upstream_traffic_until_retry_after() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    harness.fake.block_for(Duration::from_secs(2));
    harness.fake.reset_stats();
    let start = Instant::now();
    let mut calls = Vec::new();
    for id in harness.ids[..5].iter().cloned() {
        let mut users = users.clone();
        calls.push(tokio::spawn(async move {
            users
                .get_user(with_deadline(
                    GetUserRequest { user_id: id },
                    Duration::from_secs(8),
                ))
                .await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        call.await.unwrap().expect("served once the block is over");
    }
    let elapsed = start.elapsed();
    let stats = harness.fake.stats();
    assert!(elapsed >= Duration::from_millis(1_900), "{elapsed:?}");
    assert!(
        stats.rate_limited <= 2,
        "the broker stopped after the first 429s: {stats:?}"
    );
    // And it keeps serving.
    let id = harness.ids[9].clone();
    users
        .get_user(GetUserRequest { user_id: id })
        .await
        .unwrap();
}
