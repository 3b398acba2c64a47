//! The span pipeline's last stage: a bounded queue in front of the OTLP
//! exporter, drained by one background task.
//!
//! The SDK's own batch processor keeps its drop count to itself; the broker
//! must show it (`clerk_broker_trace_spans_dropped_total`), so this processor
//! owns the queue. Ending a span never waits: a full queue drops the span, and
//! a batch the collector refuses, or does not take within the export timeout,
//! is dropped too, counted either way. A collector that is down therefore
//! costs calls nothing but the `try_send` of each span. At shutdown
//! ([`Flush::shutdown`]) the queue closes and what it holds is exported,
//! within a bound.

use std::time::Duration;

use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanExporter, SpanProcessor},
};
use prometheus::IntCounter;
use tokio::{
    sync::{
        mpsc::{self, Receiver, Sender, error::TryRecvError},
        oneshot,
    },
    task::JoinHandle,
};

/// Where ended spans go: the queue of the export task.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: Sender<SpanData>,
    dropped: IntCounter,
}

/// How the export task batches and how long it gives the collector.
#[derive(Clone, Copy, Debug)]
pub(super) struct Batching {
    /// Most spans waiting for export; more are dropped.
    pub(super) queue: usize,
    /// Most spans in one export request.
    pub(super) max_batch: usize,
    /// Longest a span waits in the queue before its batch goes.
    pub(super) delay: Duration,
    /// Longest one export request may take.
    pub(super) timeout: Duration,
}

/// Ends the export task: closes the queue and exports what it holds.
/// Dropped without [`Self::shutdown`], the task does the same on its own.
#[derive(Debug)]
pub(super) struct Flush {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Flush {
    /// Closes the queue (spans ended from now on are dropped and counted)
    /// and waits, at most `bound`, for the spans it held to be exported.
    pub(super) async fn shutdown(self, bound: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(bound, self.task).await.is_err() {
            tracing::debug!("spans still queued at exit were not all exported in time");
        }
    }
}

impl QueueProcessor {
    /// Starts the export task on the current tokio runtime.
    pub(super) fn spawn<E: SpanExporter + 'static>(
        exporter: E,
        batching: Batching,
        dropped: IntCounter,
    ) -> (Self, Flush) {
        let (queue, spans) = mpsc::channel(batching.queue.max(1));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(drain(spans, exporter, batching, dropped.clone(), stopped));
        (Self { queue, dropped }, Flush { stop, task })
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export loop: waits for a first span, gathers more for at most
/// `delay` (or until a batch is full), exports them, repeats; ends when
/// every processor handle is gone, or at `stop` (or its [`Flush`] dropped),
/// after exporting what the queue holds.
async fn drain<E: SpanExporter>(
    mut spans: Receiver<SpanData>,
    exporter: E,
    batching: Batching,
    dropped: IntCounter,
    mut stop: oneshot::Receiver<()>,
) {
    let max = batching.max_batch.max(1);
    loop {
        let first = tokio::select! {
            biased;
            span = spans.recv() => match span {
                Some(span) => span,
                None => return,
            },
            _ = &mut stop => break,
        };
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        // One timer per batch, not one per span received.
        let close = tokio::time::sleep(batching.delay);
        tokio::pin!(close);
        let mut open = true;
        let mut stopping = false;
        while open && batch.len() < max {
            tokio::select! {
                biased;
                span = spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => open = false,
                },
                () = &mut close => {
                    take_ready(&mut spans, &mut batch, max);
                    open = false;
                }
                _ = &mut stop => {
                    stopping = true;
                    open = false;
                }
            }
        }
        export(&exporter, batch, &batching, &dropped).await;
        if stopping {
            break;
        }
    }
    // Shutting down: nothing more is queued, what is queued goes.
    spans.close();
    loop {
        let mut batch = Vec::with_capacity(max);
        take_ready(&mut spans, &mut batch, max);
        if batch.is_empty() {
            return;
        }
        export(&exporter, batch, &batching, &dropped).await;
    }
}

/// Moves spans already queued into `batch`, up to `max` in it.
fn take_ready(spans: &mut Receiver<SpanData>, batch: &mut Vec<SpanData>, max: usize) {
    while batch.len() < max {
        match spans.try_recv() {
            Ok(span) => batch.push(span),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        }
    }
}

/// Sends one batch; counts it as dropped if the collector does not take it
/// in time.
async fn export<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    batching: &Batching,
    dropped: &IntCounter,
) {
    if batch.is_empty() {
        return;
    }
    let size = batch.len() as u64;
    match tokio::time::timeout(batching.timeout, exporter.export(batch)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            dropped.inc_by(size);
            tracing::debug!(%error, spans = size, "the trace collector refused spans");
        }
        Err(_elapsed) => {
            dropped.inc_by(size);
            tracing::debug!(spans = size, "the trace collector did not answer in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    /// An exporter that records batches, or fails every export.
    #[derive(Debug, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<usize>>>,
        fail: bool,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "down".into(),
                ));
            }
            self.batches.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    fn span(sampled: bool) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(1u64),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: "test".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn batching(queue: usize) -> Batching {
        Batching {
            queue,
            max_batch: 4,
            delay: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("dropped", "test").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn spans_go_in_batches_and_unsampled_ones_not_at_all() {
        let recorder = Recorder::default();
        let batches = recorder.batches.clone();
        let dropped = counter();
        let (processor, _flush) = QueueProcessor::spawn(recorder, batching(100), dropped.clone());
        for _ in 0..6 {
            processor.on_end(span(true));
        }
        processor.on_end(span(false));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*batches.lock().unwrap(), [4, 2]);
        assert_eq!(dropped.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_and_a_failing_collector_drop_and_count() {
        let dropped = counter();
        let recorder = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let (processor, _flush) = QueueProcessor::spawn(recorder, batching(3), dropped.clone());
        // The task has not run yet: three fit, two are dropped at once.
        for _ in 0..5 {
            processor.on_end(span(true));
        }
        assert_eq!(dropped.get(), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dropped.get(), 5, "the refused batch counts too");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_exports_what_is_queued_and_takes_no_more() {
        let recorder = Recorder::default();
        let batches = recorder.batches.clone();
        let dropped = counter();
        let slow = Batching {
            delay: Duration::from_secs(3600),
            ..batching(100)
        };
        let (processor, flush) = QueueProcessor::spawn(recorder, slow, dropped.clone());
        for _ in 0..6 {
            processor.on_end(span(true));
        }
        // The task takes the first span and waits for the batch to fill.
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        flush.shutdown(Duration::from_secs(2)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(*batches.lock().unwrap(), [4, 2]);
        processor.on_end(span(true));
        assert_eq!(dropped.get(), 1, "a span ended after shutdown is dropped");
    }
}
