//! Admission control: every upstream request, from any path, asks here first.
//!
//! A [`Budget`] is one rate limit ("N per W") shared by everyone who draws on
//! it: the broker's own Clerk requests and the permits granted to callers
//! through `QuotaService`. This module knows nothing of gRPC or HTTP; time is
//! tokio's clock, so tests prove rates exactly with `tokio::time::pause()`.

mod rate;
mod window;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

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

/// The name of a caller, as configured; shared cheaply.
pub type CallerName = Arc<str>;

/// The caller of demo mode and of deployments without a callers file.
pub const ANONYMOUS: &str = "anonymous";

/// Who wants upstream budget, how urgently, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    /// The caller on whose behalf the requests are made.
    pub caller: CallerName,
    /// How urgent the work is.
    pub priority: Priority,
    /// When the caller stops waiting.
    pub deadline: Instant,
}

impl Demand {
    /// Interactive work of `caller` until `deadline`.
    pub fn interactive(caller: CallerName, deadline: Instant) -> Self {
        Self {
            caller,
            priority: Priority::Interactive,
            deadline,
        }
    }
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

/// One shared rate limit.
#[derive(Debug)]
pub struct Budget {
    /// The name callers use for it.
    name: String,
    /// The limit as configured (without the safety margin).
    rate: Rate,
    /// The request log and the queue of waiters; locked only briefly.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window: SlidingWindow,
    /// Waiting requests, first come first served.
    queue: VecDeque<Waiter>,
    /// Sum of the costs in `queue`.
    queued_cost: u64,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    cost: u32,
    /// Woken when this waiter may have reached the head with room.
    wake: Arc<Notify>,
}

impl State {
    /// Wakes the waiter at the head of the queue, if any.
    fn wake_head(&self) {
        if let Some(head) = self.queue.front() {
            head.wake.notify_one();
        }
    }

    fn leave(&mut self, ticket: u64) {
        if let Some(index) = self.queue.iter().position(|w| w.ticket == ticket) {
            if let Some(waiter) = self.queue.remove(index) {
                self.queued_cost -= u64::from(waiter.cost);
            }
            if index == 0 {
                self.wake_head();
            }
        }
    }
}

/// Admission to spend `cost` upstream requests. The units count as in flight
/// until the permit is dropped, and then from that instant on: hold it until
/// the upstream answered.
#[derive(Debug)]
pub struct Permit<'a> {
    budget: &'a Budget,
    cost: u32,
    /// How long the request waited for room.
    pub waited: Duration,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.window.finish(Instant::now(), self.cost);
        state.wake_head();
    }
}

impl Budget {
    /// A budget enforcing `rate`, counting each window `margin` longer to
    /// absorb timing jitter between here and the upstream.
    pub fn new(name: impl Into<String>, rate: Rate, margin: Duration) -> Self {
        Self {
            name: name.into(),
            rate,
            state: Mutex::new(State {
                window: SlidingWindow::new(rate, margin),
                queue: VecDeque::new(),
                queued_cost: 0,
                next_ticket: 0,
            }),
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

    /// Waits, first come first served, until `cost` requests fit in the
    /// budget; refuses at once if that will likely take longer than the
    /// demand's deadline allows, and when the deadline comes. Dropping the
    /// future before it completes leaves the queue and costs nothing.
    pub async fn acquire(&self, demand: &Demand, cost: u32) -> Result<Permit<'_>, AdmissionError> {
        let cost = cost.max(1);
        let limit = self.rate.limit;
        if cost > limit {
            return Err(AdmissionError::CostTooLarge { cost, limit });
        }
        let start = Instant::now();
        let deadline = demand.deadline.max(start);
        let max_wait = deadline - start;
        let (ticket, wake) = {
            let mut state = self.lock();
            if state.queue.is_empty() && state.window.available_at(start, cost) == Some(start) {
                state.window.start(cost);
                return Ok(self.permit(cost, start));
            }
            let ahead = state.queued_cost;
            let retry_after = state.window.estimate_wait(start, ahead, cost);
            if retry_after > max_wait {
                return Err(AdmissionError::Refused { retry_after });
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let wake = Arc::new(Notify::new());
            state.queue.push_back(Waiter {
                ticket,
                cost,
                wake: wake.clone(),
            });
            state.queued_cost += u64::from(cost);
            (ticket, wake)
        };
        let mut place = Place {
            budget: self,
            ticket,
            queued: true,
        };
        loop {
            let now = Instant::now();
            let sleep_until = {
                let mut state = self.lock();
                if state
                    .queue
                    .front()
                    .is_some_and(|head| head.ticket == ticket)
                {
                    match state.window.available_at(now, cost) {
                        Some(at) if at <= now => {
                            state.queue.pop_front();
                            state.queued_cost -= u64::from(cost);
                            place.queued = false;
                            state.window.start(cost);
                            state.wake_head();
                            return Ok(self.permit(cost, start));
                        }
                        other => other,
                    }
                } else {
                    None
                }
            };
            // Wait for a wake-up (a finished request, a departure ahead), for
            // our instant, or for the end of our patience.
            let until = sleep_until.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep_until(until) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let retry_after = self.lock().window.estimate_wait(now, 0, cost);
                        return Err(AdmissionError::Refused {
                            retry_after: retry_after.max(Duration::from_millis(1)),
                        });
                    }
                }
            }
        }
    }

    /// Stops every admission until `until` (the upstream answered 429 with
    /// `Retry-After`), then resumes at an even pace, without a burst.
    pub fn pause_until(&self, until: Instant) {
        self.lock().window.pause_until(until);
    }

    fn permit(&self, cost: u32, start: Instant) -> Permit<'_> {
        Permit {
            budget: self,
            cost,
            waited: Instant::now() - start,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state's invariants hold between statements, so a panic elsewhere
        // while holding the lock leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A waiter's place in the queue; leaving it (the caller gave up) lets the
/// next one move up.
struct Place<'a> {
    budget: &'a Budget,
    ticket: u64,
    queued: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.budget.lock().leave(self.ticket);
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

    fn demand(max_wait: Duration) -> Demand {
        Demand::interactive(ANONYMOUS.into(), Instant::now() + max_wait)
    }

    /// Takes a permit and finishes its request at once.
    async fn spend(
        budget: &Budget,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Duration, AdmissionError> {
        budget
            .acquire(&demand(max_wait), cost)
            .await
            .map(|permit| permit.waited)
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_within_the_rate() {
        let budget = budget(5, 1000);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..15 {
            let budget = budget.clone();
            tasks.push(tokio::spawn(async move {
                spend(&budget, 1, Duration::from_secs(10)).await.unwrap();
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
        assert!(
            times.windows(2).all(|pair| pair[0] <= pair[1]),
            "first come, first served"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_its_slot_until_it_finishes() {
        let budget = budget(1, 1000);
        let permit = budget.acquire(&demand(Duration::ZERO), 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            budget.acquire(&demand(Duration::ZERO), 1).await.is_err(),
            "still in flight"
        );
        drop(permit);
        let refused = budget
            .acquire(&demand(Duration::from_millis(500)), 1)
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            AdmissionError::Refused {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_with_an_honest_retry_after() {
        let budget = budget(2, 1000);
        spend(&budget, 2, Duration::ZERO).await.unwrap();
        let before = Instant::now();
        let refused = spend(&budget, 1, Duration::from_millis(500)).await;
        assert_eq!(
            refused,
            Err(AdmissionError::Refused {
                retry_after: Duration::from_secs(1)
            })
        );
        assert_eq!(Instant::now(), before, "refusal does not wait");
        assert_eq!(
            spend(&budget, 3, Duration::ZERO).await,
            Err(AdmissionError::CostTooLarge { cost: 3, limit: 2 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_costs_nothing() {
        let budget = budget(1, 1000);
        spend(&budget, 1, Duration::ZERO).await.unwrap();
        let waiting = spend(&budget, 1, Duration::from_secs(5));
        let gave_up = tokio::time::timeout(Duration::from_millis(100), waiting).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(900)).await;
        // The one who left took nothing: the slot at t=1s is ours, at once.
        assert_eq!(spend(&budget, 1, Duration::ZERO).await, Ok(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_stops_waiters_too() {
        let budget = budget(10, 1000);
        let start = Instant::now();
        spend(&budget, 10, Duration::ZERO).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                spend(&budget, 1, Duration::from_secs(10)).await.unwrap();
                Instant::now() - start
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        budget.pause_until(start + Duration::from_secs(3));
        let waited = waiter.await.unwrap();
        assert!(waited > Duration::from_secs(3), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_whose_time_runs_out_is_refused_at_its_deadline() {
        let budget = budget(1, 1000);
        let held = budget.acquire(&demand(Duration::ZERO), 1).await.unwrap();
        let start = Instant::now();
        // Room depends on the request in flight: the estimate is one window.
        let refused = spend(&budget, 1, Duration::from_secs(2)).await;
        assert!(matches!(refused, Err(AdmissionError::Refused { .. })));
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        drop(held);
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
