//! A small OTLP/gRPC trace receiver, and the process's tracing set up to
//! export to it: both on a runtime of their own, since every test has its own
//! runtime and the tracer is process-wide.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use clerk_broker::telemetry::{self, TracingConfig};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use tokio::{net::TcpListener, runtime::Runtime, sync::oneshot, task::JoinHandle};
use tonic::{Request, Response, Status};
use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Every span received, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver, its runtime, and the process's tracing pointed at it.
pub(crate) struct Collector {
    runtime: Runtime,
    addr: SocketAddr,
    received: Received,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    _tracing: telemetry::Tracing,
}

impl Collector {
    /// The one collector of this process, started (and tracing installed)
    /// on first use.
    pub(crate) fn get() -> &'static Collector {
        static COLLECTOR: OnceLock<Collector> = OnceLock::new();
        // On a thread of its own: a test's runtime may not block on another.
        COLLECTOR.get_or_init(|| std::thread::spawn(Collector::new).join().unwrap())
    }

    fn new() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let server = serve(&runtime, listener, received.clone());
        let mut config = TracingConfig::new(format!("http://{addr}"));
        config.delay = Duration::from_millis(50);
        // Far longer than any call may take: a call that waited for an
        // export would show.
        config.export_timeout = Duration::from_secs(30);
        let tracing = runtime.block_on(async {
            let (layer, tracing) = telemetry::layer(&config).unwrap();
            tracing_subscriber::registry().with(layer).init();
            tracing
        });
        Collector {
            runtime,
            addr,
            received,
            server: Mutex::new(Some(server)),
            _tracing: tracing,
        }
    }

    /// Stops the receiver: the port refuses connections until [`Self::start`].
    pub(crate) async fn stop(&self) {
        let Some((stop, server)) = self.server.lock().unwrap().take() else {
            return;
        };
        let _ = stop.send(());
        // Graceful: the exporter's idle connection is told to go away.
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the receiver stops")
            .unwrap();
    }

    /// Starts the receiver again on its port.
    pub(crate) fn start(&self) {
        let mut server = self.server.lock().unwrap();
        if server.is_none() {
            let listener = std::net::TcpListener::bind(self.addr).unwrap();
            *server = Some(serve(&self.runtime, listener, self.received.clone()));
        }
    }

    /// Waits (at most 20 s) until `found` finds what it looks for in the
    /// spans received so far.
    pub(crate) async fn wait_for<T>(&self, mut found: impl FnMut(&[Span]) -> Option<T>) -> T {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = found(&self.received.0.lock().unwrap()) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "the expected spans never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn serve(
    runtime: &Runtime,
    listener: std::net::TcpListener,
    received: Received,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel();
    listener.set_nonblocking(true).unwrap();
    let server = runtime.spawn(async move {
        let listener = TcpListener::from_std(listener).unwrap();
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    (stop, server)
}

/// A span's attribute, as text.
pub(crate) fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(n) => n.to_string(),
        Value::DoubleValue(x) => x.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}
