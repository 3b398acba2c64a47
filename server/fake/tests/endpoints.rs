//! Auth, the three users endpoints, their filters, ordering, paging and 422s.

use serde_json::{Value, json};

use super::*;
use crate::fake::{FakeClerkConfig, seed};

#[tokio::test]
async fn auth_comes_first_and_names_the_problem() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let missing = client
        .get(format!("{base}/users"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 401);
    let body: Value = serde_json::from_slice(&missing.bytes().await.expect("body")).expect("json");
    assert_eq!(first_error_code(&body), "authentication_invalid");
    let wrong = client
        .get(format!("{base}/users"))
        .bearer_auth("sk_test_other")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let trace = wrong.headers()["clerk-trace-id"]
        .to_str()
        .expect("trace")
        .to_owned();
    let body: Value = serde_json::from_slice(&wrong.bytes().await.expect("body")).expect("json");
    assert_eq!(first_error_code(&body), "clerk_key_invalid");
    assert_eq!(body["clerk_trace_id"], trace.as_str());
    assert_eq!(fake.stats().unauthorized, 2);
    assert_eq!(fake.stats().list_requests, 2);
}

#[tokio::test]
async fn get_returns_the_user_or_clerks_404() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let response = client
        .get(format!("{base}/users/user_a"))
        .bearer_auth(KEY)
        .header("Clerk-API-Version", "2025-11-10");
    let response = response.send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("clerk-trace-id"));
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    assert_eq!(body, fake.user("user_a").expect("stored"));
    let (status, _, body) = get(&client, &format!("{base}/users/user_zz")).await;
    assert_eq!(status, 404);
    assert_eq!(first_error_code(&body), "resource_not_found");
    assert_eq!(
        body["errors"][0]["long_message"],
        "No user was found with id user_zz"
    );
    assert!(body["clerk_trace_id"].is_string());
    let stats = fake.stats();
    assert_eq!(
        (stats.get_requests, stats.last_api_version.as_deref()),
        (2, Some("2025-11-10"))
    );
    assert!(fake.delete_user("user_a"));
    assert_eq!(get(&client, &format!("{base}/users/user_a")).await.0, 404);
}

#[tokio::test]
async fn list_orders_pages_and_filters() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let list = |query: &str| format!("{base}/users?{query}");
    // Default: newest first, the created_at tie (c, d) broken by id ascending.
    assert_eq!(
        ids(&get(&client, &list("")).await.2),
        ["user_e", "user_b", "user_c", "user_d", "user_a"]
    );
    assert_eq!(
        ids(&get(&client, &list("order_by=created_at")).await.2),
        ["user_a", "user_c", "user_d", "user_b", "user_e"]
    );
    assert_eq!(
        ids(
            &get(&client, &list("order_by=%2Bcreated_at&limit=2&offset=1"))
                .await
                .2
        ),
        ["user_c", "user_d"]
    );
    // Nulls last in both directions.
    assert_eq!(
        ids(&get(&client, &list("order_by=-first_name")).await.2),
        ["user_e", "user_d", "user_b", "user_a", "user_c"]
    );
    assert_eq!(
        ids(&get(&client, &list("order_by=first_name")).await.2)[4],
        "user_c"
    );
    let cases = [
        (
            "user_id=user_a&user_id=user_c&user_id=nope",
            vec!["user_c", "user_a"],
        ),
        ("user_id=user_a&user_id=user_b&banned=false", vec!["user_a"]),
        ("banned=true", vec!["user_b"]),
        ("organization_id=org_1", vec!["user_e", "user_b"]),
        (
            "organization_id=org_2&organization_id=org_9",
            vec!["user_e"],
        ),
        ("external_id=ext_1", vec!["user_a"]),
        ("email_address=dee@example.com", vec!["user_d"]),
        ("phone_number=%2B15550001111", vec!["user_d"]),
        (
            "username=eve_name&username=bob_name",
            vec!["user_e", "user_b"],
        ),
        ("query=EVE", vec!["user_e"]),
        ("query=user_d", vec!["user_d"]),
        (
            "email_address_query=@EXAMPLE",
            vec!["user_e", "user_b", "user_c", "user_d", "user_a"],
        ),
        ("phone_number_query=0001", vec!["user_d"]),
        ("name_query=ada%20te", vec!["user_a"]),
        (
            "username_query=_NAME&created_at_after=2000",
            vec!["user_e", "user_b"],
        ),
        ("created_at_before=2000", vec!["user_a"]),
        ("last_active_at_after=5000", vec!["user_c"]),
        ("last_active_at_before=7000", vec!["user_a"]),
        ("unknown_param=1&query=ad", vec!["user_a"]),
    ];
    for (query, expected) in cases {
        let (status, _, body) = get(&client, &list(query)).await;
        assert_eq!((status, ids(&body)), (200, expected.clone()), "{query}");
        let (status, _, count) = get(
            &client,
            &format!("{base}/users/count?{query}&limit=1&order_by=bogus"),
        )
        .await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(
            count,
            json!({"object": "total_count", "total_count": expected.len()}),
            "{query}"
        );
    }
    fake.upsert_user(user("user_f", "Fay", 9000, json!({})));
    assert_eq!(ids(&get(&client, &list("limit=1")).await.2), ["user_f"]);
    assert_eq!(fake.user_count(), 6);
}

#[tokio::test]
async fn list_rejects_bad_params_like_clerk() {
    let (_fake, base, client) =
        start(FakeClerkConfig::new(KEY), seed::synthetic_users(600, 1)).await;
    let (status, _, body) = get(&client, &format!("{base}/users?limit=500")).await;
    assert_eq!((status, ids(&body).len()), (200, 500));
    // The faithful quirk: over 500 is not an error, it is silently 10.
    let (status, _, body) = get(&client, &format!("{base}/users?limit=501")).await;
    assert_eq!((status, ids(&body).len()), (200, 10));
    let too_many: String = (0..101).map(|i| format!("user_id=user_{i}&")).collect();
    for query in [
        "limit=0",
        "limit=ten",
        "order_by=-age",
        "offset=-1",
        "banned=yes",
        "created_at_after=soon",
        &too_many,
    ] {
        let (status, _, body) = get(&client, &format!("{base}/users?{query}")).await;
        assert_eq!(
            (status, first_error_code(&body)),
            (422, "form_param_value_invalid"),
            "{query}"
        );
    }
    let hundred: String = (0..100).map(|i| format!("user_id=user_{i}&")).collect();
    assert_eq!(
        get(&client, &format!("{base}/users?{hundred}")).await.0,
        200
    );
    assert_eq!(
        get(&client, &format!("{base}/users/count?{too_many}"))
            .await
            .0,
        422
    );
}
