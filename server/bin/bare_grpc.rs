//! `bench-bare-grpc`: the baseline of the hot-path benchmark
//! (`scripts/bench-hot.sh`), and the tool that captures what it answers.
//!
//! - `bench-bare-grpc serve ADDRESS MESSAGE_FILE` serves a tonic server with
//!   no logic: every unary call, on any method of the broker's services, is
//!   answered with the message bytes of `MESSAGE_FILE` (encoded once, copied
//!   from memory). The same tonic stack the broker is served by, so the
//!   benchmark's ratio is the broker's own cost. Prints
//!   `listening on ADDRESS` once bound, then serves until SIGTERM or Ctrl-C
//!   (and exits cleanly: a profile-collecting build writes its profile).
//!   On tokio's default runtime (what `#[tokio::main]` builds), or with
//!   `--broker-runtime` on the broker's (`clerk_broker::runtime`: the
//!   scheduler's LIFO slot off), to tell the broker's own cost from its
//!   runtime's.
//! - `bench-bare-grpc call ADDRESS PATH REQUEST_FILE OUT_FILE [TOKEN]` makes
//!   one unary call with the message bytes of `REQUEST_FILE` and writes the
//!   answer's message bytes to `OUT_FILE`; prints the answer's `x-cache`
//!   header (`-` if none). The benchmark uses it to warm the broker's cache
//!   and to capture the exact bytes the baseline then answers.

use std::{
    convert::Infallible,
    marker::PhantomData,
    process::ExitCode,
    task::{Context, Poll},
};

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::{
    Request, Response, Status,
    body::Body,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::{Grpc, NamedService, UnaryService},
    transport::{Endpoint, Server, server::TcpIncoming},
};

#[path = "shared/stop.rs"]
mod stop;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Tokio's defaults (what `#[tokio::main]` builds), or the broker's.
    let runtime = if args.first() == Some(&"serve") && args.last() == Some(&"--broker-runtime") {
        args.pop();
        clerk_broker::runtime::build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(&args)),
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-bare-grpc: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[&str]) -> Result<(), Error> {
    match *args {
        ["serve", address, message] => serve(address, message).await,
        ["call", address, path, request, out] => call(address, path, request, out, None).await,
        ["call", address, path, request, out, token] => {
            call(address, path, request, out, Some(token)).await
        }
        _ => Err(
            "usage: bench-bare-grpc serve ADDRESS MESSAGE_FILE [--broker-runtime] | \
                  call ADDRESS PATH REQUEST_FILE OUT_FILE [TOKEN]"
                .into(),
        ),
    }
}

type Error = Box<dyn std::error::Error>;

async fn serve(address: &str, message: &str) -> Result<(), Error> {
    let answer = Bytes::from(std::fs::read(message)?);
    // Without Nagle's algorithm, as the broker's own connections.
    let incoming = TcpIncoming::bind(address.parse()?)?.with_nodelay(Some(true));
    println!("listening on {}", incoming.local_addr()?);
    Server::builder()
        .add_service(Bare::<UserService>::new(answer.clone()))
        .add_service(Bare::<QuotaService>::new(answer))
        .serve_with_incoming_shutdown(incoming, stop::stopped())
        .await?;
    Ok(())
}

async fn call(
    address: &str,
    path: &str,
    request: &str,
    out: &str,
    token: Option<&str>,
) -> Result<(), Error> {
    let message = Bytes::from(std::fs::read(request)?);
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await?;
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let response = client
        .unary(request, path.parse()?, RawCodec)
        .await
        .map_err(|status| format!("{path}: {:?}: {}", status.code(), status.message()))?;
    let cache = response
        .metadata()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    std::fs::write(out, response.into_inner())?;
    println!("{cache}");
    Ok(())
}

/// Names the service a [`Bare`] is routed as.
trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
}

struct UserService;
impl ServiceName for UserService {
    const NAME: &'static str = "clerk_broker.v1.UserService";
}

struct QuotaService;
impl ServiceName for QuotaService {
    const NAME: &'static str = "clerk_broker.v1.QuotaService";
}

/// Answers every unary call to service `N` with the same message bytes,
/// through tonic's own unary path (`Grpc::unary`), as generated servers do.
struct Bare<N> {
    answer: Bytes,
    name: PhantomData<N>,
}

impl<N> Bare<N> {
    fn new(answer: Bytes) -> Self {
        Self {
            answer,
            name: PhantomData,
        }
    }
}

impl<N> Clone for Bare<N> {
    fn clone(&self) -> Self {
        Self::new(self.answer.clone())
    }
}

impl<N: ServiceName> NamedService for Bare<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: ServiceName> tower::Service<http::Request<Body>> for Bare<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let answer = Answer(self.answer.clone());
        Box::pin(async move { Ok(Grpc::new(RawCodec).unary(answer, request).await) })
    }
}

/// The unary handler: the fixed answer.
struct Answer(Bytes);

impl UnaryService<Bytes> for Answer {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, _: Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(Response::new(self.0.clone())))
    }
}

/// A codec of raw message bytes, both ways.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
