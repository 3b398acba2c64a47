//! `SlidingWindow`: the exact "at most N in any interval of W" limiter.
//!
//! A token bucket whose burst equals N can send almost 2N requests within one
//! interval of length W (a full bucket, then its refill). This limiter instead
//! remembers the instant of each of the last N grants, so a new grant is placed
//! no earlier than W after the grant N places before it: no interval of length
//! W, aligned or not, ever holds more than N grants.
//!
//! Grants may be placed in the future (a reservation): the caller sleeps until
//! its instant. Reservations are appended in time order, so waiting callers are
//! served first come, first served.

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

use super::Rate;

/// The grant log of one budget.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    /// Grants allowed per window.
    limit: u32,
    /// The window, including the safety margin.
    window: Duration,
    /// Instants of the recent and reserved grants (one entry per unit of
    /// cost), ascending. Entries that left the window are pruned on record.
    log: VecDeque<Instant>,
    /// Bumped whenever the log is rewritten by a pause, so that sleeping
    /// reservations know their slot is gone.
    epoch: u64,
    /// The end of the latest pause, if any.
    paused_until: Option<Instant>,
}

impl SlidingWindow {
    /// A limiter for `rate`, counting each window `margin` longer than the
    /// rate says, to absorb jitter between sending here and arrival upstream.
    pub(crate) fn new(rate: Rate, margin: Duration) -> Self {
        Self {
            limit: rate.limit,
            window: rate.window + margin,
            log: VecDeque::with_capacity(rate.limit.min(4096) as usize),
            epoch: 0,
            paused_until: None,
        }
    }

    /// The current epoch; see [`SlidingWindow::pause_until`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The earliest instant, not before `now`, at which `cost` more grants fit.
    /// `cost` must be between 1 and the limit.
    pub(crate) fn earliest(&self, now: Instant, cost: u32) -> Instant {
        let mut at = now;
        if let Some(&last) = self.log.back() {
            at = at.max(last);
        }
        let room = (self.limit - cost) as usize;
        if self.log.len() > room {
            // The grant `room + 1` places from the end must leave the window.
            let blocking = self.log[self.log.len() - room - 1];
            at = at.max(blocking + self.window);
        }
        at
    }

    /// Records `cost` grants at `at` (from [`SlidingWindow::earliest`] at
    /// `now`), forgetting the grants that can no longer matter.
    pub(crate) fn record(&mut self, now: Instant, at: Instant, cost: u32) {
        while self
            .log
            .front()
            .is_some_and(|&oldest| oldest + self.window <= now)
        {
            self.log.pop_front();
        }
        for _ in 0..cost {
            self.log.push_back(at);
        }
    }

    /// Gives back `cost` grants recorded at `at` that were never used (the
    /// caller left before its instant). Grants reserved after it stay where
    /// they are, which is safe: they only become more conservative.
    pub(crate) fn release(&mut self, at: Instant, cost: u32, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        let mut left = cost;
        self.log.retain(|&t| {
            if left > 0 && t == at {
                left -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Stops all grants until `until`, then resumes at an even pace (one
    /// grant per W/N) rather than with a burst: the log is rewritten as if the
    /// window before `until` had been fully and evenly used.
    pub(crate) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_some_and(|paused| paused >= until) {
            return;
        }
        self.paused_until = Some(until);
        self.epoch += 1;
        self.log.clear();
        let step = self.window / self.limit;
        let start = until.checked_sub(self.window).unwrap_or(until);
        for i in 0..self.limit {
            self.log.push_back((start + step * (i + 1)).min(until));
        }
    }

    /// How many grants are in the window ending at `now` (for tests and stats).
    #[cfg(test)]
    pub(crate) fn used(&self, now: Instant) -> usize {
        self.log
            .iter()
            .filter(|&&t| t <= now && t + self.window > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u32, ms: u64) -> Rate {
        Rate {
            limit,
            window: Duration::from_millis(ms),
        }
    }

    /// Grants `n` single requests as early as possible and returns their instants.
    fn grant_all(window: &mut SlidingWindow, now: Instant, n: usize) -> Vec<Instant> {
        (0..n)
            .map(|_| {
                let at = window.earliest(now, 1);
                window.record(now, at, 1);
                at
            })
            .collect()
    }

    #[test]
    fn never_more_than_n_in_any_interval() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(rate(10, 1000), Duration::ZERO);
        let grants = grant_all(&mut window, start, 95);
        for (i, &t) in grants.iter().enumerate() {
            let in_window = grants[i..]
                .iter()
                .take_while(|&&u| u < t + Duration::from_millis(1000))
                .count();
            assert!(in_window <= 10, "{in_window} grants within 1s of grant {i}");
        }
        // Full use: 10 at once, then 10 per second.
        assert_eq!(grants[9], start);
        assert_eq!(grants[10], start + Duration::from_millis(1000));
        assert_eq!(grants[94], start + Duration::from_millis(9000));
    }

    #[test]
    fn costs_take_several_slots() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(rate(10, 1000), Duration::ZERO);
        let first = window.earliest(start, 7);
        window.record(start, first, 7);
        assert_eq!(first, start);
        // 4 more do not fit until the 7 leave the window.
        assert_eq!(
            window.earliest(start, 4),
            start + Duration::from_millis(1000)
        );
        assert_eq!(window.earliest(start, 3), start);
    }

    #[test]
    fn released_reservations_free_their_slots() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(rate(2, 1000), Duration::ZERO);
        grant_all(&mut window, start, 2);
        let later = window.earliest(start, 1);
        window.record(start, later, 1);
        assert_eq!(later, start + Duration::from_millis(1000));
        window.release(later, 1, window.epoch());
        assert_eq!(window.used(later), 0);
        assert_eq!(window.earliest(start, 1), later);
    }

    #[test]
    fn margin_widens_the_window() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(rate(1, 1000), Duration::from_millis(20));
        grant_all(&mut window, start, 1);
        assert_eq!(
            window.earliest(start, 1),
            start + Duration::from_millis(1020)
        );
    }

    #[test]
    fn pause_resumes_at_an_even_pace() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(rate(10, 1000), Duration::ZERO);
        let until = start + Duration::from_secs(2);
        window.pause_until(until);
        let grants = grant_all(&mut window, start, 10);
        assert!(grants[0] >= until, "nothing before the pause ends");
        for pair in grants.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(100), "no burst");
        }
    }
}
