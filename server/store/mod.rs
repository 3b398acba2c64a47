//! Shared state in Redis, for several replicas: budgets (leases, see
//! `admission::lease` and `lease.lua`), users fetched once for all replicas,
//! and invalidations fanned out by pub/sub.
//!
//! Every call is bounded by a short timeout (`--redis-timeout`): a stalled
//! Redis makes budgets degrade and lookups go to Clerk, never stalls calls.

mod users;

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{Client, aio::ConnectionManager};

use crate::admission::{LeaseReply, LeaseRequest, LeaseSettings, LeaseStore, StoreError};

pub use users::RedisUsers;

/// How to reach Redis. Its `Debug` hides the URL (it may hold a password).
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS) URL.
    pub url: String,
    /// Longest any Redis call may take.
    pub timeout: Duration,
    /// Replicas configured (`None`: counted through heartbeats in Redis).
    pub replicas: Option<u32>,
    /// Prefix of every key and channel.
    pub prefix: String,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("replicas", &self.replicas)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The default `--redis-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// A connection to Redis shared by budgets and lookups.
pub struct RedisStore {
    client: Client,
    connection: ConnectionManager,
    prefix: String,
    /// This process's id among the replicas (random per start).
    replica: String,
    timeout: Duration,
    settings: LeaseSettings,
    script: redis::Script,
    round_trips: AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("replica", &self.replica)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `config` (connecting lazily: Redis may be down at start);
    /// permits may be held `max_hold` at most (the upstream timeout).
    pub fn new(config: &RedisConfig, max_hold: Duration) -> Result<Arc<Self>, String> {
        // rediss:// uses rustls, with the same provider as the Clerk client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            Client::open(config.url.as_str()).map_err(|error| format!("--redis-url: {error}"))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(10))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|error| format!("--redis-url: {error}"))?;
        Ok(Arc::new(Self {
            client,
            connection,
            prefix: config.prefix.clone(),
            replica: format!("{:016x}", fastrand::u64(..)),
            timeout: config.timeout,
            settings: LeaseSettings {
                max_hold,
                replicas: config.replicas,
                timeout: config.timeout,
            },
            script: redis::Script::new(include_str!("lease.lua")),
            round_trips: AtomicU64::new(0),
        }))
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Redis round trips made for budgets so far.
    pub fn lease_round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Runs `call` on the shared connection within the timeout.
    async fn run<T, F>(&self, call: impl FnOnce(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, call(self.connection.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError(format!("redis: {error}"))),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// A dedicated pub/sub connection (for invalidations).
    async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }
}

#[tonic::async_trait]
impl LeaseStore for RedisStore {
    async fn lease(&self, budget: &str, request: &LeaseRequest) -> Result<LeaseReply, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let keys = [
            self.key(&["budget", budget, "groups"]),
            self.key(&["budget", budget, "meta"]),
            self.key(&["replicas"]),
            self.key(&["budget", budget, "passes"]),
            self.key(&["budget", budget, "active"]),
            self.key(&["budget", budget, "counts"]),
            self.key(&["budget", budget, "log"]),
        ];
        let mut invocation = self.script.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(&self.replica)
            .arg(request.limit)
            .arg(request.window_ms)
            .arg(request.lease_ms)
            .arg(request.want)
            .arg(request.burst)
            .arg(request.known_epoch.as_deref().unwrap_or(""))
            .arg(u8::from(request.uncertain))
            .arg(request.stale_ms)
            .arg(request.keep_ms)
            .arg(request.recovery_ms)
            .arg(request.replicas)
            .arg(request.first_seq)
            .arg(request.pause_ms)
            .arg(request.bulk_share)
            .arg(u8::from(request.leaving));
        invocation.arg(request.places.len());
        for place in &request.places {
            invocation.arg(&place.name).arg(place.count);
            match place.delta_ms {
                Some(delta) => invocation.arg(delta),
                None => invocation.arg(""),
            };
        }
        invocation.arg(request.lanes.len());
        for lane in &request.lanes {
            invocation
                .arg(&lane.lane)
                .arg(lane.class)
                .arg(lane.weight)
                .arg(lane.waiting)
                .arg(lane.used);
        }
        invocation.arg(request.retire.len());
        for lane in &request.retire {
            invocation.arg(lane);
        }
        let reply: (u32, String, i64, i64, i64, u32, i64) = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let (granted, epoch, free, oldest, retry, replicas, paused) = reply;
        let positive = |value: i64| u64::try_from(value.max(0)).unwrap_or(0);
        Ok(LeaseReply {
            granted,
            epoch,
            free: u32::try_from(free.max(0)).unwrap_or(u32::MAX),
            oldest_ms: (oldest >= 0).then(|| positive(oldest)),
            retry_ms: positive(retry),
            replicas,
            paused_ms: positive(paused),
        })
    }

    fn settings(&self) -> &LeaseSettings {
        &self.settings
    }
}
