//! `UserCache`: users by id, and "no such user", bounded by entry count and
//! by resident bytes.
//!
//! Each entry is fresh for a while (the TTL, or the shorter negative TTL for
//! "no such user") and then kept `max_stale` longer as a fallback for when
//! Clerk fails. Freshness is judged here on tokio's clock; `moka` only drops
//! entries once they are too old to serve even as stale, and evicts by size.
//!
//! Users are stored compact, as the exact JSON text Clerk sent, LZ4-packed
//! (`PackedText`: the fake's 1.8 KB users pack to 1.0 KB, where the parsed
//! `serde_json` tree takes 6–7 times the text), and unpacked and parsed
//! again on a hit that needs it (a hit whose answer the memo of encodings
//! holds needs neither). The text unpacked is what callers get as
//! `raw_json`.
//!
//! Webhooks arrive late and out of order, so every entry carries a time:
//! a user its `updated_at`, "no such user" when it was learnt (a deletion's
//! event timestamp, or the wall-clock moment a lookup's answer arrived). A
//! webhook's version of a user replaces an entry only if it is not older
//! (see [`Stored::outranks`]).
//!
//! Both bounds ride on moka's single weighted capacity: the capacity is the
//! byte bound, and every entry weighs at least `max_bytes / max_entries`, so
//! the cache can never hold more than `max_entries` entries nor more than
//! `max_bytes` (an entry weighs its text, its key and a fixed overhead).

use std::{sync::Arc, time::Duration};

use moka::{
    Expiry,
    future::Cache,
    ops::compute::{CompResult, Op},
};
use tokio::time::Instant;

use super::LookupConfig;
use crate::clerk::{ClerkUser, PackedText};

/// Bytes counted for every entry on top of its packed text and key: moka's
/// bookkeeping (hash table slot, deque and timer nodes), the `Arc`s, and the
/// allocator's rounding: calibrated so that entries weigh what
/// `bench-lookups` measures in resident memory (~1.8 KB for the fake's users
/// of 1.8 KB of JSON, packed to 1.0 KB).
const ENTRY_OVERHEAD: usize = 720;

/// A cached answer about one id, as served.
#[derive(Clone, Debug)]
pub struct Cached {
    /// The user, or `None`: Clerk has no user with this id.
    pub user: Option<ClerkUser>,
    /// Until when the entry is fresh.
    pub fresh_until: Instant,
}

impl Cached {
    /// Whether the entry may be served as current at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }
}

/// A cached answer as stored: compact.
#[derive(Clone, Debug)]
struct Stored {
    /// The id, shared with the entry's key (a hit hands it on uncopied).
    id: Arc<str>,
    /// The user's JSON text as Clerk sent it, packed, or `None`: no such
    /// user.
    json: Option<PackedText>,
    /// The entry's time, Unix ms: the user's `updated_at`, or when "no such
    /// user" was learnt. `None`: unknown (a user without `updated_at`, or an
    /// entry shared by an older version without it).
    as_of: Option<i64>,
    /// Until when the entry is fresh.
    fresh_until: Instant,
    /// How long it is fresh in all (what moka needs to time its removal).
    lifetime: Duration,
    /// Its weight in the cache: its size, at least the floor.
    weight: u32,
}

impl Stored {
    /// The entry as served (the user's text is unpacked only if it is read,
    /// and parsed only if a field is: it was a user's text when it was
    /// stored).
    fn load(&self) -> Option<Cached> {
        let user = self
            .json
            .as_ref()
            .map(|text| ClerkUser::packed(self.id.clone(), text.clone()));
        Some(Cached {
            user,
            fresh_until: self.fresh_until,
        })
    }

    /// Whether this entry wins over a webhook's version of the user updated
    /// at `updated_at`: it is a later version of the user, or "no such user"
    /// learnt at or after that time (a deletion wins a tie: an update stamped
    /// with the very millisecond of the deletion was made before it). A
    /// version without `updated_at` cannot show it is newer than a deletion;
    /// against an unknown time, the webhook's version wins.
    fn outranks(&self, updated_at: Option<i64>) -> bool {
        match (&self.json, self.as_of, updated_at) {
            (None, Some(gone), new) => new.is_none_or(|new| new <= gone),
            (Some(_), Some(cached), Some(new)) => cached > new,
            _ => false,
        }
    }
}

/// The bounded user cache. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct UserCache {
    /// Keyed by a seeded `foldhash` (its quality variant) rather than std's
    /// SipHash: a batch of 100 hits spent ~30,000 instructions hashing ids
    /// with SipHash, ~9,000 with foldhash.
    entries: Cache<Arc<str>, Stored, foldhash::quality::RandomState>,
    ttl: Duration,
    negative_ttl: Duration,
    max_stale: Duration,
    /// The least weight of an entry, which bounds the entry count.
    weight_floor: u32,
}

/// Tells moka to drop an entry once it is too old to serve even as stale.
struct KeepUntilStale {
    max_stale: Duration,
}

impl Expiry<Arc<str>, Stored> for KeepUntilStale {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        value: &Stored,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.lifetime.saturating_add(self.max_stale))
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        value: &Stored,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.lifetime.saturating_add(self.max_stale))
    }
}

impl UserCache {
    /// A cache with the bounds and lifetimes of `config`.
    pub fn new(config: &LookupConfig) -> Self {
        Self::observed(config, Arc::new(super::NoLookupEvents))
    }

    /// As [`UserCache::new`], telling `events` of evictions for size.
    pub fn observed(config: &LookupConfig, events: Arc<dyn super::LookupEvents>) -> Self {
        let max_entries = config.cache_max_entries.max(1);
        let max_bytes = config.cache_max_bytes.max(max_entries);
        let weight_floor = u32::try_from(max_bytes / max_entries).unwrap_or(u32::MAX);
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Arc<str>, value: &Stored| value.weight)
            .expire_after(KeepUntilStale {
                max_stale: config.max_stale,
            })
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    events.evicted();
                }
            })
            .build_with_hasher(foldhash::quality::RandomState::default());
        Self {
            entries,
            ttl: config.cache_ttl,
            negative_ttl: config.negative_ttl,
            max_stale: config.max_stale,
            weight_floor,
        }
    }

    /// Entries held now, and their weight (bytes, or the per-entry floor).
    pub fn size(&self) -> (u64, u64) {
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// The entry for `id`, fresh or not (it may still serve as stale).
    pub async fn get(&self, id: &str) -> Option<Cached> {
        self.entries.get(id).await?.load()
    }

    /// Whether `entry` may still be served as stale at `now`: it expired
    /// less than `max_stale` ago.
    pub fn is_servable_stale(&self, entry: &Cached, now: Instant) -> bool {
        now < entry.fresh_until + self.max_stale
    }

    /// How long an answer about a user (`found`) or "no such user" is fresh.
    pub fn ttl(&self, found: bool) -> Duration {
        if found { self.ttl } else { self.negative_ttl }
    }

    /// How long a user's deletion is fresh: the TTL of a user.
    pub fn deletion_ttl(&self) -> Duration {
        self.ttl
    }

    /// A new entry for what Clerk said about `id` (`None`: no such user,
    /// learnt at `missing_since`, Unix ms).
    fn entry(&self, id: &Arc<str>, user: Option<&ClerkUser>, missing_since: Option<i64>) -> Stored {
        self.entry_for(id, user, missing_since, self.ttl(user.is_some()))
    }

    /// A new entry fresh for `lifetime`.
    fn entry_for(
        &self,
        id: &Arc<str>,
        user: Option<&ClerkUser>,
        missing_since: Option<i64>,
        lifetime: Duration,
    ) -> Stored {
        let json = user.map(ClerkUser::pack);
        let size = entry_size(id, json.as_ref());
        Stored {
            id: id.clone(),
            weight: u32::try_from(size)
                .unwrap_or(u32::MAX)
                .max(self.weight_floor),
            as_of: match user {
                Some(user) => user.millis("updated_at"),
                None => missing_since,
            },
            json,
            fresh_until: Instant::now() + lifetime,
            lifetime,
        }
    }

    /// Stores what a lookup answered at `answered_at` (Unix ms, the wall
    /// clock) found, unless `allowed` (checked under the key's lock) says an
    /// invalidation overtook the lookup. "No such user" dates from
    /// `answered_at`.
    pub async fn store_unless(
        &self,
        id: Arc<str>,
        user: Option<&ClerkUser>,
        answered_at: i64,
        allowed: impl FnOnce() -> bool,
    ) {
        let entry = self.entry(&id, user, Some(answered_at));
        self.entries
            .entry(id)
            .and_compute_with(|_| async move { if allowed() { Op::Put(entry) } else { Op::Nop } })
            .await;
    }

    /// Stores what another replica found (fresh for `lifetime`, what is left
    /// of its TTL; "no such user" learnt at `missing_since`), unless
    /// `allowed` says an invalidation overtook it.
    pub async fn store_shared(
        &self,
        id: Arc<str>,
        user: Option<&ClerkUser>,
        missing_since: Option<i64>,
        lifetime: Duration,
        allowed: impl FnOnce() -> bool,
    ) {
        let lifetime = lifetime.min(self.ttl(user.is_some()));
        let entry = self.entry_for(&id, user, missing_since, lifetime);
        self.entries
            .entry(id)
            .and_compute_with(|_| async move { if allowed() { Op::Put(entry) } else { Op::Nop } })
            .await;
    }

    /// Stores a user sent by a webhook, unless the cache holds a version
    /// updated later or the user's deletion (webhooks can arrive late and out
    /// of order).
    pub async fn store_newer(&self, user: &ClerkUser) {
        let id = user.shared_id();
        let entry = self.entry(&id, Some(user), None);
        let updated_at = entry.as_of;
        self.entries
            .entry(id)
            .and_compute_with(|current| async move {
                match current {
                    Some(current) if current.value().outranks(updated_at) => Op::Nop,
                    _ => Op::Put(entry),
                }
            })
            .await;
    }

    /// Drops the entry for `user`'s id unless it wins over `user` as
    /// [`UserCache::store_newer`] judges: the shared store refused this
    /// version, and the next lookup reads what the shared store holds.
    pub async fn drop_unless_newer(&self, user: &ClerkUser) {
        let updated_at = user.millis("updated_at");
        self.entries
            .entry(user.id().into())
            .and_compute_with(|current| async move {
                match current {
                    Some(current) if !current.value().outranks(updated_at) => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }

    /// Records that `id` names no user since `at` (Unix ms): it was deleted.
    /// Fresh for the full TTL, not the negative one (which allows for a user
    /// created after a lookup): Clerk never gives a deleted id to a new user,
    /// and the longer the deletion is held, the later an update can come and
    /// still be recognized as older.
    pub async fn store_missing(&self, id: &str, at: i64) {
        let id: Arc<str> = id.into();
        let entry = self.entry_for(&id, None, Some(at), self.deletion_ttl());
        self.entries
            .entry(id)
            .and_compute_with(|_| async move { Op::Put(entry) })
            .await;
    }

    /// Drops the entry for `id`; true if there was one.
    pub async fn invalidate(&self, id: &str) -> bool {
        let result = self
            .entries
            .entry(id.into())
            .and_compute_with(|_| async { Op::Remove })
            .await;
        matches!(result, CompResult::Removed(_))
    }

    /// Entries held (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Total weight held, in bytes (approximate likewise).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Runs moka's pending maintenance (evictions, expirations) now.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

/// Resident bytes of an entry: its text, its key (held twice: by the table
/// and by the eviction order) and a fixed overhead.
fn entry_size(id: &str, json: Option<&PackedText>) -> usize {
    ENTRY_OVERHEAD + 2 * id.len() + json.map_or(0, PackedText::len)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fake::seed;

    fn config(max_entries: u64, max_bytes: u64) -> LookupConfig {
        LookupConfig {
            cache_max_entries: max_entries,
            cache_max_bytes: max_bytes,
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_stale: Duration::from_secs(30),
            ..LookupConfig::default()
        }
    }

    fn users(count: usize) -> Vec<ClerkUser> {
        seed::synthetic_users(count, 11)
            .into_iter()
            .filter_map(ClerkUser::from_json)
            .collect()
    }

    /// What one user weighs in a cache without a floor.
    fn cache_weight(user: &ClerkUser) -> usize {
        let cache = UserCache::new(&config(1, 1));
        cache.entry(&user.shared_id(), Some(user), None).weight as usize
    }

    async fn fill(cache: &UserCache, users: &[ClerkUser]) {
        for user in users {
            cache
                .store_unless(user.id().into(), Some(user), 0, || true)
                .await;
        }
        cache.run_pending_tasks().await;
    }

    #[tokio::test]
    async fn stays_within_its_entry_bound() {
        let cache = UserCache::new(&config(100, 1 << 30));
        fill(&cache, &users(2_000)).await;
        assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
        assert!(
            cache.entry_count() >= 50,
            "it still caches: {}",
            cache.entry_count()
        );
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound() {
        let users = users(2_000);
        let typical = cache_weight(&users[0]);
        assert!((1_000..4_000).contains(&typical), "{typical}");
        let max_bytes = 100 * typical as u64;
        let cache = UserCache::new(&config(10_000, max_bytes));
        fill(&cache, &users).await;
        assert!(
            cache.weighted_size() <= max_bytes,
            "{}",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 150, "{}", cache.entry_count());
        assert!(
            cache.entry_count() >= 30,
            "it still caches: {}",
            cache.entry_count()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entries_go_stale_then_unservable() {
        let cache = UserCache::new(&config(10, 1 << 20));
        let user = users(1).remove(0);
        cache
            .store_unless(user.id().into(), Some(&user), 0, || true)
            .await;
        cache
            .store_unless("user_gone".into(), None, 0, || true)
            .await;
        cache.store_missing("user_deleted", 0).await;
        let found = cache.get(user.id()).await.unwrap();
        let missing = cache.get("user_gone").await.unwrap();
        let deleted = cache.get("user_deleted").await.unwrap();
        assert!(found.is_fresh(Instant::now()) && missing.user.is_none());
        tokio::time::advance(Duration::from_secs(6)).await;
        let now = Instant::now();
        assert!(found.is_fresh(now), "the TTL is 60 s");
        assert!(!missing.is_fresh(now), "the negative TTL is 5 s");
        assert!(deleted.is_fresh(now), "a deletion is fresh for the TTL");
        assert!(cache.is_servable_stale(&missing, now));
        tokio::time::advance(Duration::from_secs(60 + 30 - 6)).await;
        let now = Instant::now();
        assert!(!found.is_fresh(now) && !cache.is_servable_stale(&found, now));
    }

    #[tokio::test]
    async fn webhooks_never_replace_a_newer_version_and_vetoes_hold() {
        let cache = UserCache::new(&config(10, 1 << 20));
        let version = |name: &str, updated_at: i64| {
            ClerkUser::from_json(
                json!({"id": "user_1", "first_name": name, "updated_at": updated_at}),
            )
            .unwrap()
        };
        cache.store_newer(&version("new", 200)).await;
        cache.store_newer(&version("old", 100)).await;
        let name = |cached: Option<Cached>| {
            cached.and_then(|c| c.user?.str("first_name").map(str::to_owned))
        };
        assert_eq!(name(cache.get("user_1").await).as_deref(), Some("new"));
        cache
            .store_unless("user_1".into(), Some(&version("vetoed", 300)), 0, || false)
            .await;
        assert_eq!(name(cache.get("user_1").await).as_deref(), Some("new"));
        assert!(cache.invalidate("user_1").await);
        assert!(!cache.invalidate("user_1").await);
        assert!(cache.get("user_1").await.is_none());
    }

    /// A late update must not bring back a deleted user: the deletion's time
    /// wins over updates stamped at or before it; a later one is applied.
    #[tokio::test]
    async fn a_deletion_outranks_older_updates() {
        let cache = UserCache::new(&config(10, 1 << 20));
        let version = |name: &str, updated_at: i64| {
            ClerkUser::from_json(
                json!({"id": "user_1", "first_name": name, "updated_at": updated_at}),
            )
            .unwrap()
        };
        let name = |cached: Option<Cached>| {
            cached.map(|c| c.user.and_then(|u| u.str("first_name").map(str::to_owned)))
        };
        cache.store_newer(&version("before", 100)).await;
        cache.store_missing("user_1", 200).await;
        for late in [version("late", 150), version("tie", 200)] {
            cache.store_newer(&late).await;
            assert_eq!(name(cache.get("user_1").await), Some(None), "still deleted");
            cache.drop_unless_newer(&late).await;
            assert_eq!(name(cache.get("user_1").await), Some(None), "kept");
        }
        let undated = ClerkUser::from_json(json!({"id": "user_1"})).unwrap();
        cache.store_newer(&undated).await;
        assert_eq!(name(cache.get("user_1").await), Some(None));
        cache.store_newer(&version("after", 201)).await;
        assert_eq!(name(cache.get("user_1").await), Some(Some("after".into())));
        // "No such user" from a lookup dates from its answer.
        cache
            .store_unless("user_1".into(), None, 300, || true)
            .await;
        cache.store_newer(&version("older", 299)).await;
        assert_eq!(name(cache.get("user_1").await), Some(None));
        // The shared store refused a version: drop what does not beat it.
        cache.store_newer(&version("newest", 400)).await;
        cache.drop_unless_newer(&version("refused", 350)).await;
        assert!(cache.get("user_1").await.is_some(), "400 beats 350");
        cache.drop_unless_newer(&version("refused", 450)).await;
        assert!(cache.get("user_1").await.is_none());
    }
}
