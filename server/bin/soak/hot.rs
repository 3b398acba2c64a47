//! `HotWatch`: what the soak checks of hot ids. Once a hot id was fetched
//! from Clerk (an answer marked `x-cache: miss`), the broker holds its entry
//! fresh for the TTL and servable as stale for `max_stale` more: until then,
//! every answer about it must be a value or NOT_FOUND, whatever Clerk does.
//! A failure is a violation; a failure before the first fetch, or after the
//! entry ran out, is a cold miss (Clerk's fault, not the cache's).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tonic::Code;

/// Most violations kept in full for the report.
const KEPT: usize = 20;

/// The hot ids' last fetches and what went wrong.
pub(crate) struct HotWatch {
    /// How long an entry is fresh, then servable as stale.
    ttl: Duration,
    max_stale: Duration,
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When the call that last fetched each id from Clerk started (its entry
    /// was stored no earlier).
    fetched: HashMap<String, Instant>,
    /// Failures of ids never fetched, or whose entry ran out.
    cold: u64,
    violations: u64,
    details: Vec<String>,
    /// The first cold failures in full.
    cold_details: Vec<String>,
}

/// What the watch concluded of one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A value or NOT_FOUND.
    Answered,
    /// A failure with no servable entry: Clerk's fault.
    Cold,
    /// A failure while the entry was fresh or within `max_stale`.
    Violation,
}

impl HotWatch {
    pub(crate) fn new(ttl: Duration, max_stale: Duration) -> Self {
        Self {
            ttl,
            max_stale,
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records the answer to a `GetUser` of hot `id` started at `sent`:
    /// `cache` is its `x-cache` header on success, `failure` its status
    /// otherwise; `phase` is the fault phase, for the report.
    pub(crate) fn record(
        &self,
        id: &str,
        sent: Instant,
        cache: Option<&str>,
        failure: Option<(Code, &str)>,
        phase: &str,
    ) -> Verdict {
        let Ok(mut inner) = self.inner.lock() else {
            return Verdict::Answered;
        };
        let Some((code, message)) = failure.filter(|(code, _)| *code != Code::NotFound) else {
            if failure.is_none() && cache == Some("miss") {
                let last = inner.fetched.entry(id.to_owned()).or_insert(sent);
                *last = (*last).max(sent);
            }
            return Verdict::Answered;
        };
        let servable = inner
            .fetched
            .get(id)
            .is_some_and(|fetched| sent < *fetched + self.ttl + self.max_stale);
        let at = sent.duration_since(self.started).as_secs_f64();
        let fetched = match inner.fetched.get(id) {
            Some(fetched) => format!(
                "fetched {:.1}s before",
                sent.duration_since(*fetched).as_secs_f64()
            ),
            None => "never fetched".to_owned(),
        };
        let detail = format!("t={at:.1}s phase={phase} id={id} {fetched}: {code:?} {message}");
        let inner = &mut *inner;
        let (verdict, count, details) = if servable {
            (
                Verdict::Violation,
                &mut inner.violations,
                &mut inner.details,
            )
        } else {
            (Verdict::Cold, &mut inner.cold, &mut inner.cold_details)
        };
        *count += 1;
        if details.len() < KEPT {
            details.push(detail);
        }
        verdict
    }

    /// Failures of cold ids, violations, and the first violations in full.
    pub(crate) fn report(&self) -> (u64, u64, Vec<String>) {
        self.inner.lock().map_or((0, 0, Vec::new()), |inner| {
            (inner.cold, inner.violations, inner.details.clone())
        })
    }

    /// The first failures of cold ids in full.
    pub(crate) fn cold_details(&self) -> Vec<String> {
        self.inner
            .lock()
            .map_or_else(|_| Vec::new(), |inner| inner.cold_details.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: Option<(Code, &str)> = Some((Code::Unavailable, "down"));

    #[test]
    fn a_failure_is_a_violation_only_while_the_last_fetch_is_servable() {
        let watch = HotWatch::new(Duration::from_secs(20), Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(watch.record("a", at(0), None, FAILED, "5xx"), Verdict::Cold);
        let found = watch.record("a", at(1), Some("miss"), None, "calm");
        assert_eq!(found, Verdict::Answered);
        // A hit or a stale answer does not renew the entry.
        watch.record("a", at(70), Some("hit"), None, "calm");
        watch.record("a", at(75), Some("stale"), None, "calm");
        let not_found = Some((Code::NotFound, "gone"));
        assert_eq!(
            watch.record("a", at(5), None, not_found, "calm"),
            Verdict::Answered
        );
        assert_eq!(
            watch.record("a", at(80), None, FAILED, "5xx"),
            Verdict::Violation
        );
        assert_eq!(
            watch.record("a", at(81), None, FAILED, "5xx"),
            Verdict::Cold
        );
        assert_eq!(
            watch.record("b", at(10), None, FAILED, "5xx"),
            Verdict::Cold
        );
        let (cold, violations, details) = watch.report();
        assert_eq!((cold, violations, details.len()), (3, 1, 1));
        assert!(details[0].contains("id=a") && details[0].contains("Unavailable"));
        let cold = watch.cold_details();
        assert!(cold[0].contains("never fetched") && cold[1].contains("fetched 80.0s before"));
    }
}
