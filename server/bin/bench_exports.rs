//! `bench-exports`: how fast `ListUsers` streams, measured in-process on
//! loopback against the fake Clerk. Not a test: it prints figures.
//!
//! 1. Unlimited: a fake without rate limit and a budget far above need, so
//!    the broker's own speed is measured (users streamed per second).
//! 2. Budget-bound: the broker's budget and the fake's limit are the same
//!    (default 20/1s); the steady-state rate, after the first window's burst,
//!    is compared with the budget's theoretical maximum, requests per second
//!    × 500 users per request. The fake counts any 429 (there should be none).
//!
//! Run: `cargo run --release --bin bench-exports [-- --users 100000 --rate 20/1s]`.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use clerk_broker::{
    admission::Rate,
    clerk::ClerkConfig,
    config::Config,
    fake::{FakeClerk, FakeClerkConfig, seed},
    pb::{ListUsersRequest, user_service_client::UserServiceClient},
    secret::SecretKey,
    server,
};
use tokio::{net::TcpListener, time::Instant};

/// The key the fake accepts and the brokers hold.
const KEY: &str = "sk_test_bench_exports_0123456789";

/// Flags of the benchmark.
#[derive(Debug, Parser)]
#[command(about = "Measures ListUsers export throughput against an in-process fake Clerk")]
struct Args {
    /// Users in the fake Clerk.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Budget (and fake limit) of the budget-bound run.
    #[arg(long, default_value = "20/1s")]
    rate: Rate,
    /// Windows of the budget-bound run measured after its first one.
    #[arg(long, default_value_t = 8)]
    windows: u32,
}

/// One message's arrival: when, and how many users so far.
type Arrival = (Duration, u64);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    let fake = FakeClerk::new(
        FakeClerkConfig::new(KEY),
        seed::synthetic_users(args.users, 7),
    );
    let url = fake.spawn().await?;
    println!(
        "fake Clerk with {} users ready in {:.1?}; {} CPUs, load average {}",
        args.users,
        started.elapsed(),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );

    let unlimited = Rate {
        limit: 1_000_000,
        window: Duration::from_secs(1),
    };
    let broker = start_broker(&url, unlimited).await?;
    for page_size in [500, 100] {
        fake.reset_stats();
        let (arrivals, elapsed) = export(broker, page_size, 0).await?;
        let users = arrivals.last().map_or(0, |&(_, users)| users);
        println!(
            "unlimited budget, page_size {page_size}: {users} users in {elapsed:.2?} = {:.0} users/s \
             ({} upstream requests)",
            users as f64 / elapsed.as_secs_f64(),
            fake.stats().list_requests,
        );
    }

    let rate = args.rate;
    fake.set_rate_limit(Some((rate.limit, rate.window)));
    let bound = start_broker(&url, rate).await?;
    let per_request = 500;
    let max_per_second = f64::from(rate.limit) * per_request as f64 / rate.window.as_secs_f64();
    // Enough users for the first window's burst and `windows` more.
    let wanted = u64::from(rate.limit) * per_request * u64::from(args.windows + 1);
    fake.reset_stats();
    let (arrivals, elapsed) = export(bound, 500, wanted).await?;
    let burst = u64::from(rate.limit) * per_request;
    let (from, users_from) = arrivals
        .iter()
        .copied()
        .find(|&(_, users)| users >= burst)
        .unwrap_or_default();
    let (to, users_to) = arrivals.last().copied().unwrap_or_default();
    let steady = (users_to - users_from) as f64 / (to - from).as_secs_f64();
    let stats = fake.stats();
    println!(
        "budget {rate}: {users_to} users in {elapsed:.2?}; steady state after the first window: \
         {steady:.0} users/s = {:.1}% of the theoretical {max_per_second:.0} users/s \
         ({} upstream requests, {} answered 429)",
        100.0 * steady / max_per_second,
        stats.list_requests,
        stats.rate_limited,
    );
    Ok(())
}

/// The 1-minute load average (Linux), for context: the fake, the broker and
/// the client share the machine's cores.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Starts a broker on loopback in front of `url` with budget `rate` (and the
/// default 2% margin); returns its address.
async fn start_broker(url: &str, rate: Rate) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let clerk = ClerkConfig {
        base_url: url.parse()?,
        secret_key: SecretKey::parse(KEY)?,
        request_timeout: Duration::from_secs(10),
        max_attempts: 4,
    };
    let mut config = Config::with_defaults("127.0.0.1:0".parse()?, clerk, rate);
    config.shutdown_grace = Duration::from_secs(1);
    let listeners = server::Listeners {
        grpc: TcpListener::bind(config.listen).await?,
        http: TcpListener::bind("127.0.0.1:0").await?,
        metrics: None,
        health: None,
        front: None,
    };
    let addr = listeners.grpc.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = server::run(listeners, config, std::future::pending()).await {
            eprintln!("broker stopped: {error}");
        }
    });
    Ok(addr)
}

/// Streams an export of up to `max_users` (0: all) and records arrivals.
async fn export(
    broker: SocketAddr,
    page_size: u32,
    max_users: u64,
) -> Result<(Vec<Arrival>, Duration), Box<dyn std::error::Error>> {
    let mut client = UserServiceClient::connect(format!("http://{broker}"))
        .await?
        .max_decoding_message_size(64 * 1024 * 1024);
    let request = ListUsersRequest {
        page_size,
        max_users,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client.list_users(request).await?.into_inner();
    let mut arrivals = Vec::new();
    let mut users = 0;
    while let Some(message) = stream.message().await? {
        users += message.users.len() as u64;
        arrivals.push((started.elapsed(), users));
    }
    Ok((arrivals, started.elapsed()))
}
