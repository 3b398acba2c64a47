//! `Budget`: one shared rate limit, its fair queue of waiters, and permits.
//!
//! The fast path (nobody waiting, room now) takes the lock once and returns.
//! Otherwise the request joins the fair queue and waits until the queue names
//! it next *and* the window has room; each waiter re-checks when woken (a
//! permit finished, someone ahead left, a new waiter arrived) or when the
//! instant it computed comes, so no timer task is needed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::lease::{Held, LeaseStore, LeaseSync, Leased, Window, sync_task};

use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

use super::{
    AdmissionError, AdmissionEvents, BudgetSnapshot, Demand, NoEvents, Priority, Rate,
    fair::{Entry, FairQueue},
    window::SlidingWindow,
};

/// Most units one caller may have waiting on one budget, unless configured.
pub const DEFAULT_QUEUE_LIMIT: u32 = 1000;

/// How a budget is configured.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSpec {
    /// At most `limit` units in any interval of `window`.
    pub rate: Rate,
    /// At most this many units at once (refilled at the rate); None: the limit.
    pub burst: Option<u32>,
    /// Extra length counted on every window, for jitter.
    pub margin: Duration,
    /// Most units one caller may have waiting; beyond, refusals.
    pub queue_limit: u32,
    /// Share of the budget bulk work keeps while interactive work waits too.
    pub bulk_share: f64,
}

impl BudgetSpec {
    /// A budget of `rate` with defaults: no burst cap, no margin,
    /// [`DEFAULT_QUEUE_LIMIT`] units of queue per caller, 10% for bulk work.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            burst: None,
            margin: Duration::ZERO,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            bulk_share: 0.1,
        }
    }
}

/// One shared rate limit.
#[derive(Debug)]
pub struct Budget {
    /// The name callers use for it.
    name: String,
    /// The request log and the waiters; locked only briefly.
    state: Mutex<State>,
    /// Told of every grant, refusal and pause (metrics).
    events: Arc<dyn AdmissionEvents>,
    /// The round trips to the shared store, for a shared budget.
    lease: Option<Arc<LeaseSync>>,
}

#[derive(Debug)]
struct State {
    /// How the budget is configured now (a reload may change it).
    spec: BudgetSpec,
    /// In memory, or shared through leases.
    window: Window,
    queue: FairQueue,
    /// How to wake each waiter.
    wakers: HashMap<u64, Arc<Notify>>,
    next_ticket: u64,
}

impl State {
    /// Wakes the waiter the queue names next, if any.
    fn wake_next(&self) {
        if let Some(waker) = self
            .queue
            .peek()
            .and_then(|next| self.wakers.get(&next.ticket))
        {
            waker.notify_one();
        }
    }
}

/// Admission to spend some upstream requests. The units count as in flight
/// until the permit is dropped, and from that instant on afterwards: hold it
/// until the upstream has answered.
#[derive(Debug)]
pub struct Permit<'a> {
    budget: &'a Budget,
    cost: u32,
    /// The shared slots it uses (none in memory).
    held: Held,
    /// How long the request waited for room.
    pub waited: Duration,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        let held = std::mem::take(&mut self.held);
        state.window.finish(Instant::now(), self.cost, held);
        state.wake_next();
    }
}

/// A waiter's place in the queue; dropped early (the caller gave up), it
/// leaves the queue without being charged.
struct Place<'a> {
    budget: &'a Budget,
    ticket: u64,
    queued: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.queued {
            let mut state = self.budget.lock();
            state.queue.remove(self.ticket);
            state.wakers.remove(&self.ticket);
            state.wake_next();
        }
    }
}

impl Budget {
    /// A budget named `name` as `spec` says.
    pub fn new(name: impl Into<String>, spec: BudgetSpec) -> Self {
        Self::observed(name, spec, Arc::new(NoEvents))
    }

    /// A budget whose grants, refusals and pauses are reported to `events`.
    pub fn observed(
        name: impl Into<String>,
        spec: BudgetSpec,
        events: Arc<dyn AdmissionEvents>,
    ) -> Self {
        let mut window = SlidingWindow::new(spec.rate, spec.margin);
        if let Some(burst) = spec.burst {
            window = window.with_burst(burst);
        }
        Self::with_window(name, spec, events, Window::Local(window), None)
    }

    /// A budget whose log is shared with other replicas through `store`,
    /// drawn on by leases; starts its sync task (inside a tokio runtime).
    pub fn shared(
        name: impl Into<String>,
        spec: BudgetSpec,
        events: Arc<dyn AdmissionEvents>,
        store: Arc<dyn LeaseStore>,
    ) -> Arc<Self> {
        let leased = Leased::new(
            spec.rate,
            spec.margin,
            spec.burst,
            spec.bulk_share,
            store.settings().clone(),
        );
        let wake = leased.waker();
        let sync = Arc::new(LeaseSync::new(store));
        let budget = Arc::new(Self::with_window(
            name,
            spec,
            events,
            Window::Leased(Box::new(leased)),
            Some(sync.clone()),
        ));
        tokio::spawn(sync_task(Arc::downgrade(&budget), sync, wake));
        budget
    }

    fn with_window(
        name: impl Into<String>,
        spec: BudgetSpec,
        events: Arc<dyn AdmissionEvents>,
        window: Window,
        lease: Option<Arc<LeaseSync>>,
    ) -> Self {
        Self {
            name: name.into(),
            state: Mutex::new(State {
                queue: FairQueue::new(spec.bulk_share),
                window,
                spec,
                wakers: HashMap::new(),
                next_ticket: 0,
            }),
            events,
            lease,
        }
    }

    /// Whether the budget is shared with other replicas through a store.
    pub fn is_shared(&self) -> bool {
        self.lease.is_some()
    }

    /// For a shared budget: whether it runs degraded now (the store is
    /// unreachable); `None` for an in-memory budget.
    pub fn is_degraded(&self) -> Option<bool> {
        let mut state = self.lock();
        let leased = state.window.leased()?;
        Some(leased.mode() != super::lease::Mode::Shared)
    }

    /// Hands back this replica's unused leases and forgets its heartbeat
    /// (on shutdown); nothing for an in-memory budget.
    pub async fn leave(&self) {
        if let Some(lease) = &self.lease {
            lease.round(self, true, |_| false).await;
        }
    }

    /// Runs `f` on the leased window and the queue of a shared budget.
    pub(super) fn with_leased<R>(&self, f: impl FnOnce(&mut Leased, &FairQueue) -> R) -> Option<R> {
        let mut state = self.lock();
        let State { window, queue, .. } = &mut *state;
        let leased = window.leased()?;
        Some(f(leased, queue))
    }

    /// Wakes the waiter that goes next (new slots came in).
    pub(super) fn wake_next_waiter(&self) {
        self.lock().wake_next();
    }

    /// Reports a change of degraded mode.
    pub(super) fn degraded(&self, degraded: bool) {
        self.events.degraded(&self.name, degraded);
    }

    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The budget's configured rate.
    pub fn rate(&self) -> Rate {
        self.lock().spec.rate
    }

    /// Applies a new configuration in place: requests in flight, the log and
    /// every waiter are kept (waiters are re-checked against the new rate).
    pub fn reconfigure(&self, spec: BudgetSpec) {
        let mut state = self.lock();
        state
            .window
            .reconfigure(spec.rate, spec.margin, spec.burst, spec.bulk_share);
        state.queue.set_bulk_share(spec.bulk_share);
        state.spec = spec;
        state.wake_next();
    }

    /// The budget's state now, for metrics.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let mut state = self.lock();
        let (available, in_flight) = state.window.occupancy(Instant::now());
        BudgetSnapshot {
            name: self.name.clone(),
            rate: state.spec.rate,
            available,
            in_flight,
            queued_interactive: state.queue.queued(Priority::Interactive),
            queued_bulk: state.queue.queued(Priority::Bulk),
        }
    }

    /// Waits for room for `cost` units, in fair order (by priority class,
    /// then by caller weight), until the demand's deadline. Refuses at once
    /// if the wait will likely outlast the deadline or the caller's queue is
    /// full, and at the deadline otherwise; dropping the future first leaves
    /// the queue and costs nothing.
    pub async fn acquire(&self, demand: &Demand, cost: u32) -> Result<Permit<'_>, AdmissionError> {
        let cost = cost.max(1);
        let mut start = Instant::now();
        if let Some(lease) = &self.lease {
            // A shared budget without a slot at hand: one round trip to the
            // store first (bounded by its timeout), as the fast path.
            let wants = {
                let mut state = self.lock();
                let max_cost = state.window.max_cost();
                let empty = state.queue.is_empty();
                state.window.leased().is_some_and(|leased| {
                    empty && cost <= max_cost && leased.wants_round(start, cost)
                })
            };
            if wants {
                self.with_leased(|leased, _| leased.add_pending(cost));
                lease
                    .round(self, false, |leased| {
                        !leased.wants_round(Instant::now(), cost)
                    })
                    .await;
                self.with_leased(|leased, _| leased.sub_pending(cost));
                start = Instant::now();
            }
        }
        let (ticket, waker, ahead) = {
            let mut state = self.lock();
            let limit = state.window.max_cost();
            if cost > limit {
                return Err(AdmissionError::CostTooLarge { cost, limit });
            }
            if state.queue.is_empty() && state.window.available_at(start, cost) == Some(start) {
                let held = state.window.start(cost);
                state.window.used(demand, cost);
                drop(state);
                return Ok(self.grant(demand, cost, Duration::ZERO, held));
            }
            let queued = state.queue.queued_by(&demand.caller);
            let ahead = state
                .queue
                .ahead_of(&demand.caller, demand.weight, demand.priority, cost);
            let retry_after = state.window.estimate_wait(start, ahead, cost);
            if queued + u64::from(cost) > u64::from(state.spec.queue_limit)
                || start + retry_after > demand.deadline
            {
                drop(state);
                return Err(self.refuse(demand, cost, retry_after));
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let waker = Arc::new(Notify::new());
            state.wakers.insert(ticket, waker.clone());
            let entry = Entry { ticket, cost };
            state
                .queue
                .push(&demand.caller, demand.weight, demand.priority, entry);
            (ticket, waker, ahead)
        };
        let mut place = Place {
            budget: self,
            ticket,
            queued: true,
        };
        // Ends (is exported) when the wait does, granted or not.
        let waiting = crate::telemetry::admission_span(
            &self.name,
            &demand.caller,
            demand.priority.as_str(),
            cost,
            ahead,
        );
        loop {
            let now = Instant::now();
            let ready_at = {
                let mut state = self.lock();
                if state.queue.peek().is_some_and(|next| next.ticket == ticket) {
                    match state.window.available_at(now, cost) {
                        Some(at) if at <= now => {
                            state.queue.pop();
                            state.wakers.remove(&ticket);
                            place.queued = false;
                            let held = state.window.start(cost);
                            state.window.used(demand, cost);
                            state.wake_next();
                            drop(state);
                            crate::telemetry::waited(&waiting, now - start);
                            return Ok(self.grant(demand, cost, now - start, held));
                        }
                        None => {
                            // A shared budget that just learnt there is no
                            // room before the deadline refuses now.
                            if let Some(retry_after) =
                                state.window.hopeless(now, cost, demand.deadline)
                            {
                                drop(state);
                                return Err(self.refuse(demand, cost, retry_after));
                            }
                            None
                        }
                        other => other,
                    }
                } else {
                    None
                }
            };
            // Sleep until woken, until our instant, or until the deadline.
            let until = ready_at.map_or(demand.deadline, |at| at.min(demand.deadline));
            tokio::select! {
                () = waker.notified() => {}
                () = tokio::time::sleep_until(until) => {
                    let now = Instant::now();
                    if now >= demand.deadline {
                        let retry_after = self.lock().window.estimate_wait(now, 0, cost);
                        let retry_after = retry_after.max(Duration::from_millis(1));
                        return Err(self.refuse(demand, cost, retry_after));
                    }
                }
            }
        }
    }

    /// Stops every admission until `until` (the upstream answered 429 with
    /// `Retry-After`), then resumes at an even pace, without a burst.
    pub fn pause_until(&self, until: Instant) {
        self.lock().window.pause_until(until);
        self.events.paused(&self.name);
    }

    fn grant(&self, demand: &Demand, cost: u32, waited: Duration, held: Held) -> Permit<'_> {
        self.events.granted(&self.name, demand, cost, waited);
        Permit {
            budget: self,
            cost,
            held,
            waited,
        }
    }

    fn refuse(&self, demand: &Demand, cost: u32, retry_after: Duration) -> AdmissionError {
        self.events.refused(&self.name, demand, cost);
        AdmissionError::Refused { retry_after }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state's invariants hold between statements, so a panic elsewhere
        // while holding the lock leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
