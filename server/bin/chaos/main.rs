//! `chaos`: a bounded chaos run of three `clerk-broker serve` replicas
//! sharing one `redis-server`, in front of the embedded fake Clerk (which
//! enforces the budget and counts requests per window).
//!
//! Under mixed load from several callers (`GetUser` hits and misses,
//! `BatchGetUsers`, `AcquirePermit`, full `ListUsers` exports resumed with
//! their token on another replica whenever a call fails), it injects, one at
//! a time for the first half of the run and two at once for the second: a
//! replica SIGKILLed and restarted; Redis restarted with its data and
//! without; Redis paused (SIGSTOP) past `--redis-timeout`, then resumed;
//! and all along, the fake's faults (5xx, timeouts, drops, slow and
//! malformed answers, 429 blocks).
//!
//! Exits 1 if the fake saw more requests in a window than the limit, sent a
//! 429 outside its injected blocks, a call outlived its deadline by more
//! than 1 s, an export did not get every id exactly once (or none finished,
//! or none resumed after its replica died), a replica's resident memory grew
//! beyond its cache's bound plus 64 MiB, or a process could not be restarted.
//!
//! Run: `cargo run --release --bin chaos -- --minutes 10` (needs
//! `redis-server`; the broker binary next to this one, or `--broker`).

#[path = "../shared/calls.rs"]
mod calls;
mod load;
mod procs;

use std::{
    collections::HashSet,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use clerk_broker::{
    admission::Rate,
    fake::{FakeClerk, FakeClerkConfig, Faults, seed},
};
use tokio::sync::Mutex as AsyncMutex;
use tonic::transport::Channel;

use load::{Tally, Targets};
use procs::{Redis, Replica, ReplicaSpec};

/// The key the fake accepts and the replicas hold.
const KEY: &str = "sk_test_chaos_000000000000000";
/// Each replica's cache bound in bytes (`--cache-max-bytes`).
const CACHE_MAX_MIB: u64 = 32;
/// Growth of a replica's resident memory allowed beyond its cache's bound
/// (buffers, allocator slack, Redis connections).
const RSS_SLACK_MIB: u64 = 64;
/// How long Redis stays paused: well past `--redis-timeout`.
const REDIS_PAUSE: Duration = Duration::from_secs(2);
/// How long a killed replica stays down.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// Chaos-tests three replicas and one Redis under mixed load.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// Length of the run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between injected events.
    #[arg(long, default_value_t = 6)]
    every: u64,
    /// Concurrent callers (unary calls).
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Concurrent exporters (full `ListUsers` exports).
    #[arg(long, default_value_t = 3)]
    exporters: usize,
    /// Users in the fake Clerk.
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    /// The budget (replicas and fake alike).
    #[arg(long, default_value = "100/1s")]
    rate: String,
    /// The `clerk-broker` binary (default: next to this one).
    #[arg(long)]
    broker: Option<PathBuf>,
}

type ChaosResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(chaos(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The things the injected events act on, and what they did.
struct World {
    replicas: Vec<AsyncMutex<Replica>>,
    redis: AsyncMutex<Redis>,
    spec: ReplicaSpec,
    targets: Arc<Targets>,
    kills: AtomicU64,
    restarts_kept: AtomicU64,
    restarts_lost: AtomicU64,
    pauses: AtomicU64,
    /// Restarts that failed.
    errors: Mutex<Vec<String>>,
    started: Instant,
}

/// One injected event.
#[derive(Clone, Copy, Debug)]
enum Event {
    KillReplica,
    RestartRedis { keep_data: bool },
    PauseRedis,
}

impl World {
    fn say(&self, what: &str) {
        println!("  t={:5.1}s {what}", self.started.elapsed().as_secs_f64());
    }

    fn failed(&self, error: String) {
        eprintln!("chaos: {error}");
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(error);
        }
    }

    async fn run(&self, event: Event) {
        match event {
            Event::KillReplica => self.kill_replica().await,
            Event::RestartRedis { keep_data } => {
                let mut redis = self.redis.lock().await;
                self.say(if keep_data {
                    "Redis restarts, keeping its data"
                } else {
                    "Redis restarts, losing its data"
                });
                let restarted = tokio::task::block_in_place(|| redis.restart(keep_data));
                match restarted {
                    Ok(()) if keep_data => self.restarts_kept.fetch_add(1, Ordering::Relaxed),
                    Ok(()) => self.restarts_lost.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        self.failed(format!("Redis restart: {error}"));
                        0
                    }
                };
            }
            Event::PauseRedis => {
                let redis = self.redis.lock().await;
                let Some(pid) = redis.pid() else { return };
                self.say("Redis paused (SIGSTOP)");
                if let Err(error) = procs::signal(pid, "STOP") {
                    self.failed(error);
                    return;
                }
                tokio::time::sleep(REDIS_PAUSE).await;
                if let Err(error) = procs::signal(pid, "CONT") {
                    self.failed(error);
                }
                self.pauses.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// SIGKILLs the running replica with the most exports in flight (one
    /// not being killed already), then restarts it.
    async fn kill_replica(&self) {
        let mut order: Vec<usize> = (0..self.replicas.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.targets.exporting[i].load(Ordering::SeqCst)));
        let Some((index, mut replica)) = order
            .into_iter()
            .find_map(|i| self.replicas[i].try_lock().ok().map(|r| (i, r)))
        else {
            return;
        };
        self.say(&format!("replica {index} SIGKILLed"));
        self.targets.generations[index].fetch_add(1, Ordering::SeqCst);
        replica.kill();
        self.kills.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(DOWN_FOR).await;
        if let Err(error) = replica.restart(&self.spec).await {
            self.failed(format!("replica {index} restart: {error}"));
        } else {
            self.say(&format!("replica {index} back"));
        }
    }
}

/// The fake's fault modes, cycled every 5 s; the last is a 429 block.
fn fault_modes() -> Vec<(&'static str, Faults, Option<Duration>)> {
    let calm = Faults::default();
    vec![
        ("calm", calm.clone(), None),
        (
            "5xx",
            Faults {
                server_error_rate: 0.5,
                ..calm.clone()
            },
            None,
        ),
        ("calm", calm.clone(), None),
        (
            "timeouts",
            Faults {
                timeout_rate: 0.2,
                ..calm.clone()
            },
            None,
        ),
        (
            "drops",
            Faults {
                drop_rate: 0.3,
                ..calm.clone()
            },
            None,
        ),
        ("calm", calm.clone(), None),
        (
            "slow",
            Faults {
                latency: Duration::from_millis(500),
                ..calm.clone()
            },
            None,
        ),
        (
            "malformed",
            Faults {
                malformed_rate: 0.3,
                ..calm.clone()
            },
            None,
        ),
        ("429 block", calm, Some(Duration::from_secs(3))),
    ]
}

/// Toggles the fake's faults until `stop`; returns the 429s it sent during
/// its injected blocks.
async fn toggle_faults(fake: FakeClerk, stop: Arc<AtomicBool>) -> u64 {
    let mut injected = 0;
    for (_, faults, block) in fault_modes().into_iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        fake.set_faults(faults);
        if let Some(block) = block {
            let before = fake.stats().rate_limited;
            fake.block_for(block);
            // The block, and a little for answers already on their way.
            tokio::time::sleep(block + Duration::from_millis(300)).await;
            injected += fake.stats().rate_limited - before;
            tokio::time::sleep(Duration::from_secs(5).saturating_sub(block)).await;
        } else {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    fake.set_faults(Faults::default());
    injected
}

/// Injects events one at a time for the first half of the run, two at once
/// for the second, until `stop`.
async fn inject(world: Arc<World>, every: Duration, half: Instant, stop: Arc<AtomicBool>) {
    let alone = [
        Event::KillReplica,
        Event::PauseRedis,
        Event::RestartRedis { keep_data: true },
        Event::KillReplica,
        Event::RestartRedis { keep_data: false },
    ];
    let together = [
        (Event::KillReplica, Event::PauseRedis),
        (Event::KillReplica, Event::RestartRedis { keep_data: false }),
        (Event::KillReplica, Event::KillReplica),
        (Event::KillReplica, Event::RestartRedis { keep_data: true }),
    ];
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() < half {
            world.run(alone[turn % alone.len()]).await;
        } else {
            let (first, second) = together[turn % together.len()];
            tokio::join!(world.run(first), world.run(second));
        }
        turn += 1;
    }
}

async fn chaos(args: Args) -> ChaosResult<bool> {
    let rate: Rate = args.rate.parse()?;
    let broker = match args.broker {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("clerk-broker"),
    };
    let users = seed::synthetic_users(args.users, 13);
    let ids: Vec<String> = users
        .iter()
        .filter_map(|user| user["id"].as_str().map(str::to_owned))
        .collect();
    let all: Arc<HashSet<String>> = Arc::new(ids.iter().cloned().collect());
    let ids = Arc::new(ids);
    let mut fake_config = FakeClerkConfig::new(KEY);
    fake_config.rate_limit = Some((rate.limit, rate.window));
    let fake = FakeClerk::new(fake_config, users);
    let clerk_url = fake.spawn().await?;

    let dir = std::env::temp_dir().join(format!("clerk-broker-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let redis = Redis::start(&dir)?;
    let spec = ReplicaSpec {
        binary: broker,
        clerk_url,
        key: KEY.to_owned(),
        redis_url: redis.url(),
        flags: [
            "--upstream-rate",
            &args.rate,
            "--upstream-timeout",
            "2s",
            "--redis-timeout",
            "100ms",
            "--replicas",
            "3",
            "--redis-prefix",
            "chaos",
            "--cache-ttl",
            "20s",
            "--cache-max-entries",
            "20000",
            "--cache-max-bytes",
            &format!("{CACHE_MAX_MIB}MiB"),
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    let mut replicas = Vec::new();
    let mut channels = Vec::new();
    for index in 0..3 {
        let replica = Replica::start(&spec, dir.join(format!("replica-{index}.log"))).await?;
        channels.push(
            Channel::from_shared(format!("http://{}", replica.grpc))?
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy(),
        );
        replicas.push(AsyncMutex::new(replica));
    }
    let targets = Arc::new(Targets {
        channels,
        generations: (0..3).map(|_| AtomicU64::new(0)).collect(),
        exporting: (0..3).map(|_| AtomicU64::new(0)).collect(),
    });
    let started = Instant::now();
    let world = Arc::new(World {
        replicas,
        redis: AsyncMutex::new(redis),
        spec,
        targets: targets.clone(),
        kills: AtomicU64::new(0),
        restarts_kept: AtomicU64::new(0),
        restarts_lost: AtomicU64::new(0),
        pauses: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        started,
    });
    let run_for = Duration::from_secs_f64(args.minutes.max(0.1) * 60.0);
    println!(
        "chaos: {:.1} min, 3 replicas, 1 Redis, {} callers, {} exporters, budget {rate}, {} \
         users, an event every {} s (two at once after {:.1} min)",
        args.minutes,
        args.clients,
        args.exporters,
        args.users,
        args.every,
        args.minutes / 2.0
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let faults = tokio::spawn(toggle_faults(fake.clone(), stop.clone()));
    let events = tokio::spawn(inject(
        world.clone(),
        Duration::from_secs(args.every.max(1)),
        started + run_for / 2,
        stop.clone(),
    ));
    let mut load = Vec::new();
    for _ in 0..args.clients {
        let work = load::caller(targets.clone(), ids.clone(), stop.clone(), tally.clone());
        load.push(tokio::spawn(work));
    }
    for first in 0..args.exporters {
        let work = load::exporter(
            first % 3,
            targets.clone(),
            all.clone(),
            stop.clone(),
            tally.clone(),
        );
        load.push(tokio::spawn(work));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    events.await?;
    for task in load {
        task.await?;
    }
    let injected_429 = faults.await?;
    let passed = report(&world, &fake, rate, &tally, injected_429).await;
    drop(world);
    match passed {
        // The replicas' logs stay for a failed run.
        Ok(true) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => println!("replicas' logs: {}", dir.display()),
    }
    passed
}

/// Prints the summary; true if nothing was violated.
async fn report(
    world: &World,
    fake: &FakeClerk,
    rate: Rate,
    tally: &Mutex<Tally>,
    injected_429: u64,
) -> ChaosResult<bool> {
    let tally = std::mem::take(&mut *tally.lock().map_err(|_| "a caller panicked")?);
    let stats = fake.stats();
    let mut violations = Vec::new();
    println!("\n== chaos results ==");
    println!("calls: {}", tally.calls);
    for (kind, count) in &tally.by_code {
        println!("  {kind}: {count}");
    }
    println!(
        "events: {} replica kills, {} Redis restarts keeping data, {} losing it, {} Redis pauses",
        world.kills.load(Ordering::Relaxed),
        world.restarts_kept.load(Ordering::Relaxed),
        world.restarts_lost.load(Ordering::Relaxed),
        world.pauses.load(Ordering::Relaxed)
    );
    println!("calls ending > 1 s after their deadline: {}", tally.overdue);
    if tally.overdue > 0 {
        violations.push("calls outlived their deadline".to_owned());
    }
    println!(
        "upstream requests (fake): {}; most in any {:?} window: {} (limit {})",
        stats.requests, rate.window, stats.max_in_window, rate.limit
    );
    if stats.max_in_window > u64::from(rate.limit) {
        violations.push("the budget was exceeded".to_owned());
    }
    let outside = stats.rate_limited.saturating_sub(injected_429);
    println!(
        "429s sent by the fake: {} ({injected_429} in injected blocks, {outside} outside)",
        stats.rate_limited
    );
    if outside > 0 {
        violations.push("429s outside the injected blocks".to_owned());
    }
    println!(
        "exports finished: {} (every id exactly once: {}); resumed after their replica died: \
         {}; resumes of any cause: {}",
        tally.exports_done,
        tally.exports_done as usize - tally.export_failures.len().min(tally.exports_done as usize),
        tally.exports_resumed_after_death,
        tally.resumes
    );
    for failure in &tally.export_failures {
        violations.push(failure.clone());
    }
    if tally.exports_done == 0 {
        violations.push("no export finished".to_owned());
    }
    if world.kills.load(Ordering::Relaxed) > 0 && tally.exports_resumed_after_death == 0 {
        violations.push("no export resumed after its replica died".to_owned());
    }
    for (index, replica) in world.replicas.iter().enumerate() {
        let replica = replica.lock().await;
        let end = replica.pid().map_or(0, procs::rss_kib);
        let start = replica.start_rss_kib;
        println!(
            "replica {index}: VmRSS {} MiB at its latest start, {} MiB at the end (bound: start + {} \
             MiB cache + {} MiB)",
            start / 1024,
            end / 1024,
            CACHE_MAX_MIB,
            RSS_SLACK_MIB
        );
        if end > start + (CACHE_MAX_MIB + RSS_SLACK_MIB) * 1024 {
            violations.push(format!("replica {index} grew past its bound"));
        }
    }
    if let Ok(errors) = world.errors.lock() {
        violations.extend(errors.iter().cloned());
    }
    for violation in &violations {
        println!("VIOLATION: {violation}");
    }
    println!(
        "{}",
        if violations.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    );
    Ok(violations.is_empty())
}
