//! Who a call belongs to: a bearer token's SHA-256, or the names of a
//! verified client certificate, looked up in the [`Policy`] in force.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Caller, Policy};

/// Why a call could not be tied to a caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing bearer token: send metadata `authorization: Bearer <token>`")]
    Missing,
    /// Not of the form `Bearer <token>`.
    #[error("malformed authorization metadata: expected `Bearer <token>`")]
    Malformed,
    /// No caller has this token.
    #[error("unknown bearer token")]
    Unknown,
    /// A verified client certificate names no caller, and no token was sent.
    #[error(
        "no caller has the identity of this client certificate ({0}): send a bearer token, or \
         ask an operator to set `tls_identity` to one of these names"
    )]
    UnknownIdentity(String),
}

impl Policy {
    /// The caller an `authorization` metadata value belongs to.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Caller>, AuthError> {
        if let Some(anonymous) = &self.anonymous {
            return Ok(anonymous.clone());
        }
        self.authenticate_digest(&token_digest(authorization)?)
    }

    /// The caller whose bearer token has this SHA-256 (see [`token_digest`]):
    /// how a long call is authenticated again after a reload without the
    /// broker keeping its token.
    pub fn authenticate_digest(&self, digest: &[u8; 32]) -> Result<Arc<Caller>, AuthError> {
        if let Some(anonymous) = &self.anonymous {
            return Ok(anonymous.clone());
        }
        self.by_token.get(digest).cloned().ok_or(AuthError::Unknown)
    }

    /// The caller a verified client certificate belongs to: the first of
    /// its `names` (URI SANs, DNS SANs, then CN) that is a caller's
    /// `tls_identity`, matched exactly.
    pub fn authenticate_tls<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Arc<Caller>, AuthError> {
        if let Some(anonymous) = &self.anonymous {
            return Ok(anonymous.clone());
        }
        names
            .clone()
            .into_iter()
            .find_map(|name| self.by_tls_identity.get(name).cloned())
            .ok_or_else(|| {
                let names: Vec<_> = names.into_iter().collect();
                AuthError::UnknownIdentity(if names.is_empty() {
                    "it names nothing".to_owned()
                } else {
                    names.join(", ")
                })
            })
    }
}

/// The SHA-256 of the token in an `authorization` metadata value
/// (`Bearer <token>`).
pub fn token_digest(authorization: Option<&[u8]>) -> Result<[u8; 32], AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let token = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .filter(|token| !token.is_empty())
        .ok_or(AuthError::Malformed)?;
    Ok(Sha256::digest(token).into())
}
