//! The gRPC edge: validate requests, call the domain, convert the answers.
//!
//! Handlers hold no logic of their own beyond that; conversions live in
//! `convert`, the error mapping in `status`.

mod admin;
mod auth;
pub mod codec;
mod convert;
mod encoded;
mod export;
mod quota;
mod standing;
mod status;
mod time_bounds;
mod users;
mod violations;

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, metadata::MetadataMap};

use crate::admission::{Demand, Priority, UPSTREAM_BUDGET};

/// The servers' stubs: `pb`'s, except that the messages holding a `User`
/// carry it encoded ([`EncodedUser`]); made by `build.rs`.
pub mod wire {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/wire/clerk_broker.v1.rs"));
}

pub use admin::AdminApi;
pub use auth::Authenticate;
pub(crate) use convert::Visibility;
pub use encoded::EncodedUser;
pub use encoded::EncodedUsers;
pub use quota::QuotaApi;
pub use users::{DEFAULT_ENCODED_BYTES, DEFAULT_MAX_STREAM_LIFETIME, UserApi};

/// A Clerk user as the `User` message every `UserService` answer carries,
/// with `private_metadata` or without it (for callers lacking the scope).
/// Public for the fuzz targets in `fuzz/` (Clerk's JSON is untrusted input).
pub fn user_message(user: &crate::clerk::ClerkUser, private_metadata: bool) -> crate::pb::User {
    let visibility = if private_metadata {
        convert::Visibility::Full
    } else {
        convert::Visibility::WithoutPrivateMetadata
    };
    convert::user(user, visibility)
}

/// The deadline of a call that set none (unary calls).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Longest time kept back from a call's deadline to deliver its answer.
const REPLY_MARGIN: Duration = Duration::from_millis(50);

/// The deadline for the broker's own work on a call: the call's
/// `grpc-timeout`, less a little time (a tenth, at most 50 ms) to deliver the
/// answer before the caller gives up.
pub(crate) fn call_deadline(metadata: &MetadataMap) -> Option<Instant> {
    // Named once: a name given as text is parsed on each lookup.
    static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let value = metadata.as_ref().get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let timeout = parse_grpc_timeout(value)?;
    Some(Instant::now() + timeout - (timeout / 10).min(REPLY_MARGIN))
}

/// The deadline of a unary call: its own, or the default.
pub(crate) fn unary_deadline<T>(request: &Request<T>) -> Instant {
    call_deadline(request.metadata()).unwrap_or_else(|| Instant::now() + DEFAULT_DEADLINE)
}

/// Upstream demand of the caller of `request`, checked against the budgets
/// it may use: the broker's lookups draw on the upstream budget.
pub(crate) fn upstream_demand<T>(
    request: &Request<T>,
    priority: Priority,
    deadline: Instant,
) -> Result<Demand, tonic::Status> {
    let caller = auth::caller(request);
    auth::require_budget(&caller, UPSTREAM_BUDGET)?;
    Ok(Demand {
        caller: caller.name.clone(),
        weight: caller.weight,
        priority,
        deadline,
    })
}

/// Parses the `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        for bad in ["", "m", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
