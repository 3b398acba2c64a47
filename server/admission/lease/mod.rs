//! Shared budgets: the window of a budget whose log lives in a store shared
//! by every replica (Redis, see `crate::store`), drawn on through small
//! leases of capacity.
//!
//! The store keeps one log per budget: a set of slots, each counted until an
//! expiry the store computes on its own clock. A replica asks for a lease of
//! k slots (one round trip, atomic in the store); each leased slot counts as
//! if its request had been sent at the last instant it may be used and had
//! run as long as a request may run (`max_hold`), plus the window. When the
//! request finishes, the slot's expiry comes down to the answer + the window
//! (+ margin): exactly the in-memory rule. Unused slots are handed back. A
//! crashed replica's slots expire by themselves. The store counts slots in
//! groups rather than one by one: a lease per grant, and buckets of slots
//! that expire together (a thousandth of the window wide); the replica
//! reports the new counts of the groups that changed, so the store's work
//! per round trip follows the groups, not the permits ([`PlaceReport`]).
//! So the store never holds more than N slots alive, and every request sent
//! is covered by a live slot from its admission until W after its answer:
//! the in-memory proof carries over (ARCHITECTURE.md, invariant 17).
//!
//! The local side ([`Leased`]) sits under the same fair queue as the
//! in-memory window ([`Window`]). When the store cannot be reached within its
//! timeout, the replica holds off new grants until everything it or anyone
//! may have been granted through the store has left the window, then runs
//! alone on its share (N ÷ replicas); when the store answers again it
//! records its local use there and returns to shared mode.
//!
//! Here: the protocol with the store and the [`Window`] enum; `leased.rs`:
//! the [`Leased`] window; `round.rs`: building and applying a round trip;
//! `sync.rs`: the sync task.

use std::fmt;

use tokio::time::{Duration, Instant};

mod leased;
mod round;
mod sync;

pub(crate) use leased::{Held, Leased, Mode};
pub(crate) use sync::{LeaseSync, sync_task};

use super::{Demand, Rate, window::SlidingWindow};

/// What a replica tells the shared store in one round trip: the budget's
/// rules (every replica sends its own copy of the same configuration), how
/// many slots it wants, and what happened to slots it holds.
#[derive(Clone, Debug, Default)]
pub struct LeaseRequest {
    /// N.
    pub limit: u32,
    /// W + margin, in ms.
    pub window_ms: u64,
    /// How long after the grant a leased slot may still be in flight (use-by
    /// plus `max_hold`), in ms; it counts until then plus the window.
    pub lease_ms: u64,
    /// Slots wanted now.
    pub want: u32,
    /// The burst cap (a token bucket refilled at N/W), 0 for none.
    pub burst: u32,
    /// The store's epoch this replica knows, if any.
    pub known_epoch: Option<String>,
    /// True when this replica may have missed a loss of the store's data
    /// (it could not reach the store for a while).
    pub uncertain: bool,
    /// A replica not heard from for this long (ms) may be running alone.
    pub stale_ms: u64,
    /// A silent replica is reserved its share for this long (ms).
    pub keep_ms: u64,
    /// After a loss of the store's data, nothing is granted for this long (ms).
    pub recovery_ms: u64,
    /// Replicas configured (0: count them).
    pub replicas: u32,
    /// Sequence number of the first slot a grant creates.
    pub first_seq: u64,
    /// Pause the budget for this long (ms): Clerk answered 429.
    pub pause_ms: u64,
    /// The bulk class's share.
    pub bulk_share: f64,
    /// The replica is shutting down: forget its heartbeat.
    pub leaving: bool,
    /// Groups of this replica's slots whose count changed since the last
    /// round trip (see [`PlaceReport`]).
    pub places: Vec<PlaceReport>,
    /// Callers waiting here, or served since the last round trip.
    pub lanes: Vec<LaneReport>,
    /// Lanes reported before that have gone idle here.
    pub retire: Vec<String>,
}

/// How many of a replica's slots the store counts in one group: a lease
/// (the slots of one grant not yet finished, extended or handed back;
/// counted until the grant's expiry, which the store set) or a bucket of
/// slots that expire together (finished requests, long ones extended, use
/// recorded after local mode). The count is absolute, so a report sent again
/// changes nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaceReport {
    /// The group's name within the replica's (`L<seq>`, `U<tag>.<ms>`, `R<tag>.<ms>`).
    pub name: String,
    /// Slots in the group now (0: the group is gone).
    pub count: u32,
    /// A bucket's expiry, ms from the store's now (0 or less: expired);
    /// `None` for a lease (its count can only come down).
    pub delta_ms: Option<i64>,
}

/// One caller of one class, as seen by one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneReport {
    /// `"<class>:<caller>"`, class 0 (interactive) or 1 (bulk).
    pub lane: String,
    /// 0 interactive, 1 bulk.
    pub class: u8,
    /// The caller's weight.
    pub weight: u32,
    /// Units waiting here now.
    pub waiting: u64,
    /// Units granted here since the last report (charged to its pass).
    pub used: u64,
}

/// What the store answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaseReply {
    /// Slots granted, as one lease (`L<first_seq>`).
    pub granted: u32,
    /// The store's epoch: a new one means its data was lost.
    pub epoch: String,
    /// Slots still free after the grant.
    pub free: u32,
    /// When the oldest live slot expires, ms from now.
    pub oldest_ms: Option<u64>,
    /// When asking again is likely to succeed, ms from now (0: at once).
    pub retry_ms: u64,
    /// Replicas counted (live and recently silent).
    pub replicas: u32,
    /// The budget is paused for this long (ms).
    pub paused_ms: u64,
}

/// Why the store did not answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A store of shared budget logs (implemented over Redis in `crate::store`).
#[tonic::async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug {
    /// One atomic round trip for `budget`; fails within the store's timeout.
    async fn lease(&self, budget: &str, request: &LeaseRequest) -> Result<LeaseReply, StoreError>;
    /// The store's settings.
    fn settings(&self) -> &LeaseSettings;
}

/// How shared budgets behave.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSettings {
    /// Longest a permit may be held (a request's longest duration: the
    /// upstream timeout); a crashed replica's leases count this long.
    pub max_hold: Duration,
    /// Replicas configured; `None`: counted through heartbeats.
    pub replicas: Option<u32>,
    /// Longest a store round trip may take before the replica gives up.
    pub timeout: Duration,
}

/// A window: in memory (the default) or shared through leases.
#[derive(Debug)]
pub(crate) enum Window {
    /// This process alone.
    Local(SlidingWindow),
    /// Shared with other replicas through a store.
    Leased(Box<Leased>),
}

impl Window {
    pub(crate) fn max_cost(&self) -> u32 {
        match self {
            Window::Local(window) => window.max_cost(),
            Window::Leased(leased) => leased.max_cost(),
        }
    }

    pub(crate) fn available_at(&mut self, now: Instant, cost: u32) -> Option<Instant> {
        match self {
            Window::Local(window) => window.available_at(now, cost),
            Window::Leased(leased) => leased.available_at(now, cost),
        }
    }

    pub(crate) fn start(&mut self, cost: u32) -> Held {
        match self {
            Window::Local(window) => {
                window.start(cost);
                Held::default()
            }
            Window::Leased(leased) => leased.start(cost),
        }
    }

    pub(crate) fn finish(&mut self, now: Instant, cost: u32, held: Held) {
        match self {
            Window::Local(window) => window.finish(now, cost),
            Window::Leased(leased) => leased.finish(now, cost, held),
        }
    }

    pub(crate) fn used(&mut self, demand: &Demand, cost: u32) {
        if let Window::Leased(leased) = self {
            leased.used(demand, cost);
        }
    }

    pub(crate) fn occupancy(&mut self, now: Instant) -> (u32, u32) {
        match self {
            Window::Local(window) => window.occupancy(now),
            Window::Leased(leased) => leased.occupancy(now),
        }
    }

    pub(crate) fn estimate_wait(&mut self, now: Instant, ahead: u64, cost: u32) -> Duration {
        match self {
            Window::Local(window) => window.estimate_wait(now, ahead, cost),
            Window::Leased(leased) => leased.estimate_wait(now, ahead, cost),
        }
    }

    pub(crate) fn hopeless(
        &mut self,
        now: Instant,
        cost: u32,
        deadline: Instant,
    ) -> Option<Duration> {
        match self {
            Window::Local(_) => None,
            Window::Leased(leased) => leased.hopeless(now, cost, deadline),
        }
    }

    pub(crate) fn pause_until(&mut self, until: Instant) {
        match self {
            Window::Local(window) => window.pause_until(until),
            Window::Leased(leased) => leased.pause_until(until),
        }
    }

    pub(crate) fn reconfigure(
        &mut self,
        rate: Rate,
        margin: Duration,
        burst: Option<u32>,
        bulk_share: f64,
    ) {
        match self {
            Window::Local(window) => window.reconfigure(rate, margin, burst),
            Window::Leased(leased) => {
                leased.reconfigure(rate, margin, burst);
                leased.set_bulk_share(bulk_share);
            }
        }
    }

    pub(crate) fn leased(&mut self) -> Option<&mut Leased> {
        match self {
            Window::Local(_) => None,
            Window::Leased(leased) => Some(leased),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        },
    };

    use super::*;
    use crate::admission::{Budget, BudgetSpec, CallerName, NoEvents};

    /// Groups of slots: name -> (expiry, count).
    type Groups = HashMap<String, (Instant, u32)>;

    /// A model of `lease.lua`'s log (without fairness, burst or pause), on
    /// tokio's clock, shared by the replicas of one test.
    #[derive(Debug)]
    struct Model {
        log: Mutex<(Groups, String)>,
        down: AtomicBool,
    }

    impl Model {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                log: Mutex::new((HashMap::new(), "epoch-1".into())),
                down: AtomicBool::new(false),
            })
        }
    }

    /// One replica's connection to the model.
    #[derive(Debug)]
    struct Replica {
        model: Arc<Model>,
        id: &'static str,
        settings: LeaseSettings,
    }

    #[tonic::async_trait]
    impl LeaseStore for Replica {
        async fn lease(&self, _: &str, request: &LeaseRequest) -> Result<LeaseReply, StoreError> {
            if self.model.down.load(Ordering::SeqCst) {
                return Err(StoreError("down".into()));
            }
            let now = Instant::now();
            let at = |delta: i64| {
                if delta >= 0 {
                    now + Duration::from_millis(delta as u64)
                } else {
                    now.checked_sub(Duration::from_millis(delta.unsigned_abs()))
                        .unwrap_or(now)
                }
            };
            let mut guard = self.model.log.lock().unwrap();
            let (log, epoch) = &mut *guard;
            // As lease.lua keeps them.
            for place in &request.places {
                let name = format!("{}:{}", self.id, place.name);
                let old = log.get(&name).map_or(0, |&(_, count)| count);
                let count = match place.delta_ms {
                    None => place.count.min(old),
                    Some(delta) if delta <= 0 => 0,
                    Some(_) => place.count,
                };
                if count == 0 {
                    log.remove(&name);
                } else if let Some(group) = log.get_mut(&name) {
                    group.1 = count;
                } else {
                    log.insert(name, (at(place.delta_ms.unwrap_or(0)), count));
                }
            }
            log.retain(|_, (expiry, _)| *expiry > now);
            let live = |log: &Groups| -> u32 { log.values().map(|&(_, count)| count).sum() };
            let room = request.limit.saturating_sub(live(log));
            let granted = room.min(request.want);
            if granted > 0 {
                log.insert(
                    format!("{}:L{}", self.id, request.first_seq),
                    (
                        now + Duration::from_millis(request.lease_ms + request.window_ms),
                        granted,
                    ),
                );
            }
            let oldest = log.values().map(|&(expiry, _)| expiry).min();
            Ok(LeaseReply {
                granted,
                epoch: epoch.clone(),
                free: request.limit.saturating_sub(live(log)),
                oldest_ms: oldest.map(|at| (at - now).as_millis() as u64),
                retry_ms: if granted < request.want {
                    oldest.map_or(1, |at| (at - now).as_millis() as u64).max(1)
                } else {
                    0
                },
                replicas: 2,
                paused_ms: 0,
            })
        }

        fn settings(&self) -> &LeaseSettings {
            &self.settings
        }
    }

    /// The most requests whose arrival (anywhere between admission and
    /// answer) can fall within one interval of `window`.
    fn most_in_any_window(requests: &[(Instant, Instant)], window: Duration) -> usize {
        requests
            .iter()
            .map(|&(_, t)| {
                requests
                    .iter()
                    .filter(|&&(start, finish)| start < t + window && finish >= t)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn two_replicas_never_exceed_the_budget_through_an_outage_and_back() {
        outage(false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn nor_when_the_store_comes_back_empty() {
        outage(true).await;
    }

    /// Two replicas saturating a shared budget of 10/1s: shared for 2 s,
    /// the store down for 4 s (it comes back empty if `lose_data`), then
    /// shared again for 3 s.
    async fn outage(lose_data: bool) {
        let rate = Rate {
            limit: 10,
            window: Duration::from_secs(1),
        };
        let model = Model::new();
        let settings = LeaseSettings {
            max_hold: Duration::from_millis(200),
            replicas: None,
            timeout: Duration::from_millis(50),
        };
        let budgets: Vec<Arc<Budget>> = ["a", "b"]
            .into_iter()
            .map(|id| {
                let store = Arc::new(Replica {
                    model: model.clone(),
                    id,
                    settings: settings.clone(),
                });
                Budget::shared("clerk", BudgetSpec::new(rate), Arc::new(NoEvents), store)
            })
            .collect();
        let start = Instant::now();
        let end = start + Duration::from_secs(9);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for budget in &budgets {
            for worker in 0..8u32 {
                let (budget, sent) = (budget.clone(), sent.clone());
                tasks.push(tokio::spawn(async move {
                    let caller: CallerName = format!("w{worker}").into();
                    while Instant::now() < end {
                        let demand = Demand::interactive(
                            caller.clone(),
                            Instant::now() + Duration::from_millis(700),
                        );
                        match budget.acquire(&demand, 1).await {
                            Ok(permit) => {
                                let admitted = Instant::now();
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                drop(permit);
                                sent.lock().unwrap().push((admitted, Instant::now()));
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(15)).await,
                        }
                    }
                }));
            }
        }
        // Shared for 2 s, Redis down for 4 s, back for 3 s.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before_outage = sent.lock().unwrap().len();
        model.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(budgets.iter().all(|b| b.is_degraded() == Some(true)));
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let during_outage = sent.lock().unwrap().len() - before_outage;
        if lose_data {
            let mut log = model.log.lock().unwrap();
            *log = (HashMap::new(), "epoch-2".into());
        }
        model.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(budgets.iter().all(|b| b.is_degraded() == Some(false)));
        for task in tasks {
            task.await.unwrap();
        }
        let sent = sent.lock().unwrap().clone();
        assert!(
            most_in_any_window(&sent, rate.window) <= 10,
            "{} in one window",
            most_in_any_window(&sent, rate.window)
        );
        // Shared: nearly the whole budget; alone after the hold-off: a share each.
        let shared = sent
            .iter()
            .filter(|(at, _)| {
                *at >= start + Duration::from_secs(1) && *at < start + Duration::from_secs(2)
            })
            .count();
        assert!(shared >= 8, "only {shared} of 10 in a shared second");
        assert!(during_outage > 0, "served alone after the hold-off");
        let after = sent
            .iter()
            .filter(|(at, _)| *at >= start + Duration::from_secs(7))
            .count();
        assert!(after >= 15, "only {after} in the 2 s back in shared mode");
    }
}
