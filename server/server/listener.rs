//! The gRPC listeners' bounds on what a client can hold: connections,
//! handshakes, idle connections, silent peers and streams.
//!
//! tonic serves whatever connections it is handed, for as long as the peer
//! keeps them. Here they are bounded by [`GrpcLimits`], in four places:
//!
//! - **Connections.** [`incoming`] accepts through
//!   `tls::incoming` with a cap: at most `max_connections` are open, TLS
//!   handshakes included, and at the cap the listener stops accepting
//!   (further clients wait in the kernel's backlog; none is accepted and
//!   closed). A connection's slot is held by its IO ([`GrpcConn`]) and freed
//!   when hyper drops it.
//! - **Handshake.** A client must complete its TLS handshake (if any) and
//!   send its HTTP/2 preface (the 24-byte magic and its first frame, the
//!   SETTINGS frame) within `handshake_timeout` of being accepted. hyper
//!   has no such deadline: [`GrpcConn`]'s reads carry it, and fail once it
//!   passes, which ends the connection.
//! - **Idle connections.** A connection with no open stream for
//!   `idle_timeout` is closed; one with an open stream never is. Streams are
//!   counted by [`StreamsLayer`], the outermost layer: tonic hands each
//!   request its connection's info ([`GrpcPeer`]), which carries the
//!   connection's [`Streams`]; a call is open from its request until its
//!   response body is dropped (answered, reset, or its connection gone). The
//!   same IO reads check the count: when the idle deadline passes with no
//!   stream open, the read fails. The check runs only when it is due, so a
//!   stream ending needs no wake-up of the connection. hyper hands a stream
//!   to the services (and so to the count) only after the read that found
//!   nothing more to read, in the stream's own task: if that read comes due
//!   after bytes were read, they may be a call's HEADERS not counted yet, so
//!   the close is put off by one idle timeout, once.
//! - **Silent peers and streams per connection** are hyper's: HTTP/2
//!   keepalive pings every `keepalive_interval` (counted from the last frame
//!   received), and a peer that does not acknowledge one within
//!   `keepalive_timeout` is closed; `max_concurrent_streams` is announced
//!   in SETTINGS (tonic's default is none). [`configure`] sets them.
//!
//! The idle close is abrupt (no GOAWAY: hyper's connection belongs to
//! tonic, out of reach here). It happens only while no stream is open and
//! no byte has arrived since the previous read that waited, so only a call
//! whose first bytes arrive after the connection is closed can fail, with
//! UNAVAILABLE; gRPC clients reconnect on their next call.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use http_body::Body;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    time::{Instant, Sleep},
};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::{Server, server::Connected};

use crate::{
    config::GrpcLimits,
    guarded::Guarded,
    tls::{self, Acceptor, Conn, ConnectionLimits, Peer},
};

/// Length of the HTTP/2 client magic, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const MAGIC_LEN: usize = 24;

/// Length of an HTTP/2 frame header (its first 3 bytes: the payload length).
const FRAME_HEADER_LEN: usize = 9;

/// `server` with hyper's part of `limits`: keepalive pings and the streams
/// per connection.
pub(super) fn configure<L>(server: Server<L>, limits: &GrpcLimits) -> Server<L> {
    server
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
}

/// The connections accepted on `listener` within `limits`. Accepting stops,
/// and the listening socket closes, when the stream is dropped.
pub(super) fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
    limits: &GrpcLimits,
) -> impl Stream<Item = Result<GrpcConn, Infallible>> + Send + 'static {
    let limits = *limits;
    let connections = ConnectionLimits {
        max: limits.max_connections,
        // Client pods and probes: no per-peer cap (behind a proxy, or a
        // node's SNAT, many clients share one address).
        per_peer: usize::MAX,
        handshake_timeout: limits.handshake_timeout,
    };
    tls::incoming(listener, acceptor, Some(connections))
        .map(move |conn| conn.map(|conn| GrpcConn::new(conn, &limits)))
}

/// One accepted gRPC connection: its reads enforce the preface deadline and
/// the idle timeout.
#[derive(Debug)]
pub(crate) struct GrpcConn {
    conn: Conn,
    /// The connection's open streams, shared with [`StreamsLayer`].
    streams: Arc<Streams>,
    /// How much of the client's preface has arrived (None: all of it).
    preface: Option<Preface>,
    idle_timeout: Duration,
    /// The preface deadline, then the next idle check.
    timer: Pin<Box<Sleep>>,
    /// Whether bytes were read since the last read that waited.
    fresh: bool,
    /// Whether the idle close was put off for fresh bytes, with no check
    /// since that found a stream open or the connection not idle long.
    deferred: bool,
}

/// The part of the client's preface received so far.
#[derive(Debug, Default)]
struct Preface {
    /// Bytes received.
    received: usize,
    /// Payload length of the first frame, read from its header.
    frame_len: usize,
}

impl Preface {
    /// Counts `bytes`, the next ones read; whether the preface is complete.
    fn receive(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            if (MAGIC_LEN..MAGIC_LEN + 3).contains(&self.received) {
                self.frame_len = (self.frame_len << 8) | usize::from(byte);
            }
            self.received += 1;
            if self.received >= MAGIC_LEN + FRAME_HEADER_LEN + self.frame_len {
                return true;
            }
        }
        false
    }
}

impl GrpcConn {
    fn new(conn: Conn, limits: &GrpcLimits) -> Self {
        let accepted = conn.accepted();
        Self {
            conn,
            streams: Arc::new(Streams::new(accepted)),
            preface: Some(Preface::default()),
            idle_timeout: limits.idle_timeout,
            timer: Box::pin(tokio::time::sleep_until(
                accepted + limits.handshake_timeout,
            )),
            fresh: false,
            deferred: false,
        }
    }

    /// Fails once a deadline has passed: the preface's, or the idle one
    /// while no stream is open (put off once if bytes were read since the
    /// last read that waited). Otherwise the timer is armed for the next
    /// check, with `cx`'s waker (the read that waits is woken by it).
    fn check_deadlines(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let fresh = std::mem::take(&mut self.fresh);
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.preface.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout (--grpc-handshake-timeout)",
                ));
            }
            let now = Instant::now();
            let next = match self.streams.idle_since() {
                // Streams are open: look again one idle timeout from now.
                None => {
                    self.deferred = false;
                    now + self.idle_timeout
                }
                Some(since) if since + self.idle_timeout <= now => {
                    // The bytes just read may hold a call that hyper hands
                    // to the count only after this read: give it time, once
                    // (a peer sending frames but no call is still closed).
                    if !fresh || self.deferred {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no stream for the idle timeout (--grpc-idle-timeout)",
                        ));
                    }
                    self.deferred = true;
                    now + self.idle_timeout
                }
                Some(since) => {
                    self.deferred = false;
                    since + self.idle_timeout
                }
            };
            self.timer.as_mut().reset(next);
        }
        Ok(())
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = GrpcPeer;

    fn connect_info(&self) -> GrpcPeer {
        GrpcPeer {
            peer: self.conn.peer().clone(),
            streams: self.streams.clone(),
        }
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.conn).poll_read(cx, buf) {
            // Deadlines are looked at only when nothing is left to read, so
            // a call already sent is never cut.
            Poll::Pending => match this.check_deadlines(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
            Poll::Ready(Ok(())) => {
                this.fresh |= buf.filled().len() > before;
                if let Some(preface) = &mut this.preface
                    && preface.receive(&buf.filled()[before..])
                {
                    this.preface = None;
                    // The idle clock runs from accept: re-armed on the next
                    // read that waits.
                    this.timer.as_mut().reset(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

/// A gRPC connection's info, which tonic puts into each of its requests;
/// [`StreamsLayer`] takes it out and leaves the [`Peer`] in its place.
#[derive(Clone, Debug)]
pub(crate) struct GrpcPeer {
    peer: Peer,
    streams: Arc<Streams>,
}

/// The open streams of one connection.
#[derive(Debug)]
pub(super) struct Streams {
    state: Mutex<StreamsState>,
}

#[derive(Debug)]
struct StreamsState {
    /// Streams open now.
    open: usize,
    /// When `open` last fell to 0 (or the connection was accepted).
    idle_since: Instant,
}

impl Streams {
    fn new(accepted: Instant) -> Self {
        Self {
            state: Mutex::new(StreamsState {
                open: 0,
                idle_since: accepted,
            }),
        }
    }

    /// Counts one more open stream, until the returned guard is dropped.
    fn open(self: &Arc<Self>) -> OpenStream {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open += 1;
        OpenStream(self.clone())
    }

    /// Since when no stream has been open; None while one is.
    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.open == 0).then_some(state.idle_since)
    }
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.open = state.open.saturating_sub(1);
        if state.open == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// Counts each call as an open stream of its connection until its response
/// body is dropped, and hands the services the connection's [`Peer`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StreamsLayer;

impl<S> tower::Layer<S> for StreamsLayer {
    type Service = CountStreams<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountStreams { inner }
    }
}

/// The service [`StreamsLayer`] wraps around the gRPC router.
#[derive(Clone, Debug)]
pub(crate) struct CountStreams<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for CountStreams<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Body + Unpin,
{
    type Response = http::Response<Guarded<R, Option<OpenStream>>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let open = request
            .extensions_mut()
            .remove::<GrpcPeer>()
            .map(|connection| {
                request.extensions_mut().insert(connection.peer);
                connection.streams.open()
            });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Guarded::new(body, open)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; MAGIC_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn the_preface_ends_with_the_first_frame_however_it_is_split() {
        // The magic, then a SETTINGS frame with one 6-byte setting.
        let mut preface = MAGIC.to_vec();
        preface.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        preface.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        for split in 0..preface.len() {
            let mut counted = Preface::default();
            assert!(!counted.receive(&preface[..split]), "split at {split}");
            assert!(counted.receive(&preface[split..]), "split at {split}");
        }
        let mut counted = Preface::default();
        assert!(!counted.receive(&preface[..preface.len() - 1]));
        // An empty SETTINGS frame: the magic and a bare header.
        let mut counted = Preface::default();
        assert!(!counted.receive(MAGIC));
        assert!(counted.receive(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
    }

    /// A connection accepted on loopback that has sent its preface, and its
    /// client; deadlines of an hour, but a minute's idle timeout.
    async fn connection() -> (tokio::net::TcpStream, GrpcConn) {
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = Box::pin(tls::incoming(listener, Acceptor::Plain, None));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let Some(Ok(conn)) = incoming.next().await else {
            panic!("no connection accepted");
        };
        let limits = GrpcLimits {
            handshake_timeout: Duration::from_secs(3600),
            idle_timeout: IDLE,
            ..GrpcLimits::default()
        };
        let mut conn = GrpcConn::new(conn, &limits);
        client.write_all(MAGIC).await.unwrap();
        client
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        read_some(&mut conn).await;
        read_until_pending(&mut conn).unwrap();
        assert!(conn.preface.is_none());
        (client, conn)
    }

    const IDLE: Duration = Duration::from_secs(60);

    /// Waits for a read of at least one byte (and at most one).
    async fn read_some(conn: &mut GrpcConn) {
        let mut byte = [0u8; 1];
        std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut byte);
            match Pin::new(&mut *conn).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => panic!("closed"),
                other => other,
            }
        })
        .await
        .unwrap();
    }

    /// Reads as h2 does, until a read waits: the bytes read, or the error.
    fn read_until_pending(conn: &mut GrpcConn) -> io::Result<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut bytes = [0u8; 256];
        let mut total = 0;
        loop {
            let mut buf = ReadBuf::new(&mut bytes);
            match Pin::new(&mut *conn).poll_read(&mut cx, &mut buf) {
                Poll::Pending => return Ok(total),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => panic!("closed"),
                Poll::Ready(Ok(())) => total += buf.filled().len(),
                Poll::Ready(Err(error)) => return Err(error),
            }
        }
    }

    /// Moves the clock on by `by` (real time runs on after).
    async fn jump(by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }

    #[tokio::test]
    async fn bytes_read_as_the_idle_deadline_passes_put_the_close_off_once() {
        use tokio::io::AsyncWriteExt as _;
        let (mut client, mut conn) = connection().await;
        // A call's first frames arrive; the deadline passes before the read
        // that waits (after which hyper would count the stream).
        client.write_all(&[0; 20]).await.unwrap();
        read_some(&mut conn).await;
        jump(IDLE + Duration::from_secs(1)).await;
        assert_eq!(read_until_pending(&mut conn).unwrap(), 19);
        // The stream is counted: the connection stays, however long.
        let open = conn.streams.open();
        jump(IDLE * 3).await;
        read_until_pending(&mut conn).unwrap();
        // Idle again: closed by the next check, with no byte since.
        drop(open);
        jump(IDLE + Duration::from_secs(1)).await;
        read_until_pending(&mut conn).unwrap_err();

        // Frames but never a stream: put off once, then closed all the same.
        let (mut client, mut conn) = connection().await;
        for _ in 0..2 {
            client.write_all(&[0; 20]).await.unwrap();
            read_some(&mut conn).await;
            jump(IDLE + Duration::from_secs(1)).await;
            match read_until_pending(&mut conn) {
                Ok(_) => {}
                Err(error) => {
                    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
                    return;
                }
            }
        }
        panic!("a connection sending frames but no call was never closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_stream_open() {
        let start = Instant::now();
        let streams = Arc::new(Streams::new(start));
        assert_eq!(streams.idle_since(), Some(start));
        let first = streams.open();
        let second = streams.open();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(first);
        assert_eq!(streams.idle_since(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(second);
        assert_eq!(streams.idle_since(), Some(start + Duration::from_secs(2)));
    }
}
