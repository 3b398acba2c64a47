//! The one mapping from domain errors to gRPC statuses.
//!
//! | domain outcome                         | gRPC code           | details    |
//! |----------------------------------------|---------------------|------------|
//! | bad input (any field)                  | INVALID_ARGUMENT    | BadRequest |
//! | Clerk 404                              | NOT_FOUND           |            |
//! | Clerk 401 (the broker's own key)       | FAILED_PRECONDITION |            |
//! | Clerk 403 (or another 401): not allowed| PERMISSION_DENIED   |            |
//! | budget has no room before the deadline | RESOURCE_EXHAUSTED  | RetryInfo  |
//! | Clerk 429 lasting past the deadline    | RESOURCE_EXHAUSTED  | RetryInfo  |
//! | Clerk 400/422 despite validation       | INVALID_ARGUMENT    |            |
//! | Clerk 5xx, timeouts, broken connections| UNAVAILABLE         |            |
//! | the call's deadline passed             | DEADLINE_EXCEEDED   |            |
//! | unknown budget                         | NOT_FOUND           |            |
//! | permit cost above the budget's limit   | INVALID_ARGUMENT    | BadRequest |
//! | the broker is draining                 | UNAVAILABLE         |            |
//! | an export outlives the call's deadline | DEADLINE_EXCEEDED   |            |
//! | an export outlives its max lifetime    | UNAVAILABLE         |            |

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use super::convert::Violations;
use crate::{admission::AdmissionError, clerk::UpstreamError};

/// INVALID_ARGUMENT listing the violations, as text and as `BadRequest`
/// (the first ones; the text says how many more there were).
pub(crate) fn invalid_argument(violations: Violations) -> Status {
    let (kept, more) = violations.into_parts();
    let mut message = kept
        .iter()
        .map(|(field, problem)| format!("{field} {problem}"))
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        message += &format!("; …and {more} more problems: fix these and call again");
    }
    let details = ErrorDetails::with_bad_request(
        kept.into_iter()
            .map(|(field, problem)| FieldViolation::new(field, problem))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// Ok if nothing was wrong, else INVALID_ARGUMENT.
pub(crate) fn check(violations: Violations) -> Result<(), Status> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(invalid_argument(violations))
    }
}

/// The status of a failed upstream request.
pub(crate) fn upstream(error: &UpstreamError) -> Status {
    let message = error.to_string();
    match error {
        UpstreamError::NotFound(_) => Status::not_found(message),
        UpstreamError::KeyRejected { .. } => Status::failed_precondition(message),
        UpstreamError::Refused { .. } => Status::permission_denied(message),
        UpstreamError::BudgetExhausted { retry_after }
        | UpstreamError::RateLimited { retry_after } => exhausted(message, *retry_after),
        UpstreamError::Rejected { .. } => Status::invalid_argument(message),
        UpstreamError::Unavailable(_) => Status::unavailable(message),
        UpstreamError::DeadlineExceeded => Status::deadline_exceeded(message),
    }
}

/// The status of a permit that cannot be granted at all.
pub(crate) fn admission(error: &AdmissionError) -> Status {
    let message = error.to_string();
    match error {
        AdmissionError::UnknownBudget(_) => Status::not_found(message),
        AdmissionError::CostTooLarge { .. } => invalid_argument(
            [(
                "cost".to_owned(),
                format!("{message}: ask for less, or split the work"),
            )]
            .into_iter()
            .collect(),
        ),
        AdmissionError::Refused { retry_after } => exhausted(message, *retry_after),
    }
}

/// RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`.
fn exhausted(message: String, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// UNAVAILABLE for exports cut short by a drain.
pub(crate) fn draining() -> Status {
    Status::unavailable(
        "the broker is shutting down: call ListUsers again with the last resume_token",
    )
}

/// UNAVAILABLE for exports that reached the maximum stream lifetime; clients
/// resume as after a drain.
pub(crate) fn stream_lifetime() -> Status {
    Status::unavailable(
        "the export reached the broker's maximum stream lifetime (--max-stream-lifetime): call \
         ListUsers again with the last resume_token",
    )
}

/// The status ending an export whose call deadline passed; it carries the
/// last resume token like [`draining`].
pub(crate) fn export_deadline() -> Status {
    Status::deadline_exceeded(
        "the call's deadline passed during the export: call ListUsers again with the last \
         resume_token",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_outcomes_map_to_documented_codes() {
        let second = Duration::from_secs(1);
        let table = [
            (UpstreamError::NotFound("user"), Code::NotFound),
            (
                UpstreamError::KeyRejected { status: 401 },
                Code::FailedPrecondition,
            ),
            (
                UpstreamError::Refused {
                    status: 403,
                    code: "authorization_invalid".into(),
                },
                Code::PermissionDenied,
            ),
            (
                UpstreamError::BudgetExhausted {
                    retry_after: second,
                },
                Code::ResourceExhausted,
            ),
            (
                UpstreamError::RateLimited {
                    retry_after: second,
                },
                Code::ResourceExhausted,
            ),
            (
                UpstreamError::Rejected { code: "x".into() },
                Code::InvalidArgument,
            ),
            (UpstreamError::Unavailable("down".into()), Code::Unavailable),
            (UpstreamError::DeadlineExceeded, Code::DeadlineExceeded),
        ];
        for (error, code) in table {
            let status = upstream(&error);
            assert_eq!(status.code(), code, "{error:?}");
            let retry = status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay);
            assert_eq!(
                retry.is_some(),
                code == Code::ResourceExhausted,
                "{error:?}"
            );
        }
    }

    #[test]
    fn admission_outcomes_map_to_documented_codes() {
        let table = [
            (AdmissionError::UnknownBudget("x".into()), Code::NotFound),
            (
                AdmissionError::CostTooLarge { cost: 5, limit: 2 },
                Code::InvalidArgument,
            ),
            (
                AdmissionError::Refused {
                    retry_after: Duration::from_secs(2),
                },
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in table {
            assert_eq!(admission(&error).code(), code, "{error:?}");
        }
    }

    #[test]
    fn invalid_argument_lists_every_field() {
        let status = invalid_argument(
            [
                ("user_ids".into(), "has 600 values".into()),
                ("page_size".into(), "must be 1 to 500".into()),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            status.message(),
            "user_ids has 600 values; page_size must be 1 to 500"
        );
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[1].field, "page_size");
    }

    #[test]
    fn invalid_argument_stays_small_whatever_the_number_of_problems() {
        let violations = (0..500_000)
            .map(|i| (format!("filter.user_ids[{i}]"), "x".repeat(1_000)))
            .collect();
        let status = invalid_argument(violations);
        assert!(
            status
                .message()
                .ends_with("more problems: fix these and call again"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("filter.user_ids[0] xxx"));
        let kept = status.get_details_bad_request().unwrap().field_violations;
        assert!(!kept.is_empty() && kept.len() <= super::super::violations::MAX_REPORTED);
        let more = 500_000 - kept.len();
        assert!(status.message().contains(&format!("…and {more} more")));
        // Both copies together (the details repeat the message) stay small.
        let size = status.message().len() + status.details().len();
        assert!(size < 4 * 1024, "{size} bytes");
    }
}
