//! The Clerk-compatible Backend API front: a listener of its own where
//! services using Clerk's official SDKs point their API base URL, with a
//! broker caller token as their secret key.
//!
//! Every request: the caller is authenticated (its bearer token, as on
//! gRPC), its route checked against its allow-list (403 before any budget
//! is spent), its demand read (priority, deadline); then user reads, counts
//! and the JWKS are answered from the domain (`reads`), and every other
//! route is forwarded to Clerk with the broker's key under the upstream
//! budget and, where Clerk has a per-endpoint limit, the keyed budget of that
//! route. Answers go back as Clerk sent them, with `private_metadata` removed
//! at any depth for callers without its scope; successful writes of a user
//! update or drop its cached entry on every replica.
//!
//! This module is transport and policy only: the domain (`users`,
//! `admission`, `clerk`) does the work.

mod reads;
mod reply;

use reply::Refusal;

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::Response,
};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::{
    admission::{Admission, Demand, Priority},
    callers::{Caller, PolicyStore, Scope, SlotKind, Slots},
    clerk::{ClerkClient, ClerkUser, Forward, Forwarded},
    counts::CountCache,
    grpc::EncodedUsers,
    metrics::Metrics,
    routes, telemetry,
    tls::Peer,
    users::Users,
    webhook::UserEvent,
};

/// Request header asking for bulk priority (`bulk`) instead of interactive.
pub const PRIORITY_HEADER: &str = "x-clerk-broker-priority";
/// Request header giving the request's deadline as a duration (`2s`,
/// `500ms`), at most [`MAX_TIMEOUT`].
pub const TIMEOUT_HEADER: &str = "x-clerk-broker-timeout";
/// Fewest connections the front accepts at once (`--http-max-connections`
/// if larger): services hold pools of them.
pub const MIN_CONNECTIONS: usize = 1024;
/// Longest deadline a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Most distinct route templates labelled in metrics; later ones count as
/// `other` (templates never hold ids, but callers choose the paths).
const MAX_TEMPLATES: usize = 256;

/// What the front needs of the broker.
#[derive(Debug)]
pub struct Front {
    /// The broker's objects it works with.
    parts: Parts,
    /// Deadline of a request that names none.
    default_timeout: Duration,
    /// The JWKS, served from memory for 5 minutes.
    jwks: reads::JwksCache,
    /// Route templates seen, bounded by [`MAX_TEMPLATES`].
    templates: Mutex<HashSet<String>>,
}

/// The broker's shared objects the front works with.
#[derive(Debug)]
pub struct Parts {
    /// The policy in force (callers, allow-lists, per-endpoint limits).
    pub policy: Arc<PolicyStore>,
    /// All budgets, keyed ones included.
    pub admission: Arc<Admission>,
    /// The only client that talks to Clerk.
    pub clerk: Arc<ClerkClient>,
    /// User lookups (cache, flights, batcher).
    pub users: Arc<Users>,
    /// Counts by filter, shared with `UserService.CountUsers`.
    pub counts: Arc<CountCache>,
    /// Requests by route, caller and status.
    pub metrics: Arc<Metrics>,
    /// What each caller holds: a request holds one of its caller's
    /// `max_in_flight` slots, shared with its gRPC calls.
    pub slots: Arc<Slots>,
    /// Users' texts as answered, remembered for the users served most
    /// (shared with `UserService`'s encodings, within one bound).
    pub encoded: Arc<EncodedUsers>,
}

impl Front {
    /// The front over the broker's domain objects.
    pub fn new(parts: Parts, default_timeout: Duration) -> Self {
        Self {
            parts,
            default_timeout,
            jwks: reads::JwksCache::default(),
            templates: Mutex::default(),
        }
    }

    /// The template of `path` for metrics and logs, or `other` once
    /// [`MAX_TEMPLATES`] are known.
    fn template(&self, path: &str) -> String {
        let template = routes::template(path);
        let mut known = self
            .templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.contains(&template) || known.len() < MAX_TEMPLATES {
            known.insert(template.clone());
            template
        } else {
            "other".to_owned()
        }
    }
}

/// The front's routes: every path, one handler; bodies up to `max_body`.
pub fn router(front: Arc<Front>, max_body: usize) -> Router {
    Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(front)
}

/// One request, from caller to answer; counted by route template, caller
/// and status.
async fn handle(State(front): State<Arc<Front>>, request: Request) -> Response {
    let started = Instant::now();
    let route = front.template(request.uri().path());
    let method = request.method().clone();
    // A child of the caller's `traceparent` (none when tracing is off).
    let span = telemetry::front_span(&method, &route, request.headers());
    let (caller, response) = answer(&front, &route, request)
        .instrument(span.clone())
        .await;
    let caller = caller.as_deref().map_or("unknown", |caller| &caller.name);
    let status = response.status().as_u16();
    span.record("caller", caller);
    span.record("status", status);
    let elapsed = started.elapsed();
    tracing::debug!(%method, route, caller, status, ?elapsed, "Clerk API request");
    front
        .parts
        .metrics
        .front_request(&route, caller, status, elapsed);
    response
}

async fn answer(front: &Front, route: &str, request: Request) -> (Option<Arc<Caller>>, Response) {
    let (parts, body) = request.into_parts();
    let method = parts.method;
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let peer = parts.extensions.get::<Peer>();
    let caller = match authenticate(front, &parts.headers, peer) {
        Ok(caller) => caller,
        Err(refusal) => return (None, refusal.into_response()),
    };
    // Held until the answer is ready.
    let _slot = match front.parts.slots.take(&caller, SlotKind::Call) {
        Ok(slot) => slot,
        Err(refusal) => {
            let response = reply::too_many_requests(refusal.kind.retry(), &refusal.to_string());
            return (Some(caller), response);
        }
    };
    if !path.starts_with("/v1/") {
        let response = reply::error(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            "The broker serves Clerk's Backend API under /v1/",
        );
        return (Some(caller), response);
    }
    if !caller.may_call(method.as_str(), &path) {
        tracing::info!(caller = %caller.name, %method, route, "route refused by the caller's allow-list");
        let response = reply::error(
            StatusCode::FORBIDDEN,
            "authorization_invalid",
            "Unauthorized request",
            &format!(
                "The caller {:?} may not call {method} {route}: ask an operator to add the route \
                 to its `routes` in the broker's policy",
                caller.name
            ),
        );
        return (Some(caller), response);
    }
    let demand = match demand(front, &caller, &parts.headers) {
        Ok(demand) => demand,
        Err(refusal) => return (Some(caller), refusal.into_response()),
    };
    // The body must arrive within the request's deadline.
    let body = match tokio::time::timeout_at(
        demand.deadline,
        axum::body::to_bytes(body, usize::MAX),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Err(_) => {
            let response = reply::error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Request timeout",
                "The request body did not arrive before the request's deadline",
            );
            return (Some(caller), response);
        }
        Ok(Err(_)) => {
            let response = reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_body_too_large",
                "Request body too large",
                "The request body is larger than the broker accepts (--clerk-api-max-body)",
            );
            return (Some(caller), response);
        }
    };
    let private_metadata = caller.may(Scope::ReadPrivateMetadata);
    if let Some(response) = reads::serve(
        front,
        &method,
        &path,
        query.as_deref(),
        &parts.headers,
        &demand,
        private_metadata,
    )
    .await
    {
        return (Some(caller), response);
    }
    let forward = Forward {
        path_and_query: match &query {
            Some(query) => format!("{}?{query}", &path["/v1/".len()..]),
            None => path["/v1/".len()..].to_owned(),
        },
        method,
        headers: parts.headers,
        body,
        route: route.to_owned(),
    };
    let response = pass_through(front, &forward, &path, &demand, private_metadata).await;
    (Some(caller), response)
}

/// The caller of a request: its `Authorization: Bearer <token>` (exactly
/// one such header); without one, the identity of the connection's verified
/// client certificate (mutual TLS), as on gRPC; the anonymous caller
/// without a policy file.
fn authenticate(
    front: &Front,
    headers: &HeaderMap,
    peer: Option<&Peer>,
) -> Result<Arc<Caller>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    let refused = |long_message: String| Refusal {
        status: StatusCode::UNAUTHORIZED,
        code: "authentication_invalid",
        message: "Invalid authentication",
        long_message,
    };
    if values.next().is_some() {
        return Err(refused(
            "Send exactly one Authorization header: `Bearer <broker caller token>`".to_owned(),
        ));
    }
    let policy = front.parts.policy.current();
    let certificate = peer.and_then(|peer| peer.client.as_ref());
    match (first, certificate) {
        (None, Some(identity)) => policy.authenticate_tls(identity.names()),
        (header, _) => policy.authenticate(header.map(|value| value.as_bytes())),
    }
    .map_err(|error| {
        refused(format!(
            "{error}: use a broker caller token as the SDK's secret key"
        ))
    })
}

/// The caller's demand: its weight, the priority and deadline it asked for.
fn demand(front: &Front, caller: &Caller, headers: &HeaderMap) -> Result<Demand, Refusal> {
    let bad = |long_message: String| Refusal {
        status: StatusCode::BAD_REQUEST,
        code: "form_param_value_invalid",
        message: "Invalid header",
        long_message,
    };
    let priority = match headers.get(PRIORITY_HEADER).map(|v| v.as_bytes()) {
        None | Some(b"interactive") => Priority::Interactive,
        Some(b"bulk") => Priority::Bulk,
        Some(_) => {
            return Err(bad(format!(
                "{PRIORITY_HEADER} must be `interactive` or `bulk`"
            )));
        }
    };
    let timeout = match headers.get(TIMEOUT_HEADER) {
        None => front.default_timeout,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(crate::admission::parse_duration)
            .filter(|timeout| !timeout.is_zero() && *timeout <= MAX_TIMEOUT)
            .ok_or_else(|| {
                bad(format!(
                    "{TIMEOUT_HEADER} must be a duration such as `2s` or `500ms`, at most {}s",
                    MAX_TIMEOUT.as_secs()
                ))
            })?,
    };
    Ok(Demand {
        caller: caller.name.clone(),
        weight: caller.weight,
        priority,
        deadline: Instant::now() + timeout,
    })
}

/// Forwards a request to Clerk (under its keyed budget, if its route has a
/// per-endpoint limit) and passes the answer back; a successful write of a
/// user updates or drops its cached entry.
async fn pass_through(
    front: &Front,
    forward: &Forward,
    path: &str,
    demand: &Demand,
    private_metadata: bool,
) -> Response {
    let policy = front.parts.policy.current();
    let keyed = policy.route_limits.iter().find_map(|limit| {
        let key = limit.pattern.key(forward.method.as_str(), path)?;
        Some(front.parts.admission.keyed(&limit.name)?.budget(&key))
    });
    let answer = match front
        .parts
        .clerk
        .forward(forward, keyed.as_deref(), demand)
        .await
    {
        Ok(answer) => answer,
        Err(error) => return reply::upstream(&error),
    };
    if answer.status.is_success() && forward.method != Method::GET {
        keep_cache_honest(front, path, &answer.body).await;
    }
    let mut answer = answer;
    if !private_metadata && !answer.body.is_empty() {
        // Clerk's JSON without the key at any depth (escaped spellings
        // included). A body that cannot be read as JSON is not passed on:
        // it might hold the key where no parser can find it.
        let stripped = std::str::from_utf8(&answer.body)
            .ok()
            .and_then(|text| crate::json::try_without_key(text, "private_metadata").ok());
        match stripped {
            Some(Cow::Borrowed(_)) => {}
            Some(Cow::Owned(text)) => answer.body = Bytes::from(text),
            None => {
                return reply::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "Clerk is unavailable",
                    "Clerk sent an answer that is not JSON; retry with backoff",
                );
            }
        }
    }
    passed_back(answer)
}

/// Clerk's answer as the front's: status, the headers worth keeping, body.
fn passed_back(answer: Forwarded) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// After a successful write under `/v1/users/{id}`: the answer replaces the
/// cached user when it is that user, otherwise the entry is dropped; on
/// every replica (the webhook path's fan-out).
async fn keep_cache_honest(front: &Front, path: &str, body: &[u8]) {
    let Some(id) = path
        .strip_prefix("/v1/users/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty() && *id != "count")
    else {
        return;
    };
    match ClerkUser::parse_one(body).filter(|user| user.id() == id && is_user(user)) {
        Some(user) => front.parts.users.apply(&UserEvent::Upserted(user)).await,
        None => {
            front.parts.users.invalidate(id).await;
        }
    }
}

/// Whether an object is a whole user (not a deletion stub).
fn is_user(user: &ClerkUser) -> bool {
    user.str("object") == Some("user") && !user.flag("deleted")
}
