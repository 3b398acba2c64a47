//! Scopes decide which services a caller may use and whether it sees users'
//! private metadata; per-caller limits keep one caller from holding the
//! broker.

use std::time::Duration;

use clerk_broker::{
    callers::Policy,
    pb::{
        AcquirePermitRequest, BatchGetUsersRequest, GetUserRequest, InvalidateUserRequest,
        ListUsersRequest, User, UserFilter, admin_service_client::AdminServiceClient,
    },
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    callers::as_caller,
    harness::{Harness, Options},
};

/// The one secret every check looks for.
const SECRET: &str = "cus_private_4242";

/// Callers: name, token, and the rest of its `[[callers]]` entry.
const CALLERS: [(&str, &str, &str); 5] = [
    ("reader", "reader-token", "scopes = [\"read_users\"]"),
    (
        "trusted",
        "trusted-token",
        "scopes = [\"read_users\", \"read_private_metadata\"]",
    ),
    (
        "permits",
        "permits-token",
        "scopes = [\"acquire_permits\"]\nbudgets = [\"clerk\", \"writes\"]\nmax_in_flight = 2",
    ),
    ("operator", "operator-token", "scopes = [\"admin\"]"),
    ("exporter", "exporter-token", "max_streams = 1"),
];

fn policy() -> Policy {
    let mut text = "[[budgets]]\nname = \"writes\"\nrate = \"1/60s\"\n".to_owned();
    for (name, token, rest) in CALLERS {
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        text += &format!("[[callers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n{rest}\n");
    }
    Policy::parse(&text, |_| Duration::ZERO).unwrap()
}

async fn start() -> (Harness, String) {
    let harness = Harness::start(Options {
        users: 300,
        policy: policy(),
        ..Options::default()
    })
    .await;
    let id = harness.ids[0].clone();
    let mut user = harness.fake.user(&id).unwrap();
    user["private_metadata"] = json!({"stripe_customer": SECRET});
    harness.fake.upsert_user(user);
    (harness, id)
}

/// Checks `user` shows private metadata, in the `Struct` and the raw JSON
/// alike, exactly when the caller `may_see` it; whether it showed `SECRET`.
fn check(user: &User, may_see: bool) -> bool {
    let raw: Value = serde_json::from_str(&user.raw_json).unwrap();
    assert_eq!(raw["id"], user.id, "raw_json is the whole user");
    match raw.get("private_metadata") {
        Some(value) => {
            assert!(may_see, "{user:?}");
            assert_eq!(
                user.private_metadata.is_some(),
                value.is_object(),
                "{user:?}"
            );
        }
        None => {
            assert!(!may_see, "{user:?}");
            assert_eq!(user.private_metadata, None, "{user:?}");
        }
    }
    let in_struct = user
        .private_metadata
        .as_ref()
        .is_some_and(|metadata| metadata.fields.contains_key("stripe_customer"));
    assert_eq!(in_struct, user.raw_json.contains(SECRET), "{user:?}");
    in_struct
}

#[tokio::test]
async fn private_metadata_reaches_only_callers_with_its_scope_on_every_path() {
    let (harness, id) = start().await;
    let mut users = harness.users().await;
    // A miss, then a hit, for each kind of caller, in both orders.
    for (token, expected) in [
        ("reader-token", false),
        ("trusted-token", true),
        ("reader-token", false),
    ] {
        let request = GetUserRequest {
            user_id: id.clone(),
        };
        let user = users.get_user(as_caller(token, request)).await.unwrap();
        assert_eq!(check(user.get_ref(), expected), expected, "{token}");

        let request = BatchGetUsersRequest {
            user_ids: vec![id.clone(), harness.ids[1].clone()],
        };
        let batch = users.batch_get_users(as_caller(token, request)).await;
        let batch = batch.unwrap().into_inner();
        assert_eq!(batch.users.len(), 2);
        let ours = batch.users.iter().find(|user| user.id == id).unwrap();
        assert_eq!(check(ours, expected), expected, "{token}");
        for user in &batch.users {
            check(user, expected);
        }

        let request = ListUsersRequest {
            filter: Some(UserFilter {
                user_ids: vec![id.clone()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut stream = users
            .list_users(as_caller(token, request))
            .await
            .unwrap()
            .into_inner();
        let page = stream.message().await.unwrap().unwrap();
        assert_eq!(page.users.len(), 1);
        assert_eq!(check(&page.users[0], expected), expected, "{token}");
    }
    // Exports page through every user: none leaks to a reader.
    let mut stream = users
        .list_users(as_caller("reader-token", ListUsersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while let Some(page) = stream.message().await.unwrap() {
        for user in &page.users {
            check(user, false);
            seen += 1;
        }
    }
    assert_eq!(seen, 300);
}

#[tokio::test]
async fn every_service_needs_its_scope_and_refusals_cost_nothing_upstream() {
    let (harness, id) = start().await;
    harness.fake.reset_stats();
    let mut users = harness.users().await;
    let mut quota = harness.quota().await;
    let mut admin = AdminServiceClient::new(harness.channel().await);
    let get = || GetUserRequest {
        user_id: id.clone(),
    };
    let permit = || AcquirePermitRequest {
        budget: "clerk".into(),
        ..Default::default()
    };
    let invalidate = || InvalidateUserRequest {
        user_id: id.clone(),
    };

    let denied = [
        users
            .get_user(as_caller("permits-token", get()))
            .await
            .err(),
        users
            .get_user(as_caller("operator-token", get()))
            .await
            .err(),
        quota
            .acquire_permit(as_caller("reader-token", permit()))
            .await
            .err(),
        admin
            .invalidate_user(as_caller("reader-token", invalidate()))
            .await
            .err(),
        admin
            .invalidate_user(as_caller("trusted-token", invalidate()))
            .await
            .err(),
    ];
    for (i, status) in denied.into_iter().enumerate() {
        let status = status.unwrap_or_else(|| panic!("call {i} was let in"));
        assert_eq!(status.code(), Code::PermissionDenied, "{i}: {status:?}");
        assert!(status.message().contains("scope"), "{i}: {status:?}");
    }
    assert_eq!(harness.fake.stats().requests, 0);

    // Each scope lets its own caller in.
    users
        .get_user(as_caller("reader-token", get()))
        .await
        .unwrap();
    let reply = quota
        .acquire_permit(as_caller("permits-token", permit()))
        .await
        .unwrap();
    assert!(reply.into_inner().granted);
    let reply = admin
        .invalidate_user(as_caller("operator-token", invalidate()))
        .await
        .unwrap();
    assert!(reply.into_inner().was_cached);
    // A caller whose entry names no scopes reads users and acquires permits.
    users
        .get_user(as_caller("exporter-token", get()))
        .await
        .unwrap();
    quota
        .acquire_permit(as_caller("exporter-token", permit()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_caller_at_its_limits_is_refused_and_others_are_not() {
    let (harness, id) = start().await;
    let mut users = harness.users().await;
    let list = || ListUsersRequest {
        page_size: 1,
        ..Default::default()
    };

    // One open stream (not read: the broker holds it) is the exporter's limit.
    let open = users
        .list_users(as_caller("exporter-token", list()))
        .await
        .unwrap()
        .into_inner();
    let refused = users
        .list_users(as_caller("exporter-token", list()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_streams"), "{refused:?}");
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    assert!(retry.is_some(), "{refused:?}");
    // Its unary calls and other callers' streams are not affected.
    let request = GetUserRequest {
        user_id: id.clone(),
    };
    users
        .get_user(as_caller("exporter-token", request))
        .await
        .unwrap();
    let mut other = users
        .list_users(as_caller("reader-token", list()))
        .await
        .unwrap()
        .into_inner();
    assert!(other.message().await.unwrap().is_some());
    // Closing the stream gives the slot back.
    drop(open);
    let reopened = eventually(|| {
        let mut users = users.clone();
        async move {
            users
                .list_users(as_caller("exporter-token", list()))
                .await
                .is_ok()
        }
    })
    .await;
    assert!(reopened, "the closed stream's slot never came back");

    // Two calls waiting for a permit are the permits caller's limit.
    let mut quota = harness.quota().await;
    let writes = || AcquirePermitRequest {
        budget: "writes".into(),
        // Longer than the minute to the next permit, so the call waits.
        max_wait: Some(prost_types::Duration {
            seconds: 120,
            nanos: 0,
        }),
        ..Default::default()
    };
    let first = quota
        .acquire_permit(as_caller("permits-token", writes()))
        .await
        .unwrap();
    assert!(first.into_inner().granted);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let mut quota = quota.clone();
            tokio::spawn(async move {
                quota
                    .acquire_permit(as_caller("permits-token", writes()))
                    .await
            })
        })
        .collect();
    let refused = eventually(|| {
        let mut quota = quota.clone();
        async move {
            let request = AcquirePermitRequest {
                budget: "clerk".into(),
                ..Default::default()
            };
            match quota
                .acquire_permit(as_caller("permits-token", request))
                .await
            {
                Err(status) => {
                    status.code() == Code::ResourceExhausted
                        && status.message().contains("max_in_flight")
                }
                Ok(_) => false,
            }
        }
    })
    .await;
    assert!(refused, "a third call in flight was let in");
    // Another caller is served meanwhile.
    let request = GetUserRequest { user_id: id };
    users
        .get_user(as_caller("reader-token", request))
        .await
        .unwrap();
    for task in waiting {
        task.abort();
    }
}

/// Polls `check` every 50 ms for up to 10 s; whether it ever held.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Two `authorization` entries on one call are ambiguous: refused, whichever
/// tokens they hold and in whatever order, before any upstream request.
#[tokio::test]
async fn a_call_with_two_authorization_entries_is_refused() {
    let (harness, id) = start().await;
    let mut users = harness.users().await;
    harness.fake.reset_stats();
    for (first, second) in [
        ("reader-token", "trusted-token"),
        ("reader-token", "reader-token"),
        ("reader-token", "not-a-token"),
        ("not-a-token", "trusted-token"),
    ] {
        let request = GetUserRequest {
            user_id: id.clone(),
        };
        let mut request = as_caller(first, request);
        let value = format!("Bearer {second}").parse().unwrap();
        request.metadata_mut().append("authorization", value);
        assert_eq!(
            request.metadata().get_all("authorization").iter().count(),
            2
        );
        let status = users.get_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{first} {second}");
        assert!(status.message().contains("more than one"), "{status:?}");
    }
    assert_eq!(harness.fake.stats().requests, 0);
    // One entry is served.
    let request = GetUserRequest { user_id: id };
    users
        .get_user(as_caller("reader-token", request))
        .await
        .unwrap();
}
