//! `RecentIds`: a bounded memory of the message ids of accepted deliveries,
//! so a replayed (or redelivered) message has no second effect.
//!
//! An id needs remembering only while a delivery carrying it could still pass
//! the timestamp check: a signed timestamp lies within [`TOLERANCE`] of the
//! first receipt, and a replay is refused once it is more than [`TOLERANCE`]
//! away from the clock, so twice the tolerance suffices. The memory also holds
//! at most `capacity` ids; past that the oldest are forgotten first.

use std::collections::{HashSet, VecDeque};

use tokio::time::{Duration, Instant};

use super::signature::TOLERANCE;

/// How long an accepted id is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(2 * TOLERANCE.as_secs());

/// The ids of recently accepted deliveries, oldest first. Runs on tokio's
/// clock, so tests prove the forgetting in paused time.
#[derive(Debug)]
pub struct RecentIds {
    /// Most ids held.
    capacity: usize,
    /// When each id was accepted, oldest first.
    order: VecDeque<(Instant, String)>,
    /// The same ids, for lookups.
    ids: HashSet<String>,
}

impl RecentIds {
    /// An empty memory of at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    /// Whether `id` was accepted within the last [`REMEMBER_FOR`].
    pub fn contains(&mut self, id: &str) -> bool {
        self.forget_old(Instant::now());
        self.ids.contains(id)
    }

    /// Remembers `id`; false if it was already remembered (a replay).
    pub fn remember(&mut self, id: &str) -> bool {
        let now = Instant::now();
        self.forget_old(now);
        if self.ids.contains(id) {
            return false;
        }
        while self.order.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.order.push_back((now, id.to_owned()));
        self.ids.insert(id.to_owned());
        true
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((accepted, _)) = self.order.front() {
            if now.duration_since(*accepted) < REMEMBER_FOR {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remembers_for_twice_the_tolerance_then_forgets() {
        let mut recent = RecentIds::new(10);
        assert!(recent.remember("msg_1"));
        assert!(!recent.remember("msg_1"), "a replay is refused");
        tokio::time::advance(REMEMBER_FOR - Duration::from_secs(1)).await;
        assert!(recent.contains("msg_1"));
        assert!(recent.remember("msg_2"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !recent.contains("msg_1"),
            "forgotten after {REMEMBER_FOR:?}"
        );
        assert!(recent.contains("msg_2"));
        assert_eq!(recent.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_at_most_its_capacity_forgetting_the_oldest() {
        let mut recent = RecentIds::new(3);
        for id in ["a", "b", "c", "d", "e"] {
            assert!(recent.remember(id));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(recent.len(), 3);
        assert!(!recent.contains("a") && !recent.contains("b"));
        assert!(recent.contains("c") && recent.contains("e"));
    }
}
