//! The rate limit (429, `Retry-After`, blocks) and the injected faults, over HTTP.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::fake::{
    EndpointLimits, FakeClerk, FakeClerkConfig, FakeStats, Faults, LimitedEndpoint, seed,
};

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

#[tokio::test]
async fn per_user_write_limits_are_separate_from_each_other_and_from_other_users() {
    let mut config = FakeClerkConfig::new(KEY);
    // A 10 s window: the 3 accepted writes surely fall inside it even on a loaded machine.
    config.endpoint_limits = EndpointLimits::off().writes(3, Duration::from_secs(10));
    let (fake, base, client) = start(config, five_users()).await;
    let metadata = |user: &str| format!("{base}/users/{user}/metadata");
    let body = || Some(json!({"public_metadata": {"n": 1}}));
    for method in [Method::PATCH, Method::PUT, Method::PATCH] {
        assert_eq!(
            send(&client, method, &metadata("user_a"), body()).await.0,
            200
        );
    }
    // The fourth metadata write of user_a, PATCH or PUT, is refused.
    let (status, headers, error) = send(&client, Method::PUT, &metadata("user_a"), body()).await;
    assert_eq!(
        (status, first_error_code(&error)),
        (429, "too_many_requests")
    );
    assert_eq!(headers["retry-after"], "10");
    assert!(error["clerk_trace_id"].is_string());
    assert_eq!(
        send(&client, Method::PATCH, &metadata("user_a"), body())
            .await
            .0,
        429
    );
    // Other users, and user_a's other endpoints, are not affected.
    assert_eq!(
        send(&client, Method::PATCH, &metadata("user_b"), body())
            .await
            .0,
        200
    );
    let update = Some(json!({"first_name": "Ada"}));
    let user_a = format!("{base}/users/user_a");
    assert_eq!(send(&client, Method::PATCH, &user_a, update).await.0, 200);
    assert_eq!(get(&client, &user_a).await.0, 200);
    let stats = fake.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(
        stats.endpoint_rate_limited,
        [(LimitedEndpoint::UserMetadata, 2)].into_iter().collect()
    );
    assert_eq!(
        stats.endpoint_max_in_window,
        [
            (LimitedEndpoint::UserUpdate, 1),
            (LimitedEndpoint::UserMetadata, 3)
        ]
        .into_iter()
        .collect()
    );
    // Turned off, the block is forgotten.
    fake.set_endpoint_limits(EndpointLimits::off());
    assert_eq!(
        send(&client, Method::PATCH, &metadata("user_a"), body())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn clerks_limits_apply_by_default_to_organizations_and_invitations() {
    let config = FakeClerkConfig::new(KEY);
    assert_eq!(config.endpoint_limits, EndpointLimits::clerk());
    let (fake, base, client) = start(config, seed::synthetic_users(200, 3)).await;
    let org = fake.organizations().remove(0);
    let url = format!("{base}/organizations/{}", org["id"].as_str().expect("id"));
    // Clerk: 10 per 10 s per organization (eleven requests take far less than 10 s).
    for n in 0..10 {
        let body = Some(json!({"name": format!("Name {n}")}));
        assert_eq!(send(&client, Method::PATCH, &url, body).await.0, 200, "{n}");
    }
    let (status, headers, _) = send(&client, Method::PATCH, &url, Some(json!({}))).await;
    assert_eq!(
        (status, headers["retry-after"].to_str().ok()),
        (429, Some("10"))
    );
    let metadata = Some(json!({"public_metadata": {"a": 1}}));
    assert_eq!(
        send(&client, Method::PATCH, &format!("{url}/metadata"), metadata)
            .await
            .0,
        200
    );
    // Invitations: 100 per hour for the instance; shortened here to 2.
    fake.set_endpoint_limits(EndpointLimits {
        invitation_create: Some((2, Duration::from_secs(3600))),
        ..EndpointLimits::off()
    });
    let invite = |n: u32| Some(json!({"email_address": format!("invitee{n}@example.com")}));
    let invitations = format!("{base}/invitations");
    assert_eq!(
        send(&client, Method::POST, &invitations, invite(1)).await.0,
        200
    );
    assert_eq!(
        send(&client, Method::POST, &invitations, invite(2)).await.0,
        200
    );
    let (status, headers, _) = send(&client, Method::POST, &invitations, invite(3)).await;
    assert_eq!(
        (status, headers["retry-after"].to_str().ok()),
        (429, Some("3600"))
    );
    let stats = fake.stats();
    assert_eq!(
        stats.endpoint_rate_limited[&LimitedEndpoint::OrganizationUpdate],
        1
    );
    assert_eq!(
        stats.endpoint_rate_limited[&LimitedEndpoint::InvitationCreate],
        1
    );
    assert_eq!(
        stats.endpoint_max_in_window[&LimitedEndpoint::OrganizationUpdate],
        10
    );
    assert_eq!(fake.invitations().len(), 2);
}

#[tokio::test]
async fn an_instance_block_refuses_writes_before_their_own_limit_counts_them() {
    let mut config = FakeClerkConfig::new(KEY);
    config.endpoint_limits = EndpointLimits::off().writes(1, Duration::from_secs(30));
    let (fake, base, client) = start(config, five_users()).await;
    fake.block_for(Duration::from_secs(30));
    let url = format!("{base}/users/user_a/metadata");
    let body = || Some(json!({"public_metadata": {"n": 1}}));
    assert_eq!(send(&client, Method::PATCH, &url, body()).await.0, 429);
    let stats = fake.stats();
    assert_eq!(
        (stats.rate_limited, stats.endpoint_rate_limited.len()),
        (1, 0)
    );
    assert!(stats.endpoint_max_in_window.is_empty(), "not counted");
}
