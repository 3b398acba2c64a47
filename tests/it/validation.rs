//! Bad input gets INVALID_ARGUMENT with every field named, before any
//! upstream budget is spent.

use clerk_broker::pb::{
    AcquirePermitRequest, BatchGetUsersRequest, CountUsersRequest, GetUserRequest,
    ListUsersRequest, UserFilter,
};
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::{Harness, Options};

/// Asserts INVALID_ARGUMENT naming `field` among its violations.
fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries BadRequest details")
        .field_violations;
    assert!(
        violations.iter().any(|violation| violation.field == field),
        "{field} not in {violations:?}"
    );
}

#[tokio::test]
async fn bad_lookups_are_refused_without_upstream_requests() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();

    for id in ["", "user/../admin"] {
        let result = users.get_user(GetUserRequest { user_id: id.into() }).await;
        assert_invalid(result.map(|_| ()), "user_id");
    }
    let long = GetUserRequest {
        user_id: "u".repeat(129),
    };
    assert_invalid(users.get_user(long).await.map(|_| ()), "user_id");

    let none = BatchGetUsersRequest { user_ids: vec![] };
    assert_invalid(users.batch_get_users(none).await.map(|_| ()), "user_ids");
    let too_many = BatchGetUsersRequest {
        user_ids: (0..501).map(|i| format!("user_{i}")).collect(),
    };
    assert_invalid(
        users.batch_get_users(too_many).await.map(|_| ()),
        "user_ids",
    );
    let one_bad = BatchGetUsersRequest {
        user_ids: vec!["user_ok".into(), "bad id".into()],
    };
    assert_invalid(
        users.batch_get_users(one_bad).await.map(|_| ()),
        "user_ids[1]",
    );

    let too_many_values = CountUsersRequest {
        filter: Some(UserFilter {
            email_addresses: (0..101).map(|i| format!("u{i}@example.com")).collect(),
            ..Default::default()
        }),
    };
    assert_invalid(
        users.count_users(too_many_values).await.map(|_| ()),
        "filter.email_addresses",
    );

    assert_eq!(
        harness.fake.stats().requests,
        0,
        "no budget spent on bad input"
    );
}

#[tokio::test]
async fn bad_exports_are_refused_before_streaming() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();
    let cases = [
        (
            ListUsersRequest {
                order_by: "-email".into(),
                ..Default::default()
            },
            "order_by",
        ),
        (
            ListUsersRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListUsersRequest {
                resume_token: "not-a-token".into(),
                ..Default::default()
            },
            "resume_token",
        ),
    ];
    for (request, field) in cases {
        assert_invalid(users.list_users(request).await.map(|_| ()), field);
    }

    // A real token, altered in one character, or combined with a new filter.
    let mut stream = users
        .list_users(ListUsersRequest {
            page_size: 1,
            max_users: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = stream.message().await.unwrap().unwrap().resume_token;
    harness.fake.reset_stats();
    let mut altered = token.clone().into_bytes();
    altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
    let altered = ListUsersRequest {
        resume_token: String::from_utf8(altered).unwrap(),
        ..Default::default()
    };
    assert_invalid(users.list_users(altered).await.map(|_| ()), "resume_token");
    let with_filter = ListUsersRequest {
        resume_token: token,
        filter: Some(UserFilter::default()),
        ..Default::default()
    };
    assert_invalid(users.list_users(with_filter).await.map(|_| ()), "filter");
    assert_eq!(harness.fake.stats().requests, 0);
}

#[tokio::test]
async fn bad_permit_requests_get_precise_statuses() {
    let harness = Harness::start(Options::default()).await;
    let mut quota = harness.quota().await;
    let too_costly = AcquirePermitRequest {
        cost: 1_001,
        ..Default::default()
    };
    assert_invalid(quota.acquire_permit(too_costly).await.map(|_| ()), "cost");
    let negative = AcquirePermitRequest {
        max_wait: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_invalid(quota.acquire_permit(negative).await.map(|_| ()), "max_wait");
    let unknown = AcquirePermitRequest {
        budget: "exports".into(),
        ..Default::default()
    };
    let status = quota.acquire_permit(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("exports"));
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_connection_keeps_serving() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();
    let huge = BatchGetUsersRequest {
        user_ids: vec!["u".repeat(1000); 1200],
    };
    let status = users.batch_get_users(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "the limit is: {} bytes",
            clerk_broker::server::MAX_REQUEST_BYTES
        )),
        "{status:?}"
    );
    assert_eq!(harness.fake.stats().requests, 0);
    // The same connection serves the next call.
    let id = harness.ids[0].clone();
    users
        .get_user(GetUserRequest { user_id: id })
        .await
        .unwrap();
}

/// Asserts a small INVALID_ARGUMENT: the first problems named, the rest
/// counted, message and details together within a few KB.
fn assert_small_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{:?}", status.code());
    let size = status.message().len() + status.details().len();
    assert!(size < 4 * 1024, "{size} bytes: {}", status.message());
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert!(
        (1..=20).contains(&violations.len()),
        "{} violations",
        violations.len()
    );
    assert!(
        violations.iter().any(|violation| violation.field == field),
        "{field} not in {violations:?}"
    );
    assert!(status.message().contains("more problems"), "{status:?}");
}

#[tokio::test]
async fn a_request_full_of_bad_values_gets_a_small_answer() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();
    // 2 bytes per empty value on the wire: just under the 1 MiB message limit.
    let empty = vec![String::new(); 520_000];
    let filter = || {
        Some(UserFilter {
            user_ids: empty.clone(),
            ..Default::default()
        })
    };
    let count = CountUsersRequest { filter: filter() };
    let answer = tokio::time::timeout(Duration::from_secs(60), users.count_users(count)).await;
    assert_small_invalid(answer.unwrap().map(|_| ()), "filter.user_ids");
    let list = ListUsersRequest {
        filter: filter(),
        ..Default::default()
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), users.list_users(list)).await;
    assert_small_invalid(answer.unwrap().map(|_| ()), "filter.user_ids[0]");
    // Distinct bad ids (empty ones would be one id, answered once).
    let batch = BatchGetUsersRequest {
        user_ids: (0..120_000).map(|i| format!("!{i}")).collect(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), users.batch_get_users(batch)).await;
    assert_small_invalid(answer.unwrap().map(|_| ()), "user_ids[0]");
    // A value echoed in a message is cut short.
    let order = ListUsersRequest {
        order_by: "x".repeat(1_000_000),
        ..Default::default()
    };
    let status = users.list_users(order).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 1024, "{}", status.message().len());
    let mut quota = harness.quota().await;
    let budget = AcquirePermitRequest {
        budget: "b".repeat(1_000_000),
        ..Default::default()
    };
    let status = quota.acquire_permit(budget).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 1024, "{}", status.message().len());
    assert_eq!(harness.fake.stats().requests, 0);
    // The connection serves on.
    let id = harness.ids[0].clone();
    users
        .get_user(GetUserRequest { user_id: id })
        .await
        .unwrap();
}
