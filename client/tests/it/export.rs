//! Exports through `Client::list_users` / `Client::export`: every user once,
//! across a cut connection, a broker that drains and one that is gone.

use std::time::{Duration, Instant};

use clerk_broker_client::{Client, Code, ResumePolicy, pb::ListUsersRequest};
use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::harness::{Broker, Options, Proxy, Upstream, start};

/// Users in the export tests: enough that a stream cannot sit whole in the
/// connection's buffers when it is cut.
const USERS: usize = 3_000;

fn request(page_size: u32, max_users: u64) -> ListUsersRequest {
    ListUsersRequest {
        order_by: "+created_at".into(),
        page_size,
        max_users,
        ..Default::default()
    }
}

/// The ids of an uninterrupted export, in order.
async fn reference(client: &Client) -> Vec<String> {
    let users: Vec<_> = client
        .list_users(request(500, 0))
        .map_ok(|user| user.id)
        .try_collect()
        .await
        .unwrap();
    users
}

fn fast_retries() -> ResumePolicy {
    ResumePolicy {
        max_retries: 5,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn list_users_streams_every_user_once_and_honours_max_users() {
    let (upstream, broker) = start(Options {
        users: USERS,
        ..Options::default()
    })
    .await;
    let client = broker.client().await;
    let ids = reference(&client).await;
    let mut sorted = ids.clone();
    sorted.sort();
    let mut expected = upstream.ids.clone();
    expected.sort();
    assert_eq!(sorted, expected);

    let first: Vec<_> = client
        .list_users(request(7, 20))
        .map_ok(|user| user.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(first, ids[..20]);
    broker.stop().await;
}

#[tokio::test]
async fn an_export_resumes_after_the_connection_is_cut() {
    let (_upstream, broker) = start(Options {
        users: USERS,
        ..Options::default()
    })
    .await;
    let ids = reference(&broker.client().await).await;
    let proxy = Proxy::start(broker.addr).await;
    let client = Client::builder(proxy.url())
        .resume_policy(fast_retries())
        .connect()
        .await
        .unwrap();
    let mut export = client.export(request(10, 0));
    let mut got = Vec::new();
    let mut messages = 0;
    while let Some(message) = export.next().await {
        let message = message.unwrap();
        got.extend(message.users.into_iter().map(|user| user.id));
        messages += 1;
        if messages == 3 {
            proxy.cut();
        }
    }
    assert!(proxy.connections() >= 2, "the export did not reconnect");
    assert_eq!(got, ids);
    broker.stop().await;
}

#[tokio::test]
async fn an_export_moves_to_another_broker_when_its_broker_drains() {
    let upstream = Upstream::start(USERS).await;
    let first = Broker::start(&upstream, Options::default()).await;
    let second = Broker::start(&upstream, Options::default()).await;
    let ids = reference(&first.client().await).await;
    let proxy = Proxy::start(first.addr).await;
    let client = Client::builder(proxy.url())
        .resume_policy(fast_retries())
        .connect()
        .await
        .unwrap();
    let mut export = client.export(request(10, 0));
    let mut got = Vec::new();
    let mut first = Some(first);
    let mut stopping = None;
    while let Some(message) = export.next().await {
        got.extend(message.unwrap().users.into_iter().map(|user| user.id));
        if got.len() >= 50
            && let Some(first) = first.take()
        {
            // New connections reach the second broker; the first one ends
            // the stream with UNAVAILABLE and the last token in a trailer.
            proxy.point_at(second.addr);
            stopping = Some(tokio::spawn(first.stop()));
        }
    }
    stopping.expect("the export got that far").await.unwrap();
    assert!(proxy.connections() >= 2, "the export did not reconnect");
    assert_eq!(got, ids);
    second.stop().await;
}

#[tokio::test]
async fn an_export_gives_up_after_bounded_retries() {
    let (_upstream, broker) = start(Options::default()).await;
    let url = broker.url();
    broker.stop().await;
    let client = Client::builder(url)
        .resume_policy(ResumePolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        })
        .connect_lazy()
        .unwrap();
    let started = Instant::now();
    let results: Vec<_> = client.list_users(request(10, 0)).collect().await;
    assert_eq!(results.len(), 1);
    let error = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
