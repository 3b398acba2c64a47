//! Clerk webhooks on the broker's HTTP listener: a signed `user.updated` or
//! `user.deleted` changes what GetUser answers at once; forged, stale and
//! replayed deliveries are refused and change nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use clerk_broker::{config::LookupConfig, pb::GetUserRequest, webhook::WebhookSecret};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Harness, Options, WEBHOOK_SECRET, test_lookup};

/// A delivery as Svix would send it (or as a forger might).
pub(crate) struct Delivery {
    id: String,
    timestamp: i64,
    body: Vec<u8>,
    signature: Option<String>,
}

impl Delivery {
    /// `event` signed now with `secret`.
    pub(crate) fn signed(id: &str, event: &Value, secret: &str) -> Self {
        let timestamp = now();
        Self::signed_at(id, event, secret, timestamp)
    }

    /// `body`, exactly these bytes, signed now with `secret`.
    pub(crate) fn signed_body(id: &str, body: Vec<u8>, secret: &str) -> Self {
        let timestamp = now();
        let signature = WebhookSecret::parse(secret)
            .unwrap()
            .sign(id, timestamp, &body);
        Self {
            id: id.into(),
            timestamp,
            body,
            signature: Some(signature),
        }
    }

    fn signed_at(id: &str, event: &Value, secret: &str, timestamp: i64) -> Self {
        let body = serde_json::to_vec(event).unwrap();
        let signature = WebhookSecret::parse(secret)
            .unwrap()
            .sign(id, timestamp, &body);
        Self {
            id: id.into(),
            timestamp,
            body,
            signature: Some(signature),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Posts `delivery` to the broker; returns the status and the body.
pub(crate) async fn post(harness: &Harness, delivery: &Delivery, unbranded: bool) -> (u16, String) {
    let prefix = if unbranded { "webhook" } else { "svix" };
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/webhooks/clerk", harness.http_addr))
        .header("content-type", "application/json")
        .header(format!("{prefix}-id"), &delivery.id)
        .header(
            format!("{prefix}-timestamp"),
            delivery.timestamp.to_string(),
        )
        .body(delivery.body.clone());
    if let Some(signature) = &delivery.signature {
        request = request.header(format!("{prefix}-signature"), signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A `user.updated` event carrying `user` with a new first name.
pub(crate) fn renamed(user: &Value, first_name: &str, later_by_ms: i64) -> Value {
    let mut user = user.clone();
    user["first_name"] = json!(first_name);
    user["updated_at"] = json!(user["updated_at"].as_i64().unwrap() + later_by_ms);
    json!({"type": "user.updated", "object": "event", "data": user, "timestamp": now() * 1000})
}

/// GetUser's first name and `x-cache`.
pub(crate) async fn first_name(harness: &Harness, id: &str) -> (Option<String>, String) {
    let response = harness
        .users()
        .await
        .get_user(GetUserRequest { user_id: id.into() })
        .await
        .unwrap();
    let cache = response
        .metadata()
        .get("x-cache")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (response.into_inner().first_name, cache)
}

#[tokio::test]
async fn a_signed_update_is_served_at_once_and_forgeries_change_nothing() {
    let harness = Harness::start(Options::default()).await;
    let id = harness.ids[20].clone();
    let original = harness.fake.user(&id).unwrap();
    first_name(&harness, &id).await;
    harness.fake.reset_stats();

    let update = Delivery::signed(
        "msg_update_1",
        &renamed(&original, "Webhooked", 1_000),
        WEBHOOK_SECRET,
    );
    let (status, body) = post(&harness, &update, false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        first_name(&harness, &id).await,
        (Some("Webhooked".into()), "hit".into()),
        "the new data, without asking Clerk"
    );

    let forged = renamed(&original, "Forged", 5_000);
    let other_secret = "whsec_YW5vdGhlci1zZWNyZXQtZW50aXJlbHk=";
    let mut unsigned = Delivery::signed("msg_unsigned", &forged, WEBHOOK_SECRET);
    unsigned.signature = None;
    let mut tampered = Delivery::signed("msg_tampered", &forged, WEBHOOK_SECRET);
    tampered.body = serde_json::to_vec(&renamed(&original, "Tampered", 6_000)).unwrap();
    let cases = [
        (
            "bad signature",
            Delivery::signed("msg_forged", &forged, other_secret),
            401,
        ),
        ("unsigned", unsigned, 400),
        ("tampered body", tampered, 401),
        (
            "six minutes old",
            Delivery::signed_at("msg_old", &forged, WEBHOOK_SECRET, now() - 360),
            401,
        ),
        (
            "six minutes ahead",
            Delivery::signed_at("msg_future", &forged, WEBHOOK_SECRET, now() + 360),
            401,
        ),
    ];
    for (what, delivery, expected) in &cases {
        let (status, body) = post(&harness, delivery, false).await;
        assert_eq!(status, *expected, "{what}: {body}");
        assert!(!body.contains("whsec_"), "{what}: {body}");
    }
    // The accepted delivery again, byte for byte: a replay.
    let (status, body) = post(&harness, &update, false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("already processed"), "{body}");
    assert_eq!(
        first_name(&harness, &id).await,
        (Some("Webhooked".into()), "hit".into()),
        "no forgery had an effect"
    );
    // A late, older update does not undo a newer one.
    let older = Delivery::signed(
        "msg_older",
        &renamed(&original, "Older", 500),
        WEBHOOK_SECRET,
    );
    assert_eq!(
        post(&harness, &older, true).await.0,
        200,
        "unbranded headers work"
    );
    assert_eq!(
        first_name(&harness, &id).await.0.as_deref(),
        Some("Webhooked")
    );
    assert_eq!(harness.fake.stats().requests, 0);
}

#[tokio::test]
async fn a_signed_deletion_makes_the_user_not_found() {
    let harness = Harness::start(Options::default()).await;
    let id = harness.ids[21].clone();
    first_name(&harness, &id).await;
    let event = json!({"type": "user.deleted", "object": "event",
        "data": {"id": id, "object": "user", "deleted": true}});
    let (status, body) = post(
        &harness,
        &Delivery::signed("msg_del", &event, WEBHOOK_SECRET),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    harness.fake.reset_stats();
    let gone = harness
        .users()
        .await
        .get_user(GetUserRequest { user_id: id })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(gone.metadata().get("x-cache").unwrap(), "hit");
    assert_eq!(harness.fake.stats().requests, 0);
    // Other event types are accepted and ignored.
    let other = json!({"type": "session.created", "object": "event", "data": {}});
    let (status, _) = post(
        &harness,
        &Delivery::signed("msg_s", &other, WEBHOOK_SECRET),
        false,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_a_signing_secret_the_endpoint_says_so() {
    let harness = Harness::start(Options {
        lookup: LookupConfig {
            webhook_secret: None,
            ..test_lookup()
        },
        ..Options::default()
    })
    .await;
    let event = json!({"type": "user.deleted", "data": {"id": harness.ids[0]}});
    let delivery = Delivery::signed("msg_x", &event, WEBHOOK_SECRET);
    let (status, body) = post(&harness, &delivery, false).await;
    assert_eq!(status, 503);
    assert!(body.contains("CLERK_WEBHOOK_SIGNING_SECRET"), "{body}");
    // No effect: the user is still there.
    let user = harness
        .users()
        .await
        .get_user(GetUserRequest {
            user_id: harness.ids[0].clone(),
        })
        .await;
    assert!(user.is_ok());
    // Anything else on the HTTP listener is 404.
    let elsewhere = reqwest::get(format!("http://{}/nothing-here", harness.http_addr))
        .await
        .unwrap();
    assert_eq!(elsewhere.status().as_u16(), 404);
}

/// A `user.deleted` event for `id`, stamped `at` (Unix ms).
pub(crate) fn deleted(id: &str, at: i64) -> Value {
    json!({"type": "user.deleted", "object": "event", "timestamp": at,
        "data": {"id": id, "object": "user", "deleted": true}})
}

/// GetUser's first name and `x-cache`, or its status code and `x-cache`.
pub(crate) async fn lookup(
    harness: &Harness,
    id: &str,
) -> Result<(Option<String>, String), (Code, String)> {
    let cache = |metadata: &tonic::metadata::MetadataMap| {
        let value = metadata.get("x-cache").map(|value| value.to_str().unwrap());
        value.unwrap_or_default().to_owned()
    };
    match harness
        .users()
        .await
        .get_user(GetUserRequest { user_id: id.into() })
        .await
    {
        Ok(response) => {
            let cache = cache(response.metadata());
            Ok((response.into_inner().first_name, cache))
        }
        Err(status) => Err((status.code(), cache(status.metadata()))),
    }
}

/// "No such user" fresh for a minute: a loaded machine is slow between calls.
fn long_negative_ttl() -> Options {
    Options {
        lookup: LookupConfig {
            negative_ttl: std::time::Duration::from_secs(60),
            ..test_lookup()
        },
        ..Options::default()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_late_update_does_not_bring_a_deleted_user_back() {
    let harness = Harness::start(long_negative_ttl()).await;
    let id = harness.ids[22].clone();
    let original = harness.fake.user(&id).unwrap();
    first_name(&harness, &id).await;
    let deleted_at = original["updated_at"].as_i64().unwrap() + 10_000;
    let deletion = Delivery::signed("msg_gone", &deleted(&id, deleted_at), WEBHOOK_SECRET);
    assert_eq!(post(&harness, &deletion, false).await.0, 200);
    harness.fake.reset_stats();
    // Delivered after the deletion but made before it, or in its very
    // millisecond (the deletion wins a tie): accepted, and no effect.
    for (n, later_by_ms) in [(1, 1_000), (2, 10_000)] {
        let late = renamed(&original, "Ghost", later_by_ms);
        let late = Delivery::signed(&format!("msg_late_{n}"), &late, WEBHOOK_SECRET);
        let (status, body) = post(&harness, &late, false).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            lookup(&harness, &id).await,
            Err((Code::NotFound, "hit".into())),
            "updated {later_by_ms} ms after the user's last version"
        );
    }
    // A version stamped after the deletion is newer than it: served.
    let newer = Delivery::signed(
        "msg_after",
        &renamed(&original, "Later", 10_001),
        WEBHOOK_SECRET,
    );
    assert_eq!(post(&harness, &newer, false).await.0, 200);
    assert_eq!(
        lookup(&harness, &id).await,
        Ok((Some("Later".into()), "hit".into()))
    );
    assert_eq!(harness.fake.stats().requests, 0, "all from the cache");
}

#[tokio::test]
async fn no_such_user_from_a_lookup_dates_from_its_answer() {
    let harness = Harness::start(long_negative_ttl()).await;
    let id = "user_notyetcreated0000000000000";
    assert_eq!(
        lookup(&harness, id).await,
        Err((Code::NotFound, "miss".into()))
    );
    let created = |name: &str, updated_at: i64| {
        json!({"type": "user.created", "object": "event", "timestamp": updated_at,
            "data": {"id": id, "object": "user", "first_name": name, "updated_at": updated_at}})
    };
    // A version older than Clerk's answer: that answer stands.
    let old = created("Old", now_ms() - 3_600_000);
    let old = Delivery::signed("msg_created_old", &old, WEBHOOK_SECRET);
    assert_eq!(post(&harness, &old, false).await.0, 200);
    assert_eq!(
        lookup(&harness, id).await,
        Err((Code::NotFound, "hit".into()))
    );
    // A user created after the lookup was answered: served at once.
    let new = created("New", now_ms() + 1_000);
    let new = Delivery::signed("msg_created_new", &new, WEBHOOK_SECRET);
    assert_eq!(post(&harness, &new, false).await.0, 200);
    assert_eq!(
        lookup(&harness, id).await,
        Ok((Some("New".into()), "hit".into()))
    );
}
