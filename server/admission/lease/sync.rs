//! The sync task of a shared budget: its round trips with the store, at most
//! one at a time ([`LeaseSync`]), kept going while the budget exists.

use std::sync::{Arc, Weak};

use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

use super::{LeaseStore, Leased};
use crate::admission::Budget;

/// The round trips of one shared budget: at most one at a time, made by the
/// sync task or by an acquirer that found no slot.
#[derive(Debug)]
pub(crate) struct LeaseSync {
    store: Arc<dyn LeaseStore>,
    lock: tokio::sync::Mutex<()>,
}

impl LeaseSync {
    pub(crate) fn new(store: Arc<dyn LeaseStore>) -> Self {
        Self {
            store,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// One round trip for `budget`, unless `skip` (checked once the round
    /// trip lock is held) says it is no longer needed.
    pub(crate) async fn round(
        &self,
        budget: &Budget,
        leaving: bool,
        skip: impl FnOnce(&mut Leased) -> bool,
    ) {
        let _one_at_a_time = self.lock.lock().await;
        let Some(built) = budget.with_leased(|leased, queue| {
            if skip(leased) {
                return None;
            }
            Some(leased.build(Instant::now(), queue, leaving))
        }) else {
            return;
        };
        let Some((request, taken)) = built else {
            return;
        };
        let result = self.store.lease(budget.name(), &request).await;
        let changed =
            budget.with_leased(|leased, _| leased.apply(Instant::now(), &request, taken, result));
        if let Some(Some(degraded)) = changed {
            budget.degraded(degraded);
        }
        budget.wake_next_waiter();
    }
}

/// Keeps a shared budget's leases, reports and heartbeat going while the
/// budget exists.
pub(crate) async fn sync_task(budget: Weak<Budget>, sync: Arc<LeaseSync>, wake: Arc<Notify>) {
    loop {
        let Some(strong) = budget.upgrade() else {
            return;
        };
        sync.round(&strong, false, |_| false).await;
        let now = Instant::now();
        let Some((next, retry_at)) = strong.with_leased(|leased, queue| {
            let waiting = !queue.is_empty();
            (leased.next_round(now, waiting), leased.retry_at())
        }) else {
            return;
        };
        drop(strong);
        tokio::select! {
            () = wake.notified() => {
                // Woken by demand: not before the store said it is worth it,
                // and never more than one round trip per millisecond.
                let floor = Instant::now() + Duration::from_millis(1);
                let until = retry_at.map_or(floor, |at| at.max(floor));
                tokio::time::sleep_until(until.min(next)).await;
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}
