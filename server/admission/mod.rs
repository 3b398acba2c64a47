//! Admission control: every upstream request, from any path, asks here first.
//!
//! A [`Budget`] is one rate limit ("N per W") shared by everyone who draws on
//! it: the broker's own Clerk requests and the permits granted to callers
//! through `QuotaService`. This module knows nothing of gRPC or HTTP; time is
//! tokio's clock, so tests prove rates exactly with `tokio::time::pause()`.

mod budget;
mod fair;
mod keyed;
mod lease;
mod rate;
mod window;

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use tokio::time::{Duration, Instant};

pub use budget::{Budget, BudgetSpec, DEFAULT_QUEUE_LIMIT, Permit};

pub use keyed::KeyedBudgets;

pub use lease::{
    LaneReport, LeaseReply, LeaseRequest, LeaseSettings, LeaseStore, PlaceReport, StoreError,
};

pub use rate::{MAX_LIMIT, Rate, RateParseError, parse_duration};

/// The name of the budget that guards the broker's own Clerk requests.
pub const UPSTREAM_BUDGET: &str = "clerk";

/// How urgent a request is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Someone is waiting on the answer.
    #[default]
    Interactive,
    /// Exports, syncs and other background work.
    Bulk,
}

impl Priority {
    /// Its name in metrics and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }
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
    /// The caller's weight in fair sharing (at least 1).
    pub weight: u32,
    /// How urgent the work is.
    pub priority: Priority,
    /// When the caller stops waiting.
    pub deadline: Instant,
}

impl Demand {
    /// Interactive work of `caller` (weight 1) until `deadline`.
    pub fn interactive(caller: CallerName, deadline: Instant) -> Self {
        Self {
            caller,
            weight: 1,
            priority: Priority::Interactive,
            deadline,
        }
    }
}

/// What admission reports to operators; `metrics` implements it. Calls
/// happen outside the budget's lock.
pub trait AdmissionEvents: Send + Sync + std::fmt::Debug {
    /// `cost` units of `budget` were granted to `demand` after `waited`.
    fn granted(&self, budget: &str, demand: &Demand, cost: u32, waited: Duration);
    /// A request of `demand` for `cost` units of `budget` was refused.
    fn refused(&self, budget: &str, demand: &Demand, cost: u32);
    /// `budget` was paused by an upstream 429.
    fn paused(&self, budget: &str);
    /// Shared `budget` entered (`true`) or left degraded mode: its store
    /// could not be reached.
    fn degraded(&self, budget: &str, degraded: bool) {
        let _ = (budget, degraded);
    }
}

/// Reports nothing.
#[derive(Debug)]
pub struct NoEvents;

impl AdmissionEvents for NoEvents {
    fn granted(&self, _: &str, _: &Demand, _: u32, _: Duration) {}
    fn refused(&self, _: &str, _: &Demand, _: u32) {}
    fn paused(&self, _: &str) {}
}

/// A budget's state at one instant, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSnapshot {
    /// Its name.
    pub name: String,
    /// Its rate.
    pub rate: Rate,
    /// Units that could be admitted now.
    pub available: u32,
    /// Units admitted whose requests have not finished.
    pub in_flight: u32,
    /// Units waiting at interactive priority.
    pub queued_interactive: u64,
    /// Units waiting at bulk priority.
    pub queued_bulk: u64,
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

/// The burst cap of a budget unless configured: a tenth of its limit (at
/// least 1). Under saturation it spaces grants evenly (one per W/N), so a
/// newly arriving interactive request waits at most about one such interval.
pub fn default_burst(rate: Rate) -> u32 {
    (rate.limit / 10).max(1)
}

/// Extra length counted on a budget's window unless configured: 2% of it.
pub fn default_margin(rate: Rate) -> Duration {
    rate.window / 50
}

/// All budgets of the broker.
#[derive(Debug)]
pub struct Admission {
    /// The budget of the broker's own Clerk requests.
    upstream: Arc<Budget>,
    /// Every budget by name, the upstream one included; replaced on reload.
    budgets: RwLock<HashMap<String, Arc<Budget>>>,
    /// Handed to every budget.
    events: Arc<dyn AdmissionEvents>,
    /// Where budgets are shared with other replicas (None: in memory).
    store: Option<Arc<dyn LeaseStore>>,
    /// Per-endpoint limits: a budget per key (user, organization…), by the
    /// limit's name; replaced on reload.
    keyed: RwLock<HashMap<String, Arc<KeyedBudgets>>>,
}

impl Admission {
    /// Admission with the upstream Clerk budget and the named `others`
    /// (whose names must differ from `UPSTREAM_BUDGET` and each other).
    pub fn new(upstream: BudgetSpec, others: Vec<(String, BudgetSpec)>) -> Self {
        Self::observed(upstream, others, Arc::new(NoEvents))
    }

    /// As [`Admission::new`], reporting to `events`.
    pub fn observed(
        upstream: BudgetSpec,
        others: Vec<(String, BudgetSpec)>,
        events: Arc<dyn AdmissionEvents>,
    ) -> Self {
        Self::with_store(upstream, others, events, None)
    }

    /// As [`Admission::observed`]; with a `store`, every budget is shared
    /// with the other replicas through it (inside a tokio runtime).
    pub fn with_store(
        upstream: BudgetSpec,
        others: Vec<(String, BudgetSpec)>,
        events: Arc<dyn AdmissionEvents>,
        store: Option<Arc<dyn LeaseStore>>,
    ) -> Self {
        let upstream = make_budget(UPSTREAM_BUDGET, upstream, &events, store.as_ref());
        let admission = Self {
            budgets: RwLock::new(HashMap::from([(
                UPSTREAM_BUDGET.to_owned(),
                upstream.clone(),
            )])),
            upstream,
            events,
            store,
            keyed: RwLock::default(),
        };
        admission.apply(None, others);
        admission
    }

    /// Puts a new set of budgets in force: existing ones are reconfigured in
    /// place (their waiters stay queued), new ones created, missing ones
    /// dropped (calls already holding them finish normally).
    pub fn apply(&self, upstream: Option<BudgetSpec>, others: Vec<(String, BudgetSpec)>) {
        if let Some(spec) = upstream {
            self.upstream.reconfigure(spec);
        }
        let mut budgets = self.budgets.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::from([(UPSTREAM_BUDGET.to_owned(), self.upstream.clone())]);
        for (name, spec) in others {
            let budget = match budgets.get(&name) {
                Some(existing) => {
                    existing.reconfigure(spec);
                    existing.clone()
                }
                None => make_budget(&name, spec, &self.events, self.store.as_ref()),
            };
            next.insert(name, budget);
        }
        *budgets = next;
    }

    /// Puts a new set of keyed limits in force (name → the spec of each
    /// key's budget). Limits kept by name are reconfigured in place, so
    /// what their keys already admitted still counts.
    pub fn apply_keyed(&self, limits: Vec<(String, BudgetSpec)>) {
        let mut keyed = self.keyed.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::new();
        for (name, spec) in limits {
            let budgets = match keyed.get(&name) {
                Some(existing) => {
                    existing.reconfigure(spec);
                    existing.clone()
                }
                None => Arc::new(KeyedBudgets::new(
                    &name,
                    spec,
                    self.events.clone(),
                    self.store.clone(),
                )),
            };
            next.insert(name, budgets);
        }
        *keyed = next;
    }

    /// The keyed limit `name`, if in force.
    pub fn keyed(&self, name: &str) -> Option<Arc<KeyedBudgets>> {
        self.keyed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Drops the keyed budgets idle long enough to hold nothing (call
    /// periodically: memory stays bounded by the keys in use).
    pub async fn expire_idle_keys(&self) {
        let keyed: Vec<_> = self
            .keyed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for budgets in keyed {
            budgets.expire_idle().await;
        }
    }

    /// Whether budgets are shared through a store and, if so, whether any
    /// runs degraded now (`None`: in memory).
    pub fn degraded(&self) -> Option<bool> {
        self.store.as_ref()?;
        let budgets = self.all();
        Some(
            budgets
                .iter()
                .any(|budget| budget.is_degraded() == Some(true)),
        )
    }

    /// Hands back every unused lease and leaves the store (on shutdown).
    pub async fn leave(&self) {
        let budgets = self.all();
        for budget in budgets {
            budget.leave().await;
        }
    }

    /// The budget every Clerk request of the broker draws on.
    pub fn upstream(&self) -> &Budget {
        &self.upstream
    }

    /// Every budget in force now (a copy: the lock is not held).
    fn all(&self) -> Vec<Arc<Budget>> {
        self.budgets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Every budget's state now, by name.
    pub fn snapshots(&self) -> Vec<BudgetSnapshot> {
        let budgets = self.all();
        let mut snapshots: Vec<_> = budgets.iter().map(|budget| budget.snapshot()).collect();
        snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        snapshots
    }

    /// Looks a budget up by name; "" is the upstream budget.
    pub fn budget(&self, name: &str) -> Result<Arc<Budget>, AdmissionError> {
        let name = if name.is_empty() {
            UPSTREAM_BUDGET
        } else {
            name
        };
        self.budgets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| AdmissionError::UnknownBudget(name.to_owned()))
    }
}

fn make_budget(
    name: &str,
    spec: BudgetSpec,
    events: &Arc<dyn AdmissionEvents>,
    store: Option<&Arc<dyn LeaseStore>>,
) -> Arc<Budget> {
    match store {
        Some(store) => Budget::shared(name, spec, events.clone(), store.clone()),
        None => Arc::new(Budget::observed(name, spec, events.clone())),
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
        Arc::new(Budget::new("test", BudgetSpec::new(rate)))
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

    /// Runs `loops` saturating request loops per (caller, weight, priority)
    /// for `run_for` of simulated time; returns grants per caller and the
    /// longest wait each saw.
    async fn saturate(
        budget: Arc<Budget>,
        callers: &[(&'static str, u32, Priority, usize)],
        run_for: Duration,
    ) -> Vec<(usize, Duration)> {
        let end = Instant::now() + run_for;
        let mut tasks = Vec::new();
        for &(name, weight, priority, loops) in callers {
            let mut mine = Vec::new();
            for _ in 0..loops {
                let budget = budget.clone();
                mine.push(tokio::spawn(async move {
                    let (mut granted, mut longest) = (0, Duration::ZERO);
                    while Instant::now() < end {
                        let demand = Demand {
                            caller: name.into(),
                            weight,
                            priority,
                            deadline: Instant::now() + Duration::from_secs(60),
                        };
                        let permit = budget.acquire(&demand, 1).await.unwrap();
                        // Waiters queued before the end may be served after it,
                        // when the competition has stopped: those do not count.
                        if Instant::now() < end {
                            longest = longest.max(permit.waited);
                            granted += 1;
                        }
                    }
                    (granted, longest)
                }));
            }
            tasks.push(mine);
        }
        let mut results = Vec::new();
        for mine in tasks {
            let (mut granted, mut longest) = (0, Duration::ZERO);
            for task in mine {
                let (g, l) = task.await.unwrap();
                granted += g;
                longest = longest.max(l);
            }
            results.push((granted, longest));
        }
        results
    }

    #[tokio::test(start_paused = true)]
    async fn ten_times_oversubscribed_uses_over_95_percent_and_never_more() {
        // Clerk's development budget, 2% margin, 50 ms per upstream request.
        let rate = Rate::CLERK_DEVELOPMENT;
        let mut spec = BudgetSpec::new(rate);
        spec.burst = Some(default_burst(rate));
        spec.margin = rate.window / 50;
        let budget = Arc::new(Budget::new("clerk", spec));
        let start = Instant::now();
        let end = start + Duration::from_secs(60);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // 50 callers each wanting 2 requests per second: 10x the budget.
        for caller in 0..50u32 {
            let budget = budget.clone();
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let name: CallerName = format!("caller-{caller}").into();
                while Instant::now() < end {
                    let demand =
                        Demand::interactive(name.clone(), Instant::now() + Duration::from_secs(2));
                    match budget.acquire(&demand, 1).await {
                        Ok(permit) => {
                            let sent = Instant::now();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            drop(permit);
                            log.lock().unwrap().push(sent);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut sent = log.lock().unwrap().clone();
        sent.sort();
        // Never more than 100 in any 10 s interval (sliding, not aligned).
        for (i, &t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|&&u| u < t + rate.window)
                .count();
            assert!(
                in_window <= 100,
                "{in_window} requests within 10 s of request {i}"
            );
        }
        // Over 6 windows, at least 95% of 600.
        let used = sent.iter().filter(|&&t| t < end).count();
        assert!(used >= 570, "only {used} of 600 used");
    }

    #[tokio::test(start_paused = true)]
    async fn saturating_callers_share_by_weight() {
        let budget = budget(20, 1000);
        let results = saturate(
            budget,
            &[
                ("heavy", 3, Priority::Interactive, 30),
                ("light", 1, Priority::Interactive, 30),
            ],
            Duration::from_secs(30),
        )
        .await;
        let heavy = results[0].0 as f64 / (results[0].0 + results[1].0) as f64;
        assert!(
            (0.70..=0.80).contains(&heavy),
            "heavy share {heavy}: {results:?}"
        );
        let total = results[0].0 + results[1].0;
        assert!(total >= 20 * 29, "the whole budget is used: {total}");
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_goes_first_and_bulk_keeps_its_share() {
        let budget = budget(20, 1000);
        let results = saturate(
            budget,
            &[
                ("web", 1, Priority::Interactive, 30),
                ("export", 10, Priority::Bulk, 30),
            ],
            Duration::from_secs(30),
        )
        .await;
        let bulk = results[1].0 as f64 / (results[0].0 + results[1].0) as f64;
        assert!(
            (0.07..=0.13).contains(&bulk),
            "bulk share {bulk}: {results:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_waits_stay_short_while_bulk_saturates() {
        let mut spec = BudgetSpec::new(Rate {
            limit: 20,
            window: Duration::from_secs(1),
        });
        spec.burst = Some(default_burst(spec.rate));
        let budget = Arc::new(Budget::new("paced", spec));
        let exporter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                saturate(
                    budget,
                    &[("export", 1, Priority::Bulk, 50)],
                    Duration::from_secs(20),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut longest = Duration::ZERO;
        for _ in 0..30 {
            let demand = Demand::interactive("web".into(), Instant::now() + Duration::from_secs(5));
            let permit = budget.acquire(&demand, 1).await.unwrap();
            longest = longest.max(permit.waited);
            drop(permit);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // One refill interval of a 20/1s budget is 50 ms.
        assert!(
            longest <= Duration::from_millis(50),
            "interactive waited {longest:?}"
        );
        assert!(exporter.await.unwrap()[0].0 > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_with_retry_after() {
        let mut spec = BudgetSpec::new(Rate {
            limit: 1,
            window: Duration::from_secs(1),
        });
        spec.queue_limit = 2;
        let budget = Arc::new(Budget::new("tight", spec));
        spend(&budget, 1, Duration::ZERO).await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let budget = budget.clone();
            waiting.push(tokio::spawn(async move {
                spend(&budget, 1, Duration::from_secs(10)).await
            }));
            tokio::task::yield_now().await;
        }
        let refused = spend(&budget, 1, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, AdmissionError::Refused { retry_after } if retry_after >= Duration::from_secs(2))
        );
        // Another caller still gets in line.
        let other = Demand::interactive("other".into(), Instant::now() + Duration::from_secs(10));
        assert!(budget.acquire(&other, 1).await.is_ok());
        for task in waiting {
            assert!(task.await.unwrap().is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_changes_the_rate_and_keeps_waiters() {
        let admission = Arc::new(Admission::new(
            BudgetSpec::new(Rate::CLERK_DEVELOPMENT),
            vec![(
                "writes".into(),
                BudgetSpec::new(Rate {
                    limit: 1,
                    window: Duration::from_secs(10),
                }),
            )],
        ));
        let writes = admission.budget("writes").unwrap();
        spend(&writes, 1, Duration::ZERO).await.unwrap();
        let start = Instant::now();
        let waiter = {
            let writes = writes.clone();
            tokio::spawn(async move { spend(&writes, 1, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 1 per 10 s becomes 5 per 10 s: the queued waiter goes at once.
        admission.apply(
            None,
            vec![(
                "writes".into(),
                BudgetSpec::new(Rate {
                    limit: 5,
                    window: Duration::from_secs(10),
                }),
            )],
        );
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        assert_eq!(admission.budget("writes").unwrap().rate().limit, 5);
        assert!(
            Arc::ptr_eq(&writes, &admission.budget("writes").unwrap()),
            "same budget, same log"
        );
        admission.apply(None, Vec::new());
        assert!(admission.budget("writes").is_err());
    }

    #[test]
    fn unknown_budgets_are_named_in_the_error() {
        let spec = |rate| BudgetSpec::new(rate);
        let admission = Admission::new(
            spec(Rate::CLERK_DEVELOPMENT),
            vec![("exports".into(), spec(Rate::CLERK_DEVELOPMENT))],
        );
        assert_eq!(admission.budget("exports").unwrap().name(), "exports");
        assert_eq!(admission.budget("").unwrap().name(), UPSTREAM_BUDGET);
        assert_eq!(
            admission.budget("imports").unwrap_err().to_string(),
            "no budget is named \"imports\""
        );
    }
}
