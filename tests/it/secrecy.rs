//! The secret key never appears in any output: logs at the most verbose
//! level, status messages, metrics, or the Clerk-compatible front's answers
//! and headers, even when Clerk rejects it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use clerk_broker::pb::{GetUserRequest, ListUsersRequest, user_service_client::UserServiceClient};

const SECRET: &str = "sk_test_THIS_MUST_NEVER_BE_PRINTED_42";

/// Starts a binary, returns it and its first stdout line.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-broker"));
    command
        .args(args)
        .env_remove("CLERK_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    (child, first)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_key_is_in_no_log_line_status_or_metric() {
    // A fake Clerk that accepts another key: every request gets a 401.
    let (mut fake, banner) = spawn(
        &["fake-clerk", "--listen", "127.0.0.1:0", "--users", "10"],
        &[("CLERK_SECRET_KEY", "sk_test_the_fakes_own_key")],
    );
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap()
        .to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let http_listen = format!("127.0.0.1:{}", free_port());
    let front_listen = format!("127.0.0.1:{}", free_port());
    let mut broker = Command::new(env!("CARGO_BIN_EXE_clerk-broker"))
        .args(["serve", "--listen", &listen, "--clerk-api-url", &url])
        .args(["--http-listen", &http_listen])
        .args(["--clerk-api-listen", &front_listen])
        .env("CLERK_SECRET_KEY", SECRET)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the logs as they come, or a full pipe would block the broker.
    let stderr = broker.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut users = None;
    for _ in 0..100 {
        if let Ok(client) = UserServiceClient::connect(format!("http://{listen}")).await {
            users = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut users = users.expect("the broker listens");
    let mut messages = Vec::new();
    let status = users
        .get_user(GetUserRequest {
            user_id: "user_1".into(),
        })
        .await
        .unwrap_err();
    messages.push(format!("{status:?}"));
    let mut stream = users
        .list_users(ListUsersRequest::default())
        .await
        .map(|response| response.into_inner());
    if let Ok(stream) = &mut stream {
        while let Some(item) = stream.message().await.transpose() {
            if let Err(status) = item {
                messages.push(format!("{status:?}"));
                break;
            }
        }
    }
    assert!(messages[0].contains("FailedPrecondition"), "{messages:?}");
    // reqwest is built without a default crypto provider; the broker's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = reqwest::get(format!("http://{http_listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("clerk_broker_upstream_requests_total"),
        "{metrics}"
    );
    messages.push(metrics);
    // The Clerk-compatible front: a read it serves, routes it passes through.
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/users/user_1"),
        (reqwest::Method::GET, "/v1/organizations/org_1"),
        (reqwest::Method::POST, "/v1/invitations"),
    ] {
        let response = client
            .request(method, format!("http://{front_listen}{path}"))
            .bearer_auth("sk_live_a_caller_token")
            .body(r#"{"email_address":"a@example.org"}"#)
            .send()
            .await
            .unwrap();
        let mut seen = format!("{} {:?}\n", response.status(), response.headers());
        seen += &response.text().await.unwrap();
        assert!(seen.contains("errors"), "{seen}");
        messages.push(seen);
    }

    let killed = Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || broker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let _ = fake.kill();
    let _ = fake.wait();
    let logs = logs.join().unwrap();
    assert!(logs.lines().count() > 20, "trace logging was on: {logs}");
    assert!(
        logs.contains("Clerk answered with an error"),
        "the 401 was logged"
    );
    for text in messages.iter().map(String::as_str).chain([&*logs]) {
        assert!(!text.contains(SECRET), "the key leaked: {text}");
        assert!(
            !text.contains("THIS_MUST_NEVER"),
            "part of the key leaked: {text}"
        );
    }
}
