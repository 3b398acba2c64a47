//! Clerk failing: precise statuses within the deadline, health that tells a
//! broken key from a Clerk outage, and recovery when Clerk heals.

use std::time::{Duration, Instant};

use clerk_broker::{fake::Faults, pb::GetUserRequest};
use tonic::Code;
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};

use crate::harness::{Harness, Options, with_deadline};

#[tokio::test]
async fn server_errors_are_retried_then_reported_unavailable() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    harness.fake.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    harness.fake.reset_stats();
    let id = harness.ids[0].clone();
    let started = Instant::now();
    let request = with_deadline(
        GetUserRequest {
            user_id: id.clone(),
        },
        Duration::from_secs(5),
    );
    let status = users.get_user(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        harness.fake.stats().requests,
        4,
        "one try and three retries"
    );
    // A Clerk outage is not a broker outage.
    assert_eq!(harness.health("").await, ServingStatus::Serving as i32);

    harness.fake.set_faults(Faults::default());
    users
        .get_user(GetUserRequest { user_id: id })
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_answers_and_timeouts_end_before_the_deadline() {
    let harness = Harness::start(Options::default()).await;
    let mut users = harness.users().await;
    for faults in [
        Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            timeout_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            drop_rate: 1.0,
            ..Faults::default()
        },
    ] {
        harness.fake.set_faults(faults.clone());
        let started = Instant::now();
        let request = with_deadline(
            GetUserRequest {
                user_id: harness.ids[1].clone(),
            },
            Duration::from_millis(1_500),
        );
        let status = users.get_user(request).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
            "{faults:?}: {status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1_600),
            "{faults:?}"
        );
    }
}

#[tokio::test]
async fn a_rejected_key_fails_readiness_but_not_liveness() {
    let harness = Harness::start(Options {
        broker_key: "sk_test_not_the_right_key",
        ..Options::default()
    })
    .await;
    let mut users = harness.users().await;
    let status = users
        .get_user(GetUserRequest {
            user_id: harness.ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("misconfigured"));
    assert!(!status.message().contains("not_the_right_key"));
    // The broker confirms with its own key check, then health follows.
    let deadline = Instant::now() + Duration::from_secs(2);
    while harness.health("").await != ServingStatus::NotServing as i32 {
        assert!(Instant::now() < deadline, "readiness never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        harness.health("clerk_broker.v1.UserService").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        harness.health("liveness").await,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        harness.fake.stats().count_requests,
        1,
        "one key check confirmed the rejection"
    );
}

#[tokio::test]
async fn a_403_is_refused_to_its_caller_and_readiness_stays() {
    let harness = Harness::start(Options::default()).await;
    let mut health = HealthClient::new(harness.channel().await);
    let mut readiness = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = readiness.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // Clerk refuses requests the instance does not allow with 403, the key
    // being fine.
    harness.fake.set_faults(Faults {
        forbidden_rate: 1.0,
        ..Faults::default()
    });
    let mut users = harness.users().await;
    let status = users
        .get_user(GetUserRequest {
            user_id: harness.ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("HTTP 403"), "{status:?}");
    assert!(
        status.message().contains("authorization_invalid"),
        "{status:?}"
    );
    // Readiness does not change (it changed within milliseconds when any
    // 403 counted as a rejected key), and no key check was needed.
    let change = tokio::time::timeout(Duration::from_secs(1), readiness.message()).await;
    assert!(change.is_err(), "readiness changed: {change:?}");
    assert_eq!(harness.health("").await, ServingStatus::Serving as i32);
    assert_eq!(harness.fake.stats().count_requests, 0);
}
