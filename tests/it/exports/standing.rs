//! An open export follows the policy in force and ends by its maximum
//! lifetime: a reload that revokes its caller, or takes away what it needs,
//! ends it before the next message; a stream that reaches its lifetime ends
//! resumably, and the client resumes to exactly the whole set.

use std::time::{Duration, Instant};

use clerk_broker::{
    callers::Policy,
    fake::Faults,
    pb::{GetUserRequest, ListUsersRequest, user_service_client::UserServiceClient},
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::{Code, transport::Channel};

use super::{Seen, assert_exactly_once, read_all};
use crate::{
    callers::as_caller,
    harness::{Harness, Options},
    reload::ConfigMap,
};

const FULL: &str = "scopes = [\"read_users\", \"read_private_metadata\"]";

/// A policy file of callers: name, token, and the rest of the entry.
fn policy_text(callers: &[(&str, &str, &str)]) -> String {
    let mut text = String::new();
    for (name, token, rest) in callers {
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        text += &format!("[[callers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n{rest}\n");
    }
    text
}

/// Reads an export of `token` to its end, in a task, telling `started` of
/// its first message; what it saw, and when it ended.
fn export(
    harness: &Harness,
    token: &'static str,
    request: ListUsersRequest,
    started: mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<(Seen, Instant)> {
    let address = format!("http://{}", harness.addr);
    tokio::spawn(async move {
        let channel = Channel::from_shared(address).unwrap().connect().await;
        let mut client = UserServiceClient::new(channel.unwrap());
        let mut stream = client
            .list_users(as_caller(token, request))
            .await
            .unwrap()
            .into_inner();
        let seen = read_all(&mut stream, |seen| {
            if seen.tokens.len() == 1 {
                let _ = started.send(());
            }
        })
        .await;
        (seen, Instant::now())
    })
}

fn page_of_100() -> ListUsersRequest {
    ListUsersRequest {
        order_by: "created_at".into(),
        page_size: 100,
        ..Default::default()
    }
}

/// The token in a status's `x-resume-token` trailer.
fn trailer(seen: &Seen) -> Option<String> {
    let status = seen.status.as_ref()?;
    let token = status.metadata().get("x-resume-token")?;
    Some(token.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_the_exports_of_callers_it_revoked_or_reduced() {
    let mut map = ConfigMap::new(&policy_text(&[
        ("gone", "gone-token", FULL),
        ("demoted", "demoted-token", FULL),
        ("blinded", "blinded-token", FULL),
        ("kept", "kept-token", FULL),
    ]));
    let harness = Harness::start(Options {
        users: 3_000,
        policy: Policy::load(&map.path(), |_| Duration::ZERO).unwrap(),
        policy_path: Some(map.path()),
        ..Options::default()
    })
    .await;
    // Slow pages (7 of them), so the exports are open when the file changes.
    harness.fake.set_faults(Faults {
        latency: Duration::from_millis(500),
        ..Faults::default()
    });
    let (started, mut starts) = mpsc::unbounded_channel();
    let streams: Vec<_> = ["gone-token", "demoted-token", "blinded-token", "kept-token"]
        .into_iter()
        .map(|token| export(&harness, token, page_of_100(), started.clone()))
        .collect();
    for _ in &streams {
        starts
            .recv()
            .await
            .expect("every export delivers a first message");
    }
    map.publish(&policy_text(&[
        ("demoted", "demoted-token", "scopes = [\"acquire_permits\"]"),
        ("blinded", "blinded-token", "scopes = [\"read_users\"]"),
        ("kept", "kept-token", FULL),
    ]));
    // The reload is in force once the revoked token is refused.
    let published = Instant::now();
    let reloaded = loop {
        let mut users = harness.users().await;
        let request = GetUserRequest {
            user_id: harness.ids[0].clone(),
        };
        match users.get_user(as_caller("gone-token", request)).await {
            Err(status) if status.code() == Code::Unauthenticated => break Instant::now(),
            _ => {
                assert!(published.elapsed() < Duration::from_secs(5), "no reload");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut ended = Vec::new();
    for stream in streams {
        ended.push(stream.await.unwrap());
    }
    let expected = [
        (Code::Unauthenticated, "revoked"),
        (Code::PermissionDenied, "read_users"),
        (Code::PermissionDenied, "read_private_metadata"),
    ];
    for ((seen, at), (code, says)) in ended.iter().zip(expected) {
        let status = seen.status.as_ref().expect("the export was cut");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
        assert!(trailer(seen).is_some(), "resumable: {status:?}");
        assert!(seen.ids.len() < 3_000, "{says}: {} users", seen.ids.len());
        assert!(
            *at <= reloaded + Duration::from_secs(1),
            "{says}: ended {:?} after the reload",
            at.duration_since(reloaded)
        );
    }
    // The caller the reload kept exports everything.
    let (kept, _) = &ended[3];
    assert!(kept.status.is_none(), "{:?}", kept.status);
    assert_exactly_once(&kept.ids, &harness.ids);

    // The cut export resumes, with a valid credential, to exactly the rest.
    let (gone, _) = &ended[0];
    let resumed = ListUsersRequest {
        resume_token: trailer(gone).unwrap(),
        page_size: 500,
        ..Default::default()
    };
    harness.fake.set_faults(Faults::default());
    let (rest, _) = export(&harness, "kept-token", resumed, started)
        .await
        .unwrap();
    assert!(rest.status.is_none(), "{:?}", rest.status);
    let all: Vec<String> = gone.ids.iter().chain(&rest.ids).cloned().collect();
    assert_exactly_once(&all, &harness.ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_maximum_lifetime_and_the_export_resumes_exactly() {
    let lifetime = Duration::from_secs(1);
    let harness = Harness::start(Options {
        users: 3_000,
        max_stream_lifetime: lifetime,
        ..Options::default()
    })
    .await;
    harness.fake.set_faults(Faults {
        latency: Duration::from_millis(250),
        ..Faults::default()
    });
    let mut ids = Vec::new();
    let mut token = String::new();
    let mut cuts = 0;
    for _ in 0..60 {
        let request = ListUsersRequest {
            // A resumed export takes its order from the token.
            order_by: if token.is_empty() { "created_at" } else { "" }.into(),
            resume_token: token.clone(),
            page_size: 100,
            ..Default::default()
        };
        let started = Instant::now();
        let mut client = harness.users().await;
        let mut stream = client.list_users(request).await.unwrap().into_inner();
        let seen = read_all(&mut stream, |_| {}).await;
        ids.extend(seen.ids.iter().cloned());
        let Some(status) = &seen.status else {
            break;
        };
        cuts += 1;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("--max-stream-lifetime"),
            "{status:?}"
        );
        assert!(started.elapsed() >= lifetime, "{:?}", started.elapsed());
        // A stream cut before its first message resumes where it began.
        if let Some(last) = trailer(&seen) {
            assert_eq!(Some(&last), seen.tokens.last());
            token = last;
        }
    }
    assert!(cuts >= 1, "the export never reached its lifetime");
    assert_eq!(ids.len(), harness.ids.len(), "after {cuts} cuts");
    assert_exactly_once(&ids, &harness.ids);
}
