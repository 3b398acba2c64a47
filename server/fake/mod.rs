//! A faithful in-process fake of the Clerk Backend API users endpoints.
//!
//! Tests, benchmarks and the demo mode point the broker at a [`FakeClerk`] instead of
//! `https://api.clerk.com/v1`. It serves `GET /v1/users`, `GET /v1/users/count` and
//! `GET /v1/users/{user_id}` with Clerk's shapes, error envelopes, bearer auth and a
//! Clerk-like rate limit (429 + `Retry-After`, then blocked), and it can inject faults
//! (latency, 5xx, hangs, broken connections, malformed JSON). It counts what it saw in
//! [`FakeStats`] so tests can prove how many upstream calls the broker really made.
//!
//! Code map: `server` owns the HTTP pipeline (auth → rate limit → faults → endpoint),
//! `store` the users and their indexes, `filter` the query-string grammar, `limit` the
//! sliding-log rate limiter and the fault dice, `seed` the synthetic users.

mod filter;
mod limit;
pub mod seed;
mod server;
mod store;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use limit::Limiter;
use store::Store;

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
}

impl FakeClerkConfig {
    /// An unlimited fake accepting only `secret_key`, blocking for 10 s if a limit is set later.
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self {
            secret_key: secret_key.into(),
            rate_limit: None,
            block_for: Duration::from_secs(10),
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
    /// rate-limit window; 0 while unlimited. A broker that respects its budget keeps this at
    /// or below the limit.
    pub max_in_window: u64,
    /// The last `Clerk-API-Version` header seen.
    pub last_api_version: Option<String>,
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
    /// The rate limiter and the counters, updated together once per request.
    gate: Mutex<Gate>,
    /// The faults applied to the next requests.
    faults: Mutex<Faults>,
}

/// The per-request bookkeeping guarded by one lock.
struct Gate {
    /// The sliding-log limiter and the current block.
    limiter: Limiter,
    /// The counters reported by [`FakeClerk::stats`].
    stats: FakeStats,
}

impl FakeClerk {
    /// A fake holding `users` (Clerk User objects; those without a string `id` are skipped).
    pub fn new(config: FakeClerkConfig, users: Vec<Value>) -> Self {
        let gate = Gate {
            limiter: Limiter::new(config.rate_limit, config.block_for),
            stats: FakeStats::default(),
        };
        Self {
            inner: Arc::new(Inner {
                secret_key: config.secret_key,
                store: RwLock::new(Store::new(users)),
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
        self.read_store().get(id).cloned()
    }

    /// How many users are stored.
    pub fn user_count(&self) -> usize {
        self.read_store().len()
    }

    /// Changes the rate limit; the log of accepted requests and any current block are kept.
    pub fn set_rate_limit(&self, limit: Option<(u32, Duration)>) {
        self.gate().limiter.set_limit(limit);
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
}

/// Locks `mutex`, ignoring poisoning: every critical section leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
