//! Which work is traced, decided once where a trace could begin: at a call
//! (its caller's `traceparent` as the parent) or at a batch (a root).
//!
//! Untraced work makes no span at all, so a 1 % sampler costs 1 % of the
//! spans' price: the SDK's own sampler would decide only once each span is
//! built. Spans made inside traced work (the admission wait, the upstream
//! request, …) follow their parent: [`super::traced`].

use std::sync::OnceLock;

use opentelemetry::{
    Context,
    trace::{SpanKind, TraceContextExt as _, TraceId},
};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _,
};

/// The sampler `OTEL_TRACES_SAMPLER` names, once tracing is on.
static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Decides with `sampler` from now on (the first call wins: the tracer is
/// process-wide).
pub(super) fn install(sampler: Sampler) {
    let _ = SAMPLER.set(sampler);
}

/// Whether a trace (or its part) beginning with a span `name` of `kind`,
/// child of `parent` if any, is kept. A root gets a fresh trace id for the
/// ratio samplers; a child its parent's, as every service in the trace
/// decides on the same id.
pub(super) fn sampled(parent: Option<&Context>, name: &str, kind: SpanKind) -> bool {
    let Some(sampler) = SAMPLER.get() else {
        return false;
    };
    let trace_id = parent.map_or_else(
        || RandomIdGenerator::default().new_trace_id(),
        |parent| parent.span().span_context().trace_id(),
    );
    decide(sampler, parent, trace_id, name, kind)
}

fn decide(
    sampler: &Sampler,
    parent: Option<&Context>,
    trace_id: TraceId,
    name: &str,
    kind: SpanKind,
) -> bool {
    let result = sampler.should_sample(parent, trace_id, name, &kind, &[], &[]);
    result.decision == SamplingDecision::RecordAndSample
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

    use super::*;

    /// A caller's context, sampled or not.
    fn remote(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            flags,
            true,
            TraceState::default(),
        ))
    }

    fn share(sampler: &Sampler, parent: Option<&Context>) -> f64 {
        let generator = RandomIdGenerator::default();
        let kept = (0..10_000)
            .filter(|_| {
                let trace_id = parent.map_or_else(
                    || generator.new_trace_id(),
                    |parent| parent.span().span_context().trace_id(),
                );
                decide(sampler, parent, trace_id, "rpc", SpanKind::Server)
            })
            .count();
        kept as f64 / 10_000.0
    }

    #[test]
    fn roots_are_kept_at_the_ratio_and_children_follow_their_parent() {
        let ratio = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.1)));
        let kept = share(&ratio, None);
        assert!((0.07..0.13).contains(&kept), "kept {kept} of roots at 0.1");
        assert_eq!(share(&ratio, Some(&remote(true))), 1.0);
        assert_eq!(share(&ratio, Some(&remote(false))), 0.0);
        // Not parent-based: the ratio decides on the caller's trace id, the
        // same way every time.
        let plain = Sampler::TraceIdRatioBased(0.5);
        let first = share(&plain, Some(&remote(false)));
        assert!(first == 0.0 || first == 1.0, "{first}");
        assert_eq!(share(&Sampler::AlwaysOff, None), 0.0);
        assert_eq!(share(&Sampler::AlwaysOn, Some(&remote(false))), 1.0);
    }
}
