//! gRPC calls in the metrics: the tower layer that counts them, the methods
//! whose names may be labels, and each method's series, resolved once.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use prost::Message as _;
use tonic::Code;
use tracing::Instrument as _;

use super::Metrics;

/// Code names as the gRPC ecosystem's metrics spell them (tonic's `Debug` of
/// `Code`), by code number; then the label of a call that failed in
/// transport, before any status.
const CODE_NAMES: [&str; 18] = [
    "Ok",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "Transport",
];

/// Headers read on every answer, named once (a name given as text is
/// parsed on each lookup).
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static X_CACHE: http::HeaderName = http::HeaderName::from_static("x-cache");

/// Where a call that failed in transport is counted in [`CODE_NAMES`].
const TRANSPORT: usize = 17;

/// The cache results a lookup reports in `x-cache`.
const CACHE_RESULTS: [&str; 3] = ["hit", "miss", "stale"];

/// The series of one method's calls, resolved once: looking a series up by
/// its label values hashes each value and takes a lock, on every call.
#[derive(Debug)]
pub struct MethodMetrics {
    /// The `method` label.
    name: Arc<str>,
    duration: Histogram,
    /// Calls by code (index in [`CODE_NAMES`]), each series made on its first
    /// call, so that codes never seen add no series.
    calls: [OnceLock<IntCounter>; 18],
    calls_by_code: IntCounterVec,
    /// Lookups by cache result (shared by every method).
    cache: [IntCounter; 3],
}

impl MethodMetrics {
    /// The series of method `name` in these vectors.
    pub(super) fn new(
        name: Arc<str>,
        calls: &IntCounterVec,
        duration: &HistogramVec,
        cache: &IntCounterVec,
    ) -> Self {
        Self {
            duration: duration.with_label_values(&[&*name]),
            calls: Default::default(),
            calls_by_code: calls.clone(),
            cache: CACHE_RESULTS.map(|result| cache.with_label_values(&[result])),
            name,
        }
    }

    /// The `method` label.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Records one call that ended with the code at `code` in
    /// [`CODE_NAMES`] after `elapsed`.
    fn record(&self, code: usize, elapsed: Duration) {
        self.calls[code]
            .get_or_init(|| {
                self.calls_by_code
                    .with_label_values(&[&*self.name, CODE_NAMES[code]])
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Records a lookup's cache result, if `x_cache` is one; returns it.
    fn record_cache(&self, x_cache: &[u8]) -> Option<&'static str> {
        let index = CACHE_RESULTS
            .iter()
            .position(|result| result.as_bytes() == x_cache)?;
        self.cache[index].inc();
        Some(CACHE_RESULTS[index])
    }
}

/// The full gRPC paths of every method the broker serves: its own services,
/// health, and both reflection versions, from their descriptor sets.
pub(super) fn known_methods() -> HashSet<Arc<str>> {
    let sets = [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashSet::new();
    for set in sets {
        // Built into the binary: a set that does not decode is a build bug.
        let set = prost_types::FileDescriptorSet::decode(set).expect("valid descriptor set");
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let path = if package.is_empty() {
                        format!("/{}/{}", service.name(), method.name())
                    } else {
                        format!("/{package}.{}/{}", service.name(), method.name())
                    };
                    methods.insert(Arc::from(path));
                }
            }
        }
    }
    methods
}

/// A tower layer counting gRPC calls by method and status, with latency.
/// It wraps everything, unauthenticated calls and made-up paths included;
/// those are counted under [`UNKNOWN_METHOD`](super::UNKNOWN_METHOD).
///
/// The status is read from the response headers: errors returned before any
/// message carry it there ("trailers-only"); a call without it there is
/// counted as OK (a stream that fails after its first message is counted by
/// its start).
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the gRPC router.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The label, not the path: logs of made-up paths stay short too.
        let method = self.metrics.method(request.uri().path()).clone();
        let started = Instant::now();
        // Log lines name the call (the gate records its caller); a traced
        // call also gets a span, a child of the caller's `traceparent`.
        let call = crate::logs::Call::new(method.name.clone());
        let span = crate::telemetry::call_span(&method.name, request.headers());
        let response =
            crate::logs::in_call_sync(call.clone(), || span.in_scope(|| self.inner.call(request)));
        Box::pin(crate::logs::in_call(call, async move {
            let response = response.instrument(span.clone()).await;
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get(&GRPC_STATUS)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from) as usize,
                Err(_) => TRANSPORT,
            };
            method.record(code, started.elapsed());
            // Lookups say how the cache served them in the `x-cache` header.
            if let Some(x_cache) = response
                .as_ref()
                .ok()
                .and_then(|response| response.headers().get(&X_CACHE))
                && let Some(result) = method.record_cache(x_cache.as_bytes())
            {
                crate::telemetry::record_cache(&span, result);
            }
            crate::telemetry::record_code(&span, CODE_NAMES[code]);
            tracing::debug!(code = CODE_NAMES[code], elapsed = ?started.elapsed(), "call answered");
            response
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::UNKNOWN_METHOD;

    #[test]
    fn only_the_brokers_own_methods_are_labelled_by_name() {
        let metrics = Metrics::new();
        for path in [
            "/clerk_broker.v1.UserService/GetUser",
            "/clerk_broker.v1.UserService/BatchGetUsers",
            "/clerk_broker.v1.UserService/ListUsers",
            "/clerk_broker.v1.UserService/CountUsers",
            "/clerk_broker.v1.QuotaService/AcquirePermit",
            "/clerk_broker.v1.AdminService/InvalidateUser",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(&**metrics.method(path).name(), path);
        }
        for path in [
            "",
            "/",
            "/clerk_broker.v1.UserService/NoSuchMethod",
            "/clerk_broker.v1.UserService/GetUser/",
            "/clerk_broker.v1.UserService/getuser",
            &format!("/x.Y/{}", "z".repeat(15_000)),
        ] {
            assert_eq!(&**metrics.method(path).name(), UNKNOWN_METHOD, "{path}");
        }
    }
}
