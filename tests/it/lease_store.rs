//! The shared budget's store (`lease.lua` on a real Redis), driven round
//! trip by round trip: how it counts groups of slots.

use std::time::Duration;

use ::redis::AsyncCommands;
use clerk_broker::{
    admission::{LeaseRequest, LeaseStore, PlaceReport},
    store::{RedisConfig, RedisStore},
};

/// A store with its own key prefix on the shared Redis, and a client to
/// look at its keys.
async fn store() -> (
    std::sync::Arc<RedisStore>,
    ::redis::aio::MultiplexedConnection,
    String,
) {
    let url = crate::redis::shared_url();
    let prefix = format!("lease-store-{:x}", fastrand::u64(..));
    let store = RedisStore::new(
        &RedisConfig {
            url: url.clone(),
            timeout: Duration::from_secs(2),
            replicas: Some(1),
            prefix: prefix.clone(),
        },
        Duration::from_secs(1),
    )
    .unwrap();
    let client = ::redis::Client::open(url).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    (store, connection, prefix)
}

/// A round trip of a 100/60 s budget wanting `want` slots, with `places`.
fn request(want: u32, places: &[(&str, u32, Option<i64>)]) -> LeaseRequest {
    LeaseRequest {
        limit: 100,
        window_ms: 60_000,
        lease_ms: 60_000,
        want,
        stale_ms: 3_000,
        keep_ms: 30_000,
        recovery_ms: 1_000,
        replicas: 1,
        first_seq: 1,
        bulk_share: 0.2,
        places: places
            .iter()
            .map(|&(name, count, delta_ms)| PlaceReport {
                name: name.into(),
                count,
                delta_ms,
            })
            .collect(),
        ..LeaseRequest::default()
    }
}

#[tokio::test]
async fn groups_count_their_slots_once_and_expire_together() {
    let (store, mut redis, prefix) = store().await;
    let lease = |request: LeaseRequest| {
        let store = store.clone();
        async move { store.lease("clerk", &request).await.unwrap() }
    };
    let granted = lease(request(10, &[])).await;
    assert_eq!((granted.granted, granted.free), (10, 90));

    // 3 of the lease's slots finished: they move to a bucket ending in
    // 300 ms; the report arrives twice (a retry) and counts once.
    let moved = [("L1", 7, None), ("Ua.300", 3, Some(300))];
    for _ in 0..2 {
        let reply = lease(request(0, &moved)).await;
        assert_eq!((reply.granted, reply.free), (0, 90));
    }
    // A lease's count never rises again, whatever a report says.
    let reply = lease(request(0, &[("L1", 12, None)])).await;
    assert_eq!(reply.free, 90);
    // The bucket's end is the oldest expiry.
    assert!(reply.oldest_ms.is_some_and(|ms| ms <= 300), "{reply:?}");

    // The total kept beside the groups matches them.
    let key = |part: &str| format!("{prefix}:budget:clerk:{part}");
    let counts: Vec<(String, u64)> = redis.hgetall(key("counts")).await.unwrap();
    let total = counts.iter().find(|(name, _)| name == "#").unwrap().1;
    let sum: u64 = counts
        .iter()
        .filter(|(name, _)| name != "#")
        .map(|(_, count)| count)
        .sum();
    assert_eq!((total, sum), (10, 10), "{counts:?}");
    let groups: u64 = redis.zcard(key("groups")).await.unwrap();
    assert_eq!(groups, 2);

    // The bucket ends: its 3 slots leave together.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lease(request(0, &[])).await.free, 93);
    // A bucket reported as ended is not created again.
    assert_eq!(lease(request(0, &[("Ua.300", 3, Some(0))])).await.free, 93);
    // The lease's last slots are handed back.
    assert_eq!(lease(request(0, &[("L1", 0, None)])).await.free, 100);

    // Slots an older version wrote one member each still count, one each,
    // until they expire.
    let (seconds, _): (u64, u64) = ::redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    let _: () = redis
        .zadd_multiple(
            key("log"),
            &[
                (seconds * 1000 + 60_000, "old:1"),
                (seconds * 1000 + 60_000, "old:2"),
            ],
        )
        .await
        .unwrap();
    let reply = lease(request(5, &[])).await;
    assert_eq!((reply.granted, reply.free), (5, 93));
}
