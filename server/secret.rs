//! The Clerk secret key, kept out of every log line, error and debug dump.

use std::fmt;

/// Which kind of Clerk instance a secret key belongs to, read from its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `sk_live_…`: a production instance (1000 requests per 10 s).
    Live,
    /// `sk_test_…`: a development instance (100 requests per 10 s).
    Test,
}

/// A Clerk secret key. Its `Debug` output is redacted and it has no `Display`,
/// so it cannot end up in a log line or a status message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

/// Why a secret key was rejected before use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretKeyError {
    /// Nothing was given.
    #[error("the Clerk secret key is empty")]
    Empty,
    /// The key does not look like a Clerk secret key.
    #[error("the Clerk secret key must start with sk_live_ or sk_test_")]
    BadPrefix,
    /// The key contains characters that cannot go in an HTTP header.
    #[error("the Clerk secret key contains whitespace or non-printable characters")]
    BadCharacters,
}

impl SecretKey {
    /// Validates a key read from the environment or a file (surrounding
    /// whitespace, such as a file's trailing newline, is ignored).
    pub fn parse(raw: &str) -> Result<Self, SecretKeyError> {
        let key = raw.trim();
        if key.is_empty() {
            return Err(SecretKeyError::Empty);
        }
        if !key.starts_with("sk_live_") && !key.starts_with("sk_test_") {
            return Err(SecretKeyError::BadPrefix);
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretKeyError::BadCharacters);
        }
        Ok(Self(key.to_owned()))
    }

    /// The instance kind, which decides the default upstream budget.
    pub fn kind(&self) -> KeyKind {
        if self.0.starts_with("sk_live_") {
            KeyKind::Live
        } else {
            KeyKind::Test
        }
    }

    /// The key itself, for the one place that must send it: the
    /// `Authorization` header, and key derivation of resume tokens.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind() {
            KeyKind::Live => "sk_live_",
            KeyKind::Test => "sk_test_",
        };
        write!(f, "SecretKey({kind}[redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = SecretKey::parse("sk_live_abcdef123456\n").unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains("abcdef123456"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(key.kind(), KeyKind::Live);
        assert_eq!(key.expose(), "sk_live_abcdef123456");
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert_eq!(SecretKey::parse("  "), Err(SecretKeyError::Empty));
        assert_eq!(
            SecretKey::parse("pk_test_x"),
            Err(SecretKeyError::BadPrefix)
        );
        assert_eq!(
            SecretKey::parse("sk_test_a b"),
            Err(SecretKeyError::BadCharacters)
        );
        assert_eq!(
            SecretKey::parse("sk_test_abc").unwrap().kind(),
            KeyKind::Test
        );
    }
}
