//! Answers the front writes itself, in Clerk's words: the error envelope
//! Clerk's SDKs parse (`{"errors":[{message, long_message, code, meta}],
//! "clerk_trace_id"}`), and the one mapping from an [`UpstreamError`] to an
//! HTTP status and envelope.

use std::time::Duration;

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use serde_json::json;

use crate::clerk::UpstreamError;

/// A JSON answer with `status` and `body`.
pub(super) fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Clerk's error envelope with one error. The trace id is the broker's
/// own (prefixed `broker_`), so an operator can tell who answered.
pub(super) fn error(status: StatusCode, code: &str, message: &str, long_message: &str) -> Response {
    let body = json!({
        "errors": [{
            "message": message,
            "long_message": long_message,
            "code": code,
            "meta": {},
        }],
        "clerk_trace_id": format!("broker_{:016x}", fastrand::u64(..)),
    });
    json(status, body.to_string())
}

/// A request the front refuses before any work, in Clerk's words.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: &'static str,
    pub(super) long_message: String,
}

impl Refusal {
    /// The refusal as Clerk's error envelope.
    pub(super) fn into_response(self) -> Response {
        error(self.status, self.code, self.message, &self.long_message)
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up, at least 1).
pub(super) fn too_many_requests(retry_after: Duration, long_message: &str) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "Too many requests",
        long_message,
    );
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The one mapping from a request that got no answer from Clerk (or could
/// not be sent) to the front's answer.
pub(super) fn upstream(failure: &UpstreamError) -> Response {
    match failure {
        UpstreamError::BudgetExhausted { retry_after } => too_many_requests(
            *retry_after,
            "The broker's Clerk budget has no room for this request before its deadline; \
             retry after the Retry-After delay",
        ),
        UpstreamError::RateLimited { retry_after } => too_many_requests(
            *retry_after,
            "Clerk is rate limiting the broker's key; retry after the Retry-After delay",
        ),
        UpstreamError::NotFound(what) => error(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            &format!("Clerk has no such {what}"),
        ),
        UpstreamError::KeyRejected { .. } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_misconfigured",
            "Broker misconfigured",
            "Clerk rejects the broker's secret key; an operator must install a valid key",
        ),
        UpstreamError::Refused { status, code } => error(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN),
            code,
            "Unauthorized request",
            "Clerk refused this request: the instance does not allow it",
        ),
        UpstreamError::Rejected { code } => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Invalid request",
            "Clerk rejected the request's parameters",
        ),
        UpstreamError::Unavailable(reason) => error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "Clerk is unavailable",
            &format!("{reason}; retry with backoff"),
        ),
        UpstreamError::DeadlineExceeded => error(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            "Deadline exceeded",
            "The request's deadline passed before Clerk answered",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_errors_map_to_documented_statuses() {
        let table = [
            (
                UpstreamError::BudgetExhausted {
                    retry_after: Duration::from_millis(1200),
                },
                429,
                Some("2"),
            ),
            (
                UpstreamError::RateLimited {
                    retry_after: Duration::from_secs(7),
                },
                429,
                Some("7"),
            ),
            (UpstreamError::NotFound("user"), 404, None),
            (UpstreamError::KeyRejected { status: 401 }, 503, None),
            (
                UpstreamError::Refused {
                    status: 403,
                    code: "authorization_invalid".into(),
                },
                403,
                None,
            ),
            (
                UpstreamError::Rejected {
                    code: "form_param_value_invalid".into(),
                },
                422,
                None,
            ),
            (UpstreamError::Unavailable("x".into()), 502, None),
            (UpstreamError::DeadlineExceeded, 504, None),
        ];
        for (error, status, retry_after) in table {
            let response = upstream(&error);
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            assert_eq!(
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap()),
                retry_after,
                "{error:?}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(body["errors"][0]["code"].is_string(), "{body}");
            assert!(body["clerk_trace_id"].is_string(), "{body}");
        }
    }
}
