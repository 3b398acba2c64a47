//! Metric labels come from bounded sets, never from what a client sends:
//! calls to made-up paths and permits asked of made-up budgets add no series
//! to `/metrics`, however many there are.

use std::time::Duration;

use clerk_broker::pb::{AcquirePermitRequest, GetUserRequest};
use futures_util::{StreamExt as _, stream};
use tonic::{Code, transport::Channel};
use tonic_health::ServingStatus;

use crate::harness::{Harness, Options};

/// Calls of each kind sent after the first.
const CALLS: usize = 2_000;

/// The `/metrics` text of `harness`.
async fn metrics(harness: &Harness) -> String {
    reqwest::get(format!("http://{}/metrics", harness.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Samples in a Prometheus text exposition (one per line).
fn series(text: &str) -> usize {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count()
}

/// `len` random letters and digits.
fn random(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// A made-up gRPC path: a service nobody serves, or a method the broker's
/// own service lacks, with a long name.
fn made_up_path(i: usize) -> String {
    match i % 3 {
        0 => format!("/x{}.Svc/{}", random(8), random(1_000)),
        1 => format!("/clerk_broker.v1.UserService/{}", random(1_000)),
        _ => format!("/{}", random(1_000)),
    }
}

/// One unary call to `path` with an empty message; its status code.
async fn call_path(channel: Channel, path: String) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A permit asked of a budget that does not exist (a valid name) or of a
/// name no budget can have (too long).
async fn ask_made_up_budget(channel: Channel, i: usize) -> Code {
    let mut quota = clerk_broker::pb::quota_service_client::QuotaServiceClient::new(channel);
    let budget = if i.is_multiple_of(2) {
        random(60)
    } else {
        random(15_000)
    };
    let request = AcquirePermitRequest {
        budget,
        ..Default::default()
    };
    quota.acquire_permit(request).await.unwrap_err().code()
}

#[tokio::test]
async fn made_up_paths_and_budgets_add_no_metric_series() {
    let harness = Harness::start(Options {
        users: 10,
        ..Options::default()
    })
    .await;
    let channel = harness.channel().await;
    // One call of each kind first: the series they use exist from here on.
    assert_eq!(
        call_path(channel.clone(), made_up_path(0)).await,
        Code::Unimplemented
    );
    assert_eq!(
        call_path(channel.clone(), made_up_path(1)).await,
        Code::Unimplemented
    );
    assert_eq!(ask_made_up_budget(channel.clone(), 0).await, Code::NotFound);
    assert_eq!(
        ask_made_up_budget(channel.clone(), 1).await,
        Code::InvalidArgument
    );
    let before = metrics(&harness).await;

    let calls = stream::iter(0..CALLS)
        .map(|i| {
            let channel = channel.clone();
            async move {
                call_path(channel.clone(), made_up_path(i)).await;
                ask_made_up_budget(channel, i).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>();
    // Bounded in time: a debug build on a loaded 2-core machine, generously.
    tokio::time::timeout(Duration::from_secs(120), calls)
        .await
        .expect("the calls end");

    let after = metrics(&harness).await;
    assert!(
        series(&after) <= series(&before) + 4,
        "{} series before, {} after",
        series(&before),
        series(&after)
    );
    assert!(
        after.len() < before.len() + 2_048,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    // Every made-up path was counted, under one label.
    let unknown = format!(
        r#"clerk_broker_grpc_calls_total{{code="Unimplemented",method="unknown"}} {}"#,
        CALLS + 2
    );
    assert!(after.contains(&unknown), "{unknown} not in\n{after}");
    // The broker serves on.
    let mut users = harness.users().await;
    let id = harness.ids[0].clone();
    users
        .get_user(GetUserRequest { user_id: id })
        .await
        .unwrap();
    assert_eq!(harness.health("").await, ServingStatus::Serving as i32);
}
