//! Permits for callers that still call Clerk themselves: `acquire_permit`
//! waits in the broker's fair queue and, when refused, waits `retry_after`
//! and asks again, until its own deadline.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use crate::{Client, Error, error::retry_info, pb};

/// Shortest pause between two asks, so a refusal with a zero `retry_after`
/// cannot turn into a busy loop.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// What [`Client::acquire_permit`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitRequest {
    /// The budget to draw on; `""` is the upstream Clerk budget.
    pub budget: String,
    /// Upstream requests the caller is about to make (at least 1).
    pub cost: u32,
    /// Interactive work is served before bulk work (bulk keeps a share).
    pub priority: pb::Priority,
    /// How long the caller is willing to wait in all.
    pub wait: Duration,
}

impl Default for PermitRequest {
    fn default() -> Self {
        Self {
            budget: String::new(),
            cost: 1,
            priority: pb::Priority::Interactive,
            wait: Duration::ZERO,
        }
    }
}

impl PermitRequest {
    /// `cost` requests of the upstream budget, now or never (no wait).
    pub fn new(cost: u32) -> Self {
        Self {
            cost,
            ..Self::default()
        }
    }

    /// Draw on the named budget instead of the upstream one.
    pub fn budget(mut self, budget: impl Into<String>) -> Self {
        self.budget = budget.into();
        self
    }

    /// Wait up to `wait` for the permit.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Ask at bulk priority (exports, syncs).
    pub fn bulk(mut self) -> Self {
        self.priority = pb::Priority::Bulk;
        self
    }
}

/// A granted permit: the caller may now make `cost` requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The budget drawn on (`""` resolved to its real name).
    pub budget: String,
    /// How long the grant took in all, retries included.
    pub waited: Duration,
    /// The budget's limit: `limit` requests in any interval of `window`.
    pub limit: u32,
    /// The budget's window.
    pub window: Duration,
}

impl Client {
    /// One `AcquirePermit` call as the broker defines it: a refusal is
    /// `granted = false` with `retry_after`, not an error.
    pub async fn try_acquire_permit(
        &self,
        request: pb::AcquirePermitRequest,
    ) -> Result<pb::AcquirePermitResponse, Error> {
        let mut call = tonic::Request::new(request);
        let max_wait = call.get_ref().max_wait.map_or(Duration::ZERO, duration);
        // The broker may hold the call for max_wait: the deadline must allow it.
        call.set_timeout(max_wait + self.deadline());
        Ok(self.quota.clone().acquire_permit(call).await?.into_inner())
    }

    /// A permit for `request.cost` requests, waiting up to `request.wait`.
    ///
    /// The wait happens in the broker's fair queue (`max_wait`), which keeps
    /// the caller's place; if the broker refuses anyway (its estimate exceeds
    /// the time left, or the caller's queue is full), this waits the
    /// refusal's `retry_after` and asks again while time remains. Ends with
    /// [`Error::PermitRefused`] when the wait is over.
    pub async fn acquire_permit(&self, request: PermitRequest) -> Result<Grant, Error> {
        let started = Instant::now();
        let deadline = started + request.wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let ask = pb::AcquirePermitRequest {
                budget: request.budget.clone(),
                cost: request.cost,
                max_wait: (!remaining.is_zero()).then(|| proto_duration(remaining)),
                priority: request.priority.into(),
            };
            let (budget, retry_after) = match self.try_acquire_permit(ask).await {
                Ok(answer) if answer.granted => {
                    return Ok(Grant {
                        budget: answer.budget,
                        waited: started.elapsed(),
                        limit: answer.limit,
                        window: answer.window.map_or(Duration::ZERO, duration),
                    });
                }
                Ok(answer) => (
                    answer.budget,
                    answer.retry_after.map_or(Duration::ZERO, duration),
                ),
                Err(error) if error.code() == Some(Code::ResourceExhausted) => {
                    let retry_after = error.status().and_then(retry_info);
                    (request.budget.clone(), retry_after.unwrap_or(MIN_PAUSE))
                }
                Err(error) => return Err(error),
            };
            let pause = retry_after.max(MIN_PAUSE);
            if Instant::now() + pause > deadline {
                return Err(Error::PermitRefused {
                    budget,
                    retry_after,
                });
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// A protobuf duration as a `Duration`; negative ones as zero.
pub(crate) fn duration(value: prost_types::Duration) -> Duration {
    Duration::try_from(value).unwrap_or_default()
}

/// A `Duration` as a protobuf duration (saturating, never fails in practice).
pub(crate) fn proto_duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(value).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}
