//! What an export delivers: every user exactly once and in order at full
//! upstream pages, even while users come and go, and across a disconnect.

use std::collections::HashSet;

use clerk_broker::{fake::seed, pb::ListUsersRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Seen, assert_exactly_once, assert_ordered, open, pages_for, read_all, request};
use crate::harness::{Harness, Options};

/// A user with little more than an id and a creation instant: exports of
/// many users stay quick in debug builds, and leave the other tests CPU.
fn lean_user(id: &str, created_at: i64) -> Value {
    json!({
        "id": id, "object": "user", "first_name": "Ada", "image_url": "",
        "email_addresses": [], "phone_numbers": [], "public_metadata": {},
        "banned": false, "created_at": created_at, "updated_at": created_at,
    })
}

/// Fills the fake with `count` lean users: creation instants over two years,
/// about 2% sharing their predecessor's millisecond, and a bulk import of 600
/// users in one millisecond a year back (more than a page: read by offset
/// within that millisecond). Returns their ids.
fn populate(harness: &Harness, count: usize) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut at = seed::SEED_NOW_MS - 31_536_000_000;
    (0..count)
        .map(|n| {
            if n >= 600 && rng.u8(..50) != 0 {
                at = seed::SEED_NOW_MS - rng.i64(0..63_072_000_000);
            }
            let id = format!("user_{n:027}");
            harness.fake.upsert_user(lean_user(&id, at));
            id
        })
        .collect()
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
    originals: Vec<String>,
) -> (
    mpsc::UnboundedSender<()>,
    tokio::task::JoinHandle<Mutations>,
) {
    let fake = harness.fake.clone();
    let (ticks, mut tick_rx) = mpsc::unbounded_channel::<()>();
    let mutator = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(11);
        let (mut deleted, mut created) = (HashSet::new(), HashSet::new());
        let mut pages = HashSet::new();
        while tick_rx.recv().await.is_some() {
            pages.insert(fake.stats().list_requests);
            for _ in 0..20 {
                let victim = &originals[rng.usize(..originals.len())];
                if fake.delete_user(victim) {
                    deleted.insert(victim.clone());
                }
                let id = format!("user_new{:05}", created.len());
                let other = fake.user(&originals[rng.usize(..originals.len())]);
                let tie = other.and_then(|other| other["created_at"].as_i64());
                let at = match rng.u8(..3) {
                    0 => tie.unwrap_or(seed::SEED_NOW_MS),
                    1 => seed::SEED_NOW_MS - rng.i64(0..63_072_000_000),
                    _ => seed::SEED_NOW_MS + created.len() as i64,
                };
                fake.upsert_user(lean_user(&id, at));
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

// One fake of 25,000 users serves both exports. One thread: the other tests,
// some of them timed, keep the other core.
#[tokio::test]
async fn twenty_five_thousand_users_once_each_even_while_others_come_and_go() {
    let harness = Harness::start(Options {
        users: 0,
        ..Options::default()
    })
    .await;
    let ids = populate(&harness, 25_000);
    harness.fake.reset_stats();
    let mut stream = open(&harness, request("+created_at", 0)).await;
    let seen = read_all(&mut stream, |_| {}).await;
    assert!(seen.status.is_none(), "{:?}", seen.status);
    assert_eq!(seen.ids.len(), 25_000);
    assert_exactly_once(&seen.ids, &ids);
    assert_ordered(&seen.created, false);
    assert_eq!(seen.tokens.len(), 250, "messages of the default 100 users");
    let stats = harness.fake.stats();
    // The bulk millisecond costs a page or two more (re-read rows).
    assert!(
        stats.list_requests <= pages_for(25_000) + 2,
        "{} list requests",
        stats.list_requests
    );
    assert_eq!(stats.count_requests, 0);

    // Again, newest first, while users are created and deleted between pages.
    let (ticks, mutator) = spawn_mutator(&harness, ids.clone());
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
    let stable = ids.iter().filter(|id| !mutations.deleted.contains(*id));
    assert!(mutations.deleted.len() > 1_000, "many users deleted");
    assert_exactly_once(&seen.ids, stable);
    let originals: HashSet<&String> = ids.iter().collect();
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
