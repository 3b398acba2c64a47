//! The validated settings of user lookups ([`LookupConfig`]): the cache,
//! batching, and the HTTP listener that receives Clerk's webhooks. The flags
//! they come from are parsed in `config/lookup.rs`.

use std::{net::SocketAddr, time::Duration};

use crate::webhook::WebhookSecret;

/// Port of the HTTP listener when `--http-listen` is not given.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// The validated lookup settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LookupConfig {
    /// Most entries in the user cache.
    pub cache_max_entries: u64,
    /// Most estimated bytes in the user cache.
    pub cache_max_bytes: u64,
    /// How long a found user is fresh.
    pub cache_ttl: Duration,
    /// How long "no such user" is fresh.
    pub negative_ttl: Duration,
    /// How long past freshness an entry may be served as stale.
    pub max_stale: Duration,
    /// How long misses are gathered before one batched request.
    pub batch_window: Duration,
    /// Where the HTTP listener (webhooks) listens.
    pub http_listen: SocketAddr,
    /// Where the metrics-only listener listens (None: metrics are served on
    /// `http_listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Verifies webhook deliveries; `None` refuses them all.
    pub webhook_secret: Option<WebhookSecret>,
}

impl Default for LookupConfig {
    /// The documented defaults, with no webhook secret.
    fn default() -> Self {
        Self {
            cache_max_entries: 100_000,
            cache_max_bytes: 256 << 20,
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_stale: Duration::from_secs(5 * 60),
            batch_window: Duration::from_millis(5),
            http_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
            metrics_listen: None,
            webhook_secret: None,
        }
    }
}
