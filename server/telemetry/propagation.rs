//! W3C trace context in: a caller's `traceparent`/`tracestate` (gRPC
//! metadata or HTTP headers, the same header map) becomes the parent of the
//! broker's span for that call.
//!
//! Nothing is ever injected into requests to Clerk: the upstream request
//! headers are an allow-list (`clerk::forward::REQUEST_HEADERS`) without the
//! trace context headers, and the broker's own requests set only the key and
//! the API version.

use http::HeaderMap;
use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The trace context headers read from callers.
pub const HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// A header map seen as a propagation carrier.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The caller's trace context, if its headers carry a valid one.
pub(super) fn remote_parent(headers: &HeaderMap) -> Option<Context> {
    if !headers.contains_key(HEADERS[0]) {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    context.span().span_context().is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;

    #[test]
    fn reads_a_valid_traceparent_with_its_state_and_ignores_bad_ones() {
        let mut headers = HeaderMap::new();
        assert!(remote_parent(&headers).is_none());
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        headers.insert("tracestate", HeaderValue::from_static("vendor=value"));
        let context = remote_parent(&headers).expect("a parent");
        let span = context.span();
        let parent = span.span_context();
        assert_eq!(
            parent.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            parent.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_state().get("vendor"), Some("value"));

        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            headers.insert("traceparent", HeaderValue::from_static(bad));
            assert!(remote_parent(&headers).is_none(), "{bad}");
        }
    }
}
