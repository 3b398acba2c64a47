//! Shared budgets: the window of a budget whose log lives in a store shared
//! by every replica (Redis, see `crate::store`), drawn on through small
//! leases of capacity.
//!
//! The store keeps one log per budget: a set of slots, each counted until an
//! expiry the store computes on its own clock. A replica asks for a lease of
//! k slots (one round trip, atomic in the store); each leased slot counts as
//! if its request had been sent at the last instant it may be used and had
//! run as long as a request may run (`max_hold`), plus the window. When the
//! request finishes, the replica reports it and the slot's expiry comes down
//! to the answer + the window (+ margin): exactly the in-memory rule. Unused
//! slots are handed back. A crashed replica's slots expire by themselves.
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

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    sync::{Arc, Weak},
};

use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

use super::{Budget, CallerName, Demand, Priority, Rate, fair::FairQueue, window::SlidingWindow};

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
    /// Slots whose expiry changes to the store's now + delta (ms): finished
    /// requests (answer + window) and long ones (extended).
    pub rescore: Vec<(u64, i64)>,
    /// Leased slots handed back unused.
    pub remove: Vec<u64>,
    /// Units used while the store did not know (local mode, or before a loss
    /// of its data), to count from the store's now until now + delta (ms).
    pub record: Vec<(u64, i64)>,
    /// Callers waiting here, or served since the last round trip.
    pub lanes: Vec<LaneReport>,
    /// Lanes reported before that have gone idle here.
    pub retire: Vec<String>,
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
    /// Slots granted: sequence numbers `first_seq ..`.
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

/// The timings of one shared budget, derived from its window.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Heartbeat and reconnection interval.
    heartbeat: Duration,
    /// How long a leased slot may wait for its use.
    use_for: Duration,
    /// How often finished requests are reported at least.
    flush: Duration,
}

impl Timing {
    fn of(window: Duration) -> Self {
        Self {
            heartbeat: (window / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            use_for: (window / 8).clamp(Duration::from_millis(20), Duration::from_millis(250)),
            flush: (window / 10).clamp(Duration::from_millis(5), Duration::from_millis(100)),
        }
    }

    /// A silent replica counts as possibly alone after this.
    fn stale(&self) -> Duration {
        self.heartbeat * 3
    }

    /// A silent replica keeps its share reserved this long.
    fn keep(&self) -> Duration {
        self.heartbeat * 30
    }
}

/// Whether the budget is shared now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Drawing on the store.
    Shared,
    /// The store is unreachable: only slots already leased are used until
    /// `until`, when everything granted through the store has left the window.
    HoldOff {
        /// When local mode begins.
        until: Instant,
    },
    /// Alone on a share of the budget until the store answers again.
    Local,
}

/// A leased slot not used yet.
#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    /// Unused at this instant, it goes back.
    use_by: Instant,
    /// Until when the store counts it as in flight (conservatively, on our
    /// clock): a request using it must have finished by then.
    hold_until: Instant,
}

/// The slots a permit holds (none in memory or local mode).
#[derive(Debug, Default)]
pub(crate) struct Held {
    slots: Vec<(u64, Instant)>,
}

/// What the store knew at the last round trip.
#[derive(Clone, Copy, Debug)]
struct Info {
    at: Instant,
    free: u32,
    oldest: Option<Instant>,
}

/// Reports taken out for a round trip, put back if it fails.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    rescore: Vec<(u64, Instant)>,
    remove: Vec<u64>,
    usage: HashMap<(Priority, CallerName), (u32, u64)>,
    pause: Option<Instant>,
    sent: Option<Instant>,
}

/// The window of a shared budget, under the budget's lock.
#[derive(Debug)]
pub(crate) struct Leased {
    rate: Rate,
    margin: Duration,
    burst: Option<u32>,
    bulk_share: f64,
    settings: LeaseSettings,
    timing: Timing,
    /// This replica's own use, in every mode: the limiter of local mode,
    /// and what is recorded in the store on return.
    own: SlidingWindow,
    mode: Mode,
    slots: VecDeque<Slot>,
    /// Slots in flight, with the instant they are counted until.
    held: HashMap<u64, Instant>,
    rescore: Vec<(u64, Instant)>,
    remove: Vec<u64>,
    usage: HashMap<(Priority, CallerName), (u32, u64)>,
    reported: HashSet<String>,
    pause_report: Option<Instant>,
    paused_until: Option<Instant>,
    info: Option<Info>,
    epoch: Option<String>,
    uncertain: bool,
    rerecord: bool,
    next_seq: u64,
    replicas: u32,
    /// Units wanted by acquirers not yet queued (a round trip on their behalf).
    pending: u32,
    granted_since: u64,
    since: Instant,
    /// No round trip for waiters before this (the store said when).
    retry_at: Option<Instant>,
    /// Wakes the sync task.
    wake: Arc<Notify>,
}

/// A window: in memory (the default) or shared through leases.
#[derive(Debug)]
pub(crate) enum Window {
    /// This process alone.
    Local(SlidingWindow),
    /// Shared with other replicas through a store.
    Leased(Box<Leased>),
}

fn ms_ceil(duration: Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// `at - now` in whole ms, rounded up (negative when `at` is past).
fn delta_ms(at: Instant, now: Instant) -> i64 {
    if at >= now {
        i64::try_from(ms_ceil(at - now)).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((now - at).as_millis()).unwrap_or(i64::MAX)
    }
}

impl Leased {
    pub(crate) fn new(
        rate: Rate,
        margin: Duration,
        burst: Option<u32>,
        bulk_share: f64,
        settings: LeaseSettings,
    ) -> Self {
        let replicas = settings.replicas.unwrap_or(1).max(1);
        Self {
            own: SlidingWindow::new(rate, margin),
            timing: Timing::of(rate.window + margin),
            rate,
            margin,
            burst,
            bulk_share,
            settings,
            mode: Mode::Shared,
            slots: VecDeque::new(),
            held: HashMap::new(),
            rescore: Vec::new(),
            remove: Vec::new(),
            usage: HashMap::new(),
            reported: HashSet::new(),
            pause_report: None,
            paused_until: None,
            info: None,
            epoch: None,
            uncertain: false,
            rerecord: true,
            next_seq: fastrand::u64(..1 << 40),
            replicas,
            pending: 0,
            granted_since: 0,
            since: Instant::now(),
            retry_at: None,
            wake: Arc::new(Notify::new()),
        }
    }

    fn window(&self) -> Duration {
        self.rate.window + self.margin
    }

    /// The mode now.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// This replica's share of the budget when alone.
    fn share(&self) -> u32 {
        let replicas = self
            .settings
            .replicas
            .unwrap_or(0)
            .max(self.replicas)
            .max(1);
        self.rate.limit / replicas
    }

    fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&until| until > now)
    }

    /// Hands back slots past their use-by, and enters local mode when the
    /// hold-off is over.
    fn refresh(&mut self, now: Instant) {
        while let Some(slot) = self.slots.front() {
            if slot.use_by > now {
                break;
            }
            self.remove.push(slot.seq);
            self.slots.pop_front();
        }
        if let Mode::HoldOff { until } = self.mode
            && now >= until
        {
            self.go_local(now);
        }
    }

    fn go_local(&mut self, now: Instant) {
        let share = self.share();
        let rate = Rate {
            limit: share.max(1),
            window: self.rate.window,
        };
        let (in_flight, finished) = self.own.snapshot(now);
        let mut own = SlidingWindow::new(rate, self.margin);
        if let Some(burst) = self.burst {
            own = own.with_burst(burst.min(rate.limit));
        }
        self.own = own.seeded(in_flight, &finished);
        if let Some(until) = self.paused(now) {
            self.own.pause_until(until);
        }
        self.usage.clear();
        self.mode = Mode::Local;
        tracing::warn!(
            share,
            "shared budget store unreachable: running alone on this replica's share of the budget"
        );
    }

    /// Back to shared mode: the own log only records again.
    fn go_shared(&mut self, now: Instant) {
        let (in_flight, finished) = self.own.snapshot(now);
        self.own = SlidingWindow::new(self.rate, self.margin).seeded(in_flight, &finished);
        self.mode = Mode::Shared;
    }

    pub(crate) fn max_cost(&self) -> u32 {
        self.burst
            .map_or(self.rate.limit, |burst| burst.min(self.rate.limit).max(1))
    }

    pub(crate) fn available_at(&mut self, now: Instant, cost: u32) -> Option<Instant> {
        self.refresh(now);
        match self.mode {
            Mode::Local => {
                if cost > self.share() {
                    return None;
                }
                self.own.available_at(now, cost)
            }
            Mode::Shared | Mode::HoldOff { .. } => {
                if let Some(until) = self.paused(now) {
                    return Some(until);
                }
                if self.slots.len() >= cost as usize {
                    return Some(now);
                }
                match self.mode {
                    Mode::HoldOff { until } => Some(until),
                    _ => {
                        self.wake.notify_one();
                        None
                    }
                }
            }
        }
    }

    pub(crate) fn start(&mut self, cost: u32) -> Held {
        self.own.start(cost);
        self.granted_since += u64::from(cost);
        let mut held = Held::default();
        if self.mode != Mode::Local {
            for _ in 0..cost {
                if let Some(slot) = self.slots.pop_front() {
                    self.held.insert(slot.seq, slot.hold_until);
                    held.slots.push((slot.seq, slot.hold_until));
                }
            }
        }
        held
    }

    pub(crate) fn finish(&mut self, now: Instant, cost: u32, held: Held) {
        self.own.finish(now, cost);
        for (seq, _) in held.slots {
            self.held.remove(&seq);
            self.rescore.push((seq, now));
        }
        if self.rescore.len() >= 256 {
            self.wake.notify_one();
        }
    }

    /// Charges `cost` granted units to the demand's caller (global fairness).
    pub(crate) fn used(&mut self, demand: &Demand, cost: u32) {
        let entry = self
            .usage
            .entry((demand.priority, demand.caller.clone()))
            .or_insert((demand.weight.max(1), 0));
        entry.0 = demand.weight.max(1);
        entry.1 += u64::from(cost);
    }

    pub(crate) fn occupancy(&mut self, now: Instant) -> (u32, u32) {
        self.refresh(now);
        let (in_flight, _) = self.own.snapshot(now);
        if self.mode == Mode::Local {
            return self.own.occupancy(now);
        }
        let fresh = self
            .info
            .filter(|info| now.saturating_duration_since(info.at) <= self.timing.heartbeat * 2);
        let available = self.slots.len() as u32 + fresh.map_or(0, |info| info.free);
        (available.min(self.rate.limit), in_flight)
    }

    pub(crate) fn estimate_wait(&mut self, now: Instant, ahead: u64, cost: u32) -> Duration {
        self.refresh(now);
        let needed = ahead + u64::from(cost);
        let paused = self.paused(now).map_or(Duration::ZERO, |until| until - now);
        match self.mode {
            Mode::Local => {
                if cost > self.share() {
                    return self.window();
                }
                self.own.estimate_wait(now, ahead, cost)
            }
            Mode::HoldOff { until } => {
                if needed <= self.slots.len() as u64 {
                    paused
                } else {
                    until.saturating_duration_since(now).max(paused)
                }
            }
            Mode::Shared => {
                let have = self.slots.len() as u64;
                if needed <= have {
                    return paused;
                }
                let Some(info) = self
                    .info
                    .filter(|info| now.saturating_duration_since(info.at) <= self.timing.heartbeat)
                else {
                    // Unknown: a round trip will tell.
                    return paused;
                };
                let beyond = needed - have;
                if beyond <= u64::from(info.free) {
                    return paused;
                }
                let short = beyond - u64::from(info.free);
                let step = self.window() / self.rate.limit.max(1);
                let first = info.oldest.unwrap_or(now + self.window());
                let at = first + step * u32::try_from(short - 1).unwrap_or(u32::MAX);
                at.saturating_duration_since(now).max(paused)
            }
        }
    }

    /// Whether fresh knowledge of the store says `cost` units cannot come
    /// before `deadline`: then the waiter is refused now with this estimate.
    pub(crate) fn hopeless(
        &mut self,
        now: Instant,
        cost: u32,
        deadline: Instant,
    ) -> Option<Duration> {
        if self.mode != Mode::Shared {
            return None;
        }
        self.info
            .filter(|info| now.saturating_duration_since(info.at) <= self.timing.flush)?;
        let wait = self.estimate_wait(now, 0, cost);
        (now + wait > deadline).then_some(wait)
    }

    pub(crate) fn pause_until(&mut self, until: Instant) {
        self.own.pause_until(until);
        if self.paused_until.is_some_and(|paused| paused >= until) {
            return;
        }
        self.paused_until = Some(until);
        self.pause_report = Some(until);
        self.remove
            .extend(self.slots.drain(..).map(|slot| slot.seq));
        self.wake.notify_one();
    }

    pub(crate) fn reconfigure(&mut self, rate: Rate, margin: Duration, burst: Option<u32>) {
        self.rate = rate;
        self.margin = margin;
        self.burst = burst;
        self.timing = Timing::of(rate.window + margin);
        if self.mode == Mode::Local {
            let share = self.share().max(1);
            let burst = burst.map(|burst| burst.min(share));
            self.own.reconfigure(
                Rate {
                    limit: share,
                    window: rate.window,
                },
                margin,
                burst,
            );
        } else {
            self.own.reconfigure(rate, margin, None);
        }
    }

    pub(crate) fn set_bulk_share(&mut self, bulk_share: f64) {
        self.bulk_share = bulk_share;
    }

    /// Whether an acquirer finding no slot should make a round trip first.
    pub(crate) fn wants_round(&mut self, now: Instant, cost: u32) -> bool {
        self.refresh(now);
        self.mode == Mode::Shared
            && self.paused(now).is_none()
            && self.slots.len() < cost as usize
            && self.retry_at.is_none_or(|at| at <= now)
    }

    /// The request of the next round trip, and what it takes out.
    pub(crate) fn build(
        &mut self,
        now: Instant,
        queue: &FairQueue,
        leaving: bool,
    ) -> (LeaseRequest, Taken) {
        self.refresh(now);
        let window = self.window();
        let max_hold = self.settings.max_hold;
        let cap = (self.rate.limit / (4 * self.replicas.max(1)))
            .max(1)
            .min(self.max_cost());
        let queued = queue.queued(Priority::Interactive) + queue.queued(Priority::Bulk);
        let want = if self.mode == Mode::Shared && self.paused(now).is_none() && !leaving {
            let elapsed = now
                .saturating_duration_since(self.since)
                .max(Duration::from_millis(1));
            let rate = self.granted_since as f64 / elapsed.as_secs_f64();
            let prefetch = (rate * self.timing.use_for.as_secs_f64()).ceil() as u64;
            let need = (queued + u64::from(self.pending)).max(prefetch.min(u64::from(cap)));
            // Never less than the next single request needs.
            let head = queue.peek().map_or(0, |entry| entry.cost).max(self.pending);
            let cap = cap.max(head);
            need.saturating_sub(self.slots.len() as u64)
                .min(u64::from(cap)) as u32
        } else {
            0
        };
        self.granted_since = 0;
        self.since = now;
        let first_seq = self.next_seq;
        self.next_seq += u64::from(want);
        let mut taken = Taken {
            rescore: std::mem::take(&mut self.rescore),
            remove: std::mem::take(&mut self.remove),
            usage: std::mem::take(&mut self.usage),
            pause: self.pause_report.take(),
            sent: Some(now),
        };
        if leaving {
            taken
                .remove
                .extend(self.slots.drain(..).map(|slot| slot.seq));
        }
        let mut rescore: Vec<(u64, i64)> = taken
            .rescore
            .iter()
            .map(|&(seq, finished)| (seq, delta_ms(finished + window, now)))
            .collect();
        // Requests running long: the store counts them a while longer.
        for (seq, hold_until) in &mut self.held {
            if *hold_until <= now + self.timing.heartbeat * 2 {
                *hold_until = now + max_hold;
                rescore.push((*seq, delta_ms(now + max_hold + window, now)));
            }
        }
        let mut record = Vec::new();
        if self.rerecord || self.mode != Mode::Shared {
            let (in_flight, finished) = self.own.snapshot(now);
            for (at, units) in finished {
                let delta = delta_ms(at + window, now);
                if delta > 0 {
                    for _ in 0..units {
                        record.push((self.next_seq, delta));
                        self.next_seq += 1;
                    }
                }
            }
            for _ in 0..in_flight {
                record.push((self.next_seq, delta_ms(now + max_hold + window, now)));
                self.next_seq += 1;
            }
        }
        let class = |priority| match priority {
            Priority::Interactive => 0u8,
            Priority::Bulk => 1,
        };
        let mut lanes: HashMap<String, LaneReport> = HashMap::new();
        for (priority, caller, weight, waiting) in queue.waiting_lanes() {
            let lane = format!("{}:{caller}", class(priority));
            lanes.insert(
                lane.clone(),
                LaneReport {
                    lane,
                    class: class(priority),
                    weight,
                    waiting,
                    used: 0,
                },
            );
        }
        for ((priority, caller), (weight, used)) in &taken.usage {
            let lane = format!("{}:{caller}", class(*priority));
            lanes
                .entry(lane.clone())
                .or_insert(LaneReport {
                    lane,
                    class: class(*priority),
                    weight: *weight,
                    waiting: 0,
                    used: 0,
                })
                .used += used;
        }
        let current: HashSet<String> = lanes
            .values()
            .filter(|lane| lane.waiting > 0)
            .map(|lane| lane.lane.clone())
            .collect();
        let retire = self.reported.difference(&current).cloned().collect();
        self.reported = current;
        let request = LeaseRequest {
            limit: self.rate.limit,
            window_ms: ms_ceil(window),
            lease_ms: ms_ceil(self.timing.use_for + max_hold),
            want,
            burst: self
                .burst
                .filter(|&burst| burst < self.rate.limit)
                .unwrap_or(0),
            known_epoch: self.epoch.clone(),
            uncertain: self.uncertain,
            stale_ms: ms_ceil(self.timing.stale()),
            keep_ms: ms_ceil(self.timing.keep()),
            recovery_ms: ms_ceil(self.timing.heartbeat * 3 + self.settings.timeout * 2),
            replicas: self.settings.replicas.unwrap_or(0),
            first_seq,
            pause_ms: taken
                .pause
                .map_or(0, |until| ms_ceil(until.saturating_duration_since(now))),
            bulk_share: self.bulk_share,
            leaving,
            rescore,
            remove: taken.remove.clone(),
            record,
            lanes: lanes.into_values().collect(),
            retire,
        };
        (request, taken)
    }

    /// Takes the store's answer (or its failure) in. Returns `Some(true)`
    /// when the budget became degraded, `Some(false)` when it recovered.
    pub(crate) fn apply(
        &mut self,
        now: Instant,
        request: &LeaseRequest,
        taken: Taken,
        result: Result<LeaseReply, StoreError>,
    ) -> Option<bool> {
        let sent = taken.sent.unwrap_or(now);
        match result {
            Ok(reply) => {
                let was = self.mode;
                if was != Mode::Shared {
                    self.go_shared(now);
                }
                let lost = self
                    .epoch
                    .as_ref()
                    .is_some_and(|known| *known != reply.epoch);
                if lost {
                    tracing::warn!(
                        "the shared budget store lost its data: re-recording this replica's use"
                    );
                    // Our slots are gone from the store: unusable, and our
                    // requests in flight must be recorded again.
                    self.slots.clear();
                    self.held.clear();
                    self.rerecord = true;
                    self.wake.notify_one();
                } else {
                    self.rerecord = false;
                }
                self.epoch = Some(reply.epoch);
                self.uncertain = false;
                self.replicas = reply.replicas.max(1);
                let use_by = sent + self.timing.use_for;
                let hold_until = use_by + self.settings.max_hold;
                if !lost {
                    for i in 0..u64::from(reply.granted) {
                        self.slots.push_back(Slot {
                            seq: request.first_seq + i,
                            use_by,
                            hold_until,
                        });
                    }
                }
                self.info = Some(Info {
                    at: now,
                    free: reply.free,
                    oldest: reply.oldest_ms.map(|ms| now + Duration::from_millis(ms)),
                });
                if reply.paused_ms > 0 {
                    let until = now + Duration::from_millis(reply.paused_ms);
                    if self.paused_until.is_none_or(|paused| paused < until) {
                        self.paused_until = Some(until);
                        self.own.pause_until(until);
                    }
                }
                self.retry_at = (reply.granted < request.want && reply.retry_ms > 0).then(|| {
                    now + Duration::from_millis(reply.retry_ms).min(self.timing.heartbeat)
                });
                (was != Mode::Shared).then_some(false)
            }
            Err(error) => {
                // Put the reports back: they are sent again (idempotently).
                let mut rescore = taken.rescore;
                rescore.append(&mut self.rescore);
                self.rescore = rescore;
                let mut remove = taken.remove;
                remove.append(&mut self.remove);
                self.remove = remove;
                if self.mode != Mode::Local {
                    for (key, (weight, used)) in taken.usage {
                        self.usage.entry(key).or_insert((weight, 0)).1 += used;
                    }
                }
                if let Some(pause) = taken.pause {
                    self.pause_report = Some(self.pause_report.map_or(pause, |p| p.max(pause)));
                }
                self.uncertain = true;
                self.reported.clear();
                if self.mode == Mode::Shared {
                    // Nothing new until everything anyone may have been
                    // granted through the store has left the window.
                    let until = now
                        + self.timing.stale()
                        + self.timing.use_for
                        + self.settings.max_hold
                        + self.window();
                    self.mode = Mode::HoldOff { until };
                    tracing::warn!(
                        %error,
                        hold_off = ?(until - now),
                        "shared budget store unreachable: degraded mode, new grants held off"
                    );
                    return Some(true);
                }
                None
            }
        }
    }

    /// When the sync task should run next, if nothing wakes it sooner.
    pub(crate) fn next_round(&self, now: Instant, waiting: bool) -> Instant {
        let timing = self.timing;
        let mut next = match self.mode {
            Mode::Shared => now + timing.heartbeat,
            _ => now + timing.heartbeat / 2,
        };
        if let Some(slot) = self.slots.front() {
            next = next.min(slot.use_by);
        }
        if let Some(hold) = self.held.values().min() {
            next = next.min(hold.checked_sub(timing.heartbeat * 2).unwrap_or(now));
        }
        if !self.rescore.is_empty() || !self.remove.is_empty() || self.pause_report.is_some() {
            next = next.min(now + timing.flush);
        }
        if waiting && self.mode == Mode::Shared {
            next = next.min(self.retry_at.unwrap_or(now));
        }
        // At most one round trip per millisecond: never a busy loop.
        next.max(now + Duration::from_millis(1))
    }

    /// No round trip for waiters before this.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub(crate) fn add_pending(&mut self, units: u32) {
        self.pending += units;
    }

    pub(crate) fn sub_pending(&mut self, units: u32) {
        self.pending = self.pending.saturating_sub(units);
    }

    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
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

/// The round trips of one shared budget: at most one at a time, made by the
/// sync task or by an acquirer that found no slot.
#[derive(Debug)]
pub(crate) struct LeaseSync {
    store: Arc<dyn LeaseStore>,
    lock: tokio::sync::Mutex<()>,
}

impl LeaseSync {
    pub(crate) fn new(store: Arc<dyn LeaseStore>) -> Self {
        Self {
            store,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// One round trip for `budget`, unless `skip` (checked once the round
    /// trip lock is held) says it is no longer needed.
    pub(crate) async fn round(
        &self,
        budget: &Budget,
        leaving: bool,
        skip: impl FnOnce(&mut Leased) -> bool,
    ) {
        let _one_at_a_time = self.lock.lock().await;
        let Some(built) = budget.with_leased(|leased, queue| {
            if skip(leased) {
                return None;
            }
            Some(leased.build(Instant::now(), queue, leaving))
        }) else {
            return;
        };
        let Some((request, taken)) = built else {
            return;
        };
        let result = self.store.lease(budget.name(), &request).await;
        let changed =
            budget.with_leased(|leased, _| leased.apply(Instant::now(), &request, taken, result));
        if let Some(Some(degraded)) = changed {
            budget.degraded(degraded);
        }
        budget.wake_next_waiter();
    }
}

/// Keeps a shared budget's leases, reports and heartbeat going while the
/// budget exists.
pub(crate) async fn sync_task(budget: Weak<Budget>, sync: Arc<LeaseSync>, wake: Arc<Notify>) {
    loop {
        let Some(strong) = budget.upgrade() else {
            return;
        };
        sync.round(&strong, false, |_| false).await;
        let now = Instant::now();
        let Some((next, retry_at)) = strong.with_leased(|leased, queue| {
            let waiting = !queue.is_empty();
            (leased.next_round(now, waiting), leased.retry_at())
        }) else {
            return;
        };
        drop(strong);
        tokio::select! {
            () = wake.notified() => {
                // Woken by demand: not before the store said it is worth it,
                // and never more than one round trip per millisecond.
                let floor = Instant::now() + Duration::from_millis(1);
                let until = retry_at.map_or(floor, |at| at.max(floor));
                tokio::time::sleep_until(until.min(next)).await;
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;
    use crate::admission::{BudgetSpec, NoEvents};

    /// A model of `lease.lua`'s log (without fairness, burst or pause), on
    /// tokio's clock, shared by the replicas of one test.
    #[derive(Debug)]
    struct Model {
        log: Mutex<(HashMap<String, Instant>, String)>,
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
            let member = |seq: &u64| format!("{}:{seq}", self.id);
            for (seq, delta) in &request.rescore {
                if let Some(expiry) = log.get_mut(&member(seq)) {
                    *expiry = at(*delta);
                }
            }
            for seq in &request.remove {
                log.remove(&member(seq));
            }
            for (seq, delta) in &request.record {
                if *delta > 0 {
                    log.entry(member(seq)).or_insert(at(*delta));
                }
            }
            log.retain(|_, expiry| *expiry > now);
            let room = request.limit.saturating_sub(log.len() as u32);
            let granted = room.min(request.want);
            for i in 0..u64::from(granted) {
                log.insert(
                    member(&(request.first_seq + i)),
                    now + Duration::from_millis(request.lease_ms + request.window_ms),
                );
            }
            let oldest = log.values().min().copied();
            Ok(LeaseReply {
                granted,
                epoch: epoch.clone(),
                free: request.limit.saturating_sub(log.len() as u32),
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
