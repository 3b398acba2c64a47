//! Assembles the broker and serves it: gRPC services, standard health,
//! reflection (v1 and v1alpha), the HTTP listener (webhooks), and graceful
//! shutdown. `listener` bounds what gRPC clients can hold (connections,
//! handshakes, idle connections, silent peers, streams).
//!
//! [`run`] takes already-bound listeners and any shutdown future: the
//! binary passes SIGTERM/SIGINT, tests pass listeners on `127.0.0.1:0`.

mod broker;
mod listener;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, time::Instant};
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};

pub use broker::Broker;
use listener::StreamsLayer;

use crate::{
    admission::{Admission, Demand},
    callers::{PolicyStore, Scope},
    clerk::{ClerkClient, KeyState},
    config::{Config, HttpLimits},
    front::{self, Front},
    grpc::{
        AdminApi, Authenticate, DEFAULT_ENCODED_BYTES, EncodedUsers, QuotaApi, UserApi,
        wire::{
            admin_service_server::AdminServiceServer, quota_service_server::QuotaServiceServer,
            user_service_server::UserServiceServer,
        },
    },
    http,
    metrics::GrpcMetricsLayer,
    pb, reload,
    tls::{self, Acceptor, TlsError, TlsStore},
};

/// Largest request message the broker's services decode (larger ones get
/// OUT_OF_RANGE from tonic, naming both sizes). The largest valid request, a
/// filter with every list full, or its resume token, is well under it.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Largest header block (metadata) of a call a connection accepts.
pub const MAX_HEADER_BYTES: u32 = 16 << 10;

/// Health service name that stays SERVING as long as the process runs: point
/// liveness probes here. The overall status ("") and the per-service statuses
/// are for readiness.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Names whose health follows readiness.
const READINESS_SERVICES: [&str; 4] = [
    "",
    "clerk_broker.v1.QuotaService",
    "clerk_broker.v1.UserService",
    "clerk_broker.v1.AdminService",
];

/// The caller name of the broker's own upstream requests (the key probe).
const BROKER_CALLER: &str = "clerk-broker";

/// How often the key is re-checked while Clerk rejects it.
const KEY_PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// Why the broker could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP client for Clerk could not be built.
    #[error("cannot build the Clerk client: {0}")]
    Client(#[from] reqwest::Error),
    /// Reflection could not load the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS files changed into an invalid set since start-up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Redis store could not be set up.
    #[error("cannot use Redis: {0}")]
    Redis(String),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// The broker's already-bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP: Clerk webhooks at `POST /webhooks/clerk` (and `GET /metrics`
    /// unless `metrics` is set).
    pub http: TcpListener,
    /// HTTP serving only `GET /metrics`, if wanted: the webhook listener
    /// then serves webhooks only.
    pub metrics: Option<TcpListener>,
    /// Plaintext gRPC serving only the health service (for probes that
    /// cannot speak TLS), if wanted.
    pub health: Option<TcpListener>,
    /// The Clerk-compatible Backend API front, if served.
    pub front: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Listen { address, source })
        };
        Ok(Self {
            grpc: bind(config.listen).await?,
            http: bind(config.lookup.http_listen).await?,
            metrics: match config.lookup.metrics_listen {
                Some(address) => Some(bind(address).await?),
                None => None,
            },
            health: match config.health_listen {
                Some(address) => Some(bind(address).await?),
                None => None,
            },
            front: Some(bind(config.front.listen).await?),
        })
    }
}

/// Serves the broker on `listeners` until `shutdown` resolves, then drains:
/// health turns NOT_SERVING (and the broker serves on for
/// `config.drain_delay`, while load balancers notice), then new connections
/// are refused, exports end with a resumable status, and in-flight calls get
/// `config.shutdown_grace` to finish.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Listeners {
        grpc: listener,
        http: http_listener,
        metrics: metrics_listener,
        health: health_listener,
        front: front_listener,
    } = listeners;
    let broker = Broker::new(&config)?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(TlsStore::load(files.clone())?)),
        None => None,
    };
    let acceptor = |listener| match &tls {
        Some(store) => Acceptor::Tls(store.clone(), listener),
        None => Acceptor::Plain,
    };
    let (http_stop, http_stopped) = watch::channel(false);
    let stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|&stop| stop).await;
    };
    let webhook_routes = match metrics_listener {
        Some(_) => http::Routes::Webhooks,
        None => http::Routes::All,
    };
    let http = tokio::spawn(serve_http(
        http_listener,
        acceptor(tls::Listener::Http),
        &broker,
        config.http,
        webhook_routes,
        stopped(http_stopped.clone()),
    ));
    let metrics_http = metrics_listener.map(|listener| {
        tokio::spawn(serve_http(
            listener,
            acceptor(tls::Listener::Http),
            &broker,
            config.http,
            http::Routes::Metrics,
            stopped(http_stopped.clone()),
        ))
    });
    // Stops the HTTP listeners however `run` returns.
    let _http_guard = AbortOnDrop(
        std::iter::once(&http)
            .chain(&metrics_http)
            .map(|task| task.abort_handle())
            .collect(),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    // The health-only listener answers until `run` returns, so probes see
    // readiness turn NOT_SERVING through the whole drain.
    let _health_guard = health_listener.map(|listener| {
        let address = listener.local_addr().ok();
        tracing::info!(?address, "plaintext health-only gRPC listener for probes");
        let server = listener::configure(Server::builder(), &config.grpc)
            // Probes hold no stream: idle connections are counted, and cut.
            .layer(StreamsLayer)
            .add_service(health_service.clone())
            .serve_with_incoming(listener::incoming(listener, Acceptor::Plain, &config.grpc));
        let task = tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the health-only listener failed");
            }
        });
        AbortOnDrop(vec![task.abort_handle()])
    });
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    set_readiness(&health, ServingStatus::Serving).await;
    let (draining_tx, draining) = watch::channel(false);
    if config.policy.is_anonymous() {
        tracing::warn!(
            "no policy file (--config): every call is the anonymous caller, unauthenticated"
        );
    } else {
        let callers: Vec<_> = config
            .policy
            .callers()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        tracing::info!(?callers, "callers authenticate with bearer tokens");
    }
    if let Some(store) = &tls {
        tracing::info!(
            mutual = store.is_mutual(),
            "TLS on both listeners; certificate files are watched for changes"
        );
    }
    let policy = Arc::new(PolicyStore::new(config.policy.clone()));
    let authenticate = Authenticate::new(policy.clone());
    let (front_stop, front_stopped) = tokio::sync::oneshot::channel::<()>();
    // Users as answered, remembered for the users served most: encodings
    // for `UserService`, texts for the front, within one bound.
    let encoded = Arc::new(EncodedUsers::new(
        (config.lookup.cache_max_bytes / 4).min(DEFAULT_ENCODED_BYTES),
    ));
    let front = front_listener.map(|listener| {
        let front = Arc::new(Front::new(
            front::Parts {
                policy: policy.clone(),
                admission: broker.admission.clone(),
                clerk: broker.clerk.clone(),
                users: broker.users.clone(),
                counts: broker.counts.clone(),
                metrics: broker.metrics.clone(),
                slots: authenticate.slots(),
                encoded: encoded.clone(),
            },
            config.front.default_timeout,
        ));
        tokio::spawn(serve_front(
            listener,
            acceptor(tls::Listener::Http),
            front,
            &config,
            async {
                let _ = front_stopped.await;
            },
        ))
    });
    // Stops the front however `run` returns.
    let _front_guard = AbortOnDrop(front.iter().map(|task| task.abort_handle()).collect());
    let keys_expiry = tokio::spawn(expire_idle_keys(broker.admission.clone()));
    let reloader = config.policy_path.clone().map(|path| {
        tokio::spawn(reload::watch(
            path,
            policy,
            broker.admission.clone(),
            config.upstream_spec(),
            broker.reloads.clone(),
        ))
    });
    let tls_watch = tls.clone().map(|store| tokio::spawn(tls::watch(store)));
    // Invalidations received by other replicas reach this one's cache.
    let follower = broker.redis_users.as_ref().map(|shared| {
        tracing::info!(
            replica = broker.redis.as_ref().map_or("", |store| store.replica()),
            "budgets and the user cache are shared through Redis"
        );
        let warm = shared.clone();
        tokio::spawn(async move { warm.warm_up().await });
        let users = Arc::downgrade(&broker.users);
        shared.follow(move |id| {
            if let Some(users) = users.upgrade() {
                tokio::spawn(async move { users.forget(&id).await });
            }
        })
    });
    let key_watch = tokio::spawn(follow_key_state(
        broker.clerk.clone(),
        health.clone(),
        draining.clone(),
    ));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Keepalive pings close silent peers; streams per connection are capped.
    let server = listener::configure(Server::builder(), &config.grpc)
        // Outermost: a call holds its connection open (no idle timeout)
        // until its answer ends, and the services get the connection's Peer.
        .layer(StreamsLayer)
        // Every call is counted, whatever the services answer.
        .layer(GrpcMetricsLayer::new(broker.metrics.clone()))
        .http2_max_header_list_size(Some(MAX_HEADER_BYTES))
        .add_service(health_service)
        // Both reflection versions: grpcurl 1.8 speaks only v1alpha.
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        // The broker's own services need a caller; health and reflection do not.
        .add_service(
            authenticate.gate(
                Scope::AcquirePermits,
                QuotaServiceServer::new(QuotaApi::new(broker.admission.clone()))
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            ),
        )
        .add_service(
            authenticate.gate(
                Scope::ReadUsers,
                UserServiceServer::new(
                    UserApi::new(
                        broker.users.clone(),
                        broker.counts.clone(),
                        broker.admission.clone(),
                        broker.tokens.clone(),
                        draining.clone(),
                    )
                    .with_max_stream_lifetime(config.max_stream_lifetime)
                    .with_encoded(encoded),
                )
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            ),
        )
        .add_service(
            authenticate.gate(
                Scope::Admin,
                AdminServiceServer::new(AdminApi::new(broker.users.clone()))
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            ),
        )
        .serve_with_incoming_shutdown(
            listener::incoming(listener, acceptor(tls::Listener::Grpc), &config.grpc),
            async {
                let _ = stop_rx.await;
            },
        );
    tokio::pin!(server);
    // Background tasks end with the server, or when shutdown begins.
    let background = AbortOnDrop(
        [
            Some(key_watch),
            Some(keys_expiry),
            reloader,
            tls_watch,
            follower,
        ]
        .into_iter()
        .flatten()
        .map(|task| task.abort_handle())
        .collect(),
    );
    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => {}
    }

    drop(background);
    set_readiness(&health, ServingStatus::NotServing).await;
    if !config.drain_delay.is_zero() {
        // Keep serving while load balancers notice the readiness change.
        tracing::info!(delay = ?config.drain_delay, "shutting down: readiness is NOT_SERVING");
        tokio::select! {
            result = &mut server => return result.map_err(ServeError::from),
            () = tokio::time::sleep(config.drain_delay) => {}
        }
    }
    tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining calls");
    let _ = draining_tx.send(true);
    let _ = stop_tx.send(());
    let _ = http_stop.send(true);
    let _ = front_stop.send(());
    let grace_ends = Instant::now() + config.shutdown_grace;
    let drained = tokio::time::timeout_at(grace_ends, server).await;
    if tokio::time::timeout_at(grace_ends, http).await.is_err() {
        tracing::warn!("shutdown grace expired with webhook requests still running");
    }
    if let Some(front) = front
        && tokio::time::timeout_at(grace_ends, front).await.is_err()
    {
        tracing::warn!("shutdown grace expired with Clerk API requests still running");
    }
    if let Some(metrics_http) = metrics_http {
        let _ = tokio::time::timeout_at(grace_ends, metrics_http).await;
    }
    match drained {
        Ok(result) => result?,
        Err(_) => tracing::warn!("shutdown grace expired with calls still running; they are cut"),
    }
    // Unused leases go back to the other replicas at once.
    broker.admission.leave().await;
    tracing::info!("stopped");
    Ok(())
}

/// Aborts background tasks when dropped (whichever way `run` ends).
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Serves an HTTP listener with `routes` until `stop` resolves; says at
/// start-up what it serves (never printing the webhook secret).
fn serve_http(
    listener: TcpListener,
    acceptor: Acceptor,
    broker: &Broker,
    limits: HttpLimits,
    routes: http::Routes,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (scheme, address) = base_url(&listener, &acceptor);
    if routes != http::Routes::Webhooks {
        tracing::info!("metrics: GET {scheme}://{address}{}", http::METRICS_PATH);
    }
    if routes == http::Routes::Metrics {
        // Webhooks are announced by the webhook listener.
    } else if broker.webhooks.is_configured() {
        tracing::info!(
            "webhooks: POST {scheme}://{address}{} (signed deliveries update the user cache)",
            http::WEBHOOK_PATH
        );
    } else {
        tracing::warn!(
            "webhooks disabled: no CLERK_WEBHOOK_SIGNING_SECRET or --webhook-signing-secret-file; \
             POST {scheme}://{address}{} answers 503 and cached users change only when they expire",
            http::WEBHOOK_PATH
        );
    }
    let state = http::HttpState {
        users: broker.users.clone(),
        webhooks: broker.webhooks.clone(),
        metrics: broker.metrics.clone(),
        admission: broker.admission.clone(),
        reloads: broker.reloads.clone(),
    };
    let router = http::router(state, &limits, routes);
    let incoming = tls::incoming(listener, acceptor, Some(limits.connections()));
    http::serve(incoming, router, limits, stop)
}

/// The scheme and address an HTTP listener serves on, for start-up logs.
fn base_url(listener: &TcpListener, acceptor: &Acceptor) -> (&'static str, String) {
    let scheme = match acceptor {
        Acceptor::Plain => "http",
        Acceptor::Tls(..) => "https",
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |address| address.to_string());
    (scheme, address)
}

/// Serves the Clerk-compatible front until `stop` resolves, with the HTTP
/// listener's limits (header timeout, connections) and its own body limit.
fn serve_front(
    listener: TcpListener,
    acceptor: Acceptor,
    front: Arc<Front>,
    config: &Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (scheme, address) = base_url(&listener, &acceptor);
    tracing::info!(
        "Clerk-compatible Backend API: {scheme}://{address} (SDKs: API URL here, secret key a \
         caller token)"
    );
    let router = front::router(front, config.front.max_body);
    let limits = config.http;
    // Callers are authenticated services whose SDKs pool connections: no
    // per-peer cap, and a larger total than the webhook listener's.
    let connections = tls::ConnectionLimits {
        max: limits.max_connections.max(front::MIN_CONNECTIONS),
        per_peer: usize::MAX,
        handshake_timeout: tls::HANDSHAKE_TIMEOUT,
    };
    let incoming = tls::incoming(listener, acceptor, Some(connections));
    http::serve(incoming, router, limits, stop)
}

/// Every few seconds, drops the keyed budgets that hold nothing any more.
async fn expire_idle_keys(admission: Arc<Admission>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        admission.expire_idle_keys().await;
    }
}

/// Reflection over the broker's own services, the health service, and the
/// `google.rpc` error details (so grpcurl can show BadRequest and RetryInfo).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

async fn set_readiness(health: &HealthReporter, status: ServingStatus) {
    for service in READINESS_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Keeps readiness in line with whether Clerk accepts the broker's key.
/// A caller's request refused for the key only raises a doubt, which the
/// broker's own key check (one request through the same budget) confirms
/// before readiness drops; while the key is rejected it is re-checked now and
/// then. 403s and other refusals of one request never reach here.
async fn follow_key_state(
    clerk: Arc<ClerkClient>,
    health: HealthReporter,
    draining: watch::Receiver<bool>,
) {
    let mut key_state = clerk.key_state();
    loop {
        let state = *key_state.borrow_and_update();
        if !*draining.borrow() {
            let status = match state {
                KeyState::Accepted => ServingStatus::Serving,
                KeyState::Rejected => ServingStatus::NotServing,
            };
            set_readiness(&health, status).await;
        }
        if state == KeyState::Rejected {
            tracing::error!(
                "Clerk rejects the broker's secret key: readiness is NOT_SERVING until it is fixed"
            );
            tokio::select! {
                changed = key_state.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(KEY_PROBE_INTERVAL) => check_key(&clerk).await,
            }
        } else {
            tokio::select! {
                changed = key_state.changed() => if changed.is_err() { return },
                () = clerk.key_doubted() => {
                    tracing::warn!("Clerk refused a request for the broker's key: checking the key");
                    check_key(&clerk).await;
                }
            }
        }
    }
}

/// The broker's own key check; its outcome reaches readiness through the key
/// state.
async fn check_key(clerk: &ClerkClient) {
    let demand = Demand::interactive(
        BROKER_CALLER.into(),
        Instant::now() + Duration::from_secs(10),
    );
    if let Err(error) = clerk.check_key(&demand).await {
        tracing::debug!(%error, "the key check ended with an error");
    }
}
