//! Configuration that changes without a restart: the policy file is re-read
//! on SIGHUP and whenever its content changes (checked every second, through
//! the path, so a Kubernetes ConfigMap update — a symlink swap — is seen).
//!
//! A new file is fully validated before anything changes; an invalid one is
//! rejected with a log line and a counter, and the old policy stays in force.
//! Budgets are reconfigured in place, so queued waiters survive a reload.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sha2::{Digest, Sha256};

use crate::{
    admission::{Admission, BudgetSpec, default_margin},
    callers::{Policy, PolicyStore},
    routes::keyed_specs,
};

/// How often the file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Outcomes of reloads, for operators.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Files put in force.
    applied: AtomicU64,
    /// Files rejected as invalid (the previous policy stayed).
    rejected: AtomicU64,
}

impl ReloadStats {
    /// Files put in force so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Files rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Re-reads the policy file at `path` when asked (SIGHUP) or when its
/// content changes, until the task is dropped.
pub async fn watch(
    path: PathBuf,
    store: Arc<PolicyStore>,
    admission: Arc<Admission>,
    upstream: BudgetSpec,
    stats: Arc<ReloadStats>,
) {
    let mut last = digest(&path);
    let mut hangup = hangups();
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = ticks.tick() => false,
            Some(()) = next_hangup(&mut hangup) => true,
        };
        let current = digest(&path);
        if !forced && current == last {
            continue;
        }
        last = current;
        match Policy::load(&path, default_margin) {
            Ok(policy) => {
                let mut spec = upstream.clone();
                spec.bulk_share = policy.bulk_share;
                admission.apply(Some(spec), policy.budgets.clone());
                admission.apply_keyed(keyed_specs(&policy.route_limits, default_margin));
                let callers = policy.callers().len();
                store.replace(Arc::new(policy));
                stats.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), callers, "policy reloaded");
            }
            Err(error) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "policy file rejected; the previous policy stays in force");
            }
        }
    }
}

/// The SHA-256 of the file's content, or None if it cannot be read.
fn digest(path: &PathBuf) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP; never, where signals cannot be watched.
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    std::future::pending().await
}
