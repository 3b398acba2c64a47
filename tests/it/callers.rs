//! Callers are known by bearer token; budgets they may not use are refused.

use clerk_broker::{
    callers::Policy,
    pb::{AcquirePermitRequest, GetUserRequest},
};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_health::ServingStatus;

use crate::harness::{Harness, Options};

/// A policy for `callers` (name, token, weight, budgets) and one extra
/// budget, "writes", of `writes` (e.g. "5/1s").
pub(crate) fn policy(writes: &str, callers: &[(&str, &str, u32, &[&str])]) -> Policy {
    Policy::parse(&policy_text(writes, callers), |_| Duration::ZERO).unwrap()
}

/// The text of the policy file that `policy` parses.
pub(crate) fn policy_text(writes: &str, callers: &[(&str, &str, u32, &[&str])]) -> String {
    let mut text = format!("[[budgets]]\nname = \"writes\"\nrate = \"{writes}\"\n");
    for (name, token, weight, budgets) in callers {
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let budgets: Vec<String> = budgets.iter().map(|b| format!("{b:?}")).collect();
        text += &format!(
            "[[callers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nweight = {weight}\nbudgets = [{}]\n",
            budgets.join(", ")
        );
    }
    text
}

/// `message` with `authorization: Bearer <token>`.
pub(crate) fn as_caller<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// Keeps the "writes" budget saturated with 10 loops per token for
/// `run_for`; returns the permits granted per token (in `tokens` order)
/// while all of them competed.
pub(crate) async fn saturate_permits(
    harness: &Harness,
    tokens: &[&'static str],
    run_for: Duration,
) -> Vec<u32> {
    let start = Instant::now();
    let mut loops = Vec::new();
    for (index, &token) in tokens.iter().enumerate() {
        for _ in 0..10 {
            let mut quota = harness.quota().await;
            loops.push(tokio::spawn(async move {
                let mut granted = 0u32;
                while start.elapsed() < run_for {
                    let request = AcquirePermitRequest {
                        budget: "writes".into(),
                        max_wait: Some(prost_types::Duration {
                            seconds: 5,
                            nanos: 0,
                        }),
                        ..Default::default()
                    };
                    let reply = quota
                        .acquire_permit(as_caller(token, request))
                        .await
                        .unwrap();
                    // Grants after the run, when the competition stopped, do not count.
                    if reply.into_inner().granted && start.elapsed() < run_for {
                        granted += 1;
                    }
                }
                (index, granted)
            }));
        }
    }
    let mut granted = vec![0; tokens.len()];
    for task in loops {
        let (index, count) = task.await.unwrap();
        granted[index] += count;
    }
    granted
}

#[tokio::test]
async fn tokens_identify_callers_and_budgets_are_checked() {
    let harness = Harness::start(Options {
        policy: policy(
            "5/1s",
            &[
                ("checkout", "alpha-token", 1, &["clerk", "writes"]),
                ("reports", "beta-token", 1, &["clerk"]),
            ],
        ),
        ..Options::default()
    })
    .await;
    let mut quota = harness.quota().await;
    let mut users = harness.users().await;
    let id = harness.ids[0].clone();

    let missing = users
        .get_user(GetUserRequest {
            user_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("Bearer"), "{missing:?}");
    let unknown = users
        .get_user(as_caller(
            "gamma-token",
            GetUserRequest {
                user_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);

    users
        .get_user(as_caller("beta-token", GetUserRequest { user_id: id }))
        .await
        .expect("a known caller may look users up");
    let writes = || AcquirePermitRequest {
        budget: "writes".into(),
        ..Default::default()
    };
    let denied = quota
        .acquire_permit(as_caller("beta-token", writes()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("\"writes\""), "{denied:?}");
    let granted = quota
        .acquire_permit(as_caller("alpha-token", writes()))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted);
    assert_eq!((granted.budget.as_str(), granted.limit), ("writes", 5));

    // Health needs no token.
    assert_eq!(harness.health("").await, ServingStatus::Serving as i32);
}
