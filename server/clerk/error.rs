//! `UpstreamError`: every way a Clerk request can end without a usable answer.

use std::time::Duration;

/// Why a Clerk request produced no result. Messages are safe to show callers:
/// they carry no secret and no upstream body, only Clerk's error code.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// Clerk has no such resource (404).
    #[error("Clerk has no such {0}")]
    NotFound(&'static str),
    /// Clerk rejected the broker's own secret key (401 with a code saying
    /// the key is invalid): the broker is misconfigured and no caller can
    /// fix it.
    #[error(
        "Clerk rejected the broker's secret key (HTTP {status}): the broker is misconfigured; \
         an operator must install a valid key"
    )]
    KeyRejected {
        /// 401.
        status: u16,
    },
    /// Clerk refused this request but not the key (403, or a 401 with
    /// another code): e.g. a feature disabled on the Clerk instance.
    #[error(
        "Clerk refused this request (HTTP {status}, {code}): the instance does not allow it (a \
         feature may be disabled in the Clerk dashboard); ask an operator"
    )]
    Refused {
        /// 401 or 403.
        status: u16,
        /// Clerk's error code, e.g. `authorization_invalid`.
        code: String,
    },
    /// The upstream budget has no room before the caller's deadline.
    #[error("the upstream Clerk budget has no room before the call's deadline; retry later")]
    BudgetExhausted {
        /// When the budget will have room.
        retry_after: Duration,
    },
    /// Clerk answered 429 and stays blocked past the caller's deadline.
    #[error("Clerk is rate limiting this key (another client may be spending it); retry later")]
    RateLimited {
        /// Clerk's `Retry-After`, from now.
        retry_after: Duration,
    },
    /// Clerk rejected the request's parameters (400/422); this means the
    /// broker's own validation missed something.
    #[error("Clerk rejected the request parameters ({code})")]
    Rejected {
        /// Clerk's error code, e.g. `form_param_value_invalid`.
        code: String,
    },
    /// Clerk failed or could not be reached, even after retries.
    #[error("Clerk is unavailable: {0}")]
    Unavailable(String),
    /// The call's deadline passed before Clerk answered.
    #[error("the call's deadline passed before Clerk answered")]
    DeadlineExceeded,
}

impl UpstreamError {
    /// Whether a retry of the same request may succeed without any change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unavailable(_)
                | UpstreamError::RateLimited { .. }
                | UpstreamError::BudgetExhausted { .. }
                | UpstreamError::DeadlineExceeded
        )
    }
}
