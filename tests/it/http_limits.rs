//! The HTTP listener over TLS, and what it bounds: webhook bodies (413),
//! the time to send headers (slow-loris clients are disconnected), the time
//! to send a body and a whole request (408), the number of open connections,
//! and the number one peer may hold (metrics, on their own listener, stay
//! reachable meanwhile).

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clerk_broker::{config::HttpLimits, webhook::WebhookSecret};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{
    harness::{Harness, Options, WEBHOOK_SECRET},
    pki::{Ca, Dir, client_config},
};

/// A signed delivery of an event the broker accepts and ignores.
fn signed_delivery(client: &reqwest::Client, url: String) -> reqwest::RequestBuilder {
    let body = br#"{"type":"session.created","object":"event","data":{}}"#.to_vec();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let id = format!("msg_{:x}", fastrand::u64(..));
    let signature = WebhookSecret::parse(WEBHOOK_SECRET)
        .unwrap()
        .sign(&id, timestamp, &body);
    client
        .post(url)
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(body)
}

/// Whether the server closes `stream` (EOF or reset) within `bound`,
/// discarding anything it sends first.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One plain `GET /metrics` on `stream`; the status line of the answer.
async fn get_metrics(stream: &mut TcpStream, addr: SocketAddr) -> String {
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn https_serves_metrics_and_webhooks() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let harness = Harness::start(Options {
        tls: Some(dir.server_files(&ca.server(), None)),
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(&ca, None, b"http/1.1"))
        .build()
        .unwrap();
    let port = harness.http_addr.port();
    let metrics = client
        .get(format!("https://localhost:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("clerk_broker_"));
    let applied = signed_delivery(&client, format!("https://localhost:{port}/webhooks/clerk"))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200);

    // Plain HTTP to the TLS port gets no answer.
    let mut plain = TcpStream::connect(harness.http_addr).await.unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        get_metrics(&mut plain, harness.http_addr),
    )
    .await
    .unwrap();
    assert!(!status.contains("200"), "{status}");
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn oversize_webhook_bodies_get_413_and_the_broker_goes_on() {
    let harness = Harness::start(Options {
        http: HttpLimits {
            max_body: 4096,
            ..HttpLimits::default()
        },
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/webhooks/clerk", harness.http_addr);
    let oversize = client
        .post(&url)
        .body(vec![b'x'; 4097])
        .send()
        .await
        .unwrap();
    assert_eq!(oversize.status(), 413);
    let message = oversize.text().await.unwrap();
    assert!(message.contains("--http-max-body"), "{message}");
    // At the limit the body is read, and refused only for its signature.
    let at_limit = client
        .post(&url)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 400);
    let applied = signed_delivery(&client, url).send().await.unwrap();
    assert_eq!(applied.status(), 200);
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn slow_and_idle_clients_are_disconnected_after_the_header_timeout() {
    let header_timeout = Duration::from_millis(500);
    let harness = Harness::start(Options {
        http: HttpLimits {
            header_timeout,
            ..HttpLimits::default()
        },
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(harness.http_addr).await.unwrap();
    let mut slow = TcpStream::connect(harness.http_addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    // One header byte every 50 ms, forever: a slow-loris client.
    let (mut reader, mut writer) = slow.split();
    let drip = async {
        loop {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut buffer = [0u8; 1024];
    let cut = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            () = drip => {}
            _ = async {
                while let Ok(n) = reader.read(&mut buffer).await {
                    if n == 0 { break }
                }
            } => {}
        }
    })
    .await;
    assert!(cut.is_ok(), "the slow-loris client was never disconnected");
    assert!(started.elapsed() >= header_timeout - Duration::from_millis(50));
    assert!(closed_within(&mut idle, Duration::from_secs(20)).await);

    // Prompt clients are served as before.
    let mut prompt = TcpStream::connect(harness.http_addr).await.unwrap();
    let status = get_metrics(&mut prompt, harness.http_addr).await;
    assert!(status.contains("200"), "{status}");
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_whose_body_never_ends_gets_408() {
    let harness = Harness::start(Options {
        http: HttpLimits {
            request_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut stream = TcpStream::connect(harness.http_addr).await.unwrap();
    let head = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nhost: {}\r\ncontent-length: 100\r\n\r\n0123456789",
        harness.http_addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the stalled request is ended");
    let _ = read;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--http-request-timeout"), "{answer}");
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let harness = Harness::start(Options {
        http: HttpLimits {
            max_connections: 2,
            ..HttpLimits::default()
        },
        ..Options::default()
    })
    .await;
    let holders = [
        TcpStream::connect(harness.http_addr).await.unwrap(),
        TcpStream::connect(harness.http_addr).await.unwrap(),
    ];
    let mut waiting = TcpStream::connect(harness.http_addr).await.unwrap();
    let addr = harness.http_addr;
    let third = tokio::spawn(async move { get_metrics(&mut waiting, addr).await });
    // Both slots are taken: the third connection is not served meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished());
    drop(holders);
    let status = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("a freed slot serves the waiting client")
        .unwrap();
    assert!(status.contains("200"), "{status}");
    harness.stop().await.unwrap();
}

/// A connection from `local` (a loopback address) to `addr`.
async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Headers of a webhook delivery announcing a body it never sends.
fn held_request(addr: SocketAddr) -> String {
    format!("POST /webhooks/clerk HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100000\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_hold_the_webhook_port() {
    let harness = Harness::start(Options {
        http: HttpLimits {
            max_connections: 24,
            max_connections_per_peer: 8,
            ..HttpLimits::default()
        },
        metrics_listener: true,
        ..Options::default()
    })
    .await;
    // One peer tries to hold every connection with bodies it never sends.
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut stream = connect_from("127.0.0.1", harness.http_addr).await;
        stream
            .write_all(held_request(harness.http_addr).as_bytes())
            .await
            .unwrap();
        held.push(stream);
    }
    // Its connections beyond its 8 are closed at once; 8 stay open.
    let closing: Vec<_> = held
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move { closed_within(&mut stream, Duration::from_secs(2)).await })
        })
        .collect();
    let mut closed = 0;
    for task in closing {
        closed += usize::from(task.await.unwrap());
    }
    assert_eq!(closed, 16, "connections of the holding peer closed");

    // Meanwhile another peer's signed delivery is answered promptly.
    let client = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let url = format!("http://{}/webhooks/clerk", harness.http_addr);
    let applied =
        tokio::time::timeout(Duration::from_secs(3), signed_delivery(&client, url).send())
            .await
            .expect("the delivery is not held up")
            .unwrap();
    assert_eq!(applied.status(), 200);
    // Metrics answer on their own listener, and not on the webhook port.
    let metrics_addr = harness.metrics_addr.unwrap();
    let mut scrape = TcpStream::connect(metrics_addr).await.unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(3),
        get_metrics(&mut scrape, metrics_addr),
    )
    .await
    .expect("metrics answer");
    assert!(status.contains("200"), "{status}");
    let mut exposed = connect_from("127.0.0.2", harness.http_addr).await;
    let status = get_metrics(&mut exposed, harness.http_addr).await;
    assert!(status.contains("404"), "{status}");
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_never_comes_gets_408_after_the_body_timeout() {
    let body_timeout = Duration::from_millis(500);
    let harness = Harness::start(Options {
        http: HttpLimits {
            body_timeout,
            ..HttpLimits::default()
        },
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(harness.http_addr).await.unwrap();
    stream
        .write_all(held_request(harness.http_addr).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the held request is ended long before --http-request-timeout (30 s)")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--http-body-timeout"), "{answer}");
    assert!(started.elapsed() >= body_timeout);
    harness.stop().await.unwrap();
}
