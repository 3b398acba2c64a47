//! `bench-lookups`: what user lookups cost, measured on loopback.
//!
//! Starts a fake Clerk and the broker in this process (both on `127.0.0.1`,
//! the broker through `server::run`, exactly as deployed), then measures:
//! 1. upstream requests per 1,000 distinct cold `GetUser`s sent at once;
//! 2. resident memory per 100,000 cached users (`/proc/self/statm` before and
//!    after filling the cache through `BatchGetUsers`);
//! 3. cache-hit `GetUser` throughput: `--clients` concurrent callers over
//!    `--connections` HTTP/2 connections for `--seconds`, with p50/p99.
//!
//! Run: `cargo run --release --bin bench-lookups` (see `--help`). The load
//! generator shares the machine with the broker, so figures are a floor.

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use clerk_broker::{
    admission::Rate,
    clerk::ClerkConfig,
    config::{Config, LookupConfig},
    fake::{FakeClerk, FakeClerkConfig, FakeStats, seed},
    pb::{BatchGetUsersRequest, GetUserRequest, user_service_client::UserServiceClient},
    secret::SecretKey,
    server::{self, Listeners},
};
use tokio::{net::TcpListener, task::JoinSet};
use tonic::transport::Channel;

/// The broker binary's allocator, so that memory is measured as deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The key the fake accepts and the broker holds.
const KEY: &str = "sk_test_bench_lookups_0000000000";

/// Measures cold batching, memory per cached user and cache-hit throughput.
#[derive(Debug, Parser)]
#[command(name = "bench-lookups")]
struct Args {
    /// Users in the fake Clerk, all of them cached for the memory figure.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Concurrent callers of the hit-throughput phase.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Length of the hit-throughput phase, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The broker's batch window, e.g. 5ms (the default of `serve`).
    #[arg(long, default_value = "5ms")]
    batch_window: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The broker's runtime, as `serve` runs it.
    let runtime = match clerk_broker::runtime::build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-lookups: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-lookups: {error}");
            ExitCode::FAILURE
        }
    }
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

async fn bench(args: Args) -> BenchResult<()> {
    let batch_window = clerk_broker::config::duration("--batch-window", &args.batch_window)?;
    println!("seeding {} synthetic users…", args.users);
    let users = seed::synthetic_users(args.users, 3);
    let ids: Vec<String> = users
        .iter()
        .filter_map(|user| user["id"].as_str().map(str::to_owned))
        .collect();
    let fake = FakeClerk::new(FakeClerkConfig::new(KEY), users);
    let url = fake.spawn().await?;
    let clerk = ClerkConfig {
        base_url: url.parse()?,
        secret_key: SecretKey::parse(KEY)?,
        request_timeout: Duration::from_secs(10),
        max_attempts: 4,
    };
    let rate = Rate {
        limit: 100_000,
        window: Duration::from_secs(1),
    };
    let mut config = Config::with_defaults("127.0.0.1:0".parse()?, clerk, rate);
    config.upstream_burst = rate.limit;
    config.upstream_margin = Duration::from_millis(10);
    config.lookup = LookupConfig {
        cache_max_entries: 1_000_000,
        cache_max_bytes: 8 << 30,
        cache_ttl: Duration::from_secs(3_600),
        batch_window,
        ..LookupConfig::default()
    };
    let listeners = Listeners {
        grpc: TcpListener::bind(config.listen).await?,
        http: TcpListener::bind("127.0.0.1:0").await?,
        metrics: None,
        health: None,
        front: None,
    };
    let addr = listeners.grpc.local_addr()?;
    tokio::spawn(server::run(listeners, config, std::future::pending()));
    let channels = connect(addr, args.connections.max(1)).await?;

    // 1. Cold batching: three rounds of 1,000 distinct ids never asked before.
    println!(
        "\n== upstream requests per 1,000 distinct cold GetUser (batch window {batch_window:?}) =="
    );
    for round in 0..3 {
        let cold = &ids[round * 1_000..(round + 1) * 1_000];
        fake.reset_stats();
        let started = Instant::now();
        let latencies = get_all(&channels, cold).await?;
        let FakeStats { requests, .. } = fake.stats();
        println!(
            "round {}: {requests} upstream requests for 1,000 ids, all answered in {:?} (p50 {:?}, p99 {:?})",
            round + 1,
            started.elapsed(),
            percentile(&latencies, 50),
            percentile(&latencies, 99),
        );
    }

    // 2. Memory per 100,000 cached users.
    println!("\n== resident memory per 100,000 cached users ==");
    let to_fill = &ids[3_000..];
    let before = resident_bytes()?;
    fake.reset_stats();
    let started = Instant::now();
    fill(&channels, to_fill).await?;
    let after = resident_bytes()?;
    let per_100k = (after.saturating_sub(before)) as f64 / to_fill.len() as f64 * 100_000.0;
    println!(
        "cached {} users with {} upstream requests in {:?}; RSS {} MiB → {} MiB: {:.0} MiB per 100,000 users ({:.0} bytes each)",
        to_fill.len(),
        fake.stats().requests,
        started.elapsed(),
        before >> 20,
        after >> 20,
        per_100k / f64::from(1 << 20),
        per_100k / 100_000.0,
    );

    // 3. Cache-hit throughput.
    println!(
        "\n== GetUser cache hits: {} callers over {} connections for {} s ==",
        args.clients, args.connections, args.seconds
    );
    fake.reset_stats();
    let run_for = Duration::from_secs(args.seconds);
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for caller in 0..args.clients.max(1) {
        let mut client = UserServiceClient::new(channels[caller % channels.len()].clone());
        let ids: Vec<String> = to_fill.iter().skip(caller).step_by(97).cloned().collect();
        callers.spawn(async move {
            let mut latencies = Vec::new();
            let mut not_hits = 0u64;
            for id in ids.iter().cycle() {
                if started.elapsed() >= run_for {
                    break;
                }
                let call = Instant::now();
                let response = client
                    .get_user(GetUserRequest {
                        user_id: id.clone(),
                    })
                    .await?;
                latencies.push(call.elapsed());
                if response
                    .metadata()
                    .get("x-cache")
                    .is_none_or(|v| v != "hit")
                {
                    not_hits += 1;
                }
            }
            Ok::<_, tonic::Status>((latencies, not_hits))
        });
    }
    let mut latencies = Vec::new();
    let mut not_hits = 0;
    for result in callers.join_all().await {
        let (mut mine, misses) = result?;
        latencies.append(&mut mine);
        not_hits += misses;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time()?.saturating_sub(cpu_before);
    latencies.sort_unstable();
    println!(
        "{} calls in {elapsed:?}: {:.0} RPC/s, p50 {:?}, p99 {:?}; {not_hits} not hits, {} upstream requests",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        fake.stats().requests,
    );
    println!(
        "CPU time of this process (broker and callers together): {:.1} µs per call, {:.2} cores busy",
        cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64,
        cpu.as_secs_f64() / elapsed.as_secs_f64(),
    );
    // Hits also keep their users' encoded answers (at most 64 MiB).
    let after_hits = resident_bytes()?;
    println!(
        "resident memory after the hits (encoded answers kept): {} MiB, {} MiB more than after the fill",
        after_hits >> 20,
        after_hits.saturating_sub(after) >> 20,
    );
    Ok(())
}

/// `count` connections to the broker.
async fn connect(addr: SocketAddr, count: usize) -> BenchResult<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// GetUser for every id at once; returns the sorted latencies.
async fn get_all(channels: &[Channel], ids: &[String]) -> BenchResult<Vec<Duration>> {
    let mut calls = JoinSet::new();
    for (index, id) in ids.iter().enumerate() {
        let mut client = UserServiceClient::new(channels[index % channels.len()].clone());
        let user_id = id.clone();
        calls.spawn(async move {
            let started = Instant::now();
            client.get_user(GetUserRequest { user_id }).await?;
            Ok::<_, tonic::Status>(started.elapsed())
        });
    }
    let mut latencies = Vec::new();
    for result in calls.join_all().await {
        latencies.push(result?);
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Caches every id through BatchGetUsers, 500 ids a call, 4 calls at a time.
async fn fill(channels: &[Channel], ids: &[String]) -> BenchResult<()> {
    for group in ids.chunks(4 * 500) {
        let mut calls = JoinSet::new();
        for (index, chunk) in group.chunks(500).enumerate() {
            let mut client = UserServiceClient::new(channels[index % channels.len()].clone());
            let user_ids = chunk.to_vec();
            calls.spawn(async move {
                client
                    .batch_get_users(BatchGetUsersRequest { user_ids })
                    .await
            });
        }
        for result in calls.join_all().await {
            result?;
        }
    }
    Ok(())
}

/// The `p`th percentile of sorted `latencies`.
fn percentile(latencies: &[Duration], p: usize) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies[(latencies.len() * p / 100).min(latencies.len() - 1)]
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (clock ticks of 10 ms, the Linux default).
fn cpu_time() -> BenchResult<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses): utime is the
    // 12th and stime the 13th of them.
    let after_name = stat.rsplit_once(')').ok_or("unexpected /proc/self/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
        + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// This process's resident memory, from `/proc/self/statm` (4 KiB pages).
fn resident_bytes() -> BenchResult<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("unexpected /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}
