//! Graceful shutdown: exports in flight end with a resumable status, and the
//! process exits 0 on SIGTERM.

use std::process::Command;

use clerk_broker::pb::{ListUsersRequest, user_service_client::UserServiceClient};
use tonic::{Code, Status};

use crate::harness::{Harness, Options, demo_process};

/// Reads an export until it ends; returns the ids and how it ended.
async fn drain_stream(
    stream: &mut tonic::Streaming<clerk_broker::pb::ListUsersResponse>,
    ids: &mut Vec<String>,
) -> Option<Status> {
    loop {
        match stream.message().await {
            Ok(Some(message)) => ids.extend(message.users.into_iter().map(|user| user.id)),
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

#[tokio::test]
async fn an_export_in_flight_ends_resumably_and_run_returns() {
    let mut harness = Harness::start(Options {
        users: 3_000,
        ..Options::default()
    })
    .await;
    let mut users = harness.users().await;
    let request = ListUsersRequest {
        order_by: "+created_at".into(),
        page_size: 5,
        ..Default::default()
    };
    let mut stream = users.list_users(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let mut ids: Vec<String> = first.users.into_iter().map(|user| user.id).collect();
    harness.begin_shutdown();
    let ended = drain_stream(&mut stream, &mut ids).await;
    let status = ended.expect("3000 users cannot all be sent before the drain");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("resume_token"));
    let token = status
        .metadata()
        .get("x-resume-token")
        .expect("the drain status carries the last token")
        .to_str()
        .unwrap()
        .to_owned();
    let fake = harness.fake.clone();
    harness.stop().await.expect("run returns Ok after a drain");

    // The token works on another broker with the same key (here: a new one).
    let other = Harness::start(Options {
        users: 0,
        ..Options::default()
    })
    .await;
    for id in fake_ids(&fake) {
        other.fake.upsert_user(fake.user(&id).unwrap());
    }
    let mut users = other.users().await;
    let resumed = ListUsersRequest {
        resume_token: token,
        page_size: 500,
        ..Default::default()
    };
    let mut stream = users.list_users(resumed).await.unwrap().into_inner();
    assert!(drain_stream(&mut stream, &mut ids).await.is_none());
    assert_eq!(ids.len(), 3_000);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3_000, "no repeats across the restart");
}

/// All ids of a fake, in seed order (re-derived from the same seed).
fn fake_ids(fake: &clerk_broker::fake::FakeClerk) -> Vec<String> {
    clerk_broker::fake::seed::synthetic_users(fake.user_count(), 7)
        .into_iter()
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sigterm_ends_streams_cleanly_and_exits_zero() {
    let (mut child, address, lines) = demo_process();
    let mut users = UserServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let request = ListUsersRequest {
        page_size: 5,
        ..Default::default()
    };
    let mut stream = users.list_users(request).await.unwrap().into_inner();
    let mut ids = Vec::new();
    stream.message().await.unwrap().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = drain_stream(&mut stream, &mut ids)
        .await
        .expect("the export is cut by the drain");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.metadata().get("x-resume-token").is_some());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter()
            .any(|line| line.contains("fake Clerk saw") && line.ends_with(" 0 429s")),
        "{rest:?}"
    );
}

#[tokio::test]
async fn readiness_flips_first_and_calls_are_served_during_the_drain_delay() {
    let mut harness = Harness::start(Options {
        drain_delay: std::time::Duration::from_millis(1_500),
        ..Options::default()
    })
    .await;
    let mut users = harness.users().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(harness.channel().await);
    let check = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    harness.begin_shutdown();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let status = health.check(check("")).await.unwrap().into_inner().status;
        if status == tonic_health::ServingStatus::NotServing as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never flipped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let live = health
        .check(check("liveness"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(live, tonic_health::ServingStatus::Serving as i32);
    // Still serving calls while load balancers catch up.
    let id = harness.ids[0].clone();
    users
        .get_user(clerk_broker::pb::GetUserRequest { user_id: id })
        .await
        .expect("served during the drain delay");
    harness.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_started_before_sigterm_fails_under_steady_load() {
    use std::{sync::Arc, time::Instant};

    let mut harness = Harness::start(Options {
        drain_delay: std::time::Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let ids = Arc::new(harness.ids.clone());
    let shutdown_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut loops = Vec::new();
    for worker in 0..8usize {
        let mut users = harness.users().await;
        let ids = ids.clone();
        let shutdown_at = shutdown_at.clone();
        loops.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for round in 0.. {
                let started = Instant::now();
                let id = ids[(worker * 31 + round) % ids.len()].clone();
                let result = users
                    .get_user(clerk_broker::pb::GetUserRequest { user_id: id })
                    .await;
                let failed = result.is_err();
                calls.push((started, result.map(|_| ()).map_err(|status| status.code())));
                // After the shutdown, stop at the first refusal (new calls
                // are turned away once the drain begins).
                if failed && shutdown_at.get().is_some() {
                    break;
                }
                if shutdown_at
                    .get()
                    .is_some_and(|at| at.elapsed() > std::time::Duration::from_secs(3))
                {
                    break;
                }
            }
            calls
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    shutdown_at.set(Instant::now()).unwrap();
    harness.begin_shutdown();
    let stopped = harness.stop().await;
    let at = *shutdown_at.get().unwrap();
    let mut before = 0;
    for task in loops {
        for (started, result) in task.await.unwrap() {
            if started < at {
                before += 1;
                assert!(
                    result.is_ok(),
                    "a call started before SIGTERM failed: {result:?}"
                );
            }
        }
    }
    assert!(
        before > 8,
        "the load was steady: {before} calls before SIGTERM"
    );
    stopped.expect("run returns Ok");
}
