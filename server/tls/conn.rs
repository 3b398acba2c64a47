//! Accepting connections for a listener, plain or TLS: [`incoming`] yields
//! [`Conn`]s whose [`Peer`] (the remote address and, with mutual TLS, the
//! verified client certificate's names) tonic puts into every request's
//! extensions.
//!
//! TLS handshakes run in their own tasks, each bounded by the listener's
//! handshake timeout ([`HANDSHAKE_TIMEOUT`] unless its limits say otherwise),
//! so a client that stalls its handshake holds up no one. Accepted sockets set TCP_NODELAY: gRPC answers are small writes that
//! must not wait for the peer's delayed ACK.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Instant,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::transport::server::Connected;

use super::{
    ClientIdentity, Listener, TlsStore,
    peers::{PeerLimit, PeerSlot},
};

/// Longest time a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a listener's connections are set up.
#[derive(Clone, Debug)]
pub enum Acceptor {
    /// Plain TCP.
    Plain,
    /// TLS with the credentials in force at each handshake.
    Tls(Arc<TlsStore>, Listener),
}

/// Who is at the other end of a connection (tonic's connect info).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The names of the client certificate verified in the handshake.
    pub client: Option<Arc<ClientIdentity>>,
}

/// One accepted connection.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: Peer,
    /// When the TCP connection was accepted: handshake deadlines count from
    /// here.
    accepted: Instant,
    /// The listener's connection slot, freed when the connection ends.
    _slot: Option<OwnedSemaphorePermit>,
    /// The peer's connection slot, freed when the connection ends.
    _peer_slot: Option<PeerSlot>,
}

/// How many connections a listener holds open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open at once; further clients wait in the kernel's backlog.
    pub max: usize,
    /// Most open at once from one peer (an IPv4 address or an IPv6 /64);
    /// further connections from it are closed at once.
    pub per_peer: usize,
    /// Longest time a client may take to complete its TLS handshake.
    pub handshake_timeout: Duration,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// When the TCP connection was accepted.
    pub fn accepted(&self) -> Instant {
        self.accepted
    }
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The connections accepted on `listener`, within `limits` if any (TLS
/// handshakes included). Accepting stops, and the listening socket closes,
/// when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
    limits: Option<ConnectionLimits>,
) -> impl Stream<Item = Result<Conn, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel(16);
    let slots = limits.map(|limits| Arc::new(Semaphore::new(limits.max.max(1))));
    let peers = limits.map(|limits| PeerLimit::new(limits.per_peer));
    let handshake_timeout = limits.map_or(HANDSHAKE_TIMEOUT, |limits| limits.handshake_timeout);
    tokio::spawn(accept(
        listener,
        acceptor,
        slots,
        peers,
        handshake_timeout,
        tx,
    ));
    ReceiverStream::new(rx).map(Ok)
}

async fn accept(
    listener: TcpListener,
    acceptor: Acceptor,
    slots: Option<Arc<Semaphore>>,
    peers: Option<Arc<PeerLimit>>,
    handshake_timeout: Duration,
    tx: mpsc::Sender<Conn>,
) {
    loop {
        let slot = match &slots {
            Some(slots) => tokio::select! {
                () = tx.closed() => return,
                slot = slots.clone().acquire_owned() => slot.ok(),
            },
            None => None,
        };
        let (stream, remote) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: pause briefly rather than spin.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let peer_slot = match &peers {
            Some(peers) => match peers.take(remote.ip()) {
                Some(slot) => Some(slot),
                None => {
                    // Closing frees the listener's slot for other peers.
                    tracing::debug!(%remote, "connection refused: its peer holds its limit");
                    continue;
                }
            },
            None => None,
        };
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            remote: Some(remote),
            client: None,
        };
        match &acceptor {
            Acceptor::Plain => {
                let conn = Conn {
                    io: Io::Plain(stream),
                    peer,
                    accepted,
                    _slot: slot,
                    _peer_slot: peer_slot,
                };
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Acceptor::Tls(store, listener) => {
                let tls = TlsAcceptor::from(store.config(*listener));
                let tx = tx.clone();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%remote, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| ClientIdentity::from_der(leaf))
                        .map(Arc::new);
                    let conn = Conn {
                        io: Io::Tls(Box::new(stream)),
                        peer: Peer { client, ..peer },
                        accepted,
                        _slot: slot,
                        _peer_slot: peer_slot,
                    };
                    let _ = tx.send(conn).await;
                });
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
