//! The fake's rate limiter (a sliding log of accepted requests plus Clerk's "blocked for
//! `Retry-After`" period) and the dice deciding which fault, if any, hits a request.
//!
//! The limiter takes the current instant as an argument so its arithmetic is tested exactly,
//! without sleeping.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::Faults;

/// Clerk's per-key budget as the fake enforces it.
pub(super) struct Limiter {
    /// At most `.0` accepted requests in any interval of length `.1`; `None` = unlimited.
    limit: Option<(u32, Duration)>,
    /// How long a request over the limit blocks the key.
    block_for: Duration,
    /// Arrival instants of the accepted requests still inside the window, oldest first.
    log: VecDeque<Instant>,
    /// Every request before this instant is refused.
    blocked_until: Option<Instant>,
}

/// The limiter's verdict on one request.
#[derive(Debug, PartialEq)]
pub(super) enum Admission {
    /// Served; `in_window` accepted requests (this one included) lie in the trailing window,
    /// or 0 while unlimited.
    Accepted {
        /// Accepted requests in the trailing window.
        in_window: u64,
    },
    /// Refused with 429 until the block ends.
    Blocked {
        /// Time left until the block ends.
        retry_after: Duration,
    },
}

impl Limiter {
    /// A limiter with no request seen and no block.
    pub(super) fn new(limit: Option<(u32, Duration)>, block_for: Duration) -> Self {
        Self {
            limit,
            block_for,
            log: VecDeque::new(),
            blocked_until: None,
        }
    }

    /// Decides on a request arriving at `now`, recording it if accepted and starting a block
    /// if it is the one over the limit.
    pub(super) fn admit(&mut self, now: Instant) -> Admission {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Admission::Blocked {
                    retry_after: until - now,
                };
            }
            self.blocked_until = None;
        }
        let Some((max, window)) = self.limit else {
            self.log.clear();
            return Admission::Accepted { in_window: 0 };
        };
        self.forget_before(now, window);
        if self.log.len() >= max as usize {
            self.blocked_until = Some(now + self.block_for);
            return Admission::Blocked {
                retry_after: self.block_for,
            };
        }
        self.log.push_back(now);
        Admission::Accepted {
            in_window: self.log.len() as u64,
        }
    }

    /// Blocks every request until `now + duration` (or longer if already blocked longer).
    pub(super) fn block(&mut self, now: Instant, duration: Duration) {
        let until = now + duration;
        self.blocked_until = Some(
            self.blocked_until
                .map_or(until, |current| current.max(until)),
        );
    }

    /// Replaces the limit, keeping the log and any block.
    pub(super) fn set_limit(&mut self, limit: Option<(u32, Duration)>) {
        self.limit = limit;
    }

    /// Whether the limiter holds nothing that matters at `now`: no block, no arrival left in
    /// the window. Such a limiter can be dropped and recreated without changing any verdict.
    pub(super) fn is_idle(&mut self, now: Instant) -> bool {
        if self.blocked_until.is_some_and(|until| now < until) {
            return false;
        }
        if let Some((_, window)) = self.limit {
            self.forget_before(now, window);
        }
        self.log.is_empty()
    }

    /// Drops arrivals that no longer share a window of length `window` with `now`.
    fn forget_before(&mut self, now: Instant, window: Duration) {
        while let Some(&oldest) = self.log.front() {
            if now.duration_since(oldest) >= window {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }
}

/// `Retry-After` as Clerk sends it: whole seconds, rounded up, at least 1.
pub(super) fn retry_after_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

/// The fault chosen for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Fault {
    /// Answer normally.
    None,
    /// Never answer.
    Timeout,
    /// Break the connection mid-body.
    Drop,
    /// Answer 500, 502 or 503 with an error envelope.
    ServerError,
    /// Answer 200 with truncated JSON.
    Malformed,
    /// Answer 403 with Clerk's error envelope.
    Forbidden,
}

impl Faults {
    /// Rolls one die against the cumulative rates, so each fault hits its own fraction.
    pub(super) fn roll(&self, die: f64) -> Fault {
        let mut threshold = 0.0;
        for (rate, fault) in [
            (self.timeout_rate, Fault::Timeout),
            (self.drop_rate, Fault::Drop),
            (self.server_error_rate, Fault::ServerError),
            (self.malformed_rate, Fault::Malformed),
            (self.forbidden_rate, Fault::Forbidden),
        ] {
            threshold += rate.max(0.0);
            if die < threshold {
                return fault;
            }
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_request_over_the_limit_starts_a_block() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(Some((3, ms(1000))), ms(2500));
        for i in 0..3 {
            assert_eq!(
                limiter.admit(t0 + ms(i * 100)),
                Admission::Accepted { in_window: i + 1 }
            );
        }
        assert_eq!(
            limiter.admit(t0 + ms(300)),
            Admission::Blocked {
                retry_after: ms(2500)
            }
        );
        // Blocked even though the window has room again; Retry-After counts down.
        assert_eq!(
            limiter.admit(t0 + ms(1800)),
            Admission::Blocked {
                retry_after: ms(1000)
            }
        );
        assert_eq!(
            limiter.admit(t0 + ms(2800)),
            Admission::Accepted { in_window: 1 }
        );
    }

    #[test]
    fn the_window_slides_rather_than_resetting() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(Some((2, ms(1000))), ms(10));
        assert!(matches!(limiter.admit(t0), Admission::Accepted { .. }));
        assert!(matches!(
            limiter.admit(t0 + ms(900)),
            Admission::Accepted { .. }
        ));
        // An aligned window would reset at t0+1000 and allow two more; a sliding one allows
        // one (t0 leaves the window) and refuses the next, which still sees t0+900.
        assert_eq!(
            limiter.admit(t0 + ms(1000)),
            Admission::Accepted { in_window: 2 }
        );
        assert!(matches!(
            limiter.admit(t0 + ms(1001)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn injected_blocks_apply_even_when_unlimited_and_never_shorten() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(None, ms(10));
        assert_eq!(limiter.admit(t0), Admission::Accepted { in_window: 0 });
        limiter.block(t0, ms(5000));
        limiter.block(t0, ms(1000));
        assert_eq!(
            limiter.admit(t0 + ms(4000)),
            Admission::Blocked {
                retry_after: ms(1000)
            }
        );
        assert_eq!(
            limiter.admit(t0 + ms(5000)),
            Admission::Accepted { in_window: 0 }
        );
    }

    #[test]
    fn a_limiter_is_idle_once_its_block_and_window_have_passed() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(Some((1, ms(1000))), ms(3000));
        assert!(limiter.is_idle(t0));
        assert!(matches!(limiter.admit(t0), Admission::Accepted { .. }));
        assert!(!limiter.is_idle(t0 + ms(999)));
        assert!(limiter.is_idle(t0 + ms(1000)));
        assert!(matches!(
            limiter.admit(t0 + ms(1000)),
            Admission::Accepted { .. }
        ));
        assert!(matches!(
            limiter.admit(t0 + ms(1001)),
            Admission::Blocked { .. }
        ));
        // The window is empty again at +2000, but the block lasts until +4001.
        assert!(!limiter.is_idle(t0 + ms(2500)));
        assert!(limiter.is_idle(t0 + ms(4001)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(ms(0)), 1);
        assert_eq!(retry_after_secs(ms(200)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(10)), 10);
    }

    #[test]
    fn fault_rates_partition_the_die() {
        let faults = Faults {
            timeout_rate: 0.1,
            drop_rate: 0.1,
            server_error_rate: 0.2,
            malformed_rate: 0.1,
            forbidden_rate: 0.1,
            ..Faults::default()
        };
        assert_eq!(faults.roll(0.05), Fault::Timeout);
        assert_eq!(faults.roll(0.15), Fault::Drop);
        assert_eq!(faults.roll(0.35), Fault::ServerError);
        assert_eq!(faults.roll(0.45), Fault::Malformed);
        assert_eq!(faults.roll(0.55), Fault::Forbidden);
        assert_eq!(faults.roll(0.65), Fault::None);
        assert_eq!(Faults::default().roll(0.0), Fault::None);
    }
}
