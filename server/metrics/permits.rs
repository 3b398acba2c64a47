//! Permits in the metrics: each caller's series, resolved once per budget,
//! caller and priority (a label lookup hashes every value and takes a lock,
//! on every permit).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use crate::admission::{CallerName, Priority};

/// The series of one caller's permits on one budget at one priority.
#[derive(Debug)]
pub(super) struct PermitSeries {
    pub(super) granted: IntCounter,
    pub(super) refused: IntCounter,
    pub(super) wait: Histogram,
}

type Fold = foldhash::fast::RandomState;

/// By caller, the series at each priority (by [`index`]).
type ByCaller = HashMap<CallerName, [Option<Arc<PermitSeries>>; 2], Fold>;

/// The permit vectors, and the series resolved so far (as many as the
/// vectors hold: callers and budgets come from the policy).
#[derive(Debug)]
pub(super) struct PermitMetrics {
    permits: IntCounterVec,
    wait: HistogramVec,
    resolved: RwLock<HashMap<String, ByCaller, Fold>>,
}

impl PermitMetrics {
    /// Series of `permits` (labels budget, caller, priority, outcome) and
    /// `wait` (budget, caller, priority).
    pub(super) fn new(permits: IntCounterVec, wait: HistogramVec) -> Self {
        Self {
            permits,
            wait,
            resolved: RwLock::default(),
        }
    }

    /// The series of `caller`'s permits on `budget` at `priority`.
    pub(super) fn series(
        &self,
        budget: &str,
        caller: &CallerName,
        priority: Priority,
    ) -> Arc<PermitSeries> {
        let known = self
            .resolved
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(budget)
            .and_then(|callers| callers.get(&**caller))
            .and_then(|series| series[index(priority)].clone());
        if let Some(series) = known {
            return series;
        }
        let labels = [budget, &**caller, priority.as_str()];
        let outcome = |outcome| {
            self.permits
                .with_label_values(&[labels[0], labels[1], labels[2], outcome])
        };
        let series = Arc::new(PermitSeries {
            granted: outcome("granted"),
            refused: outcome("refused"),
            wait: self.wait.with_label_values(&labels),
        });
        self.resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(budget.to_owned())
            .or_default()
            .entry(caller.clone())
            .or_default()[index(priority)] = Some(series.clone());
        series
    }
}

fn index(priority: Priority) -> usize {
    match priority {
        Priority::Interactive => 0,
        Priority::Bulk => 1,
    }
}
