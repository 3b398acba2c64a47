//! gRPC calls in the metrics: the tower layer that counts them, and the
//! methods whose names may be labels.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use prost::Message as _;
use tracing::Instrument as _;

use super::Metrics;

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
        let method = self.metrics.method_label(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        // One span per call (a child of the caller's `traceparent` when
        // tracing is on); the interceptor fills in the caller.
        let span = crate::telemetry::call_span(&method, request.headers());
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let response = response.instrument(span.clone()).await;
            // Code names as the gRPC ecosystem's metrics spell them ("Ok",
            // "InvalidArgument", …): tonic's `Debug` of `Code`.
            let code = match &response {
                Ok(response) => format!(
                    "{:?}",
                    response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from)
                ),
                Err(_) => "Transport".to_owned(),
            };
            metrics.grpc_call(&method, &code, started.elapsed());
            // Lookups say how the cache served them in the `x-cache` header.
            if let Some(result) = response
                .as_ref()
                .ok()
                .and_then(|response| response.headers().get("x-cache"))
                .and_then(|value| value.to_str().ok())
                .filter(|value| matches!(*value, "hit" | "miss" | "stale"))
            {
                metrics.cache_lookups.with_label_values(&[result]).inc();
                crate::telemetry::record_cache(&span, result);
            }
            span.record("code", code.as_str());
            tracing::debug!(parent: &span, elapsed = ?started.elapsed(), "call answered");
            response
        })
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
            assert_eq!(&*metrics.method_label(path), path);
        }
        for path in [
            "",
            "/",
            "/clerk_broker.v1.UserService/NoSuchMethod",
            "/clerk_broker.v1.UserService/GetUser/",
            "/clerk_broker.v1.UserService/getuser",
            &format!("/x.Y/{}", "z".repeat(15_000)),
        ] {
            assert_eq!(&*metrics.method_label(path), UNKNOWN_METHOD, "{path}");
        }
    }
}
