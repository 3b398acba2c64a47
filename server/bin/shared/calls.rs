//! Helpers of the on-demand load binaries (`soak`, `chaos`) for the gRPC
//! calls they make; included by each with `#[path]`.

use std::time::Duration;

use tonic::Code;

/// `message` as a request with a deadline of `timeout`.
pub(crate) fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The status code a call ended with (OK for an answer).
pub(crate) fn code_of<T>(result: Result<T, tonic::Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}
