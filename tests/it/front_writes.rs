//! Writes and pass-through routes of the Clerk-compatible front: a write
//! keeps the cache honest (here, through gRPC, and on another replica),
//! Clerk's per-endpoint limits are keyed budgets the fake never sees
//! exceeded, organizations' answers lose `private_metadata` at any depth,
//! and Clerk's own 429 comes back with its `Retry-After`.

use std::time::Duration;

use clerk_broker::pb::{GetUserRequest, UpdateUserMetadataRequest};
use prost_types::{Struct, Value as ProtoValue, value::Kind};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    front::{client, get, policy, start},
    harness::{Harness, Options},
    redis::shared_url,
};

/// `PATCH /v1/users/{id}/metadata` through the front as `token`.
async fn patch_metadata(
    harness: &Harness,
    token: &str,
    id: &str,
    body: Value,
) -> reqwest::Response {
    client()
        .patch(format!(
            "http://{}/v1/users/{id}/metadata",
            harness.front_addr
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("x-clerk-broker-timeout", "2s")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Two brokers in front of one fake Clerk, sharing budgets and the cache
/// through Redis.
async fn replicas() -> (Harness, Harness) {
    let prefix = format!("front-{:08x}", fastrand::u32(..));
    let options = || Options {
        users: 300,
        policy: policy(),
        redis: Some(shared_url()),
        redis_prefix: prefix.clone(),
        ..Options::default()
    };
    let harness = Harness::start(options()).await;
    let replica = harness.replica(options()).await;
    (harness, replica)
}

fn as_caller<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn a_write_is_seen_by_the_next_read_here_through_grpc_and_on_another_replica() {
    // Two replicas sharing the cache's invalidations through Redis.
    let (harness, replica) = replicas().await;
    let id = harness.ids[3].clone();
    // Both replicas cache the user first.
    for broker in [&harness, &replica] {
        let (status, _, _) = get(broker, "sk_live_trusted", &format!("/v1/users/{id}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let written = patch_metadata(
        &harness,
        "sk_live_trusted",
        &id,
        json!({"public_metadata": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(written.status(), StatusCode::OK);
    let written: Value = serde_json::from_str(&written.text().await.unwrap()).unwrap();
    assert_eq!(written["public_metadata"]["plan"], "pro");
    let (_, cache, body) = get(&harness, "sk_live_trusted", &format!("/v1/users/{id}")).await;
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["public_metadata"]["plan"], "pro", "{cache:?}");
    let mut users = harness.users().await;
    let user = users
        .get_user(as_caller(
            "sk_live_trusted",
            GetUserRequest {
                user_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    let raw: Value = serde_json::from_str(&user.get_ref().raw_json).unwrap();
    assert_eq!(raw["public_metadata"]["plan"], "pro");
    // The other replica had the old version cached: the fan-out dropped it.
    let mut seen = Value::Null;
    for _ in 0..50 {
        let (_, _, body) = get(&replica, "sk_live_trusted", &format!("/v1/users/{id}")).await;
        seen = serde_json::from_str(&body).unwrap();
        if seen["public_metadata"]["plan"] == "pro" {
            break;
        }
        // Pub/sub delivery is asynchronous.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["public_metadata"]["plan"], "pro", "{seen}");
}

#[tokio::test]
async fn update_user_metadata_over_grpc_merges_needs_its_scope_and_updates_the_cache() {
    let harness = start().await;
    let id = harness.ids[4].clone();
    let mut users = harness.users().await;
    let request = |token: &str| {
        let plan = ProtoValue {
            kind: Some(Kind::StringValue("team".into())),
        };
        as_caller(
            token,
            UpdateUserMetadataRequest {
                user_id: id.clone(),
                public_metadata: Some(Struct {
                    fields: [("plan".to_owned(), plan)].into(),
                }),
                ..Default::default()
            },
        )
    };
    let refused = users
        .update_user_metadata(request("sk_live_reader"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let answer = users
        .update_user_metadata(request("sk_live_trusted"))
        .await
        .unwrap();
    let user = answer.into_inner().user.unwrap();
    let raw: Value = serde_json::from_str(&user.raw_json).unwrap();
    assert_eq!(raw["public_metadata"]["plan"], "team");
    harness.fake.reset_stats();
    let (_, cache, body) = get(&harness, "sk_live_reader", &format!("/v1/users/{id}")).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert!(body.contains(r#""plan":"team""#), "{body}");
    assert_eq!(harness.fake.stats().requests, 0, "served from the cache");
    let empty = users
        .update_user_metadata(as_caller(
            "sk_live_trusted",
            UpdateUserMetadataRequest {
                user_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn ten_times_the_per_user_limit_never_meets_clerks_429() {
    let harness = start().await;
    let id = harness.ids[5].clone();
    let calls = (0..100).map(|n| {
        let id = id.clone();
        let harness = &harness;
        async move {
            let response = patch_metadata(
                harness,
                "sk_live_trusted",
                &id,
                json!({"public_metadata": {"n": n}}),
            )
            .await;
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body = response.text().await.unwrap();
            (status, retry_after, body)
        }
    });
    let outcomes = futures_util::future::join_all(calls).await;
    let mut ok = 0;
    for (status, retry_after, body) in outcomes {
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry_after.is_some(), "{body}");
                let envelope: Value = serde_json::from_str(&body).unwrap();
                assert!(envelope["errors"][0]["code"].is_string(), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    let stats = harness.fake.stats();
    assert!(
        stats.endpoint_rate_limited.is_empty() && stats.rate_limited == 0,
        "{stats:?}"
    );
    assert!((1..=10).contains(&ok), "{ok} writes in one window");
}

#[tokio::test]
async fn replicas_share_the_per_user_limit_through_redis() {
    let (harness, replica) = replicas().await;
    let id = harness.ids[6].clone();
    let calls = (0..60).map(|n| {
        let id = id.clone();
        let broker = if n % 2 == 0 { &harness } else { &replica };
        async move {
            let response = patch_metadata(
                broker,
                "sk_live_trusted",
                &id,
                json!({"public_metadata": {"n": n}}),
            )
            .await;
            response.status()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let stats = harness.fake.stats();
    assert!(
        stats.endpoint_rate_limited.is_empty() && stats.rate_limited == 0,
        "{stats:?}"
    );
    assert!(
        (1..=10).contains(&ok),
        "{ok} writes in one window over two replicas"
    );
}

#[tokio::test]
async fn organizations_pass_through_without_private_metadata_and_clerks_429_comes_back() {
    let harness = start().await;
    let org = harness.fake.organizations()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/v1/organizations/{org}"),
        format!("/v1/organizations/{org}/memberships"),
    ] {
        let expected = client()
            .get(format!(
                "{}{}",
                harness.fake_url.trim_end_matches('/'),
                path.strip_prefix("/v1").unwrap()
            ))
            .bearer_auth(crate::harness::KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(expected.contains("private_metadata"), "{expected}");
        let (status, _, body) = get(&harness, "sk_live_orgs", &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(!body.contains("private_metadata"), "{path}: {body}");
        let mut without: Value = serde_json::from_str(&expected).unwrap();
        strip(&mut without);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), without);
    }
    harness.fake.block_for(Duration::from_secs(3));
    let response = client()
        .get(format!(
            "http://{}/v1/organizations/{org}",
            harness.front_addr
        ))
        .bearer_auth("sk_live_orgs")
        .header("x-clerk-broker-timeout", "1s")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn invitations_pass_through_for_callers_with_the_route() {
    let harness = start().await;
    let invite = |token: &'static str| {
        let front = harness.front_addr;
        async move {
            client()
                .post(format!("http://{front}/v1/invitations"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(json!({"email_address": "new.person@example.org"}).to_string())
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        invite("sk_live_reader").await.status(),
        StatusCode::FORBIDDEN
    );
    assert!(harness.fake.invitations().is_empty());
    let created = invite("sk_live_inviter").await;
    assert_eq!(created.status(), StatusCode::OK);
    let created: Value = serde_json::from_str(&created.text().await.unwrap()).unwrap();
    assert_eq!(created["email_address"], "new.person@example.org");
    assert_eq!(harness.fake.invitations().len(), 1);
}

/// `value` without `private_metadata` at any depth.
fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("private_metadata");
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}
