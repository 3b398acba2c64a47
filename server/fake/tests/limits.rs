//! The rate limit (429, `Retry-After`, blocks) and the injected faults, over HTTP.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::fake::{FakeClerk, FakeClerkConfig, FakeStats, Faults, seed};

#[tokio::test]
async fn the_request_over_the_limit_gets_429_and_a_block() {
    let mut config = FakeClerkConfig::new(KEY);
    // A 10 s window: the 5 accepted requests surely fall inside it even on a loaded machine.
    config.rate_limit = Some((5, Duration::from_secs(10)));
    config.block_for = Duration::from_millis(2500);
    let (fake, base, client) = start(config, five_users()).await;
    for _ in 0..5 {
        assert_eq!(get(&client, &format!("{base}/users/count")).await.0, 200);
    }
    let (status, headers, body) = get(&client, &format!("{base}/users/count")).await;
    assert_eq!(
        (status, first_error_code(&body)),
        (429, "too_many_requests")
    );
    assert_eq!(headers["retry-after"], "3");
    // Unauthenticated requests are refused before the limiter sees them.
    let anonymous = client
        .get(format!("{base}/users"))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    let stats = fake.stats();
    assert_eq!(
        (stats.requests, stats.rate_limited, stats.max_in_window),
        (7, 1, 5)
    );
    fake.reset_stats();
    assert_eq!(fake.stats(), FakeStats::default());
}

#[tokio::test]
async fn an_injected_block_ends_on_time() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let before = Instant::now();
    fake.block_for(Duration::from_millis(300));
    let after = Instant::now();
    let (status, headers, _) = get(&client, &format!("{base}/users/user_a")).await;
    // Only assert the 429 when the request surely arrived inside the block.
    if before.elapsed() < Duration::from_millis(300) {
        let retry_after = headers["retry-after"].to_str().ok();
        assert_eq!((status, retry_after), (429, Some("1")));
    }
    tokio::time::sleep_until((after + Duration::from_millis(300)).into()).await;
    assert_eq!(get(&client, &format!("{base}/users/user_a")).await.0, 200);
}

#[tokio::test]
async fn concurrent_requests_never_exceed_the_limit() {
    let mut config = FakeClerkConfig::new(KEY);
    config.rate_limit = Some((50, Duration::from_secs(30)));
    let (fake, base, client) = start(config, seed::synthetic_users(1_000, 2)).await;
    let requests = (0..200).map(|_| {
        let (client, url) = (client.clone(), format!("{base}/users?limit=20"));
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(KEY)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    });
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("join").expect("send"));
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 150);
    assert_eq!(fake.stats().max_in_window, 50);
}

#[tokio::test]
async fn faults_break_responses_as_configured() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let url = format!("{base}/users");
    fake.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..6 {
        let (status, _, body) = get(&client, &url).await;
        assert!([500, 502, 503].contains(&status), "{status}");
        assert!(body["clerk_trace_id"].is_string());
    }
    assert_eq!(fake.stats().server_errors, 6);

    fake.set_faults(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    });
    let response = client
        .get(&url)
        .bearer_auth(KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    fake.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let outcome = match client.get(&url).bearer_auth(KEY).send().await {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(
        outcome.is_err(),
        "a dropped connection must surface as an error"
    );

    fake.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let hung = client
        .get(&url)
        .bearer_auth(KEY)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.expect_err("must time out").is_timeout());

    fake.set_faults(Faults {
        latency: Duration::from_millis(100),
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(get(&client, &url).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn serve_stops_on_shutdown_even_with_a_hung_request() {
    let fake = FakeClerk::new(FakeClerkConfig::new(KEY), five_users());
    fake.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1/users", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fake.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let hung = tokio::spawn(async move {
        client()
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await
            .map(|r| r.status())
    });
    while fake.stats().requests == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    let served = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "serve must return after shutdown"
    );
    assert_eq!(hung.await.expect("join").expect("answered"), 503);
}
