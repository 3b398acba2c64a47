//! Load generator: drives `AcquirePermit` on the broker and on a bare tonic
//! server built in the same profile (the baseline), in the same run, and
//! prints RPC/s, latency percentiles, replies that refused the permit and the
//! ratio; then the broker with its budgets shared through Redis (a
//! `redis-server` it starts on a free port, if installed) against the
//! in-memory broker, with Redis round trips per granted permit; then times
//! the admission controller's decision alone. Everything runs on the
//! broker's runtime, in one process.
//!
//! `cargo bench --bench load -- --seconds 5 --connections 4 --concurrency 16`

use std::{
    hint::black_box,
    net::SocketAddr,
    time::{Duration, Instant},
};

use clap::Parser;
use clerk_broker::{
    admission::{Budget, BudgetSpec, Demand, Rate},
    clerk::ClerkConfig,
    config::Config,
    grpc::wire::quota_service_server::{QuotaService, QuotaServiceServer},
    pb::{AcquirePermitRequest, AcquirePermitResponse, quota_service_client::QuotaServiceClient},
    secret::SecretKey,
    server::{self, Listeners},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Channel};

/// What to run.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds (baseline, broker) to run; the best round of each is reported.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Ignored (passed by `cargo bench`).
    #[arg(long, hide = true)]
    bench: bool,
}

/// The baseline: `QuotaService` answering at once, with no broker logic.
struct Bare;

#[tonic::async_trait]
impl QuotaService for Bare {
    async fn acquire_permit(
        &self,
        request: Request<AcquirePermitRequest>,
    ) -> Result<Response<AcquirePermitResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(AcquirePermitResponse {
            granted: true,
            budget: request.budget,
            limit: 1_000_000,
            waited: Some(prost_types::Duration::default()),
            window: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }))
    }
}

/// Figures of one load run.
#[derive(Clone, Copy, Debug)]
struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Replies that did not grant the permit (answers all the same: counted
    /// in `rps`).
    refused: usize,
}

async fn start_bare() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QuotaServiceServer::new(Bare))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A broker whose upstream budget is never the limit (no upstream calls are
/// made by `AcquirePermit`); budgets shared through `redis` if given.
async fn start_broker(redis: Option<String>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rate: Rate = "1000000/1s".parse().unwrap();
    let clerk = ClerkConfig {
        base_url: "http://127.0.0.1:9/v1".parse().unwrap(),
        secret_key: SecretKey::parse("sk_test_bench").unwrap(),
        request_timeout: Duration::from_secs(1),
        max_attempts: 1,
    };
    let mut config = Config::with_defaults(addr, clerk, rate);
    config.upstream_burst = rate.limit;
    config.upstream_margin = Duration::ZERO;
    config.redis = redis.map(|url| clerk_broker::store::RedisConfig {
        url,
        timeout: Duration::from_millis(50),
        replicas: None,
        prefix: format!("bench-{}", std::process::id()),
    });
    let listeners = Listeners {
        grpc: listener,
        http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        metrics: None,
        health: None,
        front: None,
    };
    tokio::spawn(server::run(listeners, config, std::future::pending()));
    addr
}

/// A `redis-server` on a free loopback port (stopped when dropped), if
/// installed.
struct RedisServer(std::process::Child, u16);

impl RedisServer {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let until = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self(child, port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }

    /// Script calls (EVAL/EVALSHA) Redis has served: one per lease round trip.
    async fn script_calls(&self) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .unwrap();
        info.lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn drive(addr: SocketAddr, args: &Args) -> Figures {
    let mut tasks = Vec::new();
    let end = Instant::now() + Duration::from_secs(args.seconds);
    for _ in 0..args.connections {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..args.concurrency {
            let mut client = QuotaServiceClient::new(channel.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                let mut refused = 0;
                while Instant::now() < end {
                    let started = Instant::now();
                    let reply = client
                        .acquire_permit(AcquirePermitRequest::default())
                        .await
                        .unwrap();
                    refused += usize::from(!reply.into_inner().granted);
                    latencies.push(started.elapsed());
                }
                (latencies, refused)
            }));
        }
    }
    let started = Instant::now();
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for task in tasks {
        let (task_latencies, task_refused) = task.await.unwrap();
        latencies.extend(task_latencies);
        refused += task_refused;
    }
    let elapsed = started.elapsed().max(Duration::from_secs(args.seconds));
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        refused,
    }
}

/// Nanoseconds per admission decision (acquire and release) on an
/// uncontended budget, measured over `iterations`.
async fn decision_ns(iterations: u32) -> f64 {
    // 10 million per second: far above what one core can ask for.
    let rate: Rate = "1000000/100ms".parse().unwrap();
    let mut spec = BudgetSpec::new(rate);
    spec.burst = Some(rate.limit);
    let budget = Budget::new("bench", spec);
    let demand = Demand::interactive(
        "bench".into(),
        tokio::time::Instant::now() + Duration::from_secs(3600),
    );
    let started = Instant::now();
    for _ in 0..iterations {
        let permit = budget.acquire(black_box(&demand), 1).await.unwrap();
        drop(black_box(permit));
    }
    started.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn show(name: &str, figures: Figures) {
    println!(
        "{name:<28} {:>10.0} RPC/s   p50 {:>8.1?}   p99 {:>8.1?}   refused {}",
        figures.rps, figures.p50, figures.p99, figures.refused
    );
}

fn best(runs: &[Figures]) -> Figures {
    *runs
        .iter()
        .max_by(|a, b| a.rps.total_cmp(&b.rps))
        .expect("at least one round")
}

fn main() {
    // The broker's runtime, as `serve` runs it (clients and baseline share it).
    let runtime = clerk_broker::runtime::build().expect("the runtime starts");
    runtime.block_on(run());
}

async fn run() {
    let args = Args::parse();
    let bare = start_bare().await;
    let broker_addr = start_broker(None).await;
    println!(
        "AcquirePermit, {} connections x {} in flight, {} s per run, {} rounds",
        args.connections, args.concurrency, args.seconds, args.rounds
    );
    let (mut bare_runs, mut broker_runs) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        bare_runs.push(drive(bare, &args).await);
        broker_runs.push(drive(broker_addr, &args).await);
    }
    let (bare, broker) = (best(&bare_runs), best(&broker_runs));
    show("bare tonic (baseline)", bare);
    show("clerk-broker AcquirePermit", broker);
    println!(
        "ratio: {:.2}x RPC/s, p99 {:.2}x",
        broker.rps / bare.rps,
        broker.p99.as_secs_f64() / bare.p99.as_secs_f64()
    );
    match RedisServer::start() {
        None => println!("redis-server not found: the shared-store comparison is skipped"),
        Some(redis) => {
            let shared = start_broker(Some(redis.url())).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (mut memory_runs, mut shared_runs, mut calls) =
                (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.rounds {
                memory_runs.push(drive(broker_addr, &args).await);
                let before = redis.script_calls().await;
                let figures = drive(shared, &args).await;
                let trips = redis.script_calls().await - before;
                calls.push(trips as f64 / (figures.rps * args.seconds as f64));
                shared_runs.push(figures);
            }
            let (memory, shared) = (best(&memory_runs), best(&shared_runs));
            show("in-memory budget", memory);
            show("budget shared in Redis", shared);
            println!(
                "ratio: {:.2}x RPC/s (target >= 0.5x), p99 {:.2}x; Redis round trips per granted permit: {:.4}",
                shared.rps / memory.rps,
                shared.p99.as_secs_f64() / memory.p99.as_secs_f64(),
                calls.iter().copied().fold(f64::INFINITY, f64::min)
            );
        }
    }
    // Warm up, then measure the decision alone.
    decision_ns(100_000).await;
    println!(
        "admission decision alone: {:.0} ns per acquire+release",
        decision_ns(2_000_000).await
    );
}
