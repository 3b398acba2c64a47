//! `Error`: everything a client call can end with, and the retry hint a
//! `RESOURCE_EXHAUSTED` status carries in `google.rpc.RetryInfo`.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL cannot be used (e.g. no scheme, bad host).
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller token cannot be sent in a header. The token itself is
    /// never part of the message.
    #[error(
        "the caller token cannot be sent as a header value: it must be non-empty visible ASCII"
    )]
    InvalidToken,
    /// No connection could be made.
    #[error("cannot connect to the broker at {url}: {source}")]
    Connect {
        /// Where the client tried to connect.
        url: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call ended with a gRPC status (see the README's status table).
    /// Boxed: a `Status` is large and errors should stay cheap to move.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Box<Status>),
    /// `acquire_permit` could not get a permit within its wait.
    #[error("permit refused on budget {budget:?}: retry after {retry_after:?}")]
    PermitRefused {
        /// The budget asked for (as resolved by the broker when known).
        budget: String,
        /// The broker's estimate of when a permit could be granted.
        retry_after: Duration,
    },
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::Status(Box::new(status))
    }
}

impl Error {
    /// The gRPC status code, if the call got as far as a status.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// The gRPC status, if the call got as far as one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }

    /// How long to wait before retrying: the `google.rpc.RetryInfo` of a
    /// `RESOURCE_EXHAUSTED` status, or a refused permit's `retry_after`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status(status) => retry_info(status),
            Self::PermitRefused { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The `google.rpc.RetryInfo` delay carried by `status`, if any.
pub(crate) fn retry_info(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// The canonical name of a code, as in the gRPC docs (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn retry_after_comes_from_retry_info_or_a_refusal() {
        let delay = Duration::from_millis(1500);
        let exhausted = Error::from(Status::with_error_details(
            Code::ResourceExhausted,
            "budget",
            ErrorDetails::with_retry_info(Some(delay)),
        ));
        assert_eq!(exhausted.retry_after(), Some(delay));
        assert_eq!(exhausted.code(), Some(Code::ResourceExhausted));
        assert_eq!(exhausted.to_string(), "RESOURCE_EXHAUSTED: budget");
        let plain = Error::from(Status::unavailable("down"));
        assert_eq!(plain.retry_after(), None);
        let refused = Error::PermitRefused {
            budget: "clerk".into(),
            retry_after: delay,
        };
        assert_eq!(refused.retry_after(), Some(delay));
        assert_eq!(refused.code(), None);
    }
}
