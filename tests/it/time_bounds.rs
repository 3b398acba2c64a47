//! Filters' time bounds: a bound with a fraction of a millisecond loses no
//! user of that millisecond, and a range that holds no instant is refused
//! before any upstream request.

use std::collections::HashSet;

use clerk_broker::pb::{CountUsersRequest, ListUsersRequest, UserFilter};
use prost_types::Timestamp;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Harness, Options};

/// The instant `ms` Unix milliseconds plus `nanos` nanoseconds.
fn at(ms: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 + nanos,
    })
}

/// Ids of the users in the fake whose `field` is `ms`.
fn users_at(harness: &Harness, field: &str, ms: i64) -> HashSet<String> {
    harness
        .ids
        .iter()
        .filter(|id| harness.fake.user(id).unwrap()[field].as_i64() == Some(ms))
        .cloned()
        .collect()
}

/// The ids a whole export of `filter` delivers, oldest first.
async fn export(harness: &Harness, filter: UserFilter) -> Vec<String> {
    let mut users = harness.users().await;
    let request = ListUsersRequest {
        filter: Some(filter),
        order_by: "+created_at".into(),
        ..Default::default()
    };
    let mut stream = users.list_users(request).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        ids.extend(page.users.into_iter().map(|user| user.id));
    }
    ids
}

async fn count(harness: &Harness, filter: UserFilter) -> u64 {
    let mut users = harness.users().await;
    let request = CountUsersRequest {
        filter: Some(filter),
    };
    users
        .count_users(request)
        .await
        .unwrap()
        .into_inner()
        .total_count
}

#[tokio::test]
async fn half_millisecond_bounds_keep_the_users_of_that_millisecond() {
    let harness = Harness::start(Options {
        users: 300,
        ..Options::default()
    })
    .await;
    // A user created at X, and two more users at that very millisecond.
    let created = |id: &str| harness.fake.user(id).unwrap()["created_at"].as_i64();
    let x = created(&harness.ids[10]).unwrap();
    for id in &harness.ids[11..13] {
        let mut user: Value = harness.fake.user(id).unwrap();
        user["created_at"] = x.into();
        harness.fake.upsert_user(user);
    }
    let at_x = users_at(&harness, "created_at", x);
    assert!(at_x.len() >= 3, "{at_x:?}");

    // (X − 0.5 ms, X + 0.5 ms) holds exactly the users created at X.
    let around_x = UserFilter {
        created_after: at(x - 1, 500_000),
        created_before: at(x, 500_000),
        ..Default::default()
    };
    assert_eq!(count(&harness, around_x.clone()).await, at_x.len() as u64);
    let exported = export(&harness, around_x).await;
    assert_eq!(exported.iter().cloned().collect::<HashSet<_>>(), at_x);
    assert_eq!(exported.len(), at_x.len(), "{exported:?}");

    // The same for last activity.
    let y = x + 7_777;
    let mut user: Value = harness.fake.user(&harness.ids[20]).unwrap();
    user["last_active_at"] = y.into();
    harness.fake.upsert_user(user);
    let active_at_y = users_at(&harness, "last_active_at", y);
    let around_y = UserFilter {
        last_active_after: at(y - 1, 999_999),
        last_active_before: at(y, 1),
        ..Default::default()
    };
    assert_eq!(
        count(&harness, around_y.clone()).await,
        active_at_y.len() as u64
    );
    let exported: HashSet<String> = export(&harness, around_y).await.into_iter().collect();
    assert_eq!(exported, active_at_y);
}

#[tokio::test]
async fn ranges_that_hold_no_instant_are_refused_at_no_cost() {
    let harness = Harness::start(Options {
        users: 10,
        ..Options::default()
    })
    .await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();
    let t = 1_700_000_000_000;
    let cases = [
        (
            UserFilter {
                created_after: at(t, 0),
                created_before: at(t, 0),
                ..Default::default()
            },
            ("created_before", "created_after"),
        ),
        (
            UserFilter {
                created_after: at(t, 500_000),
                created_before: at(t, 400_000),
                ..Default::default()
            },
            ("created_before", "created_after"),
        ),
        (
            UserFilter {
                last_active_after: at(t + 1_000, 0),
                last_active_before: at(t, 0),
                ..Default::default()
            },
            ("last_active_before", "last_active_after"),
        ),
    ];
    for (filter, (before, after)) in cases {
        let counted = users
            .count_users(CountUsersRequest {
                filter: Some(filter.clone()),
            })
            .await;
        let listed = users
            .list_users(ListUsersRequest {
                filter: Some(filter),
                ..Default::default()
            })
            .await;
        for status in [counted.unwrap_err(), listed.map(|_| ()).unwrap_err()] {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            let violations = status.get_details_bad_request().unwrap().field_violations;
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!(violations[0].field, format!("filter.{before}"));
            assert!(
                violations[0]
                    .description
                    .contains(&format!("filter.{after}")),
                "{violations:?}"
            );
        }
    }
    assert_eq!(harness.fake.stats().requests, 0);
}
