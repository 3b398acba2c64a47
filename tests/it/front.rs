//! The Clerk-compatible front, driven over plain HTTP as Clerk's SDKs drive
//! it: answers byte for byte what the fake Clerk itself answers, reads from
//! the cache and the batcher, allow-lists refused before any budget is
//! spent, `private_metadata` only for callers with its scope, the caller's
//! token never forwarded and the key never shown.

use std::time::Duration;

use clerk_broker::{callers::Policy, config::LookupConfig};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Harness, KEY, Options, test_lookup};

/// Callers: name, token, and the rest of its `[[callers]]` entry.
const CALLERS: [(&str, &str, &str); 6] = [
    ("reader", "sk_live_reader", "scopes = [\"read_users\"]"),
    (
        "trusted",
        "sk_live_trusted",
        "scopes = [\"read_users\", \"read_private_metadata\", \"write_users\"]",
    ),
    (
        "orgs",
        "sk_live_orgs",
        "scopes = []\nroutes = [\"* /v1/organizations/**\"]",
    ),
    (
        "permits",
        "sk_live_permits",
        "scopes = [\"acquire_permits\"]",
    ),
    (
        "narrow",
        "sk_live_narrow",
        "scopes = [\"read_users\"]\nmax_in_flight = 1",
    ),
    (
        "inviter",
        "sk_live_inviter",
        "scopes = [\"read_users\"]\nroutes = [\"POST /v1/invitations\"]",
    ),
];

/// A marker stored in one user's `private_metadata`.
pub(crate) const SECRET: &str = "cus_private_marker";

pub(crate) fn policy() -> Policy {
    let mut text = String::new();
    for (name, token, rest) in CALLERS {
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        text += &format!("[[callers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n{rest}\n");
    }
    Policy::parse(&text, |_| Duration::ZERO).unwrap()
}

pub(crate) async fn start() -> Harness {
    let harness = Harness::start(Options {
        users: 300,
        policy: policy(),
        ..Options::default()
    })
    .await;
    let mut user = harness.fake.user(&harness.ids[0]).unwrap();
    user["private_metadata"] =
        json!({"stripe_customer": SECRET, "nested": {"private_metadata": 1}});
    harness.fake.upsert_user(user);
    harness
}

/// An HTTP client (reqwest is built without a default TLS provider).
pub(crate) fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

/// A GET to the front as `token`: status, `x-cache`, body.
pub(crate) async fn get(
    harness: &Harness,
    token: &str,
    path: &str,
) -> (StatusCode, Option<String>, String) {
    let response = client()
        .get(format!("http://{}{path}", harness.front_addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, cache, response.text().await.unwrap())
}

/// The fake Clerk's own answer to `path` (under its base URL, ending /v1).
async fn fake_answer(harness: &Harness, path: &str) -> String {
    let path = path.strip_prefix("/v1").unwrap();
    client()
        .get(format!("{}{path}", harness.fake_url.trim_end_matches('/')))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn reads_answer_byte_for_byte_what_clerk_answers_and_hits_cost_nothing() {
    let harness = start().await;
    let id = harness.ids[0].clone();
    let paths = [
        format!("/v1/users/{id}"),
        format!(
            "/v1/users?user_id={}&user_id={}&user_id={}&user_id=user_unknown",
            harness.ids[5], id, harness.ids[9]
        ),
        format!(
            "/v1/users?user_id={}&user_id={}&order_by=%2Bcreated_at&limit=1&offset=1",
            harness.ids[5], harness.ids[9]
        ),
        "/v1/users/count".to_owned(),
        format!(
            "/v1/users/count?user_id={}&user_id={}&user_id=user_unknown",
            harness.ids[5], harness.ids[9]
        ),
        "/v1/users/count?email_address_query=example".to_owned(),
        // Filters the front does not serve itself pass through, unchanged.
        "/v1/users?email_address_query=example&limit=3".to_owned(),
    ];
    for path in &paths {
        let expected = fake_answer(&harness, path).await;
        let (status, _, body) = get(&harness, "sk_live_trusted", path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, expected, "{path}");
    }
    harness.fake.reset_stats();
    let (status, cache, body) = get(&harness, "sk_live_trusted", &paths[0]).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("hit")));
    assert_eq!(body, fake_answer(&harness, &paths[0]).await);
    assert_eq!(
        harness.fake.stats().requests,
        1,
        "only the test's own request"
    );
}

#[tokio::test]
async fn many_callers_of_many_cold_ids_share_a_few_requests() {
    let harness = Harness::start(Options {
        users: 300,
        policy: policy(),
        // Calls reach a debug build slowly on a loaded machine.
        lookup: LookupConfig {
            batch_window: Duration::from_millis(50),
            ..test_lookup()
        },
        ..Options::default()
    })
    .await;
    // Services hold warm connections to the front: open 200 (refused
    // requests cost nothing upstream), as an SDK's connection pool would.
    let client = client();
    let front = harness.front_addr;
    let calls = (0..200).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            let response = client
                .get(format!("http://{front}/v1/users/user_x"))
                .bearer_auth("sk_live_nobody")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        })
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(harness.fake.stats().requests, 0);
    let calls = harness.ids[100..300].iter().cloned().map(|id| {
        let client = client.clone();
        tokio::spawn(async move {
            let response = client
                .get(format!("http://{front}/v1/users/{id}"))
                .bearer_auth("sk_live_reader")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let user: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(user["id"], id.as_str());
        })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap();
    }
    let requests = harness.fake.stats().requests;
    assert!(requests <= 3, "200 cold ids cost {requests} requests");
}

#[tokio::test]
async fn private_metadata_is_removed_at_any_depth_for_callers_without_its_scope() {
    let harness = start().await;
    let id = harness.ids[0].clone();
    for path in [
        format!("/v1/users/{id}"),
        format!("/v1/users?user_id={id}"),
        // Passed through: the answer is filtered too.
        format!("/v1/users?query={id}"),
    ] {
        for _ in 0..2 {
            // A miss, then a hit where the front serves the read.
            let (status, _, seen) = get(&harness, "sk_live_reader", &path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {seen}");
            assert!(seen.contains(&id), "{path}: {seen}");
            assert!(!seen.contains("private_metadata"), "{path}: {seen}");
            assert!(!seen.contains(SECRET), "{path}: {seen}");
            let (_, _, trusted) = get(&harness, "sk_live_trusted", &path).await;
            assert!(trusted.contains(SECRET), "{path}: {trusted}");
        }
    }
}

#[tokio::test]
async fn refusals_speak_clerk_and_cost_nothing_upstream() {
    let harness = start().await;
    harness.fake.reset_stats();
    let user = format!("/v1/users/{}", harness.ids[1]);
    let cases = [
        ("sk_live_unknown", user.as_str(), StatusCode::UNAUTHORIZED),
        ("", user.as_str(), StatusCode::UNAUTHORIZED),
        ("sk_live_permits", user.as_str(), StatusCode::FORBIDDEN),
        ("sk_live_orgs", user.as_str(), StatusCode::FORBIDDEN),
        ("sk_live_reader", "/v1/invitations", StatusCode::FORBIDDEN),
        ("sk_live_reader", "/v2/users", StatusCode::NOT_FOUND),
    ];
    for (token, path, expected) in cases {
        let (status, _, body) = get(&harness, token, path).await;
        assert_eq!(status, expected, "{token} {path}: {body}");
        let envelope: Value = serde_json::from_str(&body).unwrap();
        assert!(envelope["errors"][0]["code"].is_string(), "{body}");
        assert!(envelope["errors"][0]["long_message"].is_string(), "{body}");
    }
    assert_eq!(harness.fake.stats().requests, 0);
    // A write by a caller without the route: refused before any budget.
    let refused = client()
        .patch(format!("http://{}{user}/metadata", harness.front_addr))
        .bearer_auth("sk_live_reader")
        .header("content-type", "application/json")
        .body(json!({"public_metadata": {"plan": "pro"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(harness.fake.stats().requests, 0);
    // Bad demand headers are the caller's to fix.
    let bad = client()
        .get(format!("http://{}{user}", harness.front_addr))
        .bearer_auth("sk_live_reader")
        .header("x-clerk-broker-timeout", "forever")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("x-clerk-broker-timeout"));
    for (priority, expected) in [
        ("bulk", StatusCode::OK),
        ("interactive", StatusCode::OK),
        ("urgent", StatusCode::BAD_REQUEST),
    ] {
        let response = client()
            .get(format!("http://{}{user}", harness.front_addr))
            .bearer_auth("sk_live_reader")
            .header("x-clerk-broker-priority", priority)
            .header("x-clerk-broker-timeout", "5s")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{priority}");
    }
}

#[tokio::test]
async fn the_callers_token_stays_behind_and_the_key_is_never_shown() {
    let harness = start().await;
    // The fake accepts only the broker's key: a passed-through success
    // proves the caller's token was replaced.
    let (status, _, body) = get(&harness, "sk_live_trusted", "/v1/users?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut seen = body;
    for (token, path) in [
        ("sk_live_unknown", "/v1/users"),
        ("sk_live_reader", "/v1/users/user_missing"),
        ("sk_live_reader", "/v1/organizations"),
        ("sk_live_trusted", "/v1/nothing_here"),
    ] {
        let response = client()
            .get(format!("http://{}{path}", harness.front_addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        for (name, value) in response.headers() {
            seen += &format!("{name}: {}\n", value.to_str().unwrap_or(""));
        }
        seen += &response.text().await.unwrap();
    }
    assert!(!seen.contains(KEY), "the key leaked");
    assert!(!seen.contains("sk_live_trusted"), "a token leaked");
}

#[tokio::test]
async fn reads_of_other_api_versions_pass_through() {
    let harness = start().await;
    let path = format!("/v1/users/{}", harness.ids[7]);
    for (version, served) in [
        (None, true),
        (Some("2025-11-10"), true),
        (Some("2026-05-12"), true),
        (Some("2021-02-05"), false),
    ] {
        let mut request = client()
            .get(format!("http://{}{path}", harness.front_addr))
            .bearer_auth("sk_live_reader");
        if let Some(version) = version {
            request = request.header("clerk-api-version", version);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{version:?}");
        assert_eq!(
            response.headers().contains_key("x-cache"),
            served,
            "{version:?}"
        );
    }
    assert_eq!(
        harness.fake.stats().last_api_version.as_deref(),
        Some("2021-02-05"),
        "the caller's version is forwarded as sent"
    );
}

#[tokio::test]
async fn a_request_holds_one_of_its_callers_in_flight_slots_shared_with_grpc() {
    let harness = start().await;
    harness.fake.set_faults(clerk_broker::fake::Faults {
        latency: Duration::from_millis(1500),
        ..Default::default()
    });
    let front = harness.front_addr;
    let slow = format!("/v1/users/{}", harness.ids[20]);
    let held = tokio::spawn(async move {
        client()
            .get(format!("http://{front}{slow}"))
            .bearer_auth("sk_live_narrow")
            .send()
            .await
            .unwrap()
            .status()
    });
    // The first request is at the fake (slowed down) and holds the slot.
    while harness.fake.stats().requests == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = client()
        .get(format!("http://{front}/v1/users/{}", harness.ids[21]))
        .bearer_auth("sk_live_narrow")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.text().await.unwrap().contains("max_in_flight"));
    let mut users = harness.users().await;
    let mut request = tonic::Request::new(clerk_broker::pb::GetUserRequest {
        user_id: harness.ids[22].clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer sk_live_narrow".parse().unwrap());
    let grpc = users.get_user(request).await.unwrap_err();
    assert_eq!(grpc.code(), tonic::Code::ResourceExhausted, "{grpc:?}");
    // Another caller is not held up.
    let (status, _, _) = get(
        &harness,
        "sk_live_reader",
        &format!("/v1/users/{}", harness.ids[0]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    harness
        .fake
        .set_faults(clerk_broker::fake::Faults::default());
    let (status, _, _) = get(
        &harness,
        "sk_live_narrow",
        &format!("/v1/users/{}", harness.ids[21]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the slot came back");
}
