//! `Users`: the lookups behind `UserService`, over the Clerk client.
//!
//! A lookup by id goes: cache (`cache`) → one flight per id (`flight`) →
//! batcher (`batcher`, ≤100 ids per `GET /users?user_id=…`, a short window)
//! → `ClerkClient` (admission, retries) → back into the cache. N concurrent
//! misses for one id cost one upstream request; misses for many ids cost one
//! request per 100. When Clerk cannot answer in time, an entry that expired
//! less than `max_stale` ago is served, marked stale. Webhooks and the admin
//! RPC update or drop entries, and stop flights in the air from caching
//! answers that may predate them.

mod batcher;
mod cache;
mod config;
mod fetch;
mod flight;
mod shared;

use std::sync::Arc;

use futures_util::future::try_join_all;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::{
    admission::{Budget, Demand},
    clerk::{
        ClerkClient, ClerkUser, Forward, ListQuery, MAX_FILTER_VALUES, UpstreamError, UserFilter,
    },
    telemetry,
    webhook::UserEvent,
};

use batcher::Batcher;
pub use cache::{Cached, UserCache};
pub use config::{DEFAULT_HTTP_PORT, LookupConfig};
use fetch::fetch;
use flight::{Flight, Flights};
pub use shared::{Claim, SharedEntry, SharedUsers};

/// Most ids one `BatchGetUsers` call may name.
pub const MAX_BATCH_IDS: usize = 500;

/// Where an answer came from; sent to callers as the `x-cache` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh cache entry: no upstream request.
    Hit,
    /// Asked Clerk (possibly sharing a request with other callers).
    Miss,
    /// Clerk could not answer in time; an expired entry was served.
    Stale,
}

impl CacheStatus {
    /// The header value: `hit`, `miss` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }

    /// The status of an answer made of two: stale wins over miss over hit.
    fn and(self, other: Self) -> Self {
        use CacheStatus::{Hit, Miss, Stale};
        match (self, other) {
            (Stale, _) | (_, Stale) => Stale,
            (Miss, _) | (_, Miss) => Miss,
            (Hit, Hit) => Hit,
        }
    }
}

/// The answer about one id.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// The user, or `None`: Clerk has no user with this id.
    pub user: Option<ClerkUser>,
    /// Where the answer came from.
    pub cache: CacheStatus,
}

/// The users found by a batch lookup and the ids that were not.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Found users, in the order of the requested ids.
    pub found: Vec<ClerkUser>,
    /// Requested ids Clerk does not know, in request order.
    pub missing: Vec<String>,
    /// `Stale` if any answer was stale, else `Miss` if any was fetched.
    pub cache: CacheStatus,
}

/// User lookups. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Users {
    shared: Arc<Shared>,
    /// Misses on their way to Clerk.
    batcher: Batcher<Arc<Flight>>,
}

/// What lookups report to operators; `metrics` implements it.
pub trait LookupEvents: Send + Sync + std::fmt::Debug {
    /// A miss joined a flight already in the air (no request of its own).
    fn coalesced(&self);
    /// One list request for `ids` ids is on its way.
    fn batch_sent(&self, ids: usize);
    /// An entry left the cache to keep it within its bounds.
    fn evicted(&self);
    /// An export started (`true`) or ended (`false`).
    fn export(&self, started: bool);
}

/// Reports nothing.
#[derive(Debug)]
pub struct NoLookupEvents;

impl LookupEvents for NoLookupEvents {
    fn coalesced(&self) {}
    fn batch_sent(&self, _: usize) {}
    fn evicted(&self) {}
    fn export(&self, _: bool) {}
}

/// What the lookup tasks share with the facade.
#[derive(Debug)]
struct Shared {
    clerk: Arc<ClerkClient>,
    cache: UserCache,
    flights: Flights,
    events: Arc<dyn LookupEvents>,
    /// Users shared with the other replicas, if any.
    remote: Option<Arc<dyn SharedUsers>>,
}

impl Users {
    /// Lookups through `clerk`, cached and batched as `config` says. Starts
    /// the batching task, so it must run inside a tokio runtime.
    pub fn new(clerk: Arc<ClerkClient>, config: &LookupConfig) -> Self {
        Self::observed(clerk, config, Arc::new(NoLookupEvents))
    }

    /// As [`Users::new`], reporting to `events`.
    pub fn observed(
        clerk: Arc<ClerkClient>,
        config: &LookupConfig,
        events: Arc<dyn LookupEvents>,
    ) -> Self {
        Self::with_remote(clerk, config, events, None)
    }

    /// As [`Users::observed`], sharing users with other replicas through
    /// `remote`.
    pub fn with_remote(
        clerk: Arc<ClerkClient>,
        config: &LookupConfig,
        events: Arc<dyn LookupEvents>,
        remote: Option<Arc<dyn SharedUsers>>,
    ) -> Self {
        let shared = Arc::new(Shared {
            clerk,
            cache: UserCache::observed(config, events.clone()),
            flights: Flights::default(),
            events,
            remote,
        });
        let batches = shared.clone();
        let batcher = Batcher::spawn(config.batch_window, MAX_FILTER_VALUES, move |batch| {
            let span =
                telemetry::batch_span(batch.iter().map(|flight: &Arc<Flight>| &**flight.id()));
            tokio::spawn(fetch(batches.clone(), batch).instrument(span));
        });
        Self { shared, batcher }
    }

    /// Where lookups and exports report to operators.
    pub fn events(&self) -> &dyn LookupEvents {
        &*self.shared.events
    }

    /// The cache (for its bounds, in tests and benchmarks).
    pub fn cache(&self) -> &UserCache {
        &self.shared.cache
    }

    /// Ids on their way to Clerk now (one flight each); 0 when idle.
    pub fn flights_in_air(&self) -> usize {
        self.shared.flights.len()
    }

    /// One user, from the cache or from Clerk.
    pub async fn get(&self, id: &str, demand: &Demand) -> Result<Lookup, UpstreamError> {
        let retained = self.shared.cache.get(id).await;
        if let Some(entry) = &retained
            && entry.is_fresh(Instant::now())
        {
            return Ok(hit(entry));
        }
        let flight = self.fly(id, demand);
        let lookup = self.settle(&flight, demand.deadline, retained).await;
        telemetry::link_current([flight.answered_by()]);
        lookup
    }

    /// Many users by id (distinct, validated ids): hits from the cache, the
    /// misses through the same flights and batches as `get`.
    pub async fn batch_get(&self, ids: &[String], demand: &Demand) -> Result<Batch, UpstreamError> {
        let now = Instant::now();
        let mut answers = Vec::with_capacity(ids.len());
        let mut misses = Vec::new();
        for (index, id) in ids.iter().enumerate() {
            match self.shared.cache.get(id).await {
                Some(entry) if entry.is_fresh(now) => answers.push(Some(hit(&entry))),
                retained => {
                    answers.push(None);
                    misses.push((index, self.fly(id, demand), retained));
                }
            }
        }
        let settled =
            try_join_all(misses.iter().map(|(_, flight, retained)| {
                self.settle(flight, demand.deadline, retained.clone())
            }))
            .await?;
        telemetry::link_current(misses.iter().map(|(_, flight, _)| flight.answered_by()));
        for ((index, ..), lookup) in misses.iter().zip(settled) {
            answers[*index] = Some(lookup);
        }
        let mut batch = Batch {
            found: Vec::new(),
            missing: Vec::new(),
            cache: CacheStatus::Hit,
        };
        for (id, lookup) in ids.iter().zip(answers.into_iter().flatten()) {
            batch.cache = batch.cache.and(lookup.cache);
            match lookup.user {
                Some(user) => batch.found.push(user),
                None => batch.missing.push(id.clone()),
            }
        }
        Ok(batch)
    }

    /// Applies a verified webhook event: a user sent in full is stored
    /// unless a later version or the user's deletion is held (webhooks come
    /// late and out of order), a deleted one is cached as "no such user"
    /// since the deletion. With other replicas, the shared entry decides
    /// first: a version it refuses is not stored here either.
    pub async fn apply(&self, event: &UserEvent) {
        let cache = &self.shared.cache;
        let (id, entry) = match event {
            UserEvent::Upserted(user) => {
                self.shared.flights.forbid_store(user.id());
                if let Some(remote) = &self.shared.remote
                    && remote
                        .put_newer(user.id(), SharedEntry::user(user, cache.ttl(true)))
                        .await
                        == Some(false)
                {
                    // What this replica holds may be older than what the
                    // shared store holds: drop it, the next lookup reads that.
                    cache.drop_unless_newer(user).await;
                    return;
                }
                cache.store_newer(user).await;
                (user.id(), None)
            }
            UserEvent::Deleted { id, at } => {
                self.shared.flights.forbid_store(id);
                cache.store_missing(id, *at).await;
                (
                    id.as_str(),
                    Some(SharedEntry::missing(*at, cache.deletion_ttl())),
                )
            }
            UserEvent::Ignored(_) => return,
        };
        if let Some(remote) = &self.shared.remote {
            if let Some(entry) = entry {
                remote.put_newer(id, entry).await;
            }
            remote.invalidate(id, false).await;
        }
    }

    /// Drops what the cache knows about `id` here, in the shared store and
    /// on every other replica; true if this replica's cache held an entry.
    pub async fn invalidate(&self, id: &str) -> bool {
        let held = self.forget(id).await;
        if let Some(remote) = &self.shared.remote {
            remote.invalidate(id, true).await;
        }
        held
    }

    /// Drops what this replica's cache knows about `id` (another replica
    /// said it changed); true if it held an entry.
    pub async fn forget(&self, id: &str) -> bool {
        self.shared.flights.forbid_store(id);
        self.shared.cache.invalidate(id).await
    }

    /// Merges `metadata` (a JSON object of `public_metadata`,
    /// `private_metadata`, `unsafe_metadata`) into user `id` through Clerk's
    /// `PATCH /users/{id}/metadata`, under the per-user budget `keyed` as
    /// well as the upstream one; the answer replaces the cached user here and
    /// on every replica. Sent once: a write is not retried.
    pub async fn update_metadata(
        &self,
        id: &str,
        metadata: bytes::Bytes,
        keyed: Option<&Budget>,
        demand: &Demand,
    ) -> Result<ClerkUser, UpstreamError> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let request = Forward {
            method: http::Method::PATCH,
            path_and_query: format!("users/{id}/metadata"),
            headers,
            body: metadata,
            route: "/v1/users/{id}/metadata".to_owned(),
        };
        let answer = self.shared.clerk.forward(&request, keyed, demand).await?;
        match answer.status.as_u16() {
            200..=299 => {
                let user = ClerkUser::parse_one(&answer.body)
                    .filter(|user| user.id() == id)
                    .ok_or_else(|| {
                        UpstreamError::Unavailable("Clerk answered the write with no user".into())
                    })?;
                self.apply(&UserEvent::Upserted(user.clone())).await;
                Ok(user)
            }
            404 => Err(UpstreamError::NotFound("user")),
            400 | 422 => Err(UpstreamError::Rejected {
                code: answer.error_code(),
            }),
            429 => Err(UpstreamError::RateLimited {
                retry_after: answer.retry_after(),
            }),
            status => Err(UpstreamError::Unavailable(format!(
                "Clerk answered the write with HTTP {status}"
            ))),
        }
    }

    /// One page of a list (not cached).
    pub async fn list(
        &self,
        query: &ListQuery,
        demand: &Demand,
    ) -> Result<Vec<ClerkUser>, UpstreamError> {
        self.shared.clerk.list_users(query, demand).await
    }

    /// How many users match `filter` (not cached).
    pub async fn count(&self, filter: &UserFilter, demand: &Demand) -> Result<u64, UpstreamError> {
        self.shared.clerk.count_users(filter, demand).await
    }

    /// Joins the flight for `id`, or starts one and hands it to the batcher.
    fn fly(&self, id: &str, demand: &Demand) -> Arc<Flight> {
        let (flight, started) = self.shared.flights.join_or_start(id, demand);
        if !started {
            self.shared.events.coalesced();
        }
        if started && let Err(flight) = self.batcher.submit(flight.clone()) {
            let stopped = UpstreamError::Unavailable("lookups are shutting down".into());
            self.shared.flights.land(&flight, Err(stopped));
        }
        flight
    }

    /// Waits for `flight` until `deadline`. If Clerk could not answer in
    /// time, an entry that expired less than `max_stale` ago is served. With
    /// such an entry in hand, the flight is awaited only half the time left:
    /// a stale answer sent at the very deadline would reach a busy caller
    /// after it gave up (the flight goes on and lands in the cache).
    async fn settle(
        &self,
        flight: &Flight,
        deadline: Instant,
        retained: Option<Cached>,
    ) -> Result<Lookup, UpstreamError> {
        let now = Instant::now();
        let wait_until = match &retained {
            Some(entry) if self.shared.cache.is_servable_stale(entry, now) => {
                now + deadline.saturating_duration_since(now) / 2
            }
            _ => deadline,
        };
        let waiting = telemetry::flight_span(flight.id());
        let mut outcome = flight.wait(wait_until).instrument(waiting.clone()).await;
        if outcome.is_none() && self.fallback(flight.id(), retained.clone()).await.is_none() {
            // The entry ran out meanwhile: wait for Clerk after all.
            outcome = flight.wait(deadline).instrument(waiting.clone()).await;
        }
        flight.answered_by().link(&waiting);
        let error = match outcome {
            Some(Ok(user)) => {
                return Ok(Lookup {
                    user,
                    cache: CacheStatus::Miss,
                });
            }
            Some(Err(error)) if !serves_stale(&error) => return Err(error),
            Some(Err(error)) => error,
            None => UpstreamError::DeadlineExceeded,
        };
        self.fallback(flight.id(), retained).await.ok_or(error)
    }

    /// The answer when Clerk's is not there: the entry for `id` (or
    /// `retained`), if fresh or servable as stale now.
    async fn fallback(&self, id: &str, retained: Option<Cached>) -> Option<Lookup> {
        let now = Instant::now();
        // A webhook may have written the entry while the flight was out.
        let latest = self.shared.cache.get(id).await.or(retained);
        match latest {
            Some(entry) if entry.is_fresh(now) => Some(hit(&entry)),
            Some(entry) if self.shared.cache.is_servable_stale(&entry, now) => Some(Lookup {
                user: entry.user,
                cache: CacheStatus::Stale,
            }),
            _ => None,
        }
    }
}

fn hit(entry: &Cached) -> Lookup {
    Lookup {
        user: entry.user.clone(),
        cache: CacheStatus::Hit,
    }
}

/// Whether a stale entry beats this error: yes whenever Clerk could not give
/// an answer (failure, rate limit, budget, deadline, or the broker's key being
/// refused), no when the request itself was wrong.
fn serves_stale(error: &UpstreamError) -> bool {
    error.is_transient() || matches!(error, UpstreamError::KeyRejected { .. })
}
