//! The broker's HTTP listener, beside gRPC: `POST /webhooks/clerk` receives
//! Clerk's webhooks (delivered by Svix); `GET /metrics` serves Prometheus.
//!
//! This is transport only: `webhook` verifies a delivery and reads its event,
//! `users` applies it; here headers and body are handed over and each
//! [`WebhookError`] gets its one status code.

use std::{future::Future, sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use tokio::net::TcpListener;

use crate::{
    admission::Admission,
    metrics::Metrics,
    reload::ReloadStats,
    server::Broker,
    users::Users,
    webhook::{SignedHeaders, UserEvent, WebhookError, Webhooks},
};

/// Where Clerk (Svix) posts webhook deliveries.
pub const WEBHOOK_PATH: &str = "/webhooks/clerk";

/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// What the HTTP handlers need.
#[derive(Clone, Debug)]
struct HttpState {
    users: Arc<Users>,
    webhooks: Arc<Webhooks>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    reloads: Arc<ReloadStats>,
}

/// The HTTP routes: the webhook endpoint and metrics (anything else is 404).
pub fn router(broker: &Broker) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(clerk_webhook))
        .route(METRICS_PATH, get(metrics))
        .with_state(HttpState {
            users: broker.users.clone(),
            webhooks: broker.webhooks.clone(),
            metrics: broker.metrics.clone(),
            admission: broker.admission.clone(),
            reloads: broker.reloads.clone(),
        })
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(state): State<HttpState>) -> ([(&'static str, &'static str); 1], String) {
    let text = state
        .metrics
        .render(&state.admission, &state.reloads, &state.users);
    ([("content-type", "text/plain; version=0.0.4")], text)
}

/// Serves `router` on an already-bound listener until `shutdown` resolves,
/// then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
                UserEvent::Deleted(id) => ("user deleted", id.as_str()),
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
