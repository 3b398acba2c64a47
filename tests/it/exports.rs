//! Exports through `ListUsers`: every user exactly once at full upstream
//! pages, while users come and go, across a disconnect; bounded look-ahead for
//! slow readers; cancellation and deadlines stop upstream work; counts are
//! cached briefly; interactive lookups are not starved by exports.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use clerk_broker::{
    fake::seed,
    pb::{
        CountUsersRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, UserFilter,
        user_service_client::UserServiceClient,
    },
};
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::harness::{Harness, Options, with_deadline};

/// What a client saw of one export stream.
#[derive(Default)]
struct Seen {
    ids: Vec<String>,
    /// `created_at` of each user, Unix ms.
    created: Vec<i64>,
    tokens: Vec<String>,
    /// How the stream ended: None when it completed.
    status: Option<Status>,
}

impl Seen {
    fn take(&mut self, message: ListUsersResponse) {
        for user in message.users {
            let at = user.created_at.expect("created_at");
            self.created
                .push(at.seconds * 1_000 + i64::from(at.nanos) / 1_000_000);
            self.ids.push(user.id);
        }
        self.tokens.push(message.resume_token);
    }
}

/// Reads `stream` to its end, calling `after` after each message.
async fn read_all(stream: &mut Streaming<ListUsersResponse>, mut after: impl FnMut(&Seen)) -> Seen {
    let mut seen = Seen::default();
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                seen.take(message);
                after(&seen);
            }
            Ok(None) => return seen,
            Err(status) => {
                seen.status = Some(status);
                return seen;
            }
        }
    }
}

async fn open(harness: &Harness, request: ListUsersRequest) -> Streaming<ListUsersResponse> {
    let mut client = harness.users().await;
    client.list_users(request).await.unwrap().into_inner()
}

fn request(order_by: &str, page_size: u32) -> ListUsersRequest {
    ListUsersRequest {
        order_by: order_by.into(),
        page_size,
        ..Default::default()
    }
}

/// Asserts no id twice and every one of `expected` present.
fn assert_exactly_once<'a>(ids: &[String], expected: impl IntoIterator<Item = &'a String>) {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    let repeated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(repeated, 0, "users delivered more than once");
    let missing = expected
        .into_iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    assert_eq!(missing, 0, "users never delivered");
}

fn assert_ordered(created: &[i64], descending: bool) {
    let ordered = created.windows(2).all(|pair| {
        if descending {
            pair[0] >= pair[1]
        } else {
            pair[0] <= pair[1]
        }
    });
    assert!(ordered, "users out of the requested order");
}

/// Pages of 500 needed for `users`, plus the boundary overlap of keyset paging.
fn pages_for(users: usize) -> u64 {
    users.div_ceil(500) as u64 + 2
}

/// What the mutator did while an export ran.
struct Mutations {
    /// Original users deleted.
    deleted: HashSet<String>,
    /// Users created.
    created: HashSet<String>,
    /// Distinct upstream page counts at which it mutated.
    between_pages: usize,
}

/// Mutates the fake on every tick: deletes 20 original users and creates 20
/// others, at the instant of an existing user (a tie), at an old instant (an
/// import), or now. Returns what it did once the ticks stop.
fn spawn_mutator(
    harness: &Harness,
) -> (
    mpsc::UnboundedSender<()>,
    tokio::task::JoinHandle<Mutations>,
) {
    let fake = harness.fake.clone();
    let originals = harness.ids.clone();
    let (ticks, mut tick_rx) = mpsc::unbounded_channel::<()>();
    let mutator = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut templates = seed::synthetic_users(200, 99).into_iter().cycle();
        let (mut deleted, mut created) = (HashSet::new(), HashSet::new());
        let mut pages = HashSet::new();
        while tick_rx.recv().await.is_some() {
            pages.insert(fake.stats().list_requests);
            for _ in 0..20 {
                let victim = &originals[rng.usize(..originals.len())];
                if fake.delete_user(victim) {
                    deleted.insert(victim.clone());
                }
                let mut user = templates.next().unwrap();
                let id = format!("user_new{:05}", created.len());
                let other = fake.user(&originals[rng.usize(..originals.len())]);
                let tie = other.map(|other| other["created_at"].clone());
                user["created_at"] = match rng.u8(..3) {
                    0 => tie.unwrap_or_else(|| seed::SEED_NOW_MS.into()),
                    1 => (seed::SEED_NOW_MS - rng.i64(0..40_000_000_000)).into(),
                    _ => (seed::SEED_NOW_MS + created.len() as i64).into(),
                };
                user["id"] = id.clone().into();
                fake.upsert_user(user);
                created.insert(id);
            }
        }
        Mutations {
            deleted,
            created,
            between_pages: pages.len(),
        }
    });
    (ticks, mutator)
}

// One fake of 25,000 users serves both exports: building it is the slow part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_thousand_users_once_each_even_while_others_come_and_go() {
    let harness = Harness::start(Options {
        users: 25_000,
        ..Options::default()
    })
    .await;
    harness.fake.reset_stats();
    let mut stream = open(&harness, request("+created_at", 0)).await;
    let seen = read_all(&mut stream, |_| {}).await;
    assert!(seen.status.is_none(), "{:?}", seen.status);
    assert_eq!(seen.ids.len(), 25_000);
    assert_exactly_once(&seen.ids, &harness.ids);
    assert_ordered(&seen.created, false);
    assert_eq!(seen.tokens.len(), 250, "messages of the default 100 users");
    let stats = harness.fake.stats();
    assert!(
        stats.list_requests <= pages_for(25_000),
        "{} list requests",
        stats.list_requests
    );
    assert_eq!(stats.count_requests, 0);

    // Again, newest first, while users are created and deleted between pages.
    let (ticks, mutator) = spawn_mutator(&harness);
    let mut stream = open(&harness, request("-created_at", 100)).await;
    let seen = read_all(&mut stream, |_| {
        let _ = ticks.send(());
    })
    .await;
    drop(ticks);
    let mutations = mutator.await.unwrap();
    assert!(seen.status.is_none(), "{:?}", seen.status);
    let between = mutations.between_pages;
    assert!(between > 10, "mutations between only {between} pages");
    let stable: Vec<&String> = harness
        .ids
        .iter()
        .filter(|id| !mutations.deleted.contains(*id))
        .collect();
    assert!(stable.len() < 25_000 - 1_000, "many users deleted");
    assert_exactly_once(&seen.ids, stable);
    let originals: HashSet<&String> = harness.ids.iter().collect();
    let known = |id: &String| originals.contains(id) || mutations.created.contains(id);
    assert!(seen.ids.iter().all(known), "only users that existed");
    assert_ordered(&seen.created, true);
}

#[tokio::test]
async fn a_disconnected_export_resumes_exactly_after_the_last_token() {
    let harness = Harness::start(Options {
        users: 4_000,
        ..Options::default()
    })
    .await;
    for order_by in ["-created_at", "+last_name"] {
        let mut stream = open(&harness, request(order_by, 130)).await;
        let mut first = Seen::default();
        for _ in 0..17 {
            first.take(stream.message().await.unwrap().unwrap());
        }
        drop(stream); // the client goes away mid-export
        let resumed = ListUsersRequest {
            resume_token: first.tokens.last().unwrap().clone(),
            page_size: 500,
            ..Default::default()
        };
        let rest = read_all(&mut open(&harness, resumed).await, |_| {}).await;
        assert!(rest.status.is_none(), "{:?}", rest.status);
        let union: Vec<String> = first.ids.into_iter().chain(rest.ids).collect();
        assert_eq!(union.len(), 4_000, "{order_by}");
        assert_exactly_once(&union, &harness.ids);
        if order_by.ends_with("created_at") {
            let created: Vec<i64> = first.created.into_iter().chain(rest.created).collect();
            assert_ordered(&created, order_by.starts_with('-'));
        }
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the priority scheduler (admission issue)"]
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
    // Three exports keep bulk requests queued for the whole test.
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
    // One refill interval, plus room for a loaded machine.
    assert!(
        slowest <= refill + Duration::from_millis(250),
        "an interactive miss waited {slowest:?}"
    );
    assert_eq!(harness.fake.stats().rate_limited, 0);
}
