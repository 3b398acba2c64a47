//! Fault injection: the fake Clerk fails in one way at a time (5xx storm,
//! timeouts, dropped connections, slow answers, malformed JSON, a 429 storm
//! with a long `Retry-After`), or in all of them switched on and off while
//! load runs. In every case the broker
//! - keeps answering health checks and cache hits;
//! - answers misses itself, before the caller's deadline, with stale data
//!   where it has some and a precise status otherwise (every answer carries
//!   the broker's `x-cache` header, which a client-side timeout would not);
//! - never exceeds its budget: the fake, enforcing the same limit, sees at
//!   most the limit in any window (and no 429 it did not inject);
//! - holds no state for failed work: flights, permits in flight and queues
//!   (read from `/metrics`) return to zero once the failing calls end;
//! - recovers by itself: once the fake heals, the next miss succeeds.
//!
//! Each test runs its own broker and fake, in real time, bounded: a few
//! seconds each, and the test harness runs them side by side.

use std::time::{Duration, Instant};

use clerk_broker::{
    admission::Rate,
    fake::Faults,
    pb::{BatchGetUsersRequest, GetUserRequest, user_service_client::UserServiceClient},
};
use futures_util::future::join_all;
use tonic::{Code, metadata::MetadataMap, transport::Channel};
use tonic_health::ServingStatus;

use crate::harness::{Harness, Options, test_lookup, with_deadline};

/// The broker's budget, and the fake's own limit: the same.
const RATE: Rate = Rate {
    limit: 40,
    window: Duration::from_secs(1),
};
/// How long a fetched user is fresh: the stale set expires during warm-up.
const TTL: Duration = Duration::from_secs(2);
/// The deadline of every call made while Clerk fails.
const DEADLINE: Duration = Duration::from_millis(1_000);
/// Slack for a loaded 2-core machine between the broker's answer and the
/// client's clock (the broker itself answers a tenth of the deadline early).
const TOLERANCE: Duration = Duration::from_millis(400);
/// Cold ids asked for while Clerk fails.
const COLD_MISSES: usize = 60;

/// What one call ended with.
#[derive(Debug)]
struct Answer {
    code: Code,
    cache: String,
    took: Duration,
}

impl Answer {
    /// Cut off by tonic's own enforcement of the call's deadline on the
    /// server (CANCELLED, no `x-cache`): the broker waits for Clerk until the
    /// deadline less its reply margin (a tenth, at most 50 ms), and a stalled
    /// 2-core machine can eat that margin. The call still ends by its
    /// deadline; README "Deadlines" says so.
    fn cut_at_deadline(&self, deadline: Duration) -> bool {
        self.code == Code::Cancelled && self.cache.is_empty() && self.took >= deadline
    }
}

fn x_cache(metadata: &MetadataMap) -> String {
    metadata
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn get(users: &mut UserServiceClient<Channel>, id: &str, deadline: Duration) -> Answer {
    let started = Instant::now();
    let request = with_deadline(
        GetUserRequest {
            user_id: id.to_owned(),
        },
        deadline,
    );
    match users.get_user(request).await {
        Ok(response) => Answer {
            code: Code::Ok,
            cache: x_cache(response.metadata()),
            took: started.elapsed(),
        },
        Err(status) => Answer {
            code: status.code(),
            cache: x_cache(status.metadata()),
            took: started.elapsed(),
        },
    }
}

/// Reads one unlabelled-or-summed gauge from the broker's `/metrics`.
async fn gauge(harness: &Harness, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", harness.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until the broker holds no state for upstream work.
async fn assert_drains(harness: &Harness, what: &str) {
    let gauges = [
        "clerk_broker_lookups_in_flight",
        "clerk_broker_budget_in_flight",
        "clerk_broker_queue_depth",
        "clerk_broker_exports_active",
    ];
    // Held requests end at the upstream timeout (1.5 s), backoffs sooner.
    let give_up = Instant::now() + Duration::from_secs(8);
    loop {
        let mut left = Vec::new();
        for name in gauges {
            let value = gauge(harness, name).await;
            if value != 0.0 {
                left.push((name, value));
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < give_up, "{what}: state left {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker whose budget is [`RATE`] in front of a fake enforcing the same
/// limit, with a short TTL; `stale` ids cached and expired, `hot` ids fresh.
async fn start() -> (Harness, Vec<String>, Vec<String>) {
    let harness = Harness::start(Options {
        rate: RATE,
        fake_limit: Some(RATE),
        upstream_timeout: Duration::from_millis(1_500),
        lookup: clerk_broker::config::LookupConfig {
            cache_ttl: TTL,
            ..test_lookup()
        },
        ..Options::default()
    })
    .await;
    let stale: Vec<String> = harness.ids[..10].to_vec();
    let hot: Vec<String> = harness.ids[10..20].to_vec();
    let mut users = harness.users().await;
    for (ids, wait) in [
        (&stale, TTL + Duration::from_millis(200)),
        (&hot, Duration::ZERO),
    ] {
        let found = users
            .batch_get_users(BatchGetUsersRequest {
                user_ids: ids.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.users.len(), ids.len());
        tokio::time::sleep(wait).await;
    }
    (harness, stale, hot)
}

/// What the broker must do while Clerk fails as `faults` (and, if
/// `block` is set, answers 429 with that `Retry-After`).
async fn survives(name: &str, faults: Faults, block: Option<Duration>) {
    let (harness, stale, hot) = start().await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();
    harness.fake.set_faults(faults);
    let blocked_at = Instant::now();
    if let Some(retry_after) = block {
        harness.fake.block_for(retry_after);
    }

    // Cache hits and health do not depend on Clerk (hot ids are fresh for
    // TTL after warm-up: check them first).
    for id in &hot {
        let answer = get(&mut users, id, DEADLINE).await;
        assert_eq!(
            (answer.code, answer.cache.as_str()),
            (Code::Ok, "hit"),
            "{name}: {answer:?}"
        );
    }
    assert_eq!(
        harness.health("").await,
        ServingStatus::Serving as i32,
        "{name}"
    );
    assert_eq!(
        harness.health("liveness").await,
        ServingStatus::Serving as i32,
        "{name}"
    );

    // Expired entries are served stale rather than failing, by the deadline.
    let answers = join_all(stale.iter().map(|id| {
        let mut users = users.clone();
        async move { get(&mut users, id, DEADLINE).await }
    }))
    .await;
    for answer in &answers {
        assert_eq!(
            (answer.code, answer.cache.as_str()),
            (Code::Ok, "stale"),
            "{name}: {answer:?}"
        );
        assert!(answer.took <= DEADLINE + TOLERANCE, "{name}: {answer:?}");
    }

    // Cold misses: a precise status from the broker itself, by the deadline.
    let cold = &harness.ids[100..100 + COLD_MISSES];
    let answers = join_all(cold.iter().map(|id| {
        let mut users = users.clone();
        async move { get(&mut users, id, DEADLINE).await }
    }))
    .await;
    for answer in &answers {
        let precise = matches!(
            answer.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
        ) && answer.cache == "miss";
        assert!(
            precise || answer.cut_at_deadline(DEADLINE),
            "{name}: {answer:?}"
        );
        assert!(answer.took <= DEADLINE + TOLERANCE, "{name}: {answer:?}");
    }
    // A batch with hot and cold ids fails as a whole, also in time.
    let started = Instant::now();
    let mut ids = hot[..2].to_vec();
    ids.extend(harness.ids[200..210].iter().cloned());
    let batch = users
        .batch_get_users(with_deadline(
            BatchGetUsersRequest { user_ids: ids },
            DEADLINE,
        ))
        .await;
    assert!(
        started.elapsed() <= DEADLINE + TOLERANCE,
        "{name}: {batch:?}"
    );
    if let Err(status) = &batch {
        assert_ne!(status.code(), Code::Unknown, "{name}: {status:?}");
    }
    assert_eq!(
        harness.health("").await,
        ServingStatus::Serving as i32,
        "{name}"
    );

    // Nothing failed work left behind holds state.
    assert_drains(&harness, name).await;

    // Heal; after a 429 block the broker waits out Retry-After by itself.
    harness.fake.set_faults(Faults::default());
    let recovery = block.map_or(Duration::from_secs(3), |retry_after| {
        (blocked_at + retry_after + Duration::from_secs(3))
            .saturating_duration_since(Instant::now())
    });
    let answer = get(&mut users, &harness.ids[300], recovery).await;
    assert_eq!(
        (answer.code, answer.cache.as_str()),
        (Code::Ok, "miss"),
        "{name}: {answer:?}"
    );
    let answer = get(&mut users, &stale[0], Duration::from_secs(3)).await;
    assert_eq!(
        (answer.code, answer.cache.as_str()),
        (Code::Ok, "miss"),
        "{name}: refreshed: {answer:?}"
    );

    // The budget held throughout: the fake, counting by itself, saw no more
    // than the limit in any window, and no 429 but the injected block.
    let stats = harness.fake.stats();
    assert!(
        stats.max_in_window <= u64::from(RATE.limit),
        "{name}: {stats:?}"
    );
    match block {
        // One 429 pauses everything; requests already on their way (at most
        // the burst) may meet the block too.
        Some(_) => assert!((1..=4).contains(&stats.rate_limited), "{name}: {stats:?}"),
        None => assert_eq!(stats.rate_limited, 0, "{name}: {stats:?}"),
    }
    assert_drains(&harness, name).await;
}

#[tokio::test]
async fn a_5xx_storm() {
    let faults = Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    };
    survives("5xx", faults, None).await;
}

#[tokio::test]
async fn timeouts() {
    let faults = Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    };
    survives("timeouts", faults, None).await;
}

#[tokio::test]
async fn dropped_connections() {
    let faults = Faults {
        drop_rate: 1.0,
        ..Faults::default()
    };
    survives("drops", faults, None).await;
}

#[tokio::test]
async fn slow_answers() {
    // Slower than any caller waits, faster than the upstream timeout.
    let faults = Faults {
        latency: Duration::from_millis(1_200),
        ..Faults::default()
    };
    survives("slow", faults, None).await;
}

#[tokio::test]
async fn malformed_json() {
    let faults = Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    };
    survives("malformed", faults, None).await;
}

#[tokio::test]
async fn a_429_storm_with_a_long_retry_after() {
    // Retry-After of 4 s: four times every caller's deadline.
    survives("429", Faults::default(), Some(Duration::from_secs(4))).await;
}

/// Every fault switched on and off every 250 ms under steady load of hits
/// and misses; each call ends by its deadline with a broker answer, the
/// budget holds, state drains, and the broker heals with the fake.
#[tokio::test]
async fn faults_switching_while_load_runs() {
    let (harness, stale, hot) = start().await;
    harness.fake.reset_stats();
    let modes = [
        Faults {
            server_error_rate: 0.5,
            ..Faults::default()
        },
        Faults::default(),
        Faults {
            timeout_rate: 0.3,
            drop_rate: 0.3,
            ..Faults::default()
        },
        Faults {
            latency: Duration::from_millis(300),
            malformed_rate: 0.5,
            ..Faults::default()
        },
    ];
    let fake = harness.fake.clone();
    let switcher = tokio::spawn(async move {
        for faults in modes.iter().cycle().take(16) {
            fake.set_faults(faults.clone());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let clients = (0..8).map(|client| {
        let users = harness.users();
        let ids: Vec<String> = harness.ids[400 + client * 50..450 + client * 50].to_vec();
        let (stale, hot) = (stale.clone(), hot.clone());
        async move {
            let mut users = users.await;
            let mut answers = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let id = match i % 3 {
                    0 => &hot[i % hot.len()],
                    1 => &stale[i % stale.len()],
                    _ => id,
                };
                answers.push(get(&mut users, id, Duration::from_millis(600)).await);
            }
            answers
        }
    });
    let answers: Vec<Answer> = join_all(clients).await.into_iter().flatten().collect();
    switcher.await.unwrap();
    for answer in &answers {
        assert!(!answer.cache.is_empty(), "the broker answered: {answer:?}");
        assert!(
            answer.took <= Duration::from_millis(600) + TOLERANCE,
            "{answer:?}"
        );
        assert!(
            matches!(
                answer.code,
                Code::Ok
                    | Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Cancelled
            ),
            "{answer:?}"
        );
    }
    assert_eq!(harness.health("").await, ServingStatus::Serving as i32);
    harness.fake.set_faults(Faults::default());
    assert_drains(&harness, "switching").await;
    let mut users = harness.users().await;
    let answer = get(&mut users, &harness.ids[900], Duration::from_secs(3)).await;
    assert_eq!(
        (answer.code, answer.cache.as_str()),
        (Code::Ok, "miss"),
        "{answer:?}"
    );
    let stats = harness.fake.stats();
    assert!(stats.max_in_window <= u64::from(RATE.limit), "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
}
