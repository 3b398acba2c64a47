//! Distributed tracing: OTLP export of the broker's spans, the caller's
//! W3C trace context as their parent, and the spans that explain a call.
//!
//! Off by default. When on ([`layer`], installed once by `main`), a call
//! whose trace is sampled (decided at the call, `sampling`) gets an `rpc`
//! (gRPC) or `http` (front) span parented to the caller's `traceparent`,
//! and the work behind it gets spans of its own: the admission wait
//! (`admission.wait`), the fill-once wait of each id (`lookup.wait`), the
//! wait for another replica's fill (`lookup.replica_wait`), and each
//! upstream request (`clerk.request`). A batch (`lookup.batch`) is a trace
//! of its own, sampled on its own, since it serves many callers; a caller
//! whose answer came from a batch links to the request that answered it (a
//! span link), so its trace shows that request.
//!
//! An unsampled call makes no span at all. Every span here has the target
//! [`TRACE_TARGET`], which logs leave out: a log line names its call through
//! `logs`, traced or not. When off, no layer is installed and each helper
//! costs one relaxed atomic load.

mod export;
mod propagation;
mod sampling;

use std::{
    future::Future,
    sync::{
        LazyLock, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use prometheus::IntCounter;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    Layer,
    filter::{LevelFilter, Targets},
    registry::LookupSpan,
};

pub use propagation::HEADERS as TRACE_CONTEXT_HEADERS;

/// The target of every span made for traces (logs leave them out).
pub const TRACE_TARGET: &str = "clerk_broker::trace";

/// Set once the OTel layer is built: the helpers below then create spans.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (a layer was built by [`layer`]).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the work under way is traced: tracing is on and a sampled span
/// (its call's, or its batch's) is current. Spans made inside untraced
/// work would start traces of their own.
fn traced() -> bool {
    enabled() && !Span::current().is_none()
}

/// Spans dropped before reaching the collector: the queue was full, or the
/// collector refused or did not take a batch in time. Process-wide (the
/// tracer is), registered in every broker's metrics.
pub fn dropped_spans() -> &'static IntCounter {
    static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
        IntCounter::new(
            "clerk_broker_trace_spans_dropped_total",
            "Spans not exported: the export queue was full or the trace collector did not take them.",
        )
        .expect("valid metric")
    });
    &DROPPED
}

/// Where and how spans are exported.
#[derive(Clone, Debug)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// Most spans waiting for export (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    pub max_queue: usize,
    /// Most spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_batch: usize,
    /// Longest a span waits before its batch goes (`OTEL_BSP_SCHEDULE_DELAY`, 1 s).
    pub delay: Duration,
    /// Longest one export request may take (`OTEL_BSP_EXPORT_TIMEOUT`, 10 s).
    pub export_timeout: Duration,
    /// Which traces are kept (`OTEL_TRACES_SAMPLER` and `_ARG`; parent-based,
    /// always on).
    pub sampler: Sampler,
}

/// A tracing setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A numeric `OTEL_BSP_*` variable did not parse.
    #[error("{name}={value:?} is not a whole number (of milliseconds, for times)")]
    Setting {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
    },
    /// A sampler variable held no sampler (or ratio) the broker knows.
    #[error("{name}={value:?} is not {expected}")]
    Sampler {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
        /// What it may hold.
        expected: &'static str,
    },
    /// The endpoint is not a plaintext `http://` URL (the exporter is built
    /// without TLS).
    #[error(
        "OTEL_EXPORTER_OTLP_ENDPOINT (--otlp-endpoint) {endpoint:?} is not an http:// URL such as \
         http://otel-collector:4317 (OTLP/gRPC in plaintext: this build exports without TLS)"
    )]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
    },
    /// The OTLP exporter could not be built (a malformed endpoint).
    #[error("cannot export traces to {endpoint:?}: {reason}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// The exporter's reason.
        reason: String,
    },
}

impl TracingConfig {
    /// Export to `endpoint` with the default queue and timings.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
            sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        }
    }

    /// Export to `endpoint` (a plaintext `http://` URL), with the standard
    /// `OTEL_BSP_*` and `OTEL_TRACES_SAMPLER`(`_ARG`) variables read through
    /// `var` where set.
    pub fn from_env(
        endpoint: impl Into<String>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let endpoint = endpoint.into();
        if !endpoint
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        {
            return Err(TelemetryError::Endpoint { endpoint });
        }
        let mut config = Self::new(endpoint);
        if let Some(name) = var("OTEL_TRACES_SAMPLER") {
            config.sampler = sampler(&name, var("OTEL_TRACES_SAMPLER_ARG"))?;
        }
        let number = |name: &'static str| -> Result<Option<u64>, TelemetryError> {
            var(name)
                .map(|value| {
                    value
                        .trim()
                        .parse()
                        .map_err(|_| TelemetryError::Setting { name, value })
                })
                .transpose()
        };
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
            config.max_queue = n.max(1) as usize;
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            config.max_batch = n.max(1) as usize;
        }
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
            config.delay = Duration::from_millis(ms);
        }
        if let Some(ms) = number("OTEL_BSP_EXPORT_TIMEOUT")? {
            config.export_timeout = Duration::from_millis(ms.max(1));
        }
        Ok(config)
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` names, with its ratio `arg` (in
/// [0, 1], default 1) for the ratio samplers.
fn sampler(name: &str, arg: Option<String>) -> Result<Sampler, TelemetryError> {
    let ratio = || -> Result<f64, TelemetryError> {
        let Some(value) = arg else {
            return Ok(1.0);
        };
        match value.trim().parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
            _ => Err(TelemetryError::Sampler {
                name: "OTEL_TRACES_SAMPLER_ARG",
                value,
                expected: "a ratio between 0 and 1, such as 0.1",
            }),
        }
    };
    let parent_based = |root| Sampler::ParentBased(Box::new(root));
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        _ => {
            return Err(TelemetryError::Sampler {
                name: "OTEL_TRACES_SAMPLER",
                value: name.to_owned(),
                expected: "one of always_on, always_off, traceidratio, parentbased_always_on, \
                           parentbased_always_off, parentbased_traceidratio",
            });
        }
    })
}

/// Longest [`Tracing::shutdown`] waits for the queued spans' export.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Keeps the tracer provider alive; [`Self::shutdown`] exports the spans
/// still queued before the process exits.
#[derive(Debug)]
pub struct Tracing {
    _provider: SdkTracerProvider,
    flush: export::Flush,
}

impl Tracing {
    /// Closes the span queue (later spans are dropped, and counted) and
    /// waits at most [`SHUTDOWN_FLUSH`] for what it held to be exported.
    pub async fn shutdown(self) {
        self.flush.shutdown(SHUTDOWN_FLUSH).await;
    }
}

/// The OTel layer for the process's subscriber, exporting to
/// `config.endpoint` over OTLP/gRPC; from then on the span helpers here
/// create spans. Must run inside a tokio runtime (the export task and the
/// collector connection live there). The sampler is `config.sampler`; the
/// service name `OTEL_SERVICE_NAME` (default `clerk-broker`).
pub fn layer<S>(
    config: &TracingConfig,
) -> Result<(impl Layer<S> + Send + Sync + 'static, Tracing), TelemetryError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&config.endpoint)
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|error| TelemetryError::Exporter {
            endpoint: config.endpoint.clone(),
            reason: error.to_string(),
        })?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("clerk-broker");
    }
    let resource = resource.build();
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let batching = export::Batching {
        queue: config.max_queue,
        max_batch: config.max_batch,
        delay: config.delay,
        timeout: config.export_timeout,
    };
    let (processor, flush) =
        export::QueueProcessor::spawn(exporter, batching, dropped_spans().clone());
    // Sampled where a trace begins (`call_span`, `batch_span`): every span
    // the layer sees is kept.
    sampling::install(config.sampler.clone());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("clerk-broker");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Spans and events at info and above, whatever RUST_LOG says; none
        // of the exporter's own stack (a span about an export would be
        // exported, and so on).
        .with_filter(
            Targets::new().with_default(LevelFilter::INFO).with_targets(
                [
                    "opentelemetry",
                    "opentelemetry_sdk",
                    "opentelemetry_otlp",
                    "tonic",
                    "h2",
                    "hyper",
                    "hyper_util",
                    "tower",
                ]
                .map(|target| (target, LevelFilter::OFF)),
            ),
        );
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        layer,
        Tracing {
            _provider: provider,
            flush,
        },
    ))
}

/// The span of one gRPC call (`method` is its label) if its trace is
/// sampled, a child of the caller's `traceparent` if the metadata carries
/// one; none otherwise.
pub fn call_span(method: &str, headers: &HeaderMap) -> Span {
    server_span(headers, "rpc", || {
        tracing::info_span!(
            target: TRACE_TARGET,
            "rpc",
            method = %method,
            caller = Empty,
            code = Empty,
            cache = Empty,
            otel.kind = "server"
        )
    })
}

/// Records on the current [`call_span`], if any, its caller.
pub fn record_caller(caller: &str) {
    if traced() {
        Span::current().record("caller", caller);
    }
}

/// Records on a [`call_span`] how the cache served the call (`x-cache`).
pub fn record_cache(span: &Span, result: &str) {
    if !span.is_none() {
        span.record("cache", result);
    }
}

/// Records on a [`call_span`] the call's status code.
pub fn record_code(span: &Span, code: &str) {
    if !span.is_none() {
        span.record("code", code);
    }
}

/// The span of one request to the Clerk-compatible front if its trace is
/// sampled, parented to the caller's `traceparent`; none otherwise.
pub fn front_span(method: &http::Method, route: &str, headers: &HeaderMap) -> Span {
    server_span(headers, "http", || {
        tracing::info_span!(
            target: TRACE_TARGET,
            "http",
            method = %method,
            route = %route,
            caller = Empty,
            status = Empty,
            otel.kind = "server"
        )
    })
}

/// The span `make` builds (named `name`) for a request with these headers,
/// a child of the caller's `traceparent` if it has one, when tracing is on
/// and the sampler keeps it; none otherwise (and `make` does not run).
fn server_span(headers: &HeaderMap, name: &str, make: impl FnOnce() -> Span) -> Span {
    if !enabled() {
        return Span::none();
    }
    let parent = propagation::remote_parent(headers);
    if !sampling::sampled(parent.as_ref(), name, SpanKind::Server) {
        return Span::none();
    }
    let span = make();
    if let Some(parent) = parent {
        // Only fails for a span that is disabled or already started.
        let _ = span.set_parent(parent);
    }
    span
}

/// The current span, for a task spawned to do the call's work (an export's
/// pages), when tracing is on; none otherwise.
pub fn inherited() -> Span {
    if traced() {
        Span::current()
    } else {
        Span::none()
    }
}

/// The wait of a queued permit: `units_ahead` units of cost (not
/// requests) were likely to be served before it, given everyone's shares.
/// Ends when dropped; see [`waited`].
/// (`priority` is the demand's, by name.)
pub fn admission_span(
    budget: &str,
    caller: &str,
    priority: &'static str,
    cost: u32,
    units_ahead: u64,
) -> Span {
    if !traced() {
        return Span::none();
    }
    tracing::info_span!(
        target: TRACE_TARGET,
        "admission.wait",
        budget = %budget,
        caller = %caller,
        priority,
        cost,
        units_ahead,
        waited_ms = Empty
    )
}

/// Records on an [`admission_span`] how long its permit waited.
pub fn waited(span: &Span, waited: Duration) {
    if !span.is_none() {
        span.record("waited_ms", waited.as_secs_f64() * 1e3);
    }
}

/// The span of one lookup batch, if sampled: a trace of its own (it serves
/// many callers, each of whom links to its upstream request).
pub fn batch_span<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> Span {
    if !enabled() || !sampling::sampled(None, "lookup.batch", SpanKind::Internal) {
        return Span::none();
    }
    let size = ids.len();
    let ids = ids.collect::<Vec<_>>().join(",");
    tracing::info_span!(target: TRACE_TARGET, parent: None, "lookup.batch", size, ids = %ids)
}

/// The wait for other replicas' fill of `ids` ids.
pub fn replica_wait_span(ids: usize) -> Span {
    if !traced() {
        return Span::none();
    }
    tracing::info_span!(target: TRACE_TARGET, "lookup.replica_wait", ids)
}

/// A caller's wait for the one flight (fill-once) of `id`.
pub fn flight_span(id: &str) -> Span {
    if !traced() {
        return Span::none();
    }
    tracing::info_span!(target: TRACE_TARGET, "lookup.wait", id = %id)
}

/// The upstream request a lookup's answer came from; set by the batch
/// before the answer is published, read by every waiter after.
#[derive(Debug, Default)]
pub struct AnsweredBy(OnceLock<SpanContext>);

impl AnsweredBy {
    /// Records the request (the first one wins).
    pub fn set(&self, request: Option<&SpanContext>) {
        if let Some(request) = request {
            let _ = self.0.set(request.clone());
        }
    }

    /// Links `span` (a caller's wait) to the request, if one was recorded.
    pub fn link(&self, span: &Span) {
        if let Some(request) = self.0.get() {
            span.add_link(request.clone());
        }
    }
}

/// Links the current span (the caller's call) to each distinct request
/// that answered one of its lookups.
pub fn link_current<'a>(answers: impl IntoIterator<Item = &'a AnsweredBy>) {
    if !traced() {
        return;
    }
    let current = Span::current();
    let mut linked: Vec<opentelemetry::trace::SpanId> = Vec::new();
    for request in answers.into_iter().filter_map(|answer| answer.0.get()) {
        if !linked.contains(&request.span_id()) {
            linked.push(request.span_id());
            current.add_link(request.clone());
        }
    }
}

/// One request to Clerk (all its attempts), with its route template.
pub fn upstream_span(route: &str) -> Span {
    if !traced() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "clerk.request",
        route = %route,
        attempt = Empty,
        status = Empty,
        clerk_trace_id = Empty,
        otel.kind = "client"
    );
    let _ = REQUEST.try_with(|slot| {
        let _ = slot.set(span.context().span().span_context().clone());
    });
    span
}

/// Records on the current [`upstream_span`] which attempt is under way.
pub fn record_attempt(attempt: u32) {
    if traced() {
        Span::current().record("attempt", attempt);
    }
}

/// Records on the current [`upstream_span`] Clerk's answer: the HTTP status
/// and Clerk's trace id header, if it sent one.
pub fn record_answer(status: u16, headers: &HeaderMap) {
    if !traced() {
        return;
    }
    let span = Span::current();
    span.record("status", status);
    if let Some(trace) = clerk_trace_id(headers) {
        span.record("clerk_trace_id", trace);
    }
}

/// Records on the current [`upstream_span`] the trace id of Clerk's error
/// body (`clerk_trace_id`), which wins over its header's; none if empty.
pub fn record_clerk_trace_id(trace: &str) {
    if !trace.is_empty() && traced() {
        Span::current().record("clerk_trace_id", trace);
    }
}

/// Clerk's trace id header: `Clerk-Trace-Id`, or `X-Clerk-Trace-Id`.
pub fn clerk_trace_id(headers: &HeaderMap) -> Option<&str> {
    ["clerk-trace-id", "x-clerk-trace-id"]
        .into_iter()
        .find_map(|name| headers.get(name))
        .and_then(|value| value.to_str().ok())
        .filter(|trace| !trace.is_empty())
}

tokio::task_local! {
    /// Where [`upstream_span`] leaves its context for [`capture`].
    static REQUEST: OnceLock<SpanContext>;
}

/// Runs `work` and returns, with its output, the context of the first
/// upstream request it made (when the current span is traced: otherwise
/// [`upstream_span`] makes none).
pub async fn capture<F: Future>(work: F) -> (F::Output, Option<SpanContext>) {
    if !traced() {
        return (work.await, None);
    }
    REQUEST
        .scope(OnceLock::new(), async {
            let output = work.await;
            let request = REQUEST.with(|slot| slot.get().cloned());
            (output, request)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Result<TracingConfig, TelemetryError> {
        TracingConfig::from_env("http://127.0.0.1:4317", |name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_sampler_is_the_one_named_and_bad_ones_are_refused() {
        let sampler = |env: &[(&str, &str)]| format!("{:?}", config(env).unwrap().sampler);
        assert_eq!(sampler(&[]), "ParentBased(AlwaysOn)");
        assert_eq!(
            sampler(&[("OTEL_TRACES_SAMPLER", "always_off")]),
            "AlwaysOff"
        );
        assert_eq!(
            sampler(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]),
            "ParentBased(TraceIdRatioBased(0.1))"
        );
        assert_eq!(
            sampler(&[("OTEL_TRACES_SAMPLER", "traceidratio")]),
            "TraceIdRatioBased(1.0)"
        );
        // A ratio that does not apply is not read.
        assert_eq!(
            sampler(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
                ("OTEL_TRACES_SAMPLER_ARG", "x"),
            ]),
            "ParentBased(AlwaysOff)"
        );
        for (env, named) in [
            (
                &[("OTEL_TRACES_SAMPLER", "sometimes")][..],
                "OTEL_TRACES_SAMPLER=\"sometimes\"",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "OTEL_TRACES_SAMPLER_ARG=\"1.5\"",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "ten percent"),
                ],
                "OTEL_TRACES_SAMPLER_ARG=\"ten percent\"",
            ),
        ] {
            let error = config(env).unwrap_err().to_string();
            assert!(error.starts_with(named), "{error}");
        }
    }

    #[test]
    fn clerks_trace_id_is_read_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(clerk_trace_id(&headers), None);
        headers.insert("x-clerk-trace-id", "t2".parse().unwrap());
        assert_eq!(clerk_trace_id(&headers), Some("t2"));
        headers.insert("clerk-trace-id", "t1".parse().unwrap());
        assert_eq!(clerk_trace_id(&headers), Some("t1"));
    }

    #[test]
    fn only_plaintext_http_endpoints_are_taken() {
        assert!(TracingConfig::from_env("HTTP://collector:4317", |_| None).is_ok());
        for endpoint in ["https://collector:4317", "collector:4317", ""] {
            let error = TracingConfig::from_env(endpoint, |_| None)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT") && error.contains("http://"),
                "{error}"
            );
        }
    }
}
