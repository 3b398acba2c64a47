//! The window of a shared budget ([`Leased`]): its slots leased from the
//! store, the slots in flight, the hold-off and local share when the store is
//! unreachable, and the local operations the budget calls under its lock. The
//! round trips themselves are built and applied in `round.rs`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

use super::LeaseSettings;
use crate::admission::{CallerName, Demand, Priority, Rate, window::SlidingWindow};

/// The timings of one shared budget, derived from its window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// Heartbeat and reconnection interval.
    pub(super) heartbeat: Duration,
    /// How long a leased slot may wait for its use.
    pub(super) use_for: Duration,
    /// How often finished requests are reported at least.
    pub(super) flush: Duration,
}

impl Timing {
    pub(super) fn of(window: Duration) -> Self {
        Self {
            heartbeat: (window / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            use_for: (window / 8).clamp(Duration::from_millis(20), Duration::from_millis(250)),
            flush: (window / 10).clamp(Duration::from_millis(5), Duration::from_millis(100)),
        }
    }

    /// A silent replica counts as possibly alone after this.
    pub(super) fn stale(&self) -> Duration {
        self.heartbeat * 3
    }

    /// A silent replica keeps its share reserved this long.
    pub(super) fn keep(&self) -> Duration {
        self.heartbeat * 30
    }
}

/// The hasher of this window's maps: their keys are this replica's own
/// (sequence numbers, configured caller names), and they are touched on
/// every permit.
pub(super) type Fast = foldhash::fast::RandomState;

/// Units granted per lane since the last report: (weight, units).
pub(super) type Usage = HashMap<(Priority, CallerName), (u32, u64), Fast>;

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

/// Where the store counts some of this replica's slots (see
/// [`super::PlaceReport`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Place {
    /// The slots of the grant whose first sequence number this is, counted
    /// until the expiry the store gave the grant.
    Lease(u64),
    /// Slots counted until `origin` + this many ms: finished requests and
    /// long ones extended.
    Until(u64),
    /// This replica's use recorded after local mode (or a loss of the
    /// store's data), counted until `origin` + this many ms.
    Recorded(u64),
}

impl Place {
    /// A bucket's end, in ms after the window's origin; none for a lease
    /// (the store set its expiry at the grant).
    pub(super) fn end_ms(self) -> Option<u64> {
        match self {
            Place::Lease(_) => None,
            Place::Until(ms) | Place::Recorded(ms) => Some(ms),
        }
    }

    /// Its name in the store, after the replica's id; `tag` tells this
    /// window's buckets from any other's.
    pub(super) fn name(self, tag: u32) -> String {
        match self {
            Place::Lease(seq) => format!("L{seq}"),
            Place::Until(ms) => format!("U{tag:x}.{ms}"),
            Place::Recorded(ms) => format!("R{tag:x}.{ms}"),
        }
    }
}

/// A leased slot not used yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    /// The grant it came in.
    pub(super) lease: u64,
    /// Unused at this instant, it goes back.
    pub(super) use_by: Instant,
    /// Until when the store counts it as in flight (conservatively, on our
    /// clock): a request using it must have finished by then.
    pub(super) hold_until: Instant,
}

/// A slot in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct InFlight {
    /// Until when the store counts it as in flight (on our clock).
    pub(super) hold_until: Instant,
    /// Where the store counts it.
    pub(super) place: Place,
}

/// The slots a permit holds (none in memory or local mode): ids in
/// [`Leased::held`].
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(super) slots: Vec<u64>,
}

/// What the store knew at the last round trip.
#[derive(Clone, Copy, Debug)]
pub(super) struct Info {
    pub(super) at: Instant,
    pub(super) free: u32,
    pub(super) oldest: Option<Instant>,
}

/// Reports taken out for a round trip, put back if it fails.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// Places reported (their counts are re-read when sent again).
    pub(super) dirty: Vec<Place>,
    pub(super) usage: Usage,
    pub(super) pause: Option<Instant>,
    pub(super) sent: Option<Instant>,
}

/// The window of a shared budget, under the budget's lock.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(super) rate: Rate,
    pub(super) margin: Duration,
    pub(super) burst: Option<u32>,
    pub(super) bulk_share: f64,
    pub(super) settings: LeaseSettings,
    pub(super) timing: Timing,
    /// This replica's own use, in every mode: the limiter of local mode,
    /// and what is recorded in the store on return.
    pub(super) own: SlidingWindow,
    pub(super) mode: Mode,
    pub(super) slots: VecDeque<Slot>,
    /// Slots in flight, by id.
    pub(super) held: HashMap<u64, InFlight, Fast>,
    pub(super) next_id: u64,
    /// How many of this replica's slots the store counts in each place, as
    /// far as this replica has reported (absent: none).
    pub(super) places: HashMap<Place, u32, Fast>,
    /// Places whose count changed since the last round trip that succeeded.
    pub(super) dirty: HashSet<Place, Fast>,
    /// Slots finished since the last round trip.
    pub(super) unreported: u32,
    /// The instant bucket expiries are counted from, and the width of a
    /// bucket (a thousandth of the window, at least 1 ms): expiries are
    /// rounded up to it.
    pub(super) origin: Instant,
    pub(super) bucket_ms: u64,
    /// Names this window's buckets apart from any other's of this replica.
    pub(super) tag: u32,
    pub(super) usage: Usage,
    pub(super) reported: HashSet<String>,
    pub(super) pause_report: Option<Instant>,
    pub(super) paused_until: Option<Instant>,
    pub(super) info: Option<Info>,
    pub(super) epoch: Option<String>,
    pub(super) uncertain: bool,
    pub(super) rerecord: bool,
    pub(super) next_seq: u64,
    pub(super) replicas: u32,
    /// Units wanted by acquirers not yet queued (a round trip on their behalf).
    pub(super) pending: u32,
    pub(super) granted_since: u64,
    pub(super) since: Instant,
    /// No round trip for waiters before this (the store said when).
    pub(super) retry_at: Option<Instant>,
    /// Wakes the sync task.
    pub(super) wake: Arc<Notify>,
}

/// The width of an expiry bucket for a window: a thousandth of it, at
/// least 1 ms.
fn bucket_ms(window: Duration) -> u64 {
    (ms_ceil(window) / 1000).max(1)
}

pub(super) fn ms_ceil(duration: Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// `at - now` in whole ms, rounded up (negative when `at` is past).
pub(super) fn delta_ms(at: Instant, now: Instant) -> i64 {
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
            held: HashMap::default(),
            next_id: 0,
            places: HashMap::default(),
            dirty: HashSet::default(),
            unreported: 0,
            origin: Instant::now(),
            bucket_ms: bucket_ms(rate.window + margin),
            tag: fastrand::u32(..),
            usage: HashMap::default(),
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

    pub(super) fn window(&self) -> Duration {
        self.rate.window + self.margin
    }

    /// The mode now.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// This replica's share of the budget when alone.
    pub(super) fn share(&self) -> u32 {
        let replicas = self
            .settings
            .replicas
            .unwrap_or(0)
            .max(self.replicas)
            .max(1);
        self.rate.limit / replicas
    }

    pub(super) fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&until| until > now)
    }

    /// Adds `n` slots to a place's count.
    pub(super) fn add(&mut self, place: Place, n: u32) {
        *self.places.entry(place).or_insert(0) += n;
        self.dirty.insert(place);
    }

    /// Takes `n` slots out of a place's count.
    pub(super) fn take(&mut self, place: Place, n: u32) {
        if let Some(count) = self.places.get_mut(&place) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.places.remove(&place);
            }
            self.dirty.insert(place);
        }
    }

    /// The bucket of slots counted until `at` (rounded up to a bucket).
    pub(super) fn until(&self, at: Instant) -> u64 {
        ms_ceil(at.saturating_duration_since(self.origin)).div_ceil(self.bucket_ms) * self.bucket_ms
    }

    /// When a bucket's slots stop counting (on this replica's clock).
    pub(super) fn bucket_end(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    /// Hands back the leased slots not used yet.
    pub(super) fn hand_back(&mut self, slots: impl IntoIterator<Item = Slot>) {
        // Slots of one lease are adjacent: one count update per lease.
        let mut run: Option<(u64, u32)> = None;
        for slot in slots {
            match &mut run {
                Some((lease, n)) if *lease == slot.lease => *n += 1,
                _ => {
                    if let Some((lease, n)) = run.replace((slot.lease, 1)) {
                        self.take(Place::Lease(lease), n);
                    }
                }
            }
        }
        if let Some((lease, n)) = run {
            self.take(Place::Lease(lease), n);
        }
    }

    /// Hands back slots past their use-by, and enters local mode when the
    /// hold-off is over.
    pub(super) fn refresh(&mut self, now: Instant) {
        if self.slots.front().is_some_and(|slot| slot.use_by <= now) {
            let expired = self.slots.partition_point(|slot| slot.use_by <= now);
            let slots: Vec<Slot> = self.slots.drain(..expired).collect();
            self.hand_back(slots);
        }
        if let Mode::HoldOff { until } = self.mode
            && now >= until
        {
            self.go_local(now);
        }
    }

    pub(super) fn go_local(&mut self, now: Instant) {
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
    pub(super) fn go_shared(&mut self, now: Instant) {
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
                    let id = self.next_id;
                    self.next_id += 1;
                    self.held.insert(
                        id,
                        InFlight {
                            hold_until: slot.hold_until,
                            place: Place::Lease(slot.lease),
                        },
                    );
                    held.slots.push(id);
                }
            }
        }
        held
    }

    /// The permit's requests are answered: their slots now count until
    /// the answer + the window.
    pub(crate) fn finish(&mut self, now: Instant, cost: u32, held: Held) {
        self.own.finish(now, cost);
        let until = Place::Until(self.until(now + self.window()));
        for id in held.slots {
            // Gone when the store lost its data meanwhile.
            if let Some(slot) = self.held.remove(&id) {
                self.take(slot.place, 1);
                self.add(until, 1);
                self.unreported += 1;
            }
        }
        if self.unreported >= 256 {
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
        let slots: Vec<Slot> = self.slots.drain(..).collect();
        self.hand_back(slots);
        self.wake.notify_one();
    }

    pub(crate) fn reconfigure(&mut self, rate: Rate, margin: Duration, burst: Option<u32>) {
        self.rate = rate;
        self.margin = margin;
        self.burst = burst;
        self.timing = Timing::of(rate.window + margin);
        // Buckets are named by their end in ms: a new width rounds only the
        // buckets to come.
        self.bucket_ms = bucket_ms(rate.window + margin);
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
}
