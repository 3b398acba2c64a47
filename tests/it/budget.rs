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

use tonic_types::StatusExt;

use crate::{
    callers::{policy, saturate_permits},
    harness::{Harness, Options, with_deadline},
};

fn rate(limit: u32, window_ms: u64) -> Rate {
    Rate {
        limit,
        window: Duration::from_millis(window_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_oversubscribed_causes_no_429() {
    let limit = rate(40, 1_000);
    let harness = Arc::new(
        Harness::start(Options {
            rate: limit,
            margin: Duration::from_millis(10),
            fake_limit: Some(limit),
            ..Options::default()
        })
        .await,
    );
    let permits = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let run_for = Duration::from_secs(5);
    let mut callers = Vec::new();
    // 50 callers, each asking several times per second: about 10x the budget.
    for caller in 0..50usize {
        let harness = harness.clone();
        let permits = permits.clone();
        let attempts = attempts.clone();
        callers.push(tokio::spawn(async move {
            let mut users = harness.users().await;
            let mut quota = harness.quota().await;
            let mut round = 0;
            while start.elapsed() < run_for {
                round += 1;
                attempts.fetch_add(1, Ordering::Relaxed);
                if caller % 5 == 0 {
                    let request = AcquirePermitRequest {
                        max_wait: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 300_000_000,
                        }),
                        ..Default::default()
                    };
                    let reply = quota.acquire_permit(request).await.unwrap().into_inner();
                    if reply.granted {
                        permits.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(retry) = reply.retry_after {
                        // A polite caller waits as told (here at most 50 ms).
                        let retry = Duration::new(retry.seconds as u64, retry.nanos as u32);
                        tokio::time::sleep(retry.min(Duration::from_millis(50))).await;
                    }
                } else {
                    let id = harness.ids[(caller * 13 + round) % harness.ids.len()].clone();
                    let request =
                        with_deadline(GetUserRequest { user_id: id }, Duration::from_millis(400));
                    if let Err(status) = users.get_user(request).await {
                        let retry = status
                            .get_details_retry_info()
                            .and_then(|info| info.retry_delay);
                        let retry = retry.unwrap_or(Duration::from_millis(10));
                        tokio::time::sleep(retry.min(Duration::from_millis(50))).await;
                    }
                }
            }
        }));
    }
    // Measure the steady state: from 1 s (clients connected) to 5 s.
    tokio::time::sleep_until((start + Duration::from_secs(1)).into()).await;
    let (requests_before, permits_before, attempts_before) = (
        harness.fake.stats().requests,
        permits.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed),
    );
    tokio::time::sleep_until((start + run_for).into()).await;
    let (requests_after, permits_after, attempts_after) = (
        harness.fake.stats().requests,
        permits.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed),
    );
    let elapsed = start.elapsed();
    for caller in callers {
        caller.await.unwrap();
    }
    let stats = harness.fake.stats();
    let granted = permits_after - permits_before;
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert!(stats.max_in_window <= 40, "{stats:?}");
    // Permits and the broker's own requests share one budget, and together
    // use nearly all of it: 40 per second over the run.
    let used = ((requests_after - requests_before) + granted) as f64;
    let capacity = 40.0 * 4.0;
    let demand = (attempts_after - attempts_before) as f64;
    println!(
        "budget used: {used} of {capacity} in {elapsed:?} ({:.1}%), demand {:.1}x",
        100.0 * used / capacity,
        demand / capacity
    );
    // 50 callers each retrying within 50 ms want over 10x the budget; how
    // many calls a loaded 2-core machine actually issues varies (a busy
    // neighbour has cut it to under 5x), and 3x is still oversubscribed.
    assert!(
        demand >= 3.0 * capacity,
        "only {demand} calls: not oversubscribed"
    );
    assert!(used <= capacity + 40.0, "{used} > {capacity}: {stats:?}");
    assert!(stats.requests + permits_after <= 40 * 6, "{stats:?}");
    // Exactly >= 95% is proven in simulated time (admission unit tests);
    // over real time on a shared 2-core machine, allow for scheduling noise.
    assert!(
        used >= 0.85 * capacity,
        "only {used} of {capacity}: {stats:?}"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturating_callers_share_by_weight() {
    let harness = Harness::start(Options {
        policy: policy(
            "40/1s",
            &[
                ("heavy", "heavy-token", 3, &["writes"]),
                ("light", "light-token", 1, &["writes"]),
            ],
        ),
        ..Options::default()
    })
    .await;
    let granted = saturate_permits(
        &harness,
        &["heavy-token", "light-token"],
        Duration::from_secs(6),
    )
    .await;
    let (heavy, light) = (granted[0], granted[1]);
    let share = f64::from(heavy) / f64::from(heavy + light);
    println!("heavy {heavy}, light {light}: heavy share {share:.3}");
    assert!(
        (0.70..=0.80).contains(&share),
        "heavy {heavy}, light {light}"
    );
    // 40 per second for 6 seconds.
    assert!(heavy + light >= 200, "heavy {heavy}, light {light}");
}

#[tokio::test]
async fn refusals_come_before_the_deadline_with_retry_info() {
    let harness = Harness::start(Options {
        rate: rate(2, 10_000),
        burst: Some(2),
        ..Options::default()
    })
    .await;
    let mut quota = harness.quota().await;
    let mut users = harness.users().await;
    let too_much = AcquirePermitRequest {
        cost: 3,
        ..Default::default()
    };
    let status = quota.acquire_permit(too_much).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "cost above the limit"
    );
    let spend_all = AcquirePermitRequest {
        cost: 2,
        ..Default::default()
    };
    assert!(
        quota
            .acquire_permit(spend_all)
            .await
            .unwrap()
            .into_inner()
            .granted
    );

    let started = Instant::now();
    let refused = quota
        .acquire_permit(AcquirePermitRequest {
            max_wait: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!refused.granted);
    let retry = refused.retry_after.unwrap();
    assert!(retry.seconds >= 8, "{retry:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );

    let started = Instant::now();
    let request = with_deadline(
        GetUserRequest {
            user_id: harness.ids[0].clone(),
        },
        Duration::from_secs(2),
    );
    let status = users.get_user(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let delay = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(delay >= Duration::from_secs(7), "{delay:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(harness.fake.stats().requests, 0);
}
