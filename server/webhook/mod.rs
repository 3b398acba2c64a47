//! Clerk webhooks (delivered by Svix): verification of a delivery and the
//! user event it carries. Knows nothing of HTTP frameworks: `http` hands it
//! the signature headers and the raw body, and maps [`WebhookError`] to a
//! status code.
//!
//! A delivery is accepted when its signature is valid for the configured
//! secret, its timestamp is within 5 minutes of the clock (either way), its
//! body is a Clerk event, and its message id was not accepted before (a bounded
//! memory of recent ids; see `replay`). Only then does it have an effect.

mod replay;
mod signature;

use std::{
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use crate::clerk::ClerkUser;

pub use replay::{REMEMBER_FOR, RecentIds};
pub use signature::{SignedHeaders, TOLERANCE, WebhookSecret, WebhookSecretError};

/// Most message ids remembered to refuse replays.
pub const RECENT_IDS: usize = 10_000;

/// Why a delivery was refused. None of these had any effect. Messages never
/// quote the secret, a signature or the body.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// No signing secret is configured: every delivery is refused.
    #[error(
        "webhooks are disabled: set CLERK_WEBHOOK_SIGNING_SECRET or --webhook-signing-secret-file"
    )]
    NotConfigured,
    /// A signature header is missing (unsigned delivery).
    #[error("missing header {0} (or its webhook-* equivalent)")]
    MissingHeader(&'static str),
    /// The timestamp header is not a number of seconds.
    #[error("the svix-timestamp header is not Unix seconds")]
    BadTimestamp,
    /// The timestamp is more than 5 minutes in the past.
    #[error("the delivery is older than 5 minutes")]
    TooOld,
    /// The timestamp is more than 5 minutes in the future.
    #[error("the delivery's timestamp is more than 5 minutes in the future")]
    FromTheFuture,
    /// No `v1` signature matches the configured secret.
    #[error("no valid v1 signature for this endpoint's signing secret")]
    BadSignature,
    /// This message id was already accepted.
    #[error("message id already processed (replay or redelivery)")]
    Replayed,
    /// The signed body is not a Clerk event.
    #[error("the body is not a Clerk event: {0}")]
    BadPayload(&'static str),
}

/// What a verified delivery asks the broker to do.
#[derive(Clone, Debug, PartialEq)]
pub enum UserEvent {
    /// `user.created` / `user.updated`: the event carries the whole user
    /// (the exact bytes of the event's `data` object).
    Upserted(ClerkUser),
    /// `user.deleted`: the user with this id no longer exists.
    Deleted {
        /// The deleted user's id.
        id: String,
        /// When it was deleted (Unix ms): the event's `timestamp`, else the
        /// moment the delivery was received. An update of the user made at
        /// or before it is older than the deletion.
        at: i64,
    },
    /// Any other event type (named): accepted and ignored.
    Ignored(String),
}

/// An accepted delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The Svix message id.
    pub id: String,
    /// What it says.
    pub event: UserEvent,
}

/// The webhook endpoint's domain: the secret and the memory of recent ids.
#[derive(Debug)]
pub struct Webhooks {
    /// None: webhooks are disabled and every delivery is refused.
    secret: Option<WebhookSecret>,
    /// Ids of accepted deliveries, to refuse replays.
    recent: Mutex<RecentIds>,
}

/// Clerk's event envelope; fields other than these are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    /// The object the event is about, as its exact bytes in the body.
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    /// When the event happened (Unix ms); read leniently.
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
}

impl Webhooks {
    /// Verifies deliveries with `secret`; `None` disables the endpoint.
    pub fn new(secret: Option<WebhookSecret>) -> Self {
        Self {
            secret,
            recent: Mutex::new(RecentIds::new(RECENT_IDS)),
        }
    }

    /// Whether a signing secret is configured.
    pub fn is_configured(&self) -> bool {
        self.secret.is_some()
    }

    /// Verifies one delivery received at wall-clock time `now` and reads its
    /// event. Remembers its id only once everything checked out.
    pub fn receive(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Delivery, WebhookError> {
        let secret = self.secret.as_ref().ok_or(WebhookError::NotConfigured)?;
        let id = signature::verify(secret, headers, body, now)?;
        let event = parse_event(body, now)?;
        let fresh = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(id);
        if !fresh {
            return Err(WebhookError::Replayed);
        }
        Ok(Delivery {
            id: id.to_owned(),
            event,
        })
    }
}

/// Reads a Clerk event body received at `now`.
fn parse_event(body: &[u8], now: SystemTime) -> Result<UserEvent, WebhookError> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|_| WebhookError::BadPayload("not a JSON event"))?;
    let data = envelope.data.map(RawValue::get);
    match envelope.kind.as_str() {
        "user.created" | "user.updated" => data
            .and_then(ClerkUser::from_text)
            .map(UserEvent::Upserted)
            .ok_or(WebhookError::BadPayload("data is not a user object")),
        "user.deleted" => {
            let id = data
                .and_then(|data| serde_json::from_str::<Value>(data).ok())
                .and_then(|data| Some(data.get("id")?.as_str()?.to_owned()))
                .filter(|id| !id.is_empty())
                .ok_or(WebhookError::BadPayload("data has no user id"))?;
            let at = envelope
                .timestamp
                .and_then(|at| at.get().parse().ok())
                .unwrap_or_else(|| unix_millis(now));
            Ok(UserEvent::Deleted { id, at })
        }
        other => Ok(UserEvent::Ignored(other.to_owned())),
    }
}

/// `time` in Unix milliseconds (0 before 1970, saturating far ahead).
pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_dGhlLW9sZC1zZWNyZXQtYmVmb3JlLXJvdGF0aW9u";

    fn secret(text: &str) -> WebhookSecret {
        WebhookSecret::parse(text).unwrap()
    }

    fn unix(time: SystemTime) -> i64 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn body() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "user.updated", "object": "event", "timestamp": 1_700_000_000_000_i64,
            "data": {"id": "user_1", "object": "user", "first_name": "Ada"}
        }))
        .unwrap()
    }

    fn headers(id: &str, timestamp: i64, signature: String) -> SignedHeaders {
        SignedHeaders {
            id: Some(id.into()),
            timestamp: Some(timestamp.to_string()),
            signature: Some(signature),
        }
    }

    #[test]
    fn a_good_delivery_is_accepted_once() {
        let webhooks = Webhooks::new(Some(secret(SECRET)));
        let now = SystemTime::now();
        let body = body();
        let signed = headers(
            "msg_1",
            unix(now),
            secret(SECRET).sign("msg_1", unix(now), &body),
        );
        let delivery = webhooks.receive(&signed, &body, now).unwrap();
        assert_eq!(delivery.id, "msg_1");
        let UserEvent::Upserted(user) = delivery.event else {
            panic!("{delivery:?}")
        };
        assert_eq!((user.id(), user.str("first_name")), ("user_1", Some("Ada")));
        // The very same delivery again: a replay.
        assert_eq!(
            webhooks.receive(&signed, &body, now),
            Err(WebhookError::Replayed)
        );
    }

    #[test]
    fn during_rotation_one_valid_signature_among_several_suffices() {
        let webhooks = Webhooks::new(Some(secret(SECRET)));
        let now = SystemTime::now();
        let ts = unix(now);
        let body = body();
        let old = secret(OTHER).sign("msg_r", ts, &body);
        let new = secret(SECRET).sign("msg_r", ts, &body);
        let both = headers("msg_r", ts, format!("{old} {new}"));
        assert!(webhooks.receive(&both, &body, now).is_ok());
        // Our signature first, an unknown version and the old one after it.
        let both = headers("msg_s", ts, {
            let new = secret(SECRET).sign("msg_s", ts, &body);
            let old = secret(OTHER).sign("msg_s", ts, &body);
            format!("{new} v2,abc {old}")
        });
        assert!(webhooks.receive(&both, &body, now).is_ok());
        // Only the other secret's signature: refused.
        let only_old = headers("msg_t", ts, secret(OTHER).sign("msg_t", ts, &body));
        assert_eq!(
            webhooks.receive(&only_old, &body, now),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn bad_signatures_and_altered_content_are_refused() {
        let webhooks = Webhooks::new(Some(secret(SECRET)));
        let now = SystemTime::now();
        let ts = unix(now);
        let body = body();
        let good = secret(SECRET).sign("msg_2", ts, &body);
        let cases = [
            (headers("msg_2", ts, "v1,AAAA".into()), body.clone()),
            (
                headers("msg_2", ts, good.replace("v1,", "v2,")),
                body.clone(),
            ),
            (
                headers("msg_2", ts, good.clone()),
                b"{\"type\":\"user.deleted\"}".to_vec(),
            ),
            (headers("msg_3", ts, good.clone()), body.clone()),
            (headers("msg_2", ts + 1, good.clone()), body.clone()),
            (headers("msg_2", ts, String::new()), body.clone()),
        ];
        for (signed, body) in cases {
            assert_eq!(
                webhooks.receive(&signed, &body, now),
                Err(WebhookError::BadSignature),
                "{signed:?}"
            );
        }
        // A refused delivery is not remembered: the genuine one still passes.
        assert!(
            webhooks
                .receive(&headers("msg_2", ts, good), &body, now)
                .is_ok()
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused_at_five_minutes() {
        let webhooks = Webhooks::new(Some(secret(SECRET)));
        let now = SystemTime::now();
        let body = body();
        let at = |offset: i64, id: &str| {
            let ts = unix(now) + offset;
            headers(id, ts, secret(SECRET).sign(id, ts, &body))
        };
        let limit = TOLERANCE.as_secs() as i64;
        assert_eq!(
            webhooks.receive(&at(-limit - 1, "m1"), &body, now),
            Err(WebhookError::TooOld)
        );
        assert_eq!(
            webhooks.receive(&at(limit + 1, "m2"), &body, now),
            Err(WebhookError::FromTheFuture)
        );
        assert!(webhooks.receive(&at(-limit, "m3"), &body, now).is_ok());
        assert!(webhooks.receive(&at(limit, "m4"), &body, now).is_ok());
        // The same signed delivery, replayed six minutes later: too old.
        let replay = at(0, "m5");
        assert!(webhooks.receive(&replay, &body, now).is_ok());
        let later = now + Duration::from_secs(6 * 60);
        assert_eq!(
            webhooks.receive(&replay, &body, later),
            Err(WebhookError::TooOld)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_is_refused_while_its_timestamp_could_pass() {
        let webhooks = Webhooks::new(Some(secret(SECRET)));
        let now = SystemTime::now();
        let body = body();
        let ts = unix(now) + 4 * 60;
        let signed = headers("msg_f", ts, secret(SECRET).sign("msg_f", ts, &body));
        assert!(webhooks.receive(&signed, &body, now).is_ok());
        // Nine minutes on (wall clock and tokio's), the timestamp still passes:
        // only the memory of the id refuses it.
        tokio::time::advance(Duration::from_secs(9 * 60)).await;
        let later = now + Duration::from_secs(9 * 60);
        assert_eq!(
            webhooks.receive(&signed, &body, later),
            Err(WebhookError::Replayed)
        );
    }

    #[test]
    fn unsigned_malformed_and_unconfigured_deliveries_are_refused() {
        let now = SystemTime::now();
        let ts = unix(now);
        let body = body();
        let disabled = Webhooks::new(None);
        let signed = headers("m", ts, secret(SECRET).sign("m", ts, &body));
        assert_eq!(
            disabled.receive(&signed, &body, now),
            Err(WebhookError::NotConfigured)
        );
        let webhooks = Webhooks::new(Some(secret(SECRET)));
        assert_eq!(
            webhooks.receive(&SignedHeaders::default(), &body, now),
            Err(WebhookError::MissingHeader("svix-id"))
        );
        let mut no_signature = signed.clone();
        no_signature.signature = None;
        assert_eq!(
            webhooks.receive(&no_signature, &body, now),
            Err(WebhookError::MissingHeader("svix-signature"))
        );
        let mut bad_ts = signed.clone();
        bad_ts.timestamp = Some("yesterday".into());
        assert_eq!(
            webhooks.receive(&bad_ts, &body, now),
            Err(WebhookError::BadTimestamp)
        );
        let junk = b"not json";
        let junk_signed = headers("j", ts, secret(SECRET).sign("j", ts, junk));
        assert!(matches!(
            webhooks.receive(&junk_signed, junk, now),
            Err(WebhookError::BadPayload(_))
        ));
    }

    #[test]
    fn reads_the_user_events() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let event = |value: Value| parse_event(&serde_json::to_vec(&value).unwrap(), now);
        assert_eq!(
            event(
                json!({"type": "user.deleted", "timestamp": 1_700_000_000_456_i64,
                "data": {"id": "user_9", "deleted": true}})
            ),
            Ok(UserEvent::Deleted {
                id: "user_9".into(),
                at: 1_700_000_000_456
            })
        );
        // Without a usable timestamp, the deletion dates from its receipt.
        for timestamp in [json!(null), json!("soon"), json!(1.5), json!({})] {
            let mut deleted = json!({"type": "user.deleted", "timestamp": timestamp,
                "data": {"id": "user_9"}});
            if timestamp.is_object() {
                deleted.as_object_mut().unwrap().remove("timestamp");
            }
            assert_eq!(
                event(deleted),
                Ok(UserEvent::Deleted {
                    id: "user_9".into(),
                    at: 1_800_000_000_123
                })
            );
        }
        // A user keeps the exact bytes of the event's data object.
        let body =
            br#"{"data":  {"object":"user","id":"user_8","n":1.0e2}, "type":"user.updated"}"#;
        let Ok(UserEvent::Upserted(user)) = parse_event(body, now) else {
            panic!("an update")
        };
        assert_eq!(user.text(), r#"{"object":"user","id":"user_8","n":1.0e2}"#);
        assert!(matches!(
            event(json!({"type": "user.created", "data": {"id": "user_9", "object": "user"}})),
            Ok(UserEvent::Upserted(user)) if user.id() == "user_9"
        ));
        assert_eq!(
            event(json!({"type": "session.created", "data": {}})),
            Ok(UserEvent::Ignored("session.created".into()))
        );
        assert!(event(json!({"type": "user.updated", "data": {"object": "user"}})).is_err());
        assert!(event(json!({"type": "user.deleted", "data": {}})).is_err());
    }
}
