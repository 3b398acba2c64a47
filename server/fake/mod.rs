//! A faithful in-process fake of the Clerk Backend API endpoints the broker and its callers use.
//!
//! Tests, benchmarks and the demo mode point the broker at a [`FakeClerk`] instead of
//! `https://api.clerk.com/v1`. It serves, with Clerk's shapes (API version 2025-11-10), error
//! envelopes and bearer auth: the users reads (`GET /v1/users`, `/v1/users/count`,
//! `/v1/users/{user_id}`), the user writes (`PATCH /v1/users/{user_id}`, `PATCH`/`PUT
//! /v1/users/{user_id}/metadata`), organizations (`GET`/`PATCH /v1/organizations/{id}`, its
//! metadata, `GET …/memberships`), `POST /v1/invitations` and `GET /v1/jwks`. It enforces a
//! Clerk-like instance rate limit (429 + `Retry-After`, then blocked) and Clerk's per-endpoint
//! "system limits" ([`EndpointLimits`]), and it can inject faults (latency, 5xx, hangs, broken
//! connections, malformed JSON). It counts what it saw in [`FakeStats`] so tests can prove how
//! many upstream calls the broker really made.
//!
//! Code map: `server` owns the HTTP pipeline (auth → rate limits → faults → endpoint), `route`
//! the routing table, `store` the users and their indexes, `filter` the query-string grammar,
//! `body` the write bodies and metadata merge, `user_writes`, `orgs` and `invitations` the
//! write endpoints, `jwks` the key set, `limit` the sliding-log rate limiter and the fault
//! dice, `system_limits` the per-endpoint limits, `seed` the synthetic users.

mod body;
mod filter;
mod invitations;
mod jwks;
mod limit;
mod orgs;
mod route;
pub mod seed;
mod server;
mod store;
mod system_limits;
#[cfg(test)]
mod tests;
mod user_writes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use invitations::Invitations;
use limit::Limiter;
use orgs::Organizations;
use store::Store;
use system_limits::EndpointLimiter;
pub use system_limits::{EndpointLimits, LimitedEndpoint};

/// How a [`FakeClerk`] authenticates and rate-limits its callers.
#[derive(Clone, Debug)]
pub struct FakeClerkConfig {
    /// The only secret key accepted as `Authorization: Bearer <key>`.
    pub secret_key: String,
    /// Rate limit: at most `limit.0` accepted requests in ANY interval of length `limit.1`
    /// (a sliding log, not aligned windows). `None` = unlimited.
    pub rate_limit: Option<(u32, Duration)>,
    /// How long the fake stays blocked (every request answered 429) after a request exceeded
    /// the limit; sent as `Retry-After` in whole seconds, rounded up, at least 1.
    pub block_for: Duration,
    /// Clerk's per-endpoint limits, enforced besides `rate_limit`; Clerk's values by default.
    pub endpoint_limits: EndpointLimits,
}

impl FakeClerkConfig {
    /// An unlimited fake accepting only `secret_key`, blocking for 10 s if a limit is set later.
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self {
            secret_key: secret_key.into(),
            rate_limit: None,
            block_for: Duration::from_secs(10),
            endpoint_limits: EndpointLimits::clerk(),
        }
    }
}

/// A snapshot of what the fake has seen since it started or since [`FakeClerk::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FakeStats {
    /// Every request received, including rejected ones.
    pub requests: u64,
    /// Requests to `GET /v1/users`, whatever their outcome.
    pub list_requests: u64,
    /// Requests to `GET /v1/users/count`, whatever their outcome.
    pub count_requests: u64,
    /// Requests to `GET /v1/users/{user_id}`, whatever their outcome.
    pub get_requests: u64,
    /// `user_id` values named by list requests (and ids got one by one):
    /// with several brokers in front, how often ids were fetched.
    pub ids_requested: u64,
    /// 429 responses sent.
    pub rate_limited: u64,
    /// Injected 5xx responses sent.
    pub server_errors: u64,
    /// 401 responses sent.
    pub unauthorized: u64,
    /// The largest number of accepted (non-429) requests seen in any sliding interval of the
    /// rate-limit window (`GET /v1/jwks` is not counted, as Clerk does not); 0 while unlimited. A broker that respects its budget keeps this at
    /// or below the limit.
    pub max_in_window: u64,
    /// The last `Clerk-API-Version` header seen.
    pub last_api_version: Option<String>,
    /// Requests that carried a W3C trace context (`traceparent` or
    /// `tracestate`); Clerk must never be sent one.
    pub trace_context_requests: u64,
    /// Requests per route template (e.g. `"PATCH /v1/users/{user_id}/metadata"`), whatever
    /// their outcome; requests to no known route count under `"other"`.
    pub route_requests: BTreeMap<String, u64>,
    /// 429s sent because a per-endpoint limit was exceeded, per endpoint (also counted in
    /// `rate_limited`).
    pub endpoint_rate_limited: BTreeMap<LimitedEndpoint, u64>,
    /// Per endpoint, the largest number of accepted requests one key (user, organization, or
    /// the instance for invitations) had in any sliding window of that endpoint's limit; a
    /// broker that respects the limits keeps each at or below it. Absent while unlimited.
    pub endpoint_max_in_window: BTreeMap<LimitedEndpoint, u64>,
}

/// Faults injected into responses; the default injects none.
///
/// The rates are probabilities per request, rolled once per request in the order timeout,
/// drop, server error, malformed, forbidden; their sum should not exceed 1.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added to every response.
    pub latency: Duration,
    /// Fraction answered 500/502/503 with Clerk's error envelope.
    pub server_error_rate: f64,
    /// Fraction that never answer (until the server shuts down): the client times out.
    pub timeout_rate: f64,
    /// Fraction whose connection breaks mid-response: the client sees an I/O error.
    pub drop_rate: f64,
    /// Fraction answered 200 with truncated, invalid JSON.
    pub malformed_rate: f64,
    /// Fraction answered 403 `authorization_invalid`, as Clerk refuses a request the instance
    /// does not allow (the key itself is fine).
    pub forbidden_rate: f64,
}

/// A running-or-not fake Clerk: a cheap handle that tests keep to steer and inspect it.
#[derive(Clone)]
pub struct FakeClerk {
    /// Shared by every clone and by the serving tasks.
    inner: Arc<Inner>,
}

/// The fake's state; each part has its own lock so reads of users never wait on the limiter.
struct Inner {
    /// The bearer key accepted.
    secret_key: String,
    /// The users, indexed for filtering and sorting.
    store: RwLock<Store>,
    /// The organizations (derived from the users at start). Locked after `store` when both
    /// are needed.
    orgs: RwLock<Organizations>,
    /// The invitations created.
    invitations: Mutex<Invitations>,
    /// The rate limiter and the counters, updated together once per request.
    gate: Mutex<Gate>,
    /// The faults applied to the next requests.
    faults: Mutex<Faults>,
}

/// The per-request bookkeeping guarded by one lock.
struct Gate {
    /// The sliding-log limiter and the current block.
    limiter: Limiter,
    /// The per-endpoint limiters.
    endpoint_limiter: EndpointLimiter,
    /// The counters reported by [`FakeClerk::stats`].
    stats: FakeStats,
}

impl FakeClerk {
    /// A fake holding `users` (Clerk User objects; those without a string `id` are skipped)
    /// and the organizations their `public_metadata.organization_ids` name (see `orgs`).
    pub fn new(config: FakeClerkConfig, users: Vec<Value>) -> Self {
        let gate = Gate {
            limiter: Limiter::new(config.rate_limit, config.block_for),
            endpoint_limiter: EndpointLimiter::new(config.endpoint_limits),
            stats: FakeStats::default(),
        };
        let store = Store::new(users);
        let orgs = Organizations::derive(&store);
        Self {
            inner: Arc::new(Inner {
                secret_key: config.secret_key,
                store: RwLock::new(store),
                orgs: RwLock::new(orgs),
                invitations: Mutex::new(Invitations::default()),
                gate: Mutex::new(gate),
                faults: Mutex::new(Faults::default()),
            }),
        }
    }

    /// Serves on an already-bound listener until `shutdown` resolves; requests held by the
    /// timeout fault are released then, so shutdown does not hang.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self, listener, shutdown).await
    }

    /// Binds `127.0.0.1:0`, spawns [`FakeClerk::serve`] on the current runtime (it runs until
    /// the runtime stops) and returns the base URL, e.g. `http://127.0.0.1:41234/v1`.
    pub async fn spawn(&self) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let fake = self.clone();
        tokio::spawn(async move {
            if let Err(error) = fake.serve(listener, std::future::pending()).await {
                tracing::warn!(%error, "fake Clerk stopped serving");
            }
        });
        Ok(format!("http://{addr}/v1"))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FakeStats {
        self.gate().stats.clone()
    }

    /// Zeroes the counters (the rate limiter's log and block are kept).
    pub fn reset_stats(&self) {
        self.gate().stats = FakeStats::default();
    }

    /// Replaces the injected faults; takes effect for the next request.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    /// Blocks the fake now for `retry_after`, as if another process had spent the key's
    /// budget: every authenticated request is answered 429 until then.
    pub fn block_for(&self, retry_after: Duration) {
        self.gate()
            .limiter
            .block(tokio::time::Instant::now(), retry_after);
    }

    /// Inserts `user`, or replaces the stored user with the same `id`; a user without a
    /// string `id` is ignored.
    pub fn upsert_user(&self, user: Value) {
        if !self.write_store().upsert(user) {
            tracing::warn!("fake Clerk ignored a user without a string id");
        }
    }

    /// Removes the user `id`; false if there was none.
    pub fn delete_user(&self, id: &str) -> bool {
        self.write_store().delete(id)
    }

    /// The stored user `id`, as JSON.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.read_store().get(id).map(|user| Value::clone(user))
    }

    /// How many users are stored.
    pub fn user_count(&self) -> usize {
        self.read_store().len()
    }

    /// Changes the rate limit; the log of accepted requests and any current block are kept.
    pub fn set_rate_limit(&self, limit: Option<(u32, Duration)>) {
        self.gate().limiter.set_limit(limit);
    }

    /// Replaces the per-endpoint limits; what they counted so far, and their blocks, are
    /// forgotten.
    pub fn set_endpoint_limits(&self, limits: EndpointLimits) {
        self.gate().endpoint_limiter.set_limits(limits);
    }

    /// The organization whose id, else slug, is `id_or_slug`, as JSON.
    pub fn organization(&self, id_or_slug: &str) -> Option<Value> {
        self.read_orgs().find(id_or_slug).cloned()
    }

    /// Every organization, ordered by id.
    pub fn organizations(&self) -> Vec<Value> {
        self.read_orgs().all().cloned().collect()
    }

    /// Every invitation created, oldest first.
    pub fn invitations(&self) -> Vec<Value> {
        lock(&self.inner.invitations).all().to_vec()
    }

    /// The limiter and counters, locked.
    fn gate(&self) -> MutexGuard<'_, Gate> {
        lock(&self.inner.gate)
    }

    /// The users, for reading.
    fn read_store(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.inner
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The users, for writing.
    fn write_store(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.inner
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The organizations, for reading.
    fn read_orgs(&self) -> std::sync::RwLockReadGuard<'_, Organizations> {
        self.inner
            .orgs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The organizations, for writing.
    fn write_orgs(&self) -> std::sync::RwLockWriteGuard<'_, Organizations> {
        self.inner
            .orgs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
