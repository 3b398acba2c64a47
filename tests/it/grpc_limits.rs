//! What the gRPC listener bounds: peers that send nothing, or only the
//! HTTP/2 preface, are disconnected (handshake and idle timeouts) while
//! well-behaved clients are served; at the connection cap further clients
//! wait and are served once a slot frees; idle connections close but never
//! one with an open stream; a peer that never acknowledges PINGs, or stops
//! reading a large answer, is closed;
//! the streams per connection are announced; over TLS a stalled handshake
//! is cut.

use std::time::Duration;

use bytes::Bytes;
use clerk_broker::{config::GrpcLimits, pb::GetUserRequest};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
    time::Instant,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    harness::{Harness, Options},
    pki::{Ca, Dir, Seen, client_config, tls_channel},
};

/// The HTTP/2 client magic.
const MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame: with [`MAGIC`], a client's whole preface.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// An acknowledgement of the server's SETTINGS.
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

/// The longest any test waits for the broker to act (a loaded machine is slow).
const BOUND: Duration = Duration::from_secs(20);

fn options(grpc: GrpcLimits) -> Options {
    Options {
        users: 10,
        grpc,
        ..Options::default()
    }
}

/// Limits with a short idle timeout for tests, and a handshake deadline
/// that a well-behaved client meets even on a loaded machine; what a test
/// checks is set after.
fn short() -> GrpcLimits {
    GrpcLimits {
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(600),
        ..GrpcLimits::default()
    }
}

/// A handshake deadline under test: short, but one the test's own
/// well-behaved clients still meet on a loaded machine.
const HANDSHAKE_UNDER_TEST: Duration = Duration::from_secs(1);

/// Waits for the first bytes the broker sends on `stream` (its SETTINGS):
/// proof that it accepted and serves the connection.
async fn served(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(bound, stream.read(&mut buffer)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Discards what the broker sends on `stream` until it closes it (EOF or
/// reset); how long after `since` that was, if within [`BOUND`].
async fn closed_after(mut stream: TcpStream, since: Instant) -> Option<Duration> {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

async fn health(channel: tonic::transport::Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|response| response.into_inner().status)
}

#[tokio::test]
async fn silent_peers_are_closed_while_clients_are_served() {
    let limits = GrpcLimits {
        handshake_timeout: HANDSHAKE_UNDER_TEST,
        idle_timeout: Duration::from_secs(6),
        ..short()
    };
    let harness = Harness::start(options(limits)).await;
    let mut closing: Vec<(bool, JoinHandle<Option<Duration>>)> = Vec::new();
    for i in 0..80 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(harness.addr).await.unwrap();
        let preface = i % 2 == 1;
        if preface {
            stream.write_all(MAGIC).await.unwrap();
            stream.write_all(&SETTINGS).await.unwrap();
        }
        closing.push((preface, tokio::spawn(closed_after(stream, started))));
    }
    // A well-behaved client calls throughout, on one connection.
    let channel = harness.channel().await;
    let mut users = harness.users().await;
    let mut calls = 0;
    while closing.iter().any(|(_, task)| !task.is_finished()) {
        assert_eq!(health(channel.clone()).await.unwrap(), 1);
        let user = users
            .get_user(GetUserRequest {
                user_id: harness.ids[calls % harness.ids.len()].clone(),
            })
            .await
            .unwrap();
        assert!(!user.into_inner().id.is_empty());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls > 0);
    for (preface, task) in closing {
        let after = task.await.unwrap().expect("closed by the broker");
        if preface {
            // Past the handshake deadline: closed as idle, not before.
            assert!(
                after >= limits.idle_timeout,
                "preface-only closed after {after:?}"
            );
        } else {
            // By the handshake deadline, long before the idle one.
            assert!(
                after >= limits.handshake_timeout && after < limits.idle_timeout,
                "silent closed after {after:?}"
            );
        }
    }
    // The well-behaved client's connection was never idle: still usable.
    assert_eq!(health(channel).await.unwrap(), 1);
}

#[tokio::test]
async fn at_the_cap_clients_wait_and_are_served_when_a_slot_frees() {
    let harness = Harness::start(options(GrpcLimits {
        max_connections: 8,
        handshake_timeout: Duration::from_secs(60),
        ..GrpcLimits::default()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(harness.addr).await.unwrap();
        assert!(served(&mut stream, BOUND).await);
        held.push(stream);
    }
    // The 9th connects (the kernel's backlog) but is not served yet.
    let mut ninth = TcpStream::connect(harness.addr).await.unwrap();
    assert!(!served(&mut ninth, Duration::from_millis(300)).await);
    let addr = harness.addr;
    let call = tokio::spawn(async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        health(channel).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "served beyond the cap");
    // Two slots free: the 9th, then the client, are served in turn.
    held.truncate(6);
    assert!(served(&mut ninth, BOUND).await);
    let status = tokio::time::timeout(BOUND, call).await.unwrap().unwrap();
    assert_eq!(status.unwrap(), 1);
}

#[tokio::test]
async fn the_handshake_timeout_frees_slots_for_waiting_clients() {
    let limits = GrpcLimits {
        max_connections: 2,
        handshake_timeout: HANDSHAKE_UNDER_TEST,
        // Only the handshake deadline can free the slots.
        idle_timeout: Duration::from_secs(60),
        ..short()
    };
    let harness = Harness::start(options(limits)).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(harness.addr).await.unwrap();
        assert!(served(&mut stream, BOUND).await);
        silent.push(tokio::spawn(closed_after(stream, started)));
    }
    let status = tokio::time::timeout(BOUND, health(harness.channel().await)).await;
    assert_eq!(status.unwrap().unwrap(), 1);
    // The client waited for a silent connection's deadline.
    assert!(started.elapsed() >= limits.handshake_timeout);
    for task in silent {
        assert!(task.await.unwrap().expect("closed") >= limits.handshake_timeout);
    }
}

/// A raw HTTP/2 connection (h2's client); the task ends when it closes.
async fn h2_connection(harness: &Harness) -> (h2::client::SendRequest<Bytes>, JoinHandle<Instant>) {
    let tcp = TcpStream::connect(harness.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let closed = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    (send.ready().await.unwrap(), closed)
}

/// Starts a call of `path` with an empty request message; its answer's body.
async fn h2_call(send: &mut h2::client::SendRequest<Bytes>, path: &str) -> h2::RecvStream {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    // A gRPC message: not compressed, 0 bytes long.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// The next message of a gRPC answer, as raw bytes (prefix included).
async fn next_message(body: &mut h2::RecvStream) -> Bytes {
    let data = body.data().await.expect("a message").unwrap();
    let _ = body.flow_control().release_capacity(data.len());
    data
}

#[tokio::test]
async fn idle_connections_close_but_never_one_with_an_open_stream() {
    let limits = GrpcLimits {
        idle_timeout: Duration::from_millis(400),
        max_concurrent_streams: 3,
        ..short()
    };
    let harness = Harness::start(options(limits)).await;
    let (mut send, closed) = h2_connection(&harness).await;
    let mut check = h2_call(&mut send, "/grpc.health.v1.Health/Check").await;
    assert!(!next_message(&mut check).await.is_empty());
    let trailers = check.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    // The broker's SETTINGS have arrived: its stream cap is announced.
    assert_eq!(send.current_max_send_streams(), 3);

    // A Watch stream held well past the idle timeout keeps its connection.
    let mut watch = h2_call(&mut send, "/grpc.health.v1.Health/Watch").await;
    assert!(!next_message(&mut watch).await.is_empty());
    let held = tokio::time::timeout(limits.idle_timeout * 4, watch.data()).await;
    assert!(held.is_err(), "the stream ended or failed: {held:?}");
    assert!(!closed.is_finished(), "cut with a stream open");

    // Once it ends, the connection is idle and closed after the timeout.
    drop(watch);
    let ended = Instant::now();
    let closed_at = tokio::time::timeout(BOUND, closed)
        .await
        .expect("closed when idle")
        .unwrap();
    assert!(closed_at - ended >= limits.idle_timeout * 9 / 10);
}

#[tokio::test]
async fn a_peer_that_never_acknowledges_pings_is_closed() {
    let limits = GrpcLimits {
        idle_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..short()
    };
    let harness = Harness::start(options(limits)).await;
    let mut stream = TcpStream::connect(harness.addr).await.unwrap();
    stream.write_all(MAGIC).await.unwrap();
    stream.write_all(&SETTINGS).await.unwrap();
    stream.write_all(&SETTINGS_ACK).await.unwrap();
    let sent = Instant::now();
    // Read frames, answering none, until the broker closes the connection.
    let mut pinged = None;
    let read = tokio::time::timeout(BOUND, async {
        let mut header = [0u8; 9];
        loop {
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
            let mut payload = vec![0u8; length as usize];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            // A PING that is not itself an acknowledgement.
            if header[3] == 6 && header[4] & 1 == 0 {
                pinged.get_or_insert_with(Instant::now);
            }
        }
    })
    .await;
    assert!(read.is_ok(), "not closed");
    let pinged = pinged.expect("pinged before being closed");
    assert!(pinged - sent >= limits.keepalive_interval * 9 / 10);
    assert!(sent.elapsed() >= limits.keepalive_interval + limits.keepalive_timeout);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let limits = GrpcLimits {
        handshake_timeout: HANDSHAKE_UNDER_TEST,
        ..short()
    };
    let harness = Harness::start(Options {
        tls: Some(dir.server_files(&ca.server(), None)),
        ..options(limits)
    })
    .await;
    let started = Instant::now();
    // A TCP connection that never starts its handshake.
    let silent = TcpStream::connect(harness.addr).await.unwrap();
    let silent = tokio::spawn(closed_after(silent, started));
    // One that completes it but sends no preface: the same deadline.
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config(&ca, None, b"h2")));
    let tcp = TcpStream::connect(harness.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut buffer = [0u8; 1024];
    let eof = tokio::time::timeout(BOUND, async {
        loop {
            match tls.read(&mut buffer).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("closed without a preface");
    assert!(eof >= limits.handshake_timeout);
    let silent = silent.await.unwrap().expect("closed without a handshake");
    assert!(silent >= limits.handshake_timeout);
    // By the configured deadline, not the HTTP listener's 10 s.
    assert!(
        silent < clerk_broker::tls::HANDSHAKE_TIMEOUT / 2,
        "{silent:?}"
    );
    // Clients that speak in time are served.
    let channel = tls_channel(
        harness.addr,
        client_config(&ca, None, b"h2"),
        Seen::default(),
    )
    .await
    .unwrap();
    assert_eq!(health(channel).await.unwrap(), 1);
}

/// A TCP stream whose reads stop for good once `frozen` is set: a client
/// that stops reading its answers.
struct Freezable {
    tcp: TcpStream,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for Freezable {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Freezable {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_its_answer_is_closed() {
    let limits = GrpcLimits {
        // One slot: whether it frees shows whether the stalled peer is gone.
        max_connections: 1,
        idle_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..short()
    };
    let harness = Harness::start(Options {
        // An export far larger than the socket buffers.
        users: 20_000,
        ..options(limits)
    })
    .await;
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A small receive buffer (no autotuning): the broker's writes block
    // once its own send buffer is full, long before the export ends.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 << 10).unwrap();
    let tcp = socket.connect(harness.addr).await.unwrap();
    let io = Freezable {
        tcp,
        frozen: frozen.clone(),
    };
    // Windows large enough that flow control never stops the broker.
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 30)
        .initial_connection_window_size(1 << 30)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let _connection = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    // ListUsers with an empty request: every user, newest first.
    let mut export = h2_call(&mut send, "/clerk_broker.v1.UserService/ListUsers").await;
    assert!(!next_message(&mut export).await.is_empty());
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    // The stalled connection holds the only slot until it is cut.
    // It can acknowledge no PING: hyper cuts it, and the slot frees.
    let status = tokio::time::timeout(BOUND, health(harness.channel().await)).await;
    assert_eq!(status.expect("the stalled peer was never cut").unwrap(), 1);
}
