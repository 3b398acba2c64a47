//! Who is calling: the bearer-token interceptor and permission checks.
//!
//! The interceptor runs in front of the broker's own services (not health or
//! reflection, which need no token) and puts the authenticated [`Caller`]
//! into the request's extensions, where handlers find it. A call with an
//! `authorization` token is the token's caller; a call without one, on a
//! connection whose client certificate was verified (mutual TLS), is the
//! caller whose `tls_identity` the certificate names.

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

use crate::{
    callers::{Caller, PolicyStore},
    tls::Peer,
};

/// Authenticates every call against the policy in force (which a reload
/// may replace between calls).
#[derive(Clone, Debug)]
pub struct Authenticate {
    policy: Arc<PolicyStore>,
}

impl Authenticate {
    /// Authenticates against the policy in `store`.
    pub fn new(policy: Arc<PolicyStore>) -> Self {
        Self { policy }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        let certificate = request
            .extensions()
            .get::<Peer>()
            .and_then(|peer| peer.client.clone());
        let policy = self.policy.current();
        let caller = match (header, certificate) {
            (None, Some(identity)) => policy.authenticate_tls(identity.names()),
            (header, _) => policy.authenticate(header),
        }
        .map_err(|error| Status::unauthenticated(error.to_string()))?;
        tracing::Span::current().record("caller", &*caller.name);
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller a request was authenticated as (anonymous if no interceptor ran).
pub(crate) fn caller<T>(request: &Request<T>) -> Arc<Caller> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Caller::anonymous()))
}

/// PERMISSION_DENIED unless `caller` may draw on `budget`.
pub(crate) fn require_budget(caller: &Caller, budget: &str) -> Result<(), Status> {
    if caller.may_use(budget) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "caller {:?} may not draw on budget {budget:?}: ask an operator to add it to the \
             caller's budgets",
            caller.name
        )))
    }
}

/// PERMISSION_DENIED unless `caller` may use the admin API.
pub(crate) fn require_admin(caller: &Caller) -> Result<(), Status> {
    if caller.admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "caller {:?} may not use AdminService: an operator must set `admin = true` for it",
            caller.name
        )))
    }
}
