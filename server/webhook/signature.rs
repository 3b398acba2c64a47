//! Svix / Standard Webhooks signatures: the signing secret and the check of
//! one delivery's signature and timestamp.
//!
//! The signed content is `"{id}.{timestamp}.{raw body}"`; the key is the
//! base64 decoding of the secret after its `whsec_` prefix; a signature is
//! `v1,` + base64(HMAC-SHA256). A delivery may carry several space-separated
//! signatures (during a secret rotation); one valid `v1` entry suffices. The
//! comparison is constant-time (`hmac`'s `verify_slice`, built on `subtle`).

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::WebhookError;

/// How far a delivery's timestamp may lie in the past or the future.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The prefix of Svix signing secrets.
const SECRET_PREFIX: &str = "whsec_";

/// A webhook signing secret. Its `Debug` is redacted and it has no `Display`:
/// it never reaches a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    /// The HMAC key (the decoded secret).
    key: Vec<u8>,
}

/// Why a signing secret was rejected; never quotes the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookSecretError {
    /// Nothing (or only whitespace) was given.
    #[error("the webhook signing secret is empty")]
    Empty,
    /// The part after `whsec_` is not base64.
    #[error(
        "the webhook signing secret is not whsec_ followed by base64 (copy it from the Clerk dashboard)"
    )]
    NotBase64,
}

impl WebhookSecret {
    /// Parses a secret as Clerk shows it (`whsec_…`; the prefix is optional,
    /// surrounding whitespace such as a file's trailing newline is ignored).
    pub fn parse(raw: &str) -> Result<Self, WebhookSecretError> {
        let text = raw.trim();
        let text = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        if text.is_empty() {
            return Err(WebhookSecretError::Empty);
        }
        let key = STANDARD
            .decode(text)
            .map_err(|_| WebhookSecretError::NotBase64)?;
        if key.is_empty() {
            return Err(WebhookSecretError::Empty);
        }
        Ok(Self { key })
    }

    /// The `v1,<base64>` signature of a delivery (used by tests and the
    /// benchmark to sign their own deliveries).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// The MAC over the signed content, ready to finalize or verify.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The three signature headers of one delivery, as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `svix-id` / `webhook-id`: the message id, stable across redeliveries.
    pub id: Option<String>,
    /// `svix-timestamp` / `webhook-timestamp`: Unix seconds of this attempt.
    pub timestamp: Option<String>,
    /// `svix-signature` / `webhook-signature`: space-separated `v1,<base64>`.
    pub signature: Option<String>,
}

impl SignedHeaders {
    /// Reads the headers through `header` (a case-insensitive lookup by
    /// name); the `svix-*` names win over the equivalent `webhook-*` ones.
    pub fn read<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Self {
        let pick = |name: &str| {
            header(&format!("svix-{name}"))
                .or_else(|| header(&format!("webhook-{name}")))
                .map(str::to_owned)
        };
        Self {
            id: pick("id"),
            timestamp: pick("timestamp"),
            signature: pick("signature"),
        }
    }
}

/// Checks the signature and the timestamp of a delivery at wall-clock time
/// `now`; returns the message id on success.
pub(super) fn verify<'h>(
    secret: &WebhookSecret,
    headers: &'h SignedHeaders,
    body: &[u8],
    now: SystemTime,
) -> Result<&'h str, WebhookError> {
    let id = headers
        .id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or(WebhookError::MissingHeader("svix-id"))?;
    let timestamp = headers
        .timestamp
        .as_deref()
        .ok_or(WebhookError::MissingHeader("svix-timestamp"))?;
    let signatures = headers
        .signature
        .as_deref()
        .ok_or(WebhookError::MissingHeader("svix-signature"))?;
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::BadTimestamp)?;
    let now = unix_seconds(now);
    let tolerance = TOLERANCE.as_secs() as i64;
    if timestamp < now.saturating_sub(tolerance) {
        return Err(WebhookError::TooOld);
    }
    if timestamp > now.saturating_add(tolerance) {
        return Err(WebhookError::FromTheFuture);
    }
    let expected = secret.mac(id, timestamp, body);
    let valid = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok());
    if valid {
        Ok(id)
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// Seconds since the Unix epoch (negative before it, which no clock here is).
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known answer published with the Standard Webhooks reference
    /// implementation (the `standardwebhooks` crate's own test vector).
    #[test]
    fn matches_the_reference_implementation() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signature = secret.sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn secrets_parse_with_or_without_prefix_and_never_print() {
        let with = WebhookSecret::parse(" whsec_c2VjcmV0LWJ5dGVz\n").unwrap();
        let without = WebhookSecret::parse("c2VjcmV0LWJ5dGVz").unwrap();
        assert_eq!(with, without);
        assert_eq!(format!("{with:?}"), "WebhookSecret(<redacted>)");
        assert_eq!(
            WebhookSecret::parse("whsec_"),
            Err(WebhookSecretError::Empty)
        );
        assert_eq!(WebhookSecret::parse("  "), Err(WebhookSecretError::Empty));
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!"),
            Err(WebhookSecretError::NotBase64)
        );
    }

    #[test]
    fn headers_prefer_svix_names_and_accept_unbranded_ones() {
        let svix = [
            ("svix-id", "a"),
            ("webhook-id", "b"),
            ("webhook-timestamp", "5"),
        ];
        let headers = SignedHeaders::read(|name| {
            svix.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        });
        assert_eq!(headers.id.as_deref(), Some("a"));
        assert_eq!(headers.timestamp.as_deref(), Some("5"));
        assert_eq!(headers.signature, None);
    }
}
