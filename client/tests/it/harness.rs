//! Starts the real broker in-process in front of the fake Clerk, and a TCP
//! proxy that tests can cut or point at another broker.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use clerk_broker::{
    admission::Rate,
    callers::Policy,
    clerk::ClerkConfig,
    config::Config,
    fake::{FakeClerk, FakeClerkConfig, seed},
    secret::SecretKey,
    server,
};
use clerk_broker_client::Client;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
    task::JoinHandle,
};

/// The key the fake accepts and every broker holds (resume tokens are
/// derived from it, so they are valid on every broker of a test).
const KEY: &str = "sk_test_client_tests_0123456789";

/// The token of the one caller in [`token_policy`].
pub(crate) const TOKEN: &str = "client-test-token";

/// A policy with one caller (token [`TOKEN`]) and a budget "writes" of 2/1s.
pub(crate) fn token_policy() -> Policy {
    // printf %s client-test-token | sha256sum
    let text = r#"
        [[budgets]]
        name = "writes"
        rate = "2/1s"
        burst = 2

        [[callers]]
        name = "tests"
        token_sha256 = "2add5b92210c49669fdd0d73cea822b53313d161280a69c5789c9b56f58bfa73"
        budgets = ["clerk", "writes"]
    "#;
    Policy::parse(text, |_| Duration::ZERO).expect("a valid policy")
}

/// What a test needs of its broker.
pub(crate) struct Options {
    /// Synthetic users in the fake.
    pub(crate) users: usize,
    /// The broker's upstream budget.
    pub(crate) rate: Rate,
    /// Callers and extra budgets.
    pub(crate) policy: Policy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            users: 1_000,
            rate: rate(1_000, Duration::from_secs(1)),
            policy: Policy::anonymous(),
        }
    }
}

/// `limit` requests per `window`.
pub(crate) fn rate(limit: u32, window: Duration) -> Rate {
    Rate { limit, window }
}

/// A fake Clerk and the ids of its users, in seed order.
pub(crate) struct Upstream {
    /// Held so that the fake lives as long as the test.
    _fake: FakeClerk,
    pub(crate) url: String,
    pub(crate) ids: Vec<String>,
}

impl Upstream {
    pub(crate) async fn start(users: usize) -> Self {
        let users = seed::synthetic_users(users, 7);
        let ids = users
            .iter()
            .filter_map(|user| user["id"].as_str().map(str::to_owned))
            .collect();
        let fake = FakeClerk::new(FakeClerkConfig::new(KEY), users);
        let url = fake.spawn().await.expect("the fake starts");
        Self {
            _fake: fake,
            url,
            ids,
        }
    }
}

/// A running broker.
pub(crate) struct Broker {
    pub(crate) addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Broker {
    /// A broker in front of `upstream`.
    pub(crate) async fn start(upstream: &Upstream, options: Options) -> Self {
        let clerk = ClerkConfig {
            base_url: upstream.url.parse().expect("the fake's URL"),
            secret_key: SecretKey::parse(KEY).expect("a valid key"),
            request_timeout: Duration::from_secs(2),
            max_attempts: 4,
        };
        let listen = "127.0.0.1:0".parse().expect("an address");
        let mut config = Config::with_defaults(listen, clerk, options.rate);
        config.upstream_margin = Duration::from_millis(20);
        config.shutdown_grace = Duration::from_secs(5);
        config.policy = Arc::new(options.policy);
        let listener = server::Listeners {
            grpc: TcpListener::bind(config.listen).await.expect("a port"),
            http: TcpListener::bind("127.0.0.1:0").await.expect("a port"),
            metrics: None,
            health: None,
            front: None,
        };
        let addr = listener.grpc.local_addr().expect("an address");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            server::run(listener, config, stopped)
                .await
                .expect("the broker runs");
        });
        Self {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An anonymous client with default settings.
    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.url()).await.expect("connects")
    }

    /// Starts draining (exports end with UNAVAILABLE) and waits for the end.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the broker stops within its grace period")
            .expect("the broker task ends cleanly");
    }
}

/// A fake Clerk with `options.users` users and one broker in front of it.
pub(crate) async fn start(options: Options) -> (Upstream, Broker) {
    let upstream = Upstream::start(options.users).await;
    let broker = Broker::start(&upstream, options).await;
    (upstream, broker)
}

/// A TCP proxy in front of a broker: tests cut its connections (a network
/// failure mid-stream) or point it at another broker (a restart elsewhere).
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cuts: watch::Sender<u64>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let target = Arc::new(Mutex::new(target));
        let (cuts, _) = watch::channel(0);
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept(
            listener,
            target.clone(),
            cuts.clone(),
            connections.clone(),
        ));
        Self {
            addr,
            target,
            cuts,
            connections,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to `target` from now on.
    pub(crate) fn point_at(&self, target: SocketAddr) {
        *self.target.lock().expect("not poisoned") = target;
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Drops every open connection, as a network failure would.
    pub(crate) fn cut(&self) {
        self.cuts.send_modify(|generation| *generation += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn accept(
    listener: TcpListener,
    target: Arc<Mutex<SocketAddr>>,
    cuts: watch::Sender<u64>,
    connections: Arc<AtomicUsize>,
) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        connections.fetch_add(1, Ordering::SeqCst);
        let to = *target.lock().expect("not poisoned");
        let mut cut = cuts.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
