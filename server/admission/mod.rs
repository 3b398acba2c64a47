//! Admission control: every upstream request, from any path, asks here first.
//!
//! A [`Budget`] is one rate limit ("N per W") shared by everyone who draws on
//! it: the broker's own Clerk requests and the permits granted to callers
//! through `QuotaService`. This module knows nothing of gRPC or HTTP; time is
//! tokio's clock, so tests prove rates exactly with `tokio::time::pause()`.

mod rate;
mod window;

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::{Duration, Instant};

pub use rate::parse_duration;
pub use rate::{MAX_LIMIT, Rate, RateParseError};
use window::SlidingWindow;

/// The name of the budget that guards the broker's own Clerk requests.
pub const UPSTREAM_BUDGET: &str = "clerk";

/// How urgent a request is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// Someone is waiting on the answer.
    #[default]
    Interactive,
    /// Exports, syncs and other background work.
    Bulk,
}

/// Why a permit was not granted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    /// No budget has this name.
    #[error("no budget is named {0:?}")]
    UnknownBudget(String),
    /// The cost can never be granted: it is larger than the whole budget.
    #[error("cost {cost} exceeds the budget's limit of {limit} requests per window")]
    CostTooLarge {
        /// The cost asked for.
        cost: u32,
        /// The budget's limit.
        limit: u32,
    },
    /// The budget has no room within the time the caller is willing to wait.
    #[error("the budget has no room for {retry_after:?}")]
    Refused {
        /// When a retry of the same request can succeed.
        retry_after: Duration,
    },
}

/// A granted permit: the caller may now make its upstream requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// How long the request waited for room.
    pub waited: Duration,
}

/// One shared rate limit.
#[derive(Debug)]
pub struct Budget {
    /// The name callers use for it.
    name: String,
    /// The limit as configured (without the safety margin).
    rate: Rate,
    /// The grant log; locked only for a few arithmetic operations.
    window: Mutex<SlidingWindow>,
}

impl Budget {
    /// A budget enforcing `rate`, counting each window `margin` longer to
    /// absorb timing jitter between here and the upstream.
    pub fn new(name: impl Into<String>, rate: Rate, margin: Duration) -> Self {
        Self {
            name: name.into(),
            rate,
            window: Mutex::new(SlidingWindow::new(rate, margin)),
        }
    }

    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The budget's configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Waits until `cost` requests fit in the budget, or refuses at once if
    /// that would take longer than `max_wait`. Dropping the future before it
    /// completes gives its reserved room back.
    pub async fn acquire(&self, cost: u32, max_wait: Duration) -> Result<Grant, AdmissionError> {
        let cost = cost.max(1);
        let limit = self.rate.limit;
        if cost > limit {
            return Err(AdmissionError::CostTooLarge { cost, limit });
        }
        let start = Instant::now();
        let deadline = start + max_wait;
        loop {
            let now = Instant::now();
            let (at, epoch) = {
                let mut window = self.lock();
                let at = window.earliest(now, cost);
                if at > deadline {
                    return Err(AdmissionError::Refused {
                        retry_after: at - now,
                    });
                }
                window.record(now, at, cost);
                (at, window.epoch())
            };
            let reservation = Reservation {
                budget: self,
                at,
                cost,
                epoch,
            };
            tokio::time::sleep_until(at).await;
            std::mem::forget(reservation);
            if self.lock().epoch() == epoch {
                return Ok(Grant {
                    waited: Instant::now() - start,
                });
            }
            // The budget was paused while we slept: our slot is gone, queue again.
        }
    }

    /// Stops every grant until `until` (the upstream answered 429 with
    /// `Retry-After`), then resumes at an even pace, without a burst.
    pub fn pause_until(&self, until: Instant) {
        self.lock().pause_until(until);
    }

    fn lock(&self) -> MutexGuard<'_, SlidingWindow> {
        // The window's invariants hold between statements, so a panic elsewhere
        // while holding the lock leaves it usable.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Room reserved in a budget by a caller that is still waiting for it.
/// Dropped before its instant (the caller gave up), it gives the room back.
struct Reservation<'a> {
    budget: &'a Budget,
    at: Instant,
    cost: u32,
    epoch: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if Instant::now() < self.at {
            self.budget.lock().release(self.at, self.cost, self.epoch);
        }
    }
}

/// All budgets of the broker.
#[derive(Debug)]
pub struct Admission {
    /// The budget of the broker's own Clerk requests.
    upstream: Budget,
}

impl Admission {
    /// Admission with the upstream Clerk budget only.
    pub fn new(upstream: Rate, margin: Duration) -> Self {
        Self {
            upstream: Budget::new(UPSTREAM_BUDGET, upstream, margin),
        }
    }

    /// The budget every Clerk request of the broker draws on.
    pub fn upstream(&self) -> &Budget {
        &self.upstream
    }

    /// Looks a budget up by name; "" is the upstream budget.
    pub fn budget(&self, name: &str) -> Result<&Budget, AdmissionError> {
        if name.is_empty() || name == UPSTREAM_BUDGET {
            Ok(&self.upstream)
        } else {
            Err(AdmissionError::UnknownBudget(name.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn budget(limit: u32, window_ms: u64) -> Arc<Budget> {
        let rate = Rate {
            limit,
            window: Duration::from_millis(window_ms),
        };
        Arc::new(Budget::new("test", rate, Duration::ZERO))
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_within_the_rate() {
        let budget = budget(5, 1000);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..15 {
            let budget = budget.clone();
            tasks.push(tokio::spawn(async move {
                budget.acquire(1, Duration::from_secs(10)).await.unwrap();
                Instant::now() - start
            }));
            tokio::task::yield_now().await;
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        assert_eq!(times[4], Duration::ZERO);
        assert_eq!(times[5], Duration::from_secs(1));
        assert_eq!(times[14], Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_with_an_honest_retry_after() {
        let budget = budget(2, 1000);
        budget.acquire(2, Duration::ZERO).await.unwrap();
        let before = Instant::now();
        let refused = budget.acquire(1, Duration::from_millis(500)).await;
        assert_eq!(
            refused,
            Err(AdmissionError::Refused {
                retry_after: Duration::from_secs(1)
            })
        );
        assert_eq!(Instant::now(), before, "refusal does not wait");
        assert_eq!(
            budget.acquire(3, Duration::ZERO).await,
            Err(AdmissionError::CostTooLarge { cost: 3, limit: 2 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_costs_nothing() {
        let budget = budget(1, 1000);
        budget.acquire(1, Duration::ZERO).await.unwrap();
        let waiting = budget.acquire(1, Duration::from_secs(5));
        let gave_up = tokio::time::timeout(Duration::from_millis(100), waiting).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(900)).await;
        // The abandoned slot at t=1s is free again: granted without waiting.
        assert_eq!(
            budget.acquire(1, Duration::ZERO).await,
            Ok(Grant {
                waited: Duration::ZERO
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_stops_sleeping_waiters_too() {
        let budget = budget(10, 1000);
        let start = Instant::now();
        budget.acquire(10, Duration::ZERO).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget.acquire(1, Duration::from_secs(10)).await.unwrap();
                Instant::now() - start
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        budget.pause_until(start + Duration::from_secs(3));
        let waited = waiter.await.unwrap();
        assert!(waited > Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn unknown_budgets_are_named_in_the_error() {
        let admission = Admission::new(Rate::CLERK_DEVELOPMENT, Duration::ZERO);
        assert_eq!(admission.budget("").unwrap().name(), UPSTREAM_BUDGET);
        assert_eq!(
            admission.budget("exports").unwrap_err().to_string(),
            "no budget is named \"exports\""
        );
    }
}
