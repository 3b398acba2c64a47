//! The Clerk Backend API client: the only code that talks to Clerk.
//!
//! Every request first takes a permit from the upstream budget (see
//! `admission`), carries the bearer key and the pinned API version, and is
//! retried with jittered backoff on 5xx, timeouts and broken connections while
//! the caller's deadline allows. A 429 pauses the whole budget until
//! `Retry-After` has passed.

mod error;
mod forward;
mod query;
mod user;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{
    StatusCode, Url,
    header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER},
};
use serde::Deserialize;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

pub use error::UpstreamError;
pub use forward::{Forward, Forwarded};
pub use query::{
    ExactField, ListQuery, MAX_FILTER_VALUES, MAX_PAGE, OrderBy, OrderByParseError, OrderField,
    PartialField, TimeField, UserFilter,
};
pub use user::{ClerkUser, PackedText};

use crate::{
    admission::{Admission, AdmissionError, Demand},
    secret::SecretKey,
    telemetry,
};
use tracing::Instrument as _;

/// The Clerk API version every request pins.
pub const API_VERSION: &str = "2025-11-10";
/// Clerk's production base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.clerk.com/v1";

/// How the client reaches Clerk.
#[derive(Clone, Debug)]
pub struct ClerkConfig {
    /// Base URL, e.g. `https://api.clerk.com/v1`.
    pub base_url: Url,
    /// The secret key sent as bearer token.
    pub secret_key: SecretKey,
    /// Longest time one HTTP request may take.
    pub request_timeout: Duration,
    /// Most attempts of one request (the first try included).
    pub max_attempts: u32,
}

/// What the client reports to operators; `metrics` implements it.
pub trait UpstreamEvents: Send + Sync + std::fmt::Debug {
    /// One request to `endpoint` ended with HTTP `status` (None: no answer:
    /// timeout or broken connection) after `duration`.
    fn answered(&self, endpoint: &str, status: Option<u16>, duration: Duration);
}

/// Reports nothing.
#[derive(Debug)]
struct NoUpstreamEvents;

impl UpstreamEvents for NoUpstreamEvents {
    fn answered(&self, _: &str, _: Option<u16>, _: Duration) {}
}

/// Whether Clerk accepts the broker's key, as last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// No request has been answered yet, or the last answer accepted the key.
    Accepted,
    /// The broker's own key check ([`ClerkClient::check_key`]) was answered
    /// 401 with a code saying the key is invalid: the broker is misconfigured.
    Rejected,
}

/// Clerk's error codes of a 401 that mean the key itself is refused; other
/// 401s and every 403 concern one request (e.g. a feature disabled on the
/// instance), not the key.
const KEY_INVALID_CODES: [&str; 2] = ["authentication_invalid", "clerk_key_invalid"];

/// The Clerk HTTP client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ClerkClient {
    http: reqwest::Client,
    base_url: Url,
    /// `Bearer <key>`, marked sensitive so `http` never prints it.
    authorization: HeaderValue,
    admission: Arc<Admission>,
    request_timeout: Duration,
    max_attempts: u32,
    /// Published so health can follow whether Clerk accepts the key.
    key_state: watch::Sender<KeyState>,
    /// Signalled when a caller's request was refused for the key: the key
    /// watcher then confirms with [`ClerkClient::check_key`] before readiness
    /// changes.
    key_doubt: Notify,
    /// Told of every answer (metrics).
    events: Arc<dyn UpstreamEvents>,
}

/// Which endpoint a request is for; names the thing that can be "not found".
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    GetUser,
    ListUsers,
    CountUsers,
    /// `GET /users/count` sent by the broker itself to check its key.
    KeyCheck,
}

impl Endpoint {
    /// The endpoint as a metric label.
    fn label(self) -> &'static str {
        match self {
            Endpoint::GetUser => "GET /users/{id}",
            Endpoint::ListUsers => "GET /users",
            Endpoint::CountUsers | Endpoint::KeyCheck => "GET /users/count",
        }
    }
}

/// Clerk's error envelope, read only for its code and trace id.
#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
    #[serde(default)]
    clerk_trace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
}

/// Clerk's count response.
#[derive(Deserialize)]
struct TotalCount {
    total_count: u64,
}

/// How a single attempt ended, when it did not produce a body.
enum Attempt {
    /// Final: return this error.
    Fail(UpstreamError),
    /// Worth another attempt after backoff.
    Retry(String),
}

impl ClerkClient {
    /// Builds the client. Fails only if the TLS stack cannot be set up.
    pub fn new(config: ClerkConfig, admission: Arc<Admission>) -> Result<Self, reqwest::Error> {
        // reqwest is built without a default crypto provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("clerk-broker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", config.secret_key.expose()))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        authorization.set_sensitive(true);
        let mut base_url = config.base_url;
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        Ok(Self {
            http,
            base_url,
            authorization,
            admission,
            request_timeout: config.request_timeout,
            max_attempts: config.max_attempts.max(1),
            key_state: watch::Sender::new(KeyState::Accepted),
            key_doubt: Notify::new(),
            events: Arc::new(NoUpstreamEvents),
        })
    }

    /// Reports every answer to `events`.
    pub fn observed(mut self, events: Arc<dyn UpstreamEvents>) -> Self {
        self.events = events;
        self
    }

    /// Follows whether Clerk accepts the broker's key.
    pub fn key_state(&self) -> watch::Receiver<KeyState> {
        self.key_state.subscribe()
    }

    /// Resolves when a caller's request was answered 401 for the key (once
    /// for any number of such answers since the last call): time to
    /// [`check_key`](Self::check_key).
    pub async fn key_doubted(&self) {
        self.key_doubt.notified().await;
    }

    /// Asks Clerk whether it accepts the key, with a request of the broker's
    /// own (`GET /users/count`, under admission like every request): a 401
    /// saying the key is invalid marks it [`KeyState::Rejected`], a success
    /// marks it accepted, and any other outcome changes nothing (a Clerk
    /// outage is not a bad key).
    pub async fn check_key(&self, demand: &Demand) -> Result<(), UpstreamError> {
        let url = self.url("users/count");
        self.send(Endpoint::KeyCheck, url, demand).await.map(drop)
    }

    /// `GET /users/{id}`.
    pub async fn get_user(&self, id: &str, demand: &Demand) -> Result<ClerkUser, UpstreamError> {
        let mut url = self.url("users");
        url.path_segments_mut()
            .map_err(|()| UpstreamError::Unavailable("bad base URL".into()))?
            .push(id);
        let body = self.send(Endpoint::GetUser, url, demand).await?;
        ClerkUser::parse_one(&body)
            .ok_or_else(|| UpstreamError::Unavailable("Clerk sent a malformed user".into()))
    }

    /// `GET /users` with filters, order, limit and offset.
    pub async fn list_users(
        &self,
        query: &ListQuery,
        demand: &Demand,
    ) -> Result<Vec<ClerkUser>, UpstreamError> {
        let mut url = self.url("users");
        url.query_pairs_mut().extend_pairs(query.params());
        let body = self.send(Endpoint::ListUsers, url, demand).await?;
        ClerkUser::parse_list(&body)
            .ok_or_else(|| UpstreamError::Unavailable("Clerk sent a malformed user list".into()))
    }

    /// `GET /users/count` with filters.
    pub async fn count_users(
        &self,
        filter: &UserFilter,
        demand: &Demand,
    ) -> Result<u64, UpstreamError> {
        let mut url = self.url("users/count");
        let mut params = Vec::new();
        filter.write_params(&mut params);
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        let body = self.send(Endpoint::CountUsers, url, demand).await?;
        let count: TotalCount = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Unavailable("Clerk sent a malformed count".into()))?;
        Ok(count.total_count)
    }

    fn url(&self, path: &str) -> Url {
        // Joining a fixed relative path onto a base ending in '/' cannot fail.
        self.base_url
            .join(path)
            .unwrap_or_else(|_| self.base_url.clone())
    }

    /// Sends one GET, with admission, retries and error mapping; returns the body of a 2xx.
    async fn send(
        &self,
        endpoint: Endpoint,
        url: Url,
        demand: &Demand,
    ) -> Result<Bytes, UpstreamError> {
        let span = telemetry::upstream_span(endpoint.label());
        self.send_attempts(endpoint, url, demand)
            .instrument(span)
            .await
    }

    /// [`Self::send`], in the request's span.
    async fn send_attempts(
        &self,
        endpoint: Endpoint,
        url: Url,
        demand: &Demand,
    ) -> Result<Bytes, UpstreamError> {
        let deadline = demand.deadline;
        let mut attempt = 0;
        loop {
            attempt += 1;
            telemetry::record_attempt(attempt);
            let retry_reason = match self.attempt(endpoint, &url, demand).await {
                Ok(body) => return Ok(body),
                Err(Attempt::Fail(error)) => return Err(error),
                Err(Attempt::Retry(reason)) => reason,
            };
            if attempt >= self.max_attempts {
                return Err(UpstreamError::Unavailable(retry_reason));
            }
            let backoff = backoff(attempt);
            if Instant::now() + backoff >= deadline {
                return Err(UpstreamError::Unavailable(retry_reason));
            }
            tracing::debug!(?endpoint, attempt, ?backoff, reason = %retry_reason, "retrying Clerk request");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn attempt(
        &self,
        endpoint: Endpoint,
        url: &Url,
        demand: &Demand,
    ) -> Result<Bytes, Attempt> {
        let deadline = demand.deadline;
        if Instant::now() >= deadline {
            return Err(Attempt::Fail(UpstreamError::DeadlineExceeded));
        }
        // Held until the answer is in: the request counts from then on.
        let _permit = self
            .admission
            .upstream()
            .acquire(demand, 1)
            .await
            .map_err(|refused| {
                Attempt::Fail(match refused {
                    AdmissionError::Refused { retry_after } => {
                        UpstreamError::BudgetExhausted { retry_after }
                    }
                    other => UpstreamError::Unavailable(other.to_string()),
                })
            })?;
        let sent = Instant::now();
        let timeout = self
            .request_timeout
            .min(deadline.saturating_duration_since(sent));
        let no_answer = |error: reqwest::Error| {
            self.events.answered(endpoint.label(), None, sent.elapsed());
            Attempt::Retry(describe(&error))
        };
        let response = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header("Clerk-API-Version", API_VERSION)
            .timeout(timeout)
            .send()
            .await
            .map_err(no_answer)?;
        let status = response.status();
        let headers = response.headers().clone();
        telemetry::record_answer(status.as_u16(), &headers);
        let body = response.bytes().await.map_err(no_answer)?;
        self.events
            .answered(endpoint.label(), Some(status.as_u16()), sent.elapsed());
        if status.is_success() {
            self.key_state.send_if_modified(|state| {
                std::mem::replace(state, KeyState::Accepted) != KeyState::Accepted
            });
            return Ok(body);
        }
        let (code, trace_id) = envelope(&headers, &body);
        telemetry::record_clerk_trace_id(&trace_id);
        if status == StatusCode::NOT_FOUND {
            tracing::debug!(?endpoint, %code, %trace_id, "Clerk has no such resource");
        } else {
            tracing::warn!(?endpoint, status = status.as_u16(), %code, %trace_id, "Clerk answered with an error");
        }
        Err(match status {
            StatusCode::NOT_FOUND => Attempt::Fail(UpstreamError::NotFound(match endpoint {
                Endpoint::GetUser => "user",
                Endpoint::ListUsers | Endpoint::CountUsers | Endpoint::KeyCheck => "endpoint",
            })),
            StatusCode::UNAUTHORIZED if KEY_INVALID_CODES.contains(&code.as_str()) => {
                // Only the broker's own check decides; a caller's request
                // asks for one.
                if matches!(endpoint, Endpoint::KeyCheck) {
                    self.key_state.send_replace(KeyState::Rejected);
                } else if *self.key_state.borrow() == KeyState::Accepted {
                    self.key_doubt.notify_one();
                }
                Attempt::Fail(UpstreamError::KeyRejected {
                    status: status.as_u16(),
                })
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Attempt::Fail(UpstreamError::Refused {
                    status: status.as_u16(),
                    code,
                })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = retry_after(&headers);
                let until = Instant::now() + retry_after;
                self.admission.upstream().pause_until(until);
                if until >= deadline {
                    Attempt::Fail(UpstreamError::RateLimited { retry_after })
                } else {
                    // The next attempt's permit waits for the pause to end.
                    Attempt::Retry("Clerk answered 429".into())
                }
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Attempt::Fail(UpstreamError::Rejected { code })
            }
            status if status.is_server_error() => {
                Attempt::Retry(format!("Clerk answered HTTP {}", status.as_u16()))
            }
            status => Attempt::Fail(UpstreamError::Unavailable(format!(
                "Clerk answered HTTP {}",
                status.as_u16()
            ))),
        })
    }
}

impl ClerkClient {
    /// Marks the key rejected when an error answer says so: a 401 whose
    /// error code is about the key. Other 401s and 403s concern the request
    /// (a feature off on the instance, a resource of another instance…).
    fn observe_rejection(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) {
        if status != StatusCode::UNAUTHORIZED {
            return;
        }
        let (code, trace_id) = envelope(headers, body);
        if matches!(
            code.as_str(),
            "authentication_invalid" | "clerk_key_invalid"
        ) {
            tracing::error!(%code, %trace_id, "Clerk rejected the broker's secret key");
            self.key_state.send_replace(KeyState::Rejected);
        }
    }
}

/// Jittered exponential backoff: about 100 ms, 200 ms, 400 ms … capped at 2 s.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64
        .saturating_mul(1 << attempt.min(5).saturating_sub(1))
        .min(2000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

/// `Retry-After` in seconds; 10 s (Clerk's window) when absent or unreadable.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs)
}

/// Clerk's error code and trace id, for logs and status messages.
fn envelope(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|envelope| envelope.errors.first())
        .map_or_else(|| "unknown".to_owned(), |entry| entry.code.clone());
    let trace_id = parsed
        .and_then(|envelope| envelope.clerk_trace_id)
        .or_else(|| telemetry::clerk_trace_id(headers).map(str::to_owned))
        .unwrap_or_default();
    (code, trace_id)
}

/// A transport error, described without its URL (which is harmless, but noisy).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the request to Clerk timed out".into()
    } else if error.is_connect() {
        "could not connect to Clerk".into()
    } else {
        "the connection to Clerk failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for attempt in 1..10 {
            let delay = backoff(attempt);
            let base = (100u64 << (attempt.min(5) - 1)).min(2000);
            assert!(
                delay >= Duration::from_millis(base / 2),
                "{attempt}: {delay:?}"
            );
            assert!(delay <= Duration::from_millis(base), "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn reads_retry_after_and_the_error_envelope() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), Duration::from_secs(10));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Duration::from_secs(3));
        let body =
            br#"{"errors":[{"code":"resource_not_found","message":"x"}],"clerk_trace_id":"t1"}"#;
        assert_eq!(
            envelope(&headers, body),
            ("resource_not_found".into(), "t1".into())
        );
        headers.insert("x-clerk-trace-id", HeaderValue::from_static("t3"));
        assert_eq!(
            envelope(&headers, b"<html>"),
            ("unknown".into(), "t3".into())
        );
        headers.insert("clerk-trace-id", HeaderValue::from_static("t2"));
        assert_eq!(
            envelope(&headers, b"<html>"),
            ("unknown".into(), "t2".into())
        );
    }
}
