//! Webhook deliveries as they arrive over the network: the three signature
//! headers and the raw body, verified and parsed (`clerk_broker::webhook`).
//!
//! Input: `id \n timestamp \n signature \n body`. A signature of exactly
//! `sign` is replaced by the valid one for that id, timestamp and body, so the
//! fuzzer reaches the event parser past the HMAC; any other signature is
//! checked as sent. The clock stands at Unix second 1,700,000,000.
//!
//! Properties: nothing panics; a delivery is accepted at most once (the same
//! one again is a replay); an accepted user event converts to the `User`
//! message and encodes; a refusal never quotes the secret.

#![no_main]

use std::time::{Duration, SystemTime};

use clerk_broker::webhook::{SignedHeaders, UserEvent, WebhookError, WebhookSecret, Webhooks};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let (Some(id), Some(timestamp), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let (Ok(id), Ok(timestamp), Ok(signature)) = (
        std::str::from_utf8(id),
        std::str::from_utf8(timestamp),
        std::str::from_utf8(signature),
    ) else {
        return;
    };
    // A secret as an operator might paste it: parsing never panics.
    let _ = WebhookSecret::parse(id);

    let secret = WebhookSecret::parse(SECRET).expect("the test secret parses");
    let signature = match (signature, timestamp.trim().parse::<i64>()) {
        ("sign", Ok(seconds)) => secret.sign(id, seconds, body),
        _ => signature.to_owned(),
    };
    // Headers as the HTTP layer reads them (an empty one reads as absent).
    let given = [
        ("svix-id", id),
        ("svix-timestamp", timestamp),
        ("webhook-signature", &signature),
    ];
    let headers = SignedHeaders::read(|name| {
        given
            .iter()
            .find(|(key, value)| *key == name && !value.is_empty())
            .map(|(_, value)| *value)
    });
    let webhooks = Webhooks::new(Some(secret));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    match webhooks.receive(&headers, body, now) {
        Ok(delivery) => {
            assert_eq!(delivery.id, id);
            if let UserEvent::Upserted(user) = &delivery.event {
                let message = clerk_broker::grpc::user_message(user, false);
                assert_eq!(message.id, user.id());
                let _ = message.encode_to_vec();
            }
            assert_eq!(
                webhooks.receive(&headers, body, now),
                Err(WebhookError::Replayed),
                "an accepted delivery must not be accepted twice"
            );
        }
        Err(error) => {
            // Refusals are fixed texts: nothing received is quoted back.
            let text = error.to_string();
            assert!(!text.contains(&SECRET[6..]), "{text}");
        }
    }
});
