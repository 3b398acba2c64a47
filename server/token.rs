//! Resume tokens of `ListUsers`: tamper-evident, and valid on every replica
//! and after a restart. They are signed, not encrypted: whoever holds one can
//! read the cursor it carries (the export's filter, queries included, and the
//! user ids of its position).
//!
//! A token is `base64url(json) "." base64url(tag)`, where the tag is an
//! HMAC-SHA256 of the JSON under a key derived from the Clerk secret key. Every
//! replica holds the same secret key, so every replica derives the same token
//! key without any shared state; the derivation is one-way, so a token reveals
//! nothing of the secret key. Rotating the secret key invalidates old tokens.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

use crate::secret::SecretKey;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, to bound the work an attacker can ask for. An
/// export cursor binds the caller's whole filter, which validation bounds to
/// about 1.5 MB of token at worst (tested in `export`); usual tokens are well
/// under 4 KB.
pub const MAX_TOKEN_LEN: usize = 2 * 1024 * 1024;

/// The key that signs and verifies resume tokens.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

/// Why a token was refused. Deliberately vague towards callers: a token is
/// either exactly one the broker issued, or it is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the token's shape, or too long.
    #[error("the resume token is malformed")]
    Malformed,
    /// The signature does not match: altered, or issued under another key.
    #[error("the resume token was not issued by this broker (or was altered)")]
    BadSignature,
}

impl TokenKey {
    /// Derives the token key from the Clerk secret key.
    pub fn derive(secret: &SecretKey) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"clerk-broker resume token v1");
        Self(mac.finalize().into_bytes().into())
    }

    /// Signs `state` into a token.
    pub fn seal<T: Serialize>(&self, state: &T) -> String {
        // Serializing plain data structs to JSON cannot fail.
        let json = serde_json::to_vec(state).unwrap_or_default();
        let tag = self.tag(&json);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Verifies a token and returns the state it carries.
    pub fn open<T: DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&json);
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    fn tag(&self, json: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(json);
        mac.finalize().into_bytes().to_vec()
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        offset: u64,
    }

    fn key(text: &str) -> TokenKey {
        TokenKey::derive(&SecretKey::parse(text).unwrap())
    }

    #[test]
    fn round_trips_and_is_the_same_on_every_replica() {
        let token = key("sk_test_one").seal(&State { offset: 500 });
        assert_eq!(
            key("sk_test_one").open::<State>(&token),
            Ok(State { offset: 500 })
        );
        assert!(!token.contains("sk_test_one"));
    }

    #[test]
    fn refuses_altered_foreign_and_malformed_tokens() {
        let token = key("sk_test_one").seal(&State { offset: 500 });
        let altered_payload = URL_SAFE_NO_PAD.encode(br#"{"offset":0}"#);
        let tag = token.split_once('.').unwrap().1;
        let altered = format!("{altered_payload}.{tag}");
        assert_eq!(
            key("sk_test_one").open::<State>(&altered),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key("sk_test_two").open::<State>(&token),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "abc", "a.b.c", "!!.??"] {
            assert_eq!(
                key("sk_test_one").open::<State>(bad),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            key("sk_test_one").open::<State>(&huge),
            Err(TokenError::Malformed)
        );
    }
}
