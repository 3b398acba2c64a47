//! Keyed budgets: one [`Budget`] per key of a per-endpoint limit (Clerk's
//! "10 per 10 s per user" on user updates, "100 per hour" on invitations…),
//! made when a key is first used and dropped once it has been idle long
//! enough that its window is empty, so memory stays bounded by the keys in
//! use.
//!
//! A keyed budget is an ordinary budget (same fairness, deadlines, pauses;
//! shared through the lease store under the name `limit/key` when one is
//! configured), so everything proven of budgets holds per key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::time::Instant;

use super::{AdmissionEvents, Budget, BudgetSpec, LeaseStore, make_budget};

/// One keyed budget and when it was last handed out.
#[derive(Debug)]
struct Entry {
    budget: Arc<Budget>,
    last_used: Instant,
}

/// The budgets of one per-endpoint limit, by key.
#[derive(Debug)]
pub struct KeyedBudgets {
    /// The limit's name (metrics, logs, the store's key prefix).
    name: String,
    /// The spec of every key's budget; changed in place on reload.
    spec: Mutex<BudgetSpec>,
    entries: Mutex<HashMap<String, Entry>>,
    events: Arc<dyn AdmissionEvents>,
    store: Option<Arc<dyn LeaseStore>>,
}

impl KeyedBudgets {
    /// Budgets of `spec` per key, named `name/key`.
    pub(super) fn new(
        name: &str,
        spec: BudgetSpec,
        events: Arc<dyn AdmissionEvents>,
        store: Option<Arc<dyn LeaseStore>>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            spec: Mutex::new(spec),
            entries: Mutex::default(),
            events,
            store,
        }
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts `spec` in force for every key, existing budgets reconfigured in
    /// place (what they already admitted still counts).
    pub(super) fn reconfigure(&self, spec: BudgetSpec) {
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner) = spec.clone();
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.values() {
            entry.budget.reconfigure(spec.clone());
        }
    }

    fn spec(&self) -> BudgetSpec {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The budget of `key`, made on first use.
    pub fn budget(&self, key: &str) -> Arc<Budget> {
        let spec = self.spec();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let entry = entries.entry(key.to_owned()).or_insert_with(|| Entry {
            budget: make_budget(
                &format!("{}/{key}", self.name),
                spec,
                &self.events,
                self.store.as_ref(),
            ),
            last_used: now,
        });
        entry.last_used = now;
        entry.budget.clone()
    }

    /// Number of keys held now.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the budgets that nobody holds or waits on, whose window is
    /// empty (every unit available again: nothing in flight, nothing that
    /// finished within the window) and that were last handed out more than a
    /// window ago. A new budget for the key then starts from what the old one
    /// had left: nothing.
    pub(super) async fn expire_idle(&self) {
        let spec = self.spec();
        let idle_after = spec.rate.window + spec.margin;
        let full = spec.burst.unwrap_or(spec.rate.limit).min(spec.rate.limit);
        let now = Instant::now();
        let expired: Vec<Arc<Budget>> = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let mut expired = Vec::new();
            entries.retain(|_, entry| {
                let snapshot = entry.budget.snapshot();
                let idle = now.saturating_duration_since(entry.last_used) >= idle_after
                    && Arc::strong_count(&entry.budget) == 1
                    && snapshot.in_flight == 0
                    && snapshot.available >= full
                    && snapshot.queued_interactive + snapshot.queued_bulk == 0;
                if idle {
                    expired.push(entry.budget.clone());
                }
                !idle
            });
            expired
        };
        for budget in expired {
            // A shared budget hands its unused leases back.
            budget.leave().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Duration;

    use super::*;
    use crate::admission::{ANONYMOUS, Demand, NoEvents, Rate};

    fn keyed(limit: u32, window: Duration) -> KeyedBudgets {
        KeyedBudgets::new(
            "user-writes",
            BudgetSpec::new(Rate { limit, window }),
            Arc::new(NoEvents),
            None,
        )
    }

    fn demand(wait: Duration) -> Demand {
        Demand::interactive(ANONYMOUS.into(), Instant::now() + wait)
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_limit() {
        let budgets = keyed(2, Duration::from_secs(10));
        let a = budgets.budget("user_a");
        for _ in 0..2 {
            drop(a.acquire(&demand(Duration::ZERO), 1).await.unwrap());
        }
        assert!(a.acquire(&demand(Duration::ZERO), 1).await.is_err());
        let b = budgets.budget("user_b");
        assert!(b.acquire(&demand(Duration::ZERO), 1).await.is_ok());
        assert!(
            budgets
                .budget("user_a")
                .acquire(&demand(Duration::ZERO), 1)
                .await
                .is_err(),
            "the same key is the same budget"
        );
        assert_eq!(budgets.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_expire_only_once_their_window_is_empty() {
        let budgets = keyed(1, Duration::from_secs(10));
        {
            let budget = budgets.budget("user_a");
            drop(budget.acquire(&demand(Duration::ZERO), 1).await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        budgets.expire_idle().await;
        assert_eq!(budgets.len(), 1, "its window still counts the request");
        let held = budgets.budget("user_a");
        tokio::time::sleep(Duration::from_secs(20)).await;
        budgets.expire_idle().await;
        assert_eq!(budgets.len(), 1, "someone still holds it");
        drop(held);
        budgets.expire_idle().await;
        assert!(budgets.is_empty());
        // A fresh budget for the key: its old request left the window.
        assert!(
            budgets
                .budget("user_a")
                .acquire(&demand(Duration::ZERO), 1)
                .await
                .is_ok()
        );
    }
}
