//! TLS on the gRPC listener: calls work over TLS and not in plaintext;
//! rotated certificate files serve new connections while old ones go on;
//! with mutual TLS a client certificate's identity is a caller, an unknown
//! one is refused, and a certificate from another CA cannot connect (on the
//! Clerk-compatible front too); probes reach health in plaintext on the
//! health-only listener.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use clerk_broker::{
    callers::Policy,
    pb::{AcquirePermitRequest, quota_service_client::QuotaServiceClient},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    callers::{as_caller, policy_text},
    harness::{Harness, Options},
    pki::{Ca, Dir, Seen, client_config, display, served_leaf, tls_channel},
};

/// The SPIFFE id of the caller that authenticates by certificate.
const CHECKOUT_ID: &str = "spiffe://example.org/ns/shop/sa/checkout";

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|response| response.into_inner().status)
}

/// A permit of one unit from `budget`, asked on `channel`, maybe with a token.
async fn permit(
    channel: Channel,
    budget: &str,
    token: Option<&str>,
) -> Result<bool, tonic::Status> {
    let message = AcquirePermitRequest {
        budget: budget.into(),
        cost: 1,
        ..Default::default()
    };
    let request = match token {
        Some(token) => as_caller(token, message),
        None => tonic::Request::new(message),
    };
    let mut client = QuotaServiceClient::new(channel);
    client
        .acquire_permit(request)
        .await
        .map(|response| response.into_inner().granted)
}

#[tokio::test]
async fn grpc_over_tls_works_and_plaintext_is_refused() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let harness = Harness::start(Options {
        tls: Some(dir.server_files(&ca.server(), None)),
        ..Options::default()
    })
    .await;
    let seen = Seen::default();
    let channel = tls_channel(harness.addr, client_config(&ca, None, b"h2"), seen.clone())
        .await
        .unwrap();
    assert_eq!(health(channel.clone()).await.unwrap(), 1); // SERVING
    assert!(permit(channel, "", None).await.unwrap());

    // A plaintext HTTP/2 client gets no answer from the TLS port.
    let plain = tokio::time::timeout(Duration::from_secs(20), async {
        let channel = Channel::from_shared(format!("http://{}", harness.addr))
            .unwrap()
            .connect()
            .await?;
        health(channel).await.map_err(Into::into)
    })
    .await
    .expect("a plaintext client is turned away, not left hanging");
    let plain: Result<i32, Box<dyn std::error::Error>> = plain;
    assert!(plain.is_err(), "{plain:?}");

    // Probes that cannot speak TLS use the plaintext health-only listener,
    // which serves health (readiness and liveness) and nothing else.
    let probe = Channel::from_shared(format!("http://{}", harness.health_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health(probe.clone()).await.unwrap(), 1); // SERVING
    let liveness = HealthClient::new(probe.clone())
        .check(HealthCheckRequest {
            service: clerk_broker::server::LIVENESS_SERVICE.into(),
        })
        .await
        .unwrap();
    assert_eq!(liveness.into_inner().status, 1);
    let refused = permit(probe, "", None).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_and_spare_old_ones() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let first = ca.server();
    let files = dir.server_files(&first, None);
    let harness = Harness::start(Options {
        tls: Some(files),
        ..Options::default()
    })
    .await;
    let seen = Seen::default();
    let old = tls_channel(harness.addr, client_config(&ca, None, b"h2"), seen.clone())
        .await
        .unwrap();
    assert_eq!(health(old.clone()).await.unwrap(), 1);
    assert_eq!(seen.leaves(), [first.der()]);

    // Rotate: the key first, then the certificate, as a non-atomic writer
    // would; the broker keeps the first pair while the two do not match.
    let second = ca.server();
    dir.write("tls.key", &second.key);
    dir.write("tls.crt", &second.cert);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaf = served_leaf(harness.addr, client_config(&ca, None, b"h2"))
            .await
            .unwrap();
        if leaf == second.der() {
            break;
        }
        assert_eq!(leaf, first.der(), "only the old or the new certificate");
        assert!(
            Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old connection goes on, with no reconnection.
    assert_eq!(health(old.clone()).await.unwrap(), 1);
    assert!(permit(old, "", None).await.unwrap());
    assert_eq!(seen.connections(), 1);

    // A broken pair (a certificate without its key) is not put in force.
    let third = ca.server();
    dir.write("tls.crt", &third.cert);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let leaf = served_leaf(harness.addr, client_config(&ca, None, b"h2"))
        .await
        .unwrap();
    assert_eq!(leaf, second.der());
    harness.stop().await.unwrap();
}

/// A broker whose policy knows `checkout` by certificate (the upstream
/// budget only) and `writer` by token (also the "writes" budget).
async fn mutual_tls_broker(ca: &Ca, dir: &Dir) -> Harness {
    let mut text = policy_text(
        "100/1s",
        &[("writer", "writer-token", 1, &["clerk", "writes"])],
    );
    text += &format!("[[callers]]\nname = \"checkout\"\ntls_identity = \"{CHECKOUT_ID}\"\n");
    Harness::start(Options {
        policy: Policy::parse(&text, |_| Duration::ZERO).unwrap(),
        tls: Some(dir.server_files(&ca.server(), Some(ca))),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_client_certificate_is_the_caller_it_names() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let harness = mutual_tls_broker(&ca, &dir).await;
    let checkout = ca.client(CHECKOUT_ID);
    let channel = tls_channel(
        harness.addr,
        client_config(&ca, Some(&checkout), b"h2"),
        Seen::default(),
    )
    .await
    .unwrap();
    // Checkout may use the upstream budget, not "writes": the certificate
    // made this call checkout's.
    assert!(permit(channel.clone(), "", None).await.unwrap());
    let denied = permit(channel.clone(), "writes", None).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("\"checkout\""), "{denied:?}");
    // A token, when sent, decides: the writer may use "writes".
    assert!(
        permit(channel, "writes", Some("writer-token"))
            .await
            .unwrap()
    );

    // A client without a certificate still connects, and needs a token.
    let anonymous = tls_channel(
        harness.addr,
        client_config(&ca, None, b"h2"),
        Seen::default(),
    )
    .await
    .unwrap();
    let missing = permit(anonymous.clone(), "", None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        permit(anonymous, "writes", Some("writer-token"))
            .await
            .unwrap()
    );
    harness.stop().await.unwrap();
}

/// One HTTP/1.1 GET of `path` on the front over TLS with `config`: the
/// answer's status code.
async fn front_status(addr: std::net::SocketAddr, config: rustls::ClientConfig, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer[9..12].parse().unwrap()
}

#[tokio::test]
async fn the_front_knows_a_caller_by_its_client_certificate_too() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let harness = mutual_tls_broker(&ca, &dir).await;
    let path = format!("/v1/users/{}", harness.ids[0]);
    let checkout = ca.client(CHECKOUT_ID);
    let with_certificate = client_config(&ca, Some(&checkout), b"http/1.1");
    assert_eq!(
        front_status(harness.front_addr, with_certificate, &path).await,
        200
    );
    let without = client_config(&ca, None, b"http/1.1");
    assert_eq!(front_status(harness.front_addr, without, &path).await, 401);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_identities_and_foreign_certificates_are_refused() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let harness = mutual_tls_broker(&ca, &dir).await;

    let stranger_id = "spiffe://example.org/ns/shop/sa/stranger";
    let stranger = ca.client(stranger_id);
    let channel = tls_channel(
        harness.addr,
        client_config(&ca, Some(&stranger), b"h2"),
        Seen::default(),
    )
    .await
    .unwrap();
    let refused = permit(channel, "", None).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains(stranger_id), "{refused:?}");
    assert!(refused.message().contains("tls_identity"), "{refused:?}");

    // The same identity issued by another CA does not get through the handshake.
    let other_ca = Ca::new("other CA");
    let forged = other_ca.client(CHECKOUT_ID);
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        let channel = tls_channel(
            harness.addr,
            client_config(&ca, Some(&forged), b"h2"),
            Seen::default(),
        )
        .await?;
        permit(channel, "", None).await.map_err(Into::into)
    })
    .await
    .expect("the forged client is turned away, not left hanging");
    let result: Result<bool, Box<dyn std::error::Error>> = result;
    assert!(result.is_err(), "{result:?}");
    harness.stop().await.unwrap();
}

#[test]
fn grpcurl_works_with_the_ca_and_a_client_certificate() {
    let found = Command::new("grpcurl").arg("-version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "grpcurl is not installed: run ./scripts/test.sh, which installs it"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let harness = runtime.block_on(mutual_tls_broker(&ca, &dir));
    let client = ca.client(CHECKOUT_ID);
    let (cacert, cert, key) = (
        dir.write("ca.crt", &ca.pem()),
        dir.write("client.crt", &client.cert),
        dir.write("client.key", &client.key),
    );
    let address = harness.addr.to_string();
    let run = |args: &[&str]| {
        let output = Command::new("grpcurl")
            .args(["-cacert", &display(&cacert)])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, listed) = run(&[&address, "list"]);
    assert!(
        ok && listed.contains("clerk_broker.v1.QuotaService"),
        "{listed}"
    );
    let (ok, granted) = run(&[
        "-cert",
        &display(&cert),
        "-key",
        &display(&key),
        "-d",
        r#"{"cost":1}"#,
        &address,
        "clerk_broker.v1.QuotaService/AcquirePermit",
    ]);
    assert!(ok && granted.contains("\"granted\": true"), "{granted}");
    let plaintext = Command::new("grpcurl")
        .args(["-plaintext", "-connect-timeout", "3", &address, "list"])
        .output()
        .unwrap();
    assert!(!plaintext.status.success(), "{plaintext:?}");
    runtime.block_on(harness.stop()).unwrap();
}

#[test]
fn bad_tls_files_stop_the_broker_at_start_with_64() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let (server, other) = (ca.server(), ca.server());
    let cert = display(&dir.write("tls.crt", &server.cert));
    let key = display(&dir.write("tls.key", &server.key));
    let other_key = display(&dir.write("other.key", &other.key));
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", &key, "--tls-key", &key], "--tls-cert"),
        (
            &["--tls-cert", &cert, "--tls-key", &other_key],
            "does not fit the certificate",
        ),
        (
            &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &key,
            ],
            "--tls-client-ca",
        ),
        (&["--tls-cert", &cert], "--tls-key"),
    ];
    for (flags, expected) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clerk-broker"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(flags)
            .env("CLERK_SECRET_KEY", "sk_test_tls_config_check")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{flags:?}: the broker started instead of refusing its TLS files");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(64), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }
}
