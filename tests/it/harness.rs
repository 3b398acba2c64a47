//! Starts a real broker on `127.0.0.1:0` in front of a fake Clerk, and hands
//! out generated clients, exactly as a caller would use them.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    sync::mpsc,
    time::Duration,
};

use clerk_broker::{
    admission::Rate,
    callers::Policy,
    clerk::ClerkConfig,
    config::{Config, GrpcLimits, HttpLimits, LookupConfig},
    fake::{FakeClerk, FakeClerkConfig, seed},
    pb::{quota_service_client::QuotaServiceClient, user_service_client::UserServiceClient},
    secret::SecretKey,
    server::{self, Listeners, ServeError},
    tls::TlsFiles,
    webhook::WebhookSecret,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The key the fake accepts and the broker holds.
pub(crate) const KEY: &str = "sk_test_integration_key_0123456789";

/// The webhook signing secret of test brokers.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNpZ25pbmctc2VjcmV0";

/// Lookup settings of test brokers: the defaults with webhooks on, and a
/// 20 ms batch window (calls reach a debug build slowly on a loaded machine).
pub(crate) fn test_lookup() -> LookupConfig {
    LookupConfig {
        batch_window: Duration::from_millis(20),
        webhook_secret: Some(WebhookSecret::parse(WEBHOOK_SECRET).unwrap()),
        ..LookupConfig::default()
    }
}

/// What a test needs of its broker.
pub(crate) struct Options {
    /// Synthetic users in the fake.
    pub(crate) users: usize,
    /// The broker's upstream budget.
    pub(crate) rate: Rate,
    /// Most upstream requests at once (default: a tenth of the limit).
    pub(crate) burst: Option<u32>,
    /// Extra window length the broker counts.
    pub(crate) margin: Duration,
    /// The fake's own rate limit (None: unlimited).
    pub(crate) fake_limit: Option<Rate>,
    /// Grace period on shutdown.
    pub(crate) grace: Duration,
    /// The key the broker sends (the fake always accepts only `KEY`).
    pub(crate) broker_key: &'static str,
    /// Callers and extra budgets.
    pub(crate) policy: Policy,
    /// The file `policy` came from, watched for changes.
    pub(crate) policy_path: Option<std::path::PathBuf>,
    /// Time served on, NOT_SERVING, after shutdown begins.
    pub(crate) drain_delay: Duration,
    /// Longest time a `ListUsers` stream stays open.
    pub(crate) max_stream_lifetime: Duration,
    /// Cache, batching and webhooks.
    pub(crate) lookup: LookupConfig,
    /// Longest single request to the fake (a loaded machine answers slowly).
    pub(crate) upstream_timeout: Duration,
    /// Limits of the HTTP listener.
    pub(crate) http: HttpLimits,
    /// Limits of the gRPC listeners.
    pub(crate) grpc: GrpcLimits,
    /// Whether metrics get their own listener (`--metrics-listen`).
    pub(crate) metrics_listener: bool,
    /// TLS on both listeners (None: plain TCP).
    pub(crate) tls: Option<TlsFiles>,
    /// Shared state in Redis (None: in memory). Tests of the `shared::`
    /// modules (the admission suites run again) get the process's Redis.
    pub(crate) redis: Option<String>,
    /// Key prefix in Redis: replicas of one test share it.
    pub(crate) redis_prefix: String,
    /// Replicas configured (None: counted in Redis).
    pub(crate) replicas: Option<u32>,
    /// Longest Redis call.
    pub(crate) redis_timeout: Duration,
}

/// Whether this test runs in the `shared::` copy of a suite (its thread is
/// named after the test).
fn in_shared_suite() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("shared::"))
}

impl Default for Options {
    fn default() -> Self {
        Self {
            users: 1_000,
            rate: Rate {
                limit: 1_000,
                window: Duration::from_secs(1),
            },
            margin: Duration::from_millis(20),
            burst: None,
            fake_limit: None,
            grace: Duration::from_secs(5),
            broker_key: KEY,
            policy: Policy::anonymous(),
            policy_path: None,
            drain_delay: Duration::ZERO,
            max_stream_lifetime: clerk_broker::grpc::DEFAULT_MAX_STREAM_LIFETIME,
            lookup: test_lookup(),
            upstream_timeout: Duration::from_secs(2),
            http: HttpLimits::default(),
            grpc: GrpcLimits::default(),
            metrics_listener: false,
            tls: None,
            redis: in_shared_suite().then(crate::redis::shared_url),
            redis_prefix: format!("test-{:08x}", fastrand::u32(..)),
            replicas: None,
            // A debug build on a loaded 2-core machine: generous.
            redis_timeout: Duration::from_millis(500),
        }
    }
}

/// A running broker and its fake Clerk.
pub(crate) struct Harness {
    /// The fake Clerk, for counting requests and injecting faults.
    pub(crate) fake: FakeClerk,
    /// The fake's base URL.
    pub(crate) fake_url: String,
    /// Where the broker listens.
    pub(crate) addr: SocketAddr,
    /// Where the broker's HTTP listener (webhooks) listens.
    pub(crate) http_addr: SocketAddr,
    /// The Clerk-compatible front.
    pub(crate) front_addr: SocketAddr,
    /// Where the plaintext health-only listener listens.
    pub(crate) health_addr: SocketAddr,
    /// Where the metrics-only listener listens, if the broker has one.
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Ids of the seeded users, in seed order.
    pub(crate) ids: Vec<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), ServeError>>,
}

impl Harness {
    /// Starts a fake Clerk and a broker in front of it.
    pub(crate) async fn start(options: Options) -> Self {
        let users = seed::synthetic_users(options.users, 7);
        let ids = users
            .iter()
            .map(|user| user["id"].as_str().unwrap().to_owned())
            .collect();
        let mut fake_config = FakeClerkConfig::new(KEY);
        fake_config.rate_limit = options.fake_limit.map(|rate| (rate.limit, rate.window));
        let fake = FakeClerk::new(fake_config, users);
        let url = fake.spawn().await.unwrap();
        Self::broker(fake, url, ids, options).await
    }

    /// Another broker (a replica) in front of the same fake Clerk.
    pub(crate) async fn replica(&self, options: Options) -> Self {
        Self::broker(
            self.fake.clone(),
            self.fake_url.clone(),
            self.ids.clone(),
            options,
        )
        .await
    }

    async fn broker(fake: FakeClerk, url: String, ids: Vec<String>, options: Options) -> Self {
        let redis = options.redis.map(|url| clerk_broker::store::RedisConfig {
            url,
            timeout: options.redis_timeout,
            replicas: options.replicas,
            prefix: options.redis_prefix.clone(),
        });
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            clerk: ClerkConfig {
                base_url: url.parse().unwrap(),
                secret_key: SecretKey::parse(options.broker_key).unwrap(),
                request_timeout: options.upstream_timeout,
                max_attempts: 4,
            },
            upstream_rate: options.rate,
            upstream_burst: options
                .burst
                .unwrap_or_else(|| clerk_broker::admission::default_burst(options.rate)),
            upstream_margin: options.margin,
            shutdown_grace: options.grace,
            policy: Arc::new(options.policy),
            policy_path: options.policy_path,
            drain_delay: options.drain_delay,
            max_stream_lifetime: options.max_stream_lifetime,
            lookup: options.lookup,
            http: options.http,
            grpc: options.grpc,
            tls: options.tls,
            health_listen: None,
            redis,
            front: clerk_broker::config::FrontConfig::with_listen("127.0.0.1:0".parse().unwrap()),
        };
        let listeners = Listeners {
            grpc: TcpListener::bind(config.listen).await.unwrap(),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: match options.metrics_listener {
                true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
                false => None,
            },
            health: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            front: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let front_addr = listeners.front.as_ref().unwrap().local_addr().unwrap();
        let metrics_addr = listeners
            .metrics
            .as_ref()
            .map(|listener| listener.local_addr().unwrap());
        let health_addr = listeners.health.as_ref().unwrap().local_addr().unwrap();
        let addr = listeners.grpc.local_addr().unwrap();
        let http_addr = listeners.http.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(server::run(listeners, config, async {
            let _ = rx.await;
        }));
        Self {
            fake,
            fake_url: url,
            addr,
            http_addr,
            front_addr,
            health_addr,
            metrics_addr,
            ids,
            shutdown: Some(tx),
            server,
        }
    }

    /// The fake Clerk's base URL (ending in `/v1`), to ask it directly.
    pub(crate) fn fake_url(&self) -> &str {
        &self.fake_url
    }

    /// A fresh connection to the broker.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A `UserService` client on a fresh connection.
    pub(crate) async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel().await)
    }

    /// A `QuotaService` client on a fresh connection.
    pub(crate) async fn quota(&self) -> QuotaServiceClient<Channel> {
        QuotaServiceClient::new(self.channel().await)
    }

    /// The health status of `service` ("" for overall).
    pub(crate) async fn health(&self, service: &str) -> i32 {
        let mut client = HealthClient::new(self.channel().await);
        client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    }

    /// Starts a graceful shutdown without waiting for it.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down gracefully and returns how `run` ended.
    pub(crate) async fn stop(mut self) -> Result<(), ServeError> {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(30), &mut self.server)
            .await
            .expect("the broker stops within its grace period")
            .unwrap()
    }
}

/// A request with a deadline, as a caller would send it.
pub(crate) fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The broker binary in demo mode on a free port, and its address.
pub(crate) fn demo_process() -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clerk-broker"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--clerk-api-listen",
            "127.0.0.1:0",
        ])
        .args(["--users", "3000"])
        .env("CLERK_BROKER_UPSTREAM_RATE", "1000/1s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let address = banner
        .split_whitespace()
        .skip_while(|word| *word != "on")
        .nth(1)
        .unwrap()
        .to_owned();
    (child, address, rx)
}
