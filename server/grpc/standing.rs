//! A long call's standing with the policy in force.
//!
//! The gate admits a call against the policy of its start, but a
//! `ListUsers` stream can outlive many reloads. So the gate gives each stream
//! a [`Standing`]: the credential the call presented (its bearer token's
//! SHA-256 or its verified client certificate's names; never the token) and a
//! subscription to the policy. When the policy changes the stream asks
//! [`Standing::recheck`] before its next message, and ends if its caller is
//! gone (UNAUTHENTICATED) or lost what the stream needs (PERMISSION_DENIED).

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

use super::convert::Visibility;
use crate::{
    admission::{CallerName, UPSTREAM_BUDGET},
    callers::{Caller, Policy, Scope, token_digest},
    tls::ClientIdentity,
};

/// What a call presented to prove who it is, kept to authenticate it again.
#[derive(Clone, Debug)]
enum Credential {
    /// A bearer token, by its SHA-256.
    Token([u8; 32]),
    /// A verified client certificate (used only when no token was sent).
    Certificate(Arc<ClientIdentity>),
    /// A malformed or missing token: only a broker without a policy file
    /// (everyone is the anonymous caller) admits it.
    Unusable,
}

/// One call's caller, followed across policy reloads.
#[derive(Clone, Debug)]
pub(crate) struct Standing {
    credential: Credential,
    /// The caller's name at admission, for messages.
    name: CallerName,
    policy: watch::Receiver<Arc<Policy>>,
}

/// Why a stream's caller no longer stands: the policy in force changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Lapse {
    /// The credential matches no caller any more.
    #[error(
        "the credential of caller {0:?} was revoked (the policy file changed during the export): \
         call ListUsers again with a valid credential and the resume_token in the \
         x-resume-token trailer"
    )]
    Revoked(CallerName),
    /// The caller lost `read_users`, or may no longer draw on the upstream
    /// budget.
    #[error(
        "caller {0:?} may no longer export users (the policy file changed during the export: \
         it needs the scope read_users and the budget clerk); ask an operator"
    )]
    Denied(CallerName),
    /// The caller lost `read_private_metadata` during an export that
    /// delivered it: the stream ends rather than change what its users hold.
    #[error(
        "caller {0:?} lost the scope read_private_metadata during the export (the policy file \
         changed): the users delivered so far carried private_metadata; call ListUsers again \
         with the resume_token in the x-resume-token trailer to go on without it"
    )]
    LostPrivateMetadata(CallerName),
}

impl Lapse {
    /// The status ending the stream.
    pub(crate) fn status(&self) -> Status {
        match self {
            Lapse::Revoked(_) => Status::unauthenticated(self.to_string()),
            Lapse::Denied(_) | Lapse::LostPrivateMetadata(_) => {
                Status::permission_denied(self.to_string())
            }
        }
    }
}

impl Standing {
    /// The standing of `caller`, admitted with this `authorization` header
    /// or, without one, this verified client certificate; `policy` was
    /// subscribed to before the caller was admitted, so no reload is missed.
    pub(crate) fn new(
        caller: &Caller,
        authorization: Option<&[u8]>,
        certificate: Option<&Arc<ClientIdentity>>,
        policy: watch::Receiver<Arc<Policy>>,
    ) -> Self {
        let credential = match (authorization, certificate) {
            (None, Some(identity)) => Credential::Certificate(identity.clone()),
            (header, _) => token_digest(header).map_or(Credential::Unusable, Credential::Token),
        };
        Self {
            credential,
            name: caller.name.clone(),
            policy,
        }
    }

    /// Resolves when the policy in force changes; never if it cannot.
    pub(crate) async fn changed(&mut self) {
        if self.policy.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Authenticates the call again against the policy in force, and checks
    /// that its caller may still export users with `visibility`.
    pub(crate) fn recheck(&mut self, visibility: Visibility) -> Result<(), Lapse> {
        let policy = self.policy.borrow_and_update().clone();
        let caller = match &self.credential {
            Credential::Token(digest) => policy.authenticate_digest(digest),
            Credential::Certificate(identity) => policy.authenticate_tls(identity.names()),
            Credential::Unusable => policy.authenticate(None),
        }
        .map_err(|_| Lapse::Revoked(self.name.clone()))?;
        if !caller.may(Scope::ReadUsers) || !caller.may_use(UPSTREAM_BUDGET) {
            return Err(Lapse::Denied(self.name.clone()));
        }
        if visibility == Visibility::Full && !caller.may(Scope::ReadPrivateMetadata) {
            return Err(Lapse::LostPrivateMetadata(self.name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;
    use crate::callers::PolicyStore;

    /// A policy of callers (name, token, scopes), as a file would give.
    fn policy(callers: &[(&str, &str, &str)]) -> Arc<Policy> {
        let text: String = callers
            .iter()
            .map(|(name, token, scopes)| {
                use sha2::Digest as _;
                let hash = hex(&sha2::Sha256::digest(token.as_bytes()));
                format!(
                    "[[callers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nscopes = [{scopes}]\n\n"
                )
            })
            .collect();
        Arc::new(Policy::parse(&text, |_| std::time::Duration::ZERO).unwrap())
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn standing(store: &PolicyStore, token: &str) -> Standing {
        let policy = store.current();
        let header = format!("Bearer {token}");
        let caller = policy.authenticate(Some(header.as_bytes())).unwrap();
        Standing::new(&caller, Some(header.as_bytes()), None, store.subscribe())
    }

    #[tokio::test]
    async fn a_reload_is_seen_and_the_caller_checked_again() {
        let full = "\"read_users\", \"read_private_metadata\"";
        let store = PolicyStore::new(policy(&[("a", "ta", full), ("b", "tb", full)]));
        let mut a = standing(&store, "ta");
        let mut b = standing(&store, "tb");
        assert!(a.changed().now_or_never().is_none());
        // b loses private metadata, c appears, a goes.
        store.replace(policy(&[("b", "tb", "\"read_users\""), ("c", "ta2", full)]));
        assert!(a.changed().now_or_never().is_some());
        assert_eq!(a.recheck(Visibility::Full), Err(Lapse::Revoked("a".into())));
        assert_eq!(
            b.recheck(Visibility::Full),
            Err(Lapse::LostPrivateMetadata("b".into()))
        );
        assert_eq!(b.recheck(Visibility::WithoutPrivateMetadata), Ok(()));
        store.replace(policy(&[("b", "tb", "\"acquire_permits\"")]));
        assert_eq!(
            b.recheck(Visibility::WithoutPrivateMetadata),
            Err(Lapse::Denied("b".into()))
        );
    }

    #[test]
    fn lapses_map_to_documented_codes() {
        let table = [
            (
                Lapse::Revoked("a".into()),
                tonic::Code::Unauthenticated,
                "revoked",
            ),
            (
                Lapse::Denied("a".into()),
                tonic::Code::PermissionDenied,
                "read_users",
            ),
            (
                Lapse::LostPrivateMetadata("a".into()),
                tonic::Code::PermissionDenied,
                "read_private_metadata",
            ),
        ];
        for (lapse, code, says) in table {
            let status = lapse.status();
            assert_eq!(status.code(), code, "{lapse:?}");
            assert!(status.message().contains(says), "{status:?}");
        }
    }
}
