//! `SlidingWindow`: the exact "at most N in any interval of W" limiter.
//!
//! A token bucket whose burst equals N can send almost 2N requests within one
//! interval of length W (a full bucket, then its refill). This limiter instead
//! remembers when each of the last N requests *finished*, and admits a new one
//! only while fewer than N requests are in flight or finished within the last
//! W. Counting from completion rather than from sending is what makes the
//! guarantee hold at the upstream: a request arrives there at some instant
//! between being sent and its answer, so however long a connection setup or
//! a slow network delays it, two requests N apart arrive at least W apart.
//! The price is that each window effectively lasts W plus one round trip.

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

use super::Rate;

/// Resolution of the completion log.
const TICK: Duration = Duration::from_millis(1);

/// The request log of one budget.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    /// Requests allowed per window.
    limit: u32,
    /// The window, including the safety margin.
    window: Duration,
    /// Units admitted and not finished yet; they count in every window.
    in_flight: u32,
    /// When recent requests finished, ascending, as (instant, units): each
    /// instant rounded up to the next [`TICK`] so that busy budgets need at
    /// most one entry per tick (rounding up only makes the limit stricter).
    /// Entries that left the window are pruned as time goes on.
    finished: VecDeque<(Instant, u32)>,
    /// Sum of the units in `finished`.
    finished_units: u64,
    /// Where ticks are counted from (the first completion).
    origin: Option<Instant>,
    /// The end of the latest pause, if any.
    paused_until: Option<Instant>,
    /// An optional burst limit on top of the window.
    burst: Option<Burst>,
}

/// A token bucket of `capacity` refilled at the window's rate: it caps how
/// many units go at once without lowering the sustained rate.
#[derive(Debug)]
struct Burst {
    capacity: f64,
    /// Units per second.
    refill: f64,
    tokens: f64,
    updated: Instant,
}

impl Burst {
    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            let gained = (now - self.updated).as_secs_f64() * self.refill;
            self.tokens = (self.tokens + gained).min(self.capacity);
            self.updated = now;
        }
    }

    /// When `cost` tokens will be there.
    fn ready_at(&mut self, now: Instant, cost: u32) -> Instant {
        self.refill(now);
        let missing = f64::from(cost) - self.tokens;
        if missing <= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(missing / self.refill)
        }
    }
}

impl SlidingWindow {
    /// A limiter for `rate`, counting each window `margin` longer than the
    /// rate says, to absorb clock and network jitter.
    pub(crate) fn new(rate: Rate, margin: Duration) -> Self {
        Self {
            limit: rate.limit,
            window: rate.window + margin,
            in_flight: 0,
            finished: VecDeque::new(),
            finished_units: 0,
            origin: None,
            paused_until: None,
            burst: None,
        }
    }

    /// Also caps how many units go at once to `burst` (below the limit),
    /// refilled at the window's rate.
    pub(crate) fn with_burst(mut self, burst: u32) -> Self {
        self.set_burst(burst);
        self
    }

    fn set_burst(&mut self, burst: u32) {
        if burst < self.limit {
            let capacity = f64::from(burst.max(1));
            self.burst = Some(Burst {
                capacity,
                refill: f64::from(self.limit) / self.window.as_secs_f64(),
                tokens: capacity,
                updated: Instant::now(),
            });
        }
    }

    /// Takes a new rate, margin and burst cap, keeping the log and the
    /// requests in flight (a reload must not forget what was already sent).
    pub(crate) fn reconfigure(&mut self, rate: Rate, margin: Duration, burst: Option<u32>) {
        self.limit = rate.limit;
        self.window = rate.window + margin;
        let tokens = self.burst.take().map(|bucket| bucket.tokens);
        if let Some(burst) = burst {
            self.set_burst(burst);
        }
        if let (Some(bucket), Some(tokens)) = (&mut self.burst, tokens) {
            bucket.tokens = tokens.min(bucket.capacity);
        }
    }

    /// The largest cost one admission can have.
    pub(crate) fn max_cost(&self) -> u32 {
        self.burst
            .as_ref()
            .map_or(self.limit, |burst| burst.capacity as u32)
    }

    /// The earliest instant, not before `now`, at which `cost` more units can
    /// be admitted; `None` while that depends on requests still in flight.
    /// `cost` must be between 1 and the limit.
    pub(crate) fn available_at(&mut self, now: Instant, cost: u32) -> Option<Instant> {
        self.prune(now);
        let busy = self.in_flight + cost;
        if busy > self.limit {
            return None;
        }
        let room = u64::from(self.limit - busy);
        let mut at = now;
        if self.finished_units > room {
            // The oldest units must leave the window until `room` remain.
            // (After a pause the log holds entries up to the pause's end; the
            // expiry found is then past all of them.)
            at = at.max(self.expiry_of(self.finished_units - room - 1));
        }
        if let Some(burst) = &mut self.burst {
            at = at.max(burst.ready_at(now, cost));
        }
        Some(at)
    }

    /// Admits `cost` units now (after [`SlidingWindow::available_at`] said so).
    pub(crate) fn start(&mut self, cost: u32) {
        self.in_flight += cost;
        if let Some(burst) = &mut self.burst {
            burst.tokens -= f64::from(cost);
        }
    }

    /// Records that `cost` admitted units finished at `now`.
    pub(crate) fn finish(&mut self, now: Instant, cost: u32) {
        self.in_flight = self.in_flight.saturating_sub(cost);
        let at = self.tick(now);
        self.record(at, cost);
    }

    /// `now` rounded up to the next tick.
    fn tick(&mut self, now: Instant) -> Instant {
        let origin = *self.origin.get_or_insert(now);
        let since = now.saturating_duration_since(origin);
        // Whole ticks, rounded up, in u64 arithmetic (this runs per request).
        let tick_nanos = TICK.as_nanos() as u64;
        let nanos = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        origin + Duration::from_nanos(nanos.div_ceil(tick_nanos).saturating_mul(tick_nanos))
    }

    /// Adds `units` at `at`, keeping the log ascending (after a pause,
    /// future entries may follow `at`).
    fn record(&mut self, at: Instant, units: u32) {
        self.finished_units += u64::from(units);
        match self.finished.back_mut() {
            Some((last, count)) if *last == at => *count += units,
            Some((last, _)) if *last > at => {
                let index = self.finished.partition_point(|&(t, _)| t < at);
                match self.finished.get_mut(index) {
                    Some((t, count)) if *t == at => *count += units,
                    _ => self.finished.insert(index, (at, units)),
                }
            }
            _ => self.finished.push_back((at, units)),
        }
    }

    /// When the unit at `index` (0 = oldest) of the log leaves the window.
    fn expiry_of(&self, index: u64) -> Instant {
        let mut seen = 0;
        for &(at, units) in &self.finished {
            seen += u64::from(units);
            if seen > index {
                return at + self.window;
            }
        }
        self.finished
            .back()
            .map_or_else(Instant::now, |&(at, _)| at + self.window)
    }

    /// Units in flight, and the units finished within the window with when
    /// they finished (ascending): what this log counts now.
    pub(crate) fn snapshot(&mut self, now: Instant) -> (u32, Vec<(Instant, u32)>) {
        self.prune(now);
        (self.in_flight, self.finished.iter().copied().collect())
    }

    /// This limiter, counting `in_flight` units and the `finished` ones
    /// (from [`SlidingWindow::snapshot`] of another log) as its own.
    pub(crate) fn seeded(mut self, in_flight: u32, finished: &[(Instant, u32)]) -> Self {
        self.in_flight = in_flight;
        for &(at, units) in finished {
            self.record(at, units);
        }
        self
    }

    /// Units that could be admitted now (ignoring the burst cap), and units
    /// in flight.
    pub(crate) fn occupancy(&mut self, now: Instant) -> (u32, u32) {
        self.prune(now);
        let used = u64::from(self.in_flight) + self.finished_units;
        let available = u64::from(self.limit).saturating_sub(used);
        (u32::try_from(available).unwrap_or(u32::MAX), self.in_flight)
    }

    /// Estimates how long until `cost` units could be admitted behind
    /// `ahead` units already waiting: the honest `retry_after` of a refusal.
    pub(crate) fn estimate_wait(&mut self, now: Instant, ahead: u64, cost: u32) -> Duration {
        self.prune(now);
        let needed = ahead + u64::from(cost);
        let used = u64::from(self.in_flight) + self.finished_units;
        let free = u64::from(self.limit).saturating_sub(used);
        let paused = self.paused_until.filter(|&until| until > now);
        if needed <= free && paused.is_none() {
            return Duration::ZERO;
        }
        // Slots free up as entries leave the window: finished entries at
        // their instant plus W, requests in flight one window from now.
        let beyond = needed.saturating_sub(free).max(1) - 1;
        let cycle = beyond / u64::from(self.limit);
        let index = beyond % u64::from(self.limit);
        let expiry = if index < self.finished_units {
            self.expiry_of(index)
        } else {
            now + self.window
        };
        let at = expiry + self.window * u32::try_from(cycle).unwrap_or(u32::MAX);
        at.max(paused.unwrap_or(now)).saturating_duration_since(now)
    }

    /// Stops all admissions until `until`, then resumes at an even pace (one
    /// unit per W/N) rather than with a burst: the log is rewritten as if the
    /// window before `until` had been fully and evenly used.
    pub(crate) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_some_and(|paused| paused >= until) {
            return;
        }
        self.paused_until = Some(until);
        if let Some(burst) = &mut self.burst {
            burst.tokens = 0.0;
            burst.updated = until;
        }
        self.finished.clear();
        self.finished_units = 0;
        let step = self.window / self.limit;
        let start = until.checked_sub(self.window).unwrap_or(until);
        for i in 0..self.limit {
            let at = self.tick((start + step * (i + 1)).min(until));
            self.record(at, 1);
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(oldest, units)) = self.finished.front() {
            if oldest + self.window > now {
                break;
            }
            self.finished.pop_front();
            self.finished_units -= u64::from(units);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u32, ms: u64) -> SlidingWindow {
        let rate = Rate {
            limit,
            window: Duration::from_millis(ms),
        };
        SlidingWindow::new(rate, Duration::ZERO)
    }

    /// Admits `n` single requests, each finishing `latency` after it starts,
    /// as early as the window allows; returns when each started.
    fn run(
        window: &mut SlidingWindow,
        start: Instant,
        n: usize,
        latency: Duration,
    ) -> Vec<Instant> {
        let mut now = start;
        let mut pending: VecDeque<Instant> = VecDeque::new();
        let mut starts = Vec::new();
        while starts.len() < n {
            match window.available_at(now, 1) {
                Some(at) if at <= now => {
                    window.start(1);
                    pending.push_back(now + latency);
                    starts.push(now);
                }
                Some(at) => {
                    let done = pending.front().copied().unwrap_or(at);
                    now = at.min(done);
                }
                None => now = *pending.front().unwrap(),
            }
            while pending.front().is_some_and(|&done| done <= now) {
                let done = pending.pop_front().unwrap();
                window.finish(done, 1);
            }
        }
        starts
    }

    #[test]
    fn never_more_than_n_in_any_interval() {
        let start = Instant::now();
        let mut window = window(10, 1000);
        let starts = run(&mut window, start, 95, Duration::from_millis(30));
        for (i, &t) in starts.iter().enumerate() {
            let finish = t + Duration::from_millis(30);
            // Arrivals lie anywhere between start and finish: the next grant
            // N places later must start at least W after this one finished.
            if let Some(&later) = starts.get(i + 10) {
                assert!(later >= finish + Duration::from_millis(1000), "grant {i}");
            }
        }
        assert_eq!(starts[9], start, "the first N go at once");
        assert_eq!(starts[10], start + Duration::from_millis(1030));
    }

    #[test]
    fn requests_in_flight_count_until_they_finish() {
        let start = Instant::now();
        let mut window = window(2, 1000);
        window.start(2);
        assert_eq!(window.available_at(start, 1), None);
        window.finish(start + Duration::from_millis(500), 1);
        assert_eq!(
            window.available_at(start + Duration::from_millis(500), 1),
            Some(start + Duration::from_millis(1500))
        );
    }

    #[test]
    fn costs_take_several_slots() {
        let start = Instant::now();
        let mut window = window(10, 1000);
        window.start(7);
        window.finish(start, 7);
        assert_eq!(
            window.available_at(start, 4),
            Some(start + Duration::from_millis(1000))
        );
        assert_eq!(window.available_at(start, 3), Some(start));
    }

    #[test]
    fn margin_widens_the_window() {
        let start = Instant::now();
        let rate = Rate {
            limit: 1,
            window: Duration::from_secs(1),
        };
        let mut window = SlidingWindow::new(rate, Duration::from_millis(20));
        window.start(1);
        window.finish(start, 1);
        assert_eq!(
            window.available_at(start, 1),
            Some(start + Duration::from_millis(1020))
        );
    }

    #[test]
    fn pause_resumes_at_an_even_pace() {
        let start = Instant::now();
        let mut window = window(10, 1000);
        let until = start + Duration::from_secs(2);
        window.pause_until(until);
        let starts = run(&mut window, start, 10, Duration::ZERO);
        assert!(starts[0] >= until, "nothing before the pause ends");
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(100), "no burst");
        }
    }

    #[test]
    fn a_burst_limit_spreads_a_full_window() {
        let start = Instant::now();
        let rate = Rate {
            limit: 10,
            window: Duration::from_secs(1),
        };
        let mut window = SlidingWindow::new(rate, Duration::ZERO).with_burst(2);
        assert_eq!(window.max_cost(), 2);
        let starts = run(&mut window, start, 6, Duration::ZERO);
        // Two at once, then one per 100 ms (the window's rate).
        assert_eq!(starts[1], starts[0]);
        let gaps: Vec<Duration> = starts.windows(2).skip(1).map(|p| p[1] - p[0]).collect();
        assert!(
            gaps.iter()
                .all(|gap| gap.abs_diff(Duration::from_millis(100)) < Duration::from_millis(1)),
            "{gaps:?}"
        );
    }

    #[test]
    fn estimates_count_the_queue_ahead() {
        let start = Instant::now();
        let mut window = window(10, 1000);
        assert_eq!(window.estimate_wait(start, 0, 1), Duration::ZERO);
        window.start(10);
        window.finish(start, 10);
        assert_eq!(window.estimate_wait(start, 0, 1), Duration::from_secs(1));
        // 25 units ahead: two more full windows before ours.
        assert_eq!(window.estimate_wait(start, 25, 1), Duration::from_secs(3));
    }
}
