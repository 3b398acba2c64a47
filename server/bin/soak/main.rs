//! `soak`: a bounded soak run of the broker against the embedded fake Clerk,
//! whose faults toggle every few seconds (5xx, timeouts, dropped connections,
//! slow answers, malformed JSON, 429 blocks with a long `Retry-After`, calm).
//!
//! Mixed load for `--minutes`: `GetUser` hits and misses, `BatchGetUsers`,
//! `ListUsers` streams and `AcquirePermit`, every call with a deadline. The
//! fake enforces the broker's own budget. At the end it prints calls made,
//! failures by status, p50/p99 latency, upstream requests, the 429s the fake
//! sent (injected blocks included), the most requests the fake saw in any
//! window against the limit, and the process's peak RSS (`VmHWM`); resident
//! memory (`VmRSS`) is printed every minute. Exits 1 if the budget was
//! exceeded, a call outlived its deadline by more than 1 s, or a hot id was
//! answered anything but a value or NOT_FOUND while its entry was fresh or
//! within `max_stale` (see `soak/hot.rs`).
//!
//! Run: `cargo run --release --bin soak -- --minutes 10` (on demand, not in CI).

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

#[path = "../shared/calls.rs"]
mod calls;
mod hot;

use calls::{code_of, timed};

use clap::Parser;
use clerk_broker::{
    admission::Rate,
    clerk::ClerkConfig,
    config::{Config, LookupConfig},
    fake::{FakeClerk, FakeClerkConfig, Faults, seed},
    pb::{
        AcquirePermitRequest, BatchGetUsersRequest, GetUserRequest, ListUsersRequest,
        quota_service_client::QuotaServiceClient, user_service_client::UserServiceClient,
    },
    secret::SecretKey,
    server::{self, Listeners},
};
use tokio::net::TcpListener;
use tonic::{Code, transport::Channel};

use hot::{HotWatch, Verdict};

/// How many ids (the first of the fake's users) are hot.
const HOT: usize = 200;

/// The key the fake accepts and the broker holds.
const KEY: &str = "sk_test_soak_0000000000000000";

/// Soak-tests the broker under mixed load while the fake Clerk's faults toggle.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// Length of the run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between fault switches.
    #[arg(long, default_value_t = 5)]
    switch_every: u64,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Users in the fake Clerk.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// The budget (broker and fake alike).
    #[arg(long, default_value = "100/1s")]
    rate: String,
}

/// What every call reports.
#[derive(Default)]
struct Tally {
    calls: u64,
    by_code: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
    /// Calls that ended more than 1 s after their deadline.
    overdue: u64,
}

impl Tally {
    fn record(&mut self, kind: &str, code: Code, took: Duration, deadline: Duration) {
        self.calls += 1;
        *self.by_code.entry(format!("{kind} {code:?}")).or_default() += 1;
        self.latencies_us
            .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        if took > deadline + Duration::from_secs(1) {
            self.overdue += 1;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("soak: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}

type SoakResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The fault modes cycled through, each for `--switch-every` seconds.
fn modes() -> Vec<(&'static str, Faults, Option<Duration>)> {
    let calm = Faults::default();
    vec![
        ("calm", calm.clone(), None),
        (
            "5xx",
            Faults {
                server_error_rate: 0.7,
                ..calm.clone()
            },
            None,
        ),
        (
            "timeouts",
            Faults {
                timeout_rate: 0.3,
                ..calm.clone()
            },
            None,
        ),
        ("calm", calm.clone(), None),
        (
            "drops",
            Faults {
                drop_rate: 0.5,
                ..calm.clone()
            },
            None,
        ),
        (
            "slow",
            Faults {
                latency: Duration::from_millis(800),
                ..calm.clone()
            },
            None,
        ),
        (
            "malformed",
            Faults {
                malformed_rate: 0.5,
                ..calm.clone()
            },
            None,
        ),
        ("429 block", calm, Some(Duration::from_secs(4))),
    ]
}

async fn soak(args: Args) -> SoakResult<bool> {
    let rate: Rate = args.rate.parse()?;
    let users = seed::synthetic_users(args.users, 11);
    let ids: Arc<Vec<String>> = Arc::new(
        users
            .iter()
            .filter_map(|user| user["id"].as_str().map(str::to_owned))
            .collect(),
    );
    let mut fake_config = FakeClerkConfig::new(KEY);
    fake_config.rate_limit = Some((rate.limit, rate.window));
    let fake = FakeClerk::new(fake_config, users);
    let url = fake.spawn().await?;
    let clerk = ClerkConfig {
        base_url: url.parse()?,
        secret_key: SecretKey::parse(KEY)?,
        request_timeout: Duration::from_secs(2),
        max_attempts: 4,
    };
    let mut config = Config::with_defaults("127.0.0.1:0".parse()?, clerk, rate);
    // Room for every user: an entry is then dropped only past `max_stale`,
    // so a hot id fetched once always has an answer to give (with a smaller
    // cache, moka may evict a hot entry for size, and the watch could not
    // tell a lost entry from a broker that failed to serve one).
    config.lookup = LookupConfig {
        cache_ttl: Duration::from_secs(20),
        cache_max_entries: 2 * args.users as u64,
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
    let watch = Arc::new(HotWatch::new(
        config.lookup.cache_ttl,
        config.lookup.max_stale,
    ));
    tokio::spawn(server::run(listeners, config, std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;

    let run_for = Duration::from_secs_f64(args.minutes.max(0.05) * 60.0);
    println!(
        "soak: {:.1} min, {} clients, budget {rate}, {} users, faults switch every {} s",
        args.minutes, args.clients, args.users, args.switch_every
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let phase = Arc::new(Mutex::new("calm"));
    let started = Instant::now();
    let switcher = {
        let (fake, stop, phase) = (fake.clone(), stop.clone(), phase.clone());
        let every = Duration::from_secs(args.switch_every.max(1));
        tokio::spawn(async move {
            for (name, faults, block) in modes().into_iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut phase) = phase.lock() {
                    *phase = name;
                }
                println!("  faults: {name}");
                fake.set_faults(faults);
                if let Some(retry_after) = block {
                    fake.block_for(retry_after);
                }
                tokio::time::sleep(every).await;
            }
            fake.set_faults(Faults::default());
        })
    };
    let memory = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            every.tick().await;
            println!(
                "  t={:.0} min: VmRSS {} MiB",
                started.elapsed().as_secs_f64() / 60.0,
                status_kib("VmRSS:") / 1024
            );
        }
    });
    let mut callers = Vec::new();
    for client in 0..args.clients {
        let caller = Caller {
            channel: channel.clone(),
            ids: ids.clone(),
            stop: stop.clone(),
            tally: tally.clone(),
            phase: phase.clone(),
            watch: watch.clone(),
        };
        callers.push(tokio::spawn(async move { caller.run(client).await }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    switcher.await?;
    memory.abort();

    let tally = tally.lock().map_err(|_| "a caller panicked")?;
    let mut latencies = tally.latencies_us.clone();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        Duration::from_micros(latencies.get(index).copied().unwrap_or(0))
    };
    let stats = fake.stats();
    println!("\n== soak results ==");
    println!("calls: {}", tally.calls);
    for (kind, count) in &tally.by_code {
        println!("  {kind}: {count}");
    }
    println!(
        "latency p50 {:?}, p99 {:?}, max {:?}",
        percentile(0.50),
        percentile(0.99),
        percentile(1.0)
    );
    println!("calls ending > 1 s after their deadline: {}", tally.overdue);
    println!(
        "upstream requests (fake): {} (list {}, count {}, get {}); injected 5xx {}",
        stats.requests,
        stats.list_requests,
        stats.count_requests,
        stats.get_requests,
        stats.server_errors
    );
    println!(
        "429s sent by the fake (injected blocks included): {}",
        stats.rate_limited
    );
    println!(
        "most requests in any {:?} window: {} (limit {})",
        rate.window, stats.max_in_window, rate.limit
    );
    let (cold, violations, details) = watch.report();
    println!(
        "hot ids failed with no servable entry (never fetched yet, or past max_stale): {cold}"
    );
    for detail in watch.cold_details() {
        println!("  {detail}");
    }
    println!("hot ids failed while their entry was fresh or within max_stale: {violations}");
    for detail in details {
        println!("  {detail}");
    }
    println!(
        "RSS: {} MiB now, peak {} MiB",
        status_kib("VmRSS:") / 1024,
        status_kib("VmHWM:") / 1024
    );
    let ok = stats.max_in_window <= u64::from(rate.limit) && tally.overdue == 0 && violations == 0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

/// One caller: a mix of hits (a small hot set), misses (anywhere), batches,
/// short exports and permits, until `stop`.
struct Caller {
    channel: Channel,
    ids: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    /// The fault phase now.
    phase: Arc<Mutex<&'static str>>,
    watch: Arc<HotWatch>,
}

impl Caller {
    async fn run(self, client: usize) {
        let Self {
            channel,
            ids,
            stop,
            tally,
            ..
        } = &self;
        let mut users = UserServiceClient::new(channel.clone());
        let mut quota = QuotaServiceClient::new(channel.clone());
        let mut turn = client;
        while !stop.load(Ordering::Relaxed) {
            turn += 1;
            let deadline = Duration::from_millis(1_000);
            let started = Instant::now();
            let (kind, code) = match turn % 10 {
                0..=4 => {
                    let id = ids[fastrand::usize(..ids.len().min(HOT))].clone();
                    ("GetUser hot", self.hot(&mut users, id, deadline).await)
                }
                5 | 6 => {
                    let id = ids[fastrand::usize(..ids.len())].clone();
                    let code = code_of(
                        users
                            .get_user(timed(GetUserRequest { user_id: id }, deadline))
                            .await,
                    );
                    ("GetUser any", code)
                }
                7 => {
                    let user_ids = (0..20)
                        .map(|_| ids[fastrand::usize(..ids.len())].clone())
                        .collect();
                    let request = timed(BatchGetUsersRequest { user_ids }, deadline);
                    (
                        "BatchGetUsers",
                        code_of(users.batch_get_users(request).await),
                    )
                }
                8 => {
                    let request = timed(
                        AcquirePermitRequest {
                            cost: 1,
                            ..Default::default()
                        },
                        deadline,
                    );
                    (
                        "AcquirePermit",
                        code_of(quota.acquire_permit(request).await),
                    )
                }
                _ => {
                    let request = timed(
                        ListUsersRequest {
                            page_size: 100,
                            max_users: 300,
                            ..Default::default()
                        },
                        Duration::from_secs(5),
                    );
                    let code = match users.list_users(request).await {
                        Ok(response) => {
                            let mut stream = response.into_inner();
                            loop {
                                match stream.message().await {
                                    Ok(Some(_)) => {}
                                    Ok(None) => break Code::Ok,
                                    Err(status) => break status.code(),
                                }
                            }
                        }
                        Err(status) => status.code(),
                    };
                    ("ListUsers", code)
                }
            };
            let limit = if kind == "ListUsers" {
                Duration::from_secs(5)
            } else {
                deadline
            };
            if let Ok(mut tally) = tally.lock() {
                tally.record(kind, code, started.elapsed(), limit);
            }
        }
    }

    /// A `GetUser` of hot `id`, judged by the watch.
    async fn hot(
        &self,
        users: &mut UserServiceClient<Channel>,
        id: String,
        deadline: Duration,
    ) -> Code {
        let sent = Instant::now();
        let answer = users
            .get_user(timed(
                GetUserRequest {
                    user_id: id.clone(),
                },
                deadline,
            ))
            .await;
        let phase = self.phase.lock().map_or("?", |phase| *phase);
        let (code, verdict) = match &answer {
            Ok(response) => {
                let cache = response
                    .metadata()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok());
                (Code::Ok, self.watch.record(&id, sent, cache, None, phase))
            }
            Err(status) => (
                status.code(),
                self.watch.record(
                    &id,
                    sent,
                    None,
                    Some((status.code(), status.message())),
                    phase,
                ),
            ),
        };
        if verdict == Verdict::Violation {
            eprintln!("soak: hot id {id} answered {code:?} while its entry was servable");
        }
        code
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS:` resident now, `VmHWM:`
/// its peak); 0 where unknown.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
