//! Who is calling and what they may hold: the gate in front of the broker's
//! own services.
//!
//! Every call to `QuotaService`, `UserService` or `AdminService` passes a
//! [`Gate`] (health and reflection need no token) which, before the handler
//! runs:
//! 1. authenticates the caller against the policy in force (a reload may
//!    replace it between calls): a call with an `authorization` token is the
//!    token's caller; a call without one, on a connection whose client
//!    certificate was verified (mutual TLS), is the caller whose
//!    `tls_identity` the certificate names; UNAUTHENTICATED otherwise, and
//!    for a call with more than one `authorization` entry;
//! 2. checks the caller has the service's [`Scope`]: PERMISSION_DENIED
//!    otherwise;
//! 3. takes one of the caller's in-flight slots (or stream slots, for
//!    `ListUsers`): RESOURCE_EXHAUSTED with `RetryInfo` when it holds its
//!    limit. The slot is held until the response body ends or is dropped, so
//!    a stream holds it for its whole life.
//!
//! A handler that panics gets its call answered INTERNAL; the slot is freed.
//!
//! The authenticated [`Caller`] goes into the request's extensions, where
//! handlers find it; a stream also gets its [`Standing`], to follow its
//! caller across policy reloads.

use std::{
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::FutureExt as _;
use tonic::{Request, Status, body::Body, server::NamedService};
use tonic_types::{ErrorDetails, StatusExt};

use super::standing::Standing;
use crate::{
    callers::{Caller, PolicyStore, Scope, Scopes, Slot, SlotKind, Slots},
    guarded::Guarded,
    tls::Peer,
};

/// The one streaming method: its calls count against `max_streams`.
pub(crate) const LIST_USERS_PATH: &str = "/clerk_broker.v1.UserService/ListUsers";

/// Authenticates calls against the policy in force and counts what each
/// caller holds; one per broker, shared by every gated service.
#[derive(Clone, Debug)]
pub struct Authenticate {
    policy: Arc<PolicyStore>,
    held: Arc<Slots>,
}

impl Authenticate {
    /// Authenticates against the policy in `store`.
    pub fn new(policy: Arc<PolicyStore>) -> Self {
        Self {
            policy,
            held: Arc::default(),
        }
    }

    /// `service`, behind a gate that lets in callers with `scope`.
    pub fn gate<S>(&self, scope: Scope, service: S) -> Gate<S> {
        Gate {
            inner: service,
            scope,
            auth: self.clone(),
        }
    }

    /// The caller of a call with these headers, on a connection with this
    /// peer, if it may use a service needing `scope`.
    fn admit(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&Peer>,
        scope: Scope,
    ) -> Result<Arc<Caller>, Status> {
        let mut entries = headers.get_all(http::header::AUTHORIZATION).iter();
        let header = entries.next().map(|value| value.as_bytes());
        // Two credentials on one call are ambiguous (which one is the
        // caller?), whatever they hold: refused, rather than letting the
        // first decide (a proxy appending its own header, or a client hoping
        // one of two is looked at). UNAUTHENTICATED, like every call whose
        // credentials do not name exactly one caller: clients already handle
        // it by fixing their credentials, and the call reaches no handler.
        if entries.next().is_some() {
            return Err(Status::unauthenticated(
                "the call carries more than one `authorization` entry: send exactly one, \
                 `authorization: Bearer <token>`",
            ));
        }
        let certificate = peer.and_then(|peer| peer.client.as_ref());
        let policy = self.policy.current();
        let caller = match (header, certificate) {
            (None, Some(identity)) => policy.authenticate_tls(identity.names()),
            (header, _) => policy.authenticate(header),
        }
        .map_err(|error| Status::unauthenticated(error.to_string()))?;
        crate::logs::record_caller(&caller.name);
        crate::telemetry::record_caller(&caller.name);
        if !caller.may(scope) {
            return Err(Status::permission_denied(format!(
                "caller {:?} lacks the scope {:?} this service needs: ask an operator to add it \
                 to the caller's `scopes` in the policy file",
                caller.name,
                scope.as_str()
            )));
        }
        Ok(caller)
    }

    /// Takes one call slot (or stream slot) of `caller`.
    fn hold(&self, caller: &Caller, stream: bool) -> Result<Slot, Status> {
        let kind = if stream {
            SlotKind::Stream
        } else {
            SlotKind::Call
        };
        self.held.take(caller, kind).map_err(|refusal| {
            Status::with_error_details(
                tonic::Code::ResourceExhausted,
                refusal.to_string(),
                ErrorDetails::with_retry_info(Some(kind.retry())),
            )
        })
    }

    /// The slots of every caller, shared with the Clerk-compatible front.
    pub fn slots(&self) -> Arc<Slots> {
        self.held.clone()
    }
}

/// A service behind the gate (see the module docs).
#[derive(Clone, Debug)]
pub struct Gate<S> {
    inner: S,
    scope: Scope,
    auth: Authenticate,
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let stream = request.uri().path() == LIST_USERS_PATH;
        // Subscribed before admission, so a stream misses no reload.
        let reloads = stream.then(|| self.auth.policy.subscribe());
        let admitted = self
            .auth
            .admit(
                request.headers(),
                request.extensions().get::<Peer>(),
                self.scope,
            )
            .and_then(|caller| Ok((self.auth.hold(&caller, stream)?, caller)));
        let (slot, caller) = match admitted {
            Ok(admitted) => admitted,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        if let Some(reloads) = reloads {
            let standing = Standing::new(
                &caller,
                request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|value| value.as_bytes()),
                request
                    .extensions()
                    .get::<Peer>()
                    .and_then(|peer| peer.client.as_ref()),
                reloads,
            );
            request.extensions_mut().insert(standing);
        }
        request.extensions_mut().insert(caller);
        // The ready service answers this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // A panicking handler is a bug: the call gets INTERNAL (the panic
            // hook logged it) and the broker goes on.
            let response = match AssertUnwindSafe(inner.call(request)).catch_unwind().await {
                Ok(response) => response?,
                Err(_) => return Ok(panicked().into_http()),
            };
            // The slot is held until the response body ends or is dropped.
            Ok(response.map(|body| Body::new(Guarded::new(body, slot))))
        })
    }
}

/// The status of a call whose handler panicked.
fn panicked() -> Status {
    Status::internal(
        "the broker hit a bug answering this call (it is logged); retry, and report it if it \
         persists",
    )
}

/// The caller a request was admitted as; a request that passed no gate is
/// no one, with no scopes (fail closed).
pub(crate) fn caller<T>(request: &Request<T>) -> Arc<Caller> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .unwrap_or_else(|| {
            Arc::new(Caller {
                scopes: Scopes::default(),
                ..Caller::anonymous()
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{callers::CallerLimits, grpc::wire::user_service_server::UserServiceServer};

    fn caller(limits: CallerLimits) -> Caller {
        Caller {
            name: "c".into(),
            limits,
            ..Caller::anonymous()
        }
    }

    #[test]
    fn list_users_path_names_the_generated_method() {
        let service = <UserServiceServer<crate::grpc::UserApi> as NamedService>::NAME;
        assert_eq!(LIST_USERS_PATH, format!("/{service}/ListUsers"));
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_frees_its_slot() {
        let auth = Authenticate::new(Arc::new(PolicyStore::new(Arc::new(
            crate::callers::Policy::anonymous(),
        ))));
        let service = tower::service_fn(|_: http::Request<()>| async {
            if true {
                panic!("a bug in a handler");
            }
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let mut gate = auth.gate(Scope::ReadUsers, service);
        for _ in 0..2 {
            let request = http::Request::builder()
                .uri("/clerk_broker.v1.UserService/GetUser")
                .body(())
                .unwrap();
            let response = tower::Service::call(&mut gate, request).await.unwrap();
            let status = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), tonic::Code::Internal);
            assert!(status.message().contains("bug"), "{status:?}");
        }
        assert_eq!(
            auth.held.held(crate::admission::ANONYMOUS, SlotKind::Call),
            0
        );
    }

    #[test]
    fn a_caller_at_its_limit_is_refused_with_retry_info() {
        let auth = Authenticate::new(Arc::new(PolicyStore::new(Arc::new(
            crate::callers::Policy::anonymous(),
        ))));
        let caller = caller(CallerLimits {
            max_in_flight: 1,
            max_streams: 1,
        });
        let _held = auth.hold(&caller, false).unwrap();
        let refused = auth.hold(&caller, false).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("max_in_flight"), "{refused:?}");
        let retry = refused.get_details_retry_info().unwrap().retry_delay;
        assert_eq!(retry, Some(crate::callers::IN_FLIGHT_RETRY));
    }
}
