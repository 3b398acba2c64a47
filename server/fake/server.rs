//! The fake's HTTP pipeline. Every request goes through the same steps, in Clerk's order:
//! count it, authenticate the bearer key (401), consult the instance rate limiter (429 with
//! `Retry-After`; `GET /v1/jwks` is exempt) then the endpoint's own limit if it has one, roll
//! the faults, then answer the endpoint; injected latency is added last.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::body::Rejection;
use super::limit::{Admission, Fault, retry_after_secs};
use super::route::Route;
use super::{FakeClerk, filter, jwks, lock, orgs, user_writes};

/// What a request's handler shares: the fake and the shutdown signal that releases requests
/// held by the timeout fault.
#[derive(Clone)]
struct Served {
    /// The fake being served.
    fake: FakeClerk,
    /// Turns true when the server shuts down.
    shutdown: watch::Receiver<bool>,
}

/// Serves `fake` on `listener` until `shutdown` resolves, then drains connections.
pub(super) async fn serve(
    fake: FakeClerk,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping, stopped) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        // Requests held by the timeout fault watch this; no receiver left is fine.
        let _ = stopping.send(true);
    };
    let state = Served {
        fake,
        shutdown: stopped,
    };
    // One handler routes by hand, so unknown paths and methods are counted and answered
    // with Clerk's envelope like everything else.
    let app = Router::new().fallback(handle).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}

/// A response before the trace id and faults are applied.
struct Reply {
    /// HTTP status.
    status: StatusCode,
    /// JSON body.
    body: Vec<u8>,
    /// `Retry-After` seconds, for 429s.
    retry_after: Option<u64>,
}

impl Reply {
    /// A 200 with `body`.
    fn ok(body: Vec<u8>) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            retry_after: None,
        }
    }

    /// Clerk's error envelope: `{"errors":[{message,long_message,code,meta}],"clerk_trace_id"}`.
    fn error(status: StatusCode, code: &str, message: &str, long: &str, trace: &str) -> Self {
        Self::error_with_meta(status, code, message, long, json!({}), trace)
    }

    /// An error envelope whose `meta` says more, e.g. which parameter was invalid.
    fn error_with_meta(
        status: StatusCode,
        code: &str,
        message: &str,
        long: &str,
        meta: Value,
        trace: &str,
    ) -> Self {
        let body = json!({
            "errors": [{"message": message, "long_message": long, "code": code, "meta": meta}],
            "clerk_trace_id": trace,
        });
        Self {
            status,
            body: body.to_string().into_bytes(),
            retry_after: None,
        }
    }
}

/// The one handler: the pipeline described in the module doc.
async fn handle(
    State(served): State<Served>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::of(&method, uri.path());
    let trace = format!("{:032x}", fastrand::u128(..));
    let fake = &served.fake;
    let faults = lock(&fake.inner.faults).clone();
    let ids = match &route {
        Route::Get(_) => 1,
        Route::List | Route::Count => uri.query().map_or(0, |query| {
            query
                .split('&')
                .filter(|pair| pair.starts_with("user_id="))
                .count() as u64
        }),
        _ => 0,
    };
    fake.gate().stats.ids_requested += ids;
    let reply = match fake.admit(&route, &headers, &trace) {
        Err(reply) => reply,
        Ok(()) => match faults.roll(fastrand::f64()) {
            Fault::Timeout => {
                let mut stopped = served.shutdown.clone();
                let _ = stopped.wait_for(|stopping| *stopping).await;
                let long = "The fake is shutting down";
                Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "Unavailable",
                    long,
                    &trace,
                )
            }
            Fault::ServerError => {
                fake.gate().stats.server_errors += 1;
                server_error(&trace)
            }
            Fault::Drop => {
                sleep(faults.latency).await;
                return broken(endpoint(fake, &route, &uri, &body, &trace), &trace);
            }
            Fault::Malformed => {
                let mut reply = endpoint(fake, &route, &uri, &body, &trace);
                reply.status = StatusCode::OK;
                reply.body.truncate(reply.body.len() / 2);
                reply
            }
            Fault::Forbidden => Reply::error(
                StatusCode::FORBIDDEN,
                "authorization_invalid",
                "Unauthorized request",
                "You are not authorized to perform this request",
                &trace,
            ),
            Fault::None => endpoint(fake, &route, &uri, &body, &trace),
        },
    };
    sleep(faults.latency).await;
    respond(reply, &trace)
}

impl FakeClerk {
    /// Counts the request, then authenticates and rate-limits it (instance limit, then the
    /// endpoint's own) in one critical section; `Err` carries the 401 or 429 to send.
    fn admit(&self, route: &Route, headers: &HeaderMap, trace: &str) -> Result<(), Reply> {
        let now = tokio::time::Instant::now();
        let mut gate = self.gate();
        let stats = &mut gate.stats;
        stats.requests += 1;
        match route {
            Route::List => stats.list_requests += 1,
            Route::Count => stats.count_requests += 1,
            Route::Get(_) => stats.get_requests += 1,
            _ => {}
        }
        *stats
            .route_requests
            .entry(route.template().to_owned())
            .or_default() += 1;
        let version = headers
            .get("clerk-api-version")
            .and_then(|v| v.to_str().ok());
        if let Some(version) = version {
            stats.last_api_version = Some(version.to_owned());
        }
        if headers.contains_key("traceparent") || headers.contains_key("tracestate") {
            stats.trace_context_requests += 1;
        }
        if let Err(rejection) = self.authenticate(headers, trace) {
            stats.unauthorized += 1;
            return Err(rejection);
        }
        if route.counts_in_instance_budget() {
            match gate.limiter.admit(now) {
                Admission::Accepted { in_window } => {
                    gate.stats.max_in_window = gate.stats.max_in_window.max(in_window);
                }
                Admission::Blocked { retry_after } => {
                    gate.stats.rate_limited += 1;
                    return Err(too_many_requests(retry_after, trace));
                }
            }
        }
        let Some((endpoint, key)) = route.endpoint_limit() else {
            return Ok(());
        };
        match gate.endpoint_limiter.admit(endpoint, key, now) {
            Admission::Accepted { in_window: 0 } => Ok(()),
            Admission::Accepted { in_window } => {
                let max = gate
                    .stats
                    .endpoint_max_in_window
                    .entry(endpoint)
                    .or_default();
                *max = (*max).max(in_window);
                Ok(())
            }
            Admission::Blocked { retry_after } => {
                gate.stats.rate_limited += 1;
                *gate
                    .stats
                    .endpoint_rate_limited
                    .entry(endpoint)
                    .or_default() += 1;
                Err(too_many_requests(retry_after, trace))
            }
        }
    }

    /// Checks `Authorization: Bearer <secret key>`.
    fn authenticate(&self, headers: &HeaderMap, trace: &str) -> Result<(), Reply> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let status = StatusCode::UNAUTHORIZED;
        match given.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(key) if key == self.inner.secret_key => Ok(()),
            Some(_) => {
                let long = "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.";
                Err(Reply::error(
                    status,
                    "clerk_key_invalid",
                    "Secret Key invalid",
                    long,
                    trace,
                ))
            }
            None => {
                let long =
                    "Unable to authenticate the request, you need to supply an active API key";
                Err(Reply::error(
                    status,
                    "authentication_invalid",
                    "Invalid authentication",
                    long,
                    trace,
                ))
            }
        }
    }
}

/// Clerk's 429, with `Retry-After` in whole seconds.
fn too_many_requests(retry_after: Duration, trace: &str) -> Reply {
    let long = "Too many requests, please retry later";
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut reply = Reply::error(
        status,
        "too_many_requests",
        "Too many requests",
        long,
        trace,
    );
    reply.retry_after = Some(retry_after_secs(retry_after));
    reply
}

/// Answers the endpoint itself.
fn endpoint(fake: &FakeClerk, route: &Route, uri: &Uri, body: &[u8], trace: &str) -> Reply {
    let pairs =
        Query::<Vec<(String, String)>>::try_from_uri(uri).map_or_else(|_| Vec::new(), |q| q.0);
    if let Some(answer) = write_or_organization(fake, route, &pairs, body) {
        return match answer {
            Ok(body) => Reply::ok(body),
            Err(rejection) => rejected(rejection, trace),
        };
    }
    let store = fake.read_store();
    let result = match route {
        Route::List => {
            filter::parse_list(&pairs).map(|(filter, page)| to_json(&store.list(&filter, &page)))
        }
        Route::Count => filter::parse_count(&pairs).map(|filter| {
            json!({"object": "total_count", "total_count": store.count(&filter)})
                .to_string()
                .into_bytes()
        }),
        Route::Get(id) => match store.get(id) {
            Some(user) => Ok(to_json(user)),
            None => {
                let long = format!("No user was found with id {id}");
                return Reply::error(
                    StatusCode::NOT_FOUND,
                    "resource_not_found",
                    "not found",
                    &long,
                    trace,
                );
            }
        },
        _ => {
            let long = "The requested resource was not found";
            return Reply::error(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                "not found",
                long,
                trace,
            );
        }
    };
    match result {
        Ok(body) => Reply::ok(body),
        Err(error) => Reply::error_with_meta(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_value_invalid",
            "is invalid",
            &error.long_message,
            json!({"param_name": error.param}),
            trace,
        ),
    }
}

/// Answers the endpoints beyond the users reads: `None` for the others.
fn write_or_organization(
    fake: &FakeClerk,
    route: &Route,
    pairs: &[(String, String)],
    body: &[u8],
) -> Option<Result<Vec<u8>, Rejection>> {
    let json = |answer: Result<Value, Rejection>| answer.map(|value| to_json(&value));
    let answer = match route {
        Route::UpdateUser(id) => user_writes::update_user(&mut fake.write_store(), id, body),
        Route::MergeUserMetadata(id) => {
            user_writes::merge_user_metadata(&mut fake.write_store(), id, body)
        }
        Route::ReplaceUserMetadata(id) => {
            user_writes::replace_user_metadata(&mut fake.write_store(), id, body)
        }
        // The users are locked before the organizations, always (see `Inner::orgs`).
        Route::GetOrganization(id) => {
            let store = fake.read_store();
            json(orgs::get(&fake.read_orgs(), &store, id, pairs))
        }
        Route::UpdateOrganization(id) => json(fake.write_orgs().update(id, body)),
        Route::MergeOrganizationMetadata(id) => json(fake.write_orgs().merge_metadata(id, body)),
        Route::ReplaceOrganizationMetadata(id) => {
            json(fake.write_orgs().replace_metadata(id, body))
        }
        Route::ListMemberships(id) => {
            let store = fake.read_store();
            json(orgs::memberships(&fake.read_orgs(), &store, id, pairs))
        }
        Route::CreateInvitation => {
            let store = fake.read_store();
            json(lock(&fake.inner.invitations).create(&store, body))
        }
        Route::Jwks => json(Ok(jwks::key_set())),
        Route::List | Route::Count | Route::Get(_) | Route::Unknown => return None,
    };
    Some(answer)
}

/// Clerk's error envelope for a rejected request, naming the parameter at fault in `meta`.
fn rejected(rejection: Rejection, trace: &str) -> Reply {
    let meta = match &rejection.param {
        Some(param) => json!({"param_name": param}),
        None => json!({}),
    };
    Reply::error_with_meta(
        rejection.status,
        rejection.code,
        rejection.message,
        &rejection.long_message,
        meta,
        trace,
    )
}

/// Serializes a value already known to be valid JSON.
fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

/// An injected 500, 502 or 503.
fn server_error(trace: &str) -> Reply {
    let (status, code, message) = match fastrand::u8(0..3) {
        0 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_clerk_error",
            "Internal error",
        ),
        1 => (StatusCode::BAD_GATEWAY, "bad_gateway", "Bad gateway"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable",
        ),
    };
    let long = "Something went wrong on Clerk's side, please retry";
    Reply::error(status, code, message, long, trace)
}

/// Waits out the injected latency, if any.
async fn sleep(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// Builds the HTTP response: JSON body, `Clerk-Trace-Id`, and `Retry-After` on 429s.
fn respond(reply: Reply, trace: &str) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = reply.status;
    add_headers(response.headers_mut(), trace, reply.retry_after);
    response
}

/// A 200 announcing the whole body, sending half of it, then failing: hyper aborts the
/// connection and the client sees an I/O error mid-body.
fn broken(reply: Reply, trace: &str) -> Response {
    let full = reply.body.len();
    let mut half = reply.body;
    half.truncate(full / 2);
    let chunks: [Result<Bytes, std::io::Error>; 2] = [
        Ok(Bytes::from(half)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected drop",
        )),
    ];
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    add_headers(response.headers_mut(), trace, None);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full.max(1)));
    response
}

/// The headers every response carries.
fn add_headers(headers: &mut HeaderMap, trace: &str, retry_after: Option<u64>) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(trace) = HeaderValue::from_str(trace) {
        headers.insert("clerk-trace-id", trace);
    }
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}
