//! `raw_json` is the user object exactly as Clerk sent it: the fake Clerk's
//! own bytes for a user, byte for byte, on a miss, on a hit, through
//! BatchGetUsers and ListUsers, from a webhook, and from another replica's
//! shared entry; for a caller without `read_private_metadata`, those bytes
//! less `private_metadata` (`json::without_key`), and nothing else.

use std::time::Duration;

use clerk_broker::{
    callers::Policy,
    json::without_key,
    pb::{BatchGetUsersRequest, GetUserRequest, ListUsersRequest, User, UserFilter},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    callers::as_caller,
    harness::{Harness, KEY, Options, WEBHOOK_SECRET},
    webhooks::{Delivery, post},
};

/// A caller that sees private metadata, and one that does not.
fn policy() -> Policy {
    let mut text = String::new();
    for (name, scopes) in [
        ("trusted", r#"["read_users", "read_private_metadata"]"#),
        ("reader", r#"["read_users"]"#),
    ] {
        let hash: String = Sha256::digest(format!("{name}-token").as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        text += &format!(
            "[[callers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nscopes = {scopes}\n"
        );
    }
    Policy::parse(&text, |_| Duration::ZERO).unwrap()
}

fn options() -> Options {
    Options {
        users: 50,
        policy: policy(),
        ..Options::default()
    }
}

/// The fake Clerk's answer to `GET /v1/users/{id}`, as bytes on the wire.
async fn clerk_bytes(harness: &Harness, id: &str) -> String {
    // reqwest is built without a provider (the broker installs it at start).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("{}/users/{id}", harness.fake_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

/// What a caller with (`trusted`) or without the scope must get for `clerk`.
fn expected(clerk: &str, trusted: bool) -> String {
    if trusted {
        clerk.to_owned()
    } else {
        without_key(clerk, "private_metadata").into_owned()
    }
}

fn token(trusted: bool) -> &'static str {
    if trusted {
        "trusted-token"
    } else {
        "reader-token"
    }
}

/// GetUser's `raw_json` and `x-cache` for the caller.
async fn get(harness: &Harness, id: &str, trusted: bool) -> (String, String) {
    let request = as_caller(token(trusted), GetUserRequest { user_id: id.into() });
    let response = harness.users().await.get_user(request).await.unwrap();
    let cache = response
        .metadata()
        .get("x-cache")
        .unwrap()
        .to_str()
        .unwrap();
    let cache = cache.to_owned();
    (response.into_inner().raw_json, cache)
}

fn by_id(users: Vec<User>) -> Vec<(String, String)> {
    users
        .into_iter()
        .map(|user| (user.id, user.raw_json))
        .collect()
}

#[tokio::test]
async fn raw_json_is_clerks_bytes_on_every_path() {
    let harness = Harness::start(options()).await;
    let ids = harness.ids[..3].to_vec();
    let mut clerk = Vec::new();
    for id in &ids {
        clerk.push(clerk_bytes(&harness, id).await);
    }
    // The fake writes fields in Clerk's order, not sorted: a broker that
    // wrote the user out again would not give these bytes.
    let parsed: Value = serde_json::from_str(&clerk[0]).unwrap();
    assert_ne!(serde_json::to_string(&parsed).unwrap(), clerk[0]);
    assert!(clerk[0].contains("\"private_metadata\":"), "{}", clerk[0]);
    assert_ne!(expected(&clerk[0], false), clerk[0]);

    // A miss then a hit, for each kind of caller.
    for (trusted, cache) in [(true, "miss"), (true, "hit"), (false, "hit")] {
        let (raw, x_cache) = get(&harness, &ids[0], trusted).await;
        assert_eq!(x_cache, cache);
        assert_eq!(
            raw,
            expected(&clerk[0], trusted),
            "{cache}, trusted: {trusted}"
        );
    }
    for trusted in [true, false] {
        let want: Vec<(String, String)> = ids
            .iter()
            .zip(&clerk)
            .map(|(id, clerk)| (id.clone(), expected(clerk, trusted)))
            .collect();
        let request = BatchGetUsersRequest {
            user_ids: ids.clone(),
        };
        let batch = harness
            .users()
            .await
            .batch_get_users(as_caller(token(trusted), request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            by_id(batch.users),
            want,
            "BatchGetUsers, trusted: {trusted}"
        );

        let request = ListUsersRequest {
            filter: Some(UserFilter {
                user_ids: ids.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut stream = harness
            .users()
            .await
            .list_users(as_caller(token(trusted), request))
            .await
            .unwrap()
            .into_inner();
        let mut listed = Vec::new();
        while let Some(page) = stream.message().await.unwrap() {
            listed.extend(by_id(page.users));
        }
        listed.sort();
        let mut want = want;
        want.sort();
        assert_eq!(listed, want, "ListUsers, trusted: {trusted}");
    }
}

/// A user object as a webhook might carry it: spacing, field order, escapes
/// and number spellings no serializer of ours would write.
fn odd_user(id: &str, first_name_escaped: &str, updated_at: i64) -> String {
    format!(
        r#"{{ "updated_at" : {updated_at}, "object":"user",  "id":"{id}",
  "first_name":"{first_name_escaped}", "private_metadata" : {{"score":1.50E+2}},
  "public_metadata":{{"z":[ ],"a":"\/"}} }}"#
    )
}

#[tokio::test]
async fn a_webhooks_user_keeps_the_bytes_of_its_data_object() {
    let harness = Harness::start(options()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let id = harness.ids[5].clone();
    let updated_at = harness.fake.user(&id).unwrap()["updated_at"]
        .as_i64()
        .unwrap();
    let data = odd_user(&id, "Zo\\u00eb", updated_at + 1_000);
    let body = format!(r#"{{"type":"user.updated","object":"event","timestamp":1,"data":{data}}}"#);
    let delivery = Delivery::signed_body("msg_raw_1", body.into_bytes(), WEBHOOK_SECRET);
    let (status, body) = post(&harness, &delivery, false).await;
    assert_eq!(status, 200, "{body}");
    for trusted in [true, false] {
        let (raw, cache) = get(&harness, &id, trusted).await;
        assert_eq!(cache, "hit");
        assert_eq!(raw, expected(&data, trusted));
    }
    let user = harness
        .users()
        .await
        .get_user(as_caller(token(true), GetUserRequest { user_id: id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.first_name.as_deref(), Some("Zoë"));
}

#[tokio::test]
async fn another_replicas_shared_entry_keeps_clerks_bytes() {
    let url = crate::redis::shared_url();
    let prefix = format!("raw-{:08x}", fastrand::u32(..));
    let replica = || Options {
        redis: Some(url.clone()),
        redis_prefix: prefix.clone(),
        redis_timeout: Duration::from_secs(3),
        ..options()
    };
    let a = Harness::start(replica()).await;
    let b = a.replica(replica()).await;
    let id = a.ids[7].clone();
    let clerk = clerk_bytes(&a, &id).await;
    assert_eq!(get(&a, &id, true).await, (clerk.clone(), "miss".into()));
    a.fake.reset_stats();
    for trusted in [true, false] {
        assert_eq!(get(&b, &id, trusted).await.0, expected(&clerk, trusted));
    }
    assert_eq!(a.fake.stats().requests, 0, "B read A's shared entry");

    // A webhook's bytes reach the other replica exact too.
    let other = a.ids[8].clone();
    let data = odd_user(&other, "\\u00c9mile", 4_000_000_000_000);
    let body = format!(r#"{{"type":"user.updated","data":{data}}}"#);
    let delivery = Delivery::signed_body("msg_raw_2", body.into_bytes(), WEBHOOK_SECRET);
    assert_eq!(post(&a, &delivery, false).await.0, 200);
    for trusted in [true, false] {
        assert_eq!(get(&b, &other, trusted).await.0, expected(&data, trusted));
    }
    assert_eq!(
        a.fake.stats().requests,
        0,
        "B read the webhook's shared entry"
    );
}
