//! `CountCache`: `CountUsers` answers kept for a few seconds, so that a
//! dashboard polling a count, or many callers asking the same one, cost one
//! upstream request per filter and TTL rather than one per call.
//!
//! Keys are the normalized filter (values of one field in any order and
//! repeated values mean the same thing to Clerk, so they share an entry).
//! The cache is bounded: when full, expired entries go first, then the
//! oldest. Only successful answers are kept. Time is tokio's clock, so tests
//! prove expiry in paused time. Concurrent misses for one filter are not
//! coalesced: each makes its own request (counts are rare and cheap next to
//! exports).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use crate::clerk::{UpstreamError, UserFilter};

/// How long a count is served from the cache.
pub const COUNT_TTL: Duration = Duration::from_secs(5);
/// Most filters whose counts are kept at once.
pub const MAX_COUNTS: usize = 1024;

/// A normalized filter: its query parameters, sorted and without repeats.
type Key = Vec<(&'static str, String)>;

/// Recent user counts by filter.
#[derive(Debug)]
pub struct CountCache {
    /// How long an entry is served.
    ttl: Duration,
    /// Most entries kept.
    capacity: usize,
    /// Count and the instant it was fetched, by normalized filter.
    entries: Mutex<HashMap<Key, (Instant, u64)>>,
}

impl Default for CountCache {
    fn default() -> Self {
        Self::new(COUNT_TTL, MAX_COUNTS)
    }
}

impl CountCache {
    /// A cache serving counts for `ttl`, holding at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The count for `filter`: from the cache while fresh, else from `fetch`
    /// (whose success is then kept).
    pub async fn count<F>(&self, filter: &UserFilter, fetch: F) -> Result<u64, UpstreamError>
    where
        F: Future<Output = Result<u64, UpstreamError>>,
    {
        let key = key(filter);
        if let Some(count) = self.fresh(&key) {
            return Ok(count);
        }
        let count = fetch.await?;
        self.insert(key, count);
        Ok(count)
    }

    /// How many entries are held (fresh or not).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, key: &Key) -> Option<u64> {
        let entries = self.lock();
        let &(at, count) = entries.get(key)?;
        (at.elapsed() < self.ttl).then_some(count)
    }

    fn insert(&self, key: Key, count: u64) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if entries.len() >= self.capacity {
                let oldest = entries.iter().min_by_key(|(_, (at, _))| *at);
                if let Some(oldest) = oldest.map(|(key, _)| key.clone()) {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, (now, count));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, u64)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `filter` as sorted, distinct query parameters: equal for filters Clerk
/// treats alike.
fn key(filter: &UserFilter) -> Key {
    let mut params = Vec::new();
    filter.write_params(&mut params);
    params.sort_unstable();
    params.dedup();
    params
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::clerk::{ExactField, TimeField};

    fn ids(ids: &[&str]) -> UserFilter {
        UserFilter::ids(ids.iter().map(|id| (*id).to_owned()).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn serves_a_count_until_it_expires() {
        let cache = CountCache::new(Duration::from_secs(5), 8);
        let calls = AtomicU32::new(0);
        let calls = &calls;
        let fetch = |n| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(n)
        };
        assert_eq!(cache.count(&ids(&["a", "b"]), fetch(7)).await, Ok(7));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        // Same filter in another order, with a repeat: the same entry.
        assert_eq!(cache.count(&ids(&["b", "a", "a"]), fetch(8)).await, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.count(&ids(&["a", "b"]), fetch(9)).await, Ok(9));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Another filter is another entry.
        let mut banned = ids(&["a", "b"]);
        banned.banned = Some(true);
        assert_eq!(cache.count(&banned, fetch(1)).await, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_no_errors() {
        let cache = CountCache::default();
        let failed = cache
            .count(&UserFilter::default(), async {
                Err(UpstreamError::DeadlineExceeded)
            })
            .await;
        assert_eq!(failed, Err(UpstreamError::DeadlineExceeded));
        assert!(cache.is_empty());
        let count = cache.count(&UserFilter::default(), async { Ok(3) }).await;
        assert_eq!(count, Ok(3));
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded_dropping_expired_then_oldest_entries() {
        let cache = CountCache::new(Duration::from_secs(5), 3);
        let filter = |n: i64| UserFilter {
            times: vec![(TimeField::CreatedAfter, n)],
            ..UserFilter::default()
        };
        for n in 0..3 {
            cache
                .count(&filter(n), async move { Ok(n as u64) })
                .await
                .ok();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(cache.len(), 3);
        // Full: the oldest (0) goes.
        cache.count(&filter(3), async { Ok(3) }).await.ok();
        assert_eq!(cache.len(), 3);
        let refetched = cache.count(&filter(0), async { Ok(100) }).await;
        assert_eq!(refetched, Ok(100), "the oldest entry was evicted");
        // Later, every entry has expired: all go at once when room is needed.
        tokio::time::advance(Duration::from_secs(5)).await;
        let exact = UserFilter {
            exact: vec![(ExactField::Username, vec!["x".into()])],
            ..UserFilter::default()
        };
        cache.count(&exact, async { Ok(1) }).await.ok();
        assert_eq!(cache.len(), 1);
    }
}
