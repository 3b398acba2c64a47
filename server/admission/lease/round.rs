//! The round trips of a shared budget's window: whether one is wanted, the
//! [`LeaseRequest`] it sends (reports, wants, heartbeat) and how its
//! [`LeaseReply`] (or a failure) is applied to the [`Leased`] window.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

use super::{LaneReport, LeaseReply, LeaseRequest, PlaceReport, StoreError, leased::*};
use crate::admission::{Priority, fair::FairQueue};

impl Leased {
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
        if leaving {
            let slots: Vec<_> = self.slots.drain(..).collect();
            self.hand_back(slots);
        }
        // Requests running long: the store counts them a while longer.
        let extended = Place::Until(self.until(now + max_hold + window));
        let mut moved = Vec::new();
        for slot in self.held.values_mut() {
            if slot.hold_until <= now + self.timing.heartbeat * 2 {
                slot.hold_until = now + max_hold;
                moved.push(std::mem::replace(&mut slot.place, extended));
            }
        }
        for place in moved {
            self.take(place, 1);
            self.add(extended, 1);
        }
        if self.rerecord || self.mode != Mode::Shared {
            // This replica's own use, recorded: absolute counts again, so
            // recording it twice counts it once.
            let (in_flight, finished) = self.own.snapshot(now);
            let mut recorded: HashMap<u64, u32> = HashMap::new();
            for (at, units) in finished {
                if at + window > now {
                    *recorded.entry(self.until(at + window)).or_insert(0) += units;
                }
            }
            if in_flight > 0 {
                *recorded
                    .entry(self.until(now + max_hold + window))
                    .or_insert(0) += in_flight;
            }
            for (ms, units) in recorded {
                self.places.insert(Place::Recorded(ms), units);
                self.dirty.insert(Place::Recorded(ms));
            }
        }
        // Buckets past their end are gone from the store by themselves.
        let origin = self.origin;
        let live = |place: &Place| {
            place
                .end_ms()
                .is_none_or(|ms| origin + Duration::from_millis(ms) > now)
        };
        self.places.retain(|place, _| live(place));
        self.dirty.retain(live);
        self.unreported = 0;
        let taken = Taken {
            dirty: self.dirty.drain().collect(),
            usage: std::mem::take(&mut self.usage),
            pause: self.pause_report.take(),
            sent: Some(now),
        };
        let places = taken
            .dirty
            .iter()
            .map(|&place| PlaceReport {
                name: place.name(self.tag),
                count: self.places.get(&place).copied().unwrap_or(0),
                delta_ms: place.end_ms().map(|ms| delta_ms(self.bucket_end(ms), now)),
            })
            .collect();
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
            places,
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
                    self.places.clear();
                    self.dirty.clear();
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
                if !lost && reply.granted > 0 {
                    let lease = request.first_seq;
                    self.places.insert(Place::Lease(lease), reply.granted);
                    for _ in 0..reply.granted {
                        self.slots.push_back(Slot {
                            lease,
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
                // Put the reports back: they are sent again, with the
                // counts of then (absolute, so idempotent).
                self.dirty.extend(taken.dirty);
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
        if let Some(hold) = self.held.values().map(|slot| slot.hold_until).min() {
            next = next.min(hold.checked_sub(timing.heartbeat * 2).unwrap_or(now));
        }
        if !self.dirty.is_empty() || self.pause_report.is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Rate, lease::LeaseSettings};

    /// The groups a request reports: (name's kind, count, has an end).
    fn groups(request: &LeaseRequest) -> Vec<(char, u32, bool)> {
        let mut groups: Vec<_> = request
            .places
            .iter()
            .map(|place| {
                (
                    place.name.chars().next().unwrap(),
                    place.count,
                    place.delta_ms.is_some_and(|delta| delta > 0),
                )
            })
            .collect();
        groups.sort_unstable();
        groups
    }

    fn granted(n: u32) -> Result<LeaseReply, StoreError> {
        Ok(LeaseReply {
            granted: n,
            epoch: "e".into(),
            ..LeaseReply::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn reports_give_the_absolute_counts_of_the_groups_that_changed() {
        let rate = Rate {
            limit: 100,
            window: Duration::from_secs(1),
        };
        let settings = LeaseSettings {
            max_hold: Duration::from_secs(5),
            replicas: Some(1),
            timeout: Duration::from_millis(50),
        };
        let mut leased = Leased::new(rate, Duration::from_millis(20), None, 0.2, settings);
        let queue = FairQueue::new(0.2);
        // A lease of 4.
        leased.add_pending(4);
        let (request, taken) = leased.build(Instant::now(), &queue, false);
        assert_eq!(request.want, 4);
        assert!(request.places.is_empty());
        leased.apply(Instant::now(), &request, taken, granted(4));
        leased.sub_pending(4);

        // Two permits; one is answered: it moves from the lease to a bucket.
        let first = leased.start(1);
        let _second = leased.start(1);
        tokio::time::advance(Duration::from_millis(10)).await;
        leased.finish(Instant::now(), 1, first);
        let (request, taken) = leased.build(Instant::now(), &queue, false);
        assert_eq!(groups(&request), [('L', 3, false), ('U', 1, true)]);
        // The round trip fails: the next one reports the same counts again.
        leased.apply(
            Instant::now(),
            &request,
            taken,
            Err(StoreError("down".into())),
        );
        let (again, taken) = leased.build(Instant::now(), &queue, false);
        // The same groups, same counts (and, the store unreachable, this
        // replica's own use recorded: its answer and its request in flight).
        let shared = |request: &LeaseRequest| {
            let mut shared: Vec<(String, u32)> = request
                .places
                .iter()
                .filter(|place| !place.name.starts_with('R'))
                .map(|place| (place.name.clone(), place.count))
                .collect();
            shared.sort();
            shared
        };
        assert_eq!(shared(&again), shared(&request));
        assert_eq!(
            groups(&again),
            [
                ('L', 3, false),
                ('R', 1, true),
                ('R', 1, true),
                ('U', 1, true)
            ]
        );
        leased.apply(Instant::now(), &again, taken, granted(0));
        // Nothing changed since: nothing is reported.
        let (quiet, taken) = leased.build(Instant::now(), &queue, false);
        assert!(quiet.places.is_empty(), "{:?}", quiet.places);
        leased.apply(Instant::now(), &quiet, taken, granted(0));

        // The two slots never used pass their use-by: the lease keeps the
        // one still in flight.
        tokio::time::advance(Duration::from_millis(300)).await;
        let (request, taken) = leased.build(Instant::now(), &queue, false);
        assert_eq!(groups(&request), [('L', 1, false)]);
        leased.apply(Instant::now(), &request, taken, granted(0));
    }
}
