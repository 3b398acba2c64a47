//! The load of the chaos run: callers (`GetUser` hits and misses,
//! `BatchGetUsers`, `AcquirePermit`) spread over the replicas, and exporters
//! that page through every user with `ListUsers`, resuming on another replica
//! whenever theirs fails.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clerk_broker::pb::{
    AcquirePermitRequest, BatchGetUsersRequest, GetUserRequest, ListUsersRequest,
    quota_service_client::QuotaServiceClient, user_service_client::UserServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::calls::{code_of, timed};

/// Deadline of every unary call.
const DEADLINE: Duration = Duration::from_millis(1_000);
/// Deadline of one `ListUsers` call (a resumed export makes a new one).
const EXPORT_DEADLINE: Duration = Duration::from_secs(30);
/// Failed `ListUsers` calls in a row after which an export is given up.
const MAX_EXPORT_FAILURES: u32 = 60;

/// What the replicas look like to the load: a lazy channel to each, and how
/// many times each was started (a change means it died in between).
pub(crate) struct Targets {
    pub(crate) channels: Vec<Channel>,
    pub(crate) generations: Vec<AtomicU64>,
    /// Exports streaming from each replica now.
    pub(crate) exporting: Vec<AtomicU64>,
}

/// What the load saw.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) by_code: BTreeMap<String, u64>,
    /// Calls that ended more than 1 s after their deadline.
    pub(crate) overdue: u64,
    pub(crate) exports_done: u64,
    /// Exports that finished after resuming on another replica because
    /// theirs was killed mid-stream.
    pub(crate) exports_resumed_after_death: u64,
    /// Resumes of any cause (Clerk faults, budget, a dead replica).
    pub(crate) resumes: u64,
    /// Exports whose ids were not the full set exactly once, or given up.
    pub(crate) export_failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: &str, code: Code, took: Duration, deadline: Duration) {
        self.calls += 1;
        *self.by_code.entry(format!("{kind} {code:?}")).or_default() += 1;
        if took > deadline + Duration::from_secs(1) {
            self.overdue += 1;
        }
    }
}

/// One caller: a mix of hits (a hot set), misses, batches and permits on
/// a replica chosen at random for each call, until `stop`.
pub(crate) async fn caller(
    targets: Arc<Targets>,
    ids: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut turn = fastrand::usize(..10);
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let channel = targets.channels[fastrand::usize(..targets.channels.len())].clone();
        let mut users = UserServiceClient::new(channel.clone());
        let started = Instant::now();
        let (kind, code) = match turn % 10 {
            0..=4 => {
                let id = ids[fastrand::usize(..ids.len().min(100))].clone();
                let request = timed(GetUserRequest { user_id: id }, DEADLINE);
                ("GetUser hot", code_of(users.get_user(request).await))
            }
            5 | 6 => {
                let id = ids[fastrand::usize(..ids.len())].clone();
                let request = timed(GetUserRequest { user_id: id }, DEADLINE);
                ("GetUser any", code_of(users.get_user(request).await))
            }
            7 | 8 => {
                let user_ids = (0..20)
                    .map(|_| ids[fastrand::usize(..ids.len())].clone())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                let request = timed(BatchGetUsersRequest { user_ids }, DEADLINE);
                let code = code_of(users.batch_get_users(request).await);
                ("BatchGetUsers", code)
            }
            _ => {
                let request = timed(
                    AcquirePermitRequest {
                        cost: 1,
                        ..Default::default()
                    },
                    DEADLINE,
                );
                let code = code_of(
                    QuotaServiceClient::new(channel)
                        .acquire_permit(request)
                        .await,
                );
                ("AcquirePermit", code)
            }
        };
        let took = started.elapsed();
        if let Ok(mut tally) = tally.lock() {
            tally.record(kind, code, took, DEADLINE);
        }
        if code == Code::Unavailable {
            // A dead replica refuses at once: do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One exporter: exports every user again and again until `stop`, each
/// export resuming on the next replica whenever a call fails, and checks
/// that it got every id exactly once.
pub(crate) async fn exporter(
    first: usize,
    targets: Arc<Targets>,
    all: Arc<HashSet<String>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut replica = first;
    while !stop.load(Ordering::Relaxed) {
        let mut seen: Vec<String> = Vec::with_capacity(all.len());
        let mut token = String::new();
        let mut failures = 0;
        let mut resumed_after_death = false;
        let finished = loop {
            if stop.load(Ordering::Relaxed) {
                break false;
            }
            let generation = targets.generations[replica].load(Ordering::SeqCst);
            targets.exporting[replica].fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            let resume = token.clone();
            let outcome = stream(&targets.channels[replica], &resume, &mut seen, &mut token).await;
            targets.exporting[replica].fetch_sub(1, Ordering::SeqCst);
            if let Ok(mut tally) = tally.lock() {
                let code = outcome.err().unwrap_or(Code::Ok);
                tally.record("ListUsers", code, started.elapsed(), EXPORT_DEADLINE);
            }
            match outcome {
                Ok(()) => break true,
                Err(_) => {
                    failures += 1;
                    if failures > MAX_EXPORT_FAILURES {
                        if let Ok(mut tally) = tally.lock() {
                            tally
                                .export_failures
                                .push(format!("an export gave up after {failures} failures"));
                        }
                        break false;
                    }
                    if token.is_empty() {
                        // Nothing to resume from: the export starts over.
                        seen.clear();
                    }
                    let died = targets.generations[replica].load(Ordering::SeqCst) != generation;
                    if died && !token.is_empty() {
                        resumed_after_death = true;
                    }
                    if let Ok(mut tally) = tally.lock() {
                        tally.resumes += 1;
                    }
                    replica = (replica + 1) % targets.channels.len();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if !finished {
            continue;
        }
        let distinct: HashSet<&String> = seen.iter().collect();
        let exact = seen.len() == all.len()
            && distinct.len() == seen.len()
            && distinct.iter().all(|id| all.contains(*id));
        if let Ok(mut tally) = tally.lock() {
            tally.exports_done += 1;
            if resumed_after_death {
                tally.exports_resumed_after_death += 1;
            }
            if !exact {
                tally.export_failures.push(format!(
                    "an export got {} ids ({} distinct) of {}",
                    seen.len(),
                    distinct.len(),
                    all.len()
                ));
            }
        }
        replica = (replica + 1) % targets.channels.len();
    }
}

/// One `ListUsers` call from `resume` (empty: the start), adding the ids it
/// streams to `seen` and keeping the last token in `token`.
async fn stream(
    channel: &Channel,
    resume: &str,
    seen: &mut Vec<String>,
    token: &mut String,
) -> Result<(), Code> {
    let request = timed(
        ListUsersRequest {
            page_size: 200,
            resume_token: resume.to_owned(),
            ..Default::default()
        },
        EXPORT_DEADLINE,
    );
    let mut users = UserServiceClient::new(channel.clone());
    let mut stream = users
        .list_users(request)
        .await
        .map_err(|status| status.code())?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(page)) => {
                seen.extend(page.users.into_iter().map(|user| user.id));
                *token = page.resume_token;
            }
            Ok(None) => return Ok(()),
            Err(status) => return Err(status.code()),
        }
    }
}
