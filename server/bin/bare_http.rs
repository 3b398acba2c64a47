//! `bench-bare-http`: the baseline of the front's benchmark. An HTTP/1.1
//! server with no logic that answers every request with the same status,
//! headers and body, read once from files; the same hyper stack the front is
//! served by, so the benchmark's ratio is the front's own cost.
//!
//! `bench-bare-http ADDRESS BODY_FILE` prints `listening on ADDRESS` once
//! bound, then serves until SIGTERM or Ctrl-C.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[path = "shared/stop.rs"]
mod stop;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(body_file)) = (args.next(), args.next()) else {
        eprintln!("usage: bench-bare-http ADDRESS BODY_FILE");
        std::process::exit(64);
    };
    let body = Bytes::from(std::fs::read(&body_file)?);
    let listener = TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    let body = Arc::new(body);
    let mut stopped = std::pin::pin!(stop::stopped());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut stopped => return Ok(()),
        };
        stream.set_nodelay(true)?;
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<Incoming>| {
                let body = (*body).clone();
                async move {
                    let mut response = Response::new(axum::body::Body::from(body));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                        .headers_mut()
                        .insert("x-cache", http::HeaderValue::from_static("hit"));
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
