//! Prometheus metrics: what the broker is doing, for operators.
//!
//! Events are recorded as they happen (gRPC calls through [`GrpcMetricsLayer`],
//! upstream answers, admission grants and refusals through the domain's event
//! traits); budget gauges are read when `/metrics` is scraped. Metric names
//! are listed in ARCHITECTURE.md and used by the dashboard in `deploy/`.
//!
//! Every label value comes from a bounded set, never from what a client
//! sends: gRPC methods are the broker's own (its services, health and
//! reflection, read from their descriptors) or [`UNKNOWN_METHOD`]; budgets
//! and callers come from the configuration (a request naming an unknown
//! budget is refused before admission records anything); endpoints, codes,
//! priorities and outcomes are the broker's constants.

mod grpc;
mod permits;

use std::{collections::HashMap, sync::Arc, time::Duration};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{
    admission::{Admission, AdmissionEvents, Demand},
    clerk::UpstreamEvents,
    reload::ReloadStats,
    users::{LookupEvents, Users},
};

pub use grpc::{GrpcMetrics, GrpcMetricsLayer, MethodMetrics};

/// The `method` label of every call to a path the broker does not serve:
/// made-up paths must not add series (each would live for good).
pub const UNKNOWN_METHOD: &str = "unknown";

/// Every metric of one broker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The series of the gRPC paths (`/package.Service/Method`) labelled by
    /// name.
    /// Looked up on every call (keys fixed at start: no hash flooding).
    known_methods: HashMap<Arc<str>, Arc<MethodMetrics>, foldhash::fast::RandomState>,
    /// The series of every other path.
    unknown_method: Arc<MethodMetrics>,
    front_requests: IntCounterVec,
    front_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_rate_limited: IntCounter,
    permits: permits::PermitMetrics,
    budget_pauses: IntCounterVec,
    redis_degraded: IntGaugeVec,
    budget_limit: IntGaugeVec,
    budget_available: IntGaugeVec,
    budget_in_flight: IntGaugeVec,
    queue_depth: IntGaugeVec,
    policy_reloads: IntCounterVec,
    cache_entries: IntGaugeVec,
    cache_evictions: IntCounter,
    coalesced_waiters: IntCounter,
    batch_sizes: prometheus::Histogram,
    exports_active: prometheus::IntGauge,
    lookups_in_flight: prometheus::IntGauge,
}

/// Latency buckets, in seconds: 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let upstream_rate_limited = IntCounter::new(
            "clerk_broker_upstream_rate_limited_total",
            "Upstream answers with HTTP 429 (the key's budget was spent elsewhere).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(upstream_rate_limited.clone()))
            .expect("unique metric");
        let cache_evictions = IntCounter::new(
            "clerk_broker_cache_evictions_total",
            "Users evicted from the cache to keep it within its bounds.",
        )
        .expect("valid metric");
        let coalesced_waiters = IntCounter::new(
            "clerk_broker_coalesced_waiters_total",
            "Cache misses that joined a request already in the air for the same id.",
        )
        .expect("valid metric");
        let batch_sizes = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "clerk_broker_batch_size",
                "Ids per batched upstream list request.",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]),
        )
        .expect("valid metric");
        let exports_active = prometheus::IntGauge::new(
            "clerk_broker_exports_active",
            "ListUsers exports running now.",
        )
        .expect("valid metric");
        let lookups_in_flight = prometheus::IntGauge::new(
            "clerk_broker_lookups_in_flight",
            "User ids on their way to Clerk now (one coalesced flight each).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(lookups_in_flight.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(cache_evictions.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(coalesced_waiters.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(batch_sizes.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(exports_active.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(crate::telemetry::dropped_spans().clone()))
            .expect("unique metric");
        let grpc_calls = counter(
            "clerk_broker_grpc_calls_total",
            "gRPC calls by method (\"unknown\": a path the broker does not serve) and status code.",
            &["method", "code"],
        );
        let grpc_duration = histogram(
            "clerk_broker_grpc_call_duration_seconds",
            "Time to the response headers of gRPC calls, by method.",
            &["method"],
        );
        let cache_lookups = counter(
            "clerk_broker_cache_lookups_total",
            "GetUser/BatchGetUsers answers by cache result (hit, miss, stale).",
            &["result"],
        );
        let series = |name: Arc<str>| {
            Arc::new(MethodMetrics::new(
                name,
                &grpc_calls,
                &grpc_duration,
                &cache_lookups,
            ))
        };
        Self {
            known_methods: grpc::known_methods()
                .into_iter()
                .map(|path| (path.clone(), series(path)))
                .collect(),
            unknown_method: series(Arc::from(UNKNOWN_METHOD)),
            cache_evictions,
            coalesced_waiters,
            batch_sizes,
            exports_active,
            lookups_in_flight,
            front_requests: counter(
                "clerk_broker_clerk_api_requests_total",
                "Requests to the Clerk-compatible front by route template, caller and HTTP status.",
                &["route", "caller", "status"],
            ),
            front_duration: histogram(
                "clerk_broker_clerk_api_request_duration_seconds",
                "Time to the answer of requests to the Clerk-compatible front, by route template.",
                &["route"],
            ),
            upstream_requests: counter(
                "clerk_broker_upstream_requests_total",
                "Requests to Clerk by endpoint and HTTP status (\"error\": no answer).",
                &["endpoint", "status"],
            ),
            upstream_duration: histogram(
                "clerk_broker_upstream_request_duration_seconds",
                "Duration of requests to Clerk, by endpoint.",
                &["endpoint"],
            ),
            upstream_rate_limited,
            permits: permits::PermitMetrics::new(
                counter(
                    "clerk_broker_permits_total",
                    "Admission decisions by budget, caller, priority and outcome (granted/refused).",
                    &["budget", "caller", "priority", "outcome"],
                ),
                histogram(
                    "clerk_broker_permit_wait_seconds",
                    "Time granted requests waited in the budget's queue.",
                    &["budget", "caller", "priority"],
                ),
            ),
            budget_pauses: counter(
                "clerk_broker_budget_pauses_total",
                "Pauses of a budget after an upstream 429.",
                &["budget"],
            ),
            redis_degraded: gauge(
                "clerk_broker_redis_degraded",
                "1 while a shared budget runs degraded (Redis unreachable: held off, then alone on its share), else 0; absent without --redis-url.",
                &["budget"],
            ),
            budget_limit: gauge(
                "clerk_broker_budget_limit",
                "Requests a budget allows per window.",
                &["budget"],
            ),
            budget_available: gauge(
                "clerk_broker_budget_available",
                "Requests a budget could admit right now.",
                &["budget"],
            ),
            budget_in_flight: gauge(
                "clerk_broker_budget_in_flight",
                "Admitted requests of a budget that have not finished.",
                &["budget"],
            ),
            queue_depth: gauge(
                "clerk_broker_queue_depth",
                "Units waiting in a budget's queue, by priority.",
                &["budget", "priority"],
            ),
            cache_entries: gauge(
                "clerk_broker_cache_size",
                "The user cache now: entries, and their weight in bytes.",
                &["measure"],
            ),
            policy_reloads: counter(
                "clerk_broker_policy_reloads_total",
                "Policy file reloads by outcome (applied/rejected).",
                &["outcome"],
            ),
            registry,
        }
    }

    /// The series of calls to `path`: its method's (labelled with the path
    /// itself) if it is one of the broker's methods, else those of
    /// [`UNKNOWN_METHOD`].
    pub fn method(&self, path: &str) -> &Arc<MethodMetrics> {
        self.known_methods.get(path).unwrap_or(&self.unknown_method)
    }

    /// Records one request to the Clerk-compatible front (`route` is a
    /// template, never holding an id; `caller` a policy name or `unknown`).
    pub fn front_request(&self, route: &str, caller: &str, status: u16, duration: Duration) {
        let status = status.to_string();
        self.front_requests
            .with_label_values(&[route, caller, &status])
            .inc();
        self.front_duration
            .with_label_values(&[route])
            .observe(duration.as_secs_f64());
    }

    /// The registry, for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric, gauges read now.
    pub fn render(&self, admission: &Admission, reloads: &ReloadStats, users: &Users) -> String {
        self.lookups_in_flight
            .set(i64::try_from(users.flights_in_air()).unwrap_or(i64::MAX));
        let (entries, bytes) = users.cache().size();
        for (measure, value) in [("entries", entries), ("bytes", bytes)] {
            self.cache_entries
                .with_label_values(&[measure])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        for budget in admission.snapshots() {
            let name = budget.name.as_str();
            // Present from the start, at 0, so dashboards and alerts see it.
            self.budget_pauses.with_label_values(&[name]);
            self.budget_limit
                .with_label_values(&[name])
                .set(i64::from(budget.rate.limit));
            self.budget_available
                .with_label_values(&[name])
                .set(i64::from(budget.available));
            self.budget_in_flight
                .with_label_values(&[name])
                .set(i64::from(budget.in_flight));
            if let Some(degraded) = admission
                .budget(name)
                .ok()
                .and_then(|budget| budget.is_degraded())
            {
                self.redis_degraded
                    .with_label_values(&[name])
                    .set(i64::from(degraded));
            }
            for (priority, queued) in [
                ("interactive", budget.queued_interactive),
                ("bulk", budget.queued_bulk),
            ] {
                self.queue_depth
                    .with_label_values(&[name, priority])
                    .set(i64::try_from(queued).unwrap_or(i64::MAX));
            }
        }
        for (outcome, total) in [
            ("applied", reloads.applied()),
            ("rejected", reloads.rejected()),
        ] {
            let counter = self.policy_reloads.with_label_values(&[outcome]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AdmissionEvents for Metrics {
    fn granted(&self, budget: &str, demand: &Demand, cost: u32, waited: Duration) {
        let series = self.permits.series(budget, &demand.caller, demand.priority);
        series.granted.inc_by(u64::from(cost));
        series.wait.observe(waited.as_secs_f64());
    }

    fn refused(&self, budget: &str, demand: &Demand, cost: u32) {
        self.permits
            .series(budget, &demand.caller, demand.priority)
            .refused
            .inc_by(u64::from(cost));
    }

    fn paused(&self, budget: &str) {
        self.budget_pauses.with_label_values(&[budget]).inc();
    }
}

impl UpstreamEvents for Metrics {
    fn answered(&self, endpoint: &str, status: Option<u16>, duration: Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |code| code.to_string());
        if status == "429" {
            self.upstream_rate_limited.inc();
        }
        self.upstream_requests
            .with_label_values(&[endpoint, &status])
            .inc();
        self.upstream_duration
            .with_label_values(&[endpoint])
            .observe(duration.as_secs_f64());
    }
}

impl LookupEvents for Metrics {
    fn coalesced(&self) {
        self.coalesced_waiters.inc();
    }

    fn batch_sent(&self, ids: usize) {
        self.batch_sizes.observe(ids as f64);
    }

    fn evicted(&self) {
        self.cache_evictions.inc();
    }

    fn export(&self, started: bool) {
        if started {
            self.exports_active.inc();
        } else {
            self.exports_active.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{ANONYMOUS, BudgetSpec, Rate};

    #[tokio::test]
    async fn admission_events_and_budget_gauges_are_exported() {
        let metrics = Arc::new(Metrics::new());
        let rate = Rate {
            limit: 1,
            window: Duration::from_secs(60),
        };
        let admission = Admission::observed(BudgetSpec::new(rate), Vec::new(), metrics.clone());
        let demand = Demand::interactive(
            ANONYMOUS.into(),
            tokio::time::Instant::now() + Duration::from_millis(10),
        );
        drop(admission.upstream().acquire(&demand, 1).await.unwrap());
        assert!(admission.upstream().acquire(&demand, 1).await.is_err());
        admission
            .upstream()
            .pause_until(tokio::time::Instant::now());
        metrics.answered("GET /users", Some(429), Duration::from_millis(3));
        let clerk = crate::clerk::ClerkClient::new(
            crate::clerk::ClerkConfig {
                base_url: "http://127.0.0.1:9/v1".parse().unwrap(),
                secret_key: crate::secret::SecretKey::parse("sk_test_metrics").unwrap(),
                request_timeout: Duration::from_secs(1),
                max_attempts: 1,
            },
            Arc::new(Admission::new(BudgetSpec::new(rate), Vec::new())),
        )
        .unwrap();
        let users = Users::new(Arc::new(clerk), &crate::config::LookupConfig::default());
        let text = metrics.render(&admission, &ReloadStats::default(), &users);
        for line in [
            r#"clerk_broker_permits_total{budget="clerk",caller="anonymous",outcome="granted",priority="interactive"} 1"#,
            r#"clerk_broker_permits_total{budget="clerk",caller="anonymous",outcome="refused",priority="interactive"} 1"#,
            r#"clerk_broker_budget_limit{budget="clerk"} 1"#,
            r#"clerk_broker_budget_available{budget="clerk"} 0"#,
            r#"clerk_broker_budget_pauses_total{budget="clerk"} 1"#,
            r#"clerk_broker_upstream_requests_total{endpoint="GET /users",status="429"} 1"#,
            "clerk_broker_upstream_rate_limited_total 1",
            r#"clerk_broker_policy_reloads_total{outcome="applied"} 0"#,
            r#"clerk_broker_cache_size{measure="entries"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }
}
