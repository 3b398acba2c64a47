//! The broker's HTTP listeners, beside gRPC: `POST /webhooks/clerk` receives
//! Clerk's webhooks (delivered by Svix); `GET /metrics` serves Prometheus.
//!
//! This is transport only: `webhook` verifies a delivery and reads its event,
//! `users` applies it; here headers and body are handed over and each
//! [`WebhookError`] gets its one status code.
//!
//! With `--metrics-listen`, metrics have their own listener and the webhook
//! listener (the one exposed to Clerk) serves webhooks only ([`Routes`]).
//!
//! Each listener is exposed to the network, so it bounds what a client can
//! hold ([`HttpLimits`]): a body size (413), a time to send the headers
//! (hyper's HTTP/1 header read timeout, which also ends idle keep-alive
//! connections), a time from headers to the end of the body and to the
//! answer (408), a number of open connections, and a number per peer. It
//! speaks HTTP/1.1 only (TLS offers ALPN `http/1.1`): Svix and Prometheus
//! need nothing more, and hyper has no header timeout for HTTP/2.

use std::{
    convert::Infallible,
    future::Future,
    pin::{Pin, pin},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::BytesMut;
use http_body::Body as _;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{sync::watch, task::JoinSet};
use tokio_stream::{Stream, StreamExt as _};

use crate::{
    admission::Admission,
    metrics::Metrics,
    reload::ReloadStats,
    tls::{Conn, ConnectionLimits},
    users::Users,
    webhook::{SignedHeaders, UserEvent, WebhookError, Webhooks},
};

/// Where Clerk (Svix) posts webhook deliveries.
pub const WEBHOOK_PATH: &str = "/webhooks/clerk";

/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// What the HTTP handlers need (the broker's own parts).
#[derive(Clone, Debug)]
pub struct HttpState {
    /// User lookups, updated by webhooks.
    pub users: Arc<Users>,
    /// Verifies Clerk's webhook deliveries.
    pub webhooks: Arc<Webhooks>,
    /// The registry `GET /metrics` renders.
    pub metrics: Arc<Metrics>,
    /// The budgets, read at scrape.
    pub admission: Arc<Admission>,
    /// Outcomes of policy reloads, read at scrape.
    pub reloads: Arc<ReloadStats>,
}

/// The HTTP listener's validated limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Time from headers to answer.
    pub request_timeout: Duration,
    /// Time from headers to the end of the body.
    pub body_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one peer.
    pub max_connections_per_peer: usize,
}

impl Default for HttpLimits {
    /// The documented defaults.
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_connections_per_peer: 16,
        }
    }
}

impl HttpLimits {
    /// The connection limits of an HTTP listener.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            max: self.max_connections,
            per_peer: self.max_connections_per_peer,
            handshake_timeout: crate::tls::HANDSHAKE_TIMEOUT,
        }
    }
}

/// What one HTTP listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// Webhooks and metrics: the one HTTP listener of a broker without
    /// `--metrics-listen`.
    All,
    /// Webhooks only: the listener Clerk reaches, when metrics have their own.
    Webhooks,
    /// Metrics only (`--metrics-listen`).
    Metrics,
}

/// The HTTP routes of a listener serving `routes` (anything else is 404).
pub fn router(state: HttpState, limits: &HttpLimits, routes: Routes) -> Router {
    let mut router = Router::new();
    if routes != Routes::Metrics {
        router = router.route(WEBHOOK_PATH, post(clerk_webhook));
    }
    if routes != Routes::Webhooks {
        router = router.route(METRICS_PATH, get(metrics));
    }
    router
        // The whole body is read here, within its own deadline and size.
        .layer(middleware::from_fn_with_state(*limits, read_body))
        // Outermost: the deadline covers reading the body and the answer.
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_deadline,
        ))
        .with_state(state)
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(state): State<HttpState>) -> ([(&'static str, &'static str); 1], String) {
    let text = state
        .metrics
        .render(&state.admission, &state.reloads, &state.users);
    ([("content-type", "text/plain; version=0.0.4")], text)
}

/// 408 for a request not answered within `timeout` of its headers (a client
/// sending its body slowly, or not at all); the connection is closed.
async fn request_deadline(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timed_out(format!(
            "request not complete within {timeout:?} of its headers (--http-request-timeout): \
             send the whole request at once\n"
        )),
    }
}

/// Reads the whole body before the handler runs: at most `max_body` bytes
/// (413, before reading when `Content-Length` says more) within
/// `body_timeout` of the headers (408), so a client announcing a body it
/// does not send holds its connection for the body timeout only.
async fn read_body(State(limits): State<HttpLimits>, request: Request, next: Next) -> Response {
    let (parts, mut body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limits.max_body as u64) {
        return too_large(limits.max_body);
    }
    let mut bytes = BytesMut::new();
    let read = tokio::time::timeout(limits.body_timeout, async {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limits.max_body {
                return Ok(false);
            }
            bytes.extend_from_slice(&data);
        }
        Ok::<_, axum::Error>(true)
    })
    .await;
    match read {
        Ok(Ok(true)) => {
            next.run(Request::from_parts(parts, Body::from(bytes.freeze())))
                .await
        }
        Ok(Ok(false)) => too_large(limits.max_body),
        Ok(Err(_)) => (
            StatusCode::BAD_REQUEST,
            [(header::CONNECTION, "close")],
            "the request body could not be read\n",
        )
            .into_response(),
        Err(_) => timed_out(format!(
            "request body not complete within {:?} of the headers (--http-body-timeout): send \
             the whole request at once\n",
            limits.body_timeout
        )),
    }
}

/// 408 with `message`; the connection is closed.
fn timed_out(message: String) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        message,
    )
        .into_response()
}

/// 413 for a body above `max_body`; the connection is closed (the rest of
/// the body is not read).
fn too_large(max_body: usize) -> Response {
    tracing::warn!(max = max_body, "HTTP request refused: body too large");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONNECTION, "close")],
        format!(
            "body larger than {max_body} bytes (--http-max-body): Clerk's user events are far \
             smaller; raise the limit if yours are not\n"
        ),
    )
        .into_response()
}

/// Serves `router` on the connections of `incoming` until `shutdown`
/// resolves, then stops accepting and lets requests in progress finish.
pub async fn serve(
    incoming: impl Stream<Item = Result<Conn, Infallible>>,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    // Boxed, not pinned on the stack, so that it can be dropped before the
    // connections end.
    let mut incoming = Box::pin(incoming);
    let mut shutdown = pin!(shutdown);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            next = incoming.next() => match next {
                Some(Ok(conn)) => {
                    connections.spawn(serve_connection(
                        conn,
                        router.clone(),
                        limits.header_timeout,
                        stopping.clone(),
                    ));
                }
                Some(Err(never)) => match never {},
                None => break,
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the stream closes the listening socket.
    drop(incoming);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// One HTTP/1.1 connection; on shutdown it ends after the request in
/// progress.
async fn serve_connection(
    conn: Conn,
    router: Router,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let remote = conn.peer().remote;
    // Handlers that need the connection's peer (a client certificate's
    // names, for the Clerk-compatible front) read it from the request.
    let router = router.layer(axum::Extension(conn.peer().clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(router));
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The sender only ever announces the stop (and never drops first).
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Header timeouts, resets and malformed requests end here.
        tracing::debug!(?remote, %error, "HTTP connection ended with an error");
    }
}

/// `POST /webhooks/clerk`: verify, then apply. A refused delivery has no
/// effect and gets a one-line reason (never the secret or the body).
async fn clerk_webhook(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let signed = SignedHeaders::read(|name| headers.get(name)?.to_str().ok());
    match state.webhooks.receive(&signed, &body, SystemTime::now()) {
        Ok(delivery) => {
            state.users.apply(&delivery.event).await;
            let (kind, user_id) = match &delivery.event {
                UserEvent::Upserted(user) => ("user upserted", user.id()),
                UserEvent::Deleted { id, .. } => ("user deleted", id.as_str()),
                UserEvent::Ignored(kind) => (kind.as_str(), ""),
            };
            tracing::info!(svix_id = %delivery.id, event = kind, user_id, "webhook applied");
            (StatusCode::OK, "applied\n".to_owned())
        }
        Err(error) => {
            let status = status(&error);
            tracing::warn!(svix_id = ?signed.id, %error, status = status.as_u16(), "webhook refused");
            (status, format!("{error}\n"))
        }
    }
}

/// The one mapping from a refused delivery to its HTTP status: 503 when
/// webhooks are not configured (Svix retries later), 401 when the signature or
/// its timestamp does not hold, 400 for anything malformed or replayed.
fn status(error: &WebhookError) -> StatusCode {
    match error {
        WebhookError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        WebhookError::BadSignature | WebhookError::TooOld | WebhookError::FromTheFuture => {
            StatusCode::UNAUTHORIZED
        }
        WebhookError::MissingHeader(_)
        | WebhookError::BadTimestamp
        | WebhookError::Replayed
        | WebhookError::BadPayload(_) => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_documented_statuses() {
        let table = [
            (WebhookError::NotConfigured, 503),
            (WebhookError::MissingHeader("svix-id"), 400),
            (WebhookError::BadTimestamp, 400),
            (WebhookError::TooOld, 401),
            (WebhookError::FromTheFuture, 401),
            (WebhookError::BadSignature, 401),
            (WebhookError::Replayed, 400),
            (WebhookError::BadPayload("x"), 400),
        ];
        for (error, code) in table {
            assert_eq!(status(&error).as_u16(), code, "{error:?}");
        }
    }
}
