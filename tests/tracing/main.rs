//! Tracing end to end: brokers in this process export their spans over
//! OTLP/gRPC to a receiver in the test, and callers' `traceparent`s parent
//! them. A test binary of its own: the tracer is process-wide.

#[allow(dead_code, unreachable_pub)]
#[path = "../it/harness.rs"]
mod harness;
#[allow(dead_code, unreachable_pub)]
#[path = "../it/redis.rs"]
mod redis;

mod collector;

use std::time::{Duration, Instant};

use clerk_broker::pb::{
    AcquirePermitRequest, BatchGetUsersRequest, GetUserRequest, ListUsersRequest,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::RwLock;

use collector::{Collector, attr};
use harness::{Harness, Options, test_lookup};

/// Tests that need the receiver up share it; the one that stops it runs alone.
static RECEIVER: RwLock<()> = RwLock::const_new(());

/// A caller's trace context: its trace id and the span id of its call.
#[derive(Clone, Copy, Debug)]
struct Caller {
    trace: u128,
    span: u64,
}

impl Caller {
    fn new() -> Self {
        Self {
            trace: fastrand::u128(1..),
            span: fastrand::u64(1..),
        }
    }

    /// `message` as a request carrying this caller's `traceparent`.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let traceparent = format!("00-{:032x}-{:016x}-01", self.trace, self.span);
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        request
    }

    fn in_trace<'a>(&self, spans: &'a [Span]) -> impl Iterator<Item = &'a Span> {
        let trace = self.trace.to_be_bytes();
        spans.iter().filter(move |span| span.trace_id == trace)
    }

    /// The broker's span for this caller's call: a child of its traceparent.
    fn rpc<'a>(&self, spans: &'a [Span]) -> Option<&'a Span> {
        let parent = self.span.to_be_bytes();
        self.in_trace(spans)
            .find(|span| span.name == "rpc" && span.parent_span_id == parent)
    }
}

#[tokio::test]
async fn batched_misses_of_three_callers_link_to_the_one_request_that_answered() {
    let collector = Collector::get();
    let _up = RECEIVER.read().await;
    let harness = Harness::start(Options {
        lookup: clerk_broker::config::LookupConfig {
            // Long enough for three calls to meet in one batch on a loaded machine.
            batch_window: Duration::from_millis(500),
            ..test_lookup()
        },
        ..Options::default()
    })
    .await;
    let callers = [Caller::new(), Caller::new(), Caller::new()];
    let mut clients = Vec::new();
    for _ in &callers {
        clients.push(harness.users().await);
    }
    harness.fake.reset_stats();
    let calls = callers
        .iter()
        .zip(&mut clients)
        .enumerate()
        .map(|(i, (caller, client))| {
            let request = caller.request(GetUserRequest {
                user_id: harness.ids[i].clone(),
            });
            client.get_user(request)
        });
    for answer in futures_util::future::join_all(calls).await {
        answer.unwrap();
    }
    assert_eq!(harness.fake.stats().requests, 1, "one upstream request");

    let (rpcs, requests) = collector
        .wait_for(|spans| {
            let mut rpcs = Vec::new();
            let mut requests = Vec::new();
            for caller in &callers {
                let rpc = caller.rpc(spans)?;
                let link = rpc.links.first()?;
                rpcs.push(rpc.clone());
                requests.push(
                    spans
                        .iter()
                        .find(|span| span.span_id == link.span_id)?
                        .clone(),
                );
            }
            Some((rpcs, requests))
        })
        .await;
    for (caller, rpc) in callers.iter().zip(&rpcs) {
        assert_eq!(
            attr(rpc, "method").unwrap(),
            "/clerk_broker.v1.UserService/GetUser"
        );
        assert_eq!(attr(rpc, "code").unwrap(), "Ok");
        assert_eq!(attr(rpc, "cache").unwrap(), "miss");
        assert_eq!(attr(rpc, "caller").unwrap(), "anonymous");
        // The fill-once wait, in the caller's trace, links to the request too.
        let wait = caller
            .in_trace(&collector_spans(collector).await)
            .find(|span| span.name == "lookup.wait" && span.parent_span_id == rpc.span_id)
            .cloned()
            .expect("a lookup.wait span under the rpc span");
        assert_eq!(wait.links[0].span_id, rpc.links[0].span_id);
    }
    let request = &requests[0];
    assert!(
        requests
            .iter()
            .all(|other| other.span_id == request.span_id)
    );
    assert_eq!(request.name, "clerk.request");
    assert_eq!(attr(request, "route").unwrap(), "GET /users");
    assert_eq!(attr(request, "status").unwrap(), "200");
    assert_eq!(attr(request, "attempt").unwrap(), "1");
    assert!(!attr(request, "clerk_trace_id").unwrap().is_empty());
    // The request belongs to the batch's own trace, not to any caller's.
    let batch = collector
        .wait_for(|spans| {
            spans
                .iter()
                .find(|span| span.span_id == request.parent_span_id)
                .cloned()
        })
        .await;
    assert_eq!(batch.name, "lookup.batch");
    assert_eq!(attr(&batch, "size").unwrap(), "3");
    assert!(
        callers
            .iter()
            .all(|caller| batch.trace_id != caller.trace.to_be_bytes())
    );
}

/// Every span received so far (once the ones a test waited for are in).
async fn collector_spans(collector: &Collector) -> Vec<Span> {
    collector.wait_for(|spans| Some(spans.to_vec())).await
}

#[tokio::test]
async fn a_permit_that_waited_shows_its_wait() {
    let collector = Collector::get();
    let _up = RECEIVER.read().await;
    let harness = Harness::start(Options {
        rate: clerk_broker::admission::Rate {
            limit: 1,
            window: Duration::from_millis(400),
        },
        burst: Some(1),
        ..Options::default()
    })
    .await;
    let mut quota = harness.quota().await;
    let spend = quota.acquire_permit(AcquirePermitRequest::default()).await;
    assert!(spend.unwrap().into_inner().granted);
    let caller = Caller::new();
    let waited = quota
        .acquire_permit(caller.request(AcquirePermitRequest {
            max_wait: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(waited.granted);

    let (rpc, wait) = collector
        .wait_for(|spans| {
            let rpc = caller.rpc(spans)?;
            let wait = caller
                .in_trace(spans)
                .find(|span| span.name == "admission.wait")?;
            Some((rpc.clone(), wait.clone()))
        })
        .await;
    assert_eq!(wait.parent_span_id, rpc.span_id);
    assert_eq!(attr(&wait, "caller").unwrap(), "anonymous");
    assert_eq!(attr(&wait, "priority").unwrap(), "interactive");
    assert_eq!(attr(&wait, "units_ahead").unwrap(), "0");
    assert!(!attr(&wait, "budget").unwrap().is_empty());
    let waited_ms: f64 = attr(&wait, "waited_ms").unwrap().parse().unwrap();
    assert!(waited_ms > 0.0, "{waited_ms}");
}

#[tokio::test]
async fn an_export_of_three_pages_has_one_span_per_page() {
    let collector = Collector::get();
    let _up = RECEIVER.read().await;
    let harness = Harness::start(Options {
        users: 1_200,
        ..Options::default()
    })
    .await;
    let mut client = harness.users().await;
    let caller = Caller::new();
    let mut stream = client
        .list_users(caller.request(ListUsersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut users = 0;
    while let Some(message) = stream.message().await.unwrap() {
        users += message.users.len();
    }
    assert_eq!(users, 1_200);

    let (rpc, pages) = collector
        .wait_for(|spans| {
            let rpc = caller.rpc(spans)?;
            let pages: Vec<Span> = caller
                .in_trace(spans)
                .filter(|span| span.name == "clerk.request")
                .cloned()
                .collect();
            (pages.len() >= 3).then(|| (rpc.clone(), pages))
        })
        .await;
    assert_eq!(pages.len(), 3, "{pages:#?}");
    for page in &pages {
        assert_eq!(page.parent_span_id, rpc.span_id);
        assert_eq!(attr(page, "route").unwrap(), "GET /users");
        assert_eq!(attr(page, "status").unwrap(), "200");
    }
}

#[tokio::test]
async fn with_the_receiver_down_calls_succeed_at_once_and_spans_are_counted_as_dropped() {
    let collector = Collector::get();
    let _alone = RECEIVER.write().await;
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    let before = dropped(&harness).await;
    collector.stop().await;
    for id in &harness.ids[..5] {
        let started = Instant::now();
        client
            .get_user(Caller::new().request(GetUserRequest {
                user_id: id.clone(),
            }))
            .await
            .unwrap();
        // Exports may take 30 s here: no call waits for one.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let give_up = Instant::now() + Duration::from_secs(20);
    while dropped(&harness).await <= before {
        assert!(Instant::now() < give_up, "no span was counted as dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collector.start();
}

/// `clerk_broker_trace_spans_dropped_total`, from the broker's `/metrics`.
async fn dropped(harness: &Harness) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", harness.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("clerk_broker_trace_spans_dropped_total "))
        .expect("the metric is exported")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_batch_of_ids_links_its_call_once_per_upstream_request() {
    let collector = Collector::get();
    let _up = RECEIVER.read().await;
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    let caller = Caller::new();
    client
        .batch_get_users(caller.request(BatchGetUsersRequest {
            user_ids: harness.ids[..3].to_vec(),
        }))
        .await
        .unwrap();
    let rpc = collector.wait_for(|spans| caller.rpc(spans).cloned()).await;
    assert_eq!(rpc.links.len(), 1, "{:?}", rpc.links);
    let waits = collector
        .wait_for(|spans| {
            let waits: Vec<Span> = caller
                .in_trace(spans)
                .filter(|span| span.name == "lookup.wait")
                .cloned()
                .collect();
            (waits.len() == 3).then_some(waits)
        })
        .await;
    assert!(
        waits
            .iter()
            .all(|wait| wait.links[0].span_id == rpc.links[0].span_id)
    );
}

#[tokio::test]
async fn a_front_request_is_a_child_of_the_callers_traceparent() {
    let collector = Collector::get();
    let _up = RECEIVER.read().await;
    let harness = Harness::start(Options::default()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let caller = Caller::new();
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/users/{}",
            harness.front_addr, harness.ids[0]
        ))
        .bearer_auth("sk_test_any_caller")
        .header(
            "traceparent",
            format!("00-{:032x}-{:016x}-01", caller.trace, caller.span),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let http = collector
        .wait_for(|spans| {
            let parent = caller.span.to_be_bytes();
            caller
                .in_trace(spans)
                .find(|span| span.name == "http" && span.parent_span_id == parent)
                .cloned()
        })
        .await;
    assert_eq!(attr(&http, "route").unwrap(), "/v1/users/{id}");
    assert_eq!(attr(&http, "status").unwrap(), "200");
    assert_eq!(attr(&http, "method").unwrap(), "GET");
}

#[tokio::test]
async fn the_callers_trace_context_never_reaches_clerk() {
    let _collector = Collector::get();
    let _up = RECEIVER.read().await;
    let harness = Harness::start(Options::default()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let caller = Caller::new();
    let traceparent = format!("00-{:032x}-{:016x}-01", caller.trace, caller.span);
    // A front request forwarded as sent (an API version the broker does
    // not serve itself), and one the broker answers with its own lookup.
    for version in ["2021-02-05", "2025-11-10"] {
        let before = harness.fake.stats().requests;
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/v1/users/{}",
                harness.front_addr,
                harness.ids[if version == "2021-02-05" { 1 } else { 2 }]
            ))
            .bearer_auth("sk_test_any_caller")
            .header("clerk-api-version", version)
            .header("traceparent", &traceparent)
            .header("tracestate", "vendor=value")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{version}");
        assert!(
            harness.fake.stats().requests > before,
            "{version}: no request reached Clerk"
        );
    }
    // A gRPC lookup (a miss) with the caller's trace context.
    let before = harness.fake.stats().requests;
    let mut request = caller.request(GetUserRequest {
        user_id: harness.ids[3].clone(),
    });
    request
        .metadata_mut()
        .insert("tracestate", "vendor=value".parse().unwrap());
    harness.users().await.get_user(request).await.unwrap();
    assert!(
        harness.fake.stats().requests > before,
        "no lookup reached Clerk"
    );
    assert_eq!(harness.fake.stats().trace_context_requests, 0);
}
