//! Lookups that spend almost no budget: one flight per id, batches of 100
//! ids, a cache that answers the second time, stale answers when Clerk fails,
//! and invalidation through the admin API.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clerk_broker::{
    admission::Rate,
    config::LookupConfig,
    fake::Faults,
    pb::{
        AcquirePermitRequest, GetUserRequest, InvalidateUserRequest, User,
        admin_service_client::AdminServiceClient, user_service_client::UserServiceClient,
    },
};
use tokio::task::JoinSet;
use tonic::{Code, Status, metadata::MetadataMap, transport::Channel};

use crate::harness::{Harness, Options, test_lookup, with_deadline};

/// The upstream timeout of the tests that count requests: 1,000 calls in a
/// debug build on a loaded machine can delay the fake's answers by seconds,
/// and a timed-out request is retried (and counted).
const LOADED_MACHINE_TIMEOUT: Duration = Duration::from_secs(15);

/// The `x-cache` header of a response or status ("" when the client gave up
/// before the broker answered: then there is no response at all).
fn x_cache(metadata: &MetadataMap) -> String {
    metadata
        .get("x-cache")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// One GetUser, returning the user or the status, and `x-cache` either way.
async fn get(
    client: &mut UserServiceClient<Channel>,
    id: &str,
    timeout: Duration,
) -> (Result<User, Status>, String) {
    let request = with_deadline(GetUserRequest { user_id: id.into() }, timeout);
    match client.get_user(request).await {
        Ok(response) => {
            let cache = x_cache(response.metadata());
            (Ok(response.into_inner()), cache)
        }
        Err(status) => {
            let cache = x_cache(status.metadata());
            (Err(status), cache)
        }
    }
}

/// GetUser for every id at once, spread over a few connections; the answers
/// come back in the order of `ids`.
async fn get_all(harness: &Harness, ids: &[String]) -> Vec<(Result<User, Status>, String)> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(harness.users().await);
    }
    let mut calls = JoinSet::new();
    for (index, id) in ids.iter().cloned().enumerate() {
        let mut client = clients[index % clients.len()].clone();
        calls.spawn(async move { (index, get(&mut client, &id, Duration::from_secs(60)).await) });
    }
    let mut answers: Vec<_> = calls.join_all().await;
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_for_one_id_make_one_request() {
    let harness = Harness::start(Options {
        upstream_timeout: LOADED_MACHINE_TIMEOUT,
        ..Options::default()
    })
    .await;
    // A slow Clerk keeps the flight in the air while the callers pile up.
    harness.fake.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    harness.fake.reset_stats();
    let id = harness.ids[5].clone();
    let answers = get_all(&harness, &vec![id.clone(); 1_000]).await;
    let expected = harness.fake.user(&id).unwrap();
    for (answer, _) in &answers {
        let user = answer.as_ref().expect("every caller is answered");
        assert_eq!(user.id, id);
        assert_eq!(user.first_name.as_deref(), expected["first_name"].as_str());
    }
    assert_eq!(
        harness.fake.stats().requests,
        1,
        "{:?}",
        harness.fake.stats()
    );
    let misses = answers.iter().filter(|(_, cache)| cache == "miss").count();
    assert!(
        misses > 1,
        "several callers shared the one flight: {misses}"
    );
    assert!(
        answers
            .iter()
            .all(|(_, cache)| cache == "miss" || cache == "hit"),
        "no stale answer while Clerk is healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_distinct_ids_cost_ten_requests_then_none() {
    // In a debug build on a loaded 2-core machine, 1000 calls can take
    // seconds to reach the broker. A full batch goes at once and the window
    // only bounds a partial one, so with a window longer than the test the
    // count depends on batching alone, not on the machine's speed. The
    // window's timing is proved in paused time (`users/batcher.rs`), and
    // `bench-lookups` measures the default window in a release build.
    let harness = Harness::start(Options {
        lookup: LookupConfig {
            batch_window: Duration::from_secs(60),
            ..test_lookup()
        },
        upstream_timeout: LOADED_MACHINE_TIMEOUT,
        ..Options::default()
    })
    .await;
    // 900 users that exist and 100 that do not, interleaved.
    let ids: Vec<String> = (0..1_000)
        .map(|i| {
            if i % 10 == 3 {
                format!("user_nosuch{i:04}")
            } else {
                harness.ids[i].clone()
            }
        })
        .collect();
    harness.fake.reset_stats();
    let started = Instant::now();
    let answers = get_all(&harness, &ids).await;
    let stats = harness.fake.stats();
    assert!(
        stats.requests <= 11,
        "1000 cold ids in batches of 100, answered in {:?}: {stats:?}",
        started.elapsed()
    );
    assert_eq!(
        stats.requests, stats.list_requests,
        "all by list: {stats:?}"
    );
    for (id, (answer, cache)) in ids.iter().zip(&answers) {
        assert_eq!(cache, "miss", "{id}");
        match answer {
            Ok(user) => {
                assert_eq!(&user.id, id);
                let expected = harness.fake.user(id).unwrap();
                assert_eq!(user.last_name.as_deref(), expected["last_name"].as_str());
            }
            Err(status) => {
                assert!(id.starts_with("user_nosuch"), "{id}: {status:?}");
                assert_eq!(status.code(), Code::NotFound, "{id}: {status:?}");
            }
        }
    }

    harness.fake.reset_stats();
    let again = get_all(&harness, &ids).await;
    assert_eq!(
        harness.fake.stats().requests,
        0,
        "the second round is cached"
    );
    for ((first, _), (second, cache)) in answers.iter().zip(&again) {
        assert_eq!(cache, "hit");
        match (first, second) {
            (Ok(first), Ok(second)) => assert_eq!(first, second),
            (Err(first), Err(second)) => assert_eq!(first.code(), second.code()),
            other => panic!("the answer changed: {other:?}"),
        }
    }
}

/// Options whose entries expire after 300 ms and stay servable for a minute.
fn short_ttl(rate: Rate) -> Options {
    Options {
        rate,
        // No burst cap: the tests spend the budget in a known order.
        burst: Some(rate.limit),
        lookup: LookupConfig {
            cache_ttl: Duration::from_millis(300),
            max_stale: Duration::from_secs(60),
            ..test_lookup()
        },
        ..Options::default()
    }
}

/// Waits (in real time) until entries cached now have expired.
async fn let_entries_expire() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn when_clerk_fails_a_recent_entry_is_served_stale() {
    let harness = Harness::start(short_ttl(Options::default().rate)).await;
    let mut client = harness.users().await;
    let id = harness.ids[7].clone();
    let (fresh, cache) = get(&mut client, &id, Duration::from_secs(5)).await;
    assert_eq!(cache, "miss");
    let fresh = fresh.unwrap();
    let_entries_expire().await;
    harness.fake.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    harness.fake.reset_stats();
    let (stale, cache) = get(&mut client, &id, Duration::from_secs(5)).await;
    assert_eq!(cache, "stale");
    assert_eq!(stale.unwrap(), fresh);
    assert!(harness.fake.stats().requests >= 1, "Clerk was asked first");

    // An id never seen: nothing to fall back on, a precise status, quickly.
    let started = Instant::now();
    let (never_seen, cache) = get(&mut client, &harness.ids[8], Duration::from_secs(10)).await;
    let status = never_seen.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(cache, "miss");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "retries end well before the 10 s deadline: {:?}",
        started.elapsed()
    );

    // Clerk heals: the entry is fresh again.
    harness.fake.set_faults(Faults::default());
    let (healed, cache) = get(&mut client, &id, Duration::from_secs(5)).await;
    assert_eq!((healed.unwrap().id, cache.as_str()), (id, "miss"));
}

/// A stale answer sent at the very deadline reaches a busy caller after it
/// gave up: with a recent entry in hand, the broker waits for a slow Clerk
/// only half the call's time (the refresh goes on and lands in the cache).
#[tokio::test]
async fn when_clerk_is_slow_a_recent_entry_is_served_stale_by_half_the_deadline() {
    let harness = Harness::start(short_ttl(Options::default().rate)).await;
    let mut client = harness.users().await;
    let id = harness.ids[9].clone();
    let (fresh, cache) = get(&mut client, &id, Duration::from_secs(5)).await;
    assert_eq!(cache, "miss");
    let fresh = fresh.unwrap();
    let_entries_expire().await;
    harness.fake.set_faults(Faults {
        latency: Duration::from_secs(30),
        ..Faults::default()
    });
    let deadline = Duration::from_secs(6);
    let started = Instant::now();
    let (stale, cache) = get(&mut client, &id, deadline).await;
    let took = started.elapsed();
    assert_eq!((stale.unwrap(), cache.as_str()), (fresh, "stale"));
    assert!(
        took >= deadline / 2 - Duration::from_millis(100) && took < deadline * 3 / 4,
        "served stale at half the deadline, not at its end: {took:?}"
    );
}

#[tokio::test]
async fn when_the_budget_cannot_serve_a_miss_in_time_a_recent_entry_is_served_stale() {
    let rate = Rate {
        limit: 2,
        window: Duration::from_secs(30),
    };
    let harness = Harness::start(short_ttl(rate)).await;
    let mut client = harness.users().await;
    let id = harness.ids[9].clone();
    get(&mut client, &id, Duration::from_secs(5))
        .await
        .0
        .unwrap();
    // Someone else spends the rest of the budget.
    let mut quota = harness.quota().await;
    let permit = quota
        .acquire_permit(AcquirePermitRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(permit.granted);
    let_entries_expire().await;
    harness.fake.reset_stats();
    let (stale, cache) = get(&mut client, &id, Duration::from_secs(2)).await;
    assert_eq!((stale.unwrap().id, cache.as_str()), (id, "stale"));
    assert_eq!(harness.fake.stats().requests, 0, "nothing over budget");
    // Without a stale entry: RESOURCE_EXHAUSTED, saying when to retry.
    let (exhausted, _) = get(&mut client, &harness.ids[10], Duration::from_secs(2)).await;
    let status = exhausted.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt as _;
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
}

#[tokio::test]
async fn invalidate_user_makes_the_next_lookup_ask_clerk() {
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    let mut admin = AdminServiceClient::new(harness.channel().await);
    let id = harness.ids[11].clone();
    get(&mut client, &id, Duration::from_secs(5))
        .await
        .0
        .unwrap();
    assert_eq!(get(&mut client, &id, Duration::from_secs(5)).await.1, "hit");
    let invalidate = |user_id: &str| InvalidateUserRequest {
        user_id: user_id.into(),
    };
    let reply = admin.invalidate_user(invalidate(&id)).await.unwrap();
    assert!(reply.into_inner().was_cached);
    harness.fake.reset_stats();
    assert_eq!(
        get(&mut client, &id, Duration::from_secs(5)).await.1,
        "miss"
    );
    assert_eq!(harness.fake.stats().requests, 1);
    let never = admin.invalidate_user(invalidate("user_nevercached")).await;
    assert!(!never.unwrap().into_inner().was_cached);
    let bad = admin
        .invalidate_user(invalidate("not an id"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        harness.health("clerk_broker.v1.AdminService").await,
        tonic_health::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_leaves_the_flight_flying_for_the_others() {
    // A window long enough that both callers surely join before the request.
    let harness = Arc::new(
        Harness::start(Options {
            lookup: LookupConfig {
                batch_window: Duration::from_millis(200),
                ..test_lookup()
            },
            ..Options::default()
        })
        .await,
    );
    harness.fake.set_faults(Faults {
        latency: Duration::from_millis(500),
        ..Faults::default()
    });
    harness.fake.reset_stats();
    let id = harness.ids[12].clone();
    let mut impatient = harness.users().await;
    let mut patient = harness.users().await;
    let (quitter, stayer) = tokio::join!(
        get(&mut impatient, &id, Duration::from_millis(300)),
        get(&mut patient, &id, Duration::from_secs(10)),
    );
    let status = quitter.0.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert_eq!(stayer.0.unwrap().id, id);
    assert_eq!(harness.fake.stats().requests, 1, "one flight served both");
}
