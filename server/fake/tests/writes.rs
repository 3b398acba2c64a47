//! The user writes: `PATCH /v1/users/{id}`, and `PATCH`/`PUT /v1/users/{id}/metadata`.

use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::fake::FakeClerkConfig;

fn updated_at(user: &Value) -> i64 {
    user["updated_at"].as_i64().expect("updated_at")
}

#[tokio::test]
async fn metadata_merge_is_deep_removes_null_keys_and_bumps_updated_at() {
    let mut users = five_users();
    users[0]["public_metadata"] = json!({"plan": "free", "limits": {"seats": 3, "gb": 5}});
    users[0]["private_metadata"] = Value::Null;
    users[0]["unsafe_metadata"] = json!({"theme": "dark"});
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), users).await;
    let before = fake.user("user_a").expect("user_a");
    let patch = json!({
        "public_metadata": {"limits": {"gb": 50, "seats": null}, "beta": true, "plan": null},
        "private_metadata": {"score": {"value": 7, "gone": null}},
    });
    let url = format!("{base}/users/user_a/metadata");
    let (status, _, user) = send(&client, Method::PATCH, &url, Some(patch)).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        user["public_metadata"],
        json!({"limits": {"gb": 50}, "beta": true})
    );
    assert_eq!(user["private_metadata"], json!({"score": {"value": 7}}));
    assert_eq!(
        user["unsafe_metadata"],
        json!({"theme": "dark"}),
        "absent: kept"
    );
    assert!(updated_at(&user) > updated_at(&before));
    assert_eq!(
        Some(&user),
        fake.user("user_a").as_ref(),
        "stored as answered"
    );
    // Everything but metadata and updated_at is untouched.
    let mut unchanged = user.clone();
    for field in ["public_metadata", "private_metadata", "updated_at"] {
        unchanged[field] = before[field].clone();
    }
    assert_eq!(unchanged, before);
    // A null field is left alone; a non-object is refused and changes nothing.
    let body = json!({"public_metadata": null, "unsafe_metadata": {"theme": null}});
    let (status, _, user) = send(&client, Method::PATCH, &url, Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(
        user["public_metadata"],
        json!({"limits": {"gb": 50}, "beta": true})
    );
    assert_eq!(user["unsafe_metadata"], json!({}));
    let stored = fake.user("user_a");
    let body = json!({"public_metadata": "plan=pro"});
    let (status, _, error) = send(&client, Method::PATCH, &url, Some(body)).await;
    assert_eq!(
        (status, first_error_code(&error)),
        (422, "form_param_format_invalid")
    );
    assert_eq!(error["errors"][0]["meta"]["param_name"], "public_metadata");
    assert_eq!(fake.user("user_a"), stored);
    assert_eq!(
        fake.stats().route_requests["PATCH /v1/users/{user_id}/metadata"],
        3
    );
}

#[tokio::test]
async fn metadata_put_replaces_each_field_given() {
    let mut users = five_users();
    users[1]["public_metadata"] = json!({"a": {"b": 1}, "c": 2});
    users[1]["private_metadata"] = json!({"secret": 1});
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), users).await;
    let url = format!("{base}/users/user_b/metadata");
    let body = json!({"public_metadata": {"a": {"z": 9}}, "unsafe_metadata": null});
    let (status, _, user) = send(&client, Method::PUT, &url, Some(body)).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["public_metadata"], json!({"a": {"z": 9}}), "no merge");
    assert_eq!(
        user["private_metadata"],
        json!({"secret": 1}),
        "absent: kept"
    );
    assert_eq!(user["unsafe_metadata"], Value::Null, "null is stored");
    assert_eq!(Some(user), fake.user("user_b"));
    let (status, _, error) = send(&client, Method::PUT, &url, Some(json!({"x": {}}))).await;
    assert_eq!(
        (status, first_error_code(&error)),
        (422, "form_param_unknown")
    );
    assert_eq!(
        fake.stats().route_requests["PUT /v1/users/{user_id}/metadata"],
        2
    );
}

#[tokio::test]
async fn update_user_sets_simple_fields_and_reindexes() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let before = fake.user("user_c").expect("user_c");
    let url = format!("{base}/users/user_c");
    let body = json!({
        "first_name": "Cyrus",
        "last_name": null,
        "username": "cyrus",
        "external_id": "ext_c",
        "public_metadata": {"replaced": true},
        "password": "ignored by the fake",
    });
    let (status, _, user) = send(&client, Method::PATCH, &url, Some(body)).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        (&user["first_name"], &user["last_name"], &user["username"]),
        (&json!("Cyrus"), &Value::Null, &json!("cyrus"))
    );
    assert_eq!(user["external_id"], "ext_c");
    assert_eq!(user["public_metadata"], json!({"replaced": true}));
    assert!(user.get("password").is_none());
    assert!(updated_at(&user) > updated_at(&before));
    assert_eq!(Some(&user), fake.user("user_c").as_ref());
    // The filters see the new values at once.
    for query in ["username=cyrus", "external_id=ext_c", "name_query=cyrus"] {
        let (_, _, found) = get(&client, &format!("{base}/users?{query}")).await;
        assert_eq!(ids(&found), ["user_c"], "{query}");
    }
    // An empty body changes nothing but updated_at.
    let (status, _, again) = send(&client, Method::PATCH, &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(again["first_name"], "Cyrus");
    assert!(updated_at(&again) > updated_at(&user));
}

#[tokio::test]
async fn update_user_refuses_bad_bodies_without_changing_anything() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let url = format!("{base}/users/user_d");
    let before = fake.user("user_d");
    let cases = [
        (
            json!({"username": "eve_name"}),
            "form_identifier_exists",
            "username",
        ),
        (
            json!({"external_id": "ext_1"}),
            "form_identifier_exists",
            "external_id",
        ),
        (
            json!({"first_name": 7}),
            "form_param_format_invalid",
            "first_name",
        ),
        (
            json!({"private_metadata": [1]}),
            "form_param_format_invalid",
            "private_metadata",
        ),
        (json!({"banned": true}), "form_param_unknown", "banned"),
        (
            json!({"first_name": "ok", "nickname": "x"}),
            "form_param_unknown",
            "nickname",
        ),
    ];
    for (body, code, param) in cases {
        let (status, _, error) = send(&client, Method::PATCH, &url, Some(body.clone())).await;
        assert_eq!((status, first_error_code(&error)), (422, code), "{body}");
        assert_eq!(error["errors"][0]["meta"]["param_name"], param, "{body}");
        assert!(error["clerk_trace_id"].is_string());
    }
    let not_json = client
        .patch(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{first_name:")
        .send()
        .await
        .expect("send");
    assert_eq!(not_json.status(), 422);
    assert_eq!(fake.user("user_d"), before, "nothing changed");
    // Keeping one's own username is not a conflict.
    let own = json!({"username": "dee_name"});
    assert_eq!(send(&client, Method::PATCH, &url, Some(own)).await.0, 200);
}

#[tokio::test]
async fn writes_to_unknown_users_get_clerks_404() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let body = json!({"public_metadata": {"a": 1}});
    for (method, path) in [
        (Method::PATCH, "users/user_zz"),
        (Method::PATCH, "users/user_zz/metadata"),
        (Method::PUT, "users/user_zz/metadata"),
    ] {
        let url = format!("{base}/{path}");
        let (status, _, error) = send(&client, method.clone(), &url, Some(body.clone())).await;
        assert_eq!(
            (status, first_error_code(&error)),
            (404, "resource_not_found"),
            "{method} {path}"
        );
        assert_eq!(
            error["errors"][0]["long_message"],
            "No user was found with id user_zz"
        );
    }
    assert_eq!(fake.user_count(), 5);
    // Unknown methods on known paths stay 404s, as before.
    let (status, _, _) = send(
        &client,
        Method::DELETE,
        &format!("{base}/users/user_a"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(fake.stats().route_requests["other"], 1);
}
