//! The upstream work exports and counts cost: a bounded look-ahead for slow
//! readers, no more fetching once the client cancels or its deadline passes,
//! counts cached briefly, and interactive lookups not starved by exports.

use std::time::Duration;

use clerk_broker::pb::{
    CountUsersRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, UserFilter,
    user_service_client::UserServiceClient,
};
use tonic::{Code, Streaming, transport::Channel};

use super::{Seen, assert_exactly_once, open, read_all, request};
use crate::harness::{Harness, Options, with_deadline};

/// Reads `stream` slowly, stalling now and then long enough for an unbounded
/// broker to fetch far ahead; asserts that upstream pages fetched never run
/// more than `bound` pages ahead of the pages the client has started.
/// Returns the largest look-ahead seen.
async fn read_slowly(
    harness: &Harness,
    mut stream: Streaming<ListUsersResponse>,
    bound: u64,
) -> u64 {
    let mut consumed = 0u64;
    let mut most_ahead = 0;
    while let Some(message) = stream.message().await.unwrap() {
        consumed += message.users.len() as u64;
        if consumed % 2_000 == 100 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let fetched = harness.fake.stats().list_requests;
        let ahead = fetched.saturating_sub(consumed.div_ceil(500));
        most_ahead = most_ahead.max(ahead);
        assert!(
            ahead <= bound,
            "{fetched} pages fetched with {consumed} users consumed"
        );
    }
    assert_eq!(consumed, 4_000);
    most_ahead
}

#[tokio::test]
async fn a_slow_reader_holds_upstream_fetching_to_a_bounded_look_ahead() {
    let harness = Harness::start(Options {
        users: 4_000,
        ..Options::default()
    })
    .await;
    // A client with small HTTP/2 windows: the broker's own look-ahead shows.
    // It holds one page (fetching or splitting it) and one message in its
    // channel; the transport holds a few hundred KB, less than a page of
    // these users (about 1.7 KB each).
    let small = Channel::from_shared(format!("http://{}", harness.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    harness.fake.reset_stats();
    let stream = UserServiceClient::new(small)
        .list_users(request("-created_at", 100))
        .await
        .unwrap()
        .into_inner();
    assert!(
        read_slowly(&harness, stream, 2).await >= 1,
        "the broker fetches ahead"
    );
    // A default client: its 2 MiB stream window holds about 2.4 such pages more.
    harness.fake.reset_stats();
    let stream = open(&harness, request("-created_at", 100)).await;
    read_slowly(&harness, stream, 4).await;
}

#[tokio::test]
async fn cancelling_or_a_passing_deadline_stops_upstream_fetching_within_a_page() {
    let harness = Harness::start(Options {
        users: 5_000,
        ..Options::default()
    })
    .await;
    harness.fake.set_faults(clerk_broker::fake::Faults {
        latency: Duration::from_millis(50),
        ..Default::default()
    });
    // Cancelled: the client drops the stream mid-export.
    harness.fake.reset_stats();
    let mut stream = open(&harness, request("+created_at", 100)).await;
    for _ in 0..7 {
        stream.message().await.unwrap().unwrap();
    }
    drop(stream);
    let at_cancel = harness.fake.stats().list_requests;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = harness.fake.stats().list_requests;
    assert!(after <= at_cancel + 1, "{at_cancel} then {after} requests");

    // Deadline: the stream ends resumably, and fetching stops.
    harness.fake.reset_stats();
    let slow = with_deadline(request("+created_at", 100), Duration::from_millis(1_500));
    let mut stream = harness
        .users()
        .await
        .list_users(slow)
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    let status = loop {
        match stream.message().await {
            Ok(Some(message)) => seen.take(message),
            Ok(None) => panic!("5,000 slowly read users outlast 1.5 s"),
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let trailer = status.metadata().get("x-resume-token").expect("token");
    assert_eq!(trailer.to_str().unwrap(), seen.tokens.last().unwrap());
    let at_end = harness.fake.stats().list_requests;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(harness.fake.stats().list_requests <= at_end + 1);
    let resumed = ListUsersRequest {
        resume_token: seen.tokens.last().unwrap().clone(),
        page_size: 500,
        ..Default::default()
    };
    let rest = read_all(&mut open(&harness, resumed).await, |_| {}).await;
    let union: Vec<String> = seen.ids.into_iter().chain(rest.ids).collect();
    assert_eq!(union.len(), 5_000);
    assert_exactly_once(&union, &harness.ids);
}

#[tokio::test]
async fn counts_cost_one_request_per_filter_while_fresh() {
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    harness.fake.reset_stats();
    let banned = |ids: Vec<String>| CountUsersRequest {
        filter: Some(UserFilter {
            user_ids: ids,
            banned: Some(false),
            ..Default::default()
        }),
    };
    let ids: Vec<String> = harness.ids[..3].to_vec();
    let reversed: Vec<String> = ids.iter().rev().cloned().collect();
    for request in [banned(ids.clone()), banned(reversed), banned(ids)] {
        let count = client.count_users(request).await.unwrap().into_inner();
        assert!(count.total_count <= 3);
    }
    assert_eq!(
        harness.fake.stats().count_requests,
        1,
        "one filter, one request"
    );
    let all = client
        .count_users(CountUsersRequest { filter: None })
        .await
        .unwrap();
    assert_eq!(all.into_inner().total_count, 1_000);
    assert_eq!(harness.fake.stats().count_requests, 2);
}

// Under first-come-first-served admission a miss waits behind every queued
// export page (about 1.8 s here). With interactive before bulk it waits for
// the next free request at most, if the scheduler also spreads bulk requests
// over the window: the sliding window otherwise frees requests in bursts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_misses_wait_at_most_one_refill_interval_beside_exports() {
    use clerk_broker::admission::Rate;
    // 4 requests per 2 s: the budget refills one request every 500 ms.
    let rate = Rate {
        limit: 4,
        window: Duration::from_secs(2),
    };
    let refill = rate.window / rate.limit;
    let harness = Harness::start(Options {
        users: 6_000,
        rate,
        fake_limit: Some(rate),
        ..Options::default()
    })
    .await;
    // Three exports (one would queue a single page) keep bulk requests queued
    // for the whole test.
    let mut exports = Vec::new();
    for order_by in ["+created_at", "-created_at", "+last_name"] {
        let mut stream = open(&harness, request(order_by, 500)).await;
        exports.push(tokio::spawn(
            async move { read_all(&mut stream, |_| {}).await },
        ));
    }
    tokio::time::sleep(rate.window).await;
    let mut client = harness.users().await;
    let mut slowest = Duration::ZERO;
    for id in harness.ids.iter().take(6) {
        let started = std::time::Instant::now();
        let get = GetUserRequest {
            user_id: id.clone(),
        };
        client
            .get_user(with_deadline(get, Duration::from_secs(10)))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..700))).await;
    }
    for export in exports {
        export.abort();
    }
    // One refill interval, plus room for a loaded machine (the exact bound
    // is proven in simulated time by the fair queue's unit tests); still well
    // under the ~1.8 s a miss waits behind queued pages first-come-first-served.
    assert!(
        slowest <= 2 * refill + Duration::from_millis(250),
        "an interactive miss waited {slowest:?}"
    );
    assert_eq!(harness.fake.stats().rate_limited, 0);
}
