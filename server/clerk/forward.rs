//! Forwarding any Clerk request as it came (the Clerk-compatible front):
//! method, path, query and body unchanged, the caller's credential replaced
//! by the broker's key, under the upstream budget and, for routes with a
//! per-endpoint limit, the budget of that route's key too.
//!
//! Clerk's answer comes back whole (status, body, the headers a client
//! needs), errors included: they are Clerk's words to the caller's SDK. Only
//! requests that never got an answer become an [`UpstreamError`].

use bytes::Bytes;
use reqwest::{
    Method, StatusCode,
    header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue},
};
use tokio::time::Instant;

use super::{
    API_VERSION, ClerkClient, KeyState, UpstreamError, backoff, describe, envelope, retry_after,
};
use tracing::Instrument as _;

use crate::{
    admission::{AdmissionError, Budget, Demand},
    telemetry,
};

/// Request headers passed on to Clerk; every other one (hop-by-hop headers,
/// the caller's `Authorization`, cookies, trace context, `Accept-Encoding`
/// so that answers arrive readable) stays behind.
const REQUEST_HEADERS: [&str; 5] = [
    "content-type",
    "accept",
    "user-agent",
    "x-clerk-sdk",
    "clerk-api-version",
];

/// Answer headers passed back to the caller.
const ANSWER_HEADERS: [&str; 7] = [
    "content-type",
    "retry-after",
    "clerk-trace-id",
    "x-clerk-trace-id",
    "cache-control",
    "location",
    "link",
];

/// A request as the caller sent it, to be forwarded.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Its method.
    pub method: Method,
    /// Its path below the API version, e.g. `users/user_1/metadata`, and
    /// its query (`?…`) if any, exactly as sent.
    pub path_and_query: String,
    /// Its headers (only [`REQUEST_HEADERS`] are sent on).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// A label for metrics and logs: the route template, never an id.
    pub route: String,
}

/// Clerk's answer, to be passed back.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// Clerk's status.
    pub status: StatusCode,
    /// The answer headers worth passing back ([`ANSWER_HEADERS`]).
    pub headers: HeaderMap,
    /// The body, as Clerk sent it.
    pub body: Bytes,
}

impl Forwarded {
    /// Clerk's `Retry-After` (10 s when absent or unreadable).
    pub fn retry_after(&self) -> std::time::Duration {
        retry_after(&self.headers)
    }

    /// The code of Clerk's first error in the body (`unknown` if none).
    pub fn error_code(&self) -> String {
        envelope(&self.headers, &self.body).0
    }
}

impl ClerkClient {
    /// Sends `request` to Clerk under the upstream budget and, if given,
    /// the route's keyed budget (taken first: it is the scarcer). Idempotent
    /// methods are retried on 5xx and on no answer, like the broker's own
    /// reads; others are sent once (a write may have happened). A 429 pauses
    /// the keyed budget when there is one (Clerk blocks that endpoint), the
    /// upstream budget otherwise, and is passed back with its `Retry-After`.
    pub async fn forward(
        &self,
        request: &Forward,
        keyed: Option<&Budget>,
        demand: &Demand,
    ) -> Result<Forwarded, UpstreamError> {
        let span = telemetry::upstream_span(&request.route);
        self.forward_attempts(request, keyed, demand)
            .instrument(span)
            .await
    }

    /// [`Self::forward`], in the request's span.
    async fn forward_attempts(
        &self,
        request: &Forward,
        keyed: Option<&Budget>,
        demand: &Demand,
    ) -> Result<Forwarded, UpstreamError> {
        let idempotent = matches!(
            request.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let max_attempts = if idempotent { self.max_attempts } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            telemetry::record_attempt(attempt);
            let reason = match self.forward_once(request, keyed, demand).await? {
                Ok(answer) if answer.status.is_server_error() && attempt < max_attempts => {
                    format!("Clerk answered HTTP {}", answer.status.as_u16())
                }
                Ok(answer) => return Ok(answer),
                Err(reason) if attempt < max_attempts => reason,
                Err(reason) => return Err(UpstreamError::Unavailable(reason)),
            };
            let backoff = backoff(attempt);
            if Instant::now() + backoff >= demand.deadline {
                return Err(UpstreamError::Unavailable(reason));
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// One attempt: `Ok(Ok(answer))` when Clerk answered, `Ok(Err(reason))`
    /// when it did not (worth a retry), `Err` when no permit was granted.
    async fn forward_once(
        &self,
        request: &Forward,
        keyed: Option<&Budget>,
        demand: &Demand,
    ) -> Result<Result<Forwarded, String>, UpstreamError> {
        if Instant::now() >= demand.deadline {
            return Err(UpstreamError::DeadlineExceeded);
        }
        let refused = |error: AdmissionError| match error {
            AdmissionError::Refused { retry_after } => {
                UpstreamError::BudgetExhausted { retry_after }
            }
            other => UpstreamError::Unavailable(other.to_string()),
        };
        // Both held until the answer is in: the request counts from then on.
        let _keyed = match keyed {
            Some(budget) => Some(budget.acquire(demand, 1).await.map_err(refused)?),
            None => None,
        };
        let _permit = self
            .admission
            .upstream()
            .acquire(demand, 1)
            .await
            .map_err(refused)?;
        let mut url = self.url("");
        let (path, query) = match request.path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (request.path_and_query.as_str(), None),
        };
        url.set_path(&format!("{}{path}", self.base_url.path()));
        url.set_query(query);
        let mut headers = HeaderMap::new();
        for name in REQUEST_HEADERS {
            if let Some(value) = request.headers.get(name) {
                headers.insert(HeaderName::from_static(name), value.clone());
            }
        }
        // The pinned version unless the caller chose one (header or query).
        let versioned_by_query = query.is_some_and(|q| q.contains("__clerk_api_version="));
        if !headers.contains_key("clerk-api-version") && !versioned_by_query {
            headers.insert("clerk-api-version", HeaderValue::from_static(API_VERSION));
        }
        headers.insert(AUTHORIZATION, self.authorization.clone());
        let sent = Instant::now();
        let timeout = self
            .request_timeout
            .min(demand.deadline.saturating_duration_since(sent));
        let no_answer = |error: reqwest::Error| {
            self.events.answered(&request.route, None, sent.elapsed());
            describe(&error)
        };
        let response = match self
            .http
            .request(request.method.clone(), url)
            .headers(headers)
            .body(request.body.clone())
            .timeout(timeout)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Ok(Err(no_answer(error))),
        };
        let status = response.status();
        let mut answer_headers = HeaderMap::new();
        for name in ANSWER_HEADERS {
            for value in response.headers().get_all(name) {
                answer_headers.append(HeaderName::from_static(name), value.clone());
            }
        }
        telemetry::record_answer(status.as_u16(), &answer_headers);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return Ok(Err(no_answer(error))),
        };
        self.events
            .answered(&request.route, Some(status.as_u16()), sent.elapsed());
        if status.is_success() {
            self.key_state.send_if_modified(|state| {
                std::mem::replace(state, KeyState::Accepted) != KeyState::Accepted
            });
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            let until = Instant::now() + retry_after(&answer_headers);
            match keyed {
                Some(budget) => budget.pause_until(until),
                None => self.admission.upstream().pause_until(until),
            }
            tracing::warn!(route = %request.route, "Clerk answered 429 to a forwarded request");
        } else {
            self.observe_rejection(status, &answer_headers, &body);
        }
        if !status.is_success() && telemetry::enabled() {
            telemetry::record_clerk_trace_id(&envelope(&answer_headers, &body).1);
        }
        Ok(Ok(Forwarded {
            status,
            headers: answer_headers,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_context_never_goes_to_clerk() {
        for name in telemetry::TRACE_CONTEXT_HEADERS {
            assert!(!REQUEST_HEADERS.contains(&name), "{name} is forwarded");
        }
        // Answers may carry Clerk's own trace id back to the caller.
        assert!(ANSWER_HEADERS.contains(&"clerk-trace-id"));
    }
}
